#!/usr/bin/env python3
"""Summarise the region energy of `triscope explain FOLDER` per split, label and source, and
with `--positive CLASS` each source's AUROC of that class and balanced accuracy (per hospital:
a model that tells hospitals apart instead of disease shows here).

`triscope explain DATASET/images --class C --out DIR` writes DIR/predictions.csv with each
image's `energy_inside` (the share of its map inside the mask beside it: the lungs for
shenzhen-montgomery-cxr; empty where the map is empty) and `region_fraction`. This joins it with DATASET/labels.csv and prints
the mean, standard deviation and count per group, and the images with the least energy inside.

    python3 tools/region_energy_summary.py DIR/predictions.csv DATASET/labels.csv \
        [--split test] [--positive tuberculosis]
"""
import argparse
import csv
import statistics


def auroc(scores, positive):
    """Mann-Whitney: the chance a positive scores above a negative (ties count half)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def classification(rows, positive):
    """AUROC of p_<positive> and balanced accuracy of the predicted class, per source."""
    groups = {"all": rows}
    for r, m in rows:
        groups.setdefault(f"source={m.get('source', '')}", []).append((r, m))
    print(f"{positive} against the rest: AUROC of p_{positive}, balanced accuracy")
    for name, g in groups.items():
        truth = [m["label"] == positive for _, m in g]
        score = [float(r[f"p_{positive}"]) for r, _ in g]
        recalls = []
        for label in sorted({m["label"] for _, m in g}):
            own = [r for r, m in g if m["label"] == label]
            recalls.append(sum(r["predicted_class"] == label for r in own) / len(own))
        print(f"  {name:<24} n={len(g):<4} AUROC {auroc(score, truth):.3f}"
              f"  balanced accuracy {statistics.mean(recalls):.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("predictions")
    ap.add_argument("labels")
    ap.add_argument("--split", default="test")
    ap.add_argument("--least", type=int, default=5)
    ap.add_argument("--positive", help="a class: also its AUROC and the balanced accuracy per source")
    args = ap.parse_args()
    labels = {r["image"]: r for r in csv.DictReader(open(args.labels))}
    rows = []
    for r in csv.DictReader(open(args.predictions)):
        meta = labels.get(r["image"])
        if meta is None or meta.get("split") != args.split or not r["region"]:
            continue
        rows.append((r, meta))
    if not rows:
        raise SystemExit("no rows of that split with a region energy")
    groups = {"all": rows}
    for key in ("label", "source"):
        for r, m in rows:
            groups.setdefault(f"{key}={m.get(key, '')}", []).append((r, m))
    print(f"split {args.split}: energy inside the region (share of the map), region's share")
    for name, g in groups.items():
        # An empty map (nothing raises the class's score) has no share: counted, not averaged.
        empty = sum(not r["energy_inside"] for r, _ in g)
        g = [(r, m) for r, m in g if r["energy_inside"]]
        if not g:
            print(f"  {name:<24} n=0    ({empty} empty maps)")
            continue
        e = [float(r["energy_inside"]) for r, _ in g]
        f = [float(r["region_fraction"]) for r, _ in g]
        peak = sum(r["peak_inside"] == "true" for r, _ in g)
        sd = statistics.stdev(e) if len(e) > 1 else float("nan")
        print(f"  {name:<24} n={len(g):<4} energy {statistics.mean(e):.3f} ± {sd:.3f}"
              f"  region {statistics.mean(f):.3f}  peak inside {peak}/{len(g)}"
              + (f"  ({empty} empty maps)" if empty else ""))
    if args.positive:
        classification(rows, args.positive)
    print("least energy inside:")
    measured = [x for x in rows if x[0]["energy_inside"]]
    for r, m in sorted(measured, key=lambda x: float(x[0]["energy_inside"]))[: args.least]:
        print(f"  {r['image']} ({m.get('label')}, {m.get('source')}): {float(r['energy_inside']):.3f}")


if __name__ == "__main__":
    main()
