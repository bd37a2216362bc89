//! Image formats and bad input: every case loads correctly or fails naming the file.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use common::*;
use image::{ImageBuffer, Luma, Rgb, Rgba};
use triscope::TriscopeError;
use triscope::io::imaging::{ResizeMode, load_image};

fn check_ok(path: &std::path::Path, channels: usize, res: usize) -> Vec<f32> {
    let img = load_image(path, channels, res, ResizeMode::ShorterSideCrop)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        (img.pixels.channels, img.pixels.height, img.pixels.width),
        (channels, res, res)
    );
    assert!(img.pixels.data.iter().all(|v| (0.0..=1.0).contains(v)));
    img.pixels.data
}

fn check_err(path: &std::path::Path, expect: &str) {
    let err = load_image(path, 3, 224, ResizeMode::ShorterSideCrop).unwrap_err();
    let msg = err.to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        msg.contains(name.as_ref()),
        "error does not name the file: {msg}"
    );
    assert!(msg.contains(expect), "expected '{expect}' in: {msg}");
}

#[test]
fn formats_and_bit_depths_load() {
    let dir = TempDir::new("formats");
    let gradient16 =
        ImageBuffer::from_fn(64, 48, |x, y| Luma([((x * 1000 + y * 100) % 65536) as u16]));
    let rgb8 = ImageBuffer::from_fn(80, 60, |x, y| Rgb([(x * 3) as u8, (y * 4) as u8, 128u8]));
    let rgba16 = ImageBuffer::from_fn(50, 70, |x, y| {
        Rgba([(x * 900) as u16, (y * 700) as u16, 30000u16, 65535u16])
    });

    let cases = [
        (
            "gray16.png",
            image::DynamicImage::ImageLuma16(gradient16.clone()),
        ),
        ("gray16.tiff", image::DynamicImage::ImageLuma16(gradient16)),
        ("rgb8.png", image::DynamicImage::ImageRgb8(rgb8.clone())),
        ("rgb8.jpg", image::DynamicImage::ImageRgb8(rgb8.clone())),
        ("rgb8.bmp", image::DynamicImage::ImageRgb8(rgb8.clone())),
        ("rgb8.tiff", image::DynamicImage::ImageRgb8(rgb8)),
        ("rgba16.png", image::DynamicImage::ImageRgba16(rgba16)),
    ];
    for (name, img) in cases {
        let p = dir.path().join(name);
        img.save(&p)
            .unwrap_or_else(|e| panic!("saving {name}: {e}"));
        check_ok(&p, 3, 224);
        check_ok(&p, 1, 512);
    }
}

#[test]
fn sixteen_bit_precision_is_kept() {
    // Two grey levels 1/65535 apart must stay apart (8-bit conversion would merge them).
    let dir = TempDir::new("precision");
    let img = ImageBuffer::from_fn(32, 32, |x, _| {
        Luma([if x < 16 { 30000u16 } else { 30001u16 }])
    });
    let p = dir.path().join("two_levels.png");
    img.save(&p).unwrap();
    let data = load_image(&p, 1, 32, ResizeMode::Stretch)
        .unwrap()
        .pixels
        .data;
    let (a, b) = (data[0], data[31]);
    assert!((a - 30000.0 / 65535.0).abs() < 1e-6, "{a}");
    assert!((b - a - 1.0 / 65535.0).abs() < 1e-6, "{a} {b}");
}

#[test]
fn tiny_and_odd_sizes() {
    let dir = TempDir::new("tiny");
    let one = ImageBuffer::from_pixel(1, 1, Rgb([200u8, 100, 50]));
    let p = dir.path().join("one.png");
    one.save(&p).unwrap();
    let data = check_ok(&p, 3, 224);
    assert!((data[0] - 200.0 / 255.0).abs() < 1e-6);
    let strip = ImageBuffer::from_pixel(3000, 2, Luma([77u8]));
    let p = dir.path().join("strip.png");
    strip.save(&p).unwrap();
    check_ok(&p, 1, 224);
}

#[test]
fn huge_image_is_downscaled() {
    // 20000 x 20000 grey PNG of a few MB of compressed zeros with one bright square.
    let dir = TempDir::new("huge");
    let side = 20_000u32;
    let img = ImageBuffer::from_fn(side, side, |x, y| {
        Luma([
            if (9000..11000).contains(&x) && (9000..11000).contains(&y) {
                255u8
            } else {
                0u8
            },
        ])
    });
    let p = dir.path().join("huge.png");
    let file = std::fs::File::create(&p).unwrap();
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        std::io::BufWriter::new(file),
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::NoFilter,
    );
    image::ImageEncoder::write_image(
        encoder,
        img.as_raw(),
        side,
        side,
        image::ExtendedColorType::L8,
    )
    .unwrap();
    drop(img);
    let data = check_ok(&p, 1, 224);
    // The bright square sits in the middle tenth of the picture.
    assert!(data[112 * 224 + 112] > 0.9);
    assert!(data[10 * 224 + 10] < 0.01);
}

#[test]
fn bad_files_name_themselves() {
    let dir = TempDir::new("bad");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    check_err(&write("zero.png", b""), "empty (0 bytes)");
    check_err(
        &write("notes.txt", b"just some text, not pixels"),
        "unrecognised format",
    );

    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(ImageBuffer::from_pixel(64, 64, Rgb([1u8, 2, 3])))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    check_err(
        &write("truncated.png", &png[..png.len() / 2]),
        "truncated.png",
    );

    let sample = std::fs::read(sample("ham10000/ISIC_0024410.jpg")).unwrap();
    let p = write("truncated.jpg", &sample[..sample.len() / 3]);
    // A JPEG cut short may still decode partially (grey fill); either way, no panic.
    let _ = load_image(&p, 3, 224, ResizeMode::ShorterSideCrop);
    check_err(&write("header_only.jpg", &sample[..200]), "header_only.jpg");

    // A PNG header that claims 100000 x 100000 pixels.
    let mut liar = png.clone();
    liar[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    liar[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let p = write("liar.png", &liar);
    let err = load_image(&p, 3, 224, ResizeMode::ShorterSideCrop).unwrap_err();
    assert!(
        matches!(
            err,
            TriscopeError::ImageTooLarge { .. } | TriscopeError::BadImage { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("liar.png"), "{err}");

    let missing = dir.path().join("missing.png");
    check_err(&missing, "missing.png");
    check_err(dir.path(), "directory");
}
