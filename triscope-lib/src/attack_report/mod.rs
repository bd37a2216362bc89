//! One image attacked into files: the adversarial image (16-bit PNG and NPY), the clean image,
//! the perturbation amplified, both Grad-CAMs of the clean prediction's class and how far the
//! map drifted, and `attack.json` with the predictions and the settings.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::attack::{AttackConfig, AttackGoal, AttackMethod, Norm, StepReport, run_attack};
use crate::error::{Result, TriscopeError};
use crate::explain::{Colormap, GradCamMap, TargetClass, overlay_rgb8, quality};
use crate::folder::write_rgb8;
use crate::host::{PerturbationNorms, values};
use crate::imaging::PixelImage;
use crate::inference::{Classifier, Prediction};
use crate::model::LayerId;
use crate::weights::write_atomic;

pub mod sweep;

/// What to attack: the attack, and whom it aims at.
#[derive(Debug, Clone)]
pub struct AttackRequest {
    pub config: AttackConfig,
    /// Targeted at this class (single-label models, not APGD-T).
    pub target: Option<usize>,
    /// The true class (single-label); `None`: the model's own prediction.
    pub label: Option<usize>,
}

impl AttackRequest {
    /// Check the request against the model before any compute.
    pub fn validate(&self, classifier: &Classifier) -> Result<()> {
        self.config.validate()?;
        let cfg = classifier.config();
        let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
        if cfg.multi_label && (self.target.is_some() || self.config.method == AttackMethod::ApgdT) {
            return bad(format!(
                "targeted attacks and apgd-t need a single-label model; this one has {} findings",
                cfg.num_classes
            ));
        }
        if self.target.is_some() && self.config.method == AttackMethod::ApgdT {
            return bad(
                "apgd-t chooses its own targets; use pgd or apgd-ce with a target class".into(),
            );
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
    request.validate(classifier)?;
    let (config, cfg) = (&request.config, classifier.config());
    let method = config.method;
    let loaded = classifier.load_image(path)?;
    let p = &loaded.pixels;
    let clean = classifier.predict(&[p])?.remove(0);
    let (goal, label) = request.goal(classifier, &clean);
    let started = std::time::Instant::now();
    let (adv_img, loss_per_step) = attack_pixels(classifier, p, &goal, config, on_step, cancel)?;
    let elapsed_secs = started.elapsed().as_secs_f64();
    let adv = adv_img.data.clone();
    let adversarial = classifier.predict(&[&adv_img])?.remove(0);
    let norms = PerturbationNorms::of(&adv, &p.data);
    let linf = norms.linf;

    std::fs::create_dir_all(out).map_err(|source| TriscopeError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let (w, h) = (p.width, p.height);
    let mut files = Vec::new();
    let adv_path = out.join("adversarial.png");
    write_rgb16(&adv_path, &adv_img)?;
    files.push(adv_path.display().to_string());
    files.push(write_rgb8(&out.join("clean.png"), p.to_rgb8(), w, h)?);
    // Perturbation amplified to the full range: grey is zero, white is the largest positive
    // change, black the largest negative one (L-inf and L2 attacks alike).
    let scale = if linf > 0.0 { 0.5 / linf } else { 0.0 };
    let amplified = PixelImage {
        data: adv
            .iter()
            .zip(&p.data)
            .map(|(a, b)| 0.5 + (a - b) * scale)
            .collect(),
        ..p.clone()
    };
    files.push(write_rgb8(
        &out.join("perturbation.png"),
        amplified.to_rgb8(),
        w,
        h,
    )?);
    // How far the explanation drifts: the same class's Grad-CAM on both images.
    let explained = TargetClass::Index(clean.class_index);
    let cam_clean = classifier.explain(p, LayerId::Layer4, explained)?.gradcam;
    let cam_adv = classifier
        .explain(&adv_img, LayerId::Layer4, explained)?
        .gradcam;
    let drift = CamDrift::between(&cam_clean, &cam_adv, &clean.class_name);
    for (name, cam, img) in [
        ("gradcam_clean.png", &cam_clean, p),
        ("gradcam_adversarial.png", &cam_adv, &adv_img),
    ] {
        let overlay = overlay_rgb8(&img.to_rgb8(), &cam.map, Colormap::Jet, 0.4);
        files.push(write_rgb8(&out.join(name), overlay, w, h)?);
    }
    let npy_path = out.join("adversarial.npy");
    crate::npy::write_f32(&npy_path, &adv, &[p.channels, p.height, p.width])?;
    files.push(npy_path.display().to_string());
    let json_path = out.join("attack.json");
    files.push(json_path.display().to_string());

    let fooled = request.fooled(&clean, &adversarial, label);
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
