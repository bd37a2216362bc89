#!/usr/bin/env python3
"""Small DICOM test files and the pixel values Triscope must read from them (tests/dicom.rs).

    pip install pydicom numpy pillow
    python3 tools/make_dicom_fixtures.py        # writes tests/fixtures/dicom/

Made from the bundled samples (assets/samples: one NIH ChestX-ray14 image, one HAM10000
image), downscaled to 96 px so the files stay small. For every file that Triscope must read,
`<name>.expected.npy` holds the display values in [0, 1] after pydicom's own modality LUT
(rescale slope/intercept) and VOI windowing (`apply_modality_lut`, `apply_windowing`, the
file's first window, or a min-max window when the file has none), MONOCHROME1 inverted,
as uint16 codes round(v * 65535), [H, W] for grey and [3, H, W] for RGB.

Files:
  mono2_8bit.dcm            MONOCHROME2, 8 bit, explicit VR little endian, no window (min-max)
  mono2_12bit_window.dcm    MONOCHROME2, 12 of 16 bits, implicit VR little endian, window
                            centre/width in the file; also `..._custom.expected.npy` for the
                            window centre 1200 / width 800 given by the caller
  mono1_12bit.dcm           MONOCHROME1 (inverted grey), 12 bits, window in the file
  mono2_16bit_rescale.dcm   MONOCHROME2, signed 16 bit, rescale slope 0.5 / intercept -1024
                            (CT-like units), window in rescaled units
  mono2_16bit_sigmoid.dcm   MONOCHROME2, unsigned 16 bit, VOI LUT function SIGMOID
  mono2_multiframe.dcm      two frames of 8 bit (Triscope reads the first)
  mono2_rle.dcm             RLE Lossless (a compressed syntax Triscope decodes)
  rgb_8bit.dcm              RGB, 8 bit, interleaved
  rgb_8bit_planar.dcm       RGB, 8 bit, colour planes one after another (PlanarConfiguration 1)
  rgb_rle.dcm               RGB, 8 bit, RLE Lossless (three segments, one per colour)
  ybr_full.dcm              YBR_FULL, 8 bit, interleaved (decoded to RGB)
  ybr_full_rle.dcm          YBR_FULL, 8 bit, RLE Lossless
  mono2_16bit_rle.dcm       MONOCHROME2, 16 bit, RLE Lossless (two segments: high, low byte)
  mono2_encapsulated.dcm    Encapsulated Uncompressed Explicit VR Little Endian, the frame
                            split over two fragments
  jpeg_baseline.dcm         MONOCHROME2, JPEG Baseline (Process 1), one fragment
  jpeg_baseline_color.dcm   YBR_FULL_422, JPEG Baseline (4:2:0 chroma, as PIL writes it), the
                            stream split over two fragments; expected values are pydicom's
                            decoding (Pillow, libjpeg), so they differ from Triscope's decoder
                            (zune-jpeg) by IDCT and chroma-upsampling rounding
  jpeg_lossless_sv1.dcm     mono2_12bit_window.dcm through DCMTK's `dcmcjpeg +e1` (JPEG
                            Lossless SV1, 12 bits); lossless, so its expected values are the
                            source's
  jpeg_lossless_p7.dcm      mono2_16bit_rescale.dcm (signed 16 bit) through `dcmcjpeg +el +sv 7`
                            (Process 14, predictor 7)
  jpeg_lossless_rgb.dcm     rgb_8bit.dcm through `dcmcjpeg +e1`
  jpegls_label.dcm          labelled JPEG-LS Lossless (1.2.840.10008.1.2.4.80), a syntax
                            Triscope has no codec for and must name (the fragment is a
                            baseline stream: it is never read)

  j2k_mono16_lossless.dcm   MONOCHROME2, 16 bit (12-bit values), JPEG 2000 lossless (Pillow's
                            OpenJPEG writes the codestream), window in the file
  j2k_rgb_lossless.dcm      YBR_RCT: RGB through JPEG 2000 lossless with its reversible colour
                            transform
  j2k_rgb_lossy.dcm         YBR_ICT: RGB through lossy JPEG 2000 (irreversible transform);
                            expected values are pydicom's decoding (Pillow, OpenJPEG)
  j2k_mono8_lossy.dcm       MONOCHROME2, 8 bit, lossy JPEG 2000, the stream in two fragments
  jpeg_rgb.dcm              RGB in JPEG Baseline without a colour transform (Pillow's
                            keep_rgb: Adobe APP14 transform 0), which must not be converted
  jpeg_rgb_short_app14.dcm  the same with its APP14 segment cut to 10 data bytes, as some
                            exporters write it (libjpeg ignores such a segment); its expected
                            values are jpeg_rgb's
  deflated.dcm              MONOCHROME2, 8 bit, Deflated Explicit VR Little Endian
  palette_16bit.dcm         PALETTE COLOR, 8-bit indices, 16-bit tables of 200 entries whose
                            first maps index 10 (indices outside take the nearest end)
  palette_8bit.dcm          PALETTE COLOR, 8-bit tables packed two to a word (as the standard
                            allows and pydicom reads)
  ybr_full_422.dcm          YBR_FULL_422 uncompressed: Y1 Y2 Cb Cr per pair of pixels
  vr_mismatch.dcm           explicit VR little endian named in the file meta group, the data
                            set written in implicit VR (an export fault pydicom reads with a
                            warning)

The JPEG Lossless files need DCMTK (`apt install dcmtk`): pydicom cannot write that syntax.
  patient_identity.dcm      MONOCHROME2, 8 bit, with a fake patient name, id, birth date,
                            address, institution and physician, which must never reach any
                            output file or log
"""

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_windowing, convert_color_space
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    UID,
    generate_uid,
)

EncapsulatedUncompressed = UID("1.2.840.10008.1.2.1.98")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "dicom")
SIDE = 96
CXR = os.path.join(ROOT, "assets", "samples", "nih-cxr14", "00000032_037.png")
DERM = os.path.join(ROOT, "assets", "samples", "ham10000", "ISIC_0024410.jpg")

# Identity of a person who does not exist; the privacy test looks for these strings.
FAKE_IDENTITY = {
    "PatientName": "Fakename^Jane^Q",
    "PatientID": "FAKE-ID-7730521",
    "PatientBirthDate": "19370412",
    "PatientAddress": "12 Nowhere Lane, Faketown",
    "OtherPatientIDs": "FAKE-OTHER-88123",
    "InstitutionName": "Fictional General Hospital",
    "ReferringPhysicianName": "Doctor^Imaginary",
    "AccessionNumber": "FAKEACC991",
}


def grey(path, side):
    img = Image.open(path).convert("L").resize((side, side), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def rgb(path, side):
    img = Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def base(rows, cols, syntax, samples=1, photometric="MONOCHROME2"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"triscope-{rows}-{photometric}"])
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["triscope-fixtures"])
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    return ds


def set_pixels(ds, arr, bits_allocated, bits_stored, signed=False):
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {8: np.uint8, 16: np.int16 if signed else np.uint16}[bits_allocated]
    ds.PixelData = np.ascontiguousarray(arr.astype(dtype)).tobytes()


def save(ds, name):
    path = os.path.join(OUT, name)
    syntax = ds.file_meta.TransferSyntaxUID
    ds.save_as(path, enforce_file_format=True, little_endian=True, implicit_vr=syntax == ImplicitVRLittleEndian)
    return path


def display_values(path, window=None, frame=0):
    """What a viewer shows: modality LUT, the window (the file's, the given one or min-max),
    MONOCHROME1 inverted, in [0, 1], as pydicom computes it."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    # pydicom's pixel_array converts YBR_FULL to RGB itself (as_rgb).
    if int(getattr(ds, "NumberOfFrames", 1)) > 1:
        arr = arr[frame]
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return np.moveaxis(rgb.astype(np.float64) / np.iinfo(rgb.dtype).max, -1, 0)
    if ds.SamplesPerPixel == 3:
        return np.moveaxis(arr.astype(np.float64) / (2**ds.BitsStored - 1), -1, 0)
    values = apply_modality_lut(arr, ds).astype(np.float64)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
        if "VOILUTFunction" in ds:
            del ds.VOILUTFunction
    elif "WindowCenter" not in ds:
        lo, hi = float(values.min()), float(values.max())
        ds.WindowCenter, ds.WindowWidth = (lo + hi) / 2 + 0.5, hi - lo + 1
    # Windowing's output range follows BitsStored, pixel representation and the rescale.
    signed = ds.PixelRepresentation == 1
    y_min = -(2 ** (ds.BitsStored - 1)) if signed else 0
    y_max = 2 ** (ds.BitsStored - 1) - 1 if signed else 2**ds.BitsStored - 1
    if "RescaleSlope" in ds:
        y_min = y_min * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        y_max = y_max * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out = (apply_windowing(values, ds) - y_min) / (y_max - y_min)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 1.0 - out
    return np.clip(out, 0.0, 1.0)


def write_expected(name, values):
    codes = np.round(values * 65535.0).astype(np.uint16)
    np.save(os.path.join(OUT, name), codes)


def main():
    os.makedirs(OUT, exist_ok=True)
    g8 = grey(CXR, SIDE)
    g12 = g8.astype(np.uint16) * 16 + 7  # 7..4087 of 4095
    expected = {}
    lossless_sources = {}

    ds = base(SIDE, SIDE, ExplicitVRLittleEndian)
    set_pixels(ds, g8, 8, 8)
    expected["mono2_8bit"] = save(ds, "mono2_8bit.dcm")

    ds = base(SIDE, SIDE, ImplicitVRLittleEndian)
    set_pixels(ds, g12, 16, 12)
    ds.WindowCenter, ds.WindowWidth = 2000, 3000
    expected["mono2_12bit_window"] = save(ds, "mono2_12bit_window.dcm")

    ds = base(SIDE, SIDE, ExplicitVRLittleEndian, photometric="MONOCHROME1")
    set_pixels(ds, 4095 - g12, 16, 12)
    ds.WindowCenter, ds.WindowWidth = 2096, 3000  # the same picture as mono2_12bit_window
    expected["mono1_12bit"] = save(ds, "mono1_12bit.dcm")

    # Signed 16 bit, rescaled to CT-like units: value = 0.5 * stored - 1024.
    ds = base(SIDE, SIDE, ExplicitVRLittleEndian)
    stored = g8.astype(np.int32) * 40 - 4000  # -4000..6200
    set_pixels(ds, stored, 16, 16, signed=True)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 0.5, -1024, "HU"
    ds.WindowCenter, ds.WindowWidth = -300, 1500
    expected["mono2_16bit_rescale"] = save(ds, "mono2_16bit_rescale.dcm")

    ds = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian)
    set_pixels(ds, grey(CXR, SIDE // 2).astype(np.uint16) * 250, 16, 16)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 30000, 20000, "SIGMOID"
    expected["mono2_16bit_sigmoid"] = save(ds, "mono2_16bit_sigmoid.dcm")

    ds = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian)
    small = grey(CXR, SIDE // 2)
    ds.NumberOfFrames = 2
    set_pixels(ds, np.stack([small, 255 - small]), 8, 8)
    expected["mono2_multiframe"] = save(ds, "mono2_multiframe.dcm")

    ds = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian)
    set_pixels(ds, grey(CXR, SIDE // 2).astype(np.uint16) * 16, 16, 12)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    expected["mono2_rle"] = save(ds, "mono2_rle.dcm")

    ds = base(SIDE, SIDE, ExplicitVRLittleEndian, samples=3, photometric="RGB")
    set_pixels(ds, rgb(DERM, SIDE), 8, 8)
    expected["rgb_8bit"] = save(ds, "rgb_8bit.dcm")

    ds = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian, samples=3, photometric="RGB")
    ds.PlanarConfiguration = 1
    set_pixels(ds, np.moveaxis(rgb(DERM, SIDE // 2), -1, 0), 8, 8)
    expected["rgb_8bit_planar"] = save(ds, "rgb_8bit_planar.dcm")

    ds = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian, samples=3, photometric="RGB")
    set_pixels(ds, rgb(DERM, SIDE // 2), 8, 8)
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    expected["rgb_rle"] = save(ds, "rgb_rle.dcm")

    # YBR_FULL (PS3.3 C.7.6.3.1.2), from RGB by pydicom's own conversion; the expected
    # values are pydicom's decoding back to RGB (not the original RGB: rounding differs).
    for name, rle in [("ybr_full", False), ("ybr_full_rle", True)]:
        ds = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian, samples=3, photometric="YBR_FULL")
        ycc = convert_color_space(rgb(DERM, SIDE // 2), "RGB", "YBR_FULL")
        set_pixels(ds, ycc, 8, 8)
        if rle:
            ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
        expected[name] = save(ds, f"{name}.dcm")

    # Full 16-bit range, so that both the high- and the low-byte segment carry information.
    ds = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian)
    small = grey(CXR, SIDE // 2).astype(np.uint16)
    set_pixels(ds, small * 257 + (np.arange(small.size).reshape(small.shape) % 7), 16, 16)
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    expected["mono2_16bit_rle"] = save(ds, "mono2_16bit_rle.dcm")

    # pydicom cannot decode this syntax: the expected values come from a native twin.
    inverted = 255 - grey(CXR, SIDE // 2)
    ds = base(SIDE // 2, SIDE // 2, EncapsulatedUncompressed)
    set_pixels(ds, inverted, 8, 8)
    ds.PixelData = encapsulate([ds.PixelData], fragments_per_frame=2)
    ds["PixelData"].VR = "OB"
    save(ds, "mono2_encapsulated.dcm")
    twin = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian)
    set_pixels(twin, inverted, 8, 8)
    twin_dir = tempfile.mkdtemp()
    twin_path = os.path.join(twin_dir, "twin.dcm")
    twin.save_as(twin_path, enforce_file_format=True)
    write_expected("mono2_encapsulated.expected.npy", display_values(twin_path))
    shutil.rmtree(twin_dir)

    ds = base(SIDE, SIDE, JPEGBaseline8Bit)
    set_pixels(ds, g8, 8, 8)
    buf = io.BytesIO()
    Image.fromarray(g8).save(buf, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    expected["jpeg_baseline"] = save(ds, "jpeg_baseline.dcm")
    baseline_stream = buf.getvalue()

    ds = base(SIDE // 2, SIDE // 2, JPEGBaseline8Bit, samples=3, photometric="YBR_FULL_422")
    set_pixels(ds, rgb(DERM, SIDE // 2), 8, 8)
    buf = io.BytesIO()
    Image.fromarray(rgb(DERM, SIDE // 2)).save(buf, format="JPEG", quality=90)
    stream = buf.getvalue()
    ds.PixelData = encapsulate([stream], fragments_per_frame=2)
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    expected["jpeg_baseline_color"] = save(ds, "jpeg_baseline_color.dcm")

    ds = base(SIDE, SIDE, JPEGLSLossless)
    set_pixels(ds, g8, 8, 8)
    ds.PixelData = encapsulate([baseline_stream])
    ds["PixelData"].VR = "OB"
    save(ds, "jpegls_label.dcm")

    # Lossless JPEG by DCMTK; the expected values are those of the uncompressed source.
    for name, source, options in [
        ("jpeg_lossless_sv1", "mono2_12bit_window", ["+e1"]),
        ("jpeg_lossless_p7", "mono2_16bit_rescale", ["+el", "+sv", "7"]),
        ("jpeg_lossless_rgb", "rgb_8bit", ["+e1"]),
    ]:
        target = os.path.join(OUT, f"{name}.dcm")
        subprocess.run(["dcmcjpeg", *options, expected[source], target], check=True)
        assert pydicom.dcmread(target).file_meta.TransferSyntaxUID.name.startswith("JPEG Lossless")
        lossless_sources[name] = expected[source]

    # JPEG 2000 codestreams by Pillow (OpenJPEG); pydicom decodes them with Pillow too.
    def j2k(arr, **options):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG2000", no_jp2=True, **options)
        return buf.getvalue()

    ds = base(SIDE, SIDE, JPEG2000Lossless)
    set_pixels(ds, g12, 16, 16)
    ds.PixelData = encapsulate([j2k(g12.astype(np.uint16), irreversible=False)])
    ds["PixelData"].VR = "OB"
    ds.WindowCenter, ds.WindowWidth = 2000, 3000
    expected["j2k_mono16_lossless"] = save(ds, "j2k_mono16_lossless.dcm")

    small_rgb = rgb(DERM, SIDE // 2)
    ds = base(SIDE // 2, SIDE // 2, JPEG2000Lossless, samples=3, photometric="YBR_RCT")
    set_pixels(ds, small_rgb, 8, 8)
    ds.PixelData = encapsulate([j2k(small_rgb, irreversible=False, mct=1)])
    ds["PixelData"].VR = "OB"
    expected["j2k_rgb_lossless"] = save(ds, "j2k_rgb_lossless.dcm")

    ds = base(SIDE // 2, SIDE // 2, JPEG2000, samples=3, photometric="YBR_ICT")
    set_pixels(ds, small_rgb, 8, 8)
    ds.PixelData = encapsulate([j2k(small_rgb, irreversible=True, mct=1, quality_mode="rates", quality_layers=[8])])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    expected["j2k_rgb_lossy"] = save(ds, "j2k_rgb_lossy.dcm")

    ds = base(SIDE, SIDE, JPEG2000)
    set_pixels(ds, g8, 8, 8)
    ds.PixelData = encapsulate([j2k(g8, irreversible=True, quality_mode="rates", quality_layers=[6])], fragments_per_frame=2)
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    expected["j2k_mono8_lossy"] = save(ds, "j2k_mono8_lossy.dcm")

    # RGB components compressed as they are; pydicom reads them without a transform.
    buf = io.BytesIO()
    Image.fromarray(small_rgb).save(buf, format="JPEG", quality=90, keep_rgb=True)
    rgb_stream = buf.getvalue()
    app14 = rgb_stream.index(b"\xff\xee")
    assert rgb_stream[app14 + 2 : app14 + 4] == b"\x00\x0e"
    short = rgb_stream[:app14] + b"\xff\xee\x00\x0c" + rgb_stream[app14 + 4 : app14 + 14] + rgb_stream[app14 + 16 :]
    for name, stream in [("jpeg_rgb", rgb_stream), ("jpeg_rgb_short_app14", short)]:
        ds = base(SIDE // 2, SIDE // 2, JPEGBaseline8Bit, samples=3, photometric="RGB")
        set_pixels(ds, small_rgb, 8, 8)
        ds.PixelData = encapsulate([stream])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        path = save(ds, f"{name}.dcm")
        # pydicom's Pillow path refuses the cut segment with these component ids ('R', 'G',
        # 'B'): the test compares that file with jpeg_rgb's values (the same scan).
        if name == "jpeg_rgb":
            expected[name] = path

    ds = base(SIDE, SIDE, DeflatedExplicitVRLittleEndian)
    set_pixels(ds, 255 - g8, 8, 8)
    expected["deflated"] = save(ds, "deflated.dcm")

    # PALETTE COLOR (PS3.3 C.7.6.3.1.5): a warm colour ramp over indices 10..209.
    ramp = np.linspace(0.0, 1.0, 200)
    for name, bits in [("palette_16bit", 16), ("palette_8bit", 8)]:
        ds = base(SIDE, SIDE, ExplicitVRLittleEndian, photometric="PALETTE COLOR")
        set_pixels(ds, g8, 8, 8)
        top = 2**bits - 1
        tables = {
            "Red": np.round(top * np.sqrt(ramp)),
            "Green": np.round(top * ramp**2),
            "Blue": np.round(top * (1.0 - ramp) * ramp * 4.0).clip(0, top),
        }
        for colour, table in tables.items():
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [200, 10, bits])
            dtype = np.uint16 if bits == 16 else np.uint8
            setattr(ds, f"{colour}PaletteColorLookupTableData", table.astype(dtype).tobytes())
            ds[f"{colour}PaletteColorLookupTableData"].VR = "OW"
        expected[name] = save(ds, f"{name}.dcm")

    # YBR_FULL_422 uncompressed: each pair of pixels keeps its two lumas and the first
    # pixel's chroma (pydicom expands it back by repeating the chroma).
    ycc = convert_color_space(rgb(DERM, SIDE // 2), "RGB", "YBR_FULL")
    packed = np.concatenate([ycc[:, 0::2, 0:1], ycc[:, 1::2, 0:1], ycc[:, 0::2, 1:3]], axis=2)
    ds = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian, samples=3, photometric="YBR_FULL_422")
    set_pixels(ds, packed, 8, 8)
    expected["ybr_full_422"] = save(ds, "ybr_full_422.dcm")

    # Explicit VR named, implicit VR written: the file meta group and the data set are
    # written separately, as a faulty exporter does.
    ds = base(SIDE // 2, SIDE // 2, ExplicitVRLittleEndian)
    set_pixels(ds, grey(CXR, SIDE // 2), 8, 8)
    path = os.path.join(OUT, "vr_mismatch.dcm")
    fp = DicomBytesIO()
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    with open(path, "wb") as f:
        f.write(fp.getvalue())
    expected["vr_mismatch"] = path

    ds = base(SIDE, SIDE, ExplicitVRLittleEndian)
    set_pixels(ds, g8, 8, 8)
    for key, value in FAKE_IDENTITY.items():
        setattr(ds, key, value)
    expected["patient_identity"] = save(ds, "patient_identity.dcm")

    for name, path in expected.items():
        write_expected(f"{name}.expected.npy", display_values(path))
    for name, path in lossless_sources.items():
        write_expected(f"{name}.expected.npy", display_values(path))
    write_expected(
        "mono2_12bit_window_custom.expected.npy",
        display_values(expected["mono2_12bit_window"], window=(1200, 800)),
    )
    with open(os.path.join(OUT, "fake_identity.json"), "w") as f:
        json.dump(FAKE_IDENTITY, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "make_dicom_fixtures.json"), "w") as f:
        versions = {"pydicom": pydicom.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}
        json.dump(versions, f, indent=1)
        f.write("\n")
    print(f"wrote {len(os.listdir(OUT))} files to {OUT}")


if __name__ == "__main__":
    main()
