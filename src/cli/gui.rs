//! `triscope gui` (and no subcommand): the desktop workbench.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use triscope::model::device::DeviceChoice;

use super::common::choice;

#[derive(Args, Debug, Default)]
pub struct GuiArgs {
    /// An image (PNG, JPEG, BMP, TIFF, DICOM), a folder of images, a .safetensors model or
    /// an audit folder to open at start
    #[arg(value_name = "PATH")]
    open: Option<PathBuf>,
    /// Triscope checkpoint to open (default: the last one used, else the embedded model)
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Compute device (auto: the GPU if there is a real one)
    #[arg(long, default_value = "auto", value_parser = choice::<DeviceChoice>())]
    device: DeviceChoice,
    /// Write this file once the first explanation is on screen (for scripted screenshots)
    #[arg(long, value_name = "PATH", hide = true)]
    ready_file: Option<PathBuf>,
}

pub fn gui(args: GuiArgs) -> Result<ExitCode> {
    let opened = crate::gui::run(crate::gui::GuiOptions {
        open: args.open,
        model: args.model,
        device: args.device,
        samples_dir: samples_dir(),
        models_dir: bundled_dir("models"),
        ready_file: args.ready_file,
    });
    if let Err(e) = opened {
        eprintln!("{e:#}\n\n{}", usage_banner());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A bundled folder (`assets/samples`, `models`): under the current folder, else the source
/// checkout.
fn bundled_dir(relative: &str) -> PathBuf {
    let local = PathBuf::from(relative);
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    }
}

pub fn samples_dir() -> PathBuf {
    bundled_dir("assets/samples")
}

fn usage_banner() -> String {
    "Triscope — robust and explainable medical image classification\n\n\
     The desktop workbench needs a display. The command line works without one:\n\
     \x20 triscope demo\n\
     \x20 triscope predict assets/samples/ham10000/*.jpg\n\
     \x20 triscope explain assets/samples/ham10000/ISIC_0024410.jpg --layer layer4 --out out/explain\n\
     \x20 triscope info\n\
     \x20 triscope --help"
        .to_string()
}
