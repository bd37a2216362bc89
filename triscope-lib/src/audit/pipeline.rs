//! The whole audit of one model on one dataset split: clean and robust evaluation, the
//! explanation metrics on a sample, the model-randomisation sanity check and TCAV, then the
//! figures, `audit.json` and `audit.html` in one folder. `triscope audit` and the app's Audit
//! tab both call [`run_audit`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::concepts::{ConceptFolder, class_images, concept_sets, list_concepts, run_tcav};
use super::figures::{evaluation_figures, explanation_figures};
use super::{
    AuditReport, AuditedImage, ExplainAuditOptions, SampleAudit, SanityEntry, audit_sample,
    render_html, summarise,
};
use crate::error::{Result, TriscopeError, check_cancel};
use crate::eval::run::{evaluate_classifier, model_labels};
use crate::eval::{EvalAttack, EvalOptions};
use crate::explain::concept_bank::{BankOptions, checklist_tcav};
use crate::explain::concept_cache::load_or_build;
use crate::explain::faithfulness::FaithfulnessOptions;
use crate::explain::sanity::cascading_randomisation;
use crate::explain::tcav::{MIN_CAV_ACCURACY, TcavResult};
use crate::explain::{AttributionOptions, Method, TargetClass, attribute};
use crate::inference::Classifier;
use crate::io::data::{Dataset, DatasetKind, Label};
use crate::io::imaging::PixelImage;
use crate::io::regions::{Region, RegionSource};
use crate::model::LayerId;
use crate::util::fsio::write_atomic;

/// The radii of the audit's accuracy-against-eps sweep by default, in /255.
pub const AUDIT_SWEEP_X255: [f32; 5] = [0.0, 1.0, 2.0, 4.0, 8.0];
/// Seed offset of the sanity check's re-initialisations.
const SANITY_SEED: u64 = 0xadeba70;
/// SSIM under which a map counts as changed by the randomisation.
const SANITY_SSIM_PASS: f64 = 0.5;

/// What TCAV tests.
#[derive(Debug, Clone, PartialEq)]
pub struct TcavOptions {
    /// Concepts from folders (with `random`); empty: a HAM10000 dataset gets lesion-size
    /// concepts built from its train-split masks, any other dataset no TCAV.
    pub concepts: Vec<ConceptFolder>,
    /// Folder of random images, split into `runs + 1` sets.
    pub random: Option<PathBuf>,
    /// Random sets (runs) per concept: at least 2, for the t-test.
    pub runs: usize,
    /// Images per concept and per random set (lesion-size concepts).
    pub images: usize,
    pub layers: Vec<LayerId>,
    /// The seven-point-checklist concepts from this derm7pt folder (in place of folders or
    /// lesion sizes): probes and CAVs from its train split, cached per model
    /// ([`crate::explain::concept_cache`]); `runs` and `layers` apply.
    pub checklist: Option<PathBuf>,
}

impl Default for TcavOptions {
    fn default() -> Self {
        Self {
            concepts: Vec::new(),
            random: None,
            runs: 5,
            images: 30,
            layers: vec![LayerId::Layer2, LayerId::Layer3],
            checklist: None,
        }
    }
}

/// What an audit computes.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The evaluation (by default with the [`AUDIT_SWEEP_X255`] sweep).
    pub eval: EvalOptions,
    /// Images the explanation metrics run on (the first N of the dataset, classes
    /// interleaved; with ground-truth regions, images that have one first).
    pub explain_samples: usize,
    pub method: Method,
    /// Layer of the CAM methods.
    pub layer: LayerId,
    /// L-inf radius of the stability attacks, pixel units (`None`: the evaluation's).
    pub stability_eps: Option<f32>,
    /// Images of the model-randomisation sanity check, and its methods.
    pub sanity_images: usize,
    pub sanity_methods: Vec<Method>,
    /// `None`: no TCAV.
    pub tcav: Option<TcavOptions>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            eval: EvalOptions {
                attacks: vec![EvalAttack::Clean, EvalAttack::Fgsm, EvalAttack::Pgd10],
                eps_sweep: AUDIT_SWEEP_X255.iter().map(|e| e / 255.0).collect(),
                ..EvalOptions::default()
            },
            explain_samples: 21,
            method: Method::GradCam,
            layer: LayerId::Layer4,
            stability_eps: None,
            sanity_images: 2,
            sanity_methods: vec![Method::GradCam, Method::Saliency],
            tcav: Some(TcavOptions::default()),
        }
    }
}

impl AuditOptions {
    /// Check everything that can be checked before compute.
    pub fn validate(&self) -> Result<()> {
        self.eval.validate()?;
        let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
        if let Some(e) = self.stability_eps
            && !(0.0..=1.0).contains(&e)
        {
            return bad(format!(
                "the stability radius (--stability-eps) must be in [0, 1] pixel units, got {e}"
            ));
        }
        if let Some(t) = &self.tcav {
            if t.runs < 2 {
                return bad(
                    "TCAV needs at least 2 runs (--tcav-runs; the t-test needs two)".into(),
                );
            }
            if !t.concepts.is_empty() && t.random.is_none() {
                return bad(
                    "TCAV concept folders (--concept) need a folder of random images that are not \
                     the concept (--random)"
                        .into(),
                );
            }
            if t.checklist.is_some() && (!t.concepts.is_empty() || t.random.is_some()) {
                return bad(
                    "TCAV takes one source of concepts: the seven-point checklist (--concepts \
                     derm7pt) or concept folders (--concept, --random), not both"
                        .into(),
                );
            }
            if t.random.is_some() && t.concepts.is_empty() {
                return bad(
                    "a TCAV random folder (--random) needs at least one concept folder (--concept)"
                        .into(),
                );
            }
        }
        Ok(())
    }

    fn stability_eps(&self) -> f32 {
        self.stability_eps.unwrap_or(self.eval.eps_linf)
    }
}

/// The parts of an audit, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditStage {
    Evaluation,
    Explanation,
    Sanity,
    Tcav,
    Report,
}

impl AuditStage {
    pub fn label(self) -> &'static str {
        match self {
            Self::Evaluation => "evaluation",
            Self::Explanation => "explanation metrics",
            Self::Sanity => "sanity check",
            Self::Tcav => "TCAV",
            Self::Report => "figures and report",
        }
    }
}

/// Where an audit is: `done` of `total` units (images, checks or layers) of `stage`. Each
/// stage reports `done == 0` when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditProgress {
    pub stage: AuditStage,
    pub done: usize,
    pub total: usize,
}

/// Audit `classifier` on `dataset` and write the figures, `audit.json` and `audit.html` into
/// `out` (created; the JSON and HTML whole or not at all, so a failed or cancelled audit
/// leaves an earlier report intact). A set `cancel` stops it with [`TriscopeError::Cancelled`].
pub fn run_audit(
    classifier: &Classifier,
    dataset: &Dataset,
    options: &AuditOptions,
    out: &Path,
    progress: &mut dyn FnMut(AuditProgress),
    cancel: &AtomicBool,
) -> Result<AuditReport> {
    let started = Instant::now();
    // Everything is checked before compute.
    options.validate()?;
    let concepts = match &options.tcav {
        Some(t) => list_concepts(t)?,
        None => Vec::new(),
    };
    std::fs::create_dir_all(out).map_err(|source| TriscopeError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let cfg = classifier.config().clone();
    let seed = options.eval.seed;
    let mut notes = Vec::new();

    // 1. Clean and robust evaluation (when the labels fit the model).
    let labels = match model_labels(dataset, &cfg) {
        Ok(l) => Some(l),
        Err(e) => {
            notes.push(format!(
                "Evaluation skipped: {e}. The explanation metrics below use the model's own predictions."
            ));
            None
        }
    };
    let evaluation = match &labels {
        Some(l) => {
            let total = dataset.len();
            progress(AuditProgress {
                stage: AuditStage::Evaluation,
                done: 0,
                total,
            });
            Some(evaluate_classifier(
                classifier,
                dataset,
                l,
                &options.eval,
                &mut |done, total| {
                    progress(AuditProgress {
                        stage: AuditStage::Evaluation,
                        done,
                        total,
                    })
                },
                cancel,
            )?)
        }
        None => None,
    };

    // 2. Explanation metrics on a sample.
    let regions = RegionSource::for_dataset(dataset)?;
    let chosen = explained_images(dataset, regions.as_ref(), classifier, options)?;
    if regions.is_none() {
        notes.push(format!(
            "{} has no ground-truth regions (HAM10000 lesion masks, lung masks or NIH boxes): no localisation scores.",
            dataset.root.display()
        ));
    }
    let explain_options = ExplainAuditOptions {
        method: options.method,
        attribution: AttributionOptions {
            layer: options.layer,
            ..AttributionOptions::default()
        },
        faithfulness: FaithfulnessOptions::default(),
        stability_eps: options.stability_eps(),
        seed,
    };
    let mut samples: Vec<SampleAudit> = Vec::new();
    let mut images: Vec<PixelImage> = Vec::new();
    let (res, mode) = (cfg.resolution, classifier.resize_mode);
    for (k, (i, r)) in chosen.iter().enumerate() {
        progress(AuditProgress {
            stage: AuditStage::Explanation,
            done: k,
            total: chosen.len(),
        });
        check_cancel(cancel)?;
        let image = dataset.load(*i, cfg.in_channels, res, mode)?;
        let s = &dataset.samples[*i];
        // The label in the model's class order (single-label) decides "correct".
        let true_class = match labels.as_ref().map(|l| &l[*i]) {
            Some(Label::Class(c)) => Some(*c),
            _ => None,
        };
        samples.push(audit_sample(
            classifier,
            &AuditedImage {
                id: &s.id,
                image: &image,
                true_label: &describe_label(dataset, &s.label),
                true_class,
                regions: r,
            },
            &explain_options,
            cancel,
        )?);
        images.push(image);
    }
    let method_layer = options.method.uses_layer().then_some(options.layer);
    let explanation = summarise(&samples, options.method, method_layer);

    // 3. Sanity check: cascading randomisation.
    let sanity = sanity_checks(classifier, &images, &samples, options, progress, cancel)?;

    // 4. TCAV.
    let mut tcav = Vec::new();
    if let Some(t) = &options.tcav {
        if let Some(root) = &t.checklist {
            tcav = checklist_audit(
                classifier,
                dataset,
                labels.as_deref(),
                root,
                t,
                &mut notes,
                progress,
                cancel,
            )?;
        } else {
            match concept_sets(t, concepts, dataset, seed)? {
                Some(sets) => {
                    notes.push(sets.origin.clone());
                    if t.layers.contains(&LayerId::Layer4) {
                        notes.push(LAYER4_TCAV_NOTE.into());
                    }
                    let total = t.layers.len();
                    progress(AuditProgress {
                        stage: AuditStage::Tcav,
                        done: 0,
                        total,
                    });
                    tcav = run_tcav(
                        classifier,
                        dataset,
                        labels.as_deref(),
                        &sets,
                        t,
                        &mut |done| {
                            progress(AuditProgress {
                                stage: AuditStage::Tcav,
                                done,
                                total,
                            })
                        },
                        cancel,
                    )?;
                }
                None => notes.push(format!(
                    "TCAV skipped: give concept folders (--concept NAME=FOLDER) and random images \
                     (--random FOLDER), or the seven-point checklist (--concepts derm7pt); \
                     HAM10000 gets lesion-size concepts automatically; {} has neither.",
                    dataset.root.display()
                )),
            }
        }
    }

    // 5. Figures and the report.
    check_cancel(cancel)?;
    progress(AuditProgress {
        stage: AuditStage::Report,
        done: 0,
        total: 1,
    });
    let mut figures = Vec::new();
    let mut warnings = Vec::new();
    if let Some(ev) = &evaluation {
        warnings.extend(ev.warnings.iter().cloned());
        figures.extend(evaluation_figures(ev, out)?);
    }
    figures.extend(explanation_figures(
        &samples,
        &sanity,
        &tcav,
        options.method,
        out,
    )?);
    for c in sanity.iter().filter(|s| !s.check.passed) {
        warnings.push(format!(
            "Sanity check failed: {}'s map on {} stays similar (SSIM {:.2}) to the original after the whole network is randomised, so it does not reflect what the model learned.",
            c.method,
            c.image,
            c.check.steps.last().map(|s| s.ssim).unwrap_or(f64::NAN)
        ));
    }
    let report = AuditReport {
        model: classifier.source.to_string(),
        model_description: classifier.metadata.description.clone(),
        dataset: dataset.root.display().to_string(),
        split: dataset.split.clone(),
        device: classifier.device().description.clone(),
        created_unix_secs: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        evaluation,
        explanation,
        samples,
        sanity,
        tcav,
        figures,
        warnings,
        notes,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| TriscopeError::Compute(format!("writing the audit as JSON: {e}")))?;
    write_atomic(&out.join("audit.json"), text.as_bytes())?;
    write_atomic(
        &out.join("audit.html"),
        render_html(&report, out)?.as_bytes(),
    )?;
    progress(AuditProgress {
        stage: AuditStage::Report,
        done: 1,
        total: 1,
    });
    Ok(report)
}

/// Why TCAV at layer4 scores a class 0 or 1 per CAV.
const LAYER4_TCAV_NOTE: &str = "TCAV at layer4: the head is global average pooling then a \
    linear layer, so the gradient of a logit with respect to layer4 is the same for every image \
    and each CAV scores a class 0 or 1 (the score's spread over runs is then the share of runs \
    whose CAV points along the class's weights); read layer3 for a per-image test.";

/// TCAV with the seven-point checklist: the model's concept bank for the derm7pt folder
/// `root` (from the cache or built, which the notes say), scored on the audited split's
/// images per class.
#[allow(clippy::too_many_arguments)]
fn checklist_audit(
    classifier: &Classifier,
    dataset: &Dataset,
    labels: Option<&[Label]>,
    root: &Path,
    t: &TcavOptions,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(AuditProgress),
    cancel: &AtomicBool,
) -> Result<Vec<TcavResult>> {
    let bank_options = BankOptions {
        layers: t.layers.clone(),
        runs: t.runs,
        ..BankOptions::default()
    };
    let (bank, origin) = load_or_build(
        classifier,
        root,
        &bank_options,
        None,
        &mut |p| {
            progress(AuditProgress {
                stage: AuditStage::Tcav,
                done: p.done,
                total: p.total,
            })
        },
        cancel,
    )?;
    notes.push(format!(
        "TCAV concepts: the seven-point checklist from derm7pt's train split ({}): per \
         criterion, {} runs of up to {} images with it against as many without it; null CAVs \
         between random train images. A row whose CAVs do not separate the criterion on \
         held-out images (mean accuracy below {:.2}) is marked: its score says nothing.",
        root.display(),
        bank.options.runs,
        bank.options.per_set,
        MIN_CAV_ACCURACY
    ));
    notes.push(format!("Concept bank {}", origin.describe(bank.build_secs)));
    notes.extend(bank.notes.iter().cloned());
    if t.layers.contains(&LayerId::Layer4) {
        notes.push(LAYER4_TCAV_NOTE.into());
    }
    let class_images = class_images(classifier, dataset, labels, cancel)?;
    checklist_tcav(
        classifier,
        &bank,
        &class_images,
        &mut |done, total| {
            progress(AuditProgress {
                stage: AuditStage::Tcav,
                done,
                total,
            })
        },
        cancel,
    )
}

/// The images the explanation metrics run on, with their ground-truth regions: those with a
/// region first (for NIH boxes, a box of one of the model's findings), then the others.
fn explained_images(
    dataset: &Dataset,
    regions: Option<&RegionSource>,
    classifier: &Classifier,
    options: &AuditOptions,
) -> Result<Vec<(usize, Vec<Region>)>> {
    let cfg = classifier.config();
    let (res, mode) = (cfg.resolution, classifier.resize_mode);
    let mut chosen: Vec<(usize, Vec<Region>)> = Vec::new();
    let mut without: Vec<usize> = Vec::new();
    for i in 0..dataset.len() {
        if chosen.len() >= options.explain_samples {
            break;
        }
        let mut r = match (regions, dataset.samples[i].path()) {
            (Some(src), Some(path)) => src.regions(path, res, mode)?,
            _ => Vec::new(),
        };
        // A box of a finding the model does not know says nothing about its maps.
        if dataset.kind == DatasetKind::NihCxr14 {
            r.retain(|reg| {
                cfg.class_names
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&reg.finding))
            });
        }
        if r.is_empty() {
            without.push(i);
        } else {
            chosen.push((i, r));
        }
    }
    for i in without {
        if chosen.len() >= options.explain_samples {
            break;
        }
        chosen.push((i, Vec::new()));
    }
    Ok(chosen)
}

/// Cascading randomisation of each sanity method on the first `sanity_images` explained
/// images, for the class the audit explained.
fn sanity_checks(
    classifier: &Classifier,
    images: &[PixelImage],
    samples: &[SampleAudit],
    options: &AuditOptions,
    progress: &mut dyn FnMut(AuditProgress),
    cancel: &AtomicBool,
) -> Result<Vec<SanityEntry>> {
    let cfg = classifier.config();
    let device = classifier.device().device.clone();
    let n = images.len().min(options.sanity_images);
    let total = n * options.sanity_methods.len();
    let mut sanity = Vec::new();
    for (k, image) in images.iter().take(n).enumerate() {
        let class = cfg
            .class_names
            .iter()
            .position(|c| *c == samples[k].explained_class)
            .unwrap_or_default();
        for &m in &options.sanity_methods {
            progress(AuditProgress {
                stage: AuditStage::Sanity,
                done: sanity.len(),
                total,
            });
            check_cancel(cancel)?;
            let opts = AttributionOptions {
                layer: options.layer,
                ..AttributionOptions::default()
            };
            let check = cascading_randomisation(
                classifier.model(),
                &device,
                options.eval.seed ^ SANITY_SEED,
                image.height,
                image.width,
                SANITY_SSIM_PASS,
                &mut |model| {
                    // [1, C, H, W]
                    let x = Tensor::<4>::from_data(
                        TensorData::new(
                            image.data.clone(),
                            [1, image.channels, image.height, image.width],
                        ),
                        &device,
                    );
                    Ok(attribute(model, x, m, TargetClass::Index(class), &opts)?
                        .into_iter()
                        .next()
                        .map(|a| a.map)
                        .unwrap_or_default())
                },
            )?;
            sanity.push(SanityEntry {
                method: m.name().to_string(),
                image: samples[k].id.clone(),
                check,
            });
        }
    }
    Ok(sanity)
}

/// The ground truth as text.
fn describe_label(dataset: &Dataset, label: &Label) -> String {
    match label {
        Label::Class(c) => dataset.class_names[*c].clone(),
        Label::Findings(f) => {
            let names: Vec<&str> = f
                .iter()
                .zip(&dataset.class_names)
                .filter(|(v, _)| **v > 0.5)
                .map(|(_, n)| n.as_str())
                .collect();
            if names.is_empty() {
                "No Finding".into()
            } else {
                names.join("|")
            }
        }
    }
}
