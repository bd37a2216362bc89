#!/usr/bin/env python3
"""Reference fixtures for Triscope's parity tests, made with PyTorch and pytorch-grad-cam.

    pip install torch torchvision grad-cam torchattacks safetensors numpy pillow
    python3 tools/make_fixtures.py            # writes tests/fixtures/

What it writes (all small; committed to the repository):
  resnet50_w8_c7.safetensors   a seeded narrow ResNet-50 (base width 8, 7 classes, 3 channels)
                               in torchvision's state-dict layout, BatchNorm statistics
                               calibrated on real HAM10000 images so activations are realistic
  parity_w8_c7.safetensors     inputs (pixels in [0, 1]) and PyTorch's outputs for them:
                               logits, layer1..layer4, the pooled embedding, Grad-CAM maps
                               (pytorch-grad-cam GradCAM) on layer4 and layer3 for the predicted
                               class and for class 4 (mel), the gradient of the summed
                               cross-entropy with respect to the input (and, per image, how far
                               PyTorch's own float32 result is from float64), and the 1-channel
                               adaptation (mean and red-channel stems) on a chest X-ray
                               torchattacks FGSM (eps 8/255) and PGD (eps 8/255, alpha 2/255,
                               no random start) iterates after 5 and 6 steps, as int8 codes
                               (see encode_adv)
  torchvision_resnet50_keys.json  every key, shape and dtype of torchvision.models.resnet50's
                               state dict (7 classes), to check Triscope's export layout
  make_fixtures.json           versions of the libraries that made them

The model at base width 64 is exactly torchvision's resnet50 (checked below).
"""

import json
import os
import sys

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import Bottleneck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")
DATA = os.path.join(ROOT, "..", "shared", "data")
SAMPLES = os.path.join(ROOT, "assets", "samples")

BASE_WIDTH = 8
NUM_CLASSES = 7
RESOLUTION = 128
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
# The 1-channel model's normalisation: the mean of the ImageNet statistics.
GRAY_MEAN = [float(np.mean(MEAN))]
GRAY_STD = [float(np.mean(STD))]


class ResNet50(nn.Module):
    """torchvision's ResNet-50 with every width scaled by base_width / 64 (same names)."""

    def __init__(self, base_width=64, num_classes=1000, in_channels=3):
        super().__init__()
        w = base_width
        self.inplanes = w
        self.conv1 = nn.Conv2d(in_channels, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(w, 3)
        self.layer2 = self._make_layer(2 * w, 4, 2)
        self.layer3 = self._make_layer(4 * w, 6, 2)
        self.layer4 = self._make_layer(8 * w, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * w * 4, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        emb = torch.flatten(self.avgpool(l4), 1)
        return l1, l2, l3, l4, emb

    def forward(self, x):
        return self.fc(self.features(x)[-1])


class Normalized(nn.Module):
    """Normalisation inside the model, as Triscope does: inputs are pixels in [0, 1]."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def load_pixels(path, channels, resolution):
    """Resize the shorter side (bilinear, antialiased) then centre-crop; [C, H, W] in [0, 1]."""
    img = Image.open(path)
    img = img.convert("RGB" if channels == 3 else "L")
    t = TF.to_tensor(img)
    t = TF.resize(t, resolution, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    t = TF.center_crop(t, [resolution, resolution])
    return t.clamp(0, 1)


def encode_adv(x, adv, unit):
    """int8 code per pixel: code = k + 30 * base, adv = origin(base) + k * unit, where the
    origin is x (base 0), 0.0 (base 1) or 1.0 (base 2): sign steps of `unit` from the clean
    pixel, or from a [0, 1] bound after a clamp. Checked to reproduce the image within 1e-6."""
    code = torch.full_like(x, 127)
    decoded = torch.full_like(x, float("nan"))
    for base, origin in enumerate([x, torch.zeros_like(x), torch.ones_like(x)]):
        k = torch.round((adv - origin) / unit).clamp(-12, 12)
        value = origin + k * unit
        ok = ((value - adv).abs() < 1e-6) & (code == 127)
        code[ok] = (k + 30 * base)[ok]
        decoded[ok] = value[ok]
    err = (decoded - adv).abs().max().item()
    assert err < 1e-6, f"adversarial code does not reproduce the image ({err})"
    return code.to(torch.int8)


def check_torchvision_layout():
    ours = ResNet50(64, NUM_CLASSES, 3).state_dict()
    ref = torchvision.models.resnet50(num_classes=NUM_CLASSES).state_dict()
    assert list(ours.keys()) == list(ref.keys()), "key order/names differ from torchvision"
    for k in ref:
        assert ours[k].shape == ref[k].shape and ours[k].dtype == ref[k].dtype, k
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in ref.items()]


def calibrate(model, paths):
    """Set BatchNorm running statistics from real images, then randomise the affine terms."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    batch = torch.stack([load_pixels(p, 3, RESOLUTION) for p in paths])
    with torch.no_grad():
        wrapped = Normalized(model, MEAN, STD)
        for chunk in batch.split(16):
            wrapped(chunk)
    for bn in bns:
        bn.momentum = 0.1
        with torch.no_grad():
            bn.weight.uniform_(0.8, 1.2)
            bn.bias.normal_(0.0, 0.1)
    model.eval()


def gradcam(wrapped, layer, x, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=wrapped, target_layers=[layer]) as cam:
        t = None if targets is None else [ClassifierOutputTarget(c) for c in targets]
        return torch.from_numpy(cam(input_tensor=x, targets=t)).float()


def main():
    torch.manual_seed(20261125)
    np.random.seed(20261125)
    os.makedirs(OUT, exist_ok=True)

    keys = check_torchvision_layout()
    with open(os.path.join(OUT, "torchvision_resnet50_keys.json"), "w") as f:
        json.dump({"num_classes": NUM_CLASSES, "keys": keys}, f, indent=0)

    # Calibration images: HAM10000 train split (never the test images used below).
    import csv

    with open(os.path.join(DATA, "ham10000", "labels.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    calib = [os.path.join(DATA, "ham10000", "images", r["image_id"] + ".jpg") for r in rows[:64]]

    model = ResNet50(BASE_WIDTH, NUM_CLASSES, 3)
    calibrate(model, calib)
    wrapped = Normalized(model, MEAN, STD).eval()

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, "resnet50_w8_c7.safetensors"), metadata={"source": "tools/make_fixtures.py"})

    images = [
        os.path.join(SAMPLES, "ham10000", "ISIC_0024410.jpg"),  # mel
        os.path.join(SAMPLES, "ham10000", "ISIC_0024317.jpg"),  # nv
        os.path.join(SAMPLES, "nih-cxr14", "00000072_000.png"),  # grey X-ray, as RGB
    ]
    labels = torch.tensor([4, 5, 0])
    x = torch.stack([load_pixels(p, 3, RESOLUTION) for p in images])  # [3, 3, 128, 128]

    out = {"input": x.clone()}
    with torch.no_grad():
        xn = (x - wrapped.mean) / wrapped.std
        l1, l2, l3, l4, emb = model.features(xn)
        logits = model.fc(emb)
    out.update(layer1=l1, layer2=l2, layer3=l3, layer4=l4, embedding=emb, logits=logits)
    pred = logits.argmax(1)
    out["predicted"] = pred.to(torch.int64)
    out["labels"] = labels

    for layer_name in ["layer4", "layer3"]:
        layer = getattr(model, layer_name)
        out[f"gradcam_{layer_name}_predicted"] = gradcam(wrapped, layer, x, None)
        out[f"gradcam_{layer_name}_class4"] = gradcam(wrapped, layer, x, [4, 4, 4])
        for k in ["predicted", "class4"]:
            m = out[f"gradcam_{layer_name}_{k}"]
            assert m.shape == (3, RESOLUTION, RESOLUTION), m.shape
            assert float(m.max()) > 0.5, f"degenerate Grad-CAM {layer_name} {k}"

    # Gradient of the summed cross-entropy with respect to the input pixels.
    xg = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(wrapped(xg), labels, reduction="sum")
    loss.backward()
    out["input_grad_ce_sum"] = xg.grad.detach().clone()
    out["ce_sum"] = loss.detach().reshape(1)
    # The same gradient in float64: how far PyTorch's own float32 result is from it tells how
    # ill-conditioned each image is (ReLU pre-activations near zero flip with rounding).
    x64 = x.double().clone().requires_grad_(True)
    w64 = Normalized(model, MEAN, STD).double()
    nn.functional.cross_entropy(w64(x64), labels, reduction="sum").backward()
    g32, g64 = out["input_grad_ce_sum"], x64.grad.float()
    out["input_grad_torch_f32_vs_f64"] = torch.stack(
        [(g32[b] - g64[b]).abs().max() / g32[b].abs().max() for b in range(len(g32))]
    )
    model.float()

    # torchattacks on the same model: FGSM and PGD without random start (deterministic).
    import torchattacks

    # Stored compactly as int8 codes (see encode_adv; checked to reproduce the images).
    fgsm = torchattacks.FGSM(wrapped, eps=8 / 255)
    adv_fgsm = fgsm(x, labels).detach()
    out["fgsm_eps8_code"] = encode_adv(x, adv_fgsm, 8 / 255)
    # PGD is chaotic under rounding (PyTorch float32 and float64 runs of PGD-10 on this model
    # agree on only ~20% of pixels), so parity is checked step by step: the iterates after 5
    # and 6 steps, and Triscope's sixth step taken from PyTorch's fifth iterate.
    for steps in (5, 6):
        pgd = torchattacks.PGD(wrapped, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=False)
        out[f"pgd{steps}_eps8_code"] = encode_adv(x, pgd(x, labels).detach(), 2 / 255)
    with torch.no_grad():
        out["fgsm_eps8_logits"] = wrapped(adv_fgsm)

    # 1-channel adaptation: the same weights with the stem averaged over RGB (or the red channel).
    gray = load_pixels(images[2], 1, RESOLUTION).unsqueeze(0)  # [1, 1, 128, 128]
    out["input_gray"] = gray
    for mode in ["mean", "red"]:
        m1 = ResNet50(BASE_WIDTH, NUM_CLASSES, 1)
        sd1 = dict(sd)
        w = sd["conv1.weight"]
        sd1["conv1.weight"] = w.mean(dim=1, keepdim=True) if mode == "mean" else w[:, :1].clone()
        m1.load_state_dict(sd1, strict=True)
        m1.eval()
        with torch.no_grad():
            out[f"logits_gray_{mode}"] = Normalized(m1, GRAY_MEAN, GRAY_STD)(gray)

    out = {k: v.detach().contiguous() for k, v in out.items()}
    save_file(out, os.path.join(OUT, "parity_w8_c7.safetensors"))

    meta = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": sys.version.split()[0],
        "base_width": BASE_WIDTH,
        "num_classes": NUM_CLASSES,
        "resolution": RESOLUTION,
        "mean": MEAN,
        "std": STD,
        "gray_mean": GRAY_MEAN,
        "gray_std": GRAY_STD,
        "images": [os.path.relpath(p, ROOT) for p in images],
        "predicted": pred.tolist(),
        "params": sum(p.numel() for p in model.parameters()),
    }
    from importlib.metadata import version

    meta["grad_cam"] = version("grad-cam")
    meta["torchattacks"] = version("torchattacks")
    with open(os.path.join(OUT, "make_fixtures.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
