#!/usr/bin/env python3
"""Does a HAM10000 model need the skin around the lesion, and how well could a coarse Grad-CAM
localise at best? Two checks behind the audit's energy pointing game (docs/models.md), not a
product path.

    python3 tools/ham_lesion_context.py variants /var/tmp/ham_context
        writes three class folders of the test split (200x150 PNG, one sub-folder per class,
        as `triscope eval --data FOLDER` reads them): `orig` (the images as they are),
        `bgfill` (everything outside the lesion mask, dilated by 3 px, painted with the
        median colour of that background) and `lesionfill` (the dilated lesion painted with
        the same colour, the background kept). Then, for a model M:
            triscope eval --model M --data /var/tmp/ham_context/bgfill --attacks clean --no-checks

    python3 tools/ham_lesion_context.py cam-bound models/ham10000_default.report/audit/audit.json
        the energy pointing game (share of the map's mass inside the lesion) of an ideal map on
        the audit's explained images: each cell of a coarse grid (5x5 = layer4 at 160 px) holds
        the lesion's share of the cell, upsampled bilinearly (half-pixel centres, as
        pytorch-grad-cam's cv2.resize) and min-max scaled as Grad-CAM is; beside it the
        audit's centre prior (a centred Gaussian, sigma a quarter of the side).

Masks are resized and centre-cropped as the audit does (`--resize crop`: shorter side to the
input size, nearest neighbour, then the centre square).
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ham10000"


def read_mask(data: Path, image_id: str) -> Image.Image:
    path = data / "masks" / f"{image_id}.png"
    if not path.is_file():
        sys.exit(f"{path}: no lesion mask for {image_id}")
    return Image.open(path).convert("L")


def variants(data: Path, out: Path, split: str) -> None:
    rows = [r for r in csv.DictReader(open(data / "labels.csv")) if r["split"] == split]
    if not rows:
        sys.exit(f"{data / 'labels.csv'}: no image in split {split!r}")
    for row in rows:
        image_id, label = row["image_id"], row["dx"]
        img = np.asarray(Image.open(data / "images" / f"{image_id}.jpg").convert("RGB"))
        # A 7x7 max / min filter dilates the lesion by 3 px, so its rim is not left behind
        # in `bgfill` nor painted over in `lesionfill`.
        lesion = np.asarray(read_mask(data, image_id).filter(ImageFilter.MaxFilter(7))) > 127
        background = img[~lesion]
        fill = np.median(background if len(background) else img.reshape(-1, 3), axis=0)
        for name, paint in [("orig", None), ("bgfill", ~lesion), ("lesionfill", lesion)]:
            edited = img.copy()
            if paint is not None:
                edited[paint] = fill.astype(np.uint8)
            folder = out / name / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(edited).save(folder / f"{image_id}.png")
    print(f"wrote {len(rows)} images x 3 variants under {out}")


def crop_mask(mask: Image.Image, size: int) -> np.ndarray:
    w, h = mask.size
    scale = size / min(w, h)
    mask = mask.resize((round(w * scale), round(h * scale)), Image.NEAREST)
    left, top = (mask.size[0] - size) // 2, (mask.size[1] - size) // 2
    return np.asarray(mask.crop((left, top, left + size, top + size))) > 127


def upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear with half-pixel centres, edges clamped: (n, n) -> (size, size)."""
    n = grid.shape[0]
    x = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    i0 = np.floor(x).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    f = x - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def energy(cam: np.ndarray, mask: np.ndarray) -> float:
    return float((cam * mask).sum() / cam.sum())


def cam_bound(data: Path, audit: Path, size: int, cells: int) -> None:
    if size % cells:
        sys.exit(f"--size {size} is not a multiple of --cells {cells}")
    ids = [s["id"].removesuffix(".jpg") for s in json.load(open(audit))["samples"]]
    c = (size - 1) / 2
    y, x = np.mgrid[:size, :size]
    prior = np.exp(-((y - c) ** 2 + (x - c) ** 2) / (2 * (size / 4) ** 2))
    ideal, centre, area = [], [], []
    for image_id in ids:
        mask = crop_mask(read_mask(data, image_id), size)
        # (size, size) -> (cells, cells): the lesion's share of each cell.
        k = size // cells
        grid = mask.reshape(cells, k, cells, k).mean(axis=(1, 3))
        cam = upsample(grid, size)
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        ideal.append(energy(cam, mask))
        centre.append(energy(prior, mask))
        area.append(mask.mean())
    print(f"{len(ids)} images at {size} px, lesion area {np.mean(area):.3f} of the image")
    print(f"energy pointing game: ideal {cells}x{cells} map {np.mean(ideal):.3f}, "
          f"centre prior {np.mean(centre):.3f}, a uniform map {np.mean(area):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("variants")
    v.add_argument("out", type=Path)
    v.add_argument("--split", default="test")
    b = sub.add_parser("cam-bound")
    b.add_argument("audit", type=Path, help="an audit.json of a HAM10000 audit")
    b.add_argument("--size", type=int, default=160)
    b.add_argument("--cells", type=int, default=5)
    args = p.parse_args()
    if args.command == "variants":
        variants(args.data, args.out, args.split)
    else:
        cam_bound(args.data, args.audit, args.size, args.cells)


if __name__ == "__main__":
    main()
