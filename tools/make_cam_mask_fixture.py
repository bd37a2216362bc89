#!/usr/bin/env python3
"""PyTorch reference for `training.cam_mask_weight` (tests/train.rs, `cam_mask_penalty_matches_pytorch`).

    python3 tools/make_cam_mask_fixture.py   # writes tests/fixtures/cam_mask_w8_c7.safetensors

On the fixture network of tools/make_fixtures.py (base width 8, 7 classes) in training mode, a
seeded batch of 3 images at 48 pixels (layer4 map 2x2) with elliptic 0/1 lesion masks:

    M_i = ReLU(sum_k fc.weight[y_i, k] * layer4_i[k])               the label's CAM, [2, 2]
    inside_i = adaptive_avg_pool2d(mask_i, (2, 2))                    the lesion's share per cell
    share = mean_i (1 - sum(M_i * inside_i) / sum(M_i))

and stores x, labels, masks, share, and d(share)/d(fc.weight), d(share)/d(layer4.2.conv3.weight);
then the same with M_i = softplus(...) (`training.cam_mask_map: softplus`), under the keys with
the suffix `_softplus`.
"""

import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import MEAN, STD, ResNet50  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")
SIDE = 48


def main():
    torch.manual_seed(3)
    net = ResNet50(base_width=8, num_classes=7)
    net.load_state_dict(load_file(os.path.join(OUT, "resnet50_w8_c7.safetensors")))
    net.train()
    x = torch.rand(3, 3, SIDE, SIDE)
    y = torch.tensor([4, 0, 2])
    yy, xx = torch.meshgrid(torch.arange(SIDE).float(), torch.arange(SIDE).float(), indexing="ij")
    masks = torch.stack(
        [(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).float()
         for cx, cy, rx, ry in [(20, 22, 12, 9), (30, 15, 8, 14), (24, 24, 20, 18)]]
    )
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    out = {"x": x, "labels": y.float(), "masks": masks}
    for suffix, positive in [("", F.relu), ("_softplus", F.softplus)]:
        l4 = net.features((x - mean) / std)[3]  # [3, 256, 2, 2]
        cam = positive((l4 * net.fc.weight[y].view(3, -1, 1, 1)).sum(1))  # [3, 2, 2]
        inside = F.adaptive_avg_pool2d(masks.unsqueeze(1), l4.shape[-2:]).squeeze(1)
        share = (1 - (cam * inside).sum((1, 2)) / (cam.sum((1, 2)) + 1e-12)).mean()
        net.zero_grad()
        share.backward()
        out["share" + suffix] = share.detach().reshape(1)
        out["grad_fc_weight" + suffix] = net.fc.weight.grad.detach().clone()  # torch layout [7, 256]
        out["grad_layer4_2_conv3_weight" + suffix] = net.layer4[2].conv3.weight.grad.detach().clone()
    out = {k: v.contiguous() for k, v in out.items()}
    path = os.path.join(OUT, "cam_mask_w8_c7.safetensors")
    save_file(out, path, metadata={"source": "tools/make_cam_mask_fixture.py", "torch": torch.__version__})
    print(f"share {out['share'].item():.6f} (relu), {out['share_softplus'].item():.6f} (softplus); cells inside {inside.flatten(1).tolist()}")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
