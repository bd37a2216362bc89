#!/usr/bin/env python3
"""Would training layer4 help the 14-finding NIH model? A PyTorch check, not a product path.

Loads a Triscope chest checkpoint (default: models/kermany_cxr_default.safetensors), keeps its
stem..layer3 frozen (inference mode, outputs computed once at 224 px, no augmentation), and
trains a copy of its layer4 plus a fresh 14-finding head with BCE on the NIH training split,
printing validation and test mean AUROC per epoch (over the findings with both classes in the
split; "test13" leaves out Hernia). Compare with the frozen-backbone head of
configs/nih_cxr14_w32_224.yaml (test 0.573, 0.615 over 13).

    python3 tools/nih_layer4_finetune.py --lr-layer4 0.001 --lr-head 0.5 --bn eval
"""

import argparse
import copy
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import ResNet50  # noqa: E402

FINDINGS = (
    "Atelectasis Cardiomegaly Effusion Infiltration Mass Nodule Pneumonia Pneumothorax "
    "Consolidation Edema Emphysema Fibrosis Pleural_Thickening Hernia"
).split()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/kermany_cxr_default.safetensors")
    ap.add_argument("--data", default="../shared/data/nih-cxr14-bbox")
    ap.add_argument("--lr-layer4", type=float, default=0.001)
    ap.add_argument("--lr-head", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--bn", choices=["train", "eval"], default="eval")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    cfg = json.loads(safe_open(args.model, "pt").metadata()["triscope.config"])
    net = ResNet50(cfg["base_width"], cfg["num_classes"], cfg["in_channels"])
    net.load_state_dict(load_file(args.model), strict=False)
    net.eval()
    mean, std = cfg["mean"][0], cfg["std"][0]
    rows = list(csv.DictReader(open(Path(args.data) / "labels.csv")))
    layer3, y, split = [], [], []
    with torch.no_grad():
        for i in range(0, len(rows), 32):
            batch = []
            for r in rows[i : i + 32]:
                im = Image.open(Path(args.data) / "images" / r["Image Index"]).convert("L")
                im = im.resize((224, 224), Image.BILINEAR)
                batch.append((np.asarray(im, np.float32) / 255 - mean) / std)
                y.append([f in r["Finding Labels"].split("|") for f in FINDINGS])
                split.append(r["split"])
            x = torch.tensor(np.stack(batch))[:, None]  # [b, 1, 224, 224]
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            layer3.append(net.layer3(net.layer2(net.layer1(x))))  # [b, 16w, 14, 14]
    layer3 = torch.cat(layer3)
    y, split = np.array(y, np.float32), np.array(split)

    head = torch.nn.Linear(net.fc.in_features, len(FINDINGS))
    model = torch.nn.Sequential(
        copy.deepcopy(net.layer4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head
    )
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": args.lr_layer4},
            {"params": head.parameters(), "lr": args.lr_head},
        ],
        momentum=0.9,
        weight_decay=args.weight_decay,
        nesterov=True,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)

    def mean_auroc(name):
        model.eval()
        idx = np.where(split == name)[0]
        with torch.no_grad():
            p = torch.cat([model(layer3[idx[i : i + 64]]) for i in range(0, len(idx), 64)])
        per = [
            roc_auc_score(y[idx, k], p[:, k].numpy()) if 0 < y[idx, k].sum() < len(idx) else None
            for k in range(len(FINDINGS))
        ]
        valid = [a for a in per if a is not None]
        without_hernia = [a for a in per[:-1] if a is not None]
        return float(np.mean(valid)), float(np.mean(without_hernia))

    train = np.where(split == "train")[0]
    targets = torch.tensor(y)
    best = None
    for epoch in range(args.epochs):
        model.train()
        if args.bn == "eval":
            model[0].eval()
        order = np.random.permutation(train)
        for i in range(0, len(order), 32):
            b = order[i : i + 32]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(layer3[b]), targets[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        val, _ = mean_auroc("val")
        test, test13 = mean_auroc("test")
        print(f"epoch {epoch + 1}: val {val:.3f} test {test:.3f} test13 {test13:.3f}", flush=True)
        if best is None or val > best[0]:
            best = (val, test, test13, epoch + 1)
    print(f"best by val: epoch {best[3]}, val {best[0]:.3f}, test {best[1]:.3f}, test13 {best[2]:.3f}")


if __name__ == "__main__":
    main()
