//! An ε sweep: one image attacked at a list of L∞ budgets with the same attack and seed, and
//! at each budget the prediction, the true class's probability and how far the Grad-CAM of
//! the clean prediction's class drifted (`drift = 1 - SSIM` to the clean map, so 0 means the
//! same map). The CLI writes it as `sweep.csv`, `sweep.json` and `sweep.png`; the app plots it.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{AttackRequest, CamDrift, attack_pixels};
use crate::attack::{AttackConfig, AttackMethod, Norm, StepReport};
use crate::error::{Result, TriscopeError};
use crate::explain::{Colormap, TargetClass, overlay_rgb8};
use crate::inference::{Classifier, Prediction};
use crate::io::imaging::PixelImage;
use crate::io::plot::{LineChart, PALETTE, Series, Tile, tick_label};
use crate::model::host::PerturbationNorms;
use crate::util::fsio::write_atomic;

/// The default budgets, in 1/255 units.
pub const DEFAULT_EPS_X255: [f32; 6] = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0];

/// At most this many budgets in one sweep (each is a whole attack and two Grad-CAMs).
pub const MAX_POINTS: usize = 32;

/// Parse a list of L∞ budgets in [0, 1] pixel units: `0,0.5,1,2,4,8/255` (one denominator
/// after the last value applies to every value without its own), `1/255,0.01`, `0.004,0.008`.
/// Values are sorted and repeats dropped; a negative value, one above 1, or more than
/// [`MAX_POINTS`] values is an error that names it.
pub fn parse_eps_list(text: &str) -> Result<Vec<f32>> {
    let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return bad(format!(
            "ε list {text:?}: an empty value (write e.g. 0,0.5,1,2,4,8/255)"
        ));
    }
    let slashes = items.iter().filter(|i| i.contains('/')).count();
    // "0,1,2,4/255": the last value's denominator is the whole list's.
    let shared = match items.last() {
        Some(last) if slashes == 1 && items.len() > 1 && last.contains('/') => {
            let (_, d) = last.split_once('/').unwrap_or(("", ""));
            Some(number(d.trim(), text)?)
        }
        _ => None,
    };
    let mut values = Vec::with_capacity(items.len());
    for item in &items {
        let v = match (item.split_once('/'), shared) {
            (Some((n, _)), Some(d)) => number(n.trim(), text)? / d,
            (Some((n, d)), None) => number(n.trim(), text)? / number(d.trim(), text)?,
            (None, Some(d)) => number(item, text)? / d,
            (None, None) => number(item, text)?,
        };
        if !v.is_finite() || !(0.0..=1.0).contains(&v) {
            return bad(format!(
                "ε list {text:?}: {item} is {v} in pixel units; every ε must be in [0, 1] \
                 (for 1/255 units end the list with /255: 0,1,2,4/255)"
            ));
        }
        values.push(v);
    }
    values.sort_by(f32::total_cmp);
    values.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    if values.len() > MAX_POINTS {
        return bad(format!(
            "ε list {text:?}: {} values; a sweep takes at most {MAX_POINTS}",
            values.len()
        ));
    }
    Ok(values)
}

fn number(s: &str, text: &str) -> Result<f32> {
    s.parse::<f32>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            TriscopeError::InvalidArgument(format!(
                "ε list {text:?}: {s:?} is not a number (write e.g. 0,0.5,1,2,4,8/255)"
            ))
        })
}

/// What to sweep: the attack (its `config.eps_linf` is replaced at each point; its layer is
/// where the Grad-CAM drift is measured) and the budgets.
#[derive(Debug, Clone)]
pub struct SweepRequest {
    pub attack: AttackRequest,
    /// L∞ budgets in [0, 1] pixel units, ascending.
    pub eps_linf: Vec<f32>,
    /// PGD's step as `2.5 ε / steps` at each point (Madry et al. 2018), so every budget gets
    /// the same relative schedule; `false` keeps `attack.config.alpha` everywhere.
    pub scale_alpha: bool,
}

impl SweepRequest {
    fn validate(&self, classifier: &Classifier) -> Result<()> {
        let bad = |m: String| Err(TriscopeError::InvalidArgument(m));
        if self.eps_linf.is_empty() || self.eps_linf.len() > MAX_POINTS {
            return bad(format!(
                "a sweep needs 1 to {MAX_POINTS} budgets, got {}",
                self.eps_linf.len()
            ));
        }
        if self.attack.config.norm != Norm::Linf {
            return bad("a sweep's budgets are L∞; use --norm linf".into());
        }
        for &e in &self.eps_linf {
            if !e.is_finite() || !(0.0..=1.0).contains(&e) {
                return bad(format!("every ε must be in [0, 1] pixel units, got {e}"));
            }
        }
        // The attack's other settings, checked at a budget where PGD's step is not 0.
        let largest = self.eps_linf.iter().copied().fold(1.0 / 255.0, f32::max);
        AttackRequest {
            config: self.config_at(largest),
            ..self.attack.clone()
        }
        .validate(classifier)
    }

    /// The attack at budget `eps`.
    fn config_at(&self, eps: f32) -> AttackConfig {
        let mut config = self.attack.config.clone();
        config.eps_linf = eps;
        if self.scale_alpha {
            config.alpha = 2.5 * eps / config.steps.max(1) as f32;
        }
        config
    }
}

/// Where a sweep is: the point (0-based) and the attack's step there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepStep {
    pub point: usize,
    pub points: usize,
    pub step: usize,
    pub total_steps: usize,
}

/// One budget of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub eps_linf: f32,
    pub eps_linf_x255: f32,
    /// PGD's step at this budget (pixel units).
    pub alpha: f32,
    pub prediction: Prediction,
    /// The probability of `Sweep::true_class` (for a multi-label model: that finding's).
    pub true_class_probability: f32,
    pub fooled: bool,
    /// The clean prediction's Grad-CAM here against the clean image's.
    pub cam: CamDrift,
    /// `1 - cam.ssim`: 0 where the map is the clean one.
    pub drift: f64,
    pub linf_norm_x255: f32,
    pub elapsed_secs: f64,
    /// The adversarial image (planar, like [`PixelImage::data`]).
    #[serde(skip)]
    pub adversarial: Vec<f32>,
    /// Its Grad-CAM in [0, 1] at the image's size (row-major).
    #[serde(skip)]
    pub cam_map: Vec<f32>,
}

/// A whole sweep (`sweep.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub image: String,
    pub model: String,
    pub method: String,
    pub steps: usize,
    pub seed: u64,
    pub alpha_rule: String,
    pub target_class: Option<String>,
    /// The class whose probability is tracked: the image's label when given, else the clean
    /// prediction; `true_class_source` says which (`label` or `prediction`).
    pub true_class: String,
    pub true_class_index: usize,
    pub true_class_source: String,
    pub clean: Prediction,
    pub points: Vec<SweepPoint>,
    pub elapsed_secs: f64,
    /// The clean image and its Grad-CAM (of the clean prediction's class).
    #[serde(skip)]
    pub clean_image: Option<PixelImage>,
    #[serde(skip)]
    pub clean_cam: Vec<f32>,
}

/// Attack `image` at every budget of `request` (ascending). `on_step` sees each point's steps;
/// a set `cancel` stops it with [`TriscopeError::Cancelled`].
pub fn run_sweep(
    classifier: &Classifier,
    image: &PixelImage,
    name: &str,
    request: &SweepRequest,
    on_step: &mut dyn FnMut(SweepStep),
    cancel: &AtomicBool,
) -> Result<Sweep> {
    request.validate(classifier)?;
    let started = Instant::now();
    let clean_expl = classifier.explain(image, request.attack.layer, TargetClass::Predicted)?;
    let clean = clean_expl.prediction;
    let clean_cam = clean_expl.gradcam;
    let (goal, label) = request.attack.goal(classifier, &clean);
    let explained = TargetClass::Index(clean.class_index);
    let points = request.eps_linf.len();
    let mut out = Vec::with_capacity(points);
    for (point, &eps) in request.eps_linf.iter().enumerate() {
        let point_started = Instant::now();
        let config = request.config_at(eps);
        let mut step = |r: &StepReport| {
            on_step(SweepStep {
                point,
                points,
                step: r.step,
                total_steps: r.total_steps,
            })
        };
        let (adv, _) = if eps == 0.0 {
            // Nothing fits in a zero ball: the clean image, without running the attack (PGD's
            // step would be 0, which it refuses).
            (image.clone(), Vec::new())
        } else {
            attack_pixels(classifier, image, &goal, &config, &mut step, cancel)?
        };
        let adv_expl = classifier.explain(&adv, request.attack.layer, explained)?;
        let prediction = adv_expl.prediction;
        let linf = PerturbationNorms::of(&adv.data, &image.data).linf;
        let cam = CamDrift::between(&clean_cam, &adv_expl.gradcam, &clean.class_name);
        out.push(SweepPoint {
            eps_linf: eps,
            eps_linf_x255: eps * 255.0,
            alpha: config.alpha,
            true_class_probability: prediction.scores.get(label).map_or(0.0, |s| s.probability),
            fooled: request.attack.fooled(&clean, &prediction, label),
            prediction,
            drift: 1.0 - cam.ssim,
            cam,
            linf_norm_x255: linf * 255.0,
            elapsed_secs: point_started.elapsed().as_secs_f64(),
            adversarial: adv.data,
            cam_map: adv_expl.gradcam.map,
        });
    }
    let cfg = classifier.config();
    let config = &request.attack.config;
    Ok(Sweep {
        image: name.to_string(),
        model: classifier.source.to_string(),
        method: config.method.name().to_string(),
        steps: if config.method == AttackMethod::Fgsm {
            1
        } else {
            config.steps
        },
        seed: config.seed,
        alpha_rule: if config.method != AttackMethod::Pgd {
            "not used by this attack".into()
        } else if request.scale_alpha {
            "2.5 eps / steps at each budget".into()
        } else {
            format!(
                "{}/255 at every budget",
                tick_label(config.alpha as f64 * 255.0)
            )
        },
        target_class: request.attack.target.map(|t| cfg.class_names[t].clone()),
        true_class: cfg.class_names[label].clone(),
        true_class_index: label,
        true_class_source: if request.attack.label.is_some() {
            "label".into()
        } else {
            "prediction".into()
        },
        clean,
        points: out,
        elapsed_secs: started.elapsed().as_secs_f64(),
        clean_image: Some(image.clone()),
        clean_cam: clean_cam.map,
    })
}

/// A budget as people write it: `2/255`, `0.5/255`.
pub fn eps_label(eps_linf_x255: f32) -> String {
    format!("{}/255", tick_label(eps_linf_x255 as f64))
}

/// `sweep.csv`: one row per budget.
pub fn csv(sweep: &Sweep) -> String {
    let mut text = String::from(
        "eps_linf_x255,eps_linf,attack,predicted_class,predicted_probability,true_class,\
         true_class_probability,fooled,cam_ssim,drift,cam_spearman,linf_norm_x255\n",
    );
    for p in &sweep.points {
        text.push_str(&format!(
            "{},{},{},{},{:.6},{},{:.6},{},{:.6},{:.6},{:.6},{:.4}\n",
            tick_label(p.eps_linf_x255 as f64),
            p.eps_linf,
            sweep.method,
            p.prediction.class_name,
            p.prediction.confidence,
            sweep.true_class,
            p.true_class_probability,
            p.fooled,
            p.cam.ssim,
            p.drift,
            p.cam.spearman,
            p.linf_norm_x255,
        ));
    }
    text
}

/// The figure: the true class's probability and the map's SSIM to the clean map against ε
/// (points evenly spaced), and below it each budget's adversarial image and Grad-CAM.
pub fn figure(sweep: &Sweep) -> Result<image::RgbImage> {
    let at = |f: &dyn Fn(&SweepPoint) -> f64| -> Vec<(f64, f64)> {
        sweep
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64, f(p)))
            .collect()
    };
    let chart = LineChart {
        title: format!(
            "{} on {}: {}",
            sweep.method,
            Path::new(&sweep.image)
                .file_name()
                .map_or(sweep.image.clone(), |n| n.to_string_lossy().into_owned()),
            sweep.model
        ),
        x_label: "ε (L∞, /255)".into(),
        y_label: "probability / SSIM".into(),
        series: vec![
            Series {
                name: format!("p({})", sweep.true_class),
                points: at(&|p| p.true_class_probability as f64),
                color: PALETTE[0],
            },
            Series {
                name: "Grad-CAM SSIM".into(),
                points: at(&|p| p.cam.ssim),
                color: PALETTE[1],
            },
        ],
        y_range: Some((0.0, 1.0)),
        x_ticks: sweep
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64, tick_label(p.eps_linf_x255 as f64)))
            .collect(),
    };
    let width = (sweep.points.len() as u32 * 128 + 200).max(900);
    let chart = crate::io::plot::render_line_chart(&chart, width, 420)?;
    let Some(clean) = &sweep.clean_image else {
        return Ok(chart);
    };
    let (w, h) = (clean.width, clean.height);
    let tile = |data: &[f32]| -> Tile {
        let rgb = PixelImage {
            data: data.to_vec(),
            ..clean.clone()
        }
        .to_rgb8();
        (rgb, w.min(h))
    };
    let columns: Vec<String> = sweep
        .points
        .iter()
        .map(|p| {
            format!(
                "{}: {} {:.2}",
                tick_label(p.eps_linf_x255 as f64),
                p.prediction.class_name,
                p.prediction.confidence
            )
        })
        .collect();
    let images: Vec<Tile> = sweep.points.iter().map(|p| tile(&p.adversarial)).collect();
    let maps: Vec<Tile> = sweep
        .points
        .iter()
        .map(|p| {
            let rgb = PixelImage {
                data: p.adversarial.clone(),
                ..clean.clone()
            }
            .to_rgb8();
            (overlay_rgb8(&rgb, &p.cam_map, Colormap::Jet, 0.4), w.min(h))
        })
        .collect();
    let grid = crate::io::plot::render_image_grid(
        "adversarial image and Grad-CAM at each ε (predicted class, probability)",
        &columns,
        &[
            ("image".into(), images),
            (format!("Grad-CAM of {}", sweep.clean.class_name), maps),
        ],
        120,
    )?;
    let mut all = image::RgbImage::from_pixel(
        chart.width().max(grid.width()),
        chart.height() + grid.height(),
        image::Rgb([255, 255, 255]),
    );
    image::imageops::overlay(&mut all, &chart, 0, 0);
    image::imageops::overlay(&mut all, &grid, 0, chart.height() as i64);
    Ok(all)
}

/// Write `sweep.csv`, `sweep.json` and `sweep.png` into `out` (created); the paths written.
pub fn write_sweep(sweep: &Sweep, out: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(out).map_err(|source| TriscopeError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let (csv_path, json_path, png_path) = (
        out.join("sweep.csv"),
        out.join("sweep.json"),
        out.join("sweep.png"),
    );
    write_atomic(&csv_path, csv(sweep).as_bytes())?;
    let json = serde_json::to_string_pretty(sweep)
        .map_err(|e| TriscopeError::Compute(format!("writing the sweep as JSON: {e}")))?;
    write_atomic(&json_path, json.as_bytes())?;
    crate::io::plot::write_png(&png_path, &figure(sweep)?)?;
    Ok([csv_path, json_path, png_path]
        .iter()
        .map(|p| p.display().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x255(text: &str) -> Vec<f32> {
        parse_eps_list(text)
            .unwrap()
            .iter()
            .map(|v| (v * 255.0 * 1000.0).round() / 1000.0)
            .collect()
    }

    #[test]
    fn parses_lists_with_one_shared_or_many_denominators() {
        assert_eq!(x255("0,0.5,1,2,4,8/255"), [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]);
        assert_eq!(x255("0,1,2,4/255"), [0.0, 1.0, 2.0, 4.0]);
        assert_eq!(x255("4/255, 1/255,2/255"), [1.0, 2.0, 4.0]);
        assert_eq!(x255("8/255"), [8.0]);
        assert_eq!(parse_eps_list("0.01,0.002,0.01").unwrap(), [0.002, 0.01]);
    }

    #[test]
    fn refuses_negative_large_and_unreadable_values() {
        for (text, says) in [
            ("0,-1,2/255", "-1"),
            ("0,2,4", "[0, 1]"),
            ("0,300/255", "[0, 1]"),
            ("0,,2/255", "empty"),
            ("0,two/255", "not a number"),
            ("1/0", "[0, 1]"),
            ("", "empty"),
        ] {
            let e = parse_eps_list(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let e = parse_eps_list(&format!("{}/255", many.join(",")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most"), "{e}");
    }
}
