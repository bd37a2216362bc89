//! One image attacked: [`attack_one`] is the pipeline both faces run (the CLI's `attack`, which
//! writes it into files with [`attack_image`], and the app's Attack tab, through the
//! workbench): the request ([`AttackRequest`], one type for both), the attack with progress
//! and cancel, the predictions, both Grad-CAMs of the clean prediction's class and how far the
//! map drifted ([`AttackOutcome`]). The files: the adversarial image (16-bit PNG and NPY), the
//! clean image, the perturbation amplified, both Grad-CAMs and `attack.json`.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::attack::{
    AttackConfig, AttackGoal, AttackMethod, Norm, StepReport, run_attack, run_attack_from,
};
use crate::error::{Result, TriscopeError};
use crate::explain::folder::write_rgb8;
use crate::explain::{Colormap, GradCamMap, TargetClass, overlay_rgb8, quality};
use crate::inference::{Classifier, Prediction};
use crate::io::imaging::PixelImage;
use crate::model::LayerId;
use crate::model::host::{PerturbationNorms, values};
use crate::util::fsio::write_atomic;

pub mod sweep;

/// What to attack: the attack, whom it aims at, and the layer whose Grad-CAM drift is measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackRequest {
    pub config: AttackConfig,
    /// Targeted at this class (single-label models; methods whose
    /// [`AttackMethod::takes_target`]).
    pub target: Option<usize>,
    /// The true class (single-label); `None`: the model's own prediction.
    pub label: Option<usize>,
    /// The layer of the clean vs adversarial Grad-CAM.
    #[serde(default = "layer4")]
    pub layer: LayerId,
}

fn layer4() -> LayerId {
    LayerId::Layer4
}

impl AttackRequest {
    /// `method` at `eps_linf` with `steps` (Square: queries), its other settings standard
    /// ([`AttackConfig::of_method`]); untargeted, the drift at layer4.
    pub fn new(method: AttackMethod, eps_linf: f32, steps: usize) -> Self {
        Self {
            config: AttackConfig {
                eps_linf,
                steps,
                ..AttackConfig::of_method(method)
            },
            target: None,
            label: None,
            layer: LayerId::Layer4,
        }
    }

    /// The attack in a few words: "pgd at ε 2/255, 10 steps".
    pub fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{} at ε {}/255, {} {}",
            c.method.name(),
            crate::io::plot::tick_label(f64::from(c.eps_linf) * 255.0),
            c.steps,
            if c.method == AttackMethod::Square {
                "queries"
            } else {
                "steps"
            }
        )
    }

    /// Check the request against the model before any compute.
    pub fn validate(&self, classifier: &Classifier) -> Result<()> {
        self.config.validate()?;
        let cfg = classifier.config();
        let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
        let method = self.config.method;
        if cfg.multi_label && (self.target.is_some() || !method.takes_target()) {
            return bad(format!(
                "targeted attacks, apgd-t and fab-t need a single-label model; this one has {} findings",
                cfg.num_classes
            ));
        }
        if self.target.is_some() && !method.takes_target() {
            return bad(format!(
                "{} chooses its own targets; use fgsm, pgd, apgd-ce or square with a target class",
                method.name()
            ));
        }
        for c in [self.target, self.label].into_iter().flatten() {
            if c >= cfg.num_classes {
                return bad(format!(
                    "class {c} does not exist: the model has {} classes",
                    cfg.num_classes
                ));
            }
        }
        Ok(())
    }

    /// What the attack aims at, and the class it counts as true (`label`, else the clean
    /// prediction's).
    pub fn goal(&self, classifier: &Classifier, clean: &Prediction) -> (AttackGoal, usize) {
        let label = self.label.unwrap_or(clean.class_index);
        let goal = match (classifier.config().multi_label, self.target) {
            (true, _) => AttackGoal::MultiLabel(vec![clean.finding_decisions()]),
            (false, Some(t)) => AttackGoal::Targeted(vec![t]),
            (false, None) => AttackGoal::Untargeted(vec![label]),
        };
        (goal, label)
    }

    /// Whether the attack reached its goal: the target class, another set of findings, or
    /// away from the true class.
    pub fn fooled(&self, clean: &Prediction, adversarial: &Prediction, label: usize) -> bool {
        match (clean.multi_label, self.target) {
            (true, _) => adversarial.positive_findings != clean.positive_findings,
            (false, Some(t)) => adversarial.class_index == t,
            (false, None) => adversarial.class_index != label,
        }
    }
}

/// `attack.json`: what was attacked, how, and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttackReport {
    pub image: String,
    pub model: String,
    pub device: String,
    pub method: String,
    pub norm: Norm,
    pub eps_linf: f32,
    pub eps_l2: f32,
    pub l2_norm: f32,
    pub restarts: usize,
    pub eps_linf_x255: f32,
    pub alpha: f32,
    pub steps: usize,
    pub random_start: bool,
    pub target_class: Option<String>,
    pub attacked_label: String,
    pub clean: Prediction,
    pub adversarial: Prediction,
    pub fooled: bool,
    pub linf_norm: f32,
    pub linf_norm_x255: f32,
    pub loss_per_step: Vec<f32>,
    pub elapsed_secs: f64,
    /// Grad-CAM (layer4, the clean prediction's class) of the clean vs the adversarial image.
    pub explanation_stability: CamDrift,
    pub files: Vec<String>,
}

/// How far the Grad-CAM of the clean prediction's class moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CamDrift {
    pub layer: String,
    pub class: String,
    pub ssim: f64,
    pub spearman: f64,
    pub top15_intersection: f64,
}

impl CamDrift {
    /// The agreement of two maps of `class` (same layer, same size).
    pub fn between(clean: &GradCamMap, adversarial: &GradCamMap, class: &str) -> Self {
        let a = quality::agreement(
            &clean.map,
            (clean.height, clean.width),
            &adversarial.map,
            (adversarial.height, adversarial.width),
        );
        Self {
            layer: clean.layer.to_string(),
            class: class.to_string(),
            ssim: a.ssim,
            spearman: a.spearman,
            top15_intersection: a.top15_intersection,
        }
    }
}

/// Attack the image at `path` and write the files into `out` (created). `on_step` sees every
/// step of the attack; a set `cancel` stops it with [`TriscopeError::Cancelled`].
pub fn attack_image(
    classifier: &Classifier,
    path: &Path,
    request: &AttackRequest,
    out: &Path,
    on_step: &mut dyn FnMut(&StepReport),
    cancel: &AtomicBool,
) -> Result<AttackReport> {
    let (config, cfg) = (&request.config, classifier.config());
    let method = config.method;
    let loaded = classifier.load_image(path)?;
    let p = &loaded.pixels;
    let mut step = |s: AttackStep| {
        on_step(&StepReport {
            step: s.step,
            total_steps: s.total_steps,
            loss: vec![s.loss],
        })
    };
    let outcome = attack_one(classifier, p, request, false, &mut step, cancel)?;
    let adv_img = &outcome.adversarial_image;
    let adv = &adv_img.data;

    std::fs::create_dir_all(out).map_err(|source| TriscopeError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let (w, h) = (p.width, p.height);
    let mut files = Vec::new();
    let adv_path = out.join("adversarial.png");
    write_rgb16(&adv_path, adv_img)?;
    files.push(adv_path.display().to_string());
    files.push(write_rgb8(&out.join("clean.png"), p.to_rgb8(), w, h)?);
    files.push(write_rgb8(
        &out.join("perturbation.png"),
        outcome.amplified_perturbation(p).to_rgb8(),
        w,
        h,
    )?);
    for (name, cam, img) in [
        ("gradcam_clean.png", &outcome.clean_cam, p),
        ("gradcam_adversarial.png", &outcome.adversarial_cam, adv_img),
    ] {
        let overlay = overlay_rgb8(&img.to_rgb8(), &cam.map, Colormap::Jet, 0.4);
        files.push(write_rgb8(&out.join(name), overlay, w, h)?);
    }
    let npy_path = out.join("adversarial.npy");
    crate::io::npy::write_f32(&npy_path, adv, &[p.channels, p.height, p.width])?;
    files.push(npy_path.display().to_string());
    let json_path = out.join("attack.json");
    files.push(json_path.display().to_string());

    let AttackOutcome {
        clean,
        adversarial,
        label,
        fooled,
        norms,
        loss_per_step,
        attack_secs: elapsed_secs,
        drift,
        ..
    } = outcome;
    let linf = norms.linf;
    let report = AttackReport {
        image: path.display().to_string(),
        model: classifier.source.to_string(),
        device: classifier.device().description.clone(),
        method: method.name().to_string(),
        norm: config.norm,
        eps_linf: config.eps_linf,
        eps_l2: config.eps_l2,
        l2_norm: norms.l2,
        restarts: config.restarts,
        eps_linf_x255: config.eps_linf * 255.0,
        alpha: config.alpha,
        steps: if method == AttackMethod::Fgsm {
            1
        } else {
            config.steps
        },
        random_start: config.random_start,
        target_class: request.target.map(|t| cfg.class_names[t].clone()),
        attacked_label: cfg.class_names[label].clone(),
        clean,
        adversarial,
        fooled,
        linf_norm: linf,
        linf_norm_x255: linf * 255.0,
        loss_per_step,
        elapsed_secs,
        explanation_stability: drift,
        files,
    };
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| TriscopeError::Compute(format!("writing the attack as JSON: {e}")))?;
    write_atomic(&json_path, text.as_bytes())?;
    Ok(report)
}

/// A step of [`attack_one`]: where it is, the loss there and, when previews are asked for
/// (FGSM and PGD), the image after the step.
#[derive(Debug, Clone)]
pub struct AttackStep {
    pub step: usize,
    pub total_steps: usize,
    pub loss: f32,
    pub preview: Option<PixelImage>,
}

/// One image attacked, in memory: what the CLI writes and the app shows.
#[derive(Debug, Clone)]
pub struct AttackOutcome {
    pub clean: Prediction,
    pub adversarial: Prediction,
    pub adversarial_image: PixelImage,
    /// The class counted as true (the request's label, else the clean prediction).
    pub label: usize,
    pub fooled: bool,
    pub norms: PerturbationNorms,
    pub loss_per_step: Vec<f32>,
    /// The attack's time, without the predictions and the maps.
    pub attack_secs: f64,
    /// Grad-CAM of the clean prediction's class at the request's layer, on both images.
    pub clean_cam: GradCamMap,
    pub adversarial_cam: GradCamMap,
    pub drift: CamDrift,
}

impl AttackOutcome {
    /// The perturbation amplified to the full range: grey is zero, white the largest positive
    /// change, black the largest negative one (L-inf and L2 attacks alike).
    pub fn amplified_perturbation(&self, clean: &PixelImage) -> PixelImage {
        let linf = self.norms.linf;
        let scale = if linf > 0.0 { 0.5 / linf } else { 0.0 };
        PixelImage {
            data: self
                .adversarial_image
                .data
                .iter()
                .zip(&clean.data)
                .map(|(a, b)| 0.5 + (a - b) * scale)
                .collect(),
            ..clean.clone()
        }
    }
}

/// Attack `image` (the model's input) as `request` says: checked first, then the attack with
/// `on_step` after every step (with `previews`, FGSM and PGD without restarts or early stop
/// run step by step and report the image after each; the result is the same), then the
/// predictions and both Grad-CAMs. A set `cancel` stops it with [`TriscopeError::Cancelled`].
pub fn attack_one(
    classifier: &Classifier,
    image: &PixelImage,
    request: &AttackRequest,
    previews: bool,
    on_step: &mut dyn FnMut(AttackStep),
    cancel: &AtomicBool,
) -> Result<AttackOutcome> {
    request.validate(classifier)?;
    let config = &request.config;
    let clean = classifier.predict(&[image])?.remove(0);
    let (goal, label) = request.goal(classifier, &clean);
    let started = std::time::Instant::now();
    let stepwise = previews
        && matches!(config.method, AttackMethod::Pgd | AttackMethod::Fgsm)
        && config.restarts == 1
        && !config.early_stop;
    let (adversarial_image, loss_per_step) = if stepwise {
        attack_step_by_step(classifier, image, &goal, config, on_step, cancel)?
    } else {
        let mut step = |r: &StepReport| {
            on_step(AttackStep {
                step: r.step,
                total_steps: r.total_steps,
                loss: r.loss.first().copied().unwrap_or(f32::NAN),
                preview: None,
            })
        };
        attack_pixels(classifier, image, &goal, config, &mut step, cancel)?
    };
    let attack_secs = started.elapsed().as_secs_f64();
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(TriscopeError::Cancelled);
    }
    let adversarial = classifier.predict(&[&adversarial_image])?.remove(0);
    let norms = PerturbationNorms::of(&adversarial_image.data, &image.data);
    // How far the explanation drifts: the same class's Grad-CAM on both images.
    let explained = TargetClass::Index(clean.class_index);
    let clean_cam = classifier.explain(image, request.layer, explained)?.gradcam;
    let adversarial_cam = classifier
        .explain(&adversarial_image, request.layer, explained)?
        .gradcam;
    let drift = CamDrift::between(&clean_cam, &adversarial_cam, &clean.class_name);
    Ok(AttackOutcome {
        fooled: request.fooled(&clean, &adversarial, label),
        clean,
        adversarial,
        adversarial_image,
        label,
        norms,
        loss_per_step,
        attack_secs,
        clean_cam,
        adversarial_cam,
        drift,
    })
}

/// FGSM or PGD one step at a time from the same random start, so that each step's image can
/// be shown (the app's live view); the same result as [`run_attack`] in one go.
fn attack_step_by_step(
    classifier: &Classifier,
    image: &PixelImage,
    goal: &AttackGoal,
    config: &AttackConfig,
    on_step: &mut dyn FnMut(AttackStep),
    cancel: &AtomicBool,
) -> Result<(PixelImage, Vec<f32>)> {
    let x = classifier.batch_tensor(&[image])?; // [1, C, H, W]
    let total = if config.method == AttackMethod::Fgsm {
        1
    } else {
        config.steps
    };
    let single = AttackConfig {
        steps: 1,
        ..config.clone()
    };
    let mut adv = crate::attack::random_start(&x, config);
    let mut losses = Vec::with_capacity(total);
    for step in 1..=total {
        let out = run_attack_from(
            classifier.model(),
            x.clone(),
            adv,
            goal,
            &single,
            &mut |_| {},
            cancel,
        )?;
        adv = out.adversarial;
        let loss = out
            .loss_per_step
            .first()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(f32::NAN);
        losses.push(loss);
        let preview = PixelImage {
            data: values(adv.clone(), "the adversarial image")?,
            ..image.clone()
        };
        on_step(AttackStep {
            step,
            total_steps: total,
            loss,
            preview: Some(preview),
        });
    }
    let adversarial = PixelImage {
        data: values(adv, "the adversarial image")?,
        ..image.clone()
    };
    Ok((adversarial, losses))
}

/// One image attacked: the adversarial image and the loss at each step.
pub fn attack_pixels(
    classifier: &Classifier,
    image: &PixelImage,
    goal: &AttackGoal,
    config: &AttackConfig,
    on_step: &mut dyn FnMut(&StepReport),
    cancel: &AtomicBool,
) -> Result<(PixelImage, Vec<f32>)> {
    let x = classifier.batch_tensor(&[image])?; // [1, C, H, W]
    let output = run_attack(classifier.model(), x, goal, config, on_step, cancel)?;
    let adversarial = PixelImage {
        data: values(output.adversarial, "the adversarial image")?,
        ..image.clone()
    };
    let losses = output.loss_per_step.iter().map(|l| l[0]).collect();
    Ok((adversarial, losses))
}

/// 16-bit RGB PNG: lossless for 8-bit sources and within 1/65535 of the float values.
fn write_rgb16(path: &Path, img: &PixelImage) -> Result<()> {
    let plane = img.height * img.width;
    let data: Vec<u16> = (0..plane)
        .flat_map(|i| {
            (0..3).map(move |c| {
                let src = if img.channels == 1 { 0 } else { c };
                (img.data[src * plane + i].clamp(0.0, 1.0) * 65535.0).round() as u16
            })
        })
        .collect();
    let buffer = image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(
        img.width as u32,
        img.height as u32,
        data,
    )
    .ok_or_else(|| TriscopeError::Compute(format!("{}: bad image size", path.display())))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    buffer
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| TriscopeError::Compute(format!("encoding {}: {e}", path.display())))?;
    write_atomic(path, &bytes.into_inner())
}
