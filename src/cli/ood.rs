//! `triscope ood`: fit a model's out-of-distribution statistics ([`triscope::inference::ood`]) on a
//! dataset's training split, the threshold on its validation split, and write the model with
//! them inside.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use clap::Args;
use triscope::inference::ood::{fit_on_datasets, save_with_stats};

use super::common::{FitSplitsArgs, ModelArgs, open_classifier};

#[derive(Args, Debug)]
pub struct OodArgs {
    /// The class means and the covariance are fitted on the training split, the scales and
    /// the threshold (its 95th percentile) on the validation split
    #[command(flatten)]
    splits: FitSplitsArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// The checkpoint to write: the model with the statistics inside (may be the model's own
    /// file)
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Print the statistics' summary as JSON
    #[arg(long)]
    json: bool,
}

pub fn ood(args: &OodArgs) -> Result<ExitCode> {
    let classifier = open_classifier(&args.model)?;
    let (train, val) = args.splits.open()?;
    eprintln!(
        "fitting the out-of-distribution statistics of {} on {} {} images (threshold on {} {} images)",
        classifier.source,
        train.len(),
        args.splits.train_split,
        val.len(),
        args.splits.val_split,
    );
    let stats = fit_on_datasets(&classifier, &train, &val, &AtomicBool::new(false))?;
    save_with_stats(&classifier, &stats, &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats.info)?);
    } else {
        println!(
            "channel means of layer1..layer4 ({:?} wide), {} groups; threshold {:.2} (the {:.0}th percentile of {} scores, in units of each layer's median); wrote {}",
            stats.info.dims,
            stats.info.classes,
            stats.info.threshold,
            stats.info.quantile * 100.0,
            args.splits.val_split,
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
