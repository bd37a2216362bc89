//! Model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps",
//! NeurIPS 2018), cascading from the head down to the stem.
//!
//! The model's stages are re-initialised one after another with torchvision's
//! initialisation (head, then layer4, layer3, layer2, layer1, then the stem), keeping the
//! stages randomised before; after each step the explanation of the same image and class is
//! recomputed and compared with the original by SSIM and Spearman rank correlation of the
//! min-max normalised maps. A method whose map survives a randomised network does not explain
//! the model: the check fails when the SSIM after the last step stays at or above the
//! threshold (0.5 by default).

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::model::ResNet50;

use super::gradcam::min_max;
use super::quality::{spearman, ssim};

/// The stages in the order they are randomised.
pub const CASCADE: [&str; 6] = ["fc", "layer4", "layer3", "layer2", "layer1", "stem"];

/// The map after one more stage is randomised.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SanityStep {
    /// The stage randomised at this step (all before it stay randomised).
    pub randomised: String,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub ssim: f64,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub spearman: f64,
    /// The normalised map, `[height * width]`.
    #[serde(skip)]
    pub map: Vec<f32>,
}

/// The outcome for one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SanityCheck {
    pub steps: Vec<SanityStep>,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub ssim_threshold: f64,
    /// SSIM after the whole network is randomised is below the threshold.
    pub passed: bool,
    #[serde(skip)]
    pub original: Vec<f32>,
}

/// Run the cascade. `explain(model)` returns the map (`[height * width]`, any scale) of the
/// fixed image and class under `model`; `seed` fixes the random weights.
pub fn cascading_randomisation(
    model: &ResNet50,
    device: &Device,
    seed: u64,
    height: usize,
    width: usize,
    ssim_threshold: f64,
    explain: &mut dyn FnMut(&ResNet50) -> Result<Vec<f32>>,
) -> Result<SanityCheck> {
    let fresh = ResNet50::init(&model.config, seed, device)?.valid();
    let check_len = |m: &[f32]| -> Result<Vec<f32>> {
        if m.len() != height * width {
            return Err(TriscopeError::InvalidArgument(format!(
                "explanation has {} values, expected {height}x{width}",
                m.len()
            )));
        }
        // A NaN map (an exploding random network) compares as all zeros.
        let clean: Vec<f32> = m
            .iter()
            .map(|v| if v.is_finite() { *v } else { 0.0 })
            .collect();
        Ok(min_max(&clean))
    };
    let original = check_len(&explain(model)?)?;
    let mut current = model.clone();
    let mut steps = Vec::with_capacity(CASCADE.len());
    for stage in CASCADE {
        match stage {
            "fc" => current.fc = fresh.fc.clone(),
            "layer4" => current.layer4 = fresh.layer4.clone(),
            "layer3" => current.layer3 = fresh.layer3.clone(),
            "layer2" => current.layer2 = fresh.layer2.clone(),
            "layer1" => current.layer1 = fresh.layer1.clone(),
            _ => {
                current.conv1 = fresh.conv1.clone();
                current.bn1 = fresh.bn1.clone();
            }
        }
        let map = check_len(&explain(&current)?)?;
        steps.push(SanityStep {
            randomised: stage.to_string(),
            ssim: ssim(&original, &map, height, width),
            spearman: spearman(&original, &map),
            map,
        });
    }
    let last = steps.last().map(|s| s.ssim).unwrap_or(f64::NAN);
    Ok(SanityCheck {
        passed: last < ssim_threshold,
        steps,
        ssim_threshold,
        original,
    })
}
