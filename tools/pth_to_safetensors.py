#!/usr/bin/env python3
"""Convert a PyTorch state dict (.pth / .pt) to safetensors for `triscope import`.

Triscope does not read pickle files itself (unpickling can run arbitrary code). Run this
only on files you trust:

    python3 tools/pth_to_safetensors.py resnet50.pth resnet50.safetensors
    triscope import resnet50.safetensors --num-classes 7 --out model.safetensors

Accepts a bare state dict, or a training checkpoint holding one under "state_dict" or
"model"; a "module." prefix (DataParallel) is removed.
"""

import sys

import torch
from safetensors.torch import save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    obj = torch.load(src, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        sys.exit(f"{src}: not a state dict (got {type(obj).__name__})")
    sd = {k.removeprefix("module."): v.contiguous() for k, v in obj.items() if torch.is_tensor(v)}
    save_file(sd, dst)
    print(f"{src} -> {dst}: {len(sd)} tensors")


if __name__ == "__main__":
    main()
