//! An audit on its own `triscope-audit` thread, for the app: the model is loaded and the
//! dataset opened there, progress comes back over a bounded channel, a cancel flag stops it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use super::{AuditOptions, AuditProgress, run_audit};
use crate::error::{Result, TriscopeError};
use crate::inference::Classifier;
use crate::io::data::Dataset;
use crate::model::device::ComputeDevice;
use crate::model::fast::carried;
use crate::util::jobs::{EventSender, JobEvent, event_channel, spawn_named};

/// Events in flight at most; progress beyond that is dropped (the next one says more).
const EVENT_CAPACITY: usize = 64;

/// What to audit, and where the report goes.
#[derive(Debug, Clone)]
pub struct AuditRequest {
    /// The checkpoint; `None` for the embedded default.
    pub model: Option<PathBuf>,
    /// A dataset folder or file, as `triscope audit --data` takes it.
    pub data: PathBuf,
    /// `None`: the test split where there is one, else all.
    pub split: Option<String>,
    /// Audit only the first N images (classes interleaved); `None`: all.
    pub limit: Option<usize>,
    pub options: AuditOptions,
    /// The report folder (created).
    pub out: PathBuf,
}

/// What the audit thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditEvent {
    /// The model is loaded and the dataset open.
    Started {
        model: String,
        dataset: String,
        split: String,
        images: usize,
    },
    Progress(AuditProgress),
    /// `audit.json` and `audit.html` are in `out`.
    Finished {
        out: PathBuf,
        elapsed_secs: f64,
    },
    Cancelled,
    Failed(String),
}

/// A running audit: its events and its cancel flag. Dropping it cancels the audit.
pub struct AuditHandle {
    pub events: Receiver<AuditEvent>,
    cancel: Arc<AtomicBool>,
}

impl AuditHandle {
    /// Start `request` on the `triscope-audit` thread (CPU); `wake` is called after each event.
    pub fn spawn(request: AuditRequest, wake: Box<dyn Fn() + Send>) -> Result<Self> {
        let (tx, rx) = event_channel(EVENT_CAPACITY, wake);
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        spawn_named("triscope-audit", carried(move || run(request, &tx, &flag)))?;
        Ok(Self { events: rx, cancel })
    }

    /// Ask the audit to stop; it answers [`AuditEvent::Cancelled`] at its next check.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Drop for AuditHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl JobEvent for AuditEvent {
    fn is_progress(&self) -> bool {
        matches!(self, Self::Progress(_))
    }
}

fn run(request: AuditRequest, tx: &EventSender<AuditEvent>, cancel: &AtomicBool) {
    let send = |e: AuditEvent| {
        tx.send(e);
    };
    let started = Instant::now();
    let result = (|| -> Result<()> {
        let classifier = Classifier::load(request.model.as_deref(), ComputeDevice::cpu())?;
        let mut dataset = Dataset::open(&request.data, request.split.as_deref())?;
        if let Some(n) = request.limit {
            dataset.limit(n);
        }
        send(AuditEvent::Started {
            model: classifier.source.to_string(),
            dataset: dataset.root.display().to_string(),
            split: dataset.split.clone(),
            images: dataset.len(),
        });
        run_audit(
            &classifier,
            &dataset,
            &request.options,
            &request.out,
            &mut |p| send(AuditEvent::Progress(p)),
            cancel,
        )?;
        Ok(())
    })();
    send(match result {
        Ok(()) => AuditEvent::Finished {
            out: request.out.clone(),
            elapsed_secs: started.elapsed().as_secs_f64(),
        },
        Err(TriscopeError::Cancelled) => AuditEvent::Cancelled,
        Err(e) => AuditEvent::Failed(e.to_string()),
    });
}
