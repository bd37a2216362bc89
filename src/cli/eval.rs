//! `triscope eval`: clean and robust evaluation of a dataset split, its files and its table.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use triscope::eval::run::{EvalRecord, evaluate_classifier, model_labels};
use triscope::eval::{EvalAttack, EvalOptions, EvalReport};
use triscope::inference::Classifier;
use triscope::io::data::{Dataset, Label};

use super::common::{Sweep, choice, parse_fraction, progress_bar, sweep};

/// Options of `triscope eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Dataset: a HAM10000, derm7pt or ChestX-ray14 folder (labels.csv), a MedMNIST .npz,
    /// or a folder with one sub-folder per class
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Split (default: test where there is one, else all)
    #[arg(long)]
    pub split: Option<String>,
    /// The columns, comma-separated (clean is always one)
    #[arg(
        long,
        default_value = "clean,fgsm,pgd10",
        value_delimiter = ',',
        value_parser = choice::<EvalAttack>()
    )]
    pub attacks: Vec<EvalAttack>,
    /// L-inf radius: 8/255 or 0.0314
    #[arg(long, default_value = "8/255", value_parser = parse_fraction)]
    pub eps: f32,
    /// PGD-10 accuracy at each radius, e.g. 0,1,2,4,8,16/255 (writes a PNG plot)
    #[arg(long, value_parser = sweep)]
    pub eps_sweep: Option<Sweep>,
    /// Evaluate only the first N samples (classes interleaved)
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// APGD iterations, and FAB-T's per target class (AutoAttack standard: 100)
    #[arg(long, default_value_t = 100)]
    pub apgd_iterations: usize,
    /// Square's queries per image, in `square` and in `aa` (AutoAttack standard: 5000)
    #[arg(long, default_value_t = 5000)]
    pub square_queries: usize,
    /// Skip the fooled-evaluation checks (they run only when an attack is evaluated, and add
    /// PGD-10 at 64/255 and a noise baseline)
    #[arg(long)]
    pub no_checks: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Parse and check `args` (before any compute) and open the dataset, limited.
pub fn open_eval_dataset(args: &EvalArgs) -> Result<(Dataset, EvalOptions)> {
    let options = EvalOptions {
        attacks: EvalAttack::columns(&args.attacks),
        eps_linf: args.eps,
        eps_sweep: args
            .eps_sweep
            .as_ref()
            .map(|s| s.0.clone())
            .unwrap_or_default(),
        batch_size: args.batch_size,
        apgd_iterations: args.apgd_iterations,
        square_queries: args.square_queries,
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
        "evaluating {} ({} split, {} images) with {}{} on {}: {}",
        dataset.root.display(),
        dataset.split,
        dataset.len(),
        classifier.source,
        if classifier.tta {
            " averaged over 8 flips and turns (--tta)"
        } else {
            ""
        },
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

pub fn eval(args: &EvalArgs, out: &Path, classifier: &Classifier, json: bool) -> Result<ExitCode> {
    // Everything is checked before any compute starts.
    let (dataset, options) = open_eval_dataset(args)?;
    let labels = model_labels(&dataset, classifier.config())?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let report = run_evaluation(&dataset, &labels, &options, classifier)?;
    let record = EvalRecord::new(classifier, &dataset, report);
    let written = record.write(out)?;
    if json {
        println!("{}", record.to_json()?);
    } else {
        for note in &record.dataset_notes {
            println!("note: {note}");
        }
        print_eval_table(&record.report);
        if record.report.checks.is_empty() {
            println!(
                "fooled-evaluation checks: none ran ({})",
                if !options.checks {
                    "--no-checks"
                } else {
                    "only clean accuracy was asked for; they check attacks"
                }
            );
        }
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
            "{:<16} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}",
            "attack", "eps/255", "top-1", "top-2", "balanced", "macro-F1", "AUROC", "success"
        );
        for res in &r.results {
            let m = res.metrics.as_ref();
            println!(
                "{:<16} {:>8.2} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}",
                res.attack,
                res.eps_linf * 255.0,
                fmt(m.map(|m| m.accuracy)),
                fmt(m.map(|m| m.top2_accuracy)),
                fmt(m.map(|m| m.balanced_accuracy)),
                fmt(m.map(|m| m.macro_f1)),
                fmt(m.map(|m| m.macro_auroc)),
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
        for res in &r.results {
            if let Some(m) = &res.melanoma {
                println!(
                    "melanoma vs rest ({}, {} melanomas): AUROC {}, sensitivity at 80% \
                     specificity {}, recall {}",
                    res.attack,
                    m.melanomas,
                    fmt(Some(m.mel_vs_rest_auroc)),
                    fmt(Some(m.mel_sensitivity_at_80_specificity)),
                    fmt(Some(m.mel_recall))
                );
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
