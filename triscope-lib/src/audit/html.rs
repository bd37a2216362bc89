//! The audit's self-contained HTML page: every number of `audit.json` as tables, the figure
//! PNGs embedded as base64.

use std::path::Path;

use super::{AuditReport, Mean, SampleAudit};
use crate::error::{Result, TriscopeError};

/// Standard base64 (RFC 4648, with padding), for the images embedded in the HTML.
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".into()
    }
}

fn fmt_mean(m: &Mean) -> String {
    format!("{} <small>(n={})</small>", fmt(m.mean), m.n)
}

/// The self-contained HTML page of `report`, figures read from `dir` and embedded.
/// How many audited images the out-of-distribution score flags, or that the model carries
/// no statistics.
pub fn out_of_distribution_line(samples: &[SampleAudit]) -> String {
    let scored: Vec<_> = samples
        .iter()
        .filter_map(|s| s.out_of_distribution)
        .collect();
    match scored.first() {
        None => "Out of distribution: the model carries no statistics of its training data \
                 (triscope ood), so no image is checked against it."
            .to_string(),
        Some(first) => format!(
            "Out of distribution: {} of {} audited images are unlike the model's training data \
             (score above {:.2}; about 5% of images like it are flagged too).",
            scored.iter().filter(|o| o.flag).count(),
            scored.len(),
            first.threshold
        ),
    }
}

pub fn render_html(report: &AuditReport, dir: &Path) -> Result<String> {
    let mut h = String::new();
    let title = format!("Triscope audit: {}", report.model);
    h.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\
         .warn{{background:#fff3cd;border:1px solid #e0c060;padding:8px;margin:4px 0}}\
         .ok{{color:#1a7f37}}.bad{{color:#b42318}}figure{{margin:1.5em 0}}img{{max-width:100%}}\
         figcaption{{color:#555;font-size:90%}}</style></head><body>\n",
        escape(&title)
    ));
    h.push_str(&format!("<h1>{}</h1>\n", escape(&title)));
    h.push_str(&format!(
        "<p>{}<br>Data: {} (split {}), device: {}, {:.0} s.</p>\n",
        escape(&report.model_description),
        escape(&report.dataset),
        escape(&report.split),
        escape(&report.device),
        report.elapsed_secs
    ));
    h.push_str("<h2>Warnings</h2>\n");
    if report.warnings.is_empty() {
        h.push_str("<p class=\"ok\">None: every fooled-evaluation check passed.</p>\n");
    }
    for w in &report.warnings {
        h.push_str(&format!("<div class=\"warn\">{}</div>\n", escape(w)));
    }
    for n in &report.notes {
        h.push_str(&format!("<p><em>{}</em></p>\n", escape(n)));
    }
    if let Some(ev) = &report.evaluation {
        h.push_str(&format!(
            "<h2>Clean and robust accuracy ({} images, eps {:.2}/255)</h2>\n<table><tr><th>column</th><th>eps</th><th>{}</th><th>balanced acc.</th><th>macro-F1</th><th>attack success</th></tr>\n",
            ev.n,
            ev.eps_linf * 255.0,
            if ev.multi_label { "mean AUROC" } else { "accuracy" }
        ));
        for r in &ev.results {
            let (bal, f1) = r
                .metrics
                .as_ref()
                .map(|m| (m.balanced_accuracy, m.macro_f1))
                .unwrap_or((f64::NAN, f64::NAN));
            h.push_str(&format!(
                "<tr><td>{}</td><td>{:.2}/255</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&r.attack),
                r.eps_linf * 255.0,
                fmt(r.score),
                fmt(bal),
                fmt(f1),
                fmt(r.attack_success_rate.unwrap_or(f64::NAN))
            ));
        }
        h.push_str("</table>\n<h3>Fooled-evaluation checks</h3>\n<table><tr><th>check</th><th>result</th><th>detail</th></tr>\n");
        for c in &ev.checks {
            h.push_str(&format!(
                "<tr><td>{}</td><td class=\"{}\">{}</td><td style=\"text-align:left\">{}</td></tr>\n",
                escape(&c.name),
                if c.passed { "ok" } else { "bad" },
                if c.passed { "pass" } else { "FAIL" },
                escape(&c.detail)
            ));
        }
        h.push_str("</table>\n");
    }
    let e = &report.explanation;
    h.push_str(&format!(
        "<h2>Explanations: {}{} on {} images</h2>\n<table><tr><th>metric</th><th>{}</th><th>random map / centre prior</th></tr>\n",
        escape(&e.method),
        e.layer.as_deref().map(|l| format!(" ({l})")).unwrap_or_default(),
        e.samples,
        escape(&e.method)
    ));
    let row = |h: &mut String, name: &str, a: &Mean, b: Option<&Mean>| {
        h.push_str(&format!(
            "<tr><td>{name}</td><td>{}</td><td>{}</td></tr>\n",
            fmt_mean(a),
            b.map(fmt_mean).unwrap_or_default()
        ));
    };
    row(
        &mut h,
        "deletion AUC (lower is better)",
        &e.deletion_auc,
        Some(&e.random_deletion_auc),
    );
    row(
        &mut h,
        "insertion AUC (higher is better)",
        &e.insertion_auc,
        Some(&e.random_insertion_auc),
    );
    row(&mut h, "average drop, %", &e.average_drop, None);
    row(
        &mut h,
        "increase in confidence, % of images",
        &e.increase_in_confidence,
        None,
    );
    if let (Some(l), Some(p)) = (&e.localisation, &e.centre_prior_localisation) {
        row(
            &mut h,
            "IoU, top 15% of the map",
            &l.iou_top15,
            Some(&p.iou_top15),
        );
        row(
            &mut h,
            "IoU, Otsu threshold",
            &l.iou_otsu,
            Some(&p.iou_otsu),
        );
        row(
            &mut h,
            "energy pointing game (share of the map inside the region)",
            &l.energy_pointing_game,
            Some(&p.energy_pointing_game),
        );
        h.push_str(&format!(
            "<tr><td>its spread (standard deviation over images) / the region's share of the image (a uniform map)</td><td>{} / {}</td><td></td></tr>\n",
            fmt(l.energy_pointing_game_std),
            fmt(l.region_area_fraction.mean)
        ));
        row(
            &mut h,
            "pointing game (strict)",
            &l.pointing_game,
            Some(&p.pointing_game),
        );
        row(
            &mut h,
            "pointing game (15 px at 224)",
            &l.pointing_game_tolerant,
            Some(&p.pointing_game_tolerant),
        );
    }
    h.push_str("</table>\n");
    if !e.stability.is_empty() {
        h.push_str("<h3>Stability of the map under attack</h3>\n<table><tr><th>attack</th><th>eps</th><th>prediction flipped</th><th>SSIM</th><th>Spearman</th><th>top-15% overlap</th></tr>\n");
        for s in &e.stability {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{:.2}/255</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&s.attack),
                s.eps_linf * 255.0,
                fmt(s.flip_rate.mean),
                fmt(s.ssim.mean),
                fmt(s.spearman.mean),
                fmt(s.top15_intersection.mean)
            ));
        }
        h.push_str("</table>\n");
    }
    if !report.sanity.is_empty() {
        h.push_str("<h3>Sanity check: cascading model randomisation (SSIM with the original map)</h3>\n<table><tr><th>method</th><th>image</th>");
        for stage in crate::explain::sanity::CASCADE {
            h.push_str(&format!("<th>{stage}</th>"));
        }
        h.push_str("<th>result</th></tr>\n");
        for s in &report.sanity {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td>",
                escape(&s.method),
                escape(&s.image)
            ));
            for step in &s.check.steps {
                h.push_str(&format!("<td>{}</td>", fmt(step.ssim)));
            }
            h.push_str(&format!(
                "<td class=\"{}\">{}</td></tr>\n",
                if s.check.passed { "ok" } else { "bad" },
                if s.check.passed {
                    "pass"
                } else {
                    "FAIL: map survives randomisation"
                }
            ));
        }
        h.push_str("</table>\n");
    }
    if !report.tcav.is_empty() {
        h.push_str("<h3>TCAV</h3>\n<p>A row is read only when its CAVs separate the concept from its counter-set on held-out images (mean accuracy at least 0.60; random-vs-random CAVs score about 0.50); rows marked <em>not separable</em> say nothing, whatever their p-value.</p>\n<table><tr><th>concept</th><th>layer</th><th>class</th><th>images</th><th>TCAV score</th><th>random</th><th>p</th><th>p (Holm)</th><th>significant (Holm, 0.05)</th><th>CAV held-out accuracy (random CAVs)</th></tr>\n");
        for t in &report.tcav {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ± {}</td><td>{}</td><td>{:.3e}</td><td>{:.3e}</td><td>{}</td><td>{} ({}){}</td></tr>\n",
                escape(&t.concept),
                t.layer,
                escape(&t.class_name),
                t.class_images,
                fmt(t.mean),
                fmt(t.std),
                fmt(t.random_mean),
                t.p_value,
                t.p_holm,
                match (t.significant, t.cav_separable) {
                    (true, true) => "yes",
                    (false, true) => "no",
                    (_, false) => "(not separable)",
                },
                fmt(t.cav_accuracy()),
                fmt(t.random_cav_accuracy),
                if t.cav_separable { "" } else { " <em>not separable</em>" }
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Figures</h2>\n");
    for f in &report.figures {
        let path = dir.join(&f.file);
        let bytes = std::fs::read(&path).map_err(|source| TriscopeError::Io {
            path: path.clone(),
            source,
        })?;
        h.push_str(&format!(
            "<figure><h3>{}</h3><img alt=\"{}\" src=\"data:image/png;base64,{}\"><figcaption>{}</figcaption></figure>\n",
            escape(&f.title),
            escape(&f.title),
            base64(&bytes),
            escape(&f.caption)
        ));
    }
    h.push_str("<h2>Per image</h2>\n");
    h.push_str(&format!(
        "<p>{}</p>\n",
        escape(&out_of_distribution_line(&report.samples))
    ));
    h.push_str("<table><tr><th>image</th><th>true</th><th>predicted</th><th>deletion</th><th>insertion</th><th>IoU top 15%</th><th>PGD-10 SSIM</th><th>unlike the training data</th></tr>\n");
    for s in &report.samples {
        let iou = s
            .localisation
            .first()
            .map(|l| fmt(l.iou_top15))
            .unwrap_or_default();
        let pgd = s
            .stability
            .iter()
            .find(|x| x.attack == "pgd10")
            .map(|x| fmt(x.ssim))
            .unwrap_or_default();
        let ood = s
            .out_of_distribution
            .map(|o| format!("{}{:.1}", if o.flag { "yes, " } else { "" }, o.score))
            .unwrap_or_default();
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{} ({:.2})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&s.id),
            escape(&s.true_label),
            escape(&s.predicted),
            s.confidence,
            fmt(s.faithfulness.deletion_auc),
            fmt(s.faithfulness.insertion_auc),
            iou,
            pgd,
            ood
        ));
    }
    h.push_str("</table>\n<p><small>Written by triscope audit; the numbers are in audit.json beside this file.</small></p>\n</body></html>\n");
    Ok(h)
}
