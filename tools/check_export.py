#!/usr/bin/env python3
"""Check that a `triscope export` file loads into torchvision with strict=True and gives the
same logits as Triscope.

    triscope export --model models/ham10000_default.safetensors --out /tmp/tv.safetensors
    python3 tools/check_export.py /tmp/tv.safetensors [IMAGE]

At base width 64 and 3 channels the model is torchvision.models.resnet50 itself; narrower or
1-channel models use the same layout (tools/make_fixtures.py's ResNet50).
"""

import json
import os
import subprocess
import sys

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import Normalized, ResNet50, load_pixels  # noqa: E402


def main():
    path = sys.argv[1]
    with safe_open(path, "pt") as f:
        cfg = json.loads(f.metadata()["triscope.config"])
    sd = load_file(path)
    if cfg["base_width"] == 64 and cfg["in_channels"] == 3:
        net = torchvision.models.resnet50(num_classes=cfg["num_classes"])
    else:
        net = ResNet50(cfg["base_width"], cfg["num_classes"], cfg["in_channels"])
    net.load_state_dict(sd, strict=True)
    net.eval()
    print(f"strict load OK: {type(net).__name__}, {len(sd)} tensors, num_classes={cfg['num_classes']}")
    if len(sys.argv) > 2:
        image = sys.argv[2]
        x = load_pixels(image, cfg["in_channels"], cfg["resolution"]).unsqueeze(0)
        with torch.no_grad():
            p = Normalized(net, cfg["mean"], cfg["std"])(x).softmax(1)[0]
        print("torch    :", [round(v, 4) for v in p.tolist()])
        exe = os.environ.get("TRISCOPE", "target/release/triscope")
        model = os.environ.get("TRISCOPE_MODEL")
        cmd = [exe, "predict", image, "--json", "--device", "cpu"] + (["--model", model] if model else [])
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print("triscope :", [round(s["probability"], 4) for s in out[0]["scores"]])


if __name__ == "__main__":
    main()
