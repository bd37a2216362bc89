//! The command line: one file per command (its clap arguments, then parsing and printing
//! around the library's pipelines); `common` holds what several share.

mod attack;
mod audit;
mod calibrate;
mod common;
mod concepts;
mod demo;
mod eval;
mod explain;
mod export;
mod gui;
mod import;
mod info;
mod init;
mod ood;
mod predict;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use common::{ModelArgs, choice, open_classifier};
use triscope::model::config::Precision;
use triscope::model::fast;

#[derive(Parser, Debug)]
#[command(
    name = "triscope",
    version,
    about = "Robust and explainable medical image classification (ResNet-50, Grad-CAM)",
    long_about = "Robust and explainable medical image classification.\n\n\
                  Without a subcommand Triscope opens the desktop workbench on the embedded \
                  default model and the bundled sample images."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Arithmetic of the convolutions' products on the CPU: f32, or bf16 (bf16 operands, f32
    /// sums; on CPUs with AVX512_BF16, f32 with a warning elsewhere). For `train`: the new
    /// run's training.precision
    #[arg(long, global = true, value_parser = choice::<Precision>())]
    precision: Option<Precision>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open the desktop workbench (the default without a subcommand)
    Gui(gui::GuiArgs),
    /// Classify images: class, confidence and every class probability
    Predict(predict::PredictArgs),
    /// Explain an image (heatmap.png, overlay.png, heatmap.npy, attribution.npy,
    /// prediction.json) or every image of a folder (heatmaps, overlays, predictions.csv)
    Explain {
        #[arg(value_name = "IMAGE|FOLDER")]
        image: PathBuf,
        #[command(flatten)]
        explain: explain::ExplainArgs,
        /// Output folder
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Print the JSON summary on stdout
        #[arg(long)]
        json: bool,
    },
    /// Import a torchvision-layout state dict (safetensors) as a Triscope checkpoint
    Import(import::ImportArgs),
    /// Export a Triscope checkpoint (the embedded model by default) as a torchvision state
    /// dict (safetensors)
    Export(export::ExportArgs),
    /// Write a seeded, untrained model (for tests and demos)
    Init(init::InitArgs),
    /// Predict and explain every bundled sample image (assets/samples) with the embedded model
    Demo(demo::DemoArgs),
    /// Attack one image: adversarial PNG/NPY, amplified perturbation, JSON with predictions
    Attack {
        #[arg(value_name = "IMAGE")]
        image: PathBuf,
        #[command(flatten)]
        attack: attack::AttackArgs,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Clean and robust evaluation on a dataset, with fooled-evaluation checks
    Eval {
        #[command(flatten)]
        eval: eval::EvalArgs,
        /// Output folder for eval.json, eval.csv and the plot
        #[arg(long, default_value = "out/eval", value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Test-time augmentation: every column (clean and attacked) is the model's mean
        /// probability over the eight flips and quarter turns of each image (dermoscopy)
        #[arg(long)]
        tta: bool,
        /// Print the JSON report on stdout
        #[arg(long)]
        json: bool,
    },
    /// Audit a model on a dataset split: clean and robust evaluation, explanation
    /// faithfulness, localisation against lesion masks / boxes, stability under attack,
    /// sanity checks and TCAV, as a self-contained HTML report with JSON and PNG figures
    Audit {
        #[command(flatten)]
        audit: audit::AuditArgs,
        /// Output folder for audit.html, audit.json and the figures
        #[arg(long, default_value = "out/audit", value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Print the JSON report on stdout
        #[arg(long)]
        json: bool,
    },
    /// The seven-point checklist in the model's features: probes and CAVs from derm7pt
    /// (cached per model), their AUROC on derm7pt test and TCAV, and for each image the
    /// criteria the model reads in it and whether each pushes it toward the class
    Concepts {
        #[command(flatten)]
        concepts: concepts::ConceptsArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// Print the JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Train a model from a YAML config (clean, PGD-AT or TRADES), or resume a run
    Train(train::TrainArgs),
    /// Adjust a single-label model's logits for its training prior (tau chosen on the
    /// validation split for the best balanced accuracy), as a new checkpoint
    Calibrate(calibrate::CalibrateArgs),
    /// Fit the statistics that flag images unlike a model's training data (per layer, class
    /// means and a shared covariance of layer1..layer4's channel means; the threshold on the
    /// validation split), written into the model's weights file
    Ood(ood::OodArgs),
    /// Show a checkpoint's config and metadata
    Info(info::InfoArgs),
}

pub fn run() -> ExitCode {
    init_tracing();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRISCOPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The command, its convolutions in the precision asked for (a training run takes it from
/// its config, on its own thread).
fn dispatch(cli: Cli) -> Result<ExitCode> {
    let (precision, refused) = cli
        .precision
        .unwrap_or_default()
        .resolve(fast::bf16::supported());
    if let Some(why) = refused {
        eprintln!("warning: {why}");
    }
    fast::with_precision(precision, || command(cli.command, cli.precision))
}

fn command(command: Option<Command>, precision: Option<Precision>) -> Result<ExitCode> {
    match command {
        None => gui::gui(gui::GuiArgs::default()),
        Some(Command::Gui(args)) => gui::gui(args),
        Some(Command::Predict(args)) => predict::predict(&args),
        Some(Command::Explain {
            image,
            explain,
            out,
            model,
            json,
        }) => explain::explain(&image, &explain, &out, &open_classifier(&model)?, json),
        Some(Command::Import(args)) => import::import(args),
        Some(Command::Export(args)) => export::export(&args),
        Some(Command::Init(args)) => init::init(&args),
        Some(Command::Info(args)) => info::info(&args),
        Some(Command::Demo(args)) => demo::demo(&args),
        Some(Command::Attack {
            image,
            attack,
            out,
            model,
            json,
        }) => attack::attack(&image, &attack, &out, &open_classifier(&model)?, json),
        Some(Command::Eval {
            eval,
            out,
            model,
            tta,
            json,
        }) => {
            let mut classifier = open_classifier(&model)?;
            classifier.tta = tta;
            eval::eval(&eval, &out, &classifier, json)
        }
        Some(Command::Audit {
            audit,
            out,
            model,
            json,
        }) => audit::audit(&audit, &out, &open_classifier(&model)?, json),
        Some(Command::Concepts {
            concepts,
            model,
            json,
        }) => concepts::concepts(&concepts, &open_classifier(&model)?, json),
        Some(Command::Train(args)) => train::train(&args, precision),
        Some(Command::Calibrate(args)) => calibrate::calibrate(&args),
        Some(Command::Ood(args)) => ood::ood(&args),
    }
}
