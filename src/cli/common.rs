//! What the commands share: the model and architecture flags, typed value parsers (the
//! library's named choices, fractions like `8/255`), progress bars and small writers.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use clap::builder::{PossibleValue, TypedValueParser};
use triscope::inference::{Classifier, Prediction};
use triscope::io::imaging::ResizeMode;
use triscope::model::ModelConfig;
use triscope::model::device::{ComputeDevice, DeviceChoice};
use triscope::util::choice::Choice;

/// A dataset's training and validation splits, for what is fitted on a trained model
/// (`calibrate`, `ood`).
#[derive(Args, Debug, Clone)]
pub struct FitSplitsArgs {
    /// Dataset with a training and a validation split (a HAM10000-layout folder)
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// The training split (what the model learnt from)
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// The split the fit's choice is made on (never the test split)
    #[arg(long, default_value = "val")]
    pub val_split: String,
}

impl FitSplitsArgs {
    /// Both splits, opened.
    pub fn open(&self) -> Result<(triscope::io::data::Dataset, triscope::io::data::Dataset)> {
        let open = |split: &str| triscope::io::data::Dataset::open(&self.data, Some(split));
        Ok((open(&self.train_split)?, open(&self.val_split)?))
    }
}

/// Which model, on which device, and how images become square.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Triscope checkpoint (.safetensors); default: the embedded HAM10000 model
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Compute device (auto: the GPU if there is a real one)
    #[arg(long, default_value = "auto", value_parser = choice::<DeviceChoice>())]
    pub device: DeviceChoice,
    /// How images become square: crop (shorter side + centre crop) or stretch
    #[arg(long, default_value = "crop", value_parser = choice::<ResizeMode>())]
    pub resize: ResizeMode,
}

/// The shape of a ResNet-50: outputs, channels, width, input size.
#[derive(Args, Debug, Clone)]
pub struct ArchArgs {
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
    pub fn config(&self) -> ModelConfig {
        let mut config = ModelConfig::generic(self.num_classes, self.in_channels);
        config.base_width = self.base_width;
        config.resolution = self.resolution;
        config
    }
}

/// The classifier `args` ask for (a warning when it is untrained).
pub fn open_classifier(args: &ModelArgs) -> Result<Classifier> {
    let device = ComputeDevice::select(args.device)?;
    let mut classifier = Classifier::load(args.model.as_deref(), device)?;
    classifier.resize_mode = args.resize;
    if !classifier.metadata.trained {
        eprintln!(
            "warning: the model ({}) is UNTRAINED: {}",
            classifier.source, classifier.metadata.description
        );
    }
    Ok(classifier)
}

/// A clap value parser for one of the library's [`Choice`] sets: `--help` lists the names, a
/// bad value fails while the command line is parsed, with the library's message.
#[derive(Clone)]
pub struct ChoiceParser<T>(PhantomData<T>);

pub fn choice<T: Choice + Send + Sync>() -> ChoiceParser<T> {
    ChoiceParser(PhantomData)
}

impl<T: Choice + Send + Sync> TypedValueParser for ChoiceParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> std::result::Result<T, clap::Error> {
        let text = value.to_string_lossy();
        triscope::util::choice::parse::<T>(&text).map_err(|e| {
            let flag = arg.map(|a| a.to_string()).unwrap_or_default();
            let e = match e {
                triscope::TriscopeError::InvalidArgument(m) => m,
                other => other.to_string(),
            };
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value '{text}' for '{flag}': {e}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            T::ALL.iter().map(|t| PossibleValue::new(t.name())),
        ))
    }
}

/// Parse an eps or step size: `8/255`, `0.0314`.
pub fn parse_fraction(s: &str) -> Result<f32> {
    let s = s.trim();
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let a: f64 = a
                .trim()
                .parse()
                .with_context(|| format!("'{s}' is not a number or a fraction"))?;
            let b: f64 = b
                .trim()
                .parse()
                .with_context(|| format!("'{s}' is not a number or a fraction"))?;
            if b == 0.0 {
                bail!("'{s}' divides by zero");
            }
            a / b
        }
        None => s
            .parse::<f64>()
            .with_context(|| format!("'{s}' is not a number or a fraction"))?,
    };
    if !v.is_finite() {
        bail!("'{s}' is not finite");
    }
    Ok(v as f32)
}

/// Parse a sweep `0,1,2,4,8,16/255` (a trailing `/255` applies to every entry without one).
pub fn parse_sweep(s: &str) -> Result<Vec<f32>> {
    let (body, common) = match s.rsplit_once('/') {
        Some((body, denom)) if !body.contains('/') => (body, Some(denom)),
        _ => (s, None),
    };
    body.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match common {
            Some(d) => parse_fraction(&format!("{p}/{d}")),
            None => parse_fraction(p),
        })
        .collect()
}

/// A list of radii (`0,1,2,4,8/255`), as one flag value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep(pub Vec<f32>);

/// The value parser of [`Sweep`].
pub fn sweep(s: &str) -> Result<Sweep> {
    parse_sweep(s).map(Sweep)
}

/// How a TCAV row reads on the terminal: " *" when significant after Holm, nothing when not,
/// and not read at all when its CAVs do not separate the concept.
pub fn tcav_mark(t: &triscope::explain::tcav::TcavResult) -> &'static str {
    match (t.significant, t.cav_separable) {
        (_, false) => " (CAV not separable: not read)",
        (true, true) => " *",
        (false, true) => "",
    }
}

/// One progress bar per stage of a long job (an audit, a concept bank): a new stage's first
/// report clears the last stage's bar and starts its own.
pub struct StageBars<S> {
    bar: Option<(S, indicatif::ProgressBar)>,
}

impl<S> Default for StageBars<S> {
    fn default() -> Self {
        Self { bar: None }
    }
}

impl<S: PartialEq + Copy> StageBars<S> {
    /// `done` of `total` `what` in `stage` (a stage may learn its total as it goes).
    pub fn show(&mut self, stage: S, what: &str, done: usize, total: usize) {
        if self.bar.as_ref().is_none_or(|(s, _)| *s != stage) {
            self.finish();
            self.bar = Some((stage, progress_bar(total, what)));
        }
        if let Some((_, b)) = &self.bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, b)) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// An indicatif bar counting `what`.
pub fn progress_bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}, {{elapsed}} elapsed, eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

pub fn print_prediction(path: &Path, p: &Prediction, elapsed_secs: f64) {
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

/// A class given by index or by (case-insensitive) name.
pub fn resolve_class(config: &ModelConfig, spec: &str) -> Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_and_sweeps() {
        assert!((parse_fraction("8/255").unwrap() - 8.0 / 255.0).abs() < 1e-9);
        assert!((parse_fraction("0.5").unwrap() - 0.5).abs() < 1e-9);
        assert!(parse_fraction("x/255").is_err());
        assert!(parse_fraction("1/0").is_err());
        let s = parse_sweep("0,1,2,4,8,16/255").unwrap();
        assert_eq!(s.len(), 6);
        assert!((s[5] - 16.0 / 255.0).abs() < 1e-9);
        assert_eq!(parse_sweep("0.1,0.2").unwrap(), vec![0.1, 0.2]);
    }
}
