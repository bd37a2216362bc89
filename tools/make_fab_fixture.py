#!/usr/bin/env python3
"""torchattacks' FAB (L-inf, multi-targeted: AutoAttack's FAB-T) on the fixture network, as a
reference for Triscope's FAB-T (tests/attack.rs, `fab_t_matches_torchattacks`).

    python3 tools/make_fab_fixture.py   # writes tests/fixtures/fab_w8_c7.safetensors

FAB without restarts draws nothing at random, so the reference is one run. It stores:
  - the L-inf projection onto a hyperplane within the box (`projection_linf`) for 6 rows of 300
    values: `proj_t` (half of the rows on the 8-bit grid, so that sort ties occur), `proj_w`,
    `proj_b` and the step `proj_d`;
  - on the fixture network of tools/make_fixtures.py (base width 8, 7 classes, eval mode,
    normalisation inside), 24 seeded images at 32 pixels labelled with the network's own
    prediction: FAB-T with 100 iterations and the 6 runner-up classes as targets, at eps 1
    (nearly every image fooled by the first target: `norm_eps1`, the L-inf size of each
    adversarial, a minimal-distortion measure, -1 where none was found) and at eps 0.5/255
    (`fooled_eps`, 1 where the image was fooled within the radius; the untrained fixture
    network falls at a median of 0.65/255, so this radius splits the images).
"""

import os
import sys

import torch
import torchattacks
from safetensors.torch import load_file, save_file
from torchattacks.attacks.fab import projection_linf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import MEAN, STD, Normalized, ResNet50  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")
N, SIDE, STEPS, EPS = 24, 32, 100, 0.5 / 255


def fab_t(model, x, y, eps):
    attack = torchattacks.FAB(model, norm="Linf", eps=eps, steps=STEPS, n_restarts=1,
                              multi_targeted=True, n_classes=7)
    return attack(x, y)


def main():
    torch.manual_seed(5)
    t = torch.rand(6, 300)
    t[3:] = (t[3:] * 255).round() / 255
    w = torch.randn(6, 300)
    w[:, ::37] = 0.0  # coordinates the hyperplane ignores
    b = torch.randn(6) * 3
    d = projection_linf(t, w, b)

    net = ResNet50(base_width=8, num_classes=7)
    net.load_state_dict(load_file(os.path.join(OUT, "resnet50_w8_c7.safetensors")))
    model = Normalized(net, MEAN, STD).eval()
    torch.manual_seed(13)
    x = torch.rand(N, 3, SIDE, SIDE)
    with torch.no_grad():
        y = model(x).argmax(1)
    adv1 = fab_t(model, x, y, 1.0)
    adv2 = fab_t(model, x, y, EPS)
    with torch.no_grad():
        fooled1 = model(adv1).argmax(1) != y
        fooled2 = model(adv2).argmax(1) != y
    norm1 = (adv1 - x).abs().flatten(1).max(1)[0]
    assert (adv2 - x).abs().max() <= EPS + 1e-6
    out = {
        "proj_t": t, "proj_w": w, "proj_b": b, "proj_d": d,
        "x": x, "labels": y.float(),
        "norm_eps1": torch.where(fooled1, norm1, torch.full_like(norm1, -1.0)),
        "fooled_eps": fooled2.float(),
        "eps": torch.tensor([EPS]), "steps": torch.tensor([float(STEPS)]),
    }
    out = {k: v.contiguous() for k, v in out.items()}
    path = os.path.join(OUT, "fab_w8_c7.safetensors")
    meta = {"source": "tools/make_fab_fixture.py", "torch": torch.__version__,
            "torchattacks": torchattacks.__version__}
    save_file(out, path, metadata=meta)
    print(f"fooled at eps 1: {int(fooled1.sum())}/{N}, median norm*255 {float(norm1[fooled1].median()) * 255:.2f}")
    print(f"robust accuracy at 0.5/255: {1 - fooled2.float().mean().item():.3f}")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
