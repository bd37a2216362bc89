//! The audit report viewer: the numbers and figures of a `triscope audit` folder, read on a
//! named thread (`triscope-report`) and shown in a window; the HTML page opens in the browser.

use std::path::{Path, PathBuf};

use eframe::egui;
use triscope::audit::{AuditReport, Mean};

/// A report read from disk with its figures decoded (plain RGBA, no GPU objects yet).
pub struct LoadedReport {
    pub report: AuditReport,
    pub dir: PathBuf,
    pub figures: Vec<(String, String, egui::ColorImage)>,
}

/// Read `audit.json` and decode every figure (runs off the UI thread).
pub fn load_report(path: &Path) -> Result<LoadedReport, String> {
    let (report, dir) = AuditReport::read(path).map_err(|e| e.to_string())?;
    let mut figures = Vec::new();
    for f in &report.figures {
        let file = dir.join(&f.file);
        let img = triscope::io::imaging::decode(&file)
            .map_err(|e| format!("figure {}: {e}", f.title))?
            .to_rgba8();
        let size = [img.width() as usize, img.height() as usize];
        figures.push((
            f.title.clone(),
            f.caption.clone(),
            egui::ColorImage::from_rgba_unmultiplied(size, img.as_raw()),
        ));
    }
    Ok(LoadedReport {
        report,
        dir,
        figures,
    })
}

/// Whether `p` is an audit folder or report file.
pub fn is_report(p: &Path) -> bool {
    (p.is_dir() && p.join("audit.json").is_file())
        || p.file_name()
            .is_some_and(|n| n == "audit.json" || n == "audit.html")
}

/// The window's state.
#[derive(Default)]
pub struct ReportPanel {
    pub open: bool,
    pub loaded: Option<(AuditReport, PathBuf)>,
    textures: Vec<(String, String, egui::TextureHandle)>,
    pub message: Option<String>,
}

impl ReportPanel {
    /// Take a freshly read report: upload its figures once.
    pub fn set(&mut self, ctx: &egui::Context, loaded: LoadedReport) {
        self.textures = loaded
            .figures
            .into_iter()
            .enumerate()
            .map(|(i, (title, caption, image))| {
                let tex = ctx.load_texture(format!("audit-figure-{i}"), image, Default::default());
                (title, caption, tex)
            })
            .collect();
        self.loaded = Some((loaded.report, loaded.dir));
        self.open = true;
        self.message = None;
    }

    #[cfg(test)]
    pub fn figure_count(&self) -> usize {
        self.textures.len()
    }

    pub fn window(&mut self, ctx: &egui::Context) {
        if self.loaded.is_none() {
            return;
        }
        let mut open = self.open;
        egui::Window::new("Audit report")
            .open(&mut open)
            .resizable(true)
            .default_size([780.0, 640.0])
            .show(ctx, |ui| self.ui(ui));
        self.open = open;
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let Some((r, dir)) = &self.loaded else {
            return;
        };
        ui.horizontal(|ui| {
            ui.strong(&r.model);
            ui.weak(format!(
                "{} ({}), {:.0} s",
                r.dataset, r.split, r.elapsed_secs
            ));
        });
        ui.horizontal(|ui| {
            if ui.button("Open the HTML report in a browser").clicked() {
                self.message = Some(open_in_browser(&dir.join("audit.html")));
            }
            ui.weak(dir.display().to_string());
        });
        if let Some(m) = &self.message {
            ui.weak(m);
        }
        ui.separator();
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                let warn = ui.visuals().warn_fg_color;
                if r.warnings.is_empty() {
                    ui.label("No warnings: every fooled-evaluation check passed.");
                }
                for w in &r.warnings {
                    ui.colored_label(warn, w);
                }
                for n in &r.notes {
                    ui.weak(n);
                }
                if let Some(ev) = &r.evaluation {
                    ui.heading(format!("Accuracy ({} images)", ev.n));
                    egui::Grid::new("audit-eval").striped(true).show(ui, |ui| {
                        ui.strong("column");
                        ui.strong("eps");
                        ui.strong("score");
                        ui.end_row();
                        for res in &ev.results {
                            ui.label(&res.attack);
                            ui.label(format!("{:.2}/255", res.eps_linf * 255.0));
                            ui.label(format!("{:.3}", res.score));
                            ui.end_row();
                        }
                    });
                }
                let e = &r.explanation;
                ui.heading(format!("{} on {} images", e.method, e.samples));
                egui::Grid::new("audit-explain")
                    .striped(true)
                    .show(ui, |ui| {
                        ui.strong("metric");
                        ui.strong(&e.method);
                        ui.strong("baseline");
                        ui.end_row();
                        let mut row = |name: &str, a: &Mean, b: Option<&Mean>| {
                            ui.label(name);
                            ui.label(fmt(a));
                            ui.label(b.map(fmt).unwrap_or_default());
                            ui.end_row();
                        };
                        row(
                            "deletion AUC (random map)",
                            &e.deletion_auc,
                            Some(&e.random_deletion_auc),
                        );
                        row(
                            "insertion AUC (random map)",
                            &e.insertion_auc,
                            Some(&e.random_insertion_auc),
                        );
                        row("average drop, %", &e.average_drop, None);
                        row("increase in confidence, %", &e.increase_in_confidence, None);
                        if let (Some(l), Some(p)) = (&e.localisation, &e.centre_prior_localisation)
                        {
                            row(
                                "IoU top 15% (centre prior)",
                                &l.iou_top15,
                                Some(&p.iou_top15),
                            );
                            row(
                                "energy pointing game (centre prior)",
                                &l.energy_pointing_game,
                                Some(&p.energy_pointing_game),
                            );
                            row(
                                "pointing game (centre prior)",
                                &l.pointing_game,
                                Some(&p.pointing_game),
                            );
                        }
                        for s in &e.stability {
                            row(
                                &format!("{} SSIM clean vs adversarial", s.attack),
                                &s.ssim,
                                None,
                            );
                        }
                    });
                for s in &r.sanity {
                    let last = s.check.steps.last().map(|x| x.ssim).unwrap_or(f64::NAN);
                    let text = format!(
                        "sanity check {} on {}: SSIM {:.2} after full randomisation: {}",
                        s.method,
                        s.image,
                        last,
                        if s.check.passed { "pass" } else { "FAIL" }
                    );
                    if s.check.passed {
                        ui.label(text);
                    } else {
                        ui.colored_label(warn, text);
                    }
                }
                let significant: Vec<_> = r.tcav.iter().filter(|t| t.significant).collect();
                if !r.tcav.is_empty() {
                    ui.label(format!(
                        "TCAV: {} of {} concept/class/layer tests significant (Holm-adjusted \
                         p < 0.05)",
                        significant.len(),
                        r.tcav.len()
                    ));
                    for t in significant {
                        ui.weak(format!(
                            "{} at {} for {}: {:.2} vs random {:.2}, p {:.1e} (Holm {:.1e})",
                            t.concept,
                            t.layer,
                            t.class_name,
                            t.mean,
                            t.random_mean,
                            t.p_value,
                            t.p_holm
                        ));
                    }
                }
                for (title, caption, tex) in &self.textures {
                    ui.separator();
                    ui.strong(title);
                    let w = ui.available_width().min(tex.size_vec2().x);
                    let size = tex.size_vec2() * (w / tex.size_vec2().x);
                    ui.image((tex.id(), size));
                    ui.weak(caption);
                }
            });
    }
}

fn fmt(m: &Mean) -> String {
    if m.mean.is_finite() {
        format!("{:.3} (n={})", m.mean, m.n)
    } else {
        "–".into()
    }
}

/// Hand the page to the desktop's browser (`xdg-open`); says what happened.
fn open_in_browser(page: &Path) -> String {
    match std::process::Command::new("xdg-open").arg(page).spawn() {
        Ok(_) => format!("opened {}", page.display()),
        Err(e) => format!(
            "cannot start xdg-open ({e}); open {} in a browser",
            page.display()
        ),
    }
}
