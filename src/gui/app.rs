//! The workbench window: menu, gallery, tabs (Explanation, Layers, Attack), predictions and
//! a status bar. Compute runs on the `triscope-model` thread ([`WorkerHandle`]); file
//! dialogs and exports on short-lived named threads; results come back over bounded
//! channels and are drawn on the next frame.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use eframe::egui;
use triscope::attack::AttackMethod;
use triscope::explain::TargetClass;
use triscope::explain::attribution::Method;
use triscope::inference::{Modality, ModelEntry};
use triscope::model::device::ComputeDevice;
use triscope::workbench::{Job, ModelInfo, WorkerEvent, WorkerHandle};

use super::attack::{AttackPanel, AttackProgress};
use super::audit::AuditPanel;
use super::compare::ComparePanel;
use super::concepts::ConceptsPanel;
use super::explain::ExplainPanel;
use super::export::{ExportData, export_view};
use super::gallery::{GalleryEntry, GalleryPanel, is_image, list_folder};
use super::layers::LayersPanel;
use super::overlay;
use super::predictions::PredictionPanel;
use super::report::{ReportPanel, is_report, load_report};
use super::state::{SavedState, Tab, ThemeChoice, UiAction};
use super::sweep::{SweepPanel, SweepProgress};
use super::training::TrainingPanel;

/// How the app starts.
pub struct AppInit {
    pub device: ComputeDevice,
    /// Model file from the command line (overrides the remembered one).
    pub model: Option<PathBuf>,
    pub samples_dir: PathBuf,
    /// Bundled checkpoints, offered in the File menu.
    pub models_dir: PathBuf,
    /// Written once the first explanation has been drawn (for scripted screenshots).
    pub ready_file: Option<PathBuf>,
    /// An image, folder, model or audit report to open at start (the command line's path).
    pub open: Option<PathBuf>,
    /// Read the remembered state (off in tests, for reproducible screens).
    pub restore_state: bool,
    /// Whether burn and the renderer share one wgpu device.
    pub shared_device: bool,
}

/// Results of background helpers (dialogs, exports).
enum Background {
    Image(PathBuf),
    Folder(PathBuf, Result<Vec<GalleryEntry>, String>),
    Model(PathBuf),
    Exported(Result<(PathBuf, usize), String>),
    Report(Box<Result<super::report::LoadedReport, String>>),
}

/// Latest request id per job kind; events answering older ones are dropped.
#[derive(Debug, Default, Clone, Copy)]
struct Latest {
    model: u64,
    analysis: u64,
    attack: u64,
    sweep: u64,
}

/// The compare view's second model thread and its latest requests.
struct SecondModel {
    worker: WorkerHandle,
    latest: Latest,
}

pub struct TriscopeApp {
    pub saved: SavedState,
    worker: WorkerHandle,
    pub model: Option<Arc<ModelInfo>>,
    device_line: String,
    pub gallery: GalleryPanel,
    pub predictions: PredictionPanel,
    pub explain: ExplainPanel,
    pub layers: LayersPanel,
    pub attack: AttackPanel,
    pub sweep: SweepPanel,
    pub compare: ComparePanel,
    /// Started when a second model is first chosen to compare.
    second: Option<SecondModel>,
    /// The compute device, for the second model's thread.
    device: ComputeDevice,
    ctx: egui::Context,
    pub training: TrainingPanel,
    pub audit: AuditPanel,
    pub concepts: ConceptsPanel,
    pub report: ReportPanel,
    pub current_image: Option<PathBuf>,
    /// Class the explanation targets (`None`: predicted).
    explain_class: Option<usize>,
    /// The DICOM window asked for by the sliders (`None`: the file's, else min-max).
    pub dicom_window: Option<triscope::io::dicom::Window>,
    latest: Latest,
    /// Last finished operation and its time, for the status bar.
    pub status: String,
    pub errors: Vec<String>,
    show_model_info: bool,
    /// `*.safetensors` files of the models folder with their modality (listed once at start,
    /// from the files' headers).
    bundled_models: Vec<ModelEntry>,
    /// A bundled sample waiting for the model it opens with.
    pending_image: Option<PathBuf>,
    /// Text of the File menu's path field (works where no file-dialog portal is running).
    path_input: String,
    background_tx: SyncSender<Background>,
    background_rx: Receiver<Background>,
    ready_file: Option<PathBuf>,
    ready_written: bool,
    /// Most CPU time one frame's UI code took on the UI thread, in ms (status bar tooltip).
    /// CPU time, not wall time: what the frame itself costs, whatever else the machine does.
    pub max_frame_ms: f32,
    /// Frames drawn since start.
    pub frames: u64,
    applied_theme: Option<ThemeChoice>,
    applied_zoom: f32,
    uses_shader: bool,
}

impl TriscopeApp {
    pub fn new(cc: &eframe::CreationContext<'_>, init: AppInit) -> Self {
        let saved: SavedState = if init.restore_state {
            cc.storage
                .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
                .unwrap_or_default()
        } else {
            SavedState::default()
        };
        let gpu = overlay::install(cc.wgpu_render_state.as_ref());
        let ctx = cc.egui_ctx.clone();
        let device_line = format!(
            "{}{}",
            init.device.description,
            if init.shared_device {
                " · shared with the renderer"
            } else {
                ""
            }
        );
        let train_ctx = ctx.clone();
        let audit_ctx = ctx.clone();
        let concepts_ctx = ctx.clone();
        let app_ctx = ctx.clone();
        let wake = Box::new(move || ctx.request_repaint());
        let device = init.device.clone();
        let (worker, errors) = match WorkerHandle::spawn(init.device, wake) {
            Ok(w) => (w, Vec::new()),
            Err(e) => panic_free_worker_error(e),
        };
        let (background_tx, background_rx) = sync_channel(16);
        let mut app = Self {
            gallery: GalleryPanel::new(&init.samples_dir),
            predictions: PredictionPanel::default(),
            explain: ExplainPanel::new(saved.explain.clone(), gpu),
            layers: LayersPanel::new(saved.top_k, gpu),
            attack: AttackPanel::new(saved.attack.clone(), gpu),
            sweep: SweepPanel::new(saved.sweep.clone()),
            compare: ComparePanel::new(
                triscope::inference::list_models(&init.models_dir)
                    .into_iter()
                    .map(|e| (e.name, e.path))
                    .collect(),
            ),
            second: None,
            device,
            ctx: app_ctx,
            training: TrainingPanel::new(saved.training.clone()),
            audit: AuditPanel::new(saved.audit.clone()),
            concepts: ConceptsPanel::default(),
            report: ReportPanel::default(),
            saved,
            worker,
            model: None,
            device_line,
            current_image: None,
            explain_class: None,
            dicom_window: None,
            latest: Latest::default(),
            status: "loading the model…".into(),
            errors,
            show_model_info: false,
            bundled_models: triscope::inference::list_models(&init.models_dir),
            pending_image: None,
            path_input: String::new(),
            background_tx,
            background_rx,
            ready_file: init.ready_file,
            ready_written: false,
            max_frame_ms: 0.0,
            frames: 0,
            applied_theme: None,
            applied_zoom: 0.0,
            uses_shader: gpu,
        };
        app.training.wake = Some(Arc::new(move || train_ctx.request_repaint()));
        app.audit.wake = Some(Arc::new(move || audit_ctx.request_repaint()));
        app.concepts.wake = Some(Arc::new(move || concepts_ctx.request_repaint()));
        let model = init.model.or_else(|| app.saved.model_path.clone());
        app.load_model(model);
        // Opened before the model has loaded: the analysis waits in the worker's queue, and
        // the loaded model re-analyses what is current instead of opening a sample.
        if let Some(p) = init.open {
            app.open_path(p);
        }
        app
    }

    /// True once an analysis of the current image is on screen.
    pub fn has_analysis(&self) -> bool {
        self.explain.analysis.is_some()
    }

    #[cfg(test)]
    pub fn uses_shader(&self) -> bool {
        self.uses_shader
    }

    pub fn load_model(&mut self, path: Option<PathBuf>) {
        self.latest.model = self.worker.submit(Job::LoadModel { path });
        self.status = "loading the model…".into();
    }

    /// The loaded model's modality ([`Modality::of_model`]).
    fn model_modality(&self) -> Option<Modality> {
        let m = self.model.as_ref()?;
        Modality::of_model(&m.config, m.metadata.dataset.as_deref())
    }

    /// The bundled models made for `modality` (those trained on `dataset` first), without the
    /// one loaded.
    fn bundled_models_for(&self, modality: Modality, dataset: Option<&str>) -> Vec<&ModelEntry> {
        let current = self.model.as_ref().and_then(|m| m.file.as_ref());
        triscope::inference::models_for(&self.bundled_models, modality, dataset)
            .into_iter()
            .filter(|e| Some(&e.path) != current)
            .collect()
    }

    /// Open an image picked in the gallery. A bundled sample of another modality than the
    /// model's (a chest radiograph under the dermoscopy default) opens with a bundled model
    /// made for it, as the one who clicked it expects; other images open as they are.
    fn open_from_gallery(&mut self, path: PathBuf) {
        let sample = self
            .gallery
            .sample(&path)
            .and_then(|e| Some((e.modality()?, e.dataset.clone())));
        if let (Some((modality, dataset)), Some(current)) = (sample, self.model_modality())
            && modality != current
            && let Some(model) = self
                .bundled_models_for(modality, dataset.as_deref())
                .first()
                .map(|e| (e.path.clone(), e.name.clone()))
        {
            self.pending_image = Some(path.clone());
            self.gallery.selected = Some(path);
            self.load_model(Some(model.0));
            self.status = format!("loading {}, made for this sample's kind of image…", model.1);
            return;
        }
        self.open_image(path);
    }

    pub fn open_image(&mut self, path: PathBuf) {
        self.gallery.selected = Some(path.clone());
        self.current_image = Some(path);
        self.explain_class = None;
        self.dicom_window = None;
        self.analyze();
    }

    fn analyze(&mut self) {
        let Some(path) = self.current_image.clone() else {
            return;
        };
        let target = match self.explain_class {
            Some(c) => TargetClass::Index(c),
            None => TargetClass::Predicted,
        };
        self.latest.analysis = self.worker.submit(Job::Analyze {
            path,
            target,
            top_k: self.layers.top_k,
            method: self.explain.settings.method,
            method_layer: self.explain.settings.layer,
            window: self.dicom_window,
        });
        // A running attack or sweep belongs to the old analysis; the worker has cancelled it.
        self.latest.attack = 0;
        self.attack.running = false;
        self.latest.sweep = 0;
        self.sweep.running = false;
    }

    pub fn run_attack(&mut self) {
        if self.attack.clean.is_none() {
            return;
        }
        self.attack.layer = self.explain.settings.layer;
        self.latest.attack = self.worker.submit(Job::Attack(self.attack_request()));
        // The worker cancels a running sweep for it.
        self.latest.sweep = 0;
        self.sweep.running = false;
        self.attack.running = true;
        self.attack.progress = Some(AttackProgress {
            request: self.latest.attack,
            ..Default::default()
        });
    }

    /// Sweep the open image: the sweep panel's attack at each budget, on the model thread
    /// (it cancels a running attack).
    pub fn run_sweep(&mut self, eps_linf: Vec<f32>) {
        if self.attack.clean.is_none() {
            return;
        }
        let s = &self.sweep.settings;
        let steps = if s.method == AttackMethod::Square {
            s.queries.max(1)
        } else {
            s.steps.max(1)
        };
        let mut attack = triscope::workbench::AttackRequest::new(s.method, 0.0, steps);
        attack.layer = self.explain.settings.layer;
        attack.label = self.image_label();
        // The compare tab's model B beside it, with the same request.
        self.sweep.forget_b();
        if self.sweep.settings.with_b
            && self.sweep.b_name.is_some()
            && let Some(s) = &mut self.second
        {
            s.latest.sweep = s.worker.submit(Job::Sweep {
                attack: attack.clone(),
                eps_linf: eps_linf.clone(),
            });
            s.latest.attack = 0;
            self.sweep.running_b = true;
        }
        self.latest.sweep = self.worker.submit(Job::Sweep { attack, eps_linf });
        self.latest.attack = 0;
        self.attack.running = false;
        self.sweep.running = true;
        self.sweep.result = None;
        self.sweep.progress = Some(SweepProgress {
            request: self.latest.sweep,
            ..Default::default()
        });
    }

    /// The Attack tab's request, with the open image's label as the true class.
    fn attack_request(&self) -> triscope::workbench::AttackRequest {
        let mut r = self.attack.request();
        r.label = self.image_label();
        r
    }

    /// The open image's label in the model's classes, where its folder has one the model knows
    /// (single-label models): what attacks and sweeps count as the true class.
    fn image_label(&self) -> Option<usize> {
        let m = self.model.as_ref().filter(|m| !m.config.multi_label)?;
        let labels = &self
            .explain
            .analysis
            .as_ref()?
            .ground_truth
            .as_ref()?
            .labels;
        let [label] = labels.as_slice() else {
            return None;
        };
        m.config
            .class_names
            .iter()
            .position(|c| c.eq_ignore_ascii_case(label.trim()))
    }

    /// One budget of the sweep in the Attack tab: the same attack, step and seed, so the
    /// same adversarial image.
    fn show_sweep_point(&mut self, i: usize) {
        let Some(r) = self.sweep.result.clone() else {
            return;
        };
        let Some(p) = r.sweep.points.get(i) else {
            return;
        };
        let a = &mut self.attack.settings;
        let c = &r.params.config;
        a.method = c.method;
        a.eps_linf_x255 = p.eps_linf_x255;
        a.step_255 = p.alpha * 255.0;
        if c.method == AttackMethod::Square {
            a.queries = c.steps;
        } else {
            a.steps = c.steps;
        }
        a.targeted = false;
        self.saved.tab = Tab::Attack;
        self.run_attack();
    }

    /// Load `path` as the compare view's model B on its own thread (started the first time).
    fn compare_with(&mut self, path: PathBuf) {
        if self.second.is_none() {
            let ctx = self.ctx.clone();
            let wake = Box::new(move || ctx.request_repaint());
            match WorkerHandle::spawn_named("triscope-model-b", self.device.clone(), wake) {
                Ok(worker) => {
                    self.second = Some(SecondModel {
                        worker,
                        latest: Latest::default(),
                    });
                }
                Err(e) => {
                    self.errors.push(format!("second model thread: {e}"));
                    return;
                }
            }
        }
        let Some(s) = &mut self.second else {
            return;
        };
        self.compare.chosen = Some(path.clone());
        self.compare.model_b = None;
        self.compare.reset_b();
        self.compare.waiting_b = true;
        s.latest.model = s.worker.submit(Job::LoadModel { path: Some(path) });
    }

    /// B explains the class A explains, on A's image (when the two share their classes).
    fn analyze_b(&mut self) {
        let (Some(s), Some(a)) = (&mut self.second, self.compare.analysis_a()) else {
            return;
        };
        if self.compare.model_b.is_none() || self.compare.refusal.is_some() {
            return;
        }
        s.latest.analysis = s.worker.submit(Job::Analyze {
            path: a.path.clone(),
            target: TargetClass::Index(a.target_class),
            top_k: 0,
            method: Method::GradCam,
            method_layer: self.explain.settings.layer,
            window: self.dicom_window,
        });
        s.latest.attack = 0;
        self.compare.waiting_b = true;
    }

    /// What the second model's thread sent.
    fn poll_second(&mut self, ctx: &egui::Context) {
        let Some(s) = &self.second else {
            return;
        };
        let latest = s.latest;
        for event in s.worker.poll() {
            match event {
                WorkerEvent::ModelLoaded { request, info, .. } if request == latest.model => {
                    let info: Arc<ModelInfo> = Arc::from(info);
                    self.compare.refusal = self
                        .model
                        .as_deref()
                        .and_then(|a| ComparePanel::incompatible(a, &info));
                    self.compare.waiting_b = false;
                    self.compare.model_b = Some(info);
                    self.analyze_b();
                }
                WorkerEvent::Analysis(a) if a.request == latest.analysis => {
                    self.compare.set_b(ctx, Arc::from(a));
                }
                WorkerEvent::Attack(r) if r.request == latest.attack => {
                    self.compare.set_attack(ctx, true, Arc::from(r));
                }
                WorkerEvent::Sweep(r) if r.request == latest.sweep => {
                    self.sweep.set_result_b(ctx, Arc::from(r));
                }
                WorkerEvent::Failed {
                    request, message, ..
                } if [latest.model, latest.analysis, latest.attack, latest.sweep]
                    .contains(&request) =>
                {
                    self.compare.waiting_b = false;
                    self.sweep.running_b = false;
                    self.errors.push(format!("compare (model B): {message}"));
                }
                _ => {}
            }
        }
    }

    #[cfg(test)]
    pub fn handle_action_for_test(&mut self, action: UiAction) {
        self.handle_action(action);
    }

    fn handle_action(&mut self, action: UiAction) {
        match action {
            UiAction::OpenImage(p) => self.open_from_gallery(p),
            UiAction::ExplainClass(c) => {
                self.explain_class = c;
                self.analyze();
            }
            UiAction::SelectMethod(m) => {
                self.explain.settings.method = m;
                self.analyze();
            }
            UiAction::SelectLayer(l) => {
                self.explain.settings.layer = l;
                self.layers.selected = l;
                // Grad-CAM has every layer already; other CAM methods are computed per layer.
                let method = self.explain.settings.method;
                if method != Method::GradCam && method.uses_layer() {
                    self.analyze();
                }
                if self.attack.result.is_some() {
                    self.run_attack();
                }
            }
            UiAction::RunAttack => self.run_attack(),
            UiAction::RunSweep(eps_linf) => self.run_sweep(eps_linf),
            UiAction::CancelSweep => {
                self.worker.cancel_attacks();
                if let Some(s) = &mut self.second {
                    s.worker.cancel_attacks();
                    s.latest.sweep = 0;
                }
                self.sweep.running_b = false;
                self.latest.sweep = 0;
                self.sweep.running = false;
                self.sweep.progress = None;
            }
            UiAction::ShowSweepPoint(i) => self.show_sweep_point(i),
            UiAction::CompareWith(p) => self.compare_with(p),
            UiAction::AttackBoth => {
                self.run_attack();
                let request = self.attack_request();
                if let Some(s) = &mut self.second
                    && self.compare.refusal.is_none()
                    && self.attack.clean.is_some()
                {
                    s.latest.attack = s.worker.submit(Job::Attack(request));
                }
            }
            UiAction::TopKChanged => self.analyze(),
            UiAction::LoadModel(p) => {
                self.load_model(Some(p));
                self.saved.tab = Tab::Explanation;
            }
            UiAction::DicomWindow(w) => {
                self.dicom_window = w;
                self.analyze();
            }
        }
    }

    /// Take in what the worker and the helpers sent; drop answers to superseded requests.
    pub fn poll(&mut self, ctx: &egui::Context) {
        // Training and audit events are taken every frame, whichever tab is shown.
        self.training.poll();
        self.audit.poll();
        self.concepts.poll(ctx);
        self.poll_second(ctx);
        if let Some(dir) = self.audit.finished.take() {
            self.open_report(dir);
        }
        for event in self.worker.poll() {
            self.handle_event(ctx, event);
        }
        while let Ok(b) = self.background_rx.try_recv() {
            match b {
                Background::Image(p) => self.open_image(p),
                Background::Folder(dir, Ok(entries)) => {
                    self.saved.last_folder = Some(dir.clone());
                    self.audit.gallery_folder = Some(dir.clone());
                    let first = entries.first().map(|e| e.path.clone());
                    self.gallery.folder = Some((dir, entries));
                    if let Some(p) = first {
                        self.open_image(p);
                    }
                }
                Background::Folder(dir, Err(e)) => self
                    .errors
                    .push(format!("cannot list {}: {e}", dir.display())),
                Background::Model(p) => self.load_model(Some(p)),
                Background::Exported(Ok((dir, n))) => {
                    self.status = format!("exported {n} files to {}", dir.display())
                }
                Background::Exported(Err(e)) => self.errors.push(format!("export failed: {e}")),
                Background::Report(r) => match *r {
                    Ok(loaded) => self.report.set(ctx, loaded),
                    Err(e) => self.errors.push(format!("audit report: {e}")),
                },
            }
        }
    }

    fn handle_event(&mut self, ctx: &egui::Context, event: WorkerEvent) {
        match event {
            WorkerEvent::ModelLoaded {
                request,
                info,
                elapsed_secs,
            } if request == self.latest.model => {
                let info: Arc<ModelInfo> = Arc::from(info);
                let cfg = &info.config;
                self.explain.class_names = cfg.class_names.clone();
                self.attack.class_names = cfg.class_names.clone();
                self.attack.multi_label = cfg.multi_label;
                self.sweep.multi_label = cfg.multi_label;
                if self.attack.settings.target_class >= cfg.num_classes {
                    self.attack.settings.target_class = 0;
                }
                self.saved.model_path = info.file.clone();
                self.audit.model = info.file.clone();
                self.audit.model_name = info.source.clone();
                // The checklist is a dermoscopy concept: colour models with a melanoma class.
                let dermoscopy = cfg.in_channels == 3
                    && cfg
                        .class_names
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case("mel"));
                self.concepts
                    .set_model(info.file.clone(), info.source.clone(), dermoscopy);
                self.status = format!("model loaded in {elapsed_secs:.2} s");
                let previous = self.model_modality();
                self.model = Some(info);
                self.compare.model_a = self.model.clone();
                self.compare.refusal = self
                    .model
                    .as_deref()
                    .zip(self.compare.model_b.as_deref())
                    .and_then(|(a, b)| ComparePanel::incompatible(a, b));
                let modality = self.model_modality();
                // Open the sample that waited for this model; else re-analyse what is on
                // screen, or open a first sample. After a switch of modality, a bundled sample
                // of the old one (skin for a chest model, or the reverse) is swapped for one
                // that fits the new model.
                let misfit_sample = self
                    .current_image
                    .as_ref()
                    .and_then(|p| self.gallery.sample(p))
                    .is_some_and(|e| e.modality().is_some() && e.modality() != modality);
                let image = if let Some(p) = self.pending_image.take() {
                    Some(p)
                } else if misfit_sample && previous.is_some() && previous != modality {
                    self.gallery.first_sample_of(modality)
                } else {
                    self.current_image
                        .clone()
                        .or_else(|| self.saved.last_image.clone().filter(|p| p.is_file()))
                        .or_else(|| self.gallery.first_sample_of(modality))
                };
                if let Some(p) = image {
                    self.open_image(p);
                }
            }
            WorkerEvent::Analysis(a) if a.request == self.latest.analysis => {
                let a: Arc<triscope::workbench::Analysis> = Arc::from(a);
                self.status = format!("analysis {:.2} s", a.elapsed_secs);
                self.saved.last_image = Some(a.path.clone());
                self.predictions.clean = Some(a.prediction.clone());
                self.predictions.input_warning = a.input_warning.clone();
                // A model made for what this image is, offered in one click.
                let image_modality = Modality::of_image(a.image_is_grey);
                self.predictions.offers = if a.input_warning.is_some()
                    || self.model_modality().is_some_and(|m| m != image_modality)
                {
                    let dataset = self.gallery.sample(&a.path).and_then(|e| e.dataset.clone());
                    self.bundled_models_for(image_modality, dataset.as_deref())
                        .into_iter()
                        .map(|e| (e.name.clone(), e.path.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                self.predictions.out_of_distribution = a.out_of_distribution;
                self.predictions.adversarial = None;
                self.predictions.explained_class = Some(a.target_class);
                self.explain.set_analysis(Arc::clone(&a));
                self.layers
                    .set_analysis(Arc::clone(&a), self.explain.sources.clone());
                self.concepts
                    .set_image(a.path.clone(), Some(a.target_class));
                self.sweep.set_image(a.path.display().to_string());
                self.compare.layer = self.explain.settings.layer;
                self.compare.set_a(ctx, Arc::clone(&a));
                self.analyze_b();
                self.attack.set_clean(a);
                // Keep the attack view live: rerun it on the new image.
                if self.saved.tab == Tab::Attack {
                    self.run_attack();
                }
            }
            WorkerEvent::AttackStep {
                request,
                step,
                total_steps,
                loss,
                adversarial,
            } if request == self.latest.attack => {
                let mut p = self.attack.progress.clone().unwrap_or_default();
                if p.request != request {
                    p = AttackProgress {
                        request,
                        ..Default::default()
                    };
                }
                p.step = step;
                p.total_steps = total_steps;
                p.losses.push(loss);
                self.attack.on_step(ctx, p, adversarial.as_ref());
            }
            WorkerEvent::Attack(r) if r.request == self.latest.attack => {
                let r: Arc<triscope::workbench::AttackResult> = Arc::from(r);
                self.status = format!(
                    "{} {} steps: {:.2} s ({:.3} s/step)",
                    r.params.config.method.name(),
                    r.loss_per_step.len(),
                    r.elapsed_secs,
                    r.secs_per_step
                );
                self.predictions.adversarial = Some(r.adversarial_prediction.clone());
                self.compare.set_attack(ctx, false, Arc::clone(&r));
                self.attack.set_result(ctx, r);
            }
            WorkerEvent::SweepStep {
                request,
                point,
                points,
                step,
                total_steps,
            } if request == self.latest.sweep => {
                self.sweep.progress = Some(SweepProgress {
                    request,
                    point,
                    points,
                    step,
                    total_steps,
                });
            }
            WorkerEvent::Sweep(r) if r.request == self.latest.sweep => {
                self.status = format!(
                    "ε sweep: {} budgets in {:.1} s",
                    r.sweep.points.len(),
                    r.sweep.elapsed_secs
                );
                self.sweep.set_result(ctx, Arc::from(r));
            }
            WorkerEvent::Failed {
                request,
                what,
                message,
            } => {
                self.errors.push(format!("{what}: {message}"));
                if request == self.latest.sweep {
                    self.sweep.running = false;
                }
                if request == self.latest.attack {
                    self.attack.running = false;
                }
                // The sample that waited for this model stays unopened.
                if request == self.latest.model {
                    self.pending_image = None;
                }
                // A remembered model that no longer loads: fall back to the embedded one.
                if request == self.latest.model && self.model.is_none() {
                    self.saved.model_path = None;
                    self.load_model(None);
                }
            }
            _ => {} // stale
        }
    }

    fn apply_look(&mut self, ctx: &egui::Context) {
        if self.applied_theme != Some(self.saved.theme) {
            ctx.set_theme(match self.saved.theme {
                ThemeChoice::Dark => egui::Theme::Dark,
                ThemeChoice::Light => egui::Theme::Light,
            });
            self.applied_theme = Some(self.saved.theme);
        }
        if (self.applied_zoom - self.saved.zoom).abs() > 1e-3 {
            ctx.set_zoom_factor(self.saved.zoom);
            self.applied_zoom = self.saved.zoom;
        }
    }

    fn spawn_dialog(&self, kind: &'static str) {
        let tx = self.background_tx.clone();
        let start = self.saved.last_folder.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("triscope-dialog-{kind}"))
            .spawn(move || {
                let mut d = rfd::FileDialog::new();
                if let Some(dir) = start {
                    d = d.set_directory(dir);
                }
                let msg = match kind {
                    "image" => d
                        .add_filter("images", &super::gallery::IMAGE_EXTENSIONS)
                        .pick_file()
                        .map(Background::Image),
                    "folder" => d.pick_folder().map(|dir| {
                        let listed = list_folder(&dir).map_err(|e| e.to_string());
                        Background::Folder(dir, listed)
                    }),
                    "report" => d
                        .set_title("Open a triscope audit folder")
                        .pick_folder()
                        .map(|dir| Background::Report(Box::new(load_report(&dir)))),
                    _ => d
                        .add_filter("Triscope / torchvision safetensors", &["safetensors"])
                        .pick_file()
                        .map(Background::Model),
                };
                if let Some(m) = msg {
                    let _ = tx.send(m);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot open a file dialog: {e}");
        }
    }

    /// What the Export command writes, if there is an analysis.
    pub fn export_data(&self) -> Option<ExportData> {
        Some(ExportData {
            analysis: self.explain.analysis.clone()?,
            attack: self.attack.result.clone(),
            settings: self.explain.settings.clone(),
            model: self.model.clone(),
        })
    }

    /// The view on screen as a slide (explanation, attack, ε sweep, compare); `None` for
    /// other views or before there is anything to show.
    pub fn slide(&self) -> Option<triscope::io::plot::Slide> {
        let data = self.export_data();
        match self.saved.tab {
            Tab::Explanation => data.map(|d| super::slide::explanation_slide(&d)),
            Tab::Attack => {
                let r = self.attack.result.clone()?;
                data.map(|d| super::slide::attack_slide(&d, &r))
            }
            Tab::Sweep => self.sweep.slide(self.model.as_deref()),
            Tab::Compare => self.compare.slide(),
            _ => None,
        }
    }

    fn export_slide(&mut self) {
        let Some(slide) = self.slide() else {
            self.errors
                .push("nothing to put on a slide in this view yet".into());
            return;
        };
        self.write_into_picked_folder(
            "triscope-slide",
            "Write the slide into a folder",
            move |dir| {
                let stem = format!("slide_{}", slide.view);
                triscope::io::plot::write_slide(dir, &stem, &slide)
                    .map(|files| files.len())
                    .map_err(|e| format!("{e:#}"))
            },
        );
    }

    /// Ask for a folder on the thread `name` (the dialog waits there, not in a frame), write
    /// into it there, and report the count of files written as [`Background::Exported`].
    fn write_into_picked_folder(
        &mut self,
        name: &str,
        title: &'static str,
        write: impl FnOnce(&Path) -> std::result::Result<usize, String> + Send + 'static,
    ) {
        let tx = self.background_tx.clone();
        let start = self.saved.last_folder.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut d = rfd::FileDialog::new().set_title(title);
                if let Some(dir) = start {
                    d = d.set_directory(dir);
                }
                if let Some(dir) = d.pick_folder() {
                    let r = write(&dir).map(|n| (dir, n));
                    let _ = tx.send(Background::Exported(r));
                }
            });
        if let Err(e) = spawned {
            self.errors.push(format!("cannot start {name}: {e}"));
        }
    }

    fn export(&mut self) {
        let Some(data) = self.export_data() else {
            self.errors.push("nothing to export yet".into());
            return;
        };
        self.write_into_picked_folder(
            "triscope-export",
            "Export the current view to a folder",
            move |dir| {
                export_view(dir, &data)
                    .map(|files| files.len())
                    .map_err(|e| format!("{e:#}"))
            },
        );
    }

    /// Read an audit report (folder, audit.json or audit.html) on a named thread.
    pub fn open_report(&mut self, p: PathBuf) {
        let dir = if p.is_dir() {
            p
        } else {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let tx = self.background_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("triscope-report".into())
            .spawn(move || {
                let _ = tx.send(Background::Report(Box::new(load_report(&dir))));
            });
        if let Err(e) = spawned {
            self.errors.push(format!("cannot read the report: {e}"));
        }
    }

    fn dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for p in dropped {
            self.open_path(p);
        }
    }

    /// A dropped or typed path: a folder becomes the browsable list, an image is analysed,
    /// a .safetensors file is loaded as the model.
    pub fn open_path(&mut self, p: PathBuf) {
        if is_report(&p) {
            self.open_report(p);
        } else if p.is_dir() {
            let listed = list_folder(&p).map_err(|e| e.to_string());
            let _ = self.background_tx.try_send(Background::Folder(p, listed));
        } else if !p.exists() {
            self.errors
                .push(format!("{}: no such file or folder", p.display()));
        } else if is_image(&p) {
            self.open_image(p);
        } else if p.extension().is_some_and(|e| e == "safetensors") {
            self.load_model(Some(p));
        } else {
            self.errors.push(format!(
                "{}: not an image Triscope reads (png, jpg, bmp, tiff, dcm) or a .safetensors model",
                p.display()
            ));
        }
    }

    fn menu(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open image…").clicked() {
                    self.spawn_dialog("image");
                }
                if ui.button("Open folder…").clicked() {
                    self.spawn_dialog("folder");
                }
                if ui.button("Open audit report…").clicked() {
                    self.spawn_dialog("report");
                }
                if self.report.loaded.is_some() && ui.button("Show audit report").clicked() {
                    self.report.open = true;
                }
                ui.horizontal(|ui| {
                    let edit = ui.add(
                        egui::TextEdit::singleline(&mut self.path_input)
                            .hint_text("or type a path: image, folder, .safetensors, audit folder")
                            .desired_width(280.0),
                    );
                    let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                    if (ui.button("Open").clicked() || enter) && !self.path_input.trim().is_empty()
                    {
                        let p = PathBuf::from(self.path_input.trim());
                        self.open_path(p);
                        ui.close();
                    }
                });
                ui.separator();
                if ui.button("Load model…").clicked() {
                    self.spawn_dialog("model");
                }
                if ui.button("Use the embedded default model").clicked() {
                    self.load_model(None);
                }
                if !self.bundled_models.is_empty() {
                    ui.menu_button("Bundled models", |ui| {
                        for p in self
                            .bundled_models
                            .iter()
                            .map(|e| e.path.clone())
                            .collect::<Vec<_>>()
                        {
                            if ui
                                .button(super::gallery::file_name(&p))
                                .on_hover_text(p.display().to_string())
                                .clicked()
                            {
                                self.load_model(Some(p));
                                ui.close();
                            }
                        }
                    });
                }
                ui.separator();
                if ui.button("Export view…").clicked() {
                    self.export();
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                ui.label("Theme");
                ui.radio_value(&mut self.saved.theme, ThemeChoice::Dark, "Dark");
                ui.radio_value(&mut self.saved.theme, ThemeChoice::Light, "Light");
                ui.separator();
                ui.add(
                    egui::Slider::new(&mut self.saved.zoom, 0.75..=2.0)
                        .text("text size")
                        .fixed_decimals(2),
                );
            });
            if ui.button("Model").clicked() {
                self.show_model_info = !self.show_model_info;
            }
            ui.separator();
            let label = match self.saved.theme {
                ThemeChoice::Dark => "Light theme",
                ThemeChoice::Light => "Dark theme",
            };
            if ui.button(label).on_hover_text("Switch theme").clicked() {
                self.saved.theme = match self.saved.theme {
                    ThemeChoice::Dark => ThemeChoice::Light,
                    ThemeChoice::Light => ThemeChoice::Dark,
                };
            }
            ui.separator();
            let slides = matches!(
                self.saved.tab,
                Tab::Explanation | Tab::Attack | Tab::Sweep | Tab::Compare
            );
            if ui
                .add_enabled(slides, egui::Button::new("Slide…"))
                .on_hover_text(
                    "This view (explanation, attack, ε sweep or compare) as a 1920x1080 PNG \
                     for a projector, with its numbers as JSON",
                )
                .clicked()
            {
                self.export_slide();
            }
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let device = if self.model.as_ref().is_some_and(|m| m.device_is_gpu) {
                format!("GPU · {}", self.device_line)
            } else {
                format!("{} · no GPU in use", self.device_line)
            };
            ui.label(device).on_hover_text(format!(
                "heatmaps drawn by {}; most UI-thread CPU time in one frame: {:.1} ms",
                if self.uses_shader {
                    "the WGSL overlay shader"
                } else {
                    "the CPU (no wgpu renderer)"
                },
                self.max_frame_ms
            ));
            ui.separator();
            ui.label(&self.status);
            if self.training.is_running() {
                ui.separator();
                ui.label(format!("training: {}", self.training.status));
            }
            if self.audit.is_running() {
                ui.separator();
                ui.label(format!("audit: {}", self.audit.status));
            }
            let queued = self.worker.queued_jobs();
            if queued > 0 {
                ui.separator();
                ui.label(format!("{queued} queued"));
            }
        });
    }

    fn errors_ui(&mut self, ui: &mut egui::Ui) {
        if self.errors.is_empty() {
            return;
        }
        let mut clear = false;
        egui::Frame::new()
            .fill(ui.visuals().error_fg_color.gamma_multiply(0.15))
            .inner_margin(6.0)
            .show(ui, |ui| {
                for e in self.errors.iter().rev().take(3) {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                clear = ui.button("Dismiss").clicked();
            });
        if clear {
            self.errors.clear();
        }
    }

    fn model_window(&mut self, ctx: &egui::Context) {
        let Some(info) = self.model.clone() else {
            return;
        };
        let mut open = self.show_model_info;
        egui::Window::new("Model")
            .open(&mut open)
            .resizable(true)
            .default_width(560.0)
            .max_width(640.0)
            .show(ctx, |ui| {
                egui::ScrollArea::vertical()
                    .max_height(560.0)
                    .show(ui, |ui| model_info_ui(ui, &info));
            });
        self.show_model_info = open;
    }

    fn central(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            for t in Tab::ALL {
                if ui
                    .selectable_label(self.saved.tab == t, t.label())
                    .clicked()
                    && self.saved.tab != t
                {
                    self.saved.tab = t;
                    if t == Tab::Attack && self.attack.result.is_none() && !self.attack.running {
                        self.run_attack();
                    }
                }
            }
        });
        ui.separator();
        match self.saved.tab {
            Tab::Explanation => self.explain.ui(ui),
            Tab::Layers => self.layers.ui(ui),
            Tab::Attack => {
                egui::ScrollArea::vertical()
                    .auto_shrink([false, false])
                    .show(ui, |ui| self.attack.ui(ui))
                    .inner
            }
            Tab::Sweep => {
                // Model B of the compare tab sweeps beside A when the two share classes.
                self.sweep.b_name = self
                    .compare
                    .model_b
                    .as_deref()
                    .filter(|_| self.compare.refusal.is_none() && self.second.is_some())
                    .map(|m| super::slide::model_name(Some(m)));
                egui::ScrollArea::vertical()
                    .auto_shrink([false, false])
                    .show(ui, |ui| self.sweep.ui(ui))
                    .inner
            }
            Tab::Compare => {
                let summary = self.attack.request().describe();
                egui::ScrollArea::vertical()
                    .auto_shrink([false, false])
                    .show(ui, |ui| self.compare.ui(ui, &summary))
                    .inner
            }
            Tab::Concepts => {
                self.concepts.start_if_idle();
                egui::ScrollArea::vertical()
                    .auto_shrink([false, false])
                    .show(ui, |ui| self.concepts.ui(ui))
                    .inner
            }
            Tab::Training => self.training.ui(ui),
            Tab::Audit => self.audit.ui(ui),
        }
    }

    fn drain_actions(&mut self) {
        let mut actions = Vec::new();
        actions.append(&mut self.gallery.actions);
        actions.append(&mut self.predictions.actions);
        actions.append(&mut self.explain.actions);
        actions.append(&mut self.layers.actions);
        actions.append(&mut self.attack.actions);
        actions.append(&mut self.sweep.actions);
        actions.append(&mut self.compare.actions);
        actions.append(&mut self.training.actions);
        for a in actions {
            self.handle_action(a);
        }
    }

    fn write_ready_file(&mut self) {
        if self.ready_written || !self.has_analysis() {
            return;
        }
        self.ready_written = true;
        if let Some(path) = &self.ready_file
            && let Err(e) = std::fs::write(path, "explanation on screen\n")
        {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }
}

fn panic_free_worker_error(e: triscope::TriscopeError) -> (WorkerHandle, Vec<String>) {
    // Spawning a thread only fails when the OS refuses; retry once with the CPU device so
    // the window still opens and says what happened.
    let handle = WorkerHandle::spawn(ComputeDevice::cpu(), Box::new(|| {}));
    match handle {
        Ok(h) => (h, vec![format!("model thread: {e}")]),
        Err(e2) => {
            tracing::error!("cannot start the model thread: {e}; {e2}");
            std::process::exit(1);
        }
    }
}

pub fn model_info_ui(ui: &mut egui::Ui, info: &ModelInfo) {
    let c = &info.config;
    let m = &info.metadata;
    // The card first: what a reader wants to know (how trained, how good), then the details.
    if let Some(card) = &info.card {
        ui.add(egui::Label::new(card.trim_end()).wrap());
        ui.separator();
    }
    egui::Grid::new("model-info")
        .num_columns(2)
        .striped(true)
        .max_col_width(400.0)
        .show(ui, |ui| {
            let mut row = |k: &str, v: String| {
                ui.strong(k);
                ui.add(egui::Label::new(v).wrap());
                ui.end_row();
            };
            row("source", info.source.clone());
            row("device", info.device.clone());
            row(
                "architecture",
                format!("{} (base width {})", c.architecture, c.base_width),
            );
            row(
                "input",
                format!(
                    "{} channel(s), {}×{} px{}",
                    c.in_channels,
                    c.resolution,
                    c.resolution,
                    if c.color_constancy.is_none() {
                        String::new()
                    } else {
                        format!(", colour constancy {}", c.color_constancy.describe())
                    }
                ),
            );
            row(
                "outputs",
                format!(
                    "{} ({})",
                    c.num_classes,
                    if c.multi_label {
                        "multi-label, sigmoid"
                    } else {
                        "single-label, softmax"
                    }
                ),
            );
            row("classes", c.class_names.join(", "));
            row(
                "unlike",
                info.out_of_distribution.clone().unwrap_or_else(|| {
                    "no out-of-distribution statistics (triscope ood fits them): images are not scored".into()
                }),
            );
            row(
                "trained",
                if m.trained {
                    "yes".into()
                } else {
                    "NO (untrained)".into()
                },
            );
            row("description", m.description.clone());
            if let Some(d) = &m.dataset {
                row("dataset", d.clone());
            }
            if let Some(s) = m.seed {
                row("seed", s.to_string());
            }
            row(
                "written",
                format!("{} by Triscope {}", m.created_utc, m.triscope_version),
            );
            for (k, v) in &m.metrics {
                row(k, format!("{v:.4}"));
            }
        });
}

impl eframe::App for TriscopeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let started = thread_cpu_secs();
        let ctx = ui.ctx().clone();
        self.apply_look(&ctx);
        self.poll(&ctx);
        self.dropped_files(&ctx);

        egui::Panel::top("menu").show(ui, |ui| self.menu(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::left("gallery")
            .resizable(true)
            .default_size(230.0)
            .show(ui, |ui| self.gallery.ui(ui));
        egui::Panel::right("predictions")
            .resizable(true)
            .default_size(260.0)
            .show(ui, |ui| {
                ui.heading("Prediction");
                if let Some(p) = &self.current_image {
                    ui.weak(super::gallery::file_name(p));
                }
                ui.separator();
                self.predictions.ui(ui);
            });
        egui::CentralPanel::default().show(ui, |ui| {
            self.errors_ui(ui);
            self.central(ui);
        });
        self.model_window(&ctx);
        self.report.window(&ctx);
        self.drain_actions();
        // Settings live in the panels while running; keep the saved copy current.
        self.saved.explain = self.explain.settings.clone();
        self.saved.attack = self.attack.settings.clone();
        self.saved.sweep = self.sweep.settings.clone();
        self.saved.top_k = self.layers.top_k;
        self.saved.training = self.training.form.clone();
        self.saved.audit = self.audit.form.clone();
        self.layers.selected = self.explain.settings.layer;
        self.write_ready_file();
        let frame_ms = ((thread_cpu_secs() - started) * 1000.0) as f32;
        self.max_frame_ms = self.max_frame_ms.max(frame_ms);
        self.frames += 1;
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.saved);
    }
}

/// CPU time of the calling thread in seconds (wall time where that clock is missing).
fn thread_cpu_secs() -> f64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only writes the timespec we pass.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}
