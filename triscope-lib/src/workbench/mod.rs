//! The model worker behind the desktop app: one named thread owns the model and answers
//! jobs with plain data (images as RGB8, maps as `Vec<f32>`); no tensor crosses the boundary.
//!
//! Jobs wait in a [`JobQueue`] that holds at most one job of each kind: a newer attack
//! request replaces a queued one and cancels the running one (its flag is checked before
//! every step), a newer analysis cancels any attack. Events go back over a bounded channel,
//! each tagged with the request id it answers, so the UI drops stale ones.

pub mod concepts;
mod queue;

pub use queue::JobQueue;
use queue::Queued;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Instant;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

pub use crate::attack::report::AttackRequest;
use crate::attack::report::sweep::{Sweep, SweepRequest, SweepStep, run_sweep};
use crate::attack::report::{AttackStep, attack_one};
use crate::error::{Result, TriscopeError};
use crate::explain::attribution::{AttributionMap, AttributionOptions, Method, attribute_with};
use crate::explain::gradcam::{GradCamMap, TargetClass, grad_cam};
use crate::inference::{Classifier, ModelSource, Prediction, model_card};
use crate::io::dicom::{DicomInfo, Window};
use crate::io::ground_truth::{GroundTruth, GroundTruthIndex};
use crate::io::imaging::{DecodeOptions, PixelImage, decode_with, prepare};
use crate::io::weights::CheckpointMetadata;
use crate::model::device::ComputeDevice;
use crate::model::fast::carried;
use crate::model::host;
use crate::model::{LayerId, ModelConfig};
use crate::util::jobs::{EventSender, JobEvent, event_channel, spawn_named};

/// Events waiting for the UI at most; the worker blocks (back-pressure) beyond this.
pub const EVENT_CAPACITY: usize = 64;
/// Longest side of the display copy of an image (the model sees its own resolution).
pub const DISPLAY_MAX_SIDE: usize = 512;
/// Most feature maps returned per layer.
pub const MAX_TOP_K: usize = 64;

/// An interleaved 8-bit RGB image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes, row-major.
    pub rgb: Vec<u8>,
}

impl RgbImage {
    pub fn from_pixels(p: &PixelImage) -> Self {
        Self {
            width: p.width,
            height: p.height,
            rgb: p.to_rgb8(),
        }
    }
}

/// What the UI shows about the loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub config: ModelConfig,
    pub metadata: CheckpointMetadata,
    /// "embedded default (...)" or the file path.
    pub source: String,
    /// The checkpoint file; `None` for the embedded model.
    pub file: Option<PathBuf>,
    /// The device line, e.g. "CPU (burn flex, 2 threads)".
    pub device: String,
    pub device_is_gpu: bool,
    /// The model's card, when it has one ([`crate::inference::model_card`]).
    pub card: Option<String>,
    /// What its out-of-distribution statistics describe
    /// ([`crate::inference::ood::OodInfo::describe`]); `None`: it carries none.
    #[serde(default)]
    pub out_of_distribution: Option<String>,
}

/// One feature map of a layer, min-max normalised to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMap {
    pub channel: usize,
    /// Spatial mean of the activation (the ranking key).
    pub mean_activation: f32,
    /// `height * width` values of the layer's resolution.
    pub values: Vec<f32>,
}

/// One stage of the network as the Layers panel shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerView {
    pub layer: LayerId,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// The most active channels, in decreasing mean activation.
    pub top_maps: Vec<FeatureMap>,
    /// Grad-CAM of the analysis target at this layer, at input resolution.
    pub gradcam: GradCamMap,
}

/// Prediction, Grad-CAM at every layer and the most active feature maps of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub request: u64,
    pub path: PathBuf,
    /// Size of the decoded file.
    pub source_width: u32,
    pub source_height: u32,
    /// The model input (model resolution, same crop as `display`).
    pub model_input: RgbImage,
    /// A sharper copy of the same crop for the screen.
    pub display: RgbImage,
    pub prediction: Prediction,
    /// The class the Grad-CAMs explain.
    pub target_class: usize,
    /// layer1..layer4.
    pub layers: Vec<LayerView>,
    /// The requested method's map when it is not Grad-CAM (Grad-CAM is in `layers`).
    pub attribution: Option<AttributionMap>,
    /// For a DICOM file: geometry, grey-level transforms, the window applied (no identifying
    /// attribute is ever read).
    pub dicom: Option<DicomInfo>,
    /// The file is greyscale ([`crate::io::imaging::looks_grey`]): what a model for it must take.
    pub image_is_grey: bool,
    /// The image does not fit what the model was trained on
    /// ([`crate::inference::modality_warning`]).
    pub input_warning: Option<String>,
    /// The image against the model's training distribution ([`crate::inference::ood`]), where the
    /// model carries the statistics.
    pub out_of_distribution: Option<crate::inference::ood::OodScore>,
    /// Labels, lesion outline, expert boxes, when the image sits in a folder that has them
    /// ([`crate::io::ground_truth`]), in `model_input` pixels.
    pub ground_truth: Option<GroundTruth>,
    pub elapsed_secs: f64,
}

/// An ε sweep of the current image ([`crate::attack::report::sweep`]) with the images and maps
/// the view shows.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepResult {
    pub request: u64,
    pub params: AttackRequest,
    pub sweep: Sweep,
    /// Each budget's adversarial image, in the order of `sweep.points`.
    pub adversarial: Vec<RgbImage>,
    /// The clean image (model input) the maps are drawn over.
    pub clean: RgbImage,
    /// The sweep's figure (`sweep.png`), drawn here so that a slide of it costs the UI
    /// thread nothing.
    pub figure: RgbImage,
}

/// The outcome of an attack on the current image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackResult {
    pub request: u64,
    pub params: AttackRequest,
    pub adversarial: RgbImage,
    /// `0.5 + delta / (2 * max|delta|)`: the perturbation amplified to be visible.
    pub perturbation: RgbImage,
    /// Largest |delta| in 1/255 units.
    pub linf_255: f32,
    pub l2: f32,
    pub clean: Prediction,
    pub adversarial_prediction: Prediction,
    /// Both Grad-CAMs explain the clean prediction's class, at `params.layer`.
    pub clean_cam: GradCamMap,
    pub adversarial_cam: GradCamMap,
    /// Explanation stability: SSIM and Spearman of the two maps.
    pub cam_ssim: f64,
    pub cam_spearman: f64,
    /// The attack loss at each step (ascended; the targeted loss is reported negated).
    pub loss_per_step: Vec<f32>,
    pub elapsed_secs: f64,
    pub secs_per_step: f64,
}

/// Work for the model thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Load a checkpoint, or the embedded default with `None`.
    LoadModel { path: Option<PathBuf> },
    /// Decode an image and analyse it (it becomes the image attacks run on).
    Analyze {
        path: PathBuf,
        target: TargetClass,
        top_k: usize,
        /// The explanation method, and the layer it explains (CAM family).
        method: Method,
        method_layer: LayerId,
        /// DICOM window (the app's centre/width sliders); `None`: the file's, else min-max.
        window: Option<Window>,
    },
    /// Attack the last analysed image.
    Attack(AttackRequest),
    /// Attack the last analysed image at each budget (ascending, pixel units); the request's
    /// `eps_linf` and `alpha` are not used (PGD's step is 2.5 ε / steps at each budget).
    /// The request's `label` is the image's true class when known (else the clean prediction
    /// stands for it).
    Sweep {
        attack: AttackRequest,
        eps_linf: Vec<f32>,
    },
}

/// What the model thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    ModelLoaded {
        request: u64,
        info: Box<ModelInfo>,
        elapsed_secs: f64,
    },
    Analysis(Box<Analysis>),
    AttackStep {
        request: u64,
        step: usize,
        total_steps: usize,
        loss: f32,
        /// The current adversarial image (PGD and FGSM; APGD reports its loss only).
        adversarial: Option<RgbImage>,
    },
    Attack(Box<AttackResult>),
    /// A sweep's progress: the budget (0-based) and the attack's step there.
    SweepStep {
        request: u64,
        point: usize,
        points: usize,
        step: usize,
        total_steps: usize,
    },
    Sweep(Box<SweepResult>),
    /// A job failed; `what` says which ("loading model", "analysing image.png", ...).
    Failed {
        request: u64,
        what: String,
        message: String,
    },
}

impl JobEvent for WorkerEvent {
    fn is_progress(&self) -> bool {
        matches!(self, Self::AttackStep { .. } | Self::SweepStep { .. })
    }
}

impl WorkerEvent {
    pub fn request(&self) -> u64 {
        match self {
            Self::ModelLoaded { request, .. }
            | Self::AttackStep { request, .. }
            | Self::SweepStep { request, .. }
            | Self::Failed { request, .. } => *request,
            Self::Analysis(a) => a.request,
            Self::Attack(a) => a.request,
            Self::Sweep(s) => s.request,
        }
    }
}

/// The UI's side of the model thread.
pub struct WorkerHandle {
    queue: Arc<JobQueue>,
    events: Receiver<WorkerEvent>,
    next_request: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Start the model thread on `device`. `wake` is called after each event is sent (the UI
    /// passes its repaint request). The model is loaded by a first [`Job::LoadModel`].
    pub fn spawn(device: ComputeDevice, wake: Box<dyn Fn() + Send>) -> Result<Self> {
        Self::spawn_named("triscope-model", device, wake)
    }

    /// [`Self::spawn`] on a thread of another name (the compare view's second model).
    pub fn spawn_named(
        name: &str,
        device: ComputeDevice,
        wake: Box<dyn Fn() + Send>,
    ) -> Result<Self> {
        let queue = Arc::new(JobQueue::default());
        let (events, rx) = event_channel(EVENT_CAPACITY, wake);
        let worker_queue = queue.clone();
        let thread = spawn_named(
            name,
            carried(move || {
                let mut worker = ModelWorker {
                    device,
                    classifier: None,
                    image: None,
                    ground_truth: GroundTruthIndex::new(),
                    events,
                };
                while let Some(q) = worker_queue.pop() {
                    if !worker.run(q) {
                        break;
                    }
                }
            }),
        )?;
        Ok(Self {
            queue,
            events: rx,
            next_request: AtomicU64::new(1),
            thread: Some(thread),
        })
    }

    /// Queue a job; returns its request id (events answering it carry the same id).
    pub fn submit(&self, job: Job) -> u64 {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        self.queue.push(Queued {
            request,
            job,
            cancel: Arc::new(AtomicBool::new(false)),
        });
        request
    }

    /// Events that have arrived, without waiting.
    pub fn poll(&self) -> Vec<WorkerEvent> {
        self.events.try_iter().collect()
    }

    /// Wait up to `timeout` for the next event (tests and the CLI; the UI uses [`Self::poll`]).
    pub fn wait_event(&self, timeout: std::time::Duration) -> Option<WorkerEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Stop the running attack or sweep (it reports nothing more) and drop queued ones.
    pub fn cancel_attacks(&self) {
        self.queue.cancel_attacks();
    }

    pub fn queued_jobs(&self) -> usize {
        self.queue.len()
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        // Stop taking jobs and cancel a running attack. The thread is not joined: it ends
        // after its current step, when its next send finds the receiver gone.
        self.queue.close();
        drop(self.thread.take());
    }
}

/// The image attacks run on: the model input and its clean analysis.
struct CurrentImage {
    /// The file's name, for reports.
    name: String,
    pixels: PixelImage,
}

struct ModelWorker {
    device: ComputeDevice,
    classifier: Option<Classifier>,
    image: Option<CurrentImage>,
    /// Labels and regions of the folders seen so far (each table parsed once).
    ground_truth: GroundTruthIndex,
    events: EventSender<WorkerEvent>,
}

impl ModelWorker {
    /// Send an event (progress is dropped while the UI is behind, [`crate::util::jobs`]); false when
    /// the UI has gone (the thread then ends).
    fn send(&self, event: WorkerEvent) -> bool {
        self.events.send(event)
    }

    fn run(&mut self, q: Queued) -> bool {
        let Queued {
            request,
            job,
            cancel,
        } = q;
        let what = match &job {
            Job::LoadModel { path: Some(p) } => format!("loading model {}", p.display()),
            Job::LoadModel { path: None } => "loading the embedded model".to_string(),
            Job::Analyze { path, .. } => format!("analysing {}", path.display()),
            Job::Attack(r) => format!("running {}", r.config.method.name()),
            Job::Sweep { attack, .. } => {
                format!("sweeping eps with {}", attack.config.method.name())
            }
        };
        let outcome = match job {
            Job::LoadModel { path } => self.load_model(request, path.as_deref()),
            Job::Analyze {
                path,
                target,
                top_k,
                method,
                method_layer,
                window,
            } => self
                .analyze(
                    request,
                    &path,
                    target,
                    top_k,
                    (method, method_layer, window),
                    &cancel,
                )
                .map(|a| WorkerEvent::Analysis(Box::new(a))),
            Job::Attack(params) => self
                .attack(request, params, &cancel)
                .map(|a| WorkerEvent::Attack(Box::new(a))),
            Job::Sweep { attack, eps_linf } => self
                .sweep(request, attack, eps_linf, &cancel)
                .map(|s| WorkerEvent::Sweep(Box::new(s))),
        };
        match outcome {
            Ok(event) => self.send(event),
            Err(TriscopeError::Cancelled) => true,
            Err(e) => {
                tracing::warn!("{what}: {e}");
                self.send(WorkerEvent::Failed {
                    request,
                    what,
                    message: e.to_string(),
                })
            }
        }
    }

    fn classifier(&self) -> Result<&Classifier> {
        self.classifier
            .as_ref()
            .ok_or_else(|| TriscopeError::InvalidArgument("no model is loaded".into()))
    }

    fn load_model(&mut self, request: u64, path: Option<&Path>) -> Result<WorkerEvent> {
        let started = Instant::now();
        let classifier = Classifier::load(path, self.device.clone())?;
        let info = ModelInfo {
            config: classifier.config().clone(),
            metadata: classifier.metadata.clone(),
            source: classifier.source.to_string(),
            file: match &classifier.source {
                ModelSource::Embedded => None,
                ModelSource::File(p) => Some(p.clone()),
            },
            device: self.device.description.clone(),
            device_is_gpu: self.device.is_gpu(),
            card: model_card(&classifier.source),
            out_of_distribution: classifier.ood.as_ref().map(|o| o.info.describe()),
        };
        self.classifier = Some(classifier);
        self.image = None;
        Ok(WorkerEvent::ModelLoaded {
            request,
            info: Box::new(info),
            elapsed_secs: started.elapsed().as_secs_f64(),
        })
    }

    fn analyze(
        &mut self,
        request: u64,
        path: &Path,
        target: TargetClass,
        top_k: usize,
        (method, method_layer, window): (Method, LayerId, Option<Window>),
        cancel: &AtomicBool,
    ) -> Result<Analysis> {
        let started = Instant::now();
        let classifier = self.classifier()?;
        let cfg = classifier.config().clone();
        let options = DecodeOptions {
            dicom_window: window,
        };
        let crate::io::imaging::Decoded {
            image: decoded,
            dicom,
        } = decode_with(path, &options)?;
        let (source_width, source_height) = (decoded.width(), decoded.height());
        let image_is_grey = crate::io::imaging::looks_grey(&decoded);
        let input_warning = classifier.input_warning(image_is_grey);
        let bad = |reason| TriscopeError::BadImage {
            path: path.to_path_buf(),
            reason,
        };
        let display_side = display_side(source_width, source_height, cfg.resolution);
        let display = prepare(
            decoded.clone(),
            cfg.in_channels,
            display_side,
            classifier.resize_mode,
        )
        .map_err(bad)?;
        let pixels = prepare(
            decoded,
            cfg.in_channels,
            cfg.resolution,
            classifier.resize_mode,
        )
        .map_err(bad)?;
        let x = classifier.batch_tensor(&[&pixels])?; // [1, C, R, R]

        // One forward for the prediction and the feature maps.
        let taps = classifier.model().forward_taps(x.clone(), None);
        let logits = host::values(taps.logits, "logits")?;
        let prediction = classifier.prediction_from_logits(&logits);
        let target_class = match target {
            TargetClass::Predicted => prediction.class_index,
            TargetClass::Index(i) if i < cfg.num_classes => i,
            TargetClass::Index(i) => {
                return Err(TriscopeError::InvalidArgument(format!(
                    "class {i} does not exist; the model has {} classes",
                    cfg.num_classes
                )));
            }
        };
        let mut layers = Vec::with_capacity(4);
        let mut layer_means = Vec::with_capacity(4);
        for (layer, activation) in LayerId::ALL.into_iter().zip(taps.layers) {
            let [_, channels, height, width] = activation.dims(); // [1, C, h, w]
            let values = host::values(activation, "activations")?;
            layer_means.push(host::channel_means(&values, channels, height * width));
            let top_maps = top_feature_maps(&values, channels, height * width, top_k);
            let gradcam = single_cam(classifier, x.clone(), layer, target_class)?;
            layers.push(LayerView {
                layer,
                channels,
                height,
                width,
                top_maps,
                gradcam,
            });
        }
        let attribution = if method == Method::GradCam {
            None
        } else {
            let options = AttributionOptions {
                layer: method_layer,
                ..AttributionOptions::default()
            };
            let maps = attribute_with(
                classifier.model(),
                x,
                method,
                TargetClass::Index(target_class),
                &options,
                &mut |_, _| {},
                cancel,
            )?;
            maps.into_iter().next()
        };
        let resize_mode = classifier.resize_mode;
        let out_of_distribution = classifier.ood_score(&layer_means)?;
        self.image = Some(CurrentImage {
            name: path.display().to_string(),
            pixels: pixels.clone(),
        });
        let ground_truth = self.ground_truth.find(
            path,
            (source_width, source_height),
            cfg.resolution,
            resize_mode,
        );
        Ok(Analysis {
            request,
            path: path.to_path_buf(),
            source_width,
            source_height,
            model_input: RgbImage::from_pixels(&pixels),
            display: RgbImage::from_pixels(&display),
            prediction,
            target_class,
            layers,
            attribution,
            dicom,
            image_is_grey,
            input_warning,
            out_of_distribution,
            ground_truth,
            elapsed_secs: started.elapsed().as_secs_f64(),
        })
    }

    fn attack(
        &mut self,
        request: u64,
        params: AttackRequest,
        cancel: &AtomicBool,
    ) -> Result<AttackResult> {
        let started = Instant::now();
        let classifier = self.classifier()?;
        let image = self
            .image
            .as_ref()
            .ok_or_else(|| TriscopeError::InvalidArgument("no image to attack yet".into()))?;
        let mut on_step = |s: AttackStep| {
            self.send(WorkerEvent::AttackStep {
                request,
                step: s.step,
                total_steps: s.total_steps,
                loss: s.loss,
                adversarial: s.preview.as_ref().map(RgbImage::from_pixels),
            });
        };
        // The request's label is the true class; without one the attack flips the clean
        // decision.
        let outcome = attack_one(
            classifier,
            &image.pixels,
            &params,
            true,
            &mut on_step,
            cancel,
        )?;
        let elapsed_secs = started.elapsed().as_secs_f64();
        let steps_done = outcome.loss_per_step.len().max(1);
        Ok(AttackResult {
            request,
            adversarial: RgbImage::from_pixels(&outcome.adversarial_image),
            perturbation: RgbImage::from_pixels(&outcome.amplified_perturbation(&image.pixels)),
            linf_255: outcome.norms.linf * 255.0,
            l2: outcome.norms.l2,
            cam_ssim: outcome.drift.ssim,
            cam_spearman: outcome.drift.spearman,
            clean: outcome.clean,
            adversarial_prediction: outcome.adversarial,
            clean_cam: outcome.clean_cam,
            adversarial_cam: outcome.adversarial_cam,
            loss_per_step: outcome.loss_per_step,
            params,
            elapsed_secs,
            secs_per_step: elapsed_secs / steps_done as f64,
        })
    }
}

impl ModelWorker {
    fn sweep(
        &mut self,
        request: u64,
        params: AttackRequest,
        eps_linf: Vec<f32>,
        cancel: &AtomicBool,
    ) -> Result<SweepResult> {
        let classifier = self.classifier()?;
        let image = self
            .image
            .as_ref()
            .ok_or_else(|| TriscopeError::InvalidArgument("no image to sweep yet".into()))?;
        let sweep_request = SweepRequest {
            attack: params.clone(),
            eps_linf,
            scale_alpha: true,
        };
        let mut on_step = |s: SweepStep| {
            self.send(WorkerEvent::SweepStep {
                request,
                point: s.point,
                points: s.points,
                step: s.step,
                total_steps: s.total_steps,
            });
        };
        let sweep = run_sweep(
            classifier,
            &image.pixels,
            &image.name,
            &sweep_request,
            &mut on_step,
            cancel,
        )?;
        let adversarial = sweep
            .points
            .iter()
            .map(|p| {
                RgbImage::from_pixels(&PixelImage {
                    data: p.adversarial.clone(),
                    ..image.pixels.clone()
                })
            })
            .collect();
        let figure = crate::attack::report::sweep::figure(&sweep)?;
        Ok(SweepResult {
            request,
            params,
            adversarial,
            clean: RgbImage::from_pixels(&image.pixels),
            figure: RgbImage {
                width: figure.width() as usize,
                height: figure.height() as usize,
                rgb: figure.into_raw(),
            },
            sweep,
        })
    }
}

/// Side of the display copy: the model's resolution at least, the file's shorter side at
/// most (no invented detail), capped at [`DISPLAY_MAX_SIDE`].
fn display_side(width: u32, height: u32, model_resolution: usize) -> usize {
    let shorter = width.min(height) as usize;
    shorter.min(DISPLAY_MAX_SIDE).max(model_resolution)
}

fn single_cam(
    classifier: &Classifier,
    x: Tensor<4>,
    layer: LayerId,
    class: usize,
) -> Result<GradCamMap> {
    grad_cam(classifier.model(), x, layer, TargetClass::Index(class))?
        .maps
        .into_iter()
        .next()
        .ok_or_else(|| TriscopeError::Compute("Grad-CAM returned no map".into()))
}

/// The `k` channels with the largest spatial mean, each min-max normalised.
/// `values` is one image's `[channels, plane]` activation.
pub fn top_feature_maps(
    values: &[f32],
    channels: usize,
    plane: usize,
    k: usize,
) -> Vec<FeatureMap> {
    let k = k.min(channels).min(MAX_TOP_K);
    let mut means: Vec<(usize, f32)> = host::channel_means(values, channels, plane)
        .into_iter()
        .enumerate()
        .collect();
    means.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    means
        .into_iter()
        .take(k)
        .map(|(channel, mean_activation)| {
            let map = &values[channel * plane..(channel + 1) * plane];
            let lo = map.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let range = hi - lo;
            let values = map
                .iter()
                .map(|v| if range > 0.0 { (v - lo) / range } else { 0.0 })
                .collect();
            FeatureMap {
                channel,
                mean_activation,
                values,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_maps_rank_by_mean_and_normalise() {
        // 3 channels of 2 pixels: means 1.5, 3.0, -1.0.
        let v = [1.0, 2.0, 2.0, 4.0, -1.0, -1.0];
        let top = top_feature_maps(&v, 3, 2, 2);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].channel, 1);
        assert_eq!(top[1].channel, 0);
        assert_eq!(top[0].values, vec![0.0, 1.0]);
        // A constant map normalises to zeros, not NaN.
        let flat = top_feature_maps(&v, 3, 2, 3);
        assert_eq!(flat[2].values, vec![0.0, 0.0]);
    }

    #[test]
    fn display_side_stays_between_model_and_file() {
        assert_eq!(display_side(600, 450, 224), 450);
        assert_eq!(display_side(4000, 3000, 224), DISPLAY_MAX_SIDE);
        assert_eq!(display_side(100, 80, 224), 224);
    }
}
