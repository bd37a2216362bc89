//! `triscope import`: a torchvision-layout state dict as a Triscope checkpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use triscope::io::weights::{
    CheckpointMetadata, StemAdaptation, import_state_dict, save_checkpoint,
};
use triscope::model::device::ComputeDevice;

use super::common::{ArchArgs, choice};

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    arch: ArchArgs,
    /// Comma-separated class names (default: HAM10000 for 7, ChestX-ray14 for 14)
    #[arg(long, value_delimiter = ',')]
    class_names: Option<Vec<String>>,
    /// Sigmoid per output instead of softmax (default for 14 classes)
    #[arg(long)]
    multi_label: Option<bool>,
    /// Comma-separated normalisation mean (default ImageNet)
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Comma-separated normalisation std (default ImageNet)
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// 3-to-1 channel stem adaptation
    #[arg(long, default_value = "mean", value_parser = choice::<StemAdaptation>())]
    stem_adaptation: StemAdaptation,
    /// Description stored in the checkpoint
    #[arg(long)]
    description: Option<String>,
    /// Mark the weights as trained on this dataset
    #[arg(long)]
    dataset: Option<String>,
    /// A measured number to record, NAME=VALUE (repeatable)
    #[arg(long = "metric", value_name = "NAME=VALUE")]
    metrics: Vec<String>,
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
}

pub fn import(args: ImportArgs) -> Result<ExitCode> {
    let ImportArgs {
        file,
        arch,
        class_names,
        multi_label,
        mean,
        std,
        stem_adaptation: _,
        description,
        dataset,
        metrics,
        out,
    } = &args;
    let mut config = arch.config();
    if let Some(names) = class_names {
        config.class_names = names.clone();
    }
    if let Some(m) = multi_label {
        config.multi_label = *m;
    }
    if let Some(m) = mean {
        config.mean = m.clone();
    }
    if let Some(s) = std {
        config.std = s.clone();
    }
    config.validate()?;
    let device = ComputeDevice::cpu();
    let model = import_state_dict(file, &config, Some(args.stem_adaptation), &device.device)?;
    let mut meta = CheckpointMetadata::now(
        description
            .clone()
            .unwrap_or_else(|| format!("imported from {}", file.display())),
        dataset.is_some(),
    );
    meta.dataset = dataset.clone();
    for m in metrics {
        let (name, value) = m
            .split_once('=')
            .with_context(|| format!("--metric takes NAME=VALUE, got '{m}'"))?;
        let value: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("--metric {name}: '{value}' is not a number"))?;
        meta.metrics.insert(name.trim().to_string(), value);
    }
    meta.imported_from = file.file_name().map(|n| n.to_string_lossy().to_string());
    save_checkpoint(&model, &meta, out)?;
    println!(
        "imported {} -> {} ({} classes, {} channel(s), base width {}, {}x{})",
        file.display(),
        out.display(),
        config.num_classes,
        config.in_channels,
        config.base_width,
        config.resolution,
        config.resolution
    );
    Ok(ExitCode::SUCCESS)
}
