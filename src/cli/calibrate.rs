//! `triscope calibrate`: the post-hoc logit adjustment of a single-label model
//! ([`triscope::inference::calibrate`]), fitted on the validation split with the training split's class
//! frequencies, written as a new checkpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use clap::Args;
use triscope::inference::calibrate::{default_taus, fit_on_datasets, shift_bias};
use triscope::io::weights::{CheckpointMetadata, save_checkpoint, save_checkpoint_with_extras};

use super::common::{FitSplitsArgs, ModelArgs, open_classifier};

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// The prior is the training split's class frequencies; tau is chosen on the validation
    /// split
    #[command(flatten)]
    splits: FitSplitsArgs,
    /// Keep validation accuracy at this or more (an operating point): tau is then the best
    /// balanced accuracy among the candidates that do
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    min_accuracy: f64,
    #[command(flatten)]
    model: ModelArgs,
    /// The adjusted checkpoint to write
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Print the fit as JSON
    #[arg(long)]
    json: bool,
}

pub fn calibrate(args: &CalibrateArgs) -> Result<ExitCode> {
    let classifier = open_classifier(&args.model)?;
    let (train, val) = args.splits.open()?;
    eprintln!(
        "fitting the logit adjustment of {} on {} ({} images, prior from {} {} images)",
        classifier.source,
        args.splits.val_split,
        val.len(),
        train.len(),
        args.splits.train_split
    );
    let fit = fit_on_datasets(
        &classifier,
        &train,
        &val,
        &default_taus(),
        args.min_accuracy,
        &AtomicBool::new(false),
    )?;
    let model = shift_bias(classifier.model().clone(), &fit.bias_shift)?;
    let old = &classifier.metadata;
    let mut meta = CheckpointMetadata::now(
        format!(
            "{}; logit adjustment tau {:.2} (fitted on {}{} by triscope calibrate)",
            old.description,
            fit.tau,
            args.splits.val_split,
            if args.min_accuracy > 0.0 {
                format!(", accuracy kept at {} or more", args.min_accuracy)
            } else {
                String::new()
            }
        ),
        old.trained,
    );
    meta.dataset = old.dataset.clone();
    meta.seed = old.seed;
    meta.imported_from = old.imported_from.clone();
    meta.metrics = old.metrics.clone();
    meta.metrics.insert("logit_adjustment_tau".into(), fit.tau);
    meta.metrics.insert(
        "val_balanced_acc_before_adjustment".into(),
        fit.before.balanced_accuracy,
    );
    meta.metrics.insert(
        "val_balanced_acc_after_adjustment".into(),
        fit.after.balanced_accuracy,
    );
    // The adjustment moves the classifier's bias only: the embedding's statistics still hold.
    match &classifier.ood {
        Some(stats) => {
            let (header, blobs) = stats.to_extras()?;
            save_checkpoint_with_extras(&model, &meta, &header, &blobs, &args.out)?;
        }
        None => save_checkpoint(&model, &meta, &args.out)?,
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&fit)?);
    } else {
        println!(
            "{}: tau {:.2}; validation balanced accuracy {:.4} -> {:.4}, accuracy {:.4} -> {:.4}",
            args.splits.val_split,
            fit.tau,
            fit.before.balanced_accuracy,
            fit.after.balanced_accuracy,
            fit.before.accuracy,
            fit.after.accuracy
        );
        println!("wrote {}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
