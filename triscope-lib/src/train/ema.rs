//! An exponential moving average of the weights and BatchNorm statistics (Polyak averaging;
//! timm's `ModelEmaV2`, torch's `AveragedModel` with `get_ema_multi_avg_fn` and
//! `use_buffers=True`): after each optimizer step `avg += (1 - decay) * (w - avg)`, the first
//! step copying `w`. It remembers about `1 / (1 - decay)` steps, so late epochs' noisy steps
//! average out and the model validated and kept as `best` is the average.
//!
//! Averaged BatchNorm statistics do not describe the averaged weights' activations: while the
//! learning rate is high the weights move fast, and an average over hundreds of steps then
//! answers one class (a HAM10000 run: validation accuracy 0.11 against the raw weights' 0.67 at
//! epoch 3). So before it is used the average's statistics are recomputed on training images
//! ([`recalibrate_batch_norm`], torch's `swa_utils.update_bn`).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use super::loader::HostBatch;
use crate::error::{Result, TriscopeError};
use crate::model::ResNet50;

/// The average, host-side: every float tensor of the model (weights and BatchNorm running
/// statistics) flattened in module order.
#[derive(Debug, Clone, PartialEq)]
pub struct Ema {
    decay: f32,
    /// Empty until the first update.
    average: Vec<f32>,
}

impl Ema {
    pub fn new(decay: f32) -> Self {
        Self {
            decay,
            average: Vec::new(),
        }
    }

    /// An average saved by [`Ema::to_bytes`] for a model of `len` floats.
    pub fn from_bytes(decay: f32, bytes: &[u8], len: usize) -> Result<Self> {
        if bytes.len() != len * 4 {
            return Err(TriscopeError::Compute(format!(
                "the weight average holds {} bytes; the model has {len} floats ({} bytes)",
                bytes.len(),
                len * 4
            )));
        }
        let average = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self { decay, average })
    }

    /// Little-endian f32 bytes of the average (empty before the first update).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.average.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Fold one state of the model in (after an optimizer step).
    pub fn update(&mut self, model: &ResNet50) -> Result<()> {
        let state = flatten(model)?;
        self.update_flat(&state);
        Ok(())
    }

    fn update_flat(&mut self, state: &[f32]) {
        if self.average.len() != state.len() {
            self.average = state.to_vec();
            return;
        }
        let rate = 1.0 - self.decay;
        for (a, &w) in self.average.iter_mut().zip(state) {
            *a += rate * (w - *a);
        }
    }

    /// `model` (inference mode) with the averaged values; `model` itself before the first
    /// update.
    pub fn apply(&self, model: &ResNet50) -> Result<ResNet50> {
        let model = model.valid();
        if self.average.is_empty() {
            return Ok(model);
        }
        let mut fill = Fill {
            values: &self.average,
            offset: 0,
        };
        let averaged = model.map(&mut fill);
        if fill.offset != self.average.len() {
            return Err(TriscopeError::Compute(format!(
                "the weight average holds {} floats; the model has {}",
                self.average.len(),
                fill.offset
            )));
        }
        Ok(averaged)
    }
}

/// Number of floats [`Ema`] averages for `model`.
pub fn float_count(model: &ResNet50) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 += param.shape().num_elements();
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

/// `model` (inference mode) with each BatchNorm's running statistics recomputed as the plain
/// mean of its batch statistics over `batches` (torch's `update_bn`: momentum `None`), in
/// inference mode again. Weights are not touched.
pub fn recalibrate_batch_norm(
    model: &ResNet50,
    batches: impl IntoIterator<Item = Result<HostBatch>>,
) -> Result<ResNet50> {
    // Training mode (batch statistics, running statistics updated), no gradients.
    let mut model = model.valid().train().no_grad();
    let momenta: Vec<f64> = model
        .batch_norms_mut()
        .iter()
        .map(|bn| bn.momentum)
        .collect();
    let device = model.fc.weight.val().device();
    for (k, batch) in batches.into_iter().enumerate() {
        let batch = batch?;
        // The k-th batch weighs 1 / (k + 1): the running value is the mean of the batches.
        for bn in model.batch_norms_mut() {
            bn.momentum = 1.0 / (k as f64 + 1.0);
        }
        let x = Tensor::<4>::from_data(TensorData::new(batch.pixels, batch.shape), &device);
        let _ = model.forward(x); // [b, classes], for its BatchNorm updates
    }
    for (bn, m) in model.batch_norms_mut().into_iter().zip(momenta) {
        bn.momentum = m;
    }
    Ok(model.valid())
}

/// Every float tensor of `model`, flattened in module order.
fn flatten(model: &ResNet50) -> Result<Vec<f32>> {
    // Synced: a training model's latest BatchNorm update is pending until then.
    let model = model.valid();
    struct Collect {
        values: Vec<f32>,
        error: Option<String>,
    }
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            match param.val().into_data().convert::<f32>().try_to_vec::<f32>() {
                Ok(v) => self.values.extend(v),
                Err(e) => self.error = Some(format!("{e:?}")),
            }
        }
    }
    let mut collect = Collect {
        values: Vec::with_capacity(float_count(&model)),
        error: None,
    };
    model.visit(&mut collect);
    match collect.error {
        Some(e) => Err(TriscopeError::Compute(format!("reading the weights: {e}"))),
        None => Ok(collect.values),
    }
}

/// Replaces each float tensor by the next values of `values`, in module order.
struct Fill<'a> {
    values: &'a [f32],
    offset: usize,
}

impl ModuleMapper for Fill<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let end = self.offset + n;
        // A short average leaves the rest as it is; `apply` reports the mismatch.
        let Some(values) = self.values.get(self.offset..end) else {
            self.offset = end;
            return Param::from_mapped_value(id, tensor, mapper);
        };
        self.offset = end;
        let device = tensor.device();
        let tensor = Tensor::<D>::from_data(TensorData::new(values.to_vec(), shape), &device);
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    #[derive(serde::Deserialize)]
    struct Fixture {
        decay: f32,
        states: Vec<Vec<f32>>,
        averages: Vec<Vec<f32>>,
    }

    #[test]
    fn the_average_matches_torchs_averaged_model() {
        let text = include_str!("../../../tests/fixtures/ema_torch.json");
        let f: Fixture = serde_json::from_str(text).expect("fixture");
        let mut ema = Ema::new(f.decay);
        for (state, want) in f.states.iter().zip(&f.averages) {
            ema.update_flat(state);
            for (a, b) in ema.average.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
        // Not a copy of the last state: the average remembers the earlier ones.
        let last = f.states.last().expect("states");
        assert!(
            ema.average
                .iter()
                .zip(last)
                .any(|(a, b)| (a - b).abs() > 1e-3)
        );
    }

    #[test]
    fn a_model_round_trips_through_the_average() {
        let device = crate::model::device::ComputeDevice::cpu().device;
        let mut config = ModelConfig::generic(3, 3);
        config.base_width = 4;
        config.resolution = 32;
        let a = ResNet50::init(&config, 1, &device).expect("model a");
        let b = ResNet50::init(&config, 2, &device).expect("model b");
        let n = float_count(&a);
        let mut ema = Ema::new(0.5);
        ema.update(&a).expect("update a");
        assert_eq!(
            flatten(&ema.apply(&b).expect("apply")).expect("flat"),
            flatten(&a).expect("a")
        );
        ema.update(&b).expect("update b");
        let (fa, fb) = (flatten(&a).expect("a"), flatten(&b).expect("b"));
        let mid = flatten(&ema.apply(&a).expect("apply")).expect("flat");
        assert_eq!(mid.len(), n);
        for ((m, x), y) in mid.iter().zip(&fa).zip(&fb) {
            assert!((m - (x + 0.5 * (y - x))).abs() < 1e-7);
        }
        // Saved and read back bit for bit; a wrong length is refused.
        let bytes = ema.to_bytes();
        assert_eq!(Ema::from_bytes(0.5, &bytes, n).expect("read"), ema);
        assert!(Ema::from_bytes(0.5, &bytes, n + 1).is_err());
    }

    /// The stem's recalibrated statistics are the mean over the batches of each batch's
    /// per-channel mean and (biased, as the trainer's) variance of `conv1(normalize(x))`,
    /// computed here with burn's plain convolution; the weights stay as they were.
    #[test]
    fn recalibration_averages_the_batch_statistics() {
        let device = crate::model::device::ComputeDevice::cpu().device;
        let mut config = ModelConfig::generic(3, 3);
        config.base_width = 4;
        config.resolution = 32;
        let model = ResNet50::init(&config, 5, &device).expect("model");
        let mut rng = crate::util::rng::SplitMix64::new(9);
        let shape = [4, 3, 32, 32];
        let batches: Vec<HostBatch> = (0..3)
            .map(|index| HostBatch {
                index,
                pixels: (0..4 * 3 * 32 * 32)
                    .map(|_| rng.next_f32() * (index as f32 + 1.0) / 3.0)
                    .collect(),
                labels: Vec::new(),
                shape,
                lesion: None,
            })
            .collect();
        let channels = 4;
        let (mut mean, mut var) = (vec![0.0f64; channels], vec![0.0f64; channels]);
        for b in &batches {
            let x = Tensor::<4>::from_data(TensorData::new(b.pixels.clone(), shape), &device);
            let y = model.conv1.forward(model.normalize(x)); // [4, w, 16, 16]
            let values = y.into_data().try_to_vec::<f32>().expect("conv1");
            let plane = 16 * 16;
            for c in 0..channels {
                let v: Vec<f64> = (0..4)
                    .flat_map(|i| {
                        let start = (i * channels + c) * plane;
                        values[start..start + plane].iter().map(|&v| f64::from(v))
                    })
                    .collect();
                let m = v.iter().sum::<f64>() / v.len() as f64;
                mean[c] += m / 3.0;
                var[c] += v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64 / 3.0;
            }
        }
        let out = recalibrate_batch_norm(&model, batches.into_iter().map(Ok)).expect("recal");
        let got = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("stat");
        let (got_mean, got_var) = (
            got(out.bn1.running_mean.value()),
            got(out.bn1.running_var.value()),
        );
        for c in 0..channels {
            assert!((f64::from(got_mean[c]) - mean[c]).abs() < 1e-4 * (1.0 + mean[c].abs()));
            assert!((f64::from(got_var[c]) - var[c]).abs() < 1e-4 * (1.0 + var[c]));
        }
        // Every BatchNorm moved off its initial statistics (mean 0); no weight moved, and the
        // model is back in inference mode with its momentum.
        let mut out = out;
        for bn in out.batch_norms_mut() {
            assert!(got(bn.running_mean.value()).iter().any(|v| v.abs() > 1e-6));
            assert_eq!(bn.momentum, 0.1);
            assert!(!bn.training.is_enabled());
        }
        assert_eq!(
            got(out.conv1.weight.val().reshape([-1])),
            got(model.conv1.weight.val().reshape([-1]))
        );
    }
}
