#!/usr/bin/env python3
"""Reference for `input.color_constancy: shades_of_gray` (tests/parity.rs,
`shades_of_gray_matches_the_isic_reference_and_pytorch`).

    python3 tools/make_shades_of_gray_fixture.py   # writes tests/fixtures/shades_of_gray_w8_c7.safetensors

Shades of Gray (Finlayson & Trezzi 2004, p = 6) as the ISIC 2018-2019 entries applied it, in
NumPy on the 0-255 scale (`isic_shades_of_gray`, the widely copied `shade_of_gray_cc`), divided by
255 for Triscope's [0, 1] pixels. Then, in PyTorch, the fixture network of
tools/make_fixtures.py (base width 8, 7 classes, eval mode) with the transform as the first step
of its forward (before the mean/std normalisation): its logits, and the gradient of the summed
cross-entropy with respect to the displayed [0, 1] pixels (through the transform).

Stored: `input` [3, 3, 32, 32] (a seeded colour cast per image, one image bright enough that the
correction clips at 1), `labels`, `corrected` (NumPy reference), `corrected_torch`, `logits`,
`ce_sum`, `input_grad_ce_sum`.
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import MEAN, STD, Normalized, ResNet50  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")
SIDE = 32
P = 6


def isic_shades_of_gray(img, power=P):
    """The ISIC entries' colour constancy: img is H x W x 3 on 0-255."""
    img = img.astype("float64")
    img_power = np.power(img, power)
    rgb_vec = np.power(np.mean(img_power, (0, 1)), 1 / power)
    rgb_norm = np.sqrt(np.sum(np.power(rgb_vec, 2.0)))
    rgb_vec = rgb_vec / rgb_norm
    rgb_vec = 1 / (rgb_vec * np.sqrt(3))
    img = np.multiply(img, rgb_vec)
    return np.clip(img, a_min=0, a_max=255)


def torch_shades_of_gray(x):
    """The same on [0, 1] pixels, [b, 3, H, W], differentiable."""
    e = x.pow(P).mean(dim=(2, 3), keepdim=True).clamp_min(1e-12).pow(1.0 / P)
    length = e.pow(2).sum(dim=1, keepdim=True).sqrt()
    return (x * length / (e * np.sqrt(3))).clamp_max(1.0)


def main():
    torch.manual_seed(11)
    net = ResNet50(base_width=8, num_classes=7)
    net.load_state_dict(load_file(os.path.join(OUT, "resnet50_w8_c7.safetensors")))
    model = Normalized(net, MEAN, STD).eval()

    base = torch.rand(3, 3, SIDE, SIDE)
    cast = torch.tensor([[1.0, 0.7, 0.5], [0.6, 0.8, 1.0], [1.3, 1.2, 1.25]])  # per image RGB
    x = (base * cast[:, :, None, None]).clamp(0.0, 1.0)
    labels = torch.tensor([4, 5, 1])

    corrected = np.stack(
        [isic_shades_of_gray(x[i].permute(1, 2, 0).double().numpy() * 255.0) / 255.0 for i in range(3)]
    ).transpose(0, 3, 1, 2)
    corrected_torch = torch_shades_of_gray(x.double())
    assert np.abs(corrected - corrected_torch.numpy()).max() < 1e-12
    assert (corrected >= 1.0).any(), "one image must clip"

    xg = x.clone().requires_grad_(True)
    logits = model(torch_shades_of_gray(xg))
    ce = F.cross_entropy(logits, labels, reduction="sum")
    (grad,) = torch.autograd.grad(ce, xg)

    save_file(
        {
            "input": x.contiguous(),
            "labels": labels.float(),
            "corrected": torch.from_numpy(corrected).float().contiguous(),
            "corrected_torch": corrected_torch.float().contiguous(),
            "logits": logits.detach().contiguous(),
            "ce_sum": ce.detach().reshape(1),
            "input_grad_ce_sum": grad.contiguous(),
        },
        os.path.join(OUT, "shades_of_gray_w8_c7.safetensors"),
    )
    print("clipped share", float((corrected >= 1.0).mean()), "ce", float(ce.detach()))


if __name__ == "__main__":
    main()
