//! The policy every background thread follows toward its front end (the model worker, a
//! training run, an audit, the concept bank): named threads, a bounded event channel on which
//! progress is dropped while the receiver is behind (the next progress event says more) and
//! every other event waits for room, so results, checkpoints and the end of a job always
//! arrive; and a wake-up call after each event (a UI passes its repaint request).
//! Which of two requests wins (a newer one cancels an older one) is each job's own rule: the
//! model worker's [`crate::workbench::JobQueue`], a handle's cancel flag elsewhere.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Result, TriscopeError};

/// An event a background job sends: progress may be dropped, nothing else is.
pub trait JobEvent: Send + 'static {
    fn is_progress(&self) -> bool;
}

/// The sending side of a job's events.
pub struct EventSender<E> {
    tx: SyncSender<E>,
    wake: Box<dyn Fn() + Send>,
}

/// A channel holding at most `capacity` events; `wake` runs after each event sent.
pub fn event_channel<E: JobEvent>(
    capacity: usize,
    wake: Box<dyn Fn() + Send>,
) -> (EventSender<E>, Receiver<E>) {
    let (tx, rx) = sync_channel(capacity);
    (EventSender { tx, wake }, rx)
}

impl<E: JobEvent> EventSender<E> {
    /// Send `event` (a progress event is dropped when the channel is full); false once nobody
    /// listens any more, which tells a job it may stop.
    pub fn send(&self, event: E) -> bool {
        let listening = if event.is_progress() {
            !matches!(self.tx.try_send(event), Err(TrySendError::Disconnected(_)))
        } else {
            self.tx.send(event).is_ok()
        };
        (self.wake)();
        listening
    }
}

/// Run `f` on a new thread called `name` (`triscope-...`, as debuggers and profilers show it).
pub fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| TriscopeError::Compute(format!("cannot start the {name} thread: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, PartialEq)]
    enum Event {
        Progress(usize),
        Done,
    }

    impl JobEvent for Event {
        fn is_progress(&self) -> bool {
            matches!(self, Event::Progress(_))
        }
    }

    #[test]
    fn progress_is_dropped_when_behind_and_the_end_always_arrives() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let (tx, rx) = event_channel::<Event>(
            2,
            Box::new(move || {
                w.fetch_add(1, Ordering::Relaxed);
            }),
        );
        let (sent_tx, sent_rx) = std::sync::mpsc::channel();
        let job = spawn_named("triscope-test-job", move || {
            for i in 0..10 {
                assert!(tx.send(Event::Progress(i)), "the receiver listens");
            }
            sent_tx.send(()).unwrap();
            // Blocks until the receiver makes room: the end is never dropped.
            tx.send(Event::Done)
        })
        .unwrap();
        // Nothing is read before all progress was sent (two fit, eight are dropped).
        sent_rx.recv().unwrap();
        let events: Vec<Event> = rx.iter().collect();
        assert!(job.join().unwrap());
        assert_eq!(
            events,
            vec![Event::Progress(0), Event::Progress(1), Event::Done]
        );
        assert_eq!(wakes.load(Ordering::Relaxed), 11, "a wake per event sent");
    }

    #[test]
    fn a_sender_learns_that_nobody_listens() {
        let (tx, rx) = event_channel::<Event>(1, Box::new(|| {}));
        drop(rx);
        assert!(!tx.send(Event::Progress(0)));
        assert!(!tx.send(Event::Done));
    }

    #[test]
    fn threads_carry_their_name() {
        let name = spawn_named("triscope-named", || {
            std::thread::current().name().map(str::to_string)
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(name.as_deref(), Some("triscope-named"));
    }
}
