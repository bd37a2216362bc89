//! `triscope attack`: one image attacked ([`triscope::attack::report`]), and what came of it.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Result;

use super::common::{choice, parse_fraction, print_prediction, progress_bar, resolve_class};
use triscope::attack::report::sweep::{self, SweepRequest, eps_label, write_sweep};
use triscope::attack::report::{AttackRequest, attack_image};
use triscope::attack::{AttackConfig, AttackMethod, Norm};
use triscope::inference::Classifier;
use triscope::model::LayerId;

/// Options of `triscope attack`.
#[derive(clap::Args, Debug)]
pub struct AttackArgs {
    /// The attack
    #[arg(long, default_value = "pgd", value_parser = choice::<AttackMethod>())]
    pub method: AttackMethod,
    /// L-inf radius in pixel units: 8/255 or 0.0314
    #[arg(long, default_value = "8/255", value_parser = parse_fraction)]
    pub eps: f32,
    /// PGD step size: 2/255 or 0.0078 [default: 2/255; in a sweep 2.5 eps / steps at each
    /// eps]
    #[arg(long, value_parser = parse_fraction)]
    pub alpha: Option<f32>,
    /// Iterations (PGD default 10, APGD 100, FAB-T 100 per target); Square's query budget
    /// (default 5,000)
    #[arg(long)]
    pub steps: Option<usize>,
    /// Start PGD at the clean image instead of a random point of the eps-ball
    #[arg(long)]
    pub no_random_start: bool,
    /// PGD threat model: linf (radius --eps) or l2 (radius --eps-l2)
    #[arg(long, default_value = "linf", value_parser = choice::<Norm>())]
    pub norm: Norm,
    /// L2 radius in pixel units (with --norm l2)
    #[arg(long, default_value = "0.5", value_parser = parse_fraction)]
    pub eps_l2: f32,
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
    /// Attack at each eps of a list instead (default 0,0.5,1,2,4,8/255; one denominator
    /// after the last value applies to all): sweep.csv (eps, prediction, true-class
    /// probability, Grad-CAM drift), sweep.json and sweep.png in --out
    #[arg(long, value_name = "LIST", num_args = 0..=1, default_missing_value = "0,0.5,1,2,4,8/255",
          value_parser = parse_eps_list)]
    pub sweep: Option<EpsList>,
}

/// A parsed `--sweep` list (L-inf budgets in pixel units, ascending).
#[derive(Debug, Clone)]
pub struct EpsList(pub Vec<f32>);

fn parse_eps_list(text: &str) -> Result<EpsList> {
    Ok(EpsList(sweep::parse_eps_list(text)?))
}

pub fn attack(
    image: &Path,
    args: &AttackArgs,
    out: &Path,
    classifier: &Classifier,
    json: bool,
) -> Result<ExitCode> {
    let method = args.method;
    let mut config = AttackConfig::of_method(method);
    config.eps_linf = args.eps;
    config.alpha = args.alpha.unwrap_or(2.0 / 255.0);
    if let Some(s) = args.steps {
        config.steps = s;
    }
    config.random_start = !args.no_random_start;
    config.seed = args.seed;
    config.norm = args.norm;
    config.eps_l2 = args.eps_l2;
    config.restarts = args.restarts;
    config.early_stop = args.early_stop;
    let cfg = classifier.config();
    let class = |c: &Option<String>| c.as_deref().map(|c| resolve_class(cfg, c)).transpose();
    let request = AttackRequest {
        config,
        target: class(&args.target)?,
        label: class(&args.label)?,
        layer: LayerId::Layer4,
    };
    if let Some(EpsList(eps_linf)) = &args.sweep {
        let request = SweepRequest {
            attack: request,
            eps_linf: eps_linf.clone(),
            scale_alpha: args.alpha.is_none(),
        };
        return run_sweep(image, &request, out, classifier, json);
    }
    let r = attack_image(
        classifier,
        image,
        &request,
        out,
        &mut |_| {},
        &AtomicBool::new(false),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("clean:");
        print_prediction(image, &r.clean, 0.0);
        println!(
            "{} {}, {} step(s) in {:.2}s: ||delta||_inf = {:.2}/255, ||delta||_2 = {:.3}, {}",
            r.method,
            match r.norm {
                Norm::Linf => format!("L-inf eps {:.1}/255", r.eps_linf * 255.0),
                Norm::L2 => format!("L2 eps {:.3}", r.eps_l2),
            },
            r.steps,
            r.elapsed_secs,
            r.linf_norm_x255,
            r.l2_norm,
            if r.fooled { "FOOLED" } else { "not fooled" }
        );
        println!("adversarial:");
        print_prediction(&out.join("adversarial.png"), &r.adversarial, 0.0);
        let st = &r.explanation_stability;
        println!(
            "Grad-CAM drift ({} for '{}'): SSIM {:.3}, Spearman {:.3}, top-15% overlap {:.3}",
            st.layer, st.class, st.ssim, st.spearman, st.top15_intersection
        );
        println!("written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--sweep`: the attack at each eps, a table on stdout and the files.
fn run_sweep(
    image: &Path,
    request: &SweepRequest,
    out: &Path,
    classifier: &Classifier,
    json: bool,
) -> Result<ExitCode> {
    let bar = progress_bar(request.eps_linf.len(), "eps");
    let loaded = classifier.load_image(image)?;
    let mut on_step = |s: sweep::SweepStep| bar.set_position(s.point as u64);
    let sweep = sweep::run_sweep(
        classifier,
        &loaded.pixels,
        &image.display().to_string(),
        request,
        &mut on_step,
        &AtomicBool::new(false),
    )?;
    bar.finish_and_clear();
    let files = write_sweep(&sweep, out)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sweep)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} ({} step(s), step size {}), true class '{}', Grad-CAM of '{}':",
        sweep.method, sweep.steps, sweep.alpha_rule, sweep.true_class, sweep.clean.class_name
    );
    println!(
        "{:>9}  {:<16} {:>7}  {:>11}  {:>6}  {:>6}",
        "eps", "predicted", "p", "p(true)", "SSIM", "drift"
    );
    for p in &sweep.points {
        println!(
            "{:>9}  {:<16} {:>7.3}  {:>11.3}  {:>6.3}  {:>6.3}{}",
            eps_label(p.eps_linf_x255),
            p.prediction.class_name,
            p.prediction.confidence,
            p.true_class_probability,
            p.cam.ssim,
            p.drift,
            if p.fooled { "  FOOLED" } else { "" }
        );
    }
    println!("{:.1}s; written: {}", sweep.elapsed_secs, files.join(", "));
    Ok(ExitCode::SUCCESS)
}
