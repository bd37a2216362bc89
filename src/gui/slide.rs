//! "Slide…": the view on screen as a 1920x1080 PNG for a projector (light, large type) and its
//! numbers as JSON, through [`triscope::io::plot::Slide`]; one builder per view.

use triscope::io::plot::{Slide, tick_label};
use triscope::workbench::{AttackResult, ModelInfo, RgbImage};

use super::export::{ExportData, overlay_at, shown_map};

/// The model's name for a subtitle: the file name, or "embedded default".
pub fn model_name(model: Option<&ModelInfo>) -> String {
    model.map_or("no model".into(), |m| short_model(&m.source))
}

/// A model's source as the library names it ("embedded default (PATH)" or a file path),
/// shortened: "embedded default" or the file's stem.
pub fn short_model(source: &str) -> String {
    if source.starts_with("embedded default") {
        "embedded default".into()
    } else {
        std::path::Path::new(source)
            .file_stem()
            .map_or(source.to_string(), |s| s.to_string_lossy().into_owned())
    }
}

fn image_name(path: &std::path::Path) -> String {
    super::gallery::file_name(path)
}

fn add(slide: &mut Slide, caption: impl Into<String>, img: &RgbImage) {
    slide.panel(caption, img.rgb.clone(), img.width, img.height);
}

fn percent(p: f32) -> String {
    format!("{:.1}%", p * 100.0)
}

/// The explanation view: the image, its map and the top classes.
pub fn explanation_slide(data: &ExportData) -> Slide {
    let a = &data.analysis;
    let (method, map, h, w, class) = shown_map(data);
    let class_name = a
        .prediction
        .scores
        .get(class)
        .map_or(String::new(), |s| s.name.clone());
    let mut slide = Slide::new(
        "explanation",
        format!(
            "{} of “{class_name}”: where the model looks",
            method.label()
        ),
        format!(
            "{} · {}",
            model_name(data.model.as_deref()),
            image_name(&a.path)
        ),
    );
    add(&mut slide, "image", &a.display);
    add(
        &mut slide,
        format!("{} ({})", method.label(), data.settings.layer.name()),
        &overlay_at(&a.display, map, h, w, &data.settings),
    );
    let mut scores: Vec<_> = a.prediction.scores.iter().collect();
    scores.sort_by(|x, y| y.probability.total_cmp(&x.probability));
    for s in scores.iter().take(4) {
        slide.number(s.name.clone(), percent(s.probability));
    }
    slide.number("explained class", class_name);
    if let Some(w) = &a.input_warning {
        slide.number("warning", w.clone());
    }
    slide
}

/// The attack view: clean and adversarial images, the perturbation and both Grad-CAMs.
pub fn attack_slide(data: &ExportData, r: &AttackResult) -> Slide {
    let a = &data.analysis;
    let eps = format!(
        "{}/255",
        tick_label(f64::from(r.params.config.eps_linf) * 255.0)
    );
    let fooled = r.adversarial_prediction.class_index != r.clean.class_index;
    let mut slide = Slide::new(
        "attack",
        format!(
            "{} at ε = {eps}: {} {} {}",
            r.params.config.method.name().to_uppercase(),
            r.clean.class_name,
            if fooled { "became" } else { "stayed" },
            r.adversarial_prediction.class_name
        ),
        format!(
            "{} · {}",
            model_name(data.model.as_deref()),
            image_name(&a.path)
        ),
    );
    add(&mut slide, "clean", &a.model_input);
    add(&mut slide, "adversarial", &r.adversarial);
    add(
        &mut slide,
        format!("perturbation (L∞ {:.2}/255, amplified)", r.linf_255),
        &r.perturbation,
    );
    let cam = |img: &RgbImage, m: &triscope::explain::GradCamMap| {
        overlay_at(img, &m.map, m.height, m.width, &data.settings)
    };
    add(
        &mut slide,
        "Grad-CAM, clean",
        &cam(&a.model_input, &r.clean_cam),
    );
    add(
        &mut slide,
        "Grad-CAM, adversarial",
        &cam(&r.adversarial, &r.adversarial_cam),
    );
    slide.number("ε (L∞)", eps);
    slide.number("steps", r.loss_per_step.len().to_string());
    slide.number(
        "clean",
        format!("{} {}", r.clean.class_name, percent(r.clean.confidence)),
    );
    slide.number(
        "adversarial",
        format!(
            "{} {}",
            r.adversarial_prediction.class_name,
            percent(r.adversarial_prediction.confidence)
        ),
    );
    slide.number(
        "Grad-CAM SSIM (clean vs adv.)",
        format!("{:.3}", r.cam_ssim),
    );
    slide.number("Grad-CAM Spearman", format!("{:.3}", r.cam_spearman));
    slide
}
