//! The model thread's job queue: at most one queued job per kind, a newer job replaces an
//! older one of its kind, and a new image or attack cancels the running attack (so slider
//! drags cannot pile up work).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::Job;

/// What a queued job is, for the queue's rules: a newer job replaces a queued one of its
/// kind; a new image or attack makes running and queued attacks stale; a new image cancels
/// the running analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    LoadModel,
    Analyze,
    Attack,
    Sweep,
}

impl JobKind {
    /// Attacks and sweeps: one at a time, and stale when the image or the request changes.
    fn attacks(self) -> bool {
        matches!(self, Self::Attack | Self::Sweep)
    }
}

impl Job {
    fn kind(&self) -> JobKind {
        match self {
            Self::LoadModel { .. } => JobKind::LoadModel,
            Self::Analyze { .. } => JobKind::Analyze,
            Self::Attack(_) => JobKind::Attack,
            Self::Sweep { .. } => JobKind::Sweep,
        }
    }
}

pub(super) struct Queued {
    pub(super) request: u64,
    pub(super) job: Job,
    pub(super) cancel: Arc<AtomicBool>,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Queued>,
    /// Cancel flag of the attack or sweep now running, if any.
    running_attack: Option<Arc<AtomicBool>>,
    /// Cancel flag of the analysis now running (slow methods stop between batches).
    running_analysis: Option<Arc<AtomicBool>>,
    closed: bool,
}

/// At most one queued job per kind; newer jobs replace older ones of the same kind.
#[derive(Default)]
pub struct JobQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl JobQueue {
    pub(super) fn push(&self, queued: Queued) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let kind = queued.job.kind();
        // A new attack, sweep or image makes the running and queued attacks and sweeps stale.
        if kind != JobKind::LoadModel {
            if let Some(flag) = s.running_attack.take() {
                flag.store(true, Ordering::Relaxed);
            }
            s.jobs.retain(|q| !q.job.kind().attacks());
        }
        if kind == JobKind::Analyze
            && let Some(flag) = s.running_analysis.take()
        {
            flag.store(true, Ordering::Relaxed);
        }
        s.jobs.retain(|q| q.job.kind() != kind);
        s.jobs.push_back(queued);
        self.ready.notify_one();
    }

    pub(super) fn pop(&self) -> Option<Queued> {
        let mut s = self.state.lock().ok()?;
        loop {
            if s.closed {
                return None;
            }
            if let Some(q) = s.jobs.pop_front() {
                match q.job.kind() {
                    JobKind::Analyze => s.running_analysis = Some(q.cancel.clone()),
                    JobKind::Attack | JobKind::Sweep => {
                        s.running_attack = Some(q.cancel.clone());
                    }
                    JobKind::LoadModel => {}
                }
                return Some(q);
            }
            s = self.ready.wait(s).ok()?;
        }
    }

    /// Cancel the running attack or sweep and drop queued ones.
    pub(super) fn cancel_attacks(&self) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(flag) = s.running_attack.take() {
                flag.store(true, Ordering::Relaxed);
            }
            s.jobs.retain(|q| !q.job.kind().attacks());
        }
    }

    pub(super) fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
            if let Some(flag) = s.running_attack.take() {
                flag.store(true, Ordering::Relaxed);
            }
        }
        self.ready.notify_all();
    }

    /// Jobs waiting (not counting the running one).
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.jobs.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::explain::attribution::Method;
    use crate::explain::gradcam::TargetClass;
    use crate::model::LayerId;
    use crate::workbench::AttackRequest;

    #[test]
    fn queue_keeps_one_job_per_kind_and_cancels_running_attack() {
        let q = JobQueue::default();
        let attack =
            |eps: f32| Job::Attack(AttackRequest::new(crate::attack::AttackMethod::Pgd, eps, 2));
        let flag = |_| Arc::new(AtomicBool::new(false));
        let running = flag(0);
        q.push(Queued {
            request: 1,
            job: attack(0.01),
            cancel: running.clone(),
        });
        let first = q.pop().expect("a job");
        assert_eq!(first.request, 1);
        q.push(Queued {
            request: 2,
            job: attack(0.02),
            cancel: flag(0),
        });
        assert!(running.load(Ordering::Relaxed), "running attack cancelled");
        q.push(Queued {
            request: 3,
            job: attack(0.03),
            cancel: flag(0),
        });
        assert_eq!(q.len(), 1, "older queued attack replaced");
        q.push(Queued {
            request: 4,
            job: Job::LoadModel { path: None },
            cancel: flag(0),
        });
        q.push(Queued {
            request: 5,
            job: Job::Analyze {
                path: PathBuf::from("x.png"),
                target: TargetClass::Predicted,
                top_k: 4,
                method: Method::GradCam,
                method_layer: LayerId::Layer4,
                window: None,
            },
            cancel: flag(0),
        });
        // The analysis drops the queued attack (its image changes).
        let order: Vec<u64> = std::iter::from_fn(|| {
            if q.is_empty() {
                None
            } else {
                q.pop().map(|j| j.request)
            }
        })
        .collect();
        assert_eq!(order, vec![4, 5]);

        // A sweep is an attack for the queue: a new attack cancels it, and cancel_attacks
        // stops whichever runs and drops what waits.
        let sweeping = flag(0);
        q.push(Queued {
            request: 6,
            job: Job::Sweep {
                attack: AttackRequest::new(crate::attack::AttackMethod::Pgd, 0.0, 2),
                eps_linf: vec![0.0, 0.01],
            },
            cancel: sweeping.clone(),
        });
        assert_eq!(q.pop().map(|j| j.request), Some(6));
        let attacking = flag(0);
        q.push(Queued {
            request: 7,
            job: attack(0.01),
            cancel: attacking.clone(),
        });
        assert!(
            sweeping.load(Ordering::Relaxed),
            "the running sweep is cancelled"
        );
        assert_eq!(q.pop().map(|j| j.request), Some(7));
        q.push(Queued {
            request: 8,
            job: attack(0.02),
            cancel: flag(0),
        });
        q.cancel_attacks();
        assert!(attacking.load(Ordering::Relaxed));
        assert!(q.is_empty(), "the queued attack is dropped");
    }
}
