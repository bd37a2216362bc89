//! `triscope export`: a Triscope checkpoint as a torchvision state dict.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use triscope::inference::{ModelSource, load_embedded_model};
use triscope::io::weights::export_torchvision;
use triscope::model::device::ComputeDevice;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Triscope checkpoint (.safetensors); default: the embedded HAM10000 model
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// The torchvision state dict to write (.safetensors)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn export(args: &ExportArgs) -> Result<ExitCode> {
    let (model, out) = (&args.model, &args.out);
    let device = ComputeDevice::cpu();
    let (loaded, source) = match &model {
        Some(path) => (
            triscope::io::weights::load_checkpoint(path, &device.device)?,
            ModelSource::File(path.clone()),
        ),
        None => (load_embedded_model(&device.device)?, ModelSource::Embedded),
    };
    export_torchvision(&loaded.model, out)?;
    let c = &loaded.model.config;
    println!(
        "exported {} -> {} (torchvision resnet50 layout, num_classes={}, in_channels={}, base_width={})",
        source,
        out.display(),
        c.num_classes,
        c.in_channels,
        c.base_width
    );
    if c.base_width != 64 || c.in_channels != 3 {
        println!(
            "note: torchvision.models.resnet50 itself has base width 64 and 3 channels; this \
             model needs the same layout built with base width {} and {} input channel(s)",
            c.base_width, c.in_channels
        );
    }
    Ok(ExitCode::SUCCESS)
}
