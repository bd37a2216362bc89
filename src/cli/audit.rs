//! `triscope audit`: parses the options, runs [`triscope::audit::run_audit`] behind progress
//! bars and prints the summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};

use super::common::{StageBars, choice, parse_fraction, tcav_mark};
use super::eval::{EvalArgs, open_eval_dataset};
use triscope::audit::{
    AuditOptions, AuditProgress, AuditReport, ConceptFolder, TcavOptions, run_audit,
};
use triscope::explain::Method;
use triscope::explain::checklist::DEFAULT_DERM7PT;
use triscope::inference::Classifier;
use triscope::model::LayerId;

/// Options of `triscope audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Images the explanation metrics run on (the first N evaluated, classes interleaved;
    /// with box annotations, images that have a box of one of the model's classes first)
    #[arg(long, default_value_t = 21)]
    pub explain_samples: usize,
    /// Attribution method of the explanation metrics
    #[arg(long, default_value = "gradcam", value_parser = choice::<Method>())]
    pub method: Method,
    /// Layer of the CAM methods
    #[arg(long, default_value = "layer4", value_parser = choice::<LayerId>())]
    pub layer: LayerId,
    /// L-inf radius of the stability attacks (default: --eps)
    #[arg(long, value_parser = parse_fraction)]
    pub stability_eps: Option<f32>,
    /// Images of the model-randomisation sanity check
    #[arg(long, default_value_t = 2)]
    pub sanity_images: usize,
    /// Methods of the sanity check, comma-separated
    #[arg(
        long,
        default_value = "gradcam,saliency",
        value_delimiter = ',',
        value_parser = choice::<Method>()
    )]
    pub sanity_methods: Vec<Method>,
    /// TCAV concept as NAME=FOLDER (repeatable). Without one, a HAM10000 dataset gets
    /// lesion-size concepts built from its train-split masks
    #[arg(long, value_name = "NAME=FOLDER", value_parser = concept_folder)]
    pub concept: Vec<ConceptFolder>,
    /// Folder of random images for TCAV with --concept (split into runs + 1 sets)
    #[arg(long, value_name = "FOLDER")]
    pub random: Option<PathBuf>,
    /// Built-in concepts: `derm7pt` (the seven-point checklist from ../shared/data/derm7pt)
    /// or `derm7pt=FOLDER`; its TCAV layers default to layer3,layer4
    #[arg(long, value_name = "derm7pt[=FOLDER]", value_parser = checklist_source)]
    pub concepts: Option<PathBuf>,
    /// TCAV runs per concept (default 5; 10 with --concepts derm7pt)
    #[arg(long)]
    pub tcav_runs: Option<usize>,
    /// Images per TCAV concept and per random set
    #[arg(long, default_value_t = 30)]
    pub tcav_images: usize,
    /// TCAV layers, comma-separated (default layer2,layer3; layer3,layer4 with --concepts)
    #[arg(long, value_delimiter = ',', value_parser = choice::<LayerId>())]
    pub tcav_layers: Option<Vec<LayerId>>,
    /// Skip TCAV
    #[arg(long)]
    pub no_tcav: bool,
}

pub fn audit(
    args: &AuditArgs,
    out: &Path,
    classifier: &Classifier,
    json: bool,
) -> Result<ExitCode> {
    // Everything is parsed and checked before compute.
    let options = audit_options(args)?;
    let (dataset, mut eval) = open_eval_dataset(&args.eval)?;
    if eval.eps_sweep.is_empty() {
        eval.eps_sweep = options.eval.eps_sweep.clone();
    }
    let options = AuditOptions { eval, ..options };
    eprintln!(
        "auditing {} ({} split, {} images) with {} on {}",
        dataset.root.display(),
        dataset.split,
        dataset.len(),
        classifier.source,
        classifier.device().description,
    );
    let mut bars = StageBars::default();
    let mut show = |p: AuditProgress| bars.show(p.stage, p.stage.label(), p.done, p.total);
    let report = run_audit(
        classifier,
        &dataset,
        &options,
        out,
        &mut show,
        &AtomicBool::new(false),
    )
    .with_context(|| format!("auditing into {}", out.display()))?;
    bars.finish();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
        println!("wrote {}", out.join("audit.html").display());
        println!("wrote {}", out.join("audit.json").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `NAME=FOLDER`.
fn concept_folder(spec: &str) -> Result<ConceptFolder> {
    let Some((name, folder)) = spec.split_once('=') else {
        bail!("'{spec}': use NAME=FOLDER");
    };
    Ok(ConceptFolder {
        name: name.to_string(),
        folder: PathBuf::from(folder),
    })
}

/// The audit's own options (the evaluation's are [`open_eval_dataset`]'s); the library checks
/// them ([`AuditOptions::validate`]) before any compute.
fn audit_options(args: &AuditArgs) -> Result<AuditOptions> {
    Ok(AuditOptions {
        explain_samples: args.explain_samples,
        method: args.method,
        layer: args.layer,
        stability_eps: args.stability_eps,
        sanity_images: args.sanity_images,
        sanity_methods: args.sanity_methods.clone(),
        tcav: (!args.no_tcav).then(|| {
            let checklist = args.concepts.is_some();
            TcavOptions {
                concepts: args.concept.clone(),
                random: args.random.clone(),
                runs: args.tcav_runs.unwrap_or(if checklist { 10 } else { 5 }),
                images: args.tcav_images,
                layers: args.tcav_layers.clone().unwrap_or_else(|| {
                    if checklist {
                        vec![LayerId::Layer3, LayerId::Layer4]
                    } else {
                        vec![LayerId::Layer2, LayerId::Layer3]
                    }
                }),
                checklist: args.concepts.clone(),
            }
        }),
        ..AuditOptions::default()
    })
}

fn print_summary(r: &AuditReport) {
    if let Some(ev) = &r.evaluation {
        for res in &ev.results {
            println!(
                "{:<14} eps {:>6.2}/255  {:.3}",
                res.attack,
                res.eps_linf * 255.0,
                res.score
            );
        }
    }
    let e = &r.explanation;
    println!(
        "{} on {} images: deletion AUC {:.3} (random {:.3}), insertion AUC {:.3} (random {:.3}), average drop {:.1}%, increase {:.1}%",
        e.method,
        e.samples,
        e.deletion_auc.mean,
        e.random_deletion_auc.mean,
        e.insertion_auc.mean,
        e.random_insertion_auc.mean,
        e.average_drop.mean,
        e.increase_in_confidence.mean
    );
    if let (Some(l), Some(p)) = (&e.localisation, &e.centre_prior_localisation) {
        println!(
            "localisation: IoU top15 {:.3} (centre prior {:.3}), energy PG {:.3} ± {:.3} ({:.3}; \
             the regions cover {:.3}), pointing game {:.3} ({:.3}) over {} regions",
            l.iou_top15.mean,
            p.iou_top15.mean,
            l.energy_pointing_game.mean,
            l.energy_pointing_game_std,
            p.energy_pointing_game.mean,
            l.region_area_fraction.mean,
            l.pointing_game.mean,
            p.pointing_game.mean,
            l.iou_top15.n
        );
    }
    for s in &e.stability {
        println!(
            "stability {:<6} eps {:.2}/255: flipped {:.2}, SSIM {:.3}, Spearman {:.3}, top-15% overlap {:.3}",
            s.attack,
            s.eps_linf * 255.0,
            s.flip_rate.mean,
            s.ssim.mean,
            s.spearman.mean,
            s.top15_intersection.mean
        );
    }
    for s in &r.sanity {
        println!(
            "sanity {:<10} {}: SSIM after full randomisation {:.3} -> {}",
            s.method,
            s.image,
            s.check.steps.last().map(|x| x.ssim).unwrap_or(f64::NAN),
            if s.check.passed { "pass" } else { "FAIL" }
        );
    }
    for t in &r.tcav {
        println!(
            "TCAV {:<26} {} {:<6} {:.2} ± {:.2} (random {:.2}), p {:.2e}, Holm {:.2e}, CAV \
             accuracy {:.3}{}",
            t.concept,
            t.layer,
            t.class_name,
            t.mean,
            t.std,
            t.random_mean,
            t.p_value,
            t.p_holm,
            t.cav_accuracy(),
            tcav_mark(t)
        );
    }
    println!(
        "{}",
        triscope::audit::html::out_of_distribution_line(&r.samples)
    );
    for w in &r.warnings {
        println!("WARNING: {w}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

/// `--concepts derm7pt` (the shared data folder) or `derm7pt=FOLDER`.
fn checklist_source(s: &str) -> std::result::Result<PathBuf, String> {
    match s.split_once('=') {
        Some(("derm7pt", folder)) if !folder.is_empty() => Ok(PathBuf::from(folder)),
        None if s == "derm7pt" => Ok(PathBuf::from(DEFAULT_DERM7PT)),
        _ => Err(format!(
            "'{s}' is not a concept source: use derm7pt (the seven-point checklist from \
             {DEFAULT_DERM7PT}) or derm7pt=FOLDER"
        )),
    }
}
