//! `triscope predict`: class, confidence and every class probability of each image.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use triscope::inference::Prediction;

use super::common::{ModelArgs, open_classifier, print_prediction};

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct PredictRecord<'a> {
    image: String,
    #[serde(flatten)]
    prediction: &'a Prediction,
    /// The image does not fit what the model was trained on.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

pub fn predict(args: &PredictArgs) -> Result<ExitCode> {
    let (images, json) = (&args.images, args.json);
    let classifier = open_classifier(&args.model)?;
    let mut failures = 0usize;
    let mut records = Vec::new();
    for path in images {
        let started = Instant::now();
        let result = classifier.load_image(path).and_then(|img| {
            let warning = classifier.input_warning(img.grey);
            let prediction = classifier.predict(&[&img.pixels])?.remove(0);
            Ok((prediction, warning))
        });
        match result {
            Ok((prediction, warning)) => {
                if !json {
                    print_prediction(path, &prediction, started.elapsed().as_secs_f64());
                }
                if let Some(w) = &warning {
                    eprintln!("warning: {}: {w}", path.display());
                }
                records.push((path.display().to_string(), prediction, warning));
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if json {
        let out: Vec<PredictRecord> = records
            .iter()
            .map(|(image, prediction, warning)| PredictRecord {
                image: image.clone(),
                prediction,
                warning: warning.clone(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
