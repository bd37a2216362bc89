//! Lungs as ground truth: shenzhen-montgomery-cxr's lung masks found as the region "lungs",
//! brought to the model's grid, the lung-energy score in `triscope explain` and the audit
//! (its spread and the gallery of maps with the least energy inside), and bad masks.

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

mod common;

use std::process::Command;

use common::{TempDir, fixture, sample};
use triscope::io::data::{Dataset, MaskKind, mask_kind};
use triscope::io::imaging::ResizeMode;
use triscope::io::regions::{RegionSource, masks_beside, region_beside};

const CHEST: &str = "models/kermany_cxr_default.safetensors";

fn triscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_triscope"))
        .args(args)
        .output()
        .unwrap()
}

/// The fixture's `lung_fraction` column (measured on the 256-px masks).
fn lung_fractions() -> Vec<(String, f64)> {
    std::fs::read_to_string(fixture("lungs_tiny/labels.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[4].parse().unwrap())
        })
        .collect()
}

#[test]
fn lung_masks_are_the_lungs_at_the_models_grid() {
    let root = fixture("lungs_tiny");
    assert_eq!(mask_kind(&root), MaskKind::Lungs);
    assert_eq!(mask_kind(&sample("ham10000")), MaskKind::Lesion);
    let test = Dataset::open(&root, Some("test")).unwrap();
    let Some(RegionSource::Masks(_, MaskKind::Lungs)) = RegionSource::for_dataset(&test).unwrap()
    else {
        panic!("shenzhen-montgomery's masks are lungs");
    };
    for (image, fraction) in lung_fractions() {
        let path = root.join("images").join(&image);
        assert_eq!(masks_beside(&path).unwrap().1, MaskKind::Lungs);
        // The mask follows the image to any model resolution and keeps its share.
        for resolution in [224, 160] {
            let r = region_beside(&path, resolution, ResizeMode::default())
                .unwrap()
                .unwrap();
            assert_eq!(r.finding, "lungs");
            assert_eq!(r.mask.len(), resolution * resolution);
            assert!(
                (r.area_fraction() - fraction).abs() < 0.01,
                "{image} at {resolution}: {} vs {fraction}",
                r.area_fraction()
            );
        }
    }
}

#[test]
fn explain_writes_the_lung_energy_of_the_map() {
    let out = TempDir::new("lungs-explain");
    let (image, fraction) = lung_fractions().remove(1); // a tuberculosis radiograph
    let path = fixture("lungs_tiny/images").join(&image);
    let dir = out.path().join("cam");
    let o = triscope(&[
        "explain",
        path.to_str().unwrap(),
        "--model",
        CHEST,
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("of the map inside the lungs"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("prediction.json")).unwrap())
            .unwrap();
    let e = &json["lung_energy"];
    let inside = e["energy_inside"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&inside), "{e}");
    assert!(
        (e["region_fraction"].as_f64().unwrap() - fraction).abs() < 0.01,
        "{e}"
    );
    assert!(e["peak_inside"].is_boolean());
    assert!(json.get("lesion_energy").is_none());

    // A HAM10000 sample's mask is a lesion.
    let ham = out.path().join("ham");
    let o = triscope(&[
        "explain",
        sample("ham10000/ISIC_0024410.jpg").to_str().unwrap(),
        "--out",
        ham.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ham.join("prediction.json")).unwrap())
            .unwrap();
    assert!(json["lesion_energy"]["energy_inside"].is_f64(), "{json}");
    assert!(json.get("lung_energy").is_none());
}

#[test]
fn an_empty_lung_mask_is_named_and_the_explanation_still_written() {
    let tmp = TempDir::new("lungs-empty");
    let root = tmp.path();
    for sub in ["images", "masks"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(fixture("lungs_tiny/labels.csv"), root.join("labels.csv")).unwrap();
    let name = "CHNCXR_0007_0.png";
    std::fs::copy(
        fixture("lungs_tiny/images").join(name),
        root.join("images").join(name),
    )
    .unwrap();
    image::GrayImage::new(256, 256)
        .save(root.join("masks").join(name))
        .unwrap();
    let out = root.join("out");
    let o = triscope(&[
        "explain",
        root.join("images").join(name).to_str().unwrap(),
        "--model",
        CHEST,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("masks/CHNCXR_0007_0.png") && stderr.contains("empty"),
        "{stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("prediction.json")).unwrap())
            .unwrap();
    assert!(json.get("lung_energy").is_none());
}

#[test]
fn the_audit_measures_the_map_against_the_lungs() {
    let out = TempDir::new("lungs-audit");
    let dir = out.path().join("audit");
    let o = triscope(&[
        "audit",
        "--data",
        fixture("lungs_tiny").to_str().unwrap(),
        "--model",
        CHEST,
        "--attacks",
        "clean",
        "--no-checks",
        "--eps-sweep",
        "0",
        "--explain-samples",
        "2",
        "--sanity-images",
        "0",
        "--no-tcav",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("audit.json")).unwrap()).unwrap();
    let l = &report["explanation"]["localisation"];
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    // Each explained image is measured against its own lungs, whose share of the 224-px
    // input is the labels' (256-px) share.
    let fractions = lung_fractions();
    let mut expected = 0.0;
    for s in samples {
        let loc = &s["localisation"][0];
        assert_eq!(loc["finding"], "lungs");
        let id = s["id"].as_str().unwrap();
        let (_, want) = fractions.iter().find(|(n, _)| n == id).unwrap();
        let got = loc["region_area_fraction"].as_f64().unwrap();
        assert!((got - want).abs() < 0.01, "{id}: {got} vs {want}");
        expected += got / 2.0;
    }
    assert_eq!(l["region_area_fraction"]["n"], 2);
    assert!((l["region_area_fraction"]["mean"].as_f64().unwrap() - expected).abs() < 1e-9);
    assert!(
        l["energy_pointing_game_std"].as_f64().unwrap() >= 0.0,
        "{l}"
    );
    let figures = report["figures"].to_string();
    assert!(figures.contains("least_energy.png"), "{figures}");
    assert!(dir.join("least_energy.png").is_file());
    let html = std::fs::read_to_string(dir.join("audit.html")).unwrap();
    assert!(html.contains("Maps with the least energy inside the lungs"));
}
