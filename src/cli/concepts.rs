//! `triscope concepts`: the seven-point checklist in a model's own features. Builds (or reads
//! from the cache) the model's concept bank from derm7pt, prints each criterion's probe AUROC
//! on derm7pt test, its CAVs' held-out accuracy and the TCAV table, and, for each image given,
//! which criteria the model reads in it and whether each pushes it toward the class.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use triscope::explain::checklist::DEFAULT_DERM7PT;
use triscope::explain::concept_bank::{
    BankOptions, BankStage, ConceptBank, ConceptReadout, read_concepts,
};
use triscope::explain::concept_cache::{BankOrigin, load_or_build};
use triscope::inference::Classifier;
use triscope::model::LayerId;
use triscope::util::fsio::write_atomic;

use super::common::{StageBars, choice, resolve_class, tcav_mark};

#[derive(Args, Debug)]
pub struct ConceptsArgs {
    /// Images to read the checklist in (none: only the model's concept table)
    #[arg(value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// The derm7pt folder (labels.csv with the seven criteria, images/)
    #[arg(long, value_name = "FOLDER", default_value = DEFAULT_DERM7PT)]
    pub data: PathBuf,
    /// Class the push is toward, by index or name (default: each image's predicted class)
    #[arg(long = "class", value_name = "C")]
    pub class: Option<String>,
    /// Layers of the probes and CAVs, comma-separated
    #[arg(long, default_value = "layer3,layer4", value_delimiter = ',', value_parser = choice::<LayerId>())]
    pub layers: Vec<LayerId>,
    /// CAV runs per criterion (and null CAVs per layer)
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Cache folder (default: $TRISCOPE_CACHE_DIR, $XDG_CACHE_HOME/triscope or ~/.cache/triscope)
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Output folder for concepts.json (and readouts.json with images)
    #[arg(long, value_name = "DIR", default_value = "out/concepts")]
    pub out: PathBuf,
}

#[derive(Serialize)]
struct ImageReadout {
    image: String,
    #[serde(flatten)]
    readout: ConceptReadout,
}

pub fn concepts(args: &ConceptsArgs, classifier: &Classifier, json: bool) -> Result<ExitCode> {
    let options = BankOptions {
        layers: args.layers.clone(),
        runs: args.runs,
        ..BankOptions::default()
    };
    options.validate()?;
    let class = args
        .class
        .as_deref()
        .map(|c| resolve_class(classifier.config(), c))
        .transpose()?;
    let mut bars = StageBars::default();
    let (bank, origin) = load_or_build(
        classifier,
        &args.data,
        &options,
        args.cache.as_deref(),
        &mut |p| {
            let what = match p.stage {
                BankStage::Features => "images",
                BankStage::Concepts => "criteria",
                BankStage::Tcav => "layers (TCAV)",
            };
            bars.show(p.stage, what, p.done, p.total)
        },
        &AtomicBool::new(false),
    )?;
    bars.finish();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let table = args.out.join("concepts.json");
    write_atomic(&table, serde_json::to_string_pretty(&bank)?.as_bytes())?;
    let mut readouts = Vec::new();
    let mut failures = 0usize;
    for path in &args.images {
        let result = classifier.load_image(path).and_then(|img| {
            let target = match class {
                Some(c) => c,
                None => classifier.predict(&[&img.pixels])?[0].class_index,
            };
            read_concepts(classifier, &bank, &img.pixels, target)
        });
        match result {
            Ok(r) => readouts.push(ImageReadout {
                image: path.display().to_string(),
                readout: r,
            }),
            Err(e) => {
                failures += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if !readouts.is_empty() {
        write_atomic(
            &args.out.join("readouts.json"),
            serde_json::to_string_pretty(&readouts)?.as_bytes(),
        )?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "bank": &bank,
                "readouts": &readouts,
            }))?
        );
    } else {
        print_bank(&bank, &origin);
        for r in &readouts {
            print_readout(r);
        }
        println!("wrote {}", table.display());
    }
    Ok(if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_bank(bank: &ConceptBank, origin: &BankOrigin) {
    println!("concept bank {}", origin.describe(bank.build_secs));
    println!(
        "{:<26} {:>9} {:>6} {:>6} {:>9} {:>9}",
        "criterion", "train +/-", "layer", "pts", "probe AUC", "CAV acc"
    );
    for c in &bank.criteria {
        for l in &c.layers {
            println!(
                "{:<26} {:>4}/{:<4} {:>6} {:>6} {:>9.3} {:>9.3}",
                c.name,
                c.train.split_present,
                c.train.split_absent,
                l.layer.name(),
                c.points,
                l.probe.test_auroc,
                l.cav_accuracy()
            );
        }
    }
    println!("(probe AUC: on derm7pt test; CAV acc: held-out accuracy of the CAVs, mean of runs)");
    for n in &bank.notes {
        println!("note: {n}");
    }
    let mel: Vec<_> = bank
        .tcav
        .iter()
        .filter(|t| t.class_name.eq_ignore_ascii_case("mel"))
        .collect();
    if !mel.is_empty() {
        println!(
            "TCAV for mel on derm7pt val+test (Holm over {} tests):",
            bank.tcav.len()
        );
        for t in mel {
            println!(
                "  {:<26} {} {:.2} ± {:.2} (random {:.2}) p(Holm) {:.2e}{}",
                t.concept,
                t.layer,
                t.mean,
                t.std,
                t.random_mean,
                t.p_holm,
                tcav_mark(t)
            );
        }
    }
}

fn print_readout(r: &ImageReadout) {
    println!(
        "{}: the checklist as the model reads it (push toward {})",
        r.image, r.readout.class_name
    );
    for l in &r.readout.layers {
        println!(
            "  {}{}",
            l.layer,
            if l.push_same_for_every_image {
                " (push: the same for every image at layer4)"
            } else {
                ""
            }
        );
        for c in &l.readings {
            println!(
                "    {:<26} presence {:>5.2}  push {:>+9.4}{}",
                c.name,
                c.presence,
                c.push,
                if c.cav_separable {
                    ""
                } else {
                    "  (CAV not separable)"
                }
            );
        }
    }
    println!("  {}", r.readout.caveat);
}
