#!/usr/bin/env python3
"""The PyTorch side of Triscope's benchmark: the same rows, same shapes, same thread count.

    pip install torch torchvision grad-cam torchattacks
    python3 tools/bench_torch.py --threads 2 --out bench_torch.json
    cargo run --release --bin bench -- --torch bench_torch.json     # prints Triscope / PyTorch

Rows (medians over --runs after one warm-up; peak RSS per row from /proc/self/status VmHWM,
reset before each row through /proc/self/clear_refs):
  forward b1, forward b8, forward + backward to the input (frozen weights), Grad-CAM layer4
  (pytorch-grad-cam GradCAM), PGD-10 (torchattacks PGD, eps 8/255, alpha 2/255, random start),
  training step b8 (forward + backward with weight gradients + SGD step), for the full-width
  ResNet-50 at 224 and for the narrow test model (base width 8 at 128).

--train adds what trains the shipped models: base widths 16 and 32 at 160 px, batch 64, one
optimisation step with the trainer's recipe (weighted cross-entropy, SGD with Nesterov
momentum and weight decay) clean and with TRADES (inner PGD-3 at 2/255 on the model in eval
mode, then the clean and adversarial training-mode forwards), plus the forward at batch 64
(validation) and the inner PGD-3 alone. `bench --train` prints the same rows, as images/s.

--precision f32,bf16 runs every row in f32 and again under torch.autocast("cpu",
dtype=torch.bfloat16) (PyTorch's mixed precision on the CPU: bf16 convolutions and matrix
products through oneDNN, which uses AVX512_BF16 where the CPU has it); rows carry
"precision". --ort adds ONNX Runtime's forward rows (pip onnxruntime; the same model exported
with torch.onnx.export, CPU execution provider, --threads intra-op threads, all graph
optimisations: BatchNorm folded, convolution + activation fused, blocked layouts), with
"engine": "onnxruntime".
"""

import contextlib
import io

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import MEAN, STD, Normalized, ResNet50  # noqa: E402


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def timed(fn, runs):
    fn()  # warm-up
    secs = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        secs.append(time.perf_counter() - t)
    secs.sort()
    return secs[len(secs) // 2], secs[0]


PRECISION = "f32"


def autocast():
    """The context every timed call runs in: autocast to bf16 for --precision bf16."""
    if PRECISION == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed_row(rows, fields, fn, runs):
    """Time `fn` (in the current precision) and append its row."""
    reset_peak()
    with autocast():
        median, best = timed(fn, runs)
    row = {**fields, "median_secs": median, "min_secs": best, "peak_rss_mib": peak_mib(),
           "runs": runs, "precision": fields.get("precision", PRECISION),
           "engine": fields.get("engine", "pytorch")}
    rows.append(row)
    b = row["batch"]
    print(f"{row['engine']} {row['precision']} w{row['base_width']} r{row['resolution']}  "
          f"{row['operation']:<30} batch {b}  median {median:.3f} s  {b / median:6.1f} images/s"
          f"  peak {row['peak_rss_mib']:.0f} MiB", flush=True)


def bench_ort(width, res, batches, threads, runs, rows):
    """ONNX Runtime's forward of the same model (f32)."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = Normalized(ResNet50(width, 7, 3), MEAN, STD).eval()
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.rand(1, 3, res, res),), buf, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "batch"}},
                      dynamo=False, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    for batch in batches:
        x = torch.rand(batch, 3, res, res).numpy()
        fields = {"operation": "forward", "base_width": width, "resolution": res, "batch": batch,
                  "precision": "f32", "engine": "onnxruntime"}
        timed_row(rows, fields, lambda: session.run(None, {"x": x}), runs)


def bench_model(width, res, runs, rows):
    torch.manual_seed(0)
    net = ResNet50(width, 7, 3).eval()
    model = Normalized(net, MEAN, STD).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x1 = torch.rand(1, 3, res, res)
    x8 = torch.rand(8, 3, res, res)
    y1 = torch.tensor([4])

    def row(name, batch, fn):
        fields = {"operation": name, "base_width": width, "resolution": res, "batch": batch}
        timed_row(rows, fields, fn, runs)

    def fwd(x):
        with torch.no_grad():
            model(x)

    row("forward", 1, lambda: fwd(x1))
    row("forward", 8, lambda: fwd(x8))

    def fwd_bwd():
        x = x1.clone().requires_grad_(True)
        model(x).sum().backward()
        return x.grad

    row("forward + backward to input", 1, fwd_bwd)

    from pytorch_grad_cam import GradCAM

    # pytorch-grad-cam as users run it: parameters left trainable (it needs a graph to the
    # activations), model in eval mode.
    cam_net = ResNet50(width, 7, 3).eval()
    cam = GradCAM(model=Normalized(cam_net, MEAN, STD).eval(), target_layers=[cam_net.layer4])
    if PRECISION == "f32":
        # Not under autocast: pytorch-grad-cam hands the bf16 logits to numpy, which has no
        # bfloat16.
        row("Grad-CAM layer4", 1, lambda: cam(input_tensor=x1, targets=None))

    import torchattacks

    atk = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
    row("PGD-10", 1, lambda: atk(x1, y1))

    train_net = ResNet50(width, 7, 3)
    train_model = Normalized(train_net, MEAN, STD).train()
    opt = torch.optim.SGD(train_net.parameters(), lr=0.01, momentum=0.9)
    y8 = torch.randint(0, 7, (8,))

    def step():
        loss = torch.nn.functional.cross_entropy(train_model(x8), y8)
        opt.zero_grad()
        loss.backward()
        opt.step()

    row("training step", 8, step)


TRAIN_SETUPS = [(16, 160, 64), (32, 160, 64)]


def bench_train(width, res, batch, runs, rows):
    """Training rows as the trainer runs them (triscope-lib/src/train/trainer.rs, triscope-lib/src/train/loss.rs)."""
    torch.manual_seed(0)
    net = ResNet50(width, 7, 3)
    model = Normalized(net, MEAN, STD)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.rand(batch, 3, res, res)
    y = torch.arange(batch) % 7
    w = torch.linspace(0.5, 2.0, 7)
    eps, alpha, steps, beta = 2 / 255, 1 / 255, 3, 6.0

    def row(name, fn):
        fields = {"operation": name, "base_width": width, "resolution": res, "batch": batch}
        timed_row(rows, fields, fn, runs)

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def inner():
        # TRADES' inner maximisation (trades.py): eval mode, KL(p(x) || p(x')) ascent.
        model.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            p_nat = F.softmax(model(x), 1)
        adv = x + 0.001 * torch.randn_like(x)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.kl_div(F.log_softmax(model(adv), 1), p_nat, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [adv])
            adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
        for p in net.parameters():
            p.requires_grad_(True)
        return adv

    def clean_step():
        model.train()
        loss = F.cross_entropy(model(x), y, weight=w)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def trades_step():
        adv = inner()
        model.train()
        logits = model(x)
        logits_adv = model(adv)
        loss = F.cross_entropy(logits, y, weight=w) + beta * F.kl_div(
            F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()

    row("forward", forward)
    row("TRADES inner PGD-3", inner)
    row("training step clean", clean_step)
    row("training step TRADES", trades_step)


def bench_ops(runs, rows):
    """Each distinct convolution of ResNet-50 at 224, batch 1 (as bench --ops): the raw conv
    forward, and conv + BatchNorm (eval) + ReLU forward and forward + backward to the input."""
    shapes = [(3, 64, 7, 2, 224, 1), (64, 64, 1, 1, 56, 1), (64, 64, 3, 1, 56, 3), (64, 256, 1, 1, 56, 4),
              (256, 64, 1, 1, 56, 2), (256, 128, 1, 1, 56, 1), (128, 128, 3, 2, 56, 1), (128, 512, 1, 1, 28, 4),
              (256, 512, 1, 2, 56, 1), (512, 128, 1, 1, 28, 3), (128, 128, 3, 1, 28, 3), (512, 256, 1, 1, 28, 1),
              (256, 256, 3, 2, 28, 1), (256, 1024, 1, 1, 14, 6), (1024, 256, 1, 1, 14, 5), (256, 256, 3, 1, 14, 5),
              (512, 512, 3, 1, 7, 2)]
    kinds = ["conv", "conv+bn+relu fwd", "conv+bn+relu fwd+bwd"]
    totals = [0.0] * len(kinds)
    for c_in, c_out, k, stride, side, count in shapes:
        x = torch.rand(1, c_in, side, side) - 0.5
        w = torch.full((c_out, c_in, k, k), 0.01)
        block = torch.nn.Sequential(
            torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
            torch.nn.BatchNorm2d(c_out), torch.nn.ReLU(inplace=True)).eval()
        for p in block.parameters():
            p.requires_grad_(False)

        def conv():
            with torch.no_grad():
                torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2)

        def fwd():
            with torch.no_grad():
                block(x)

        def fwd_bwd():
            xg = x.clone().requires_grad_(True)
            block(xg).sum().backward()
            return xg.grad

        shape = f"{c_in}->{c_out} k{k} s{stride} @{side}"
        medians = []
        for i, (kind, fn) in enumerate(zip(kinds, [conv, fwd, fwd_bwd])):
            with autocast():
                median, best = timed(fn, runs)
            medians.append(median)
            totals[i] += median * count
            rows.append({"operation": f"{kind} {shape}", "base_width": 64, "resolution": 224, "batch": 1,
                         "median_secs": median, "min_secs": best, "runs": runs, "precision": PRECISION})
        print(f"torch {shape:<24} x{count:<2} conv {medians[0]:.4f}  conv+bn+relu fwd {medians[1]:.4f}"
              f"  fwd+bwd {medians[2]:.4f} s", flush=True)
    print("all convolutions of one ResNet-50 (weighted totals):")
    for kind, total in zip(kinds, totals):
        print(f"  {kind:<32} {total:.3f} s")
        rows.append({"operation": f"{kind} all", "base_width": 64, "resolution": 224, "batch": 1,
                     "median_secs": total, "min_secs": total, "runs": runs, "precision": PRECISION})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="bench_torch.json")
    ap.add_argument("--skip-full", action="store_true", help="only the narrow model")
    ap.add_argument("--ops", action="store_true", help="time each ResNet-50 convolution instead")
    ap.add_argument("--train", action="store_true",
                    help="also the training rows: widths 16 and 32 at 160 px, batch 64")
    ap.add_argument("--train-only", action="store_true", help="only the training rows")
    ap.add_argument("--precision", default="f32",
                    help="comma-separated: f32 and/or bf16 (torch.autocast to bfloat16)")
    ap.add_argument("--ort", action="store_true", help="also ONNX Runtime's forward rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    global PRECISION
    for precision in args.precision.split(","):
        if precision not in ("f32", "bf16"):
            sys.exit(f"--precision: {precision!r} is neither f32 nor bf16")
        PRECISION = precision
        if args.ops:
            bench_ops(args.runs, rows)
        elif not args.train_only:
            if not args.skip_full:
                bench_model(64, 224, args.runs, rows)
            bench_model(8, 128, args.runs, rows)
        if args.train or args.train_only:
            for width, res, batch in TRAIN_SETUPS:
                bench_train(width, res, batch, args.runs, rows)
    PRECISION = "f32"
    if args.ort:
        if not args.train_only:
            if not args.skip_full:
                bench_ort(64, 224, [1, 8], args.threads, args.runs, rows)
            bench_ort(8, 128, [1, 8], args.threads, args.runs, rows)
        if args.train or args.train_only:
            for width, res, batch in TRAIN_SETUPS:
                bench_ort(width, res, [batch], args.threads, args.runs, rows)
    out = {"torch": torch.__version__, "threads": args.threads, "rows": rows}
    try:
        import onnxruntime
        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
