#!/usr/bin/env python3
"""The bad-input corpus (tests/bad_inputs/, run by tests/bad_inputs.rs): small files that are
truncated, empty, of the wrong kind, or that lie in their headers (absurd sizes, lengths past
the end of the file, NaN pixels, mismatched label counts). Every one must fail with an error
that names the file, without a panic and without a large allocation.

    pip install numpy pillow pydicom
    python3 tools/make_bad_inputs.py         # rewrites tests/bad_inputs/

Only standard formats written byte by byte (struct), plus PIL/pydicom for the valid files
that are then cut or patched. Sources: the bundled samples and tests/fixtures.
"""

import io
import json
import os
import shutil
import struct
import sys
import zipfile
import zlib

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import generate_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "bad_inputs")
SAMPLE_PNG = os.path.join(ROOT, "assets", "samples", "nih-cxr14", "00000072_000.png")
SAMPLE_JPG = os.path.join(ROOT, "assets", "samples", "ham10000", "ISIC_0024317.jpg")
DICOM_OK = os.path.join(ROOT, "tests", "fixtures", "dicom", "mono2_8bit.dcm")
CHECKPOINT = os.path.join(ROOT, "tests", "fixtures", "resnet50_w8_c7.safetensors")


def write(rel, data):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "w" if isinstance(data, str) else "wb"
    with open(path, mode) as f:
        f.write(data)


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width, height, bit_depth=8, colour=0, idat=b""):
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def tiff(width, height, samples, bits, sample_format, pixel_bytes):
    """A little-endian baseline TIFF, one strip, uncompressed."""
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, bits),  # BitsPerSample (same for all samples when there is one value)
        (259, 3, 1, 1),  # Compression none
        (262, 3, 1, 2 if samples == 3 else 1),  # Photometric
        (273, 4, 1, 0),  # StripOffsets (patched)
        (277, 3, 1, samples),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, len(pixel_bytes)),  # StripByteCounts
        (339, 3, 1, sample_format),  # SampleFormat: 1 uint, 3 float
    ]
    if samples == 3:
        # BitsPerSample needs one value per sample: store them after the IFD.
        entries[2] = (258, 3, 3, 0)
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    extra_offset = ifd_offset + ifd_size
    extra = struct.pack("<HHH", bits, bits, bits) + b"\0\0" if samples == 3 else b""
    data_offset = extra_offset + len(extra)
    out = b"II*\0" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 273:
            value = data_offset
        if tag == 258 and samples == 3:
            value = extra_offset
        if kind == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, count, value)
    out += struct.pack("<I", 0) + extra + pixel_bytes
    return out


def bmp(width, height, bpp=24, pixel_bytes=b""):
    header_size = 14 + 40
    size = header_size + len(pixel_bytes)
    return (
        b"BM"
        + struct.pack("<IHHI", size, 0, 0, header_size)
        + struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, 0, 0, 2835, 2835, 0, 0)
        + pixel_bytes
    )


def jpeg_with_size(width, height):
    """A real JPEG whose SOF0 frame header is patched to claim another size."""
    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def dicom_element(group, elem, vr, value, explicit=True):
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
    head = struct.pack("<HH", group, elem)
    if not explicit:
        return head + struct.pack("<I", len(value)) + value
    if vr in long_vrs:
        return head + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + vr + struct.pack("<H", len(value)) + value


def ui(text):
    raw = text.encode()
    return raw + (b"\0" if len(raw) % 2 else b"")


def dicom_file(syntax, body, explicit=True):
    """Preamble, marker, a complete file meta group (explicit VR little endian), `body`."""
    elements = b"".join([
        dicom_element(0x0002, 0x0001, b"OB", b"\0\1"),
        dicom_element(0x0002, 0x0002, b"UI", ui("1.2.840.10008.5.1.4.1.1.7")),
        dicom_element(0x0002, 0x0003, b"UI", ui("1.2.826.0.1.3680043.8.498.1")),
        dicom_element(0x0002, 0x0010, b"UI", ui(syntax)),
        dicom_element(0x0002, 0x0012, b"UI", ui("1.2.826.0.1.3680043.8.498.2")),
    ])
    meta = dicom_element(0x0002, 0x0000, b"UL", struct.pack("<I", len(elements))) + elements
    return b"\0" * 128 + b"DICM" + meta + body


def us(v):
    return struct.pack("<H", v)


def dicom_image(rows, cols, bits_alloc=8, bits_stored=None, photometric=b"MONOCHROME2", samples=1,
                pixel=b"", pixel_len=None, syntax="1.2.840.10008.1.2.1"):
    bits_stored = bits_alloc if bits_stored is None else bits_stored
    body = b"".join([
        dicom_element(0x0028, 0x0002, b"US", us(samples)),
        dicom_element(0x0028, 0x0004, b"CS", photometric + (b" " if len(photometric) % 2 else b"")),
        dicom_element(0x0028, 0x0010, b"US", us(rows)),
        dicom_element(0x0028, 0x0011, b"US", us(cols)),
        dicom_element(0x0028, 0x0100, b"US", us(bits_alloc)),
        dicom_element(0x0028, 0x0101, b"US", us(bits_stored)),
        dicom_element(0x0028, 0x0102, b"US", us(max(bits_stored - 1, 0))),
        dicom_element(0x0028, 0x0103, b"US", us(0)),
    ])
    if pixel_len is None:
        body += dicom_element(0x7FE0, 0x0010, b"OW" if bits_alloc > 8 else b"OB", pixel)
    else:
        body += struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", pixel_len) + pixel
    return dicom_file(syntax, body)


def rle_image(rows, cols, fragment, syntax="1.2.840.10008.1.2.5", encapsulated=True, bits=(8, 8)):
    """A MONOCHROME2 image (8-bit unless `bits` = (allocated, stored) says otherwise) whose
    pixel data is one encapsulated fragment (an empty basic offset table first), or, with
    encapsulated=False, the same bytes as native data."""
    if not encapsulated:
        return dicom_image(rows, cols, pixel=fragment, syntax=syntax)
    head = dicom_image(rows, cols, bits[0], bits[1], pixel=b"", syntax=syntax)
    head = head[: -len(dicom_element(0x7FE0, 0x0010, b"OB", b""))]
    item = lambda data: struct.pack("<HHI", 0xFFFE, 0xE000, len(data)) + data
    return (head + struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFFF)
            + item(b"") + item(fragment) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))


def rle_fragment(offsets, segments_bytes, count=None):
    header = struct.pack("<I", len(offsets) if count is None else count)
    header += b"".join(struct.pack("<I", o) for o in offsets)
    return header + b"\0" * (64 - len(header)) + segments_bytes


def nested_sequences(depth):
    """An explicit-VR sequence of undefined length nested `depth` times."""
    inner = b""
    for _ in range(depth):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        inner = (
            struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
            + item + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        )
    return inner


def safetensors_bytes(header, data=b"", header_len=None):
    text = json.dumps(header).encode()
    n = len(text) if header_len is None else header_len
    return struct.pack("<Q", n) + text + data


def npy_bytes(arr=None, header=None, data=b""):
    if arr is not None:
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()
    text = header.encode()
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def npz(path, members):
    full = os.path.join(OUT, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with zipfile.ZipFile(full, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


def progressive_jpeg():
    """The HAM10000 sample re-encoded as a progressive JPEG (PIL, quality 90)."""
    out = io.BytesIO()
    Image.open(SAMPLE_JPG).save(out, format="JPEG", quality=90, progressive=True)
    return out.getvalue()


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    small = io.BytesIO()
    Image.open(SAMPLE_PNG).convert("L").resize((32, 32)).save(small, format="PNG")
    good_png = small.getvalue()
    good_jpg = open(SAMPLE_JPG, "rb").read()
    good_dcm = open(DICOM_OK, "rb").read()
    ckpt = open(CHECKPOINT, "rb").read()

    # --- images ---------------------------------------------------------------------------
    write("images/empty.png", b"")
    write("images/truncated.png", good_png[:120])
    write("images/truncated.jpg", good_jpg[:300])
    write("images/text_named.png", "this is not an image\n")
    write("images/wrong_magic.jpg", b"\x00\x01\x02\x03" + good_jpg[4:2000])
    write("images/png_side_over_limit.png", png(40001, 16))
    write("images/png_decode_over_memory_cap.png", png(39000, 39000, 16, 6))
    write("images/png_zero_size.png", png(0, 0))
    write("images/png_bad_crc.png", good_png[:40] + b"\xde\xad" + good_png[42:])
    write("images/jpeg_side_over_limit.jpg", jpeg_with_size(65000, 65000))
    write("images/bmp_huge.bmp", bmp(39000, 39000, 32))
    write("images/bmp_negative_width.bmp", bmp(-50, 50, 24, b"\0" * 64))
    write("images/tiff_huge_strip.tiff", tiff(30000, 30000, 1, 16, 1, b"\0" * 64))
    nan = np.full((8, 8, 3), 0.5, dtype="<f4")
    nan[2, 3, 1] = np.nan
    write("images/tiff_float_nan.tiff", tiff(8, 8, 3, 32, 3, nan.tobytes()))
    inf = np.full((8, 8, 3), 0.5, dtype="<f4")
    inf[0, 0, 0] = np.inf
    write("images/tiff_float_inf.tiff", tiff(8, 8, 3, 32, 3, inf.tobytes()))
    # JPEGs that did not arrive whole (an interrupted copy or download): a decoder fills the
    # missing blocks with grey; PIL refuses them as truncated. The baseline HAM10000 sample and
    # a progressive encoding of it, cut at several points, and one missing only its EOI.
    for percent in (40, 80, 99):
        write(f"images/jpeg_cut_{percent}.jpg", good_jpg[: len(good_jpg) * percent // 100])
    write("images/jpeg_no_end_marker.jpg", good_jpg[:-2])
    progressive = progressive_jpeg()
    for percent in (30, 75):
        write(f"images/jpeg_progressive_cut_{percent}.jpg",
              progressive[: len(progressive) * percent // 100])

    # --- DICOM ----------------------------------------------------------------------------
    write("dicom/empty.dcm", b"")
    write("dicom/truncated.dcm", good_dcm[: len(good_dcm) // 2])
    write("dicom/no_dicm_marker.dcm", b"\0" * 200)
    write("dicom/pixel_length_4gib.dcm", dicom_image(64, 64, pixel=b"\0" * 16, pixel_len=0xFFFFFFF0))
    write("dicom/rows_columns_over_limit.dcm", dicom_image(65535, 65535, 16, pixel=b"\0" * 32))
    write("dicom/pixel_data_short.dcm", dicom_image(64, 64, 8, pixel=b"\x10" * 100))
    write("dicom/bits_allocated_32.dcm", dicom_image(4, 4, 32, pixel=b"\0" * 64))
    write("dicom/bits_stored_over_allocated.dcm", dicom_image(4, 4, 8, bits_stored=12, pixel=b"\0" * 16))
    # Native YBR_FULL_422 pairs pixels: an odd number of columns cannot hold it.
    write("dicom/ybr_422_odd_columns.dcm",
          dicom_image(4, 3, 8, photometric=b"YBR_FULL_422", samples=3, pixel=b"\0" * 24))
    write("dicom/ybr_rct_not_jpeg2000.dcm",
          dicom_image(4, 4, 8, photometric=b"YBR_RCT", samples=3, pixel=b"\0" * 48))
    write("dicom/unknown_transfer_syntax.dcm", dicom_image(4, 4, pixel=b"\0" * 16, syntax="1.2.3.4.5.6.7"))
    write("dicom/deflated_not_deflate.dcm", dicom_file("1.2.840.10008.1.2.1.99", b"\xff" * 64))
    deflated_image = dicom_image(8, 8, pixel=b"\x10" * 64)[132:]
    meta_len = struct.unpack("<I", deflated_image[8:12])[0] + 12
    write("dicom/deflated_truncated.dcm", dicom_file(
        "1.2.840.10008.1.2.1.99", zlib.compress(deflated_image[meta_len:])[2:-4][:40]))
    write("dicom/jpeg2000_syntax.dcm", dicom_image(4, 4, pixel=b"\0" * 16, syntax="1.2.840.10008.1.2.4.90"))
    write("dicom/nested_sequences.dcm", dicom_file("1.2.840.10008.1.2.1", nested_sequences(64)))
    # RLE Lossless (PS3.5 Annex G) on an 8x8 8-bit image: one segment of 64 bytes is due.
    whole = bytes([0x3F]) + bytes(range(64))  # a literal run of 64 bytes: a valid segment
    write("dicom/rle_segment_short.dcm", rle_image(8, 8, rle_fragment([64], bytes([0xF7, 9]))))
    write("dicom/rle_segment_count_wrong.dcm", rle_image(8, 8, rle_fragment([64, 64, 64], whole)))
    write("dicom/rle_offset_past_fragment.dcm", rle_image(8, 8, rle_fragment([900], whole)))
    write("dicom/rle_literal_run_truncated.dcm", rle_image(8, 8, rle_fragment([64], whole[:40])))
    write("dicom/rle_fragment_without_header.dcm", rle_image(8, 8, b"\1\0\0\0@\0\0\0\0\0"))
    write("dicom/rle_pixel_data_not_encapsulated.dcm",
          rle_image(8, 8, rle_fragment([64], whole), encapsulated=False))
    # 8-bit JPEG Baseline frames that do not fit the image attributes (8x8 MONOCHROME2).
    baseline = "1.2.840.10008.1.2.4.50"
    write("dicom/jpeg_frame_size_mismatch.dcm", rle_image(8, 8, jpeg_with_size(16, 16), baseline))
    write("dicom/jpeg_fragment_not_jpeg.dcm", rle_image(8, 8, png(8, 8), baseline))
    jpeg8 = io.BytesIO()
    Image.new("L", (8, 8), 77).save(jpeg8, format="JPEG")
    write("dicom/jpeg_truncated.dcm", rle_image(8, 8, jpeg8.getvalue()[:150], baseline))
    # A 64x64 frame whose entropy-coded data stops at 60%: headers whole, blocks missing.
    frame = io.BytesIO()
    Image.open(SAMPLE_JPG).convert("L").resize((64, 64)).save(frame, format="JPEG", quality=90)
    frame = frame.getvalue()
    write("dicom/jpeg_frame_cut.dcm", rle_image(64, 64, frame[: len(frame) * 6 // 10], baseline))
    # Lossless JPEG (Process 14): DCMTK's 96x96 12-bit stream from the fixtures, broken.
    lossless = "1.2.840.10008.1.2.4.70"
    sv1 = pydicom.dcmread(os.path.join(ROOT, "tests", "fixtures", "dicom", "jpeg_lossless_sv1.dcm"))
    stream = next(generate_frames(sv1.PixelData, number_of_frames=1))
    write("dicom/jpeg_lossless_truncated.dcm",
          rle_image(96, 96, stream[: len(stream) // 2], lossless, bits=(16, 12)))
    write("dicom/jpeg_lossless_larger_than_declared.dcm", rle_image(8, 8, stream, lossless, bits=(16, 12)))
    write("dicom/jpeg_lossless_holds_baseline.dcm", rle_image(8, 8, jpeg8.getvalue(), lossless))
    # JPEG 2000: the 96x96 lossy grey stream of the fixtures, broken.
    j2k = "1.2.840.10008.1.2.4.91"
    lossy = pydicom.dcmread(os.path.join(ROOT, "tests", "fixtures", "dicom", "j2k_mono8_lossy.dcm"))
    stream = next(generate_frames(lossy.PixelData, number_of_frames=1))
    write("dicom/jpeg2000_truncated.dcm", rle_image(96, 96, stream[: len(stream) // 3], j2k))
    write("dicom/jpeg2000_size_mismatch.dcm", rle_image(8, 8, stream, j2k))
    write("dicom/jpeg2000_holds_baseline.dcm", rle_image(8, 8, jpeg8.getvalue(), j2k))
    # A SIZ segment declaring 4096x4096 in 1x1 tiles (16.7 million tiles) and nothing else.
    siz = struct.pack(">HHIIIIIIIIH", 41, 0, 4096, 4096, 0, 0, 1, 1, 0, 0, 1) + bytes([7, 1, 1])
    write("dicom/jpeg2000_tiles_absurd.dcm", rle_image(4096, 4096, b"\xff\x4f\xff\x51" + siz, j2k))
    # PALETTE COLOR whose tables are missing, or shorter than their descriptors say.
    def palette_image(entries, table):
        body = dicom_image(4, 4, photometric=b"PALETTE COLOR", pixel=b"\x05" * 16)[132:]
        meta_len = struct.unpack("<I", body[8:12])[0] + 12
        luts = b"".join(
            dicom_element(0x0028, 0x1101 + c, b"US", struct.pack("<3H", entries, 0, 16)) for c in range(3))
        luts += b"".join(dicom_element(0x0028, 0x1201 + c, b"OW", table) for c in range(3))
        data = body[meta_len:]
        pixel_at = data.index(struct.pack("<HH", 0x7FE0, 0x0010))
        return dicom_file("1.2.840.10008.1.2.1", data[:pixel_at] + luts + data[pixel_at:])
    write("dicom/palette_without_tables.dcm", dicom_image(4, 4, photometric=b"PALETTE COLOR", pixel=b"\x05" * 16))
    write("dicom/palette_table_short.dcm", palette_image(256, b"\0\1" * 100))
    write("dicom/no_pixel_data.dcm", dicom_file(
        "1.2.840.10008.1.2.1", dicom_element(0x0008, 0x0060, b"CS", b"OT")))

    # --- checkpoints ----------------------------------------------------------------------
    write("checkpoints/empty.safetensors", b"")
    write("checkpoints/truncated.safetensors", ckpt[:4096])
    write("checkpoints/header_not_json.safetensors", struct.pack("<Q", 12) + b"{not json!!}")
    write("checkpoints/header_length_absurd.safetensors", struct.pack("<Q", 2**63 + 5) + b"{}")
    write("checkpoints/header_length_past_end.safetensors", struct.pack("<Q", 50_000_000) + b"{}" * 8)
    write("checkpoints/offsets_past_end.safetensors", safetensors_bytes(
        {"fc.weight": {"dtype": "F32", "shape": [7, 2048], "data_offsets": [0, 57344]}}, b"\0" * 64))
    write("checkpoints/shape_product_overflows.safetensors", safetensors_bytes(
        {"fc.weight": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 16]}}, b"\0" * 16))
    model_config = {
        "architecture": "resnet50", "num_classes": 2, "in_channels": 3, "base_width": 8,
        "resolution": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "class_names": ["a", "b"], "multi_label": False, "dropout": 0.0,
    }
    write("checkpoints/wrong_shapes.safetensors", safetensors_bytes({
        "__metadata__": {"triscope.config": json.dumps(model_config)},
        "conv1.weight": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 36]},
        "fc.weight": {"dtype": "F32", "shape": [5, 5], "data_offsets": [36, 136]},
    }, b"\0" * 136))
    huge = dict(model_config, num_classes=50_000_000, class_names=["c"] * 4)
    write("checkpoints/config_absurd_classes.safetensors", safetensors_bytes({
        "__metadata__": {"triscope.config": json.dumps(huge)},
        "fc.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
    }, b"\0" * 4))
    write("checkpoints/config_not_json.safetensors", safetensors_bytes({
        "__metadata__": {"triscope.config": "{architecture: resnet50"},
        "fc.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
    }, b"\0" * 4))

    # --- training configs -----------------------------------------------------------------
    write("configs/empty_bytes.yaml", b"\xff\xfe\x00\x01binary")
    write("configs/not_a_mapping.yaml", "- just\n- a list\n")
    write("configs/wrong_types.yaml", "training: {epochs: many, batch_size: -3}\n")
    write("configs/unknown_key.yaml", "training: {epochz: 3}\n")
    write("configs/huge_numbers.yaml", "training: {epochs: 99999999999999999999999, batch_size: 8}\n")
    write("configs/nan_lr.yaml", "training: {lr: .nan}\n")
    write("configs/alias_bomb.yaml", "".join([
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n",
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
        "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
        "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n",
        "training: {epochs: *h}\n",
    ]))
    write("configs/deep_nesting.yaml", "training: " + "[" * 5000 + "]" * 5000 + "\n")
    write("configs/missing_data_root.yaml", "data: {root: no_such_folder_here}\n")
    write("configs/dataset_name_escapes.yaml",
          "data: {dataset: ../../../escaped, root: ../../fixtures/train_tiny}\n")
    write("configs/dataset_name_absolute.yaml",
          "data: {dataset: /tmp/triscope-escaped, root: ../../fixtures/train_tiny}\n")
    write("configs/weights_missing.yaml",
          "architecture: {pretrained: true, weights: no_such_weights.safetensors}\n")

    # --- datasets (folders with labels.csv) -----------------------------------------------
    write("datasets/empty_labels/labels.csv", b"")
    write("datasets/labels_not_utf8/labels.csv", b"image_id,dx,split\n\xff\xfe\xfd,mel,test\n")
    write("datasets/labels_missing_column/labels.csv", "image_id,split\nISIC_1,test\n")
    write("datasets/labels_missing_images/labels.csv",
          "image_id,dx,split\nISIC_0000001,mel,test\nISIC_0000002,nv,test\n")
    os.makedirs(os.path.join(OUT, "datasets/labels_missing_images/images"), exist_ok=True)
    write("datasets/labels_short_row/labels.csv", "image_id,dx,split\nISIC_0000001,mel\n")
    write("datasets/labels_unknown_class/labels.csv", "image_id,dx,split\nISIC_0000001,zebra,test\n")
    write("datasets/labels_unknown_class/images/ISIC_0000001.jpg", good_jpg)
    write("datasets/class_folders_no_images/a/readme.txt", "nothing here\n")
    write("datasets/class_folders_bad_image/a/broken.png", good_png[:100])
    write("datasets/class_folders_bad_image/b/fine.png", good_png)
    # Train and val splits of class folders; one training JPEG cut short. Training must name
    # it before its first step.
    for split, name in (("train", "cut.jpg"), ("val", "fine_b.jpg")):
        write(f"datasets/split_folders_truncated_jpeg/{split}/a/fine_a.jpg", good_jpg)
        cut = name == "cut.jpg"
        write(f"datasets/split_folders_truncated_jpeg/{split}/b/{name}",
              good_jpg[: len(good_jpg) // 2] if cut else good_jpg)

    # --- MedMNIST npz ---------------------------------------------------------------------
    write("npz/empty.npz", b"")
    write("npz/not_a_zip.npz", b"PK\x03\x04 not really a zip archive")
    imgs = np.zeros((5, 28, 28), dtype=np.uint8)
    labels = np.zeros((4, 1), dtype=np.uint8)
    npz("npz/label_count_mismatch.npz", {"test_images.npy": npy_bytes(imgs), "test_labels.npy": npy_bytes(labels)})
    npz("npz/missing_labels.npz", {"test_images.npy": npy_bytes(imgs)})
    npz("npz/npy_declares_huge_shape.npz", {
        "test_images.npy": npy_bytes(header="{'descr': '|u1', 'fortran_order': False, 'shape': (100000, 100000, 28), }", data=b"\0" * 64),
        "test_labels.npy": npy_bytes(np.zeros((1, 1), dtype=np.uint8)),
    })
    npz("npz/npy_bad_magic.npz", {"test_images.npy": b"NOTNUMPY" * 8, "test_labels.npy": npy_bytes(labels)})
    npz("npz/npy_float_images.npz", {
        "test_images.npy": npy_bytes(np.zeros((2, 4, 4), dtype=np.float32)),
        "test_labels.npy": npy_bytes(np.zeros((2, 1), dtype=np.uint8)),
    })
    npz("npz/negative_label.npz", {
        "test_images.npy": npy_bytes(np.zeros((2, 4, 4), dtype=np.uint8)),
        "test_labels.npy": npy_bytes(np.array([[0], [-3]], dtype=np.int32)),
    })
    with open(os.path.join(OUT, "npz", "truncated.npz"), "wb") as f:
        full = io.BytesIO()
        with zipfile.ZipFile(full, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("test_images.npy", npy_bytes(imgs))
            z.writestr("test_labels.npy", npy_bytes(np.zeros((5, 1), dtype=np.uint8)))
        f.write(full.getvalue()[:300])
    # A member that inflates to far more than its declared size (a lying zip header).
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("test_images.npy", npy_bytes(header="{'descr': '|u1', 'fortran_order': False, 'shape': (64, 1024, 1024), }", data=b"\0" * (64 << 20)))
        z.writestr("test_labels.npy", npy_bytes(np.zeros((64, 1), dtype=np.uint8)))
    data = bytearray(bomb.getvalue())
    # Patch the declared uncompressed size of the first member (local header and central
    # directory) down to 100 bytes.
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig)
        struct.pack_into("<I", data, at + off, 100)
    write("npz/member_larger_than_declared.npz", bytes(data))

    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    count = sum(len(fs) for _, _, fs in os.walk(OUT))
    print(f"wrote {count} files, {total} bytes, to {OUT}")
    fuzz_seeds()


def fuzz_seeds():
    """The truncated JPEGs also seed the image and DICOM fuzz targets."""
    for name in ("jpeg_cut_80.jpg", "jpeg_progressive_cut_75.jpg"):
        shutil.copy(os.path.join(OUT, "images", name), os.path.join(ROOT, "fuzz", "corpus", "image", name))
    shutil.copy(os.path.join(OUT, "dicom", "jpeg_frame_cut.dcm"),
                os.path.join(ROOT, "fuzz", "corpus", "dicom", "jpeg_frame_cut.dcm"))


if __name__ == "__main__":
    sys.exit(main())
