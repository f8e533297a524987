//! Wake-ups between processes: on PostgreSQL (with `IIB_PG_NOTIFY`, the default), commits
//! send `NOTIFY`s and every process listens on one connection of its own, so work and events
//! committed by another process reach it at once instead of at its next poll.
//!
//! Two channels, each for one concern, with small payloads:
//! - `iib_events` (payload: the last global position appended), sent by every append with its
//!   transaction (`Store::with_notifies`). It wakes what reads the event table: the projector
//!   loop, the Kafka relay and the SSE streams (`CommandBus::committed`, the same signal as a
//!   commit in this process).
//! - `iib_work` (payload: the queue's name, `default` for the default queue), sent by the
//!   projector with the page that makes a request of that queue runnable or frees a place
//!   (a submission, a request's end, a hand-back), when the read model the workers query shows
//!   it. It wakes that queue's actor.
//!
//! Polls stay as a fallback, slow while the listener is connected ([`FALLBACK_POLL`]) and as
//! fast as without notifications while it is not: a lost listener connection is reconnected
//! (with a growing pause), and every waiter is woken at each change of state, since
//! notifications sent meanwhile were lost. On SQLite (one process, in-process wake-ups) and with
//! `IIB_PG_NOTIFY=false`, nothing listens and everything polls as before.

use crate::shutdown::Shutdown;
use crate::store::Store;
use iib_aggregates::BuildRequestEvent;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub const EVENTS_CHANNEL: &str = "iib_events";
pub const WORK_CHANNEL: &str = "iib_work";
pub use crate::workers::settings::DEFAULT_QUEUE;
/// How often pollers look anyway while notifications arrive.
pub const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// Whether a request's event may let a queue start something: a new request, or a place freed
/// (a serial queue's running request ended, an index's earlier writer ended, a claim handed
/// back).
pub fn makes_work_runnable(event: &BuildRequestEvent) -> bool {
    matches!(
        event,
        BuildRequestEvent::RequestSubmitted { .. }
            | BuildRequestEvent::RequestCompleted { .. }
            | BuildRequestEvent::RequestFailed { .. }
            | BuildRequestEvent::ClaimReleased { .. }
    )
}

/// Wakes every task waiting on `signal` now, and the next one to wait (a commit that lands
/// between a waiter's look and its wait is not missed).
pub fn wake(signal: &Notify) {
    signal.notify_waiters();
    signal.notify_one();
}

/// The process's wake-up signals; cheap to clone.
#[derive(Clone)]
pub struct Wakeups {
    inner: Arc<Inner>,
}

struct Inner {
    /// Whether this process listens at all (PostgreSQL with `IIB_PG_NOTIFY`).
    enabled: bool,
    /// Whether the listener is connected now.
    listening: AtomicBool,
    /// Woken for every commit, here or (through `iib_events`) in another process.
    committed: Arc<Notify>,
    /// One signal per queue (by name), woken by `iib_work`.
    queues: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    /// `committed` is the command bus's signal (`CommandBus::committed`); the listener runs
    /// only when `store` sends notifications (`Store::notifies`).
    pub fn new(store: &Store, committed: Arc<Notify>) -> Self {
        Self {
            inner: Arc::new(Inner {
                enabled: store.notifies(),
                listening: AtomicBool::new(false),
                committed,
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether wake-ups from other processes arrive now.
    pub fn listening(&self) -> bool {
        self.inner.enabled && self.inner.listening.load(Ordering::SeqCst)
    }

    /// How long a poller may wait between looks: `usual` unless notifications arrive, then
    /// [`FALLBACK_POLL`] (or `usual`, if longer).
    pub fn poll_every(&self, usual: Duration) -> Duration {
        if self.listening() {
            usual.max(FALLBACK_POLL)
        } else {
            usual
        }
    }

    /// Woken for every commit here or elsewhere (the command bus's signal).
    pub fn committed(&self) -> Arc<Notify> {
        self.inner.committed.clone()
    }

    /// Woken when work of `queue` (its name; [`DEFAULT_QUEUE`]) may have become runnable in
    /// another process, and whenever the listener's state changes.
    pub fn queue(&self, queue: &str) -> Arc<Notify> {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.entry(queue.to_string()).or_default().clone()
    }

    /// Wakes every waiter (the listener connected or went away: pollers pick their period
    /// again, and whatever was notified meanwhile is looked at).
    fn wake_all(&self) {
        wake(&self.inner.committed);
        let queues = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
        for signal in queues.values() {
            signal.notify_one();
        }
    }

    fn wake_queue(&self, queue: &str) {
        let signal = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
            .cloned();
        if let Some(signal) = signal {
            signal.notify_one();
        }
    }

    /// Listens until shutdown (returns at once when notifications are off), reconnecting when
    /// the connection is lost; pollers fall back to their usual period meanwhile.
    pub async fn listen(self, store: Store, shutdown: Shutdown) {
        if !self.inner.enabled {
            return;
        }
        let mut pause = Duration::from_millis(250);
        while !shutdown.is_triggered() {
            match store.listen(&[EVENTS_CHANNEL, WORK_CHANNEL]).await {
                Ok(Some(mut listener)) => {
                    self.inner.listening.store(true, Ordering::SeqCst);
                    self.wake_all();
                    tracing::debug!("listening for other processes' commits");
                    pause = Duration::from_millis(250);
                    loop {
                        tokio::select! {
                            received = listener.try_recv() => match received {
                                Ok(Some(notification)) => match notification.channel() {
                                    EVENTS_CHANNEL => wake(&self.inner.committed),
                                    WORK_CHANNEL => self.wake_queue(notification.payload()),
                                    _ => {}
                                },
                                Ok(None) => {
                                    tracing::warn!("the LISTEN connection was lost; polling until it is back");
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "the LISTEN connection failed; polling until it is back");
                                    break;
                                }
                            },
                            _ = shutdown.wait() => return,
                        }
                    }
                    self.inner.listening.store(false, Ordering::SeqCst);
                    self.wake_all();
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for other processes' commits; polling meanwhile");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}
