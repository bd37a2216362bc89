#!/usr/bin/env python3
"""Train the interim default HAM10000 model in PyTorch on the CPU (clean training).

This is the stop-gap default model until Triscope's own trainer (TRADES / PGD-AT) lands:
a narrow ResNet-50 (torchvision layout, base width 16) at 128x128, trained from scratch on the
HAM10000 train split of ../shared/data/ham10000, model selection on the val split by balanced
accuracy, reported on the test split. The result is a torchvision-layout safetensors file that
`triscope import` turns into a Triscope checkpoint.

    python3 tools/train_torch_baseline.py --epochs 14 --out /tmp/ham_w16_r128
    triscope import /tmp/ham_w16_r128/best.safetensors --num-classes 7 --base-width 16 \
        --resolution 128 --out models/ham10000_w16_r128.safetensors
"""

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import MEAN, STD, Normalized, ResNet50  # noqa: E402

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def load_split(root, split, short_side):
    with open(os.path.join(root, "labels.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    xs, ys = [], []
    for r in rows:
        img = Image.open(os.path.join(root, "images", r["image_id"] + ".jpg")).convert("RGB")
        t = TF.pil_to_tensor(img)  # uint8 [3, H, W]
        t = TF.resize(t, short_side, antialias=True)
        xs.append(t)
        ys.append(CLASSES.index(r["dx"]))
    return torch.stack(xs), torch.tensor(ys)


def augment(batch_u8, res, gen):
    """Random resized crop (scale 0.8-1), h/v flips, rotation +-15 deg, brightness/contrast."""
    out = []
    for x in batch_u8:
        x = x.float() / 255.0
        _, h, w = x.shape
        scale = 0.8 + 0.2 * torch.rand(1, generator=gen).item()
        ch, cw = int(h * math.sqrt(scale)), int(min(w, h) * math.sqrt(scale))
        top = torch.randint(0, h - ch + 1, (1,), generator=gen).item()
        left = torch.randint(0, w - cw + 1, (1,), generator=gen).item()
        x = TF.resized_crop(x, top, left, ch, cw, [res, res], antialias=True)
        if torch.rand(1, generator=gen).item() < 0.5:
            x = x.flip(2)
        if torch.rand(1, generator=gen).item() < 0.5:
            x = x.flip(1)
        angle = (torch.rand(1, generator=gen).item() * 2 - 1) * 15
        x = TF.rotate(x, angle, interpolation=TF.InterpolationMode.BILINEAR)
        b = 1 + (torch.rand(1, generator=gen).item() * 2 - 1) * 0.2
        c = 1 + (torch.rand(1, generator=gen).item() * 2 - 1) * 0.2
        x = TF.adjust_contrast(TF.adjust_brightness(x, b), c)
        out.append(x.clamp(0, 1))
    return torch.stack(out)


def center(batch_u8, res):
    return TF.center_crop(batch_u8.float() / 255.0, [res, res])


def evaluate(model, xs, ys, res, bs=128):
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(xs), bs):
            preds.append(model(center(xs[i : i + bs], res)).argmax(1))
    p = torch.cat(preds)
    acc = (p == ys).float().mean().item()
    per_class = []
    for c in range(len(CLASSES)):
        m = ys == c
        per_class.append((p[m] == c).float().mean().item() if m.any() else float("nan"))
    bal = float(np.nanmean(per_class))
    return {"accuracy": acc, "balanced_accuracy": bal, "per_class_recall": dict(zip(CLASSES, per_class))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ham10000"))
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    xtr, ytr = load_split(args.data, "train", args.res)
    xva, yva = load_split(args.data, "val", args.res)
    xte, yte = load_split(args.data, "test", args.res)
    print(f"loaded {len(xtr)}/{len(xva)}/{len(xte)} images in {time.time() - t0:.0f}s", flush=True)

    counts = torch.bincount(ytr, minlength=len(CLASSES)).float()
    # sqrt inverse frequency, normalised to mean 1: HAM10000 is 67% nv.
    cw = (counts.sum() / counts).sqrt()
    cw = cw / cw.mean()

    net = ResNet50(args.width, len(CLASSES), 3)
    model = Normalized(net, MEAN, STD)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = len(xtr) // args.bs
    total = steps_per_epoch * args.epochs
    warm = steps_per_epoch

    def lr_at(step):
        if step < warm:
            return args.lr * (0.01 + 0.99 * step / warm)
        p = (step - warm) / max(1, total - warm)
        return 1e-4 + 0.5 * (args.lr - 1e-4) * (1 + math.cos(math.pi * p))

    log = open(os.path.join(args.out, "metrics.jsonl"), "w")
    best = -1.0
    step = 0
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        te = time.time()
        run_loss = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * args.bs : (i + 1) * args.bs]
            x = augment(xtr[idx], args.res, gen)
            y = ytr[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = F.cross_entropy(model(x), y, weight=cw)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run_loss += loss.item()
            step += 1
        val = evaluate(model, xva, yva, args.res)
        rec = {"epoch": epoch + 1, "train_loss": run_loss / steps_per_epoch, "lr": lr_at(step), "epoch_secs": time.time() - te, "val": val}
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if val["balanced_accuracy"] > best:
            best = val["balanced_accuracy"]
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, os.path.join(args.out, "best.safetensors"))
    # Test metrics of the selected (best-val) weights.
    net.load_state_dict({k: v for k, v in __import__("safetensors.torch", fromlist=["load_file"]).load_file(os.path.join(args.out, "best.safetensors")).items()})
    test = evaluate(model, xte, yte, args.res)
    summary = {"best_val_balanced_accuracy": best, "test": test, "epochs": args.epochs, "width": args.width, "resolution": args.res,
               "batch_size": args.bs, "lr": args.lr, "seed": args.seed, "threads": args.threads, "total_secs": time.time() - t0,
               "torch": torch.__version__}
    print(json.dumps(summary, indent=2), flush=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
