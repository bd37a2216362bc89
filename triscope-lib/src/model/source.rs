//! Where a model's parameters come from: a checkpoint or a seeded initialiser.
//!
//! The network asks for each parameter by torchvision key and shape; the source answers with
//! values or says what is wrong, and [`ParamBuilder`] collects every problem so that a bad
//! checkpoint is reported in one message listing all offending keys.

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Result, TriscopeError};
use crate::util::rng::SplitMix64;

/// How a parameter is initialised when it is not loaded (torchvision's scheme).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Kaiming normal, fan-out mode, ReLU gain (torchvision's conv init).
    KaimingNormalFanOut,
    Ones,
    Zeros,
    /// Uniform in [-bound, bound] (PyTorch's linear init).
    Uniform(f32),
}

/// A source's answer for one key.
#[derive(Debug, Clone)]
pub enum Fetch {
    Values(Vec<f32>),
    Missing,
    WrongShape(Vec<usize>),
    Invalid(String),
}

/// Something that supplies parameters by torchvision key.
pub trait ParamSource {
    /// Values (row-major, torchvision layout) for `key` of `shape`.
    fn fetch(&mut self, key: &str, shape: &[usize], init: Init) -> Fetch;
    /// Mark an optional bookkeeping key (BatchNorm's `num_batches_tracked`) as used.
    fn consume_optional(&mut self, _key: &str) {}
    /// Keys present in the source that the model never asked for, with their shapes.
    fn unused_keys(&self) -> Vec<(String, Vec<usize>)> {
        Vec::new()
    }
    /// The file behind the source, for error messages.
    fn origin(&self) -> PathBuf;
}

/// Builds tensors on a device from a [`ParamSource`], collecting problems.
pub struct ParamBuilder<'a> {
    source: &'a mut dyn ParamSource,
    device: Device,
    problems: Vec<String>,
}

impl<'a> ParamBuilder<'a> {
    pub fn new(source: &'a mut dyn ParamSource, device: Device) -> Self {
        Self {
            source,
            device,
            problems: Vec::new(),
        }
    }

    /// The parameter `key`, or zeros after recording why it could not be loaded.
    pub fn tensor<const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        init: Init,
    ) -> Tensor<D> {
        let values = match self.source.fetch(key, &shape, init) {
            Fetch::Values(v) if v.len() == shape.iter().product::<usize>() => v,
            Fetch::Values(v) => {
                self.problems
                    .push(format!("{key}: {} values for shape {shape:?}", v.len()));
                return Tensor::zeros(shape, &self.device);
            }
            Fetch::Missing => {
                self.problems
                    .push(format!("missing key {key} (model expects shape {shape:?})"));
                return Tensor::zeros(shape, &self.device);
            }
            Fetch::WrongShape(found) => {
                self.problems.push(format!(
                    "{key}: checkpoint has shape {found:?}, model expects {shape:?}"
                ));
                return Tensor::zeros(shape, &self.device);
            }
            Fetch::Invalid(why) => {
                self.problems.push(format!("{key}: {why}"));
                return Tensor::zeros(shape, &self.device);
            }
        };
        Tensor::from_data(TensorData::new(values, shape), &self.device)
    }

    /// See [`ParamSource::consume_optional`].
    pub fn optional_counter(&mut self, key: &str) {
        self.source.consume_optional(key);
    }

    /// Fail with every problem found, plus keys the model does not have.
    pub fn finish(&mut self) -> Result<()> {
        let mut lines = std::mem::take(&mut self.problems);
        for (key, shape) in self.source.unused_keys() {
            lines.push(format!("unexpected key {key} with shape {shape:?}"));
        }
        if lines.is_empty() {
            return Ok(());
        }
        let hints = mismatch_hints(&lines);
        let mut report = String::new();
        for hint in hints {
            report.push_str(&format!("  => {hint}\n"));
        }
        const SHOWN: usize = 40;
        for line in lines.iter().take(SHOWN) {
            report.push_str(&format!("  - {line}\n"));
        }
        if lines.len() > SHOWN {
            report.push_str(&format!(
                "  ... and {} more problems\n",
                lines.len() - SHOWN
            ));
        }
        Err(TriscopeError::WeightMismatch {
            path: self.source.origin(),
            report: report.trim_end().to_string(),
        })
    }
}

/// One-line explanations of the most common mismatches (class count, channels, width).
fn mismatch_hints(lines: &[String]) -> Vec<String> {
    let mut hints = Vec::new();
    let shapes = |prefix: &str| -> Option<(Vec<usize>, Vec<usize>)> {
        let line = lines.iter().find(|l| l.starts_with(prefix))?;
        let found = parse_shape(line.split("checkpoint has shape ").nth(1)?)?;
        let expected = parse_shape(line.split("model expects ").nth(1)?)?;
        Some((found, expected))
    };
    if let Some((found, expected)) = shapes("fc.bias:") {
        hints.push(format!(
            "the checkpoint has {} classes, the model {}",
            found[0], expected[0]
        ));
    }
    if let Some((found, expected)) = shapes("conv1.weight:") {
        if found.len() == 4 && expected.len() == 4 && found[1] != expected[1] {
            hints.push(format!(
                "the checkpoint's stem takes {} input channels, the model {}{}",
                found[1],
                expected[1],
                if found[1] == 3 && expected[1] == 1 {
                    " (load it with a grayscale stem adaptation: mean or red)"
                } else {
                    ""
                }
            ));
        }
        if found.first() != expected.first() {
            hints.push(format!(
                "the checkpoint's base width is {}, the model's {}",
                found[0], expected[0]
            ));
        }
    }
    hints
}

fn parse_shape(s: &str) -> Option<Vec<usize>> {
    let inner = s.trim().strip_prefix('[')?.split(']').next()?;
    inner
        .split(',')
        .map(|p| p.trim().parse::<usize>().ok())
        .collect()
}

/// torchvision's initialisation from a seeded, platform-independent generator.
pub struct SeededInit {
    rng: SplitMix64,
}

impl SeededInit {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
        }
    }
}

impl ParamSource for SeededInit {
    fn fetch(&mut self, _key: &str, shape: &[usize], init: Init) -> Fetch {
        let n: usize = shape.iter().product();
        let values = match init {
            Init::Ones => vec![1.0; n],
            Init::Zeros => vec![0.0; n],
            Init::Uniform(bound) => (0..n)
                .map(|_| (self.rng.next_f32() * 2.0 - 1.0) * bound)
                .collect(),
            Init::KaimingNormalFanOut => {
                let fan_out = shape[0] * shape[2..].iter().product::<usize>();
                let std = (2.0 / fan_out as f32).sqrt();
                (0..n).map(|_| self.rng.next_normal() * std).collect()
            }
        };
        Fetch::Values(values)
    }

    fn origin(&self) -> PathBuf {
        PathBuf::from("<seeded initialisation>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_class_counts() {
        let lines = vec![
            "fc.weight: checkpoint has shape [14, 2048], model expects [7, 2048]".to_string(),
            "fc.bias: checkpoint has shape [14], model expects [7]".to_string(),
        ];
        let h = mismatch_hints(&lines);
        assert_eq!(
            h,
            vec!["the checkpoint has 14 classes, the model 7".to_string()]
        );
    }
}
