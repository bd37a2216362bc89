//! `triscope init`: a seeded, untrained model (for tests and demos).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use triscope::io::weights::{CheckpointMetadata, save_checkpoint};
use triscope::model::ResNet50;
use triscope::model::device::ComputeDevice;

use super::common::ArchArgs;

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    arch: ArchArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
}

pub fn init(args: &InitArgs) -> Result<ExitCode> {
    let InitArgs { arch, seed, out } = args;
    let seed = *seed;
    let config = arch.config();
    config.validate()?;
    let device = ComputeDevice::cpu();
    let model = ResNet50::init(&config, seed, &device.device)?;
    let mut meta = CheckpointMetadata::now(
        format!("UNTRAINED seeded initialisation (seed {seed}); its predictions mean nothing"),
        false,
    );
    meta.seed = Some(seed);
    save_checkpoint(&model, &meta, out)?;
    println!("wrote untrained model {} (seed {seed})", out.display());
    Ok(ExitCode::SUCCESS)
}
