#!/usr/bin/env python3
"""pydicom's own conformance files, as pydicom decodes them (tests/dicom.rs compares Triscope).

    pip install pydicom numpy pillow
    python3 tools/pydicom_corpus.py OUT_DIR

For every `*.dcm` in the installed pydicom's `data/test_files`, OUT_DIR/index.json says
whether pydicom (with the decoders installed beside it, Pillow for JPEG and JPEG 2000)
decodes its pixel data, with the transfer syntax, photometric interpretation and bits
allocated; for those it decodes, OUT_DIR/<name>.npy holds the display values of the first
frame as uint16 codes, computed as tools/make_dicom_fixtures.py computes them (modality LUT,
the file's window or min-max, MONOCHROME1 inverted, colour scaled, palettes applied).
The files are read where pydicom installed them; nothing is copied.
"""

import json
import os
import sys
import warnings

import numpy as np
import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dicom_fixtures import display_values  # noqa: E402

# Lossy syntaxes: another decoder may round differently.
LOSSY = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.91",
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    root = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    index = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".dcm"):
            continue
        path = os.path.join(root, name)
        entry = {"name": name, "path": path}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
                ds.pixel_array
                values = display_values(path)
            except Exception as e:  # pydicom refuses it: Triscope need not read it
                entry["pydicom"] = f"{type(e).__name__}: {e}"[:200]
                index.append(entry)
                continue
        syntax = str(ds.file_meta.TransferSyntaxUID)
        entry.update(
            pydicom="decoded",
            transfer_syntax=syntax,
            lossy=syntax in LOSSY,
            photometric=str(ds.PhotometricInterpretation),
            bits_allocated=int(ds.BitsAllocated),
            expected=f"{name}.npy",
        )
        np.save(os.path.join(out, entry["expected"]), np.round(values * 65535.0).astype(np.uint16))
        index.append(entry)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"pydicom": pydicom.__version__, "files": index}, f, indent=1)
    print(f"{sum(e['pydicom'] == 'decoded' for e in index)} of {len(index)} decoded by pydicom")


if __name__ == "__main__":
    main()
