//! Explanation audit: per-sample faithfulness, localisation and stability under attack and
//! their summary (here); the whole audit of a dataset split with progress and cancel
//! ([`pipeline`]), on its own thread for the app ([`job`]); TCAV's concept sets ([`concepts`]); the figures ([`figures`]) and the
//! self-contained HTML page ([`html`]) written beside `audit.json`, which the app reads back.

pub mod concepts;
pub mod figures;
pub mod html;
pub mod job;
pub mod pipeline;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::attack::{AttackConfig, AttackGoal, run_attack};
use crate::error::{Result, TriscopeError};
use crate::eval::EvalReport;
use crate::explain::faithfulness::{Faithfulness, FaithfulnessOptions, faithfulness};
use crate::explain::quality::{
    Threshold, energy_pointing_game, iou, pointing_game, spearman, ssim, top_k_intersection,
};
use crate::explain::sanity::SanityCheck;
use crate::explain::tcav::TcavResult;
use crate::explain::{AttributionOptions, Method, TargetClass};
use crate::inference::Classifier;
use crate::io::imaging::PixelImage;
use crate::io::regions::Region;
use crate::model::LayerId;
use crate::util::rng::SplitMix64;
pub use concepts::ConceptFolder;
pub use html::{base64, render_html};
pub use job::{AuditEvent, AuditHandle, AuditRequest};
pub use pipeline::{AuditOptions, AuditProgress, AuditStage, TcavOptions, run_audit};

/// Share of the map kept for the thresholded IoU.
pub const IOU_TOP_FRACTION: f64 = 0.15;
/// TorchRay's pointing-game tolerance, 15 px at 224 px, scaled to the model input.
pub const POINTING_TOLERANCE_AT_224: f64 = 15.0;

/// What the explanation part of an audit computes.
#[derive(Debug, Clone)]
pub struct ExplainAuditOptions {
    pub method: Method,
    pub attribution: AttributionOptions,
    pub faithfulness: FaithfulnessOptions,
    /// L-inf radius of the stability attacks, pixel units.
    pub stability_eps: f32,
    pub seed: u64,
}

/// Localisation of one map against one ground-truth region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Localisation {
    pub finding: String,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub region_area_fraction: f64,
    /// IoU of the top-15% pixels of the map with the region.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub iou_top15: f64,
    /// IoU of the Otsu-thresholded map with the region.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub iou_otsu: f64,
    /// Share of the map's mass inside the region.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub energy_pointing_game: f64,
    /// The map's maximum lies inside the region.
    pub pointing_hit: bool,
    /// ... or within the tolerance of it.
    pub pointing_hit_tolerant: bool,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub tolerance_px: f64,
}

/// Localisation scores of `map` against `region` (model-input pixels).
pub fn localise(map: &[f32], region: &Region, width: usize) -> Localisation {
    let tolerance_px = POINTING_TOLERANCE_AT_224 * width as f64 / 224.0;
    Localisation {
        finding: region.finding.clone(),
        region_area_fraction: region.area_fraction(),
        iou_top15: iou(map, &region.mask, Threshold::TopFraction(IOU_TOP_FRACTION)),
        iou_otsu: iou(map, &region.mask, Threshold::Otsu),
        energy_pointing_game: energy_pointing_game(map, &region.mask),
        pointing_hit: pointing_game(map, &region.mask, width, 0.0),
        pointing_hit_tolerant: pointing_game(map, &region.mask, width, tolerance_px),
        tolerance_px,
    }
}

/// A centred isotropic Gaussian (sigma a quarter of the side): the "look at the middle"
/// baseline any localisation score must beat on centred data such as dermoscopy.
pub fn centre_prior(height: usize, width: usize) -> Vec<f32> {
    let (cy, cx) = ((height as f32 - 1.0) / 2.0, (width as f32 - 1.0) / 2.0);
    let sigma = height.min(width) as f32 / 4.0;
    (0..height * width)
        .map(|i| {
            let (y, x) = ((i / width) as f32, (i % width) as f32);
            (-((y - cy).powi(2) + (x - cx).powi(2)) / (2.0 * sigma * sigma)).exp()
        })
        .collect()
}

/// How one attack moved the explanation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stability {
    pub attack: String,
    pub eps_linf: f32,
    pub adversarial_class: String,
    /// The attack changed the predicted class (single-label) or a finding (multi-label).
    pub flipped: bool,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub ssim: f64,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub spearman: f64,
    /// Share of the top-15% pixels the two maps have in common.
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub top15_intersection: f64,
}

/// Everything measured on one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleAudit {
    pub id: String,
    pub true_label: String,
    pub predicted: String,
    pub confidence: f32,
    pub correct: Option<bool>,
    pub explained_class: String,
    pub faithfulness: Faithfulness,
    /// The same curves for a random map (chance level).
    pub random_faithfulness: Faithfulness,
    pub localisation: Vec<Localisation>,
    /// The centre-prior baseline on the same regions.
    pub centre_prior_localisation: Vec<Localisation>,
    pub stability: Vec<Stability>,
    /// The image against the model's training distribution, where the model carries the
    /// statistics ([`crate::inference::ood`]; absent in reports written before them).
    #[serde(default)]
    pub out_of_distribution: Option<crate::inference::ood::OodScore>,
    /// Clean map and the PGD-10 image with its map, for the report's grid.
    #[serde(skip)]
    pub figures: Option<SampleFigures>,
}

/// Pictures kept for the report's grids (plain RGB at model resolution).
#[derive(Debug, Clone)]
pub struct SampleFigures {
    pub image: Vec<u8>,
    pub clean_map: Vec<f32>,
    pub adversarial: Vec<u8>,
    pub adversarial_map: Vec<f32>,
    pub size: usize,
    /// The first ground-truth region's mask (a lesion, the lungs), to outline.
    pub region: Option<Vec<bool>>,
}

/// One image of the audit and what is known about it.
pub struct AuditedImage<'a> {
    pub id: &'a str,
    pub image: &'a PixelImage,
    /// The ground truth as text, for the record.
    pub true_label: &'a str,
    /// The label in the model's order (single-label): decides `correct`.
    pub true_class: Option<usize>,
    /// Ground-truth regions at model resolution: the map of a region whose finding is one of
    /// the model's classes explains that class, all others the predicted class.
    pub regions: &'a [Region],
}

/// Audit one image; `cancel` stops its attacks.
pub fn audit_sample(
    classifier: &Classifier,
    input: &AuditedImage<'_>,
    options: &ExplainAuditOptions,
    cancel: &AtomicBool,
) -> Result<SampleAudit> {
    let AuditedImage {
        id,
        image,
        true_label,
        true_class,
        regions,
    } = *input;
    let cfg = classifier.config().clone();
    let device = classifier.device().device.clone();
    let (prediction, out_of_distribution) = classifier.predict_with_ood(&[image])?.remove(0);
    let (h, w) = (image.height, image.width);
    let map_of = |img: &PixelImage, class: usize| -> Result<Vec<f32>> {
        Ok(classifier
            .attribute(
                img,
                options.method,
                TargetClass::Index(class),
                &options.attribution,
            )?
            .attribution
            .map)
    };
    let class = prediction.class_index;
    let map = map_of(image, class)?;
    let faith = faithfulness(
        classifier.model(),
        &device,
        image,
        &map,
        class,
        &options.faithfulness,
    )?;
    let mut rng = SplitMix64::new(options.seed ^ crate::util::rng::offset::AUDIT);
    let random_map: Vec<f32> = (0..h * w).map(|_| rng.next_f32()).collect();
    let random_faith = faithfulness(
        classifier.model(),
        &device,
        image,
        &random_map,
        class,
        &options.faithfulness,
    )?;

    let prior = centre_prior(h, w);
    let mut localisation = Vec::new();
    let mut prior_localisation = Vec::new();
    for region in regions {
        let region_class = cfg
            .class_names
            .iter()
            .position(|c| c.eq_ignore_ascii_case(&region.finding));
        let region_map = match region_class {
            Some(c) if c != class => map_of(image, c)?,
            _ => map.clone(),
        };
        if region.mask.len() != h * w {
            return Err(TriscopeError::InvalidArgument(format!(
                "{id}: region mask has {} pixels, the image {h}x{w}",
                region.mask.len()
            )));
        }
        localisation.push(localise(&region_map, region, w));
        prior_localisation.push(localise(&prior, region, w));
    }

    // Stability: FGSM, PGD-10, PGD-20 at the same radius, the clean prediction as the label.
    let goal = if cfg.multi_label {
        AttackGoal::MultiLabel(vec![prediction.finding_decisions()])
    } else {
        AttackGoal::Untargeted(vec![class])
    };
    let eps = options.stability_eps;
    let attacks = [
        ("fgsm", AttackConfig::fgsm()),
        ("pgd10", AttackConfig::pgd(10)),
        ("pgd20", AttackConfig::pgd(20)),
    ];
    let mut stability = Vec::new();
    let mut figures = None;
    for (name, mut config) in attacks {
        config.eps_linf = eps;
        config.alpha = if name == "fgsm" { eps } else { eps / 4.0 };
        config.seed = options.seed;
        let x = classifier.batch_tensor(&[image])?; // [1, C, H, W]
        let output = run_attack(classifier.model(), x, &goal, &config, &mut |_| {}, cancel)?;
        let adv = PixelImage {
            data: crate::model::host::values(output.adversarial, "the adversarial image")?,
            ..image.clone()
        };
        let adv_prediction = classifier.predict(&[&adv])?.remove(0);
        let adv_map = map_of(&adv, class)?;
        let flipped = if cfg.multi_label {
            adv_prediction.positive_findings != prediction.positive_findings
        } else {
            adv_prediction.class_index != class
        };
        stability.push(Stability {
            attack: name.into(),
            eps_linf: eps,
            adversarial_class: adv_prediction.class_name.clone(),
            flipped,
            ssim: ssim(&map, &adv_map, h, w),
            spearman: spearman(&map, &adv_map),
            top15_intersection: top_k_intersection(&map, &adv_map, IOU_TOP_FRACTION),
        });
        if name == "pgd10" {
            figures = Some(SampleFigures {
                image: image.to_rgb8(),
                clean_map: map.clone(),
                adversarial: adv.to_rgb8(),
                adversarial_map: adv_map,
                size: w,
                region: regions.first().map(|r| r.mask.clone()),
            });
        }
    }
    Ok(SampleAudit {
        out_of_distribution,
        id: id.to_string(),
        true_label: true_label.to_string(),
        predicted: prediction.class_name.clone(),
        confidence: prediction.confidence,
        correct: true_class.map(|c| c == class),
        explained_class: cfg.class_names[class].clone(),
        faithfulness: faith,
        random_faithfulness: random_faith,
        localisation,
        centre_prior_localisation: prior_localisation,
        stability,
        figures,
    })
}

/// Mean, and how many values it is over (NaNs left out).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Mean {
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub mean: f64,
    pub n: usize,
}

fn mean_of(values: impl Iterator<Item = f64>) -> Mean {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    Mean {
        mean: if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        },
        n: v.len(),
    }
}

/// Localisation means over all regions of a sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalisationSummary {
    pub iou_top15: Mean,
    pub iou_otsu: Mean,
    pub energy_pointing_game: Mean,
    /// Standard deviation of the energy pointing game over the regions (its spread: a few
    /// images whose map sits outside the region show here, not in the mean).
    #[serde(
        default = "crate::util::stats::nan",
        deserialize_with = "crate::util::stats::f64_or_nan"
    )]
    pub energy_pointing_game_std: f64,
    pub pointing_game: Mean,
    pub pointing_game_tolerant: Mean,
    /// Share of the image the regions cover: what a uniform map's energy pointing game is.
    #[serde(default = "no_mean")]
    pub region_area_fraction: Mean,
}

fn no_mean() -> Mean {
    Mean {
        mean: f64::NAN,
        n: 0,
    }
}

fn summarise_localisation<'a>(
    items: impl Iterator<Item = &'a Localisation> + Clone,
) -> LocalisationSummary {
    let bit = |b: bool| if b { 1.0 } else { 0.0 };
    let energies: Vec<f64> = items
        .clone()
        .map(|l| l.energy_pointing_game)
        .filter(|x| x.is_finite())
        .collect();
    LocalisationSummary {
        iou_top15: mean_of(items.clone().map(|l| l.iou_top15)),
        iou_otsu: mean_of(items.clone().map(|l| l.iou_otsu)),
        energy_pointing_game: mean_of(energies.iter().copied()),
        energy_pointing_game_std: crate::util::stats::mean_std(&energies).1,
        pointing_game: mean_of(items.clone().map(|l| bit(l.pointing_hit))),
        pointing_game_tolerant: mean_of(items.clone().map(|l| bit(l.pointing_hit_tolerant))),
        region_area_fraction: mean_of(items.map(|l| l.region_area_fraction)),
    }
}

/// Stability means for one attack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StabilitySummary {
    pub attack: String,
    pub eps_linf: f32,
    pub flip_rate: Mean,
    pub ssim: Mean,
    pub spearman: Mean,
    pub top15_intersection: Mean,
}

/// The explanation metrics over the audited sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplanationSummary {
    pub method: String,
    pub layer: Option<String>,
    pub samples: usize,
    pub deletion_auc: Mean,
    pub insertion_auc: Mean,
    pub random_deletion_auc: Mean,
    pub random_insertion_auc: Mean,
    /// Percent.
    pub average_drop: Mean,
    /// Percent of samples.
    pub increase_in_confidence: Mean,
    pub localisation: Option<LocalisationSummary>,
    pub centre_prior_localisation: Option<LocalisationSummary>,
    pub stability: Vec<StabilitySummary>,
}

pub fn summarise(
    samples: &[SampleAudit],
    method: Method,
    layer: Option<LayerId>,
) -> ExplanationSummary {
    let locs = samples.iter().flat_map(|s| s.localisation.iter());
    let priors = samples
        .iter()
        .flat_map(|s| s.centre_prior_localisation.iter());
    let has_regions = locs.clone().next().is_some();
    let mut stability = Vec::new();
    if let Some(first) = samples.first() {
        for (k, st) in first.stability.iter().enumerate() {
            let of = |f: &dyn Fn(&Stability) -> f64| {
                mean_of(samples.iter().filter_map(|s| s.stability.get(k)).map(f))
            };
            stability.push(StabilitySummary {
                attack: st.attack.clone(),
                eps_linf: st.eps_linf,
                flip_rate: of(&|s| if s.flipped { 1.0 } else { 0.0 }),
                ssim: of(&|s| s.ssim),
                spearman: of(&|s| s.spearman),
                top15_intersection: of(&|s| s.top15_intersection),
            });
        }
    }
    ExplanationSummary {
        method: method.name().to_string(),
        layer: layer.map(|l| l.to_string()),
        samples: samples.len(),
        deletion_auc: mean_of(samples.iter().map(|s| s.faithfulness.deletion_auc)),
        insertion_auc: mean_of(samples.iter().map(|s| s.faithfulness.insertion_auc)),
        random_deletion_auc: mean_of(samples.iter().map(|s| s.random_faithfulness.deletion_auc)),
        random_insertion_auc: mean_of(samples.iter().map(|s| s.random_faithfulness.insertion_auc)),
        average_drop: mean_of(samples.iter().map(|s| s.faithfulness.drop_percent)),
        increase_in_confidence: mean_of(
            samples
                .iter()
                .map(|s| if s.faithfulness.increase { 100.0 } else { 0.0 }),
        ),
        localisation: has_regions.then(|| summarise_localisation(locs)),
        centre_prior_localisation: has_regions.then(|| summarise_localisation(priors)),
        stability,
    }
}

/// One sanity check in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SanityEntry {
    pub method: String,
    pub image: String,
    pub check: SanityCheck,
}

/// A figure of the report: a PNG beside `audit.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    pub title: String,
    pub file: String,
    pub caption: String,
}

/// The whole audit, as written to `audit.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditReport {
    pub model: String,
    pub model_description: String,
    pub dataset: String,
    pub split: String,
    pub device: String,
    pub created_unix_secs: u64,
    /// `None` when the dataset's labels do not fit the model (the reason is in `notes`).
    pub evaluation: Option<EvalReport>,
    pub explanation: ExplanationSummary,
    pub samples: Vec<SampleAudit>,
    pub sanity: Vec<SanityEntry>,
    pub tcav: Vec<TcavResult>,
    pub figures: Vec<Figure>,
    /// Fooled-evaluation warnings and anything the audit could not do.
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    #[serde(deserialize_with = "crate::util::stats::f64_or_nan")]
    pub elapsed_secs: f64,
}

impl AuditReport {
    /// Read `audit.json` (the folder or the file).
    pub fn read(path: &Path) -> Result<(Self, PathBuf)> {
        let file = if path.is_dir() {
            path.join("audit.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| TriscopeError::Io {
            path: file.clone(),
            source,
        })?;
        let report = serde_json::from_str(&text).map_err(|e| {
            TriscopeError::InvalidArgument(format!(
                "{} is not a Triscope audit report: {e}",
                file.display()
            ))
        })?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok((report, dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn localisation_of_perfect_and_inverted_maps() {
        let (w, h) = (20, 20);
        let mask: Vec<bool> = (0..w * h)
            .map(|i| (5..10).contains(&(i % w)) && (5..10).contains(&(i / w)))
            .collect();
        let region = Region {
            finding: "lesion".into(),
            mask: mask.clone(),
        };
        let perfect: Vec<f32> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
        let l = localise(&perfect, &region, w);
        assert!(
            (l.iou_otsu - 1.0).abs() < 1e-12 && l.energy_pointing_game == 1.0 && l.pointing_hit
        );
        let inverted: Vec<f32> = perfect.iter().map(|v| 1.0 - v).collect();
        let l = localise(&inverted, &region, w);
        assert_eq!(l.iou_otsu, 0.0);
        assert_eq!(l.energy_pointing_game, 0.0);
        assert!(!l.pointing_hit);
        // The centre prior peaks in the middle of the image.
        let prior = centre_prior(h, w);
        let max = prior.iter().copied().fold(0.0f32, f32::max);
        assert!(prior[10 * w + 10] > 0.9 * max && prior[0] < 0.1 * max);
    }
}
