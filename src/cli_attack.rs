//! `triscope attack` and `triscope eval`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::cli::{print_prediction, resolve_class, save_rgb8};
use triscope::attack::{AttackConfig, AttackGoal, AttackMethod, run_attack};
use triscope::data::{Dataset, Label};
use triscope::eval::run::{EvalRecord, evaluate_classifier, model_labels};
use triscope::eval::{EvalAttack, EvalOptions, EvalReport};
use triscope::explain::{Colormap, TargetClass, overlay_rgb8, quality};
use triscope::inference::{Classifier, Prediction};
use triscope::model::LayerId;
use triscope::weights::write_atomic;

/// Parse an eps or step size: `8/255`, `0.0314`.
pub fn parse_fraction(s: &str) -> Result<f32> {
    let s = s.trim();
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let a: f64 = a
                .trim()
                .parse()
                .with_context(|| format!("'{s}' is not a number or a fraction"))?;
            let b: f64 = b
                .trim()
                .parse()
                .with_context(|| format!("'{s}' is not a number or a fraction"))?;
            if b == 0.0 {
                bail!("'{s}' divides by zero");
            }
            a / b
        }
        None => s
            .parse::<f64>()
            .with_context(|| format!("'{s}' is not a number or a fraction"))?,
    };
    if !v.is_finite() {
        bail!("'{s}' is not finite");
    }
    Ok(v as f32)
}

/// Parse a sweep `0,1,2,4,8,16/255` (a trailing `/255` applies to every entry without one).
pub fn parse_sweep(s: &str) -> Result<Vec<f32>> {
    let (body, common) = match s.rsplit_once('/') {
        Some((body, denom)) if !body.contains('/') => (body, Some(denom)),
        _ => (s, None),
    };
    body.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match common {
            Some(d) => parse_fraction(&format!("{p}/{d}")),
            None => parse_fraction(p),
        })
        .collect()
}

/// Options of `triscope attack`.
#[derive(clap::Args, Debug)]
pub struct AttackArgs {
    /// fgsm, pgd, apgd-ce or apgd-t
    #[arg(long, default_value = "pgd")]
    pub method: String,
    /// L-inf radius in pixel units: 8/255 or 0.0314
    #[arg(long, default_value = "8/255")]
    pub eps: String,
    /// PGD step size: 2/255 or 0.0078
    #[arg(long, default_value = "2/255")]
    pub alpha: String,
    /// Iterations (PGD default 10, APGD 100)
    #[arg(long)]
    pub steps: Option<usize>,
    /// Start PGD at the clean image instead of a random point of the eps-ball
    #[arg(long)]
    pub no_random_start: bool,
    /// PGD threat model: linf (radius --eps) or l2 (radius --eps-l2)
    #[arg(long, default_value = "linf")]
    pub norm: String,
    /// L2 radius in pixel units (with --norm l2)
    #[arg(long, default_value = "0.5")]
    pub eps_l2: String,
    /// Independent random restarts (per sample the first success is kept)
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// Stop as soon as the image is fooled
    #[arg(long)]
    pub early_stop: bool,
    /// Targeted attack towards this class (index or name)
    #[arg(long, value_name = "CLASS")]
    pub target: Option<String>,
    /// True class (index or name); default: the model's own prediction
    #[arg(long, value_name = "CLASS")]
    pub label: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Serialize)]
struct AttackSummary<'a> {
    image: String,
    model: String,
    device: String,
    method: &'static str,
    norm: triscope::attack::Norm,
    eps_linf: f32,
    eps_l2: f32,
    l2_norm: f32,
    restarts: usize,
    eps_linf_x255: f32,
    alpha: f32,
    steps: usize,
    random_start: bool,
    target_class: Option<String>,
    attacked_label: String,
    clean: &'a Prediction,
    adversarial: &'a Prediction,
    fooled: bool,
    linf_norm: f32,
    linf_norm_x255: f32,
    loss_per_step: Vec<f32>,
    elapsed_secs: f64,
    /// Grad-CAM (layer4, the clean prediction's class) of the clean vs the adversarial image.
    explanation_stability: Stability,
    files: Vec<String>,
}

#[derive(Serialize)]
struct Stability {
    layer: &'static str,
    class: String,
    ssim: f64,
    spearman: f64,
    top15_intersection: f64,
}

pub fn attack(
    image: &Path,
    args: &AttackArgs,
    out: &Path,
    classifier: &Classifier,
    json: bool,
) -> Result<ExitCode> {
    let method: AttackMethod = args.method.parse()?;
    let mut config = match method {
        AttackMethod::Fgsm => AttackConfig::fgsm(),
        AttackMethod::Pgd => AttackConfig::pgd(10),
        m => AttackConfig::apgd(m),
    };
    config.eps_linf = parse_fraction(&args.eps)?;
    config.alpha = parse_fraction(&args.alpha)?;
    if let Some(s) = args.steps {
        config.steps = s;
    }
    config.random_start = !args.no_random_start;
    config.seed = args.seed;
    config.norm = args.norm.parse()?;
    config.eps_l2 = parse_fraction(&args.eps_l2)?;
    config.restarts = args.restarts;
    config.early_stop = args.early_stop;
    config.validate()?;
    let cfg = classifier.config();
    if cfg.multi_label && (args.target.is_some() || method == AttackMethod::ApgdT) {
        bail!(
            "targeted attacks and apgd-t need a single-label model; this one has {} findings",
            cfg.num_classes
        );
    }
    let target = args
        .target
        .as_deref()
        .map(|t| resolve_class(cfg, t))
        .transpose()?;
    if target.is_some() && method == AttackMethod::ApgdT {
        bail!("apgd-t chooses its own targets; use --method pgd or apgd-ce with --target");
    }

    let loaded = classifier.load_image(image)?;
    let clean = classifier.predict(&[&loaded.pixels])?.remove(0);
    let label = match &args.label {
        Some(l) => resolve_class(cfg, l)?,
        None => clean.class_index,
    };
    let goal = match (cfg.multi_label, target) {
        (true, _) => AttackGoal::MultiLabel(vec![clean.finding_decisions()]),
        (false, Some(t)) => AttackGoal::Targeted(vec![t]),
        (false, None) => AttackGoal::Untargeted(vec![label]),
    };
    let p = &loaded.pixels;
    let device = classifier.device().device.clone();
    let x = Tensor::<4>::from_data(
        TensorData::new(p.data.clone(), [1, p.channels, p.height, p.width]),
        &device,
    );
    let started = std::time::Instant::now();
    let output = run_attack(
        classifier.model(),
        x,
        &goal,
        &config,
        &mut |_| {},
        &AtomicBool::new(false),
    )?;
    let elapsed_secs = started.elapsed().as_secs_f64();
    let adv = triscope::host::values(output.adversarial, "the adversarial image")?;
    let adv_img = triscope::imaging::PixelImage {
        data: adv.clone(),
        ..p.clone()
    };
    let adversarial = classifier.predict(&[&adv_img])?.remove(0);
    let norms = triscope::host::PerturbationNorms::of(&adv, &p.data);
    let linf = norms.linf;

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (w, h) = (p.width as u32, p.height as u32);
    let mut files = Vec::new();
    // 16-bit PNG: lossless for 8-bit sources and within 1/65535 of the float values.
    let to16 = |img: &triscope::imaging::PixelImage| -> Vec<u16> {
        let plane = img.height * img.width;
        (0..plane)
            .flat_map(|i| {
                (0..3).map(move |c| {
                    let src = if img.channels == 1 { 0 } else { c };
                    (img.data[src * plane + i].clamp(0.0, 1.0) * 65535.0).round() as u16
                })
            })
            .collect()
    };
    let adv_path = out.join("adversarial.png");
    image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(w, h, to16(&adv_img))
        .context("adversarial buffer")?
        .save(&adv_path)
        .with_context(|| format!("cannot write {}", adv_path.display()))?;
    files.push(adv_path.display().to_string());
    files.push(save_rgb8(&out.join("clean.png"), &p.to_rgb8(), w, h)?);
    // Perturbation amplified to the full range: grey is zero, white is the largest positive
    // change, black the largest negative one (L-inf and L2 attacks alike).
    let scale = if linf > 0.0 { 0.5 / linf } else { 0.0 };
    let amplified = triscope::imaging::PixelImage {
        data: adv
            .iter()
            .zip(&p.data)
            .map(|(a, b)| 0.5 + (a - b) * scale)
            .collect(),
        ..p.clone()
    };
    files.push(save_rgb8(
        &out.join("perturbation.png"),
        &amplified.to_rgb8(),
        w,
        h,
    )?);
    // How far the explanation drifts: the same class's Grad-CAM on both images.
    let explained = TargetClass::Index(clean.class_index);
    let cam_clean = classifier.explain(p, LayerId::Layer4, explained)?.gradcam;
    let cam_adv = classifier
        .explain(&adv_img, LayerId::Layer4, explained)?
        .gradcam;
    let stability = Stability {
        layer: "layer4",
        class: clean.class_name.clone(),
        ssim: quality::ssim(
            &cam_clean.map,
            &cam_adv.map,
            cam_clean.height,
            cam_clean.width,
        ),
        spearman: quality::spearman(&cam_clean.map, &cam_adv.map),
        top15_intersection: quality::top_k_intersection(&cam_clean.map, &cam_adv.map, 0.15),
    };
    for (name, cam, img) in [
        ("gradcam_clean.png", &cam_clean, p),
        ("gradcam_adversarial.png", &cam_adv, &adv_img),
    ] {
        let overlay = overlay_rgb8(&img.to_rgb8(), &cam.map, Colormap::Jet, 0.4);
        files.push(save_rgb8(&out.join(name), &overlay, w, h)?);
    }
    let npy_path = out.join("adversarial.npy");
    triscope::npy::write_f32(&npy_path, &adv, &[p.channels, p.height, p.width])?;
    files.push(npy_path.display().to_string());
    let json_path = out.join("attack.json");
    files.push(json_path.display().to_string());

    let fooled = match (&goal, target) {
        (AttackGoal::Targeted(_), Some(t)) => adversarial.class_index == t,
        (AttackGoal::MultiLabel(_), _) => adversarial.positive_findings != clean.positive_findings,
        _ => adversarial.class_index != label,
    };
    let summary = AttackSummary {
        image: image.display().to_string(),
        model: classifier.source.to_string(),
        device: classifier.device().description.clone(),
        method: method.name(),
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
        target_class: target.map(|t| cfg.class_names[t].clone()),
        attacked_label: cfg.class_names[label].clone(),
        clean: &clean,
        adversarial: &adversarial,
        fooled,
        linf_norm: linf,
        linf_norm_x255: linf * 255.0,
        loss_per_step: output.loss_per_step.iter().map(|l| l[0]).collect(),
        elapsed_secs,
        explanation_stability: stability,
        files,
    };
    let text = serde_json::to_string_pretty(&summary)?;
    write_atomic(&json_path, text.as_bytes())?;
    if json {
        println!("{text}");
    } else {
        println!("clean:");
        print_prediction(image, &clean, 0.0);
        println!(
            "{} {}, {} step(s) in {:.2}s: ||delta||_inf = {:.2}/255, ||delta||_2 = {:.3}, {}",
            method.name(),
            match config.norm {
                triscope::attack::Norm::Linf =>
                    format!("L-inf eps {:.1}/255", config.eps_linf * 255.0),
                triscope::attack::Norm::L2 => format!("L2 eps {:.3}", config.eps_l2),
            },
            summary.steps,
            elapsed_secs,
            linf * 255.0,
            summary.l2_norm,
            if fooled { "FOOLED" } else { "not fooled" }
        );
        println!("adversarial:");
        print_prediction(&adv_path, &adversarial, 0.0);
        let st = &summary.explanation_stability;
        println!(
            "Grad-CAM drift ({} for '{}'): SSIM {:.3}, Spearman {:.3}, top-15% overlap {:.3}",
            st.layer, st.class, st.ssim, st.spearman, st.top15_intersection
        );
        println!("written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `triscope eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Dataset: a HAM10000 or ChestX-ray14 folder (labels.csv), a MedMNIST .npz, or a
    /// folder with one sub-folder per class
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Split (default: test where there is one, else all)
    #[arg(long)]
    pub split: Option<String>,
    /// Comma-separated: clean, fgsm, pgd10, pgd20, apgd-ce, apgd-t, aa
    #[arg(long, default_value = "clean,fgsm,pgd10")]
    pub attacks: String,
    /// L-inf radius: 8/255 or 0.0314
    #[arg(long, default_value = "8/255")]
    pub eps: String,
    /// PGD-10 accuracy at each radius, e.g. 0,1,2,4,8,16/255 (writes a PNG plot)
    #[arg(long)]
    pub eps_sweep: Option<String>,
    /// Evaluate only the first N samples (classes interleaved)
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// APGD iterations (AutoAttack standard: 100)
    #[arg(long, default_value_t = 100)]
    pub apgd_iterations: usize,
    /// Skip the fooled-evaluation checks (they add PGD-10 at 64/255 and a noise baseline)
    #[arg(long)]
    pub no_checks: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Parse and check `args` (before any compute) and open the dataset, limited.
pub(crate) fn open_eval_dataset(args: &EvalArgs) -> Result<(Dataset, EvalOptions)> {
    let options = EvalOptions {
        attacks: EvalAttack::parse_list(&args.attacks)?,
        eps_linf: parse_fraction(&args.eps)?,
        eps_sweep: args
            .eps_sweep
            .as_deref()
            .map(parse_sweep)
            .transpose()?
            .unwrap_or_default(),
        batch_size: args.batch_size,
        apgd_iterations: args.apgd_iterations,
        seed: args.seed,
        checks: !args.no_checks,
    };
    options.validate()?;
    let mut dataset = Dataset::open(&args.data, args.split.as_deref())?;
    if let Some(n) = args.limit {
        if n == 0 {
            bail!("--limit must be at least 1");
        }
        dataset.limit(n);
    }
    Ok((dataset, options))
}

/// Run the evaluation behind a progress bar.
fn run_evaluation(
    dataset: &Dataset,
    labels: &[Label],
    options: &EvalOptions,
    classifier: &Classifier,
) -> Result<EvalReport> {
    eprintln!(
        "evaluating {} ({} split, {} images) with {} on {}: {}",
        dataset.root.display(),
        dataset.split,
        dataset.len(),
        classifier.source,
        classifier.device().description,
        options
            .attacks
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bar = progress_bar(dataset.len(), "images");
    let report = evaluate_classifier(
        classifier,
        dataset,
        labels,
        options,
        &mut |done, _| bar.set_position(done as u64),
        &AtomicBool::new(false),
    )?;
    bar.finish_and_clear();
    Ok(report)
}

/// An indicatif bar counting `what`.
pub(crate) fn progress_bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}, {{elapsed}} elapsed, eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

pub fn eval(args: &EvalArgs, out: &Path, classifier: &Classifier, json: bool) -> Result<ExitCode> {
    // Everything is checked before any compute starts.
    let (dataset, options) = open_eval_dataset(args)?;
    let labels = model_labels(&dataset, classifier.config())?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let report = run_evaluation(&dataset, &labels, &options, classifier)?;
    let record = EvalRecord::new(classifier, &args.data, &dataset.split, report);
    let written = record.write(out)?;
    if json {
        println!("{}", record.to_json()?);
    } else {
        print_eval_table(&record.report);
        for p in &written {
            println!("wrote {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        _ => "-".into(),
    }
}

fn print_eval_table(r: &EvalReport) {
    println!(
        "{} images, eps {:.2}/255, {:.1}s",
        r.n,
        r.eps_linf * 255.0,
        r.elapsed_secs
    );
    if r.multi_label {
        println!(
            "{:<16} {:>8} {:>10} {:>10}",
            "attack", "eps/255", "mean AUROC", "mean AUPRC"
        );
        for res in &r.results {
            let m = res.multi_label.as_ref();
            println!(
                "{:<16} {:>8.2} {:>10} {:>10}",
                res.attack,
                res.eps_linf * 255.0,
                fmt(m.map(|m| m.mean_auroc)),
                fmt(m.map(|m| m.mean_auprc))
            );
        }
    } else {
        println!(
            "{:<16} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9}",
            "attack", "eps/255", "top-1", "top-2", "balanced", "macro-F1", "success"
        );
        for res in &r.results {
            let m = res.metrics.as_ref();
            println!(
                "{:<16} {:>8.2} {:>8} {:>8} {:>9} {:>8} {:>9}",
                res.attack,
                res.eps_linf * 255.0,
                fmt(m.map(|m| m.accuracy)),
                fmt(m.map(|m| m.top2_accuracy)),
                fmt(m.map(|m| m.balanced_accuracy)),
                fmt(m.map(|m| m.macro_f1)),
                fmt(res.attack_success_rate)
            );
        }
        if let Some(clean) = r.result("clean").and_then(|c| c.metrics.as_ref()) {
            println!("per-class accuracy (clean / attacks):");
            for (i, name) in r.class_names.iter().enumerate() {
                let cols: Vec<String> = r
                    .results
                    .iter()
                    .filter(|x| x.eps_linf == r.eps_linf || x.attack == "clean")
                    .filter_map(|x| {
                        x.metrics
                            .as_ref()
                            .map(|m| format!("{}={}", x.attack, fmt(Some(m.per_class_accuracy[i]))))
                    })
                    .collect();
                let support: usize = clean.confusion[i].iter().sum();
                println!("  {:<10} n={:<5} {}", name, support, cols.join("  "));
            }
        }
    }
    if r.checks.is_empty() {
        return;
    }
    println!("fooled-evaluation checks:");
    for c in &r.checks {
        println!(
            "  [{}] {}: {}",
            if c.passed { "ok" } else { "WARN" },
            c.name,
            c.detail
        );
        if let Some(cause) = &c.likely_cause {
            println!("         likely cause: {cause}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_and_sweeps() {
        assert!((parse_fraction("8/255").unwrap() - 8.0 / 255.0).abs() < 1e-9);
        assert!((parse_fraction("0.5").unwrap() - 0.5).abs() < 1e-9);
        assert!(parse_fraction("x/255").is_err());
        assert!(parse_fraction("1/0").is_err());
        let s = parse_sweep("0,1,2,4,8,16/255").unwrap();
        assert_eq!(s.len(), 6);
        assert!((s[5] - 16.0 / 255.0).abs() < 1e-9);
        assert_eq!(parse_sweep("0.1,0.2").unwrap(), vec![0.1, 0.2]);
    }
}
