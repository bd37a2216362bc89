//! `triscope demo`: predict and explain every bundled sample with the model.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use triscope::explain::{Colormap, TargetClass, overlay_rgb8};
use triscope::model::LayerId;

use super::common::{ModelArgs, open_classifier};
use super::gui::samples_dir;
use triscope::explain::folder::write_rgb8;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder for the overlays
    #[arg(long, default_value = "out/demo", value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn demo(args: &DemoArgs) -> Result<ExitCode> {
    let out = &args.out;
    let classifier = open_classifier(&args.model)?;
    let dir = samples_dir();
    let cfg = classifier.config();
    // Skin samples for 3-channel models, chest X-rays for 1-channel ones.
    let folder = dir.join(if cfg.in_channels == 1 {
        "nih-cxr14"
    } else {
        "ham10000"
    });
    let mut images: Vec<PathBuf> = std::fs::read_dir(&folder)
        .with_context(|| format!("cannot list the samples in {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    images.sort();
    // Ground truth of the samples, when the labels file is there.
    let truth: std::collections::HashMap<String, String> =
        std::fs::read_to_string(dir.join("labels.csv"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(','))
            .filter_map(|(img, label)| {
                let name = Path::new(img).file_name()?.to_string_lossy().to_string();
                Some((name, label.to_string()))
            })
            .collect();
    println!(
        "model: {} ({}); device: {}",
        classifier.source,
        classifier.metadata.description,
        classifier.device().description
    );
    println!(
        "{:<22} {:<10} {:<10} {:>7}   overlay",
        "image", "truth", "predicted", "conf."
    );
    for path in &images {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let loaded = classifier.load_image(path)?;
        let e = classifier.explain(&loaded.pixels, LayerId::Layer4, TargetClass::Predicted)?;
        let folder = out.join(&stem);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        let overlay = overlay_rgb8(&loaded.pixels.to_rgb8(), &e.gradcam.map, Colormap::Jet, 0.4);
        let overlay_path = folder.join("overlay.png");
        let side = e.gradcam.width;
        write_rgb8(&overlay_path, overlay, side, side)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        println!(
            "{:<22} {:<10} {:<10} {:>6.1}%   {}",
            name,
            truth.get(&name).map(String::as_str).unwrap_or("?"),
            e.prediction.class_name,
            e.prediction.confidence * 100.0,
            overlay_path.display()
        );
    }
    println!("\nNext: triscope explain IMAGE --layer layer3 --out DIR; triscope --help");
    Ok(ExitCode::SUCCESS)
}
