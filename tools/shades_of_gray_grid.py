#!/usr/bin/env python3
"""The figure docs/shades_of_gray.jpg: four HAM10000 images (top) and four derm7pt images
(bottom), each as stored and after Shades of Gray (p = 6), at the default model's 160 px.

    python3 tools/shades_of_gray_grid.py ../shared/data docs/shades_of_gray.jpg
"""

import glob
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shades_of_gray_fixture import isic_shades_of_gray  # noqa: E402


def main(data, out):
    ham = sorted(glob.glob(os.path.join(data, "ham10000", "images", "*.jpg")))[:4]
    d7 = sorted(glob.glob(os.path.join(data, "derm7pt", "images", "*", "*.jpg")))[::200][:4]
    rows = []
    for files in (ham, d7):
        pairs = []
        for f in files:
            a = np.asarray(Image.open(f).convert("RGB").resize((160, 160))).astype("float64")
            pairs.append(np.concatenate([a, isic_shades_of_gray(a)], 1))
        rows.append(np.concatenate(pairs, 1))
    Image.fromarray(np.concatenate(rows, 0).astype(np.uint8)).save(out, quality=88)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
