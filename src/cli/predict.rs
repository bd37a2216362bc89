//! `triscope predict`: class, confidence and every class probability of each image.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use triscope::inference::Prediction;
use triscope::inference::ood::OodScore;

use super::common::{ModelArgs, open_classifier, print_prediction};

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Test-time augmentation: the mean probability over the eight flips and quarter turns of
    /// each image (dermoscopy; the out-of-distribution score stays on the image as it is)
    #[arg(long)]
    tta: bool,
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
    /// Its score against the model's training distribution; null where the model carries
    /// no statistics (`triscope ood` fits them).
    out_of_distribution: Option<OodScore>,
}

pub fn predict(args: &PredictArgs) -> Result<ExitCode> {
    let (images, json) = (&args.images, args.json);
    let mut classifier = open_classifier(&args.model)?;
    classifier.tta = args.tta;
    if classifier.ood.is_none() {
        eprintln!(
            "note: {} carries no out-of-distribution statistics: no image is checked against its training data (triscope ood fits them)",
            classifier.source
        );
    }
    let mut failures = 0usize;
    let mut records = Vec::new();
    for path in images {
        let started = Instant::now();
        let result = classifier.load_image(path).and_then(|img| {
            let warning = classifier.input_warning(img.grey);
            let (prediction, ood) = classifier.predict_with_ood(&[&img.pixels])?.remove(0);
            Ok((prediction, warning, ood))
        });
        match result {
            Ok((prediction, warning, ood)) => {
                if !json {
                    print_prediction(path, &prediction, started.elapsed().as_secs_f64());
                }
                if let Some(w) = &warning {
                    eprintln!("warning: {}: {w}", path.display());
                }
                if let Some(o) = ood.filter(|o| o.flag) {
                    eprintln!(
                        "warning: {}: unlike the model's training data (out-of-distribution score {:.0} > threshold {:.0}): its prediction is not to be trusted",
                        path.display(),
                        o.score,
                        o.threshold
                    );
                }
                records.push((path.display().to_string(), prediction, warning, ood));
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
            .map(|(image, prediction, warning, ood)| PredictRecord {
                image: image.clone(),
                prediction,
                warning: warning.clone(),
                out_of_distribution: *ood,
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
