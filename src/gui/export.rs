//! "Export view": the current image, overlay, heatmap, adversarial image, perturbation and
//! a JSON summary with the prediction table, written to a folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use triscope::explain::attribution::Method;
use triscope::explain::gradcam::resize_bilinear;
use triscope::explain::{heatmap_rgb8, overlay_rgb8};
use triscope::workbench::{Analysis, AttackResult, ModelInfo, RgbImage};

use super::state::ExplainSettings;

/// A snapshot of what is on screen (plain data, cheap to clone: all behind `Arc`).
#[derive(Clone)]
pub struct ExportData {
    pub analysis: Arc<Analysis>,
    pub attack: Option<Arc<AttackResult>>,
    pub settings: ExplainSettings,
    pub model: Option<Arc<ModelInfo>>,
}

fn write_png(dir: &Path, name: &str, img: &RgbImage, written: &mut Vec<PathBuf>) -> Result<()> {
    let path = dir.join(name);
    image::save_buffer(
        &path,
        &img.rgb,
        img.width as u32,
        img.height as u32,
        image::ExtendedColorType::Rgb8,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}

/// The map on screen: the chosen method's when the analysis has it, else Grad-CAM at the
/// chosen layer; with its size and class.
pub fn shown_map(data: &ExportData) -> (Method, &[f32], usize, usize, usize) {
    let a = &data.analysis;
    let s = &data.settings;
    match a.attribution.as_ref().filter(|m| m.method == s.method) {
        Some(m) => (m.method, &m.map, m.height, m.width, m.class_index),
        None => {
            let cam = &a.layers[s.layer.index()].gradcam;
            (
                Method::GradCam,
                &cam.map,
                cam.height,
                cam.width,
                cam.class_index,
            )
        }
    }
}

/// Heatmap resized to `img` and blended (the CPU twin of the overlay shader).
pub fn overlay_at(
    img: &RgbImage,
    map: &[f32],
    h: usize,
    w: usize,
    s: &ExplainSettings,
) -> RgbImage {
    let heat = resize_bilinear(map, h, w, img.height, img.width);
    RgbImage {
        width: img.width,
        height: img.height,
        rgb: overlay_rgb8(&img.rgb, &heat, s.colormap, s.alpha),
    }
}

/// Write the view into `dir` (created if needed); returns the files written.
pub fn export_view(dir: &Path, data: &ExportData) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let a = &data.analysis;
    let s = &data.settings;
    let (method, map, map_h, map_w, class_index) = shown_map(data);
    let mut written = Vec::new();
    write_png(dir, "image.png", &a.display, &mut written)?;
    write_png(
        dir,
        "overlay.png",
        &overlay_at(&a.display, map, map_h, map_w, s),
        &mut written,
    )?;
    let heat = RgbImage {
        width: map_w,
        height: map_h,
        rgb: heatmap_rgb8(map, s.colormap),
    };
    write_png(dir, "heatmap.png", &heat, &mut written)?;
    let mut summary = serde_json::json!({
        "image": a.path,
        "source_size": [a.source_width, a.source_height],
        "model": data.model.as_ref().map(|m| serde_json::json!({
            "source": m.source, "device": m.device, "config": m.config,
            "description": m.metadata.description,
        })),
        "prediction": a.prediction,
        "warning": a.input_warning,
        "out_of_distribution": a.out_of_distribution,
        // Geometry and grey-level transforms only: no identifying DICOM attribute is read.
        "dicom": a.dicom,
        "explanation": {"method": method.name(), "layer": s.layer, "class_index": class_index,
                        "colormap": s.colormap, "alpha": s.alpha},
    });
    if let Some(r) = &data.attack {
        write_png(dir, "adversarial.png", &r.adversarial, &mut written)?;
        write_png(dir, "perturbation.png", &r.perturbation, &mut written)?;
        let adv_cam = &r.adversarial_cam;
        write_png(
            dir,
            "adversarial_overlay.png",
            &overlay_at(
                &r.adversarial,
                &adv_cam.map,
                adv_cam.height,
                adv_cam.width,
                s,
            ),
            &mut written,
        )?;
        summary["attack"] = serde_json::json!({
            "params": r.params,
            "linf_255": r.linf_255,
            "l2": r.l2,
            "adversarial_prediction": r.adversarial_prediction,
            "gradcam_ssim": r.cam_ssim,
            "gradcam_spearman": r.cam_spearman,
            "loss_per_step": r.loss_per_step,
            "elapsed_secs": r.elapsed_secs,
        });
    }
    let path = dir.join("summary.json");
    triscope::util::fsio::write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    written.push(path);
    Ok(written)
}
