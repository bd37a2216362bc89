//! The audit's figures, written as PNGs beside `audit.json`.

use std::path::Path;

use super::{Figure, SampleAudit, SanityEntry};
use crate::error::Result;
use crate::eval::EvalReport;
use crate::eval::run::write_sweep_chart;
use crate::explain::sanity::CASCADE;
use crate::explain::tcav::TcavResult;
use crate::explain::{Colormap, Method, overlay_rgb8};
use crate::io::plot::{
    LineChart, PALETTE, Series, Tile, render_bar_chart, render_confusion_matrix, render_image_grid,
    render_line_chart, write_png,
};
use crate::model::LayerId;

/// Write `img` as `out/file` and describe it for the report.
fn save_figure(
    img: &image::RgbImage,
    out: &Path,
    file: &str,
    title: &str,
    caption: &str,
) -> Result<Figure> {
    write_png(&out.join(file), img)?;
    Ok(Figure {
        title: title.into(),
        file: file.into(),
        caption: caption.into(),
    })
}

/// The evaluation's figures: accuracy against eps, confusion matrices (clean, PGD-10) and
/// recall per class under each attack.
pub fn evaluation_figures(ev: &EvalReport, out: &Path) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    if !ev.sweep.is_empty() {
        write_sweep_chart(ev, &out.join("accuracy_vs_eps.png"))?;
        figures.push(Figure {
            title: "Accuracy against eps".into(),
            file: "accuracy_vs_eps.png".into(),
            caption: format!(
                "PGD-10 (L-inf, random start) on {} images at each radius.",
                ev.n
            ),
        });
    }
    // The main columns: clean and each attack at the evaluation's radius (the sweep and the
    // checks add other radii and a noise baseline).
    let with_metrics: Vec<_> = ev
        .results
        .iter()
        .filter(|r| r.metrics.is_some())
        .filter(|r| {
            r.attack == "clean" || (r.eps_linf == ev.eps_linf && r.attack != "uniform-noise")
        })
        .collect();
    for r in &with_metrics {
        if r.attack != "clean" && r.attack != "pgd10" {
            continue;
        }
        let Some(m) = &r.metrics else { continue };
        let title = format!("Confusion matrix, {}", r.attack);
        let img = render_confusion_matrix(&title, &ev.class_names, &m.confusion, 760, 640)?;
        figures.push(save_figure(
            &img,
            out,
            &format!("confusion_{}.png", r.attack),
            &title,
            "Rows: true class; columns: predicted; shade: share of the row (recall on the diagonal).",
        )?);
    }
    if !with_metrics.is_empty() {
        let series: Vec<(String, Vec<f64>)> = with_metrics
            .iter()
            .filter_map(|r| {
                r.metrics
                    .as_ref()
                    .map(|m| (r.attack.clone(), m.per_class_accuracy.clone()))
            })
            .collect();
        let img = render_bar_chart(
            "Recall per class, clean and under attack",
            "recall",
            &ev.class_names,
            &series,
            1.0,
            1000,
            520,
        )?;
        figures.push(save_figure(
            &img,
            out,
            "per_class_robust.png",
            "Per-class robust accuracy",
            &format!(
                "Recall of each class, clean and under each attack at {:.2}/255.",
                ev.eps_linf * 255.0
            ),
        )?);
    }
    Ok(figures)
}

/// Images audited against a region (a lesion, the lungs) whose map puts the least of its
/// energy inside it, lowest first: the shortcuts to look at.
const LEAST_ENERGY_SHOWN: usize = 8;

/// The gallery of the audited images whose map has the least energy inside their region,
/// each with the region outlined; `None` without regions.
fn least_energy_gallery(samples: &[SampleAudit], out: &Path) -> Result<Option<Figure>> {
    let mut ranked: Vec<(&SampleAudit, &crate::audit::Localisation)> = samples
        .iter()
        .filter(|s| s.figures.as_ref().is_some_and(|f| f.region.is_some()))
        .filter_map(|s| s.localisation.first().map(|l| (s, l)))
        .filter(|(_, l)| l.energy_pointing_game.is_finite())
        .collect();
    if ranked.is_empty() {
        return Ok(None);
    }
    ranked.sort_by(|a, b| {
        a.1.energy_pointing_game
            .total_cmp(&b.1.energy_pointing_game)
    });
    let region = ranked[0].1.finding.clone();
    let rows: Vec<(String, Vec<Tile>)> = ranked
        .iter()
        .take(LEAST_ENERGY_SHOWN)
        .filter_map(|(s, l)| {
            let f = s.figures.as_ref()?;
            let mask = f.region.as_ref()?;
            let overlay = overlay_rgb8(&f.image, &f.clean_map, Colormap::Jet, 0.45);
            Some((
                format!(
                    "{}: {:.0}% inside ({:.0}% of the image), {}",
                    Path::new(&s.id)
                        .file_stem()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| s.id.clone()),
                    l.energy_pointing_game * 100.0,
                    l.region_area_fraction * 100.0,
                    s.predicted
                ),
                vec![
                    (outlined(&f.image, mask, f.size), f.size),
                    (outlined(&overlay, mask, f.size), f.size),
                ],
            ))
        })
        .collect();
    let cols = ["image", "map"].map(String::from);
    Ok(Some(save_figure(
        &render_image_grid(
            &format!("Least of the map inside the {region}"),
            &cols,
            &rows,
            160,
        )?,
        out,
        "least_energy.png",
        &format!("Maps with the least energy inside the {region}"),
        &format!(
            "The audited images whose map (the explained class's) puts the smallest share of its energy inside the {region} (outlined in white), lowest first: where a model that should look at the {region} looks elsewhere."
        ),
    )?))
}

/// `rgb` (`side` x `side`) with the boundary pixels of `mask` painted white.
fn outlined(rgb: &[u8], mask: &[bool], side: usize) -> Vec<u8> {
    let mut out = rgb.to_vec();
    let inside = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < side
            && (y as usize) < side
            && mask[y as usize * side + x as usize]
    };
    for y in 0..side as isize {
        for x in 0..side as isize {
            let edge = inside(x, y)
                && [(1, 0), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .any(|(dx, dy)| !inside(x + dx, y + dy));
            if edge {
                let i = (y as usize * side + x as usize) * 3;
                out[i..i + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
    }
    out
}

/// The explanation figures: mean deletion / insertion curves against a random map, clean vs
/// adversarial heatmaps, the sanity check's SSIM and the TCAV scores per layer.
pub fn explanation_figures(
    samples: &[SampleAudit],
    sanity: &[SanityEntry],
    tcav: &[TcavResult],
    method: Method,
    out: &Path,
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    if let Some(first) = samples.first() {
        let mean_curve = |f: &dyn Fn(&SampleAudit) -> &Vec<f64>| -> Vec<(f64, f64)> {
            let n = f(first).len();
            (0..n)
                .map(|k| {
                    let v: Vec<f64> = samples
                        .iter()
                        .filter_map(|s| f(s).get(k).copied())
                        .collect();
                    (
                        k as f64 / (n - 1).max(1) as f64,
                        v.iter().sum::<f64>() / v.len().max(1) as f64,
                    )
                })
                .collect()
        };
        let chart = LineChart {
            title: format!(
                "Deletion and insertion ({}, mean of {} images)",
                method.label(),
                samples.len()
            ),
            x_label: "fraction of pixels deleted / inserted".into(),
            y_label: "probability of the class".into(),
            series: vec![
                Series {
                    name: "deletion".into(),
                    points: mean_curve(&|s| &s.faithfulness.deletion_curve),
                    color: PALETTE[1],
                },
                Series {
                    name: "insertion".into(),
                    points: mean_curve(&|s| &s.faithfulness.insertion_curve),
                    color: PALETTE[0],
                },
                Series {
                    name: "deletion, random".into(),
                    points: mean_curve(&|s| &s.random_faithfulness.deletion_curve),
                    color: PALETTE[4],
                },
                Series {
                    name: "insertion, random".into(),
                    points: mean_curve(&|s| &s.random_faithfulness.insertion_curve),
                    color: PALETTE[5],
                },
            ],
            y_range: Some((0.0, 1.0)),
            x_ticks: Vec::new(),
        };
        figures.push(save_figure(
            &render_line_chart(&chart, 900, 520)?,
            out,
            "insertion_deletion.png",
            "Insertion and deletion curves",
            "RISE protocol: most salient pixels first, one row's worth per step; deletion to the normalisation mean, insertion from a Gaussian blur (sigma 5). A random map is the chance level.",
        )?);
    }
    let rows: Vec<(String, Vec<Tile>)> = samples
        .iter()
        .filter_map(|s| s.figures.as_ref().map(|f| (s, f)))
        .take(8)
        .map(|(s, f)| {
            let overlay = |rgb: &[u8], map: &[f32]| overlay_rgb8(rgb, map, Colormap::Jet, 0.45);
            let pgd = s.stability.iter().find(|x| x.attack == "pgd10");
            (
                format!(
                    "{}: {} > {}",
                    s.true_label,
                    s.predicted,
                    pgd.map(|p| p.adversarial_class.as_str()).unwrap_or("")
                ),
                vec![
                    (f.image.clone(), f.size),
                    (overlay(&f.image, &f.clean_map), f.size),
                    (f.adversarial.clone(), f.size),
                    (overlay(&f.adversarial, &f.adversarial_map), f.size),
                ],
            )
        })
        .collect();
    if !rows.is_empty() {
        let cols = ["image", "clean map", "PGD-10 image", "adversarial map"].map(String::from);
        figures.push(save_figure(
            &render_image_grid("Clean vs adversarial explanations", &cols, &rows, 160)?,
            out,
            "heatmap_grid.png",
            "Clean vs adversarial heatmaps",
            "Each row: true class, clean prediction > prediction under PGD-10. Both maps explain the clean prediction's class.",
        )?);
    }
    if let Some(f) = least_energy_gallery(samples, out)? {
        figures.push(f);
    }
    if !sanity.is_empty() {
        let series = sanity
            .iter()
            .enumerate()
            .map(|(k, s)| Series {
                name: format!("{} {}", s.method, short_id(&s.image)),
                points: std::iter::once((0.0, 1.0))
                    .chain(
                        s.check
                            .steps
                            .iter()
                            .enumerate()
                            .map(|(i, st)| ((i + 1) as f64, st.ssim)),
                    )
                    .collect(),
                color: PALETTE[k % PALETTE.len()],
            })
            .collect();
        let mut ticks = vec![(0.0, "none".to_string())];
        ticks.extend(
            CASCADE
                .iter()
                .enumerate()
                .map(|(i, s)| ((i + 1) as f64, format!("+{s}"))),
        );
        let chart = LineChart {
            title: "Sanity check: SSIM with the original map".into(),
            x_label: "randomised down to".into(),
            y_label: "SSIM".into(),
            series,
            y_range: Some((-0.2, 1.0)),
            x_ticks: ticks,
        };
        figures.push(save_figure(
            &render_line_chart(&chart, 900, 520)?,
            out,
            "sanity.png",
            "Cascading randomisation",
            "Adebayo et al.: stages re-initialised from the head down; a map that stays similar fails.",
        )?);
    }
    let mut layers: Vec<LayerId> = Vec::new();
    for t in tcav {
        if !layers.contains(&t.layer) {
            layers.push(t.layer);
        }
    }
    for layer in layers {
        let at_layer: Vec<&TcavResult> = tcav.iter().filter(|t| t.layer == layer).collect();
        let mut classes: Vec<String> = Vec::new();
        let mut concepts: Vec<String> = Vec::new();
        for t in &at_layer {
            if !classes.contains(&t.class_name) {
                classes.push(t.class_name.clone());
            }
            if !concepts.contains(&t.concept) {
                concepts.push(t.concept.clone());
            }
        }
        let find = |c: &str, k: &str| {
            at_layer
                .iter()
                .find(|t| t.concept == c && t.class_name == k)
        };
        let mut series: Vec<(String, Vec<f64>)> = concepts
            .iter()
            .map(|c| {
                let v = classes
                    .iter()
                    .map(|k| find(c, k).map(|t| t.mean).unwrap_or(f64::NAN))
                    .collect();
                (c.clone(), v)
            })
            .collect();
        let random = classes
            .iter()
            .map(|k| {
                find(&concepts[0], k)
                    .map(|t| t.random_mean)
                    .unwrap_or(f64::NAN)
            })
            .collect();
        series.push((format!("random ({})", concepts[0]), random));
        let title = format!("TCAV scores at {layer}");
        figures.push(save_figure(
            &render_bar_chart(&title, "TCAV score", &classes, &series, 1.0, 1000, 520)?,
            out,
            &format!("tcav_{layer}.png"),
            &title,
            "Share of each class's images whose class logit rises along the concept's CAV, mean \
             over runs; 'random' is the random-vs-random null. Significance is in the table.",
        )?);
    }
    Ok(figures)
}

/// The end of an image's name without its extension (fits a legend: "0024470").
fn short_id(id: &str) -> String {
    let stem = Path::new(id)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| id.to_string());
    let chars: Vec<char> = stem.chars().collect();
    chars[chars.len().saturating_sub(8)..].iter().collect()
}
