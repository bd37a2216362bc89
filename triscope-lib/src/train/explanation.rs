//! Explanation quality tracked per epoch (`training.explanation_images`): after each
//! validation pass, the layer4 Grad-CAM of each image's label on a fixed subset of the
//! validation split (each class in turn, in the split's order), scored by RISE deletion and insertion AUC and, where
//! the data set has masks, by how much of the map's positive energy lies inside the region
//! (energy pointing game) and whether its peak does (pointing game). Written into the epoch's
//! line of `metrics.jsonl` beside loss and accuracy.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use crate::error::{Result, TriscopeError};
use crate::explain::faithfulness::{FaithfulnessOptions, faithfulness};
use crate::explain::gradcam::{TargetClass, grad_cam};
use crate::explain::quality::region_energy;
use crate::io::data::{Dataset, Label};
use crate::io::imaging::{PixelImage, ResizeMode};
use crate::io::regions::RegionSource;
use crate::model::{LayerId, ModelConfig, ResNet50};

/// One epoch's explanation quality (means over the subset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationQuality {
    /// Validation images explained (the same every epoch, the classes in turn).
    pub images: usize,
    /// RISE deletion AUC of the label's probability as the map's top pixels are removed first
    /// (lower: the map points at what the model needs).
    pub deletion_auc: f64,
    /// Insertion AUC from a blurred image (higher is better).
    pub insertion_auc: f64,
    /// Images with a ground-truth region (lesion or lung mask).
    pub masked_images: usize,
    /// Mean share of the map's positive energy inside the region (energy pointing game).
    pub energy_inside: Option<f64>,
    /// Mean share of the image the regions cover: what a uniform map scores.
    pub region_fraction: Option<f64>,
    /// Share of maps whose peak lies inside the region (pointing game).
    pub pointing_hit_rate: Option<f64>,
}

/// The fixed subset and how to score it.
pub struct ExplanationProbe {
    images: Vec<PixelImage>,
    /// The class explained, in model outputs: the label (multi-label: its first finding).
    classes: Vec<usize>,
    masks: Vec<Option<Vec<bool>>>,
    options: FaithfulnessOptions,
}

impl ExplanationProbe {
    /// The probe `config.training` asks for on the run's validation split.
    pub fn for_run(
        config: &TrainConfig,
        val: &Dataset,
        class_map: &[usize],
        model: &ModelConfig,
    ) -> Result<Option<Self>> {
        let t = &config.training;
        Self::from_split(
            val,
            class_map,
            model,
            t.explanation_images,
            t.explanation_steps,
        )
    }

    /// `count` validation images with a class to explain (multi-label: at least one finding),
    /// the classes in turn in the split's order, their masks where `val` has them, and curves
    /// of `steps` deletion steps.
    /// `None` when `count` is 0.
    pub fn from_split(
        val: &Dataset,
        class_map: &[usize],
        model: &ModelConfig,
        count: usize,
        steps: usize,
    ) -> Result<Option<Self>> {
        if count == 0 {
            return Ok(None);
        }
        let (c, r) = (model.in_channels, model.resolution);
        let regions = RegionSource::for_dataset(val)?;
        let mut probe = Self {
            images: Vec::new(),
            classes: Vec::new(),
            masks: Vec::new(),
            options: FaithfulnessOptions {
                pixels_per_step: Some((r * r).div_ceil(steps.max(1))),
                ..FaithfulnessOptions::default()
            },
        };
        // The split's order taken class by class in turn (the first image of each class,
        // then the second, ...), so that a majority class does not fill the subset.
        let mut by_class: Vec<Vec<(usize, usize)>> = vec![Vec::new(); model.num_classes];
        for (i, sample) in val.samples.iter().enumerate() {
            let class = match &sample.label {
                Label::Class(k) => class_map.get(*k).copied(),
                Label::Findings(f) => f.iter().position(|v| *v > 0.5),
            };
            if let Some(class) = class.filter(|c| *c < model.num_classes) {
                by_class[class].push((i, class));
            }
        }
        let longest = by_class.iter().map(Vec::len).max().unwrap_or(0);
        let order = (0..longest).flat_map(|k| by_class.iter().filter_map(move |v| v.get(k)));
        for &(i, class) in order.take(count) {
            let sample = &val.samples[i];
            let mask = match (&regions, sample.path()) {
                (Some(src), Some(path)) => src
                    .regions(path, r, ResizeMode::ShorterSideCrop)?
                    .into_iter()
                    .next()
                    .map(|reg| reg.mask)
                    .filter(|m| m.iter().any(|v| *v)),
                _ => None,
            };
            probe
                .images
                .push(val.load(i, c, r, ResizeMode::ShorterSideCrop)?);
            probe.classes.push(class);
            probe.masks.push(mask);
        }
        Ok((!probe.images.is_empty()).then_some(probe))
    }

    /// Score `model` (in inference mode, on `device`).
    pub fn measure(
        &self,
        model: &ResNet50,
        device: &Device,
        cancel: &AtomicBool,
    ) -> Result<ExplanationQuality> {
        let (mut deletion, mut insertion) = (0.0, 0.0);
        let (mut energy, mut fraction, mut hits, mut masked) = (0.0, 0.0, 0usize, 0usize);
        for ((image, &class), mask) in self.images.iter().zip(&self.classes).zip(&self.masks) {
            if cancel.load(Ordering::Relaxed) {
                return Err(TriscopeError::Cancelled);
            }
            let (c, h, w) = (image.channels, image.height, image.width);
            let x =
                Tensor::<4>::from_data(TensorData::new(image.data.clone(), [1, c, h, w]), device);
            let cam = grad_cam(model, x, LayerId::Layer4, TargetClass::Index(class))?
                .maps
                .into_iter()
                .next()
                .ok_or_else(|| TriscopeError::Compute("Grad-CAM returned no map".into()))?;
            let f = faithfulness(model, device, image, &cam.map, class, &self.options)?;
            deletion += f.deletion_auc;
            insertion += f.insertion_auc;
            if let Some(mask) = mask {
                let e = region_energy(&cam.map, mask, cam.width)?;
                // A map without positive energy has none inside.
                energy += if e.energy_inside.is_finite() {
                    e.energy_inside
                } else {
                    0.0
                };
                fraction += e.region_fraction;
                hits += usize::from(e.peak_inside);
                masked += 1;
            }
        }
        let n = self.images.len().max(1) as f64;
        let over_masked = |v: f64| (masked > 0).then(|| v / masked as f64);
        Ok(ExplanationQuality {
            images: self.images.len(),
            deletion_auc: deletion / n,
            insertion_auc: insertion / n,
            masked_images: masked,
            energy_inside: over_masked(energy),
            region_fraction: over_masked(fraction),
            pointing_hit_rate: over_masked(hits as f64),
        })
    }
}
