//! `triscope explain`: one image (heatmap, overlay, npy, JSON) or a folder (heatmaps and
//! overlays for every image plus a CSV of predictions), with any attribution method.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::cli::{print_prediction, resolve_class, save_rgb8};
use triscope::explain::faithfulness::{Faithfulness, FaithfulnessOptions, faithfulness};
use triscope::explain::{
    AttributionMap, AttributionOptions, Colormap, Method, TargetClass, heatmap_rgb8, overlay_rgb8,
};
use triscope::inference::{AttributionResult, Classifier, Prediction};
use triscope::model::LayerId;
use triscope::weights::write_atomic;

/// What to explain and how to draw it.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Attribution method: gradcam, gradcam++, xgradcam, layercam, hirescam, scorecam,
    /// eigencam (on --layer), saliency, smoothgrad, ig, occlusion (on the input pixels)
    #[arg(long, default_value = "gradcam")]
    method: String,
    /// Layer the CAM methods explain: layer1, layer2, layer3 or layer4
    #[arg(long, default_value = "layer4")]
    layer: String,
    /// Class to explain, by index or name; default: the predicted class
    #[arg(long = "class", value_name = "C")]
    class: Option<String>,
    /// Colour map: jet or viridis (colour-blind safe)
    #[arg(long, default_value = "jet")]
    colormap: String,
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

/// Parsed settings shared by the single-image and the folder modes.
struct Plan {
    method: Method,
    target: TargetClass,
    options: AttributionOptions,
    colormap: Colormap,
    alpha: f32,
    faithfulness: bool,
}

impl ExplainArgs {
    fn plan(&self, classifier: &Classifier) -> Result<Plan> {
        let method: Method = self.method.parse()?;
        let layer: LayerId = self.layer.parse()?;
        let colormap: Colormap = self.colormap.parse()?;
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
        Ok(Plan {
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
    let faithfulness = measure_faithfulness(&plan, classifier, &loaded.pixels, &result)?;
    let elapsed_secs = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let a = &result.attribution;
    let input_rgb = loaded.pixels.to_rgb8();
    let mut written = write_images(out, "", &input_rgb, a, &plan)?;
    let input_path = out.join("input.png");
    written.insert(
        0,
        save_rgb8(&input_path, &input_rgb, a.width as u32, a.height as u32)?,
    );
    let npy = out.join("heatmap.npy");
    triscope::npy::write_f32(&npy, &a.map, &[a.height, a.width])?;
    written.push(npy.display().to_string());
    let raw = out.join("attribution.npy");
    triscope::npy::write_f32(&raw, &a.raw, &a.raw_shape)?;
    written.push(raw.display().to_string());
    let summary_path = out.join("prediction.json");
    written.push(summary_path.display().to_string());
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
    }
    Ok(ExitCode::SUCCESS)
}

fn layer_name(a: &AttributionMap) -> String {
    a.layer
        .map(|l| l.to_string())
        .unwrap_or_else(|| "input".into())
}

/// heatmap.png and overlay.png (with `prefix` before each name); returns the paths written.
fn write_images(
    dir: &Path,
    prefix: &str,
    input_rgb: &[u8],
    a: &AttributionMap,
    plan: &Plan,
) -> Result<Vec<String>> {
    let (w, h) = (a.width as u32, a.height as u32);
    let heat = heatmap_rgb8(&a.map, plan.colormap);
    let overlay = overlay_rgb8(input_rgb, &a.map, plan.colormap, plan.alpha);
    Ok(vec![
        save_rgb8(&dir.join(format!("{prefix}heatmap.png")), &heat, w, h)?,
        save_rgb8(&dir.join(format!("{prefix}overlay.png")), &overlay, w, h)?,
    ])
}

/// One CSV field, quoted when it holds a comma, a quote or a newline.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[derive(Serialize)]
struct BatchRecord {
    image: String,
    status: String,
    predicted_index: Option<usize>,
    predicted_class: Option<String>,
    confidence: Option<f32>,
    explained_index: Option<usize>,
    explained_class: Option<String>,
    probabilities: Vec<f32>,
    heatmap: Option<String>,
    overlay: Option<String>,
    faithfulness: Option<Faithfulness>,
    /// The image does not fit what the model was trained on.
    warning: Option<String>,
    elapsed_secs: f64,
}

/// Deletion / insertion AUC and confidence change of the map, when asked for.
fn measure_faithfulness(
    plan: &Plan,
    classifier: &Classifier,
    image: &triscope::imaging::PixelImage,
    r: &AttributionResult,
) -> triscope::Result<Option<Faithfulness>> {
    if !plan.faithfulness {
        return Ok(None);
    }
    faithfulness(
        classifier.model(),
        &classifier.device().device,
        image,
        &r.attribution.map,
        r.attribution.class_index,
        &FaithfulnessOptions::default(),
    )
    .map(Some)
}

fn explain_folder(
    dir: &Path,
    plan: &Plan,
    out: &Path,
    classifier: &Classifier,
    json: bool,
) -> Result<ExitCode> {
    let images = triscope::data::list_images(dir)?;
    if images.is_empty() {
        bail!(
            "{} holds no images (png, jpg, jpeg, bmp, tif, tiff, dcm)",
            dir.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let bar = indicatif::ProgressBar::new(images.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images, {elapsed} elapsed, eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut records = Vec::with_capacity(images.len());
    for path in &images {
        let rel = path.strip_prefix(dir).unwrap_or(path);
        bar.set_message(rel.display().to_string());
        let started = Instant::now();
        let result = classifier.load_image(path).and_then(|loaded| {
            let r =
                classifier.attribute(&loaded.pixels, plan.method, plan.target, &plan.options)?;
            let f = measure_faithfulness(plan, classifier, &loaded.pixels, &r)?;
            Ok((loaded, r, f))
        });
        let record = match result {
            Ok((loaded, r, faithfulness)) => {
                let warning = classifier.input_warning(loaded.grey);
                if let Some(w) = &warning {
                    bar.suspend(|| eprintln!("warning: {}: {w}", path.display()));
                }
                let folder = out.join(rel.parent().unwrap_or(Path::new("")));
                std::fs::create_dir_all(&folder)
                    .with_context(|| format!("cannot create {}", folder.display()))?;
                let stem = rel
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                let files = write_images(
                    &folder,
                    &format!("{stem}_"),
                    &loaded.pixels.to_rgb8(),
                    &r.attribution,
                    plan,
                )?;
                let mut record =
                    success_record(rel, &r, classifier, files, started.elapsed().as_secs_f64());
                record.faithfulness = faithfulness;
                record.warning = warning;
                record
            }
            Err(e) => {
                bar.suspend(|| eprintln!("error: {e}"));
                BatchRecord {
                    image: rel.display().to_string(),
                    status: format!("error: {e}"),
                    predicted_index: None,
                    predicted_class: None,
                    confidence: None,
                    explained_index: None,
                    explained_class: None,
                    probabilities: Vec::new(),
                    heatmap: None,
                    overlay: None,
                    faithfulness: None,
                    warning: None,
                    elapsed_secs: started.elapsed().as_secs_f64(),
                }
            }
        };
        records.push(record);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let class_names = &classifier.config().class_names;
    let mut csv = String::from(
        "image,status,predicted_index,predicted_class,confidence,explained_index,explained_class,method,layer",
    );
    for name in class_names {
        csv.push_str(&format!(",p_{}", csv_field(name)));
    }
    csv.push_str(",heatmap,overlay,elapsed_secs,warning");
    if plan.faithfulness {
        csv.push_str(",deletion_auc,insertion_auc,drop_percent,increase");
    }
    csv.push('\n');
    let layer = if plan.method.uses_layer() {
        plan.options.layer.to_string()
    } else {
        "input".into()
    };
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in &records {
        let mut row = vec![
            csv_field(&r.image),
            csv_field(&r.status),
            opt(r.predicted_index.map(|v| v.to_string())),
            csv_field(&opt(r.predicted_class.clone())),
            opt(r.confidence.map(|v| format!("{v:.6}"))),
            opt(r.explained_index.map(|v| v.to_string())),
            csv_field(&opt(r.explained_class.clone())),
            plan.method.name().to_string(),
            layer.clone(),
        ];
        for i in 0..class_names.len() {
            row.push(opt(r.probabilities.get(i).map(|p| format!("{p:.6}"))));
        }
        row.push(csv_field(&opt(r.heatmap.clone())));
        row.push(csv_field(&opt(r.overlay.clone())));
        row.push(format!("{:.3}", r.elapsed_secs));
        row.push(csv_field(&opt(r.warning.clone())));
        if plan.faithfulness {
            match &r.faithfulness {
                Some(f) => row.extend([
                    format!("{:.6}", f.deletion_auc),
                    format!("{:.6}", f.insertion_auc),
                    format!("{:.3}", f.drop_percent),
                    f.increase.to_string(),
                ]),
                None => row.extend(std::iter::repeat_n(String::new(), 4)),
            }
        }
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    let csv_path = out.join("predictions.csv");
    write_atomic(&csv_path, csv.as_bytes())?;

    let failures = records.iter().filter(|r| r.status != "ok").count();
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        for r in records.iter().filter(|r| r.status == "ok") {
            println!(
                "{}: {} ({:.1}%)",
                r.image,
                opt(r.predicted_class.clone()),
                r.confidence.unwrap_or(0.0) * 100.0
            );
        }
        println!(
            "{} of {} images explained with {} ({}); heatmaps, overlays and {} in {}",
            records.len() - failures,
            records.len(),
            plan.method.label(),
            layer,
            csv_path.display(),
            out.display()
        );
    }
    Ok(if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn success_record(
    rel: &Path,
    r: &AttributionResult,
    classifier: &Classifier,
    files: Vec<String>,
    elapsed_secs: f64,
) -> BatchRecord {
    let p = &r.prediction;
    let mut files = files.into_iter();
    BatchRecord {
        image: rel.display().to_string(),
        status: "ok".into(),
        predicted_index: Some(p.class_index),
        predicted_class: Some(p.class_name.clone()),
        confidence: Some(p.confidence),
        explained_index: Some(r.attribution.class_index),
        explained_class: Some(classifier.config().class_names[r.attribution.class_index].clone()),
        probabilities: p.scores.iter().map(|s| s.probability).collect(),
        heatmap: files.next(),
        overlay: files.next(),
        faithfulness: None,
        warning: None,
        elapsed_secs,
    }
}
