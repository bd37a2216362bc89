#!/usr/bin/env python3
"""How well a model's out-of-distribution score separates its own test images from others.

Runs `triscope predict --json` on a dataset split's images and reads each image's
`out_of_distribution.score`; prints, per other set, the AUROC of the score at telling the
in-distribution images (the first set) from it, and the share of each set flagged.

    python3 tools/ood_auroc.py [--model M] ../shared/data/ham10000:test \\
        ../shared/data/derm7pt:test ../shared/data/kermany-cxr:test [FOLDER ...]

A set is DATASET:SPLIT (its labels.csv names the images) or a folder of images.
"""
import argparse
import csv
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from region_energy_summary import auroc  # noqa: E402

BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "release", "triscope")


def images_of(spec):
    if os.path.isdir(spec) and not os.path.exists(os.path.join(spec, "labels.csv")):
        return sorted(os.path.join(spec, f) for f in os.listdir(spec)
                      if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")))
    root, split = spec.rsplit(":", 1)
    out = []
    for row in csv.DictReader(open(os.path.join(root, "labels.csv"))):
        if row.get("split") != split:
            continue
        name = row.get("image") or row.get("image_id") or row.get("Image Index")
        for cand in (os.path.join(root, name), os.path.join(root, "images", name),
                     os.path.join(root, "images", name + ".jpg"), os.path.join(root, "images", name + ".png")):
            if os.path.isfile(cand):
                out.append(cand)
                break
        else:
            sys.exit(f"{spec}: no image file for {name}")
    return out


def scores(model, paths):
    out = []
    for i in range(0, len(paths), 400):
        cmd = [BIN, "predict", "--json", *(["--model", model] if model else []), *paths[i:i + 400]]
        rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        for r in rows:
            o = r["out_of_distribution"]
            if o is None:
                sys.exit("the model carries no out-of-distribution statistics (triscope ood)")
            out.append((o["score"], o["flag"]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("inside")
    ap.add_argument("others", nargs="+")
    args = ap.parse_args()
    inside = scores(args.model, images_of(args.inside))
    neg = [s for s, _ in inside]
    print(f"{args.inside}: {len(inside)} images, flagged {sum(f for _, f in inside) / len(inside):.3f}")
    for spec in args.others:
        other = scores(args.model, images_of(spec))
        pos = [s for s, _ in other]
        print(f"{spec}: {len(other)} images, flagged {sum(f for _, f in other) / len(other):.3f}, "
              f"AUROC against {args.inside} {auroc(neg + pos, [False] * len(neg) + [True] * len(pos)):.3f}")


if __name__ == "__main__":
    main()
