//! Model configuration: what a checkpoint carries so that it can be rebuilt exactly.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};

/// ImageNet channel means, the default normalisation for 3-channel models.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The seven HAM10000 / ISIC 2018 Task 3 diagnoses, in the order of the model's outputs.
pub const HAM10000_CLASSES: [&str; 7] = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"];

/// The fourteen ChestX-ray14 findings, in the order of the model's outputs.
pub const CHESTXRAY14_FINDINGS: [&str; 14] = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
];

/// Everything needed to rebuild a ResNet-50 and feed it: architecture and input contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Architecture name; only `resnet50` exists.
    #[serde(default = "default_arch")]
    pub architecture: String,
    /// Number of outputs of the linear head.
    pub num_classes: usize,
    /// 1 (greyscale, e.g. X-ray) or 3 (RGB).
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    /// Width of the stem and of layer1 (64 in torchvision); narrower models keep the structure.
    #[serde(default = "default_base_width")]
    pub base_width: usize,
    /// Dropout before the head (training only).
    #[serde(default)]
    pub dropout: f64,
    /// Side of the square input in pixels.
    #[serde(default = "default_resolution")]
    pub resolution: usize,
    /// Per-channel mean subtracted inside the forward (pixels are in [0, 1] outside the model).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided inside the forward.
    pub std: Vec<f32>,
    /// Name of each output.
    pub class_names: Vec<String>,
    /// Independent sigmoid per output (ChestX-ray14 findings) instead of one softmax.
    #[serde(default)]
    pub multi_label: bool,
    /// Colour constancy inside the forward, before the normalisation (left out of the file
    /// when none, so that older models' configs stay byte for byte).
    #[serde(default, skip_serializing_if = "ColorConstancy::is_none")]
    pub color_constancy: ColorConstancy,
}

/// Minkowski norm of Shades of Gray, as Finlayson & Trezzi (2004) and the ISIC 2018-2019
/// winning entries used it.
pub const SHADES_OF_GRAY_P: f32 = 6.0;

/// Colour constancy applied by the model itself, so that every path (predict, eval, explain,
/// attacks, the audit, the app) sees the same transform and attacks stay defined on the
/// displayed image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorConstancy {
    #[default]
    None,
    /// Shades of Gray with p = [`SHADES_OF_GRAY_P`]: each image's illuminant estimate is made
    /// grey (see [`crate::model::shades_of_gray`]).
    ShadesOfGray,
}

impl ColorConstancy {
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }

    /// For `info`, model cards and the app.
    pub fn describe(&self) -> String {
        match self {
            Self::None => "none".to_string(),
            Self::ShadesOfGray => format!("Shades of Gray (p = {SHADES_OF_GRAY_P})"),
        }
    }
}

/// The arithmetic of the CPU fast path's convolution products. Not a property of a model:
/// weights are stored and updated in f32 either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// bf16 operands (rounded to nearest even), f32 sums, on CPUs with AVX512_BF16; f32
    /// master weights, activations, BatchNorm and optimizer state.
    Bf16,
}

impl crate::util::choice::Choice for Precision {
    const KIND: &'static str = "precision";
    const ALL: &'static [Self] = &[Self::F32, Self::Bf16];
    fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = TriscopeError;
    fn from_str(s: &str) -> Result<Self> {
        crate::util::choice::parse(s)
    }
}

impl Precision {
    /// What runs on a CPU that has (`bf16_supported`) or lacks bf16 dot products, and the
    /// line that tells the user when that is not what they asked for.
    pub fn resolve(self, bf16_supported: bool) -> (Self, Option<String>) {
        match self {
            Self::Bf16 if !bf16_supported => (
                Self::F32,
                Some(
                    "this CPU has no AVX512_BF16 (bf16 dot products), or TRISCOPE_BF16=0 \
                     refuses them: running in f32"
                        .to_string(),
                ),
            ),
            other => (other, None),
        }
    }

    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }
}

fn default_arch() -> String {
    "resnet50".to_string()
}
fn default_channels() -> usize {
    3
}
fn default_base_width() -> usize {
    64
}
fn default_resolution() -> usize {
    224
}

/// Most classes a model may declare (the head is allocated from it before loading).
pub const MAX_CLASSES: usize = 100_000;

impl ModelConfig {
    /// A 3-channel, 7-class HAM10000 model at full width and 224 pixels.
    pub fn ham10000() -> Self {
        Self {
            architecture: default_arch(),
            num_classes: HAM10000_CLASSES.len(),
            in_channels: 3,
            base_width: 64,
            dropout: 0.0,
            resolution: 224,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            class_names: HAM10000_CLASSES.iter().map(|s| s.to_string()).collect(),
            multi_label: false,
            color_constancy: ColorConstancy::None,
        }
    }

    /// A 1-channel, 14-finding multi-label ChestX-ray14 model.
    pub fn chestxray14() -> Self {
        Self {
            in_channels: 1,
            num_classes: CHESTXRAY14_FINDINGS.len(),
            mean: gray_stats(&IMAGENET_MEAN),
            std: gray_stats(&IMAGENET_STD),
            class_names: CHESTXRAY14_FINDINGS.iter().map(|s| s.to_string()).collect(),
            multi_label: true,
            ..Self::ham10000()
        }
    }

    /// A config for `num_classes` outputs with generic names, 3 channels, ImageNet statistics.
    pub fn generic(num_classes: usize, in_channels: usize) -> Self {
        let class_names = if num_classes == HAM10000_CLASSES.len() {
            HAM10000_CLASSES.iter().map(|s| s.to_string()).collect()
        } else if num_classes == CHESTXRAY14_FINDINGS.len() {
            CHESTXRAY14_FINDINGS.iter().map(|s| s.to_string()).collect()
        } else {
            (0..num_classes).map(|i| format!("class_{i}")).collect()
        };
        let mut cfg = Self {
            num_classes,
            class_names,
            multi_label: num_classes == CHESTXRAY14_FINDINGS.len(),
            ..Self::ham10000()
        };
        cfg.set_in_channels(in_channels);
        cfg
    }

    /// Change the channel count, adapting the normalisation statistics (mean of the RGB ones
    /// for greyscale, matching [`crate::io::weights::adapt_stem_to_gray`]).
    pub fn set_in_channels(&mut self, in_channels: usize) {
        if in_channels == self.in_channels {
            return;
        }
        if in_channels == 1 {
            self.mean = gray_stats(&self.mean);
            self.std = gray_stats(&self.std);
        } else if in_channels == 3 && self.mean.len() == 1 {
            self.mean = vec![self.mean[0]; 3];
            self.std = vec![self.std[0]; 3];
        }
        self.in_channels = in_channels;
    }

    /// Width of the pooled embedding (2048 at base width 64).
    pub fn embedding_dim(&self) -> usize {
        self.base_width * 8 * 4
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TriscopeError::BadConfig(m));
        if self.architecture != "resnet50" {
            return bad(format!(
                "architecture '{}' is not supported (only resnet50)",
                self.architecture
            ));
        }
        if self.num_classes == 0 || self.num_classes > MAX_CLASSES {
            return bad(format!(
                "num_classes must be in 1..={MAX_CLASSES}, got {}",
                self.num_classes
            ));
        }
        if self.in_channels != 1 && self.in_channels != 3 {
            return bad(format!(
                "in_channels must be 1 or 3, got {}",
                self.in_channels
            ));
        }
        if self.base_width == 0 || self.base_width > 256 {
            return bad(format!(
                "base_width must be in 1..=256, got {}",
                self.base_width
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.resolution < 32 || self.resolution > 2048 {
            return bad(format!(
                "resolution must be in 32..=2048 pixels (the network downsamples 32x), got {}",
                self.resolution
            ));
        }
        if self.mean.len() != self.in_channels || self.std.len() != self.in_channels {
            return bad(format!(
                "mean and std need {} values (one per channel), got {} and {}",
                self.in_channels,
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return bad(format!(
                "std must be finite and positive and mean finite, got mean {:?} std {:?}",
                self.mean, self.std
            ));
        }
        if self.color_constancy != ColorConstancy::None && self.in_channels != 3 {
            return bad(format!(
                "color_constancy {} needs 3 channels, got {}",
                self.color_constancy.describe(),
                self.in_channels
            ));
        }
        if self.class_names.len() != self.num_classes {
            return bad(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.num_classes
            ));
        }
        Ok(())
    }
}

fn gray_stats(rgb: &[f32]) -> Vec<f32> {
    vec![rgb.iter().sum::<f32>() / rgb.len().max(1) as f32]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        ModelConfig::ham10000().validate().unwrap();
        ModelConfig::chestxray14().validate().unwrap();
        assert_eq!(ModelConfig::ham10000().embedding_dim(), 2048);
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = ModelConfig::ham10000();
        c.in_channels = 2;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("in_channels"), "{e}");
        let mut c = ModelConfig::ham10000();
        c.class_names.pop();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("6 class names for 7")
        );
        let mut c = ModelConfig::ham10000();
        c.resolution = 16;
        assert!(c.validate().unwrap_err().to_string().contains("resolution"));
    }

    #[test]
    fn gray_adaptation_of_stats() {
        let mut c = ModelConfig::ham10000();
        c.set_in_channels(1);
        assert_eq!(c.mean.len(), 1);
        assert!((c.mean[0] - 0.449).abs() < 1e-6);
        assert!((c.std[0] - 0.226).abs() < 1e-6);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_rejected() {
        let json =
            r#"{"num_classes": 7, "mean": [0.5], "std": [0.5], "class_names": [], "bogus": 1}"#;
        let e = serde_json::from_str::<ModelConfig>(json)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
