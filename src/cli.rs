//! Command-line interface: predict, explain, import, export, init, info.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use triscope::device::{ComputeDevice, DeviceChoice};
use triscope::explain::{Colormap, TargetClass, overlay_rgb8};
use triscope::imaging::ResizeMode;
use triscope::inference::{Classifier, ModelSource, Prediction, load_embedded_model};
use triscope::model::{LayerId, ModelConfig, ResNet50};
use triscope::weights::{
    CheckpointMetadata, StemAdaptation, export_torchvision, import_state_dict, read_header,
    save_checkpoint,
};

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
}

#[derive(Args, Debug, Clone)]
struct ModelArgs {
    /// Triscope checkpoint (.safetensors); default: the embedded HAM10000 model
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Compute device: auto (GPU if there is a real one), cpu, gpu
    #[arg(long, default_value = "auto", value_name = "auto|cpu|gpu")]
    device: String,
    /// How images become square: crop (shorter side + centre crop) or stretch
    #[arg(long, default_value = "crop", value_name = "crop|stretch")]
    resize: String,
}

/// The shape of a ResNet-50: outputs, channels, width, input size.
#[derive(Args, Debug, Clone)]
struct ArchArgs {
    /// Outputs of the head (7 for HAM10000, 14 for ChestX-ray14)
    #[arg(long, default_value_t = 7)]
    num_classes: usize,
    /// 1 for greyscale models (a 3-channel stem is adapted on import), 3 for RGB
    #[arg(long, default_value_t = 3)]
    in_channels: usize,
    /// Stem and layer1 width (64 = torchvision's ResNet-50)
    #[arg(long, default_value_t = 64)]
    base_width: usize,
    /// Input side in pixels
    #[arg(long, default_value_t = 224)]
    resolution: usize,
}

impl ArchArgs {
    /// A config with generic class names for this shape (HAM10000 / ChestX-ray14 names for
    /// 7 / 14 outputs).
    fn config(&self) -> ModelConfig {
        let mut config = ModelConfig::generic(self.num_classes, self.in_channels);
        config.base_width = self.base_width;
        config.resolution = self.resolution;
        config
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open the desktop workbench (the default without a subcommand)
    Gui {
        /// An image (PNG, JPEG, BMP, TIFF, DICOM), a folder of images, a .safetensors model or
        /// an audit folder to open at start
        #[arg(value_name = "PATH")]
        open: Option<PathBuf>,
        /// Triscope checkpoint to open (default: the last one used, else the embedded model)
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// Compute device: auto (GPU if there is a real one), cpu, gpu
        #[arg(long, default_value = "auto", value_name = "auto|cpu|gpu")]
        device: String,
        /// Write this file once the first explanation is on screen (for scripted screenshots)
        #[arg(long, value_name = "PATH", hide = true)]
        ready_file: Option<PathBuf>,
    },
    /// Classify images: class, confidence and every class probability
    Predict {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Explain an image (heatmap.png, overlay.png, heatmap.npy, attribution.npy,
    /// prediction.json) or every image of a folder (heatmaps, overlays, predictions.csv)
    Explain {
        #[arg(value_name = "IMAGE|FOLDER")]
        image: PathBuf,
        #[command(flatten)]
        explain: crate::cli_explain::ExplainArgs,
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
    Import {
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
        /// 3-to-1 channel stem adaptation: mean or red
        #[arg(long, default_value = "mean")]
        stem_adaptation: String,
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
    },
    /// Export a Triscope checkpoint (the embedded model by default) as a torchvision state
    /// dict (safetensors)
    Export {
        /// Triscope checkpoint (.safetensors); default: the embedded HAM10000 model
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// The torchvision state dict to write (.safetensors)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write a seeded, untrained model (for tests and demos)
    Init {
        #[command(flatten)]
        arch: ArchArgs,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
    /// Predict and explain every bundled sample image (assets/samples) with the embedded model
    Demo {
        /// Output folder for the overlays
        #[arg(long, default_value = "out/demo", value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Attack one image: adversarial PNG/NPY, amplified perturbation, JSON with predictions
    Attack {
        #[arg(value_name = "IMAGE")]
        image: PathBuf,
        #[command(flatten)]
        attack: crate::cli_attack::AttackArgs,
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
        eval: crate::cli_attack::EvalArgs,
        /// Output folder for eval.json, eval.csv and the plot
        #[arg(long, default_value = "out/eval", value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Print the JSON report on stdout
        #[arg(long)]
        json: bool,
    },
    /// Audit a model on a dataset split: clean and robust evaluation, explanation
    /// faithfulness, localisation against lesion masks / boxes, stability under attack,
    /// sanity checks and TCAV, as a self-contained HTML report with JSON and PNG figures
    Audit {
        #[command(flatten)]
        audit: crate::cli_audit::AuditArgs,
        /// Output folder for audit.html, audit.json and the figures
        #[arg(long, default_value = "out/audit", value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Print the JSON report on stdout
        #[arg(long)]
        json: bool,
    },
    /// Train a model from a YAML config (clean, PGD-AT or TRADES), or resume a run
    Train {
        #[command(flatten)]
        train: crate::cli_train::TrainArgs,
    },
    /// Show a checkpoint's config and metadata
    Info {
        /// Checkpoint; default: the embedded model
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
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

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => gui(None, None, "auto", None),
        Some(Command::Gui {
            open,
            model,
            device,
            ready_file,
        }) => gui(open, model, &device, ready_file),
        Some(Command::Predict {
            images,
            model,
            json,
        }) => predict(&images, &model, json),
        Some(Command::Explain {
            image,
            explain,
            out,
            model,
            json,
        }) => crate::cli_explain::explain(&image, &explain, &out, &open_classifier(&model)?, json),
        Some(Command::Import {
            file,
            arch,
            class_names,
            multi_label,
            mean,
            std,
            stem_adaptation,
            description,
            dataset,
            metrics,
            out,
        }) => {
            let mut config = arch.config();
            if let Some(names) = class_names {
                config.class_names = names;
            }
            if let Some(m) = multi_label {
                config.multi_label = m;
            }
            if let Some(m) = mean {
                config.mean = m;
            }
            if let Some(s) = std {
                config.std = s;
            }
            config.validate()?;
            let stem: StemAdaptation = stem_adaptation.parse()?;
            let device = ComputeDevice::cpu();
            let model = import_state_dict(&file, &config, Some(stem), &device.device)?;
            let mut meta = CheckpointMetadata::now(
                description.unwrap_or_else(|| format!("imported from {}", file.display())),
                dataset.is_some(),
            );
            meta.dataset = dataset;
            for m in &metrics {
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
            save_checkpoint(&model, &meta, &out)?;
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
        Some(Command::Export { model, out }) => {
            let device = ComputeDevice::cpu();
            let (loaded, source) = match &model {
                Some(path) => (
                    triscope::weights::load_checkpoint(path, &device.device)?,
                    ModelSource::File(path.clone()),
                ),
                None => (load_embedded_model(&device.device)?, ModelSource::Embedded),
            };
            export_torchvision(&loaded.model, &out)?;
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
        Some(Command::Init { arch, seed, out }) => {
            let config = arch.config();
            config.validate()?;
            let device = ComputeDevice::cpu();
            let model = ResNet50::init(&config, seed, &device.device)?;
            let mut meta = CheckpointMetadata::now(
                format!(
                    "UNTRAINED seeded initialisation (seed {seed}); its predictions mean nothing"
                ),
                false,
            );
            meta.seed = Some(seed);
            save_checkpoint(&model, &meta, &out)?;
            println!("wrote untrained model {} (seed {seed})", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Info { model, json }) => info(model.as_deref(), json),
        Some(Command::Demo { out, model }) => demo(&out, &model),
        Some(Command::Attack {
            image,
            attack,
            out,
            model,
            json,
        }) => crate::cli_attack::attack(&image, &attack, &out, &open_classifier(&model)?, json),
        Some(Command::Eval {
            eval,
            out,
            model,
            json,
        }) => crate::cli_attack::eval(&eval, &out, &open_classifier(&model)?, json),
        Some(Command::Audit {
            audit,
            out,
            model,
            json,
        }) => crate::cli_audit::audit(&audit, &out, &open_classifier(&model)?, json),
        Some(Command::Train { train }) => crate::cli_train::train(&train),
    }
}

fn gui(
    open: Option<PathBuf>,
    model: Option<PathBuf>,
    device: &str,
    ready_file: Option<PathBuf>,
) -> Result<ExitCode> {
    let opened = crate::gui::run(crate::gui::GuiOptions {
        open,
        model,
        device: device.parse()?,
        samples_dir: samples_dir(),
        models_dir: bundled_dir("models"),
        ready_file,
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

fn samples_dir() -> PathBuf {
    bundled_dir("assets/samples")
}

fn demo(out: &Path, args: &ModelArgs) -> Result<ExitCode> {
    let classifier = open_classifier(args)?;
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
        let side = e.gradcam.width as u32;
        save_rgb8(&overlay_path, &overlay, side, side)?;
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

fn open_classifier(args: &ModelArgs) -> Result<Classifier> {
    let choice: DeviceChoice = args.device.parse()?;
    let device = ComputeDevice::select(choice)?;
    let mut classifier = Classifier::load(args.model.as_deref(), device)?;
    classifier.resize_mode = args.resize.parse::<ResizeMode>()?;
    if !classifier.metadata.trained {
        eprintln!(
            "warning: the model ({}) is UNTRAINED: {}",
            classifier.source, classifier.metadata.description
        );
    }
    Ok(classifier)
}

#[derive(Serialize)]
struct PredictRecord<'a> {
    image: String,
    #[serde(flatten)]
    prediction: &'a Prediction,
    /// The image does not fit what the model was trained on.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

fn predict(images: &[PathBuf], args: &ModelArgs, json: bool) -> Result<ExitCode> {
    let classifier = open_classifier(args)?;
    let mut failures = 0usize;
    let mut records = Vec::new();
    for path in images {
        let started = Instant::now();
        let result = classifier.load_image(path).and_then(|img| {
            let warning = classifier.input_warning(img.grey);
            let prediction = classifier.predict(&[&img.pixels])?.remove(0);
            Ok((prediction, warning))
        });
        match result {
            Ok((prediction, warning)) => {
                if !json {
                    print_prediction(path, &prediction, started.elapsed().as_secs_f64());
                }
                if let Some(w) = &warning {
                    eprintln!("warning: {}: {w}", path.display());
                }
                records.push((path.display().to_string(), prediction, warning));
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if json {
        let out: Vec<PredictRecord> = records
            .iter()
            .map(|(image, prediction, warning)| PredictRecord {
                image: image.clone(),
                prediction,
                warning: warning.clone(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn print_prediction(path: &Path, p: &Prediction, elapsed_secs: f64) {
    if p.multi_label {
        let found = if p.positive_findings.is_empty() {
            format!("no finding >= {}", triscope::inference::FINDING_THRESHOLD)
        } else {
            p.positive_findings.join(", ")
        };
        println!(
            "{}: {found} (top: {} {:.3}) [{:.2}s]",
            path.display(),
            p.class_name,
            p.confidence,
            elapsed_secs
        );
    } else {
        println!(
            "{}: {} ({:.1}%) [{:.2}s]",
            path.display(),
            p.class_name,
            p.confidence * 100.0,
            elapsed_secs
        );
    }
    let mut scores = p.scores.clone();
    scores.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    for s in scores {
        let bar = "#".repeat((s.probability * 30.0).round() as usize);
        println!("    {:<20} {:>6.3}  {bar}", s.name, s.probability);
    }
}

/// Write interleaved RGB8 pixels as a PNG; returns the path for the list of written files.
pub(crate) fn save_rgb8(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<String> {
    image::save_buffer(path, rgb, width, height, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.display().to_string())
}

/// A class given by index or by (case-insensitive) name.
pub(crate) fn resolve_class(config: &ModelConfig, spec: &str) -> Result<usize> {
    if let Ok(i) = spec.parse::<usize>() {
        if i < config.num_classes {
            return Ok(i);
        }
        bail!(
            "class {i} does not exist: the model has {} classes (0..{})",
            config.num_classes,
            config.num_classes - 1
        );
    }
    config
        .class_names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(spec))
        .with_context(|| {
            format!(
                "unknown class '{spec}'; the model's classes are: {}",
                config.class_names.join(", ")
            )
        })
}

fn info(model: Option<&Path>, json: bool) -> Result<ExitCode> {
    let classifier;
    let (config, metadata, source) = match model {
        Some(p) => {
            let header = read_header(p)?;
            let config = header.config.with_context(|| {
                format!(
                    "{} has no Triscope config (a plain state dict?)",
                    p.display()
                )
            })?;
            (
                config,
                header.metadata.unwrap_or_default(),
                p.display().to_string(),
            )
        }
        None => {
            classifier = Classifier::load(None, ComputeDevice::cpu())?;
            (
                classifier.config().clone(),
                classifier.metadata.clone(),
                classifier.source.to_string(),
            )
        }
    };
    if json {
        let v = serde_json::json!({"source": source, "config": config, "metadata": metadata});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("model:       {source}");
    println!(
        "trained:     {}",
        if metadata.trained {
            "yes"
        } else {
            "NO (untrained)"
        }
    );
    println!("description: {}", metadata.description);
    if let Some(d) = &metadata.dataset {
        println!("dataset:     {d}");
    }
    println!(
        "architecture: {} base width {} ({}-d embedding), {} input channel(s), {}x{} input",
        config.architecture,
        config.base_width,
        config.embedding_dim(),
        config.in_channels,
        config.resolution,
        config.resolution
    );
    println!(
        "outputs:     {} {} ({})",
        config.num_classes,
        if config.multi_label {
            "findings, sigmoid each"
        } else {
            "classes, softmax"
        },
        config.class_names.join(", ")
    );
    println!("normalise:   mean {:?} std {:?}", config.mean, config.std);
    for (k, v) in &metadata.metrics {
        println!("metric:      {k} = {v:.4}");
    }
    println!(
        "written:     {} by Triscope {}",
        metadata.created_utc, metadata.triscope_version
    );
    Ok(ExitCode::SUCCESS)
}
