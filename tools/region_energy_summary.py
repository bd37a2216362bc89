#!/usr/bin/env python3
"""Summarise the region energy of `triscope explain FOLDER` per split, label and source.

`triscope explain DATASET/images --class C --out DIR` writes DIR/predictions.csv with each
image's `energy_inside` (the share of its map inside the mask beside it: the lungs for
shenzhen-montgomery-cxr; empty where the map is empty) and `region_fraction`. This joins it with DATASET/labels.csv and prints
the mean, standard deviation and count per group, and the images with the least energy inside.

    python3 tools/region_energy_summary.py DIR/predictions.csv DATASET/labels.csv [--split test]
"""
import argparse
import csv
import statistics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("predictions")
    ap.add_argument("labels")
    ap.add_argument("--split", default="test")
    ap.add_argument("--least", type=int, default=5)
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
    print("least energy inside:")
    measured = [x for x in rows if x[0]["energy_inside"]]
    for r, m in sorted(measured, key=lambda x: float(x[0]["energy_inside"]))[: args.least]:
        print(f"  {r['image']} ({m.get('label')}, {m.get('source')}): {float(r['energy_inside']):.3f}")


if __name__ == "__main__":
    main()
