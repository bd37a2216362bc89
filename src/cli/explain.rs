//! `triscope explain`: one image (heatmap, overlay, npy, JSON) or a folder (heatmaps and
//! overlays for every image plus a CSV of predictions), with any attribution method.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use super::common::{choice, print_prediction, progress_bar, resolve_class};
use triscope::explain::faithfulness::Faithfulness;
use triscope::explain::folder::{ExplainPlan, write_rgb8};
use triscope::explain::quality::RegionEnergy;
use triscope::explain::{AttributionMap, AttributionOptions, Colormap, Method, TargetClass};
use triscope::inference::{Classifier, Prediction};
use triscope::io::data::MaskKind;
use triscope::io::regions::energy_beside;
use triscope::model::LayerId;
use triscope::util::fsio::write_atomic;

/// What to explain and how to draw it.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Attribution method: the CAMs explain --layer; saliency, smoothgrad, ig and occlusion
    /// the input pixels
    #[arg(long, default_value = "gradcam", value_parser = choice::<Method>())]
    method: Method,
    /// Layer the CAM methods explain
    #[arg(long, default_value = "layer4", value_parser = choice::<LayerId>())]
    layer: LayerId,
    /// Class to explain, by index or name; default: the predicted class
    #[arg(long = "class", value_name = "C")]
    class: Option<String>,
    /// Colour map (viridis is colour-blind safe)
    #[arg(long, default_value = "jet", value_parser = choice::<Colormap>())]
    colormap: Colormap,
    /// Heatmap opacity in the overlay, 0..1
    #[arg(long, default_value_t = 0.4)]
    alpha: f32,
    /// Integrated Gradients: steps from the black baseline (Gauss-Legendre, as Captum)
    #[arg(long, default_value_t = 50, value_name = "N")]
    ig_steps: usize,
    /// SmoothGrad: noisy samples averaged
    #[arg(long, default_value_t = 25, value_name = "N")]
    smoothgrad_samples: usize,
    /// SmoothGrad: noise std as a fraction of the image's value range
    #[arg(long, default_value_t = 0.15, value_name = "F")]
    smoothgrad_sigma: f32,
    /// SmoothGrad: seed of the noise
    #[arg(long, default_value_t = 0, value_name = "N")]
    smoothgrad_seed: u64,
    /// Occlusion: window side in pixels (of the model's input)
    #[arg(long, default_value_t = 16, value_name = "PX")]
    occlusion_window: usize,
    /// Occlusion: stride between windows in pixels
    #[arg(long, default_value_t = 8, value_name = "PX")]
    occlusion_stride: usize,
    /// Also measure faithfulness: RISE deletion and insertion AUC and the average drop of
    /// the explained class's probability (about one forward pass per image row)
    #[arg(long)]
    faithfulness: bool,
}

impl ExplainArgs {
    fn plan(&self, classifier: &Classifier) -> Result<ExplainPlan> {
        let (method, layer, colormap) = (self.method, self.layer, self.colormap);
        if !(0.0..=1.0).contains(&self.alpha) {
            bail!("--alpha must be between 0 and 1, got {}", self.alpha);
        }
        let target = match &self.class {
            None => TargetClass::Predicted,
            Some(c) => TargetClass::Index(resolve_class(classifier.config(), c)?),
        };
        let options = AttributionOptions {
            layer,
            ig_steps: self.ig_steps,
            smoothgrad_samples: self.smoothgrad_samples,
            smoothgrad_sigma: self.smoothgrad_sigma,
            smoothgrad_seed: self.smoothgrad_seed,
            occlusion_window_px: self.occlusion_window,
            occlusion_stride_px: self.occlusion_stride,
            ..Default::default()
        };
        Ok(ExplainPlan {
            method,
            target,
            options,
            colormap,
            alpha: self.alpha,
            faithfulness: self.faithfulness,
        })
    }
}

#[derive(Serialize)]
struct ExplainSummary<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    faithfulness: Option<Faithfulness>,
    image: String,
    model: String,
    model_trained: bool,
    device: String,
    method: &'static str,
    method_label: &'static str,
    /// The explained layer (CAM methods), else "input".
    layer: String,
    explained_class_index: usize,
    explained_class_name: String,
    prediction: &'a Prediction,
    /// The image does not fit what the model was trained on.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    heatmap_size: [usize; 2],
    /// For an image with a lung mask beside it (`masks/`, shenzhen-montgomery-cxr): how much of
    /// the map falls inside the lungs, the lungs' share of the image, whether the peak is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    lung_energy: Option<RegionEnergy>,
    /// The same against a lesion mask (HAM10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    lesion_energy: Option<RegionEnergy>,
    /// Shape of attribution.npy (`[h, w]` for CAMs, `[C, H, W]` for input-space methods).
    attribution_shape: &'a [usize],
    options: &'a AttributionOptions,
    colormap: &'static str,
    alpha: f32,
    elapsed_secs: f64,
    files: Vec<String>,
}

/// `triscope explain PATH`: a folder explains every image in it (recursively).
pub fn explain(
    path: &Path,
    args: &ExplainArgs,
    out: &Path,
    classifier: &Classifier,
    json: bool,
) -> Result<ExitCode> {
    let plan = args.plan(classifier)?;
    if path.is_dir() {
        return explain_folder(path, &plan, out, classifier, json);
    }
    let loaded = classifier.load_image(path)?;
    let started = Instant::now();
    let result = classifier.attribute(&loaded.pixels, plan.method, plan.target, &plan.options)?;
    let faithfulness = plan.measure_faithfulness(classifier, &loaded.pixels, &result)?;
    let elapsed_secs = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let a = &result.attribution;
    let input_rgb = loaded.pixels.to_rgb8();
    let mut written = plan.write_images(out, "", &input_rgb, a)?;
    let input_path = out.join("input.png");
    written.insert(0, write_rgb8(&input_path, input_rgb, a.width, a.height)?);
    let npy = out.join("heatmap.npy");
    triscope::io::npy::write_f32(&npy, &a.map, &[a.height, a.width])?;
    written.push(npy.display().to_string());
    let raw = out.join("attribution.npy");
    triscope::io::npy::write_f32(&raw, &a.raw, &a.raw_shape)?;
    written.push(raw.display().to_string());
    let summary_path = out.join("prediction.json");
    written.push(summary_path.display().to_string());
    // The map against the mask beside the image (the lungs, a lesion), if it has one; a mask
    // that cannot be used is said, and the explanation kept.
    let energy = energy_beside(path, &a.map, a.width, classifier.resize_mode).unwrap_or_else(|e| {
        eprintln!("warning: {}: no region energy: {e}", path.display());
        None
    });
    let energy_of = |finding: &str| {
        energy
            .as_ref()
            .filter(|(f, _)| f == finding)
            .map(|(_, e)| *e)
    };
    let summary = ExplainSummary {
        image: path.display().to_string(),
        model: classifier.source.to_string(),
        model_trained: classifier.metadata.trained,
        device: classifier.device().description.clone(),
        method: plan.method.name(),
        method_label: plan.method.label(),
        layer: layer_name(a),
        explained_class_index: a.class_index,
        explained_class_name: classifier.config().class_names[a.class_index].clone(),
        prediction: &result.prediction,
        warning: classifier.input_warning(loaded.grey),
        heatmap_size: [a.height, a.width],
        lung_energy: energy_of(MaskKind::Lungs.finding()),
        lesion_energy: energy_of(MaskKind::Lesion.finding()),
        attribution_shape: &a.raw_shape,
        options: &plan.options,
        faithfulness,
        colormap: plan.colormap.name(),
        alpha: plan.alpha,
        elapsed_secs,
        files: written,
    };
    let text = serde_json::to_string_pretty(&summary)?;
    write_atomic(&summary_path, text.as_bytes())?;
    if let Some(w) = &summary.warning {
        eprintln!("warning: {}: {w}", path.display());
    }
    if json {
        println!("{text}");
    } else {
        print_prediction(path, &result.prediction, elapsed_secs);
        let shape: Vec<String> = a.raw_shape.iter().map(|d| d.to_string()).collect();
        println!(
            "{} on {} for class '{}' ({} -> {}x{}) written to {}",
            plan.method.label(),
            summary.layer,
            summary.explained_class_name,
            shape.join("x"),
            a.height,
            a.width,
            out.display()
        );
        if let Some((finding, _)) = energy
            .as_ref()
            .filter(|(_, e)| !e.energy_inside.is_finite())
        {
            println!(
                "the map is empty (nothing raises the class's score): no energy inside the {finding} to measure"
            );
        } else if let Some((finding, e)) = &energy {
            println!(
                "{:.1}% of the map inside the {finding} (a uniform map: {:.1}%); its peak is {}",
                e.energy_inside * 100.0,
                e.region_fraction * 100.0,
                if e.peak_inside { "inside" } else { "outside" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn layer_name(a: &AttributionMap) -> String {
    a.layer
        .map(|l| l.to_string())
        .unwrap_or_else(|| "input".into())
}

/// Every image of `dir`, behind a progress bar; errors and warnings as they come.
fn explain_folder(
    dir: &Path,
    plan: &ExplainPlan,
    out: &Path,
    classifier: &Classifier,
    json: bool,
) -> Result<ExitCode> {
    let bar = progress_bar(0, "images");
    let report = triscope::explain::folder::explain_folder(
        classifier,
        dir,
        plan,
        out,
        &mut |done, total, r| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            if !r.ok() {
                bar.suspend(|| eprintln!("{}: {}", r.image, r.status));
            } else if let Some(w) = &r.warning {
                bar.suspend(|| eprintln!("warning: {}: {w}", r.image));
            }
        },
        &AtomicBool::new(false),
    )?;
    bar.finish_and_clear();
    let records = &report.records;
    let failures = records.iter().filter(|r| !r.ok()).count();
    if json {
        println!("{}", serde_json::to_string_pretty(records)?);
    } else {
        for r in records.iter().filter(|r| r.ok()) {
            println!(
                "{}: {} ({:.1}%)",
                r.image,
                r.predicted_class.clone().unwrap_or_default(),
                r.confidence.unwrap_or(0.0) * 100.0
            );
        }
        println!(
            "{} of {} images explained with {} ({}); heatmaps, overlays and {} in {}",
            records.len() - failures,
            records.len(),
            plan.method.label(),
            plan.layer_name(),
            report.csv.display(),
            out.display()
        );
    }
    Ok(if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
