//! `triscope info`: a checkpoint's config and metadata.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use triscope::inference::ood::OodInfo;
use triscope::inference::{Classifier, ModelSource, model_card};
use triscope::io::weights::read_header;
use triscope::model::device::ComputeDevice;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Checkpoint; default: the embedded model
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn info(args: &InfoArgs) -> Result<ExitCode> {
    let (model, json) = (args.model.as_deref(), args.json);
    let classifier;
    let (config, metadata, source, card, ood) = match model {
        Some(p) => {
            let header = read_header(p)?;
            let ood = OodInfo::from_header(&header.raw)?;
            let config = header.config.with_context(|| {
                format!(
                    "{} has no Triscope config (a plain state dict?)",
                    p.display()
                )
            })?;
            (
                config,
                header.metadata.unwrap_or_default(),
                p.display().to_string(),
                model_card(&ModelSource::File(p.to_path_buf())),
                ood,
            )
        }
        None => {
            classifier = Classifier::load(None, ComputeDevice::cpu())?;
            (
                classifier.config().clone(),
                classifier.metadata.clone(),
                classifier.source.to_string(),
                model_card(&classifier.source),
                classifier.ood.as_ref().map(|o| o.info.clone()),
            )
        }
    };
    if json {
        let v = serde_json::json!({"source": source, "config": config, "metadata": metadata, "card": card, "out_of_distribution": ood});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("model:       {source}");
    println!(
        "trained:     {}",
        if metadata.trained {
            "yes"
        } else {
            "NO (untrained)"
        }
    );
    println!("description: {}", metadata.description);
    if let Some(d) = &metadata.dataset {
        println!("dataset:     {d}");
    }
    println!(
        "architecture: {} base width {} ({}-d embedding), {} input channel(s), {}x{} input",
        config.architecture,
        config.base_width,
        config.embedding_dim(),
        config.in_channels,
        config.resolution,
        config.resolution
    );
    println!(
        "outputs:     {} {} ({})",
        config.num_classes,
        if config.multi_label {
            "findings, sigmoid each"
        } else {
            "classes, softmax"
        },
        config.class_names.join(", ")
    );
    if !config.color_constancy.is_none() {
        println!(
            "colour:      {}, inside the model (attacks and eps act on the image before it)",
            config.color_constancy.describe()
        );
    }
    println!("normalise:   mean {:?} std {:?}", config.mean, config.std);
    match &ood {
        Some(o) => println!("unlike:      {}", o.describe()),
        None => println!(
            "unlike:      no out-of-distribution statistics (`triscope ood` fits them); images are not scored"
        ),
    }
    for (k, v) in &metadata.metrics {
        println!("metric:      {k} = {v:.4}");
    }
    println!(
        "written:     {} by Triscope {}",
        metadata.created_utc, metadata.triscope_version
    );
    if let Some(card) = card {
        println!("\n{}", card.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
