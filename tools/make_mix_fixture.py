#!/usr/bin/env python3
"""MixUp / CutMix reference values for triscope-lib/src/train/mix.rs and loss.rs tests.

torchvision's transforms.v2.MixUp and CutMix on a [3, 2, 4, 6] batch (x = arange / 144,
labels [0, 2, 1] of 3 classes), each under its own torch.manual_seed; the draws are replayed
under the same seed to record lam and CutMix's centre. Also F.cross_entropy of fixed logits
against the mixed soft labels (torchvision's convention), which equals
lam * CE(z, y) + (1 - lam) * CE(z, roll(y)) without class weights or smoothing.

    python3 tools/make_mix_fixture.py > tests/fixtures/mix_torchvision.json
"""
import json

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

x = torch.arange(3 * 2 * 4 * 6, dtype=torch.float32).reshape(3, 2, 4, 6) / 144
y = torch.tensor([0, 2, 1])
z = torch.tensor([[1.0, -0.5, 0.25], [0.3, 2.0, -1.0], [-0.2, 0.1, 0.4]])
out = {"input": x.flatten().tolist(), "shape": list(x.shape), "labels": y.tolist(),
       "logits": z.flatten().tolist(), "cases": []}
for kind, seed in [("mixup", 0), ("cutmix", 6), ("cutmix", 14), ("cutmix", 15)]:
    torch.manual_seed(seed)
    lam = float(torch.distributions.Beta(torch.tensor([1.0]), torch.tensor([1.0])).sample(()))
    case = {"kind": kind, "lam": lam}
    if kind == "cutmix":
        case["rx"] = int(torch.randint(6, size=(1,)))
        case["ry"] = int(torch.randint(4, size=(1,)))
    t = v2.MixUp(alpha=1.0, num_classes=3) if kind == "mixup" else v2.CutMix(alpha=1.0, num_classes=3)
    torch.manual_seed(seed)
    xm, ym = t(x.clone(), y.clone())
    if kind == "cutmix":
        # lam_adjusted: the own label's weight in the mixed soft labels
        case["lam_adjusted"] = float(ym[0, y[0]])
    case["output"] = xm.flatten().tolist()
    case["soft_labels"] = ym.flatten().tolist()
    case["cross_entropy"] = float(F.cross_entropy(z, ym))
    out["cases"].append(case)
print(json.dumps(out, indent=1))
