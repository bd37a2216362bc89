#!/usr/bin/env python3
"""PyTorch reference values for Triscope's training losses (tests/train_losses.rs).

    python3 tools/make_train_fixtures.py     # writes tests/fixtures/train_losses_w8_c7.safetensors

Uses the fixture network of tools/make_fixtures.py (tests/fixtures/resnet50_w8_c7.safetensors,
base width 8, 7 classes) on one seeded batch of 4 images at 32 pixels and stores:

  x, labels, class_weights, bce_targets     the batch, per-class weights (mean 1), 0/1 targets
  ce_eval                                   F.cross_entropy, model.eval()
  ce_train_weighted                         F.cross_entropy(weight=w), model.train()
  bce_train_weighted                        F.binary_cross_entropy_with_logits(weight=w), train
  trades_x_adv                              TRADES' inner maximisation (reference trades.py:
                                            x + 0.001 N(0,1), 10 sign steps of 2/255 on the
                                            summed KL, eps 8/255, eval mode)
  trades_natural, trades_robust, trades_total   the outer loss at that x_adv (beta 6, train mode)
  trades_grad_fc_weight                     d(trades_total)/d(fc.weight), torch layout [7, 256]
  pgd_x_adv, pgd_at_loss                    a PGD point (torchattacks-style, eps 8/255) and
                                            CE(model.train()(x_adv), y)

and tests/fixtures/train_tiny/{train,val}/{mel,nv}/*.png: 12 + 4 images per class from
HAM10000 (../shared/data/ham10000, CC BY-NC-SA 4.0, Tschandl et al. 2018), centre-cropped
and resized to 32x32, for the tiny training runs of tests/train.rs, and their lesion masks
cropped the same way in tests/fixtures/train_tiny/masks/ (`--tiny-only` writes these alone).
"""

import copy
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import MEAN, STD, ResNet50  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")
EPS, STEP, STEPS, BETA = 8 / 255, 2 / 255, 10, 6.0


class Normalized(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def trades_inner(model, x):
    """trades.py's inner loop (distance 'l_inf')."""
    model.eval()
    criterion_kl = torch.nn.KLDivLoss(reduction="sum")
    x_adv = x.detach() + 0.001 * torch.randn(x.shape)
    p_nat = F.softmax(model(x), dim=1).detach()
    for _ in range(STEPS):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), p_nat)
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv.detach()


def main():
    torch.manual_seed(0)
    net = ResNet50(base_width=8, num_classes=7)
    net.load_state_dict(load_file(os.path.join(OUT, "resnet50_w8_c7.safetensors")))
    base = Normalized(net)
    x = torch.rand(4, 3, 32, 32)
    y = torch.tensor([0, 4, 5, 2])
    w = torch.tensor([2.0, 0.5, 1.0, 3.0, 0.25, 0.1, 0.15])
    w = w / w.mean()
    t = (torch.rand(4, 7) > 0.6).float()

    def fresh():
        return copy.deepcopy(base)

    out = {"x": x, "labels": y.long(), "class_weights": w, "bce_targets": t}
    m = fresh().eval()
    with torch.no_grad():
        out["ce_eval"] = F.cross_entropy(m(x), y).reshape(1)
    m = fresh().train()
    with torch.no_grad():
        logits = m(x)
        out["ce_train_weighted"] = F.cross_entropy(logits, y, weight=w).reshape(1)
        out["bce_train_weighted"] = F.binary_cross_entropy_with_logits(logits, t, weight=w).reshape(1)

    m = fresh()
    x_adv = trades_inner(m, x)
    out["trades_x_adv"] = x_adv
    m.train()
    logits = m(x)
    logits_adv = m(x_adv)
    natural = F.cross_entropy(logits, y)
    robust = torch.nn.KLDivLoss(reduction="sum")(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1)) / x.shape[0]
    total = natural + BETA * robust
    m.zero_grad()
    total.backward()
    out["trades_natural"] = natural.detach().reshape(1)
    out["trades_robust"] = robust.detach().reshape(1)
    out["trades_total"] = total.detach().reshape(1)
    out["trades_grad_fc_weight"] = m.net.fc.weight.grad.detach().clone()

    # A PGD point (eval mode, no random start so it is reproducible) and the PGD-AT loss there.
    m = fresh().eval()
    adv = x.clone()
    for _ in range(STEPS):
        adv.requires_grad_()
        loss = F.cross_entropy(m(adv), y, reduction="sum")
        g = torch.autograd.grad(loss, [adv])[0]
        adv = torch.min(torch.max(adv.detach() + STEP * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    out["pgd_x_adv"] = adv.detach()
    m = fresh().train()
    with torch.no_grad():
        out["pgd_at_loss"] = F.cross_entropy(m(adv), y).reshape(1)

    out = {k: v.contiguous() for k, v in out.items()}
    path = os.path.join(OUT, "train_losses_w8_c7.safetensors")
    save_file(out, path, metadata={"source": "tools/make_train_fixtures.py", "torch": torch.__version__})
    for k, v in out.items():
        if v.numel() == 1:
            print(f"{k}: {v.item():.6f}")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def make_tiny_dataset():
    import csv

    from PIL import Image

    ham = os.path.join(ROOT, "..", "shared", "data", "ham10000")
    dest = os.path.join(OUT, "train_tiny")
    wanted = {("train", "mel"): 12, ("train", "nv"): 12, ("val", "mel"): 4, ("val", "nv"): 4}
    taken = {k: 0 for k in wanted}
    with open(os.path.join(ham, "labels.csv")) as f:
        for row in csv.DictReader(f):
            key = (row["split"], row["dx"])
            if key not in wanted or taken[key] >= wanted[key]:
                continue
            img = Image.open(os.path.join(ham, "images", row["image_id"] + ".jpg")).convert("RGB")
            w, h = img.size
            s = min(w, h)
            img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((32, 32), Image.BILINEAR)
            folder = os.path.join(dest, key[0], key[1])
            os.makedirs(folder, exist_ok=True)
            img.save(os.path.join(folder, row["image_id"] + ".png"))
            # Its lesion mask, cropped and resized the same way (bilinear, then 0.5), for the
            # explanation metrics a training run measures per epoch.
            mask = Image.open(os.path.join(ham, "masks", row["image_id"] + ".png")).convert("L")
            mask = mask.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((32, 32), Image.BILINEAR)
            os.makedirs(os.path.join(dest, "masks"), exist_ok=True)
            mask.point(lambda v: 255 if v >= 128 else 0).convert("1").save(os.path.join(dest, "masks", row["image_id"] + ".png"))
            taken[key] += 1
    with open(os.path.join(dest, "README.md"), "w") as f:
        f.write(
            "32x32 crops of HAM10000 images and, in masks/, their lesion masks cropped the same way\n"
            "(made by tools/make_train_fixtures.py).\n\n"
            "HAM10000: CC BY-NC-SA 4.0, Tschandl, Rosendahl, Kittler, \"The HAM10000 dataset\", "
            "Sci. Data 5, 180161 (2018), doi:10.7910/DVN/DBW86T\n"
        )
    print("tiny dataset:", taken)


if __name__ == "__main__":
    if "--tiny-only" not in sys.argv:
        main()
    make_tiny_dataset()
