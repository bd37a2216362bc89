#!/usr/bin/env python3
"""torchattacks' Square (L-inf, margin loss) on the fixture network, as a reference for
Triscope's Square attack (tests/attack.rs, `square_matches_torchattacks_in_distribution`).

    python3 tools/make_square_fixture.py   # writes tests/fixtures/square_w8_c7.safetensors

Square is random search: no two implementations draw the same squares, so the reference is a
distribution. On the fixture network of tools/make_fixtures.py (base width 8, 7 classes, eval
mode, normalisation inside), 48 seeded images at 32 pixels, labelled with the network's own
prediction (all correct before the attack), eps 2/255 and 300 queries, it runs torchattacks'
Square with 8 seeds and stores, per image, the share of seeds that fooled it and the median
queries the successful runs took, and the robust accuracy of each seed.
"""

import os
import sys

import torch
import torchattacks
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import MEAN, STD, Normalized, ResNet50  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")
N, SIDE, EPS, QUERIES, SEEDS = 48, 32, 2 / 255, 300, 8


def main():
    torch.manual_seed(11)
    net = ResNet50(base_width=8, num_classes=7)
    net.load_state_dict(load_file(os.path.join(OUT, "resnet50_w8_c7.safetensors")))
    model = Normalized(net, MEAN, STD).eval()
    x = torch.rand(N, 3, SIDE, SIDE)
    with torch.no_grad():
        y = model(x).argmax(1)
    fooled = torch.zeros(N)
    accuracy = []
    for seed in range(SEEDS):
        attack = torchattacks.Square(model, eps=EPS, n_queries=QUERIES, seed=seed)
        torch.manual_seed(seed)
        adv = attack(x, y)
        assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            wrong = (model(adv).argmax(1) != y).float()
        fooled += wrong / SEEDS
        accuracy.append(1 - wrong.mean().item())
    out = {
        "x": x,
        "labels": y.float(),
        "fooled_share": fooled,
        "robust_accuracy": torch.tensor(accuracy),
        "eps": torch.tensor([EPS]),
        "queries": torch.tensor([float(QUERIES)]),
    }
    out = {k: v.contiguous() for k, v in out.items()}
    path = os.path.join(OUT, "square_w8_c7.safetensors")
    meta = {"source": "tools/make_square_fixture.py", "torch": torch.__version__,
            "torchattacks": torchattacks.__version__}
    save_file(out, path, metadata=meta)
    print(f"robust accuracy per seed {[round(a, 3) for a in accuracy]}")
    print(f"fooled share per image {[round(v, 2) for v in fooled.tolist()]}")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
