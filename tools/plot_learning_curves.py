#!/usr/bin/env python3
"""Learning curves of a Triscope run from its metrics.jsonl: training loss, training and
validation accuracy, validation balanced accuracy (the checkpoint choice; with a weight
average, the raw weights' beside it) and the learning rate per epoch, as one PNG.

    python3 tools/plot_learning_curves.py RUN/metrics.jsonl OUT.png [--title TEXT]
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("metrics")
    ap.add_argument("out")
    ap.add_argument("--title", default="")
    # The trainer logs a multi-label run's decision accuracy (threshold 0.5) as its accuracy
    # and its mean AUROC in the balanced-accuracy field.
    ap.add_argument("--multi-label", action="store_true")
    args = ap.parse_args()
    epochs = []
    cam_outside = {}  # epoch -> the logged steps' shares (training.cam_mask_weight)
    with open(args.metrics) as f:
        for line in f:
            d = json.loads(line)
            if d.get("type") == "epoch":
                epochs.append(d)
            elif d.get("cam_outside") is not None:
                cam_outside.setdefault(d["epoch"], []).append(d["cam_outside"])
    if not epochs:
        raise SystemExit(f"{args.metrics} has no epoch lines")
    x = [e["epoch"] for e in epochs]
    fig, (ax, lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[3, 1])
    acc, score = ("decision accuracy", "mean AUROC") if args.multi_label else (
        "accuracy", "balanced accuracy")
    ax.plot(x, [e["train_clean_acc"] for e in epochs], label=f"train {acc}")
    ax.plot(x, [e["val_clean_acc"] for e in epochs], label=f"val {acc}")
    ax.plot(x, [e["val_balanced_acc"] for e in epochs], label=f"val {score}", lw=2)
    # With training.ema_decay the val_ numbers are the weight average's; raw_ the raw weights'.
    if any(e.get("raw_val_balanced_acc") is not None for e in epochs):
        ax.plot(x, [e.get("raw_val_balanced_acc") for e in epochs], ls="--",
                label=f"val {score}, raw weights (val: their average)")
    if cam_outside:
        ax.plot(x, [sum(v) / len(v) if (v := cam_outside.get(e)) else None for e in x], ls="-.",
                color="tab:brown", label="train map share outside the mask (logged steps)")
    # The trainer's choice of `best`: robust balanced accuracy for adversarial runs.
    key, name = "val_balanced_acc", f"val {score}"
    if any(e.get("val_robust_acc") is not None for e in epochs):
        ax.plot(x, [e.get("val_robust_acc") for e in epochs], label="val robust accuracy")
        ax.plot(x, [e.get("val_robust_balanced_acc") for e in epochs], lw=2,
                label="val robust balanced accuracy")
        key, name = "val_robust_balanced_acc", "val robust balanced"
    best = max(epochs, key=lambda e: e.get(key) or 0.0)
    ax.axvline(best["epoch"], color="grey", ls=":", label=f"best {name} (epoch {best['epoch']})")
    ax2 = ax.twinx()
    ax2.plot(x, [e["train_loss"] for e in epochs], color="black", alpha=0.35, label="train loss")
    ax2.set_ylabel("train loss")
    ax.set_ylabel(f"{acc} / {score}" if args.multi_label else "accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax.set_title(args.title)
    lr.plot(x, [e["lr"] for e in epochs], color="tab:purple")
    lr.set_ylabel("lr")
    lr.set_xlabel("epoch")
    lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
