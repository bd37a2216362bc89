//! The training configuration: a YAML file in the shape of the project's seed config, every
//! field defaulted, unknown keys rejected by name, `--set a.b=c` overrides.
//!
//! ```yaml
//! architecture: {name: resnet50, base_width: 64, pretrained: false, weights: null}
//! input: {channels: 3, resolution: 224, normalization: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
//! classifier: {num_classes: 7, dropout: 0.0, global_pool: avg}
//! training: {optimizer: sgd, lr: 0.1, momentum: 0.9, weight_decay: 1e-4, nesterov: true, scheduler: cosine,
//!            warmup_epochs: 5, eta_min: 1e-5, epochs: 100, batch_size: 64, seed: 42, class_weights: inverse_frequency}
//! robustness: {loss_type: trades, beta: 6.0, attack: {type: pgd, eps_linf: 0.031, steps: 10, alpha: 0.008}}
//! data: {dataset: ham10000, root: ../shared/data/ham10000, train_split: train, val_split: val}
//! ```

mod yaml;

pub use yaml::apply_override;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::model::ModelConfig;
use crate::model::config::{ColorConstancy, IMAGENET_MEAN, IMAGENET_STD, MAX_CLASSES, Precision};

/// The whole training configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub architecture: ArchitectureSection,
    pub input: InputSection,
    pub classifier: ClassifierSection,
    pub training: TrainingSection,
    pub robustness: RobustnessSection,
    pub data: DataSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchitectureSection {
    /// Only `resnet50`.
    pub name: String,
    /// Width of the stem and layer1 (64 = torchvision's ResNet-50; 8-32 are narrow variants).
    pub base_width: usize,
    /// Start from `weights` (a Triscope checkpoint or a torchvision safetensors state dict).
    pub pretrained: bool,
    /// The file of pretrained weights (required with `pretrained: true`; nothing is downloaded).
    /// Relative to the config file's folder.
    pub weights: Option<PathBuf>,
}

impl Default for ArchitectureSection {
    fn default() -> Self {
        Self {
            name: "resnet50".into(),
            base_width: 64,
            pretrained: false,
            weights: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputSection {
    /// 1 (greyscale) or 3 (RGB).
    pub channels: usize,
    /// Side of the square input in pixels.
    pub resolution: usize,
    pub normalization: Normalization,
    /// `none` or `shades_of_gray`: applied inside the model, so it travels with the weights.
    pub color_constancy: ColorConstancy,
}

impl Default for InputSection {
    fn default() -> Self {
        Self {
            channels: 3,
            resolution: 224,
            normalization: Normalization::default(),
            color_constancy: ColorConstancy::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Normalization {
    /// Per-channel mean (inside the model; pixels are in [0, 1] outside). A single value is
    /// replicated; three values on a 1-channel model are averaged.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Default for Normalization {
    fn default() -> Self {
        Self {
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierSection {
    /// Outputs of the head; 0 = the dataset's class count.
    pub num_classes: usize,
    /// Class names in output order; empty = the dataset's. Every class in the labels must be
    /// one of them.
    pub class_names: Vec<String>,
    pub dropout: f64,
    /// Only `avg`.
    pub global_pool: String,
}

impl Default for ClassifierSection {
    fn default() -> Self {
        Self {
            num_classes: 0,
            class_names: Vec::new(),
            dropout: 0.0,
            global_pool: "avg".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    AdamW,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Linear warmup from 1% of lr, then cosine annealing to `eta_min`.
    Cosine,
    /// Linear warmup, then constant lr.
    Constant,
}

/// How `training.cam_mask_weight` makes the label's map positive before it takes the map's
/// share outside the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CamMap {
    /// `ReLU`, as Grad-CAM draws it. A map that goes negative everywhere scores 1 (all
    /// outside) with no gradient: fine where the mask covers half the image (HAM10000's
    /// lesions), a trap where it covers a quarter (the lungs), as measured on the TB model.
    #[default]
    Relu,
    /// `softplus`: positive everywhere, so the share keeps a gradient that moves the map's
    /// strongest cells inside the mask even when the whole map is negative.
    Softplus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeights {
    None,
    /// 1 / class frequency in the training split, normalised to mean 1 over classes.
    InverseFrequency,
    /// 1 / sqrt(class frequency), normalised to mean 1 over classes: the rare classes still
    /// count more, but a class 58 times rarer (HAM10000's df against nv) weighs 7.6 times
    /// more, not 58.
    SqrtInverseFrequency,
}

/// The training augmentation's ranges (`training.augmentation`). The defaults suit
/// dermoscopy, where a photograph has no up or down; a chest radiograph has both (set `vflip:
/// false`, and `hflip: false` to keep the heart on its side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentationSection {
    /// Area fraction of the random resized crop, [smallest, largest] in (0, 1].
    pub crop_scale: [f32; 2],
    /// Width / height of the crop, [smallest, largest].
    pub crop_ratio: [f32; 2],
    pub hflip: bool,
    pub vflip: bool,
    /// Largest rotation, in degrees either way.
    pub rotation_deg: f32,
    /// Colour jitter: factors drawn from [1 - x, 1 + x]; hue shifts up to `hue` turns.
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    /// MixUp's `alpha` (each batch's images blended with `lam ~ Beta(alpha, alpha)`; 0 = off).
    /// Clean single-label training only; see `train::mix`.
    pub mixup_alpha: f32,
    /// CutMix's `alpha` (a box of another image pasted in; 0 = off). With both on, each batch
    /// takes one of the two at random.
    pub cutmix_alpha: f32,
    /// Probability that an image's skin outside its lesion mask (grown by a few pixels) is
    /// replaced by another training image's skin before the other augmentations, so that the
    /// surroundings of a lesion carry no sign of its class (0 = off). Needs a dataset with
    /// lesion masks (HAM10000's `masks/`); see `augment::swap_background`.
    pub background_swap: f32,
}

impl Default for AugmentationSection {
    fn default() -> Self {
        Self {
            crop_scale: [0.8, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: true,
            vflip: true,
            rotation_deg: 15.0,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            hue: 0.1,
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            background_swap: 0.0,
        }
    }
}

impl AugmentationSection {
    /// Every augmentation off: the crop is the whole image, nothing flips, turns, recolours,
    /// mixes or swaps, so an image comes out as it went in.
    pub fn identity() -> Self {
        Self {
            crop_scale: [1.0, 1.0],
            crop_ratio: [1.0, 1.0],
            hflip: false,
            vflip: false,
            rotation_deg: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            background_swap: 0.0,
        }
    }

    /// Whether MixUp or CutMix is on.
    pub fn mixes(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0
    }

    /// What is wrong with the ranges, if anything.
    fn problem(&self) -> Option<String> {
        let [s0, s1] = self.crop_scale;
        let [r0, r1] = self.crop_ratio;
        let values = [
            ("crop_scale", s0),
            ("crop_scale", s1),
            ("crop_ratio", r0),
            ("crop_ratio", r1),
            ("rotation_deg", self.rotation_deg),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
            ("hue", self.hue),
            ("mixup_alpha", self.mixup_alpha),
            ("cutmix_alpha", self.cutmix_alpha),
            ("background_swap", self.background_swap),
        ];
        if let Some((name, v)) = values.iter().find(|(_, v)| !v.is_finite()) {
            return Some(format!("{name} must be a finite number, got {v}"));
        }
        if !(0.0 < s0 && s0 <= s1 && s1 <= 1.0) {
            return Some(format!(
                "crop_scale must satisfy 0 < a <= b <= 1, got [{s0}, {s1}]"
            ));
        }
        if !(0.0 < r0 && r0 <= r1) {
            return Some(format!(
                "crop_ratio must satisfy 0 < a <= b, got [{r0}, {r1}]"
            ));
        }
        if !(0.0..=180.0).contains(&self.rotation_deg) {
            return Some(format!(
                "rotation_deg must be in [0, 180], got {}",
                self.rotation_deg
            ));
        }
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Some(format!("{name} must be in [0, 1), got {v}"));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return Some(format!("hue must be in [0, 0.5], got {}", self.hue));
        }
        if !(0.0..=1.0).contains(&self.background_swap) {
            return Some(format!(
                "background_swap is a probability in [0, 1], got {}",
                self.background_swap
            ));
        }
        for (name, v) in [
            ("mixup_alpha", self.mixup_alpha),
            ("cutmix_alpha", self.cutmix_alpha),
        ] {
            if v < 0.0 {
                return Some(format!("{name} must be >= 0 (0 = off), got {v}"));
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub scheduler: SchedulerKind,
    pub warmup_epochs: f64,
    pub eta_min: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub class_weights: ClassWeights,
    /// Label smoothing of the cross-entropy (PyTorch's `label_smoothing`): the target puts
    /// `1 - s` on the true class and spreads `s` evenly over all classes. In [0, 1); 0 = off.
    pub label_smoothing: f64,
    /// Keep an exponential moving average of the weights and BatchNorm statistics with this
    /// decay (about `1 / (1 - d)` steps of memory; timm's `ModelEmaV2`): validation, `best` and
    /// the checkpoint choice use the average, and each epoch also logs the raw weights'
    /// validation (`raw_val_*`). In [0, 1); 0 = off.
    pub ema_decay: f64,
    /// Train the classifier (`fc`) only, on the pooled features of the network as it was
    /// loaded: every other weight and every BatchNorm statistic stays as it is (a linear
    /// probe). For a small set on top of a model trained on a related one.
    pub freeze_backbone: bool,
    /// Weight of a penalty on the share of each training image's class activation map that
    /// falls outside its lesion mask (HAM10000's `masks/`): the map of the image's label at
    /// layer4, `ReLU(sum_k w[y, k] A_k)`, which under global average pooling is layer4's
    /// Grad-CAM up to a factor. Added to the loss of clean and PGD-AT training (on the
    /// attacked images); 0 = off. It trains where the map lies, so a model trained with it is
    /// judged by the audit's faithfulness and other methods, not by its own localisation.
    pub cam_mask_weight: f64,
    /// How that map is made positive: `relu` (the default, Grad-CAM's) or `softplus` (no dead
    /// zone when the map goes negative everywhere; the chest models' choice).
    pub cam_mask_map: CamMap,
    /// Apply the training augmentation (random resized crop, flips, rotation, colour jitter).
    pub augment: bool,
    /// Its ranges.
    pub augmentation: AugmentationSection,
    /// Threads decoding and augmenting images ahead of the model.
    pub workers: usize,
    /// Batches decoded ahead of the model (bounded queue).
    pub prefetch_batches: usize,
    /// Also write `last` every this many steps (0 = at the end of each epoch only).
    pub checkpoint_every_steps: usize,
    /// Write a step line to metrics.jsonl every this many steps.
    pub log_every_steps: usize,
    /// Devices for data parallel training (1 = one device; see `train::parallel`).
    pub devices: usize,
    /// After each validation pass, score the layer4 Grad-CAM of the label on the first this
    /// many validation images (deletion / insertion AUC; energy inside the mask and pointing
    /// game where the data has masks) into the epoch's metrics; 0 = off.
    pub explanation_images: usize,
    /// Deletion and insertion steps of those curves.
    pub explanation_steps: usize,
    /// The arithmetic of the convolutions' products on the CPU: `f32`, or `bf16` (bf16
    /// operands, f32 sums, f32 master weights; on CPUs with AVX512_BF16, f32 with a warning
    /// elsewhere). Ignored on a GPU.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: true,
            scheduler: SchedulerKind::Cosine,
            warmup_epochs: 5.0,
            eta_min: 1e-5,
            epochs: 100,
            batch_size: 64,
            seed: 42,
            class_weights: ClassWeights::InverseFrequency,
            label_smoothing: 0.0,
            ema_decay: 0.0,
            freeze_backbone: false,
            cam_mask_weight: 0.0,
            cam_mask_map: CamMap::Relu,
            augment: true,
            augmentation: AugmentationSection::default(),
            workers: 2,
            prefetch_batches: 4,
            checkpoint_every_steps: 0,
            log_every_steps: 1,
            devices: 1,
            explanation_images: 32,
            explanation_steps: 16,
            precision: Precision::F32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Cross-entropy (BCE for multi-label) on clean images.
    Clean,
    /// Madry et al.: cross-entropy on PGD examples.
    #[serde(alias = "pgd", alias = "madry")]
    PgdAt,
    /// Zhang et al.: CE(f(x), y) + beta * KL(p(x) || p(x')).
    Trades,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RobustnessSection {
    pub loss_type: LossType,
    /// TRADES' trade-off weight.
    pub beta: f64,
    pub attack: AttackSection,
    /// Validation samples attacked each epoch for robust accuracy (0 = none, all = usize::MAX).
    pub val_robust_samples: usize,
}

impl Default for RobustnessSection {
    fn default() -> Self {
        Self {
            loss_type: LossType::Trades,
            beta: 6.0,
            attack: AttackSection::default(),
            val_robust_samples: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttackSection {
    /// Only `pgd` (L-inf).
    #[serde(rename = "type")]
    pub kind: String,
    /// L-inf radius in [0, 1] pixel units (8/255 = 0.031); `epsilon` is the seed config's
    /// older name, still read.
    #[serde(alias = "epsilon")]
    pub eps_linf: f32,
    pub steps: usize,
    /// Step size in pixel units; `step_size` is the older name, still read.
    #[serde(alias = "step_size")]
    pub alpha: f32,
}

impl Default for AttackSection {
    fn default() -> Self {
        Self {
            kind: "pgd".into(),
            eps_linf: 0.031,
            steps: 10,
            alpha: 0.008,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// A name recorded in checkpoints (ham10000, pneumoniamnist, ...) and used in the default
    /// run folder name: letters, digits, `_`, `-` and `.` only (no path).
    pub dataset: String,
    /// Dataset folder or MedMNIST `.npz`, relative to the config file's folder (a `--set
    /// data.root=` override: relative to the working directory).
    pub root: PathBuf,
    pub train_split: String,
    pub val_split: String,
    /// Use at most this many training / validation samples (class-interleaved; 0 = all).
    pub train_limit: usize,
    pub val_limit: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            dataset: "ham10000".into(),
            root: PathBuf::from("../shared/data/ham10000"),
            train_split: "train".into(),
            val_split: "val".into(),
            train_limit: 0,
            val_limit: 0,
        }
    }
}

fn config_error(origin: &Path, msg: impl std::fmt::Display) -> TriscopeError {
    TriscopeError::BadConfig(format!("{}: {msg}", origin.display()))
}

impl TrainConfig {
    /// Check every value; errors name the file and the key.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |m: String| Err(config_error(origin, m));
        let t = &self.training;
        if !is_plain_name(&self.data.dataset) {
            return bad(format!(
                "data.dataset '{}' must be a plain name (letters, digits, '_', '-', '.'; at most \
                 64 characters; no path): it names the default run folder",
                self.data.dataset
            ));
        }
        if self.architecture.name != "resnet50" {
            return bad(format!(
                "architecture.name '{}' is not supported (only resnet50)",
                self.architecture.name
            ));
        }
        if self.architecture.pretrained && self.architecture.weights.is_none() {
            return bad(
                "architecture.pretrained is true but architecture.weights names no file \
                 (nothing is downloaded; give a torchvision .safetensors state dict or a Triscope checkpoint)"
                    .into(),
            );
        }
        if let Some(w) = &self.architecture.weights
            && !w.is_file()
        {
            return bad(format!(
                "architecture.weights {} does not exist",
                w.display()
            ));
        }
        if self.classifier.global_pool != "avg" {
            return bad(format!(
                "classifier.global_pool '{}' is not supported (only avg)",
                self.classifier.global_pool
            ));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad(format!("training.lr must be > 0, got {}", t.lr));
        }
        if t.epochs == 0 {
            return bad("training.epochs must be at least 1, got 0".into());
        }
        if t.batch_size == 0 {
            return bad("training.batch_size must be at least 1, got 0".into());
        }
        if t.explanation_images > 0 && !(2..=1024).contains(&t.explanation_steps) {
            return bad(format!(
                "training.explanation_steps must be in 2..=1024, got {}",
                t.explanation_steps
            ));
        }
        if let Some(problem) = t.augmentation.problem() {
            return bad(format!("training.augmentation: {problem}"));
        }
        if t.augmentation.background_swap > 0.0 && !t.augment {
            return bad("training.augmentation.background_swap is part of the augmentation; it needs training.augment: true".into());
        }
        if !(t.cam_mask_weight.is_finite() && t.cam_mask_weight >= 0.0) {
            return bad(format!(
                "training.cam_mask_weight must be >= 0 (0 = off), got {}",
                t.cam_mask_weight
            ));
        }
        if t.cam_mask_weight > 0.0 {
            if self.robustness.loss_type == LossType::Trades {
                return bad("training.cam_mask_weight applies to clean and PGD-AT training (one forward pass of the trained network); set it to 0 for TRADES".into());
            }
            if t.augmentation.mixes() {
                return bad("training.cam_mask_weight needs each image's own lesion; MixUp / CutMix mix them: set mixup_alpha and cutmix_alpha to 0".into());
            }
            if t.freeze_backbone {
                return bad("training.cam_mask_weight moves the features' map; a frozen backbone cannot: set it to 0 with training.freeze_backbone".into());
            }
        }
        if t.augmentation.mixes() {
            if !t.augment {
                return bad("training.augmentation.mixup_alpha / cutmix_alpha mix the augmented batches; they need training.augment: true".into());
            }
            if self.robustness.loss_type != LossType::Clean {
                return bad("training.augmentation.mixup_alpha / cutmix_alpha apply to clean training (robustness.loss_type: clean); set them to 0 for adversarial training".into());
            }
        }
        if !(t.eta_min.is_finite() && t.eta_min >= 0.0 && t.eta_min <= t.lr) {
            return bad(format!(
                "training.eta_min must be in [0, lr = {}], got {}",
                t.lr, t.eta_min
            ));
        }
        if !(t.warmup_epochs.is_finite() && t.warmup_epochs >= 0.0) {
            return bad(format!(
                "training.warmup_epochs must be >= 0, got {}",
                t.warmup_epochs
            ));
        }
        if !(0.0..1.0).contains(&t.momentum) {
            return bad(format!(
                "training.momentum must be in [0, 1), got {}",
                t.momentum
            ));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return bad(format!(
                "training.weight_decay must be >= 0, got {}",
                t.weight_decay
            ));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return bad(format!(
                "training.label_smoothing must be in [0, 1), got {}",
                t.label_smoothing
            ));
        }
        if !(0.0..1.0).contains(&t.ema_decay) {
            return bad(format!(
                "training.ema_decay must be in [0, 1) (0 = off), got {}",
                t.ema_decay
            ));
        }
        if t.nesterov && t.optimizer == OptimizerKind::Sgd && t.momentum == 0.0 {
            return bad("training.nesterov needs training.momentum > 0".into());
        }
        if t.workers == 0 || t.workers > 64 {
            return bad(format!(
                "training.workers must be in 1..=64, got {}",
                t.workers
            ));
        }
        if t.prefetch_batches == 0 {
            return bad("training.prefetch_batches must be at least 1".into());
        }
        if t.log_every_steps == 0 {
            return bad("training.log_every_steps must be at least 1".into());
        }
        if t.devices == 0 {
            return bad("training.devices must be at least 1".into());
        }
        let r = &self.robustness;
        if self.robustness.attack.kind != "pgd" {
            return bad(format!(
                "robustness.attack.type '{}' is not supported (only pgd, L-inf)",
                r.attack.kind
            ));
        }
        if r.loss_type != LossType::Clean {
            if !(r.attack.eps_linf.is_finite() && (0.0..=1.0).contains(&r.attack.eps_linf)) {
                return bad(format!(
                    "robustness.attack.eps_linf must be in [0, 1] (pixel scale, 8/255 = 0.031), got {}",
                    r.attack.eps_linf
                ));
            }
            if r.attack.steps == 0 {
                return bad("robustness.attack.steps must be at least 1".into());
            }
            if !(r.attack.alpha.is_finite() && r.attack.alpha > 0.0) {
                return bad(format!(
                    "robustness.attack.alpha must be > 0, got {}",
                    r.attack.alpha
                ));
            }
        }
        if r.loss_type == LossType::Trades && !(r.beta.is_finite() && r.beta >= 0.0) {
            return bad(format!("robustness.beta must be >= 0, got {}", r.beta));
        }
        if !self.data.root.exists() {
            return bad(format!(
                "data.root {} does not exist",
                self.data.root.display()
            ));
        }
        // The model-side checks (channels, resolution, width, normalisation, dropout).
        let mut probe = self.model_config(vec!["c".into()])?;
        // One name per class, but never more than a valid count: `validate` refuses a larger
        // count, and 755 million names would exhaust memory first (found by fuzzing).
        probe.class_names = vec!["c".into(); probe.num_classes.min(MAX_CLASSES)];
        probe.validate().map_err(|e| config_error(origin, e))?;
        Ok(())
    }

    /// The model config for `class_names` (the classifier's names when given, else the
    /// dataset's).
    pub fn model_config(&self, dataset_classes: Vec<String>) -> Result<ModelConfig> {
        let class_names = if self.classifier.class_names.is_empty() {
            dataset_classes
        } else {
            self.classifier.class_names.clone()
        };
        let num_classes = if self.classifier.num_classes == 0 {
            class_names.len()
        } else {
            self.classifier.num_classes
        };
        let channels = self.input.channels;
        // A single value serves RGB; any other channel count is refused by `validate`, and is
        // not expanded first (3.7 billion channels exhausted memory; found by fuzzing).
        let fit = |v: &[f32]| -> Vec<f32> {
            match (v.len(), channels) {
                (1, 3) => vec![v[0]; 3],
                (3, 1) => vec![v.iter().sum::<f32>() / 3.0],
                _ => v.to_vec(),
            }
        };
        Ok(ModelConfig {
            architecture: self.architecture.name.clone(),
            num_classes,
            in_channels: channels,
            base_width: self.architecture.base_width,
            dropout: self.classifier.dropout,
            resolution: self.input.resolution,
            mean: fit(&self.input.normalization.mean),
            std: fit(&self.input.normalization.std),
            class_names,
            multi_label: false,
            color_constancy: self.input.color_constancy,
        })
    }
}

/// Letters, digits, `_`, `-`, `.`; not `.` or `..`; 1 to 64 characters.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests;
