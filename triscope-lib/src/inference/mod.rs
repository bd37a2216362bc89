//! A loaded model on a device, answering in plain data: predictions and explanations.
//!
//! This is the boundary later front ends (CLI, GUI workers) use: images go in as
//! [`PixelImage`]s, results come out as [`Prediction`]s and [`GradCamMap`]s; no tensor leaves.

pub mod calibrate;
pub mod ood;
pub mod tta;

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::attack::Classify;
use crate::error::{Result, TriscopeError};
use crate::explain::attribution::{AttributionMap, AttributionOptions, Method, attribute_with};
use crate::explain::gradcam::{GradCamMap, TargetClass, grad_cam};
use crate::inference::ood::{OodScore, OodStats};
use crate::io::imaging::{LoadedImage, PixelImage, ResizeMode, load_image};
use crate::io::weights::{CheckpointMetadata, LoadedModel, load_checkpoint, load_checkpoint_bytes};
use crate::model::device::ComputeDevice;
use crate::model::{LayerId, ModelConfig, ResNet50};
use crate::util::numeric::argmax;

/// The default model shipped in `models/` and compiled into the binary.
pub const DEFAULT_MODEL_NAME: &str = "models/ham10000_default.safetensors";
static DEFAULT_MODEL_BYTES: &[u8] = include_bytes!("../../../models/ham10000_default.safetensors");

/// The embedded model's card (see [`model_card`]), compiled in beside it.
static DEFAULT_MODEL_CARD: &str = include_str!("../../../models/ham10000_default.report/card.txt");

/// A bundled model's card: plain text on how it was trained and for how long, its test scores
/// (balanced accuracy beside accuracy) and the `triscope eval` commands that measure them. The
/// embedded model carries its own; a file `NAME.safetensors` has one when
/// `NAME.report/card.txt` sits beside it (the layout of `models/`). `None` otherwise: a card
/// is documentation, and a checkpoint without one is still a checkpoint.
pub fn model_card(source: &ModelSource) -> Option<String> {
    match source {
        ModelSource::Embedded => Some(DEFAULT_MODEL_CARD.to_string()),
        ModelSource::File(path) => {
            let stem = path.file_stem()?.to_string_lossy();
            let card = path
                .with_file_name(format!("{stem}.report"))
                .join("card.txt");
            std::fs::read_to_string(card).ok()
        }
    }
}

/// The embedded default model (the bytes of [`DEFAULT_MODEL_NAME`] compiled into the binary),
/// loaded onto `device`.
pub fn load_embedded_model(device: &Device) -> Result<LoadedModel> {
    load_checkpoint_bytes(DEFAULT_MODEL_BYTES, Path::new(DEFAULT_MODEL_NAME), device)
}

/// A multi-label model calls a finding present at this sigmoid probability or above: the one
/// rule behind its positive findings, its metrics and the goal an attack on it flips.
pub const FINDING_THRESHOLD: f32 = 0.5;

/// One class's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub index: usize,
    pub name: String,
    /// Softmax probability, or the sigmoid of the finding for multi-label models.
    pub probability: f32,
    pub logit: f32,
}

/// A model's answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub class_index: usize,
    pub class_name: String,
    /// Probability of the top class.
    pub confidence: f32,
    /// Every class, in the model's order.
    pub scores: Vec<ClassScore>,
    /// Independent sigmoids per finding instead of one softmax.
    pub multi_label: bool,
    /// Findings with probability >= [`FINDING_THRESHOLD`] (multi-label models only).
    pub positive_findings: Vec<String>,
}

impl Prediction {
    /// Each finding's decision as 0 or 1 (present at [`FINDING_THRESHOLD`]): what an attack
    /// on a multi-label model tries to flip when there is no ground truth.
    pub fn finding_decisions(&self) -> Vec<f32> {
        self.scores
            .iter()
            .map(|s| f32::from(u8::from(s.probability >= FINDING_THRESHOLD)))
            .collect()
    }
}

/// A prediction with its Grad-CAM, from one forward and one backward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub prediction: Prediction,
    pub gradcam: GradCamMap,
}

/// A prediction with an attribution map of any [`Method`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionResult {
    pub prediction: Prediction,
    pub attribution: AttributionMap,
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelSource {
    Embedded,
    File(PathBuf),
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => write!(f, "embedded default ({DEFAULT_MODEL_NAME})"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a model's checkpoint says it was trained on, from its `dataset` metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// Colour photographs of skin (HAM10000, ISIC, DermaMNIST).
    Dermoscopy,
    /// Grey chest radiographs (ChestX-ray14, PneumoniaMNIST).
    Radiograph,
}

impl Modality {
    /// From a checkpoint's dataset name; `None` when it does not say.
    pub fn of_dataset(dataset: &str) -> Option<Self> {
        let d = dataset.to_ascii_lowercase();
        if ["ham10000", "isic", "derma"].iter().any(|k| d.contains(k)) {
            Some(Self::Dermoscopy)
        } else if ["chest", "cxr", "nih", "pneumonia"]
            .iter()
            .any(|k| d.contains(k))
        {
            Some(Self::Radiograph)
        } else {
            None
        }
    }
}

impl Modality {
    /// What a model was made for: its dataset's modality, else a 1-channel model is a
    /// radiograph model; `None` when nothing says.
    pub fn of_model(config: &ModelConfig, dataset: Option<&str>) -> Option<Self> {
        dataset
            .and_then(Self::of_dataset)
            .or((config.in_channels == 1).then_some(Self::Radiograph))
    }

    /// The modality an image of this colour belongs to among the two Triscope knows.
    pub fn of_image(grey: bool) -> Self {
        if grey {
            Self::Radiograph
        } else {
            Self::Dermoscopy
        }
    }
}

/// A checkpoint in a folder of models, with what its header says: plain data for menus.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub path: PathBuf,
    /// The file name without `.safetensors`.
    pub name: String,
    pub dataset: Option<String>,
    pub modality: Option<Modality>,
}

/// The `.safetensors` files of `dir`, sorted by name, each with the dataset and modality its
/// header names (read from the file's first bytes only, [`crate::io::weights::peek_header`]). A
/// file whose header cannot be read is listed without them: loading it says why.
pub fn list_models(dir: &Path) -> Vec<ModelEntry> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let header = crate::io::weights::peek_header(&path).ok();
            let dataset = header
                .as_ref()
                .and_then(|h| h.metadata.as_ref()?.dataset.clone());
            let modality = header
                .as_ref()
                .and_then(|h| Modality::of_model(h.config.as_ref()?, dataset.as_deref()));
            ModelEntry {
                name: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
                path,
                dataset,
                modality,
            }
        })
        .collect()
}

/// The models of `entries` made for `modality`, those trained on `dataset` first (e.g. a
/// bundled sample's folder name).
pub fn models_for<'a>(
    entries: &'a [ModelEntry],
    modality: Modality,
    dataset: Option<&str>,
) -> Vec<&'a ModelEntry> {
    let mut out: Vec<&ModelEntry> = entries
        .iter()
        .filter(|e| e.modality == Some(modality))
        .collect();
    out.sort_by_key(|e| e.dataset.as_deref() != dataset || dataset.is_none());
    out
}

/// Why an image does not fit what a model was trained on (a grey radiograph given to a
/// dermoscopy model, or a colour photograph to a radiograph model): such a prediction means
/// nothing, and the one reading it must be told. `None` when the image fits, or when the
/// checkpoint does not say what it was trained on.
pub fn modality_warning(dataset: Option<&str>, image_is_grey: bool) -> Option<String> {
    let dataset = dataset?;
    match (Modality::of_dataset(dataset)?, image_is_grey) {
        (Modality::Dermoscopy, true) => Some(format!(
            "this model was trained on colour dermoscopy photographs ({dataset}) and this image \
             is greyscale: its prediction does not mean anything"
        )),
        (Modality::Radiograph, false) => Some(format!(
            "this model was trained on grey chest radiographs ({dataset}) and this image is in \
             colour: its prediction does not mean anything"
        )),
        _ => None,
    }
}

/// One image's channel means of layer1 to layer4 (`[layer][channels]`).
pub type LayerMeans = Vec<Vec<f32>>;

/// A model in inference mode on a device.
pub struct Classifier {
    model: ResNet50,
    device: ComputeDevice,
    pub metadata: CheckpointMetadata,
    pub source: ModelSource,
    pub resize_mode: ResizeMode,
    /// The training distribution in the embedding (`triscope ood`), if the weights file
    /// carries it.
    pub ood: Option<OodStats>,
    /// Predictions and evaluations average the eight dihedral views ([`crate::inference::tta`]);
    /// explanations and the out-of-distribution score stay on the image as it is.
    pub tta: bool,
}

impl Classifier {
    /// Load a checkpoint, or the embedded default model when `path` is `None`.
    pub fn load(path: Option<&Path>, device: ComputeDevice) -> Result<Self> {
        let (loaded, source) = match path {
            Some(p) => (
                load_checkpoint(p, &device.device)?,
                ModelSource::File(p.to_path_buf()),
            ),
            None => (load_embedded_model(&device.device)?, ModelSource::Embedded),
        };
        let ood =
            OodStats::from_extras(&loaded.extra_header, &loaded.extra_blobs).map_err(|e| {
                TriscopeError::BadCheckpoint {
                    path: loaded.path.clone(),
                    reason: e.to_string(),
                }
            })?;
        let (model, metadata) = (loaded.model, loaded.metadata);
        let mut classifier = Self::from_model(model, metadata, source, device);
        classifier.ood = ood;
        Ok(classifier)
    }

    /// Wrap a model already built (it is switched to inference mode).
    pub fn from_model(
        model: ResNet50,
        metadata: CheckpointMetadata,
        source: ModelSource,
        device: ComputeDevice,
    ) -> Self {
        let model = model.to_device(&device.device).valid();
        Self {
            model,
            device,
            metadata,
            source,
            resize_mode: ResizeMode::default(),
            ood: None,
            tta: false,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    pub fn device(&self) -> &ComputeDevice {
        &self.device
    }

    pub fn model(&self) -> &ResNet50 {
        &self.model
    }

    /// What predictions and evaluations run: the model, or its dihedral average with `tta`.
    pub fn classify(&self) -> Box<dyn Classify + '_> {
        if self.tta {
            Box::new(crate::inference::tta::Dihedral { model: &self.model })
        } else {
            Box::new(&self.model)
        }
    }

    /// [`modality_warning`] for this model and an image that is greyscale or not
    /// ([`LoadedImage::grey`], [`crate::io::imaging::looks_grey`]).
    pub fn input_warning(&self, image_is_grey: bool) -> Option<String> {
        modality_warning(self.metadata.dataset.as_deref(), image_is_grey)
    }

    /// Load an image file the way this model wants it.
    pub fn load_image(&self, path: &Path) -> Result<LoadedImage> {
        let c = self.config();
        load_image(path, c.in_channels, c.resolution, self.resize_mode)
    }

    /// `[batch, C, R, R]` on the model's device; each image must already be at the model's
    /// channels and resolution.
    pub(crate) fn batch_tensor(&self, images: &[&PixelImage]) -> Result<Tensor<4>> {
        let c = self.config();
        let (ch, res) = (c.in_channels, c.resolution);
        let mut data = Vec::with_capacity(images.len() * ch * res * res);
        for img in images {
            if img.channels != ch || img.height != res || img.width != res {
                return Err(TriscopeError::InvalidArgument(format!(
                    "image is {}x{}x{}, the model takes {ch}x{res}x{res}",
                    img.channels, img.height, img.width
                )));
            }
            data.extend_from_slice(&img.data);
        }
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), ch, res, res]),
            &self.device.device,
        ))
    }

    /// One pass over prepared images: each image's logits and the channel means of layer1 to
    /// layer4 (`[image][layer][channels]`), what the out-of-distribution score reads.
    fn logits_and_layer_means(
        &self,
        images: &[&PixelImage],
    ) -> Result<(Vec<Vec<f32>>, Vec<LayerMeans>)> {
        if images.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let x = self.batch_tensor(images)?; // [batch, C, R, R]
        let taps = self.model.forward_taps(x.clone(), None);
        let logits = if self.tta {
            crate::model::host::logit_rows(self.classify().logits(x))? // [batch][classes]
        } else {
            crate::model::host::logit_rows(taps.logits)?
        };
        let mut features = vec![Vec::with_capacity(4); images.len()];
        for layer in taps.layers {
            let [b, c, _, _] = layer.dims();
            let means = crate::model::host::logit_rows(layer.mean_dims(&[2, 3]).reshape([b, c]))?; // [b][c]
            for (f, m) in features.iter_mut().zip(means) {
                f.push(m);
            }
        }
        Ok((logits, features))
    }

    /// The channel means of layer1 to layer4 of each prepared image (`[image][layer][channels]`).
    pub fn layer_features(&self, images: &[&PixelImage]) -> Result<Vec<LayerMeans>> {
        Ok(self.logits_and_layer_means(images)?.1)
    }

    /// `rows` of every image of `dataset`, `batch_size` images at a time, loaded the way this
    /// model wants them; `cancel` is checked before each batch.
    pub fn dataset_rows<T>(
        &self,
        dataset: &crate::io::data::Dataset,
        batch_size: usize,
        cancel: &std::sync::atomic::AtomicBool,
        rows: impl Fn(&Self, &[&PixelImage]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let cfg = self.config();
        let mut out = Vec::with_capacity(dataset.len());
        let indices: Vec<usize> = (0..dataset.len()).collect();
        for chunk in indices.chunks(batch_size.max(1)) {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(TriscopeError::Cancelled);
            }
            let images = chunk
                .iter()
                .map(|&i| dataset.load(i, cfg.in_channels, cfg.resolution, self.resize_mode))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<_> = images.iter().collect();
            out.extend(rows(self, &refs)?);
        }
        Ok(out)
    }

    /// Predict a batch of prepared images, each with its out-of-distribution score where the
    /// model carries the statistics (one pass).
    pub fn predict_with_ood(
        &self,
        images: &[&PixelImage],
    ) -> Result<Vec<(Prediction, Option<OodScore>)>> {
        let (logits, features) = self.logits_and_layer_means(images)?;
        logits
            .iter()
            .zip(&features)
            .map(|(l, f)| Ok((self.prediction_from_logits(l), self.ood_score(f)?)))
            .collect()
    }

    /// An image's out-of-distribution score from its layer means, `None` where the model
    /// carries no statistics.
    pub fn ood_score(&self, layer_means: &[Vec<f32>]) -> Result<Option<OodScore>> {
        self.ood.as_ref().map(|s| s.score(layer_means)).transpose()
    }

    /// Predict a batch of prepared images.
    pub fn predict(&self, images: &[&PixelImage]) -> Result<Vec<Prediction>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.batch_tensor(images)?; // [batch, C, R, R]
        let logits = self.classify().logits(x); // [batch, classes]
        let n = self.config().num_classes;
        let flat = crate::model::host::values(logits, "logits")?;
        Ok(flat
            .chunks(n)
            .map(|row| self.prediction_from_logits(row))
            .collect())
    }

    /// Turn one row of logits into a [`Prediction`] (softmax or per-finding sigmoid).
    pub fn prediction_from_logits(&self, logits: &[f32]) -> Prediction {
        let cfg = self.config();
        let probs = probabilities(logits, cfg.multi_label);
        let top = argmax(&probs);
        let scores: Vec<ClassScore> = probs
            .iter()
            .zip(logits)
            .enumerate()
            .map(|(i, (&p, &l))| ClassScore {
                index: i,
                name: cfg.class_names[i].clone(),
                probability: p,
                logit: l,
            })
            .collect();
        let positive_findings = if cfg.multi_label {
            scores
                .iter()
                .filter(|s| s.probability >= FINDING_THRESHOLD)
                .map(|s| s.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        Prediction {
            class_index: top,
            class_name: cfg.class_names[top].clone(),
            confidence: probs[top],
            scores,
            multi_label: cfg.multi_label,
            positive_findings,
        }
    }

    /// Prediction and Grad-CAM on `layer` for one image, in one forward + backward pass.
    pub fn explain(
        &self,
        image: &PixelImage,
        layer: LayerId,
        target: TargetClass,
    ) -> Result<Explanation> {
        let x = self.batch_tensor(&[image])?;
        let batch = grad_cam(&self.model, x, layer, target)?;
        let prediction = self.prediction_from_logits(&batch.logits[0]);
        let gradcam = batch
            .maps
            .into_iter()
            .next()
            .ok_or_else(|| TriscopeError::Compute("Grad-CAM returned no map".into()))?;
        Ok(Explanation {
            prediction,
            gradcam,
        })
    }
}

impl Classifier {
    /// Prediction and an attribution map of `method` for one image (the prediction comes
    /// from the logits of the method's own forward pass).
    pub fn attribute(
        &self,
        image: &PixelImage,
        method: Method,
        target: TargetClass,
        options: &AttributionOptions,
    ) -> Result<AttributionResult> {
        let never = std::sync::atomic::AtomicBool::new(false);
        self.attribute_with(image, method, target, options, &mut |_, _| {}, &never)
    }

    /// [`Classifier::attribute`] with `progress(done, total)` model evaluations and a cancel
    /// flag checked between batches (see [`attribute_with`]).
    pub fn attribute_with(
        &self,
        image: &PixelImage,
        method: Method,
        target: TargetClass,
        options: &AttributionOptions,
        progress: &mut dyn FnMut(usize, usize),
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<AttributionResult> {
        let x = self.batch_tensor(&[image])?; // [1, C, R, R]
        let attribution =
            attribute_with(&self.model, x, method, target, options, progress, cancel)?
                .into_iter()
                .next()
                .ok_or_else(|| TriscopeError::Compute(format!("{method} returned no map")))?;
        let prediction = self.prediction_from_logits(&attribution.logits);
        Ok(AttributionResult {
            prediction,
            attribution,
        })
    }
}

/// Softmax over classes, or an independent sigmoid per finding.
pub fn probabilities(logits: &[f32], multi_label: bool) -> Vec<f32> {
    if multi_label {
        crate::util::numeric::sigmoid(logits)
    } else {
        crate::util::numeric::softmax(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modality_comes_from_the_dataset_name() {
        for d in [
            "ham10000",
            "HAM10000 (train split)",
            "dermamnist",
            "ISIC 2018",
        ] {
            assert_eq!(Modality::of_dataset(d), Some(Modality::Dermoscopy), "{d}");
        }
        for d in ["pneumoniamnist", "kermany-cxr", "nih-cxr14", "ChestX-ray14"] {
            assert_eq!(Modality::of_dataset(d), Some(Modality::Radiograph), "{d}");
        }
        assert_eq!(Modality::of_dataset("my-folder"), None);
        // Warned only where the image and the training data disagree.
        assert!(modality_warning(Some("ham10000"), true).is_some());
        assert!(modality_warning(Some("ham10000"), false).is_none());
        assert!(modality_warning(Some("pneumoniamnist"), false).is_some());
        assert!(modality_warning(Some("pneumoniamnist"), true).is_none());
        assert!(modality_warning(Some("my-folder"), true).is_none());
        assert!(modality_warning(None, true).is_none());
    }
}
