//! Explaining images into files: the plan (method, class, options, colours), the heatmap and
//! overlay PNGs of one map, and a whole folder (recursively) explained into a mirror of its
//! tree plus `predictions.csv`. An image that fails is a row with its error, not the end of
//! the run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::explain::faithfulness::{Faithfulness, FaithfulnessOptions, faithfulness};
use crate::explain::quality::RegionEnergy;
use crate::explain::{
    AttributionMap, AttributionOptions, Colormap, Method, TargetClass, heatmap_rgb8, overlay_rgb8,
};
use crate::inference::{AttributionResult, Classifier};
use crate::io::imaging::PixelImage;
use crate::io::regions::energy_beside;
use crate::util::fsio::write_atomic;

/// What to explain and how to draw it.
#[derive(Debug, Clone)]
pub struct ExplainPlan {
    pub method: Method,
    pub target: TargetClass,
    pub options: AttributionOptions,
    pub colormap: Colormap,
    /// Heatmap opacity in the overlay, 0..1.
    pub alpha: f32,
    /// Also measure deletion / insertion AUC and the confidence change.
    pub faithfulness: bool,
}

impl ExplainPlan {
    /// The explained layer (CAM methods), else "input".
    pub fn layer_name(&self) -> String {
        if self.method.uses_layer() {
            self.options.layer.to_string()
        } else {
            "input".into()
        }
    }

    /// Deletion / insertion AUC and confidence change of the map, when the plan asks for them.
    pub fn measure_faithfulness(
        &self,
        classifier: &Classifier,
        image: &PixelImage,
        r: &AttributionResult,
    ) -> Result<Option<Faithfulness>> {
        if !self.faithfulness {
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

    /// `heatmap.png` and `overlay.png` (`prefix` before each name) in `dir`; the paths written.
    pub fn write_images(
        &self,
        dir: &Path,
        prefix: &str,
        input_rgb: &[u8],
        a: &AttributionMap,
    ) -> Result<Vec<String>> {
        let heat = heatmap_rgb8(&a.map, self.colormap);
        let overlay = overlay_rgb8(input_rgb, &a.map, self.colormap, self.alpha);
        Ok(vec![
            write_rgb8(
                &dir.join(format!("{prefix}heatmap.png")),
                heat,
                a.width,
                a.height,
            )?,
            write_rgb8(
                &dir.join(format!("{prefix}overlay.png")),
                overlay,
                a.width,
                a.height,
            )?,
        ])
    }
}

/// Interleaved RGB8 pixels as a PNG file; its path, for the list of files written.
pub fn write_rgb8(path: &Path, rgb: Vec<u8>, width: usize, height: usize) -> Result<String> {
    let img = image::RgbImage::from_raw(width as u32, height as u32, rgb).ok_or_else(|| {
        TriscopeError::Compute(format!(
            "{}: the pixels do not make a {width}x{height} image",
            path.display()
        ))
    })?;
    crate::io::plot::write_png(path, &img)?;
    Ok(path.display().to_string())
}

/// One image of a folder run: a row of `predictions.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderRecord {
    /// Relative to the folder.
    pub image: String,
    /// "ok", or "error: ..." for an image that could not be explained.
    pub status: String,
    pub predicted_index: Option<usize>,
    pub predicted_class: Option<String>,
    pub confidence: Option<f32>,
    pub explained_index: Option<usize>,
    pub explained_class: Option<String>,
    pub probabilities: Vec<f32>,
    pub heatmap: Option<String>,
    pub overlay: Option<String>,
    pub faithfulness: Option<Faithfulness>,
    /// The image does not fit what the model was trained on (or its mask cannot be used).
    pub warning: Option<String>,
    /// The map against the mask beside the image: the region ("lungs", "lesion") and how
    /// much of the map falls inside it.
    #[serde(default)]
    pub region_energy: Option<(String, RegionEnergy)>,
    pub elapsed_secs: f64,
}

impl FolderRecord {
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }

    fn failed(image: String, error: &TriscopeError, elapsed_secs: f64) -> Self {
        Self {
            image,
            status: format!("error: {error}"),
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
            region_energy: None,
            elapsed_secs,
        }
    }
}

/// What a folder run wrote.
#[derive(Debug, Clone)]
pub struct FolderReport {
    pub records: Vec<FolderRecord>,
    pub csv: PathBuf,
}

/// Explain every image under `dir` into `out` (the same sub-folders; `STEM_heatmap.png`,
/// `STEM_overlay.png`) and write `out/predictions.csv`. `progress(done, total, record)` after
/// each image; a set `cancel` stops before the next image with [`TriscopeError::Cancelled`].
pub fn explain_folder(
    classifier: &Classifier,
    dir: &Path,
    plan: &ExplainPlan,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize, &FolderRecord),
    cancel: &AtomicBool,
) -> Result<FolderReport> {
    let images = crate::io::data::list_images(dir)?;
    if images.is_empty() {
        return Err(TriscopeError::InvalidArgument(format!(
            "{} holds no images ({})",
            dir.display(),
            crate::io::imaging::IMAGE_EXTENSIONS.join(", ")
        )));
    }
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d).map_err(|source| TriscopeError::Io {
            path: d.to_path_buf(),
            source,
        })
    };
    mkdir(out)?;
    let mut records = Vec::with_capacity(images.len());
    for path in &images {
        if cancel.load(Ordering::Relaxed) {
            return Err(TriscopeError::Cancelled);
        }
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let started = Instant::now();
        let result = classifier.load_image(path).and_then(|loaded| {
            let r =
                classifier.attribute(&loaded.pixels, plan.method, plan.target, &plan.options)?;
            let f = plan.measure_faithfulness(classifier, &loaded.pixels, &r)?;
            Ok((loaded, r, f))
        });
        let record = match result {
            Ok((loaded, r, faithfulness)) => {
                let folder = out.join(rel.parent().unwrap_or(Path::new("")));
                mkdir(&folder)?;
                let stem = rel
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                let mut files = plan
                    .write_images(
                        &folder,
                        &format!("{stem}_"),
                        &loaded.pixels.to_rgb8(),
                        &r.attribution,
                    )?
                    .into_iter();
                let p = &r.prediction;
                let explained = r.attribution.class_index;
                let a = &r.attribution;
                let (region_energy, mask_problem) =
                    match energy_beside(path, &a.map, a.width, classifier.resize_mode) {
                        Ok(e) => (e, None),
                        Err(e) => (None, Some(format!("no region energy: {e}"))),
                    };
                let warning = match (classifier.input_warning(loaded.grey), mask_problem) {
                    (Some(w), Some(m)) => Some(format!("{w}; {m}")),
                    (w, m) => w.or(m),
                };
                FolderRecord {
                    image: rel.display().to_string(),
                    status: "ok".into(),
                    predicted_index: Some(p.class_index),
                    predicted_class: Some(p.class_name.clone()),
                    confidence: Some(p.confidence),
                    explained_index: Some(explained),
                    explained_class: Some(classifier.config().class_names[explained].clone()),
                    probabilities: p.scores.iter().map(|s| s.probability).collect(),
                    heatmap: files.next(),
                    overlay: files.next(),
                    faithfulness,
                    warning,
                    region_energy,
                    elapsed_secs: started.elapsed().as_secs_f64(),
                }
            }
            Err(e) => FolderRecord::failed(
                rel.display().to_string(),
                &e,
                started.elapsed().as_secs_f64(),
            ),
        };
        records.push(record);
        if let Some(r) = records.last() {
            progress(records.len(), images.len(), r);
        }
    }
    let csv = out.join("predictions.csv");
    write_atomic(
        &csv,
        predictions_csv(&records, plan, &classifier.config().class_names).as_bytes(),
    )?;
    Ok(FolderReport { records, csv })
}

/// One CSV field, quoted when it holds a comma, a quote or a newline.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `predictions.csv`: a row per image, a probability column per class.
fn predictions_csv(records: &[FolderRecord], plan: &ExplainPlan, class_names: &[String]) -> String {
    let mut csv = String::from(
        "image,status,predicted_index,predicted_class,confidence,explained_index,explained_class,method,layer",
    );
    for name in class_names {
        csv.push_str(&format!(",p_{}", csv_field(name)));
    }
    csv.push_str(
        ",heatmap,overlay,elapsed_secs,warning,region,energy_inside,region_fraction,peak_inside",
    );
    if plan.faithfulness {
        csv.push_str(",deletion_auc,insertion_auc,drop_percent,increase");
    }
    csv.push('\n');
    let layer = plan.layer_name();
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in records {
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
        match &r.region_energy {
            // A map with no positive energy has no share to give: empty fields, not NaN.
            Some((region, e)) => row.extend([
                csv_field(region),
                if e.energy_inside.is_finite() {
                    format!("{:.4}", e.energy_inside)
                } else {
                    String::new()
                },
                format!("{:.4}", e.region_fraction),
                if e.energy_inside.is_finite() {
                    e.peak_inside.to_string()
                } else {
                    String::new()
                },
            ]),
            None => row.extend(std::iter::repeat_n(String::new(), 4)),
        }
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
    csv
}
