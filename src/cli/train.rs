//! `triscope train`: start a run from a YAML config or resume one, with a progress bar.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use triscope::model::config::Precision;
use triscope::model::device::{ComputeDevice, DeviceChoice};
use triscope::train::{TrainConfig, TrainEvent, Trainer};

use super::common::choice;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training config (YAML); see configs/ and README (Training)
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "resume",
        conflicts_with = "resume"
    )]
    config: Option<PathBuf>,
    /// Override a config value (repeatable), e.g. --set training.epochs=3
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run folder (default: runs/<dataset>-<loss>-<UTC time>)
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last checkpoint
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Compute device (auto: the GPU if there is a real one)
    #[arg(long, default_value = "auto", value_parser = choice::<DeviceChoice>())]
    device: DeviceChoice,
    /// No progress bar: one line per epoch
    #[arg(long)]
    quiet: bool,
}

/// `precision`: the command line's `--precision`, for a new run's config.
pub fn train(args: &TrainArgs, precision: Option<Precision>) -> Result<ExitCode> {
    let device = ComputeDevice::select(args.device)?;
    let trainer = match (&args.resume, &args.config) {
        (Some(_), _) if precision.is_some() => anyhow::bail!(
            "--precision with --resume: a run continues in the precision its config.yaml \
             gives (training.precision), so that it resumes bit for bit"
        ),
        (Some(run), _) => Trainer::resume(run, device)?,
        (None, Some(file)) => {
            let mut config = TrainConfig::load(file, &args.set)?;
            if let Some(p) = precision {
                config.training.precision = p;
            }
            let out = match &args.out {
                Some(o) => o.clone(),
                None => PathBuf::from("runs").join(format!(
                    "{}-{:?}-{}",
                    config.data.dataset,
                    config.robustness.loss_type,
                    triscope::io::weights::utc_now_rfc3339().replace(':', "")
                )),
            };
            Trainer::new(config, &out, device)?
        }
        (None, None) => anyhow::bail!("give --config FILE or --resume RUN_DIR"),
    };
    let handle = trainer.spawn()?;
    // Ctrl-C kills the process like any crash; `--resume` continues from the last checkpoint.
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} {bar:30} {pos}/{len} {msg} [{elapsed}<{eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if args.quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut epochs = 0;
    for event in handle.events.iter() {
        match event {
            TrainEvent::Started(info) => {
                epochs = info.epochs;
                bar.println(format!(
                    "{} {} on {}: {} train / {} val images, classes [{}], {} steps per epoch, {:?} loss{}",
                    if info.resumed { "resuming" } else { "training" },
                    info.run_dir.display(),
                    info.device,
                    info.train_samples,
                    info.val_samples,
                    info.class_names.join(", "),
                    info.steps_per_epoch,
                    info.loss_type,
                    if info.resumed {
                        format!(" (from step {})", info.start_step)
                    } else {
                        String::new()
                    }
                ));
                bar.set_length(info.steps_per_epoch as u64);
                bar.set_position((info.start_step % info.steps_per_epoch.max(1)) as u64);
                bar.set_prefix(format!("{}/{}", info.start_epoch + 1, info.epochs));
            }
            TrainEvent::Step(s) => {
                bar.set_prefix(format!("{}/{epochs}", s.epoch));
                bar.set_length(s.batches as u64);
                bar.set_position(s.batch as u64);
                bar.set_message(format!(
                    "loss {:.4} acc {:.3}{} lr {:.2e} {:.1} img/s",
                    s.loss,
                    s.clean_acc,
                    s.robust_acc
                        .map(|r| format!(" rob {r:.3}"))
                        .unwrap_or_default(),
                    s.lr,
                    s.images_per_s
                ));
            }
            TrainEvent::Validating { epoch } => {
                bar.set_message(format!("validating epoch {epoch}"));
            }
            TrainEvent::Epoch(e) => {
                bar.println(format!(
                    "epoch {}/{epochs}: train loss {:.4} acc {:.3}{} | val{} acc {:.3} bal {:.3}{}{} | {:.1} img/s, {:.0} s{}",
                    e.epoch,
                    e.train_loss,
                    e.train_clean_acc,
                    e.train_robust_acc
                        .map(|r| format!(" rob {r:.3}"))
                        .unwrap_or_default(),
                    if e.raw_val_balanced_acc.is_some() { " (average)" } else { "" },
                    e.val_clean_acc,
                    e.val_balanced_acc,
                    e.val_robust_acc
                        .map(|r| format!(" rob {r:.3} (n={})", e.val_robust_samples))
                        .unwrap_or_default(),
                    e.raw_val_clean_acc
                        .zip(e.raw_val_balanced_acc)
                        .map(|(a, b)| format!(" | raw acc {a:.3} bal {b:.3}"))
                        .unwrap_or_default(),
                    e.images_per_s,
                    e.epoch_time_s,
                    if e.best { " *best" } else { "" }
                ));
                if let (Some(q), Some(t)) = (&e.explanation, e.explanation_time_s) {
                    bar.println(format!(
                        "  Grad-CAM on {} val images: deletion AUC {:.3}, insertion AUC {:.3}{} ({:.1} s)",
                        q.images,
                        q.deletion_auc,
                        q.insertion_auc,
                        match (q.energy_inside, q.region_fraction, q.pointing_hit_rate) {
                            (Some(e), Some(f), Some(p)) => format!(
                                ", energy inside the mask {e:.3} (mask share {f:.3}), pointing {p:.3} ({} masks)",
                                q.masked_images
                            ),
                            _ => String::new(),
                        },
                        t
                    ));
                }
                bar.set_position(0);
            }
            TrainEvent::Stopped { checkpoint } => {
                bar.println(format!(
                    "stopped; continue with --resume ({})",
                    checkpoint
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ));
            }
            TrainEvent::Finished(s) => {
                bar.finish_and_clear();
                println!(
                    "done: {} epochs, {} steps; last {}{}",
                    s.epochs_done,
                    s.steps_done,
                    s.last
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    s.best
                        .as_ref()
                        .map(|p| format!(
                            ", best {} (epoch {}, score {:.4})",
                            p.display(),
                            s.best_epoch.unwrap_or(0),
                            s.best_score.unwrap_or(f64::NAN)
                        ))
                        .unwrap_or_default()
                );
            }
            TrainEvent::Failed(_) => bar.abandon(),
            TrainEvent::Checkpoint { .. } | TrainEvent::Paused | TrainEvent::Resumed => {}
        }
    }
    // The library's error already names the file and the OS error; no cause chain to repeat.
    handle
        .join()
        .map_err(|e| anyhow::anyhow!("training failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
