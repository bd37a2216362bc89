//! The app's Concepts tab behind its own `triscope-concepts` thread: it loads the model, reads
//! or builds its seven-point-checklist concept bank (minutes the first time, then from the
//! cache) with progress, then answers read-out requests for the open image. Everything that
//! crosses the thread is plain data; requests for images wait in a one-slot mailbox, so a
//! newer image replaces an older one not yet started.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};

use super::RgbImage;
use crate::error::{Result, TriscopeError};
use crate::explain::concept_bank::{
    BankOptions, BankProgress, ConceptBank, ConceptReadout, read_concepts,
};
use crate::explain::concept_cache::{BankOrigin, load_or_build};
use crate::explain::tcav::TcavResult;
use crate::inference::Classifier;
use crate::io::imaging::{ResizeMode, load_pixels};
use crate::model::LayerId;
use crate::model::device::ComputeDevice;
use crate::model::fast::carried;
use crate::util::jobs::{EventSender, JobEvent, event_channel, spawn_named};

/// Events in flight at most; progress beyond that is dropped (the next one says more).
const EVENT_CAPACITY: usize = 32;
/// Side of an example thumbnail.
pub const THUMBNAIL_SIDE: usize = 96;

/// One criterion as the tab lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionSummary {
    pub name: String,
    pub title: String,
    pub points: u8,
    /// derm7pt train images with and without it.
    pub train_present: usize,
    pub train_absent: usize,
    /// Per bank layer: the probe's AUROC on derm7pt test and the CAVs' held-out accuracy.
    pub probe_test_auroc: Vec<(LayerId, f64)>,
    pub cav_accuracy: Vec<(LayerId, f64)>,
    /// Train images with the criterion, as thumbnails.
    pub examples: Vec<RgbImage>,
    /// Their ids under derm7pt's `images/`.
    pub example_ids: Vec<String>,
}

/// What the tab shows of a model's bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptSummary {
    pub model: String,
    pub data_root: String,
    pub layers: Vec<LayerId>,
    pub criteria: Vec<CriterionSummary>,
    /// TCAV of every criterion for every class over derm7pt's val and test images.
    pub tcav: Vec<TcavResult>,
    pub notes: Vec<String>,
    /// "read from the cache" or "built in … s, cached".
    pub origin: String,
    /// The cache file the bank was read from or written to.
    pub cache_file: Option<PathBuf>,
}

impl ConceptSummary {
    /// The summary of `bank`, with its examples' thumbnails (unreadable ones left out).
    pub fn of(bank: &ConceptBank, origin: &BankOrigin) -> Self {
        let root = Path::new(&bank.data_root).join("images");
        let criteria = bank
            .criteria
            .iter()
            .map(|c| {
                let (examples, example_ids): (Vec<RgbImage>, Vec<String>) = c
                    .examples
                    .iter()
                    .filter_map(|id| {
                        load_pixels(&root.join(id), 3, THUMBNAIL_SIDE, ResizeMode::default())
                            .ok()
                            .map(|p| (RgbImage::from_pixels(&p), id.clone()))
                    })
                    .unzip();
                CriterionSummary {
                    name: c.name.clone(),
                    title: c.title.clone(),
                    points: c.points,
                    train_present: c.train.split_present,
                    train_absent: c.train.split_absent,
                    probe_test_auroc: c
                        .layers
                        .iter()
                        .map(|l| (l.layer, l.probe.test_auroc))
                        .collect(),
                    cav_accuracy: c
                        .layers
                        .iter()
                        .map(|l| (l.layer, l.cav_accuracy()))
                        .collect(),
                    examples,
                    example_ids,
                }
            })
            .collect();
        Self {
            model: bank.model.clone(),
            data_root: bank.data_root.clone(),
            layers: bank.options.layers.clone(),
            criteria,
            tcav: bank.tcav.clone(),
            notes: bank.notes.clone(),
            origin: match origin {
                BankOrigin::Cache(_) => "read from the cache".into(),
                BankOrigin::Built(Ok(_)) => format!("built in {:.0} s, cached", bank.build_secs),
                BankOrigin::Built(Err(why)) => {
                    format!("built in {:.0} s, not cached: {why}", bank.build_secs)
                }
            },
            cache_file: origin.file().map(Path::to_path_buf),
        }
    }
}

/// What the concepts thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ConceptEvent {
    Progress(BankProgress),
    Ready(Box<ConceptSummary>),
    /// The read-out of the image of request `request`.
    Readout {
        request: u64,
        image: PathBuf,
        readout: Box<ConceptReadout>,
    },
    /// A read-out failed (the bank stays usable).
    ReadFailed {
        request: u64,
        message: String,
    },
    Cancelled,
    /// The bank could not be built (the thread ends).
    Failed(String),
}

impl JobEvent for ConceptEvent {
    fn is_progress(&self) -> bool {
        matches!(self, Self::Progress(_))
    }
}

/// A read-out request.
#[derive(Debug, Clone)]
struct ReadRequest {
    request: u64,
    image: PathBuf,
    /// `None`: the predicted class.
    class: Option<usize>,
}

/// The one-slot mailbox of read requests: a newer request replaces an older one.
#[derive(Default)]
struct Mailbox {
    slot: Mutex<(Option<ReadRequest>, bool)>,
    ready: Condvar,
}

/// The concepts thread of one model and one derm7pt folder. Dropping it cancels a build and
/// ends the thread.
pub struct ConceptsHandle {
    pub events: Receiver<ConceptEvent>,
    cancel: Arc<AtomicBool>,
    mailbox: Arc<Mailbox>,
    next_request: u64,
}

impl ConceptsHandle {
    /// Load `model` (`None`: the embedded default) on the CPU on `triscope-concepts` and read
    /// or build its bank for `data` (cache: [`crate::explain::concept_cache::cache_dir`] unless
    /// `cache` names one); `wake` is called after each event.
    pub fn spawn(
        model: Option<PathBuf>,
        data: PathBuf,
        options: BankOptions,
        cache: Option<PathBuf>,
        wake: Box<dyn Fn() + Send>,
    ) -> Result<Self> {
        let (tx, rx) = event_channel(EVENT_CAPACITY, wake);
        let cancel = Arc::new(AtomicBool::new(false));
        let mailbox = Arc::new(Mailbox::default());
        let (flag, mb) = (Arc::clone(&cancel), Arc::clone(&mailbox));
        spawn_named(
            "triscope-concepts",
            carried(move || {
                run(
                    model.as_deref(),
                    &data,
                    &options,
                    cache.as_deref(),
                    &tx,
                    &flag,
                    &mb,
                )
            }),
        )?;
        Ok(Self {
            events: rx,
            cancel,
            mailbox,
            next_request: 0,
        })
    }

    /// Ask for the read-out of `image` toward `class` (`None`: its predicted class); returns
    /// the request id its [`ConceptEvent::Readout`] carries. Answered once the bank is ready.
    pub fn read(&mut self, image: PathBuf, class: Option<usize>) -> u64 {
        self.next_request += 1;
        let request = self.next_request;
        if let Ok(mut slot) = self.mailbox.slot.lock() {
            slot.0 = Some(ReadRequest {
                request,
                image,
                class,
            });
        }
        self.mailbox.ready.notify_one();
        request
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = self.mailbox.slot.lock() {
            slot.1 = true;
        }
        self.mailbox.ready.notify_one();
    }
}

impl Drop for ConceptsHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    model: Option<&Path>,
    data: &Path,
    options: &BankOptions,
    cache: Option<&Path>,
    tx: &EventSender<ConceptEvent>,
    cancel: &AtomicBool,
    mailbox: &Mailbox,
) {
    let send = |e: ConceptEvent| {
        tx.send(e);
    };
    let built = (|| -> Result<(Classifier, ConceptBank)> {
        let classifier = Classifier::load(model, ComputeDevice::cpu())?;
        let (bank, origin) = load_or_build(
            &classifier,
            data,
            options,
            cache,
            &mut |p| send(ConceptEvent::Progress(p)),
            cancel,
        )?;
        send(ConceptEvent::Ready(Box::new(ConceptSummary::of(
            &bank, &origin,
        ))));
        Ok((classifier, bank))
    })();
    let (classifier, bank) = match built {
        Ok(b) => b,
        Err(TriscopeError::Cancelled) => return send(ConceptEvent::Cancelled),
        Err(e) => return send(ConceptEvent::Failed(e.to_string())),
    };
    loop {
        let request = {
            let Ok(mut slot) = mailbox.slot.lock() else {
                return;
            };
            loop {
                if slot.1 {
                    return;
                }
                if let Some(r) = slot.0.take() {
                    break r;
                }
                slot = match mailbox.ready.wait(slot) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
        };
        let result = classifier.load_image(&request.image).and_then(|img| {
            let class = match request.class {
                Some(c) => c,
                None => classifier.predict(&[&img.pixels])?[0].class_index,
            };
            read_concepts(&classifier, &bank, &img.pixels, class)
        });
        send(match result {
            Ok(readout) => ConceptEvent::Readout {
                request: request.request,
                image: request.image,
                readout: Box::new(readout),
            },
            Err(e) => ConceptEvent::ReadFailed {
                request: request.request,
                message: e.to_string(),
            },
        });
    }
}
