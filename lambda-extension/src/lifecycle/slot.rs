//! The pipeline slot: at most one flush at a time, each in its own task, failures logged once.

use std::future::Future;

use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use super::{FLUSH_GRACE, FlushKind, FlushOutcome, Flusher};

type FlushTask<F> = JoinHandle<(F, FlushOutcome)>;

pub(super) enum Slot<F> {
    /// Ready for the next flush.
    Idle(F),
    /// A flush task owns the pipeline until it returns.
    Flushing {
        task: FlushTask<F>,
        deadline: Instant,
    },
    /// No pipeline: it failed to start or crashed.
    Down,
}

/// The pipeline slot: at most one flush at a time, failures logged once.
pub(super) struct Pipeline<F> {
    slot: Slot<F>,
    /// Tags to hand over once the running flush gives the pipeline back.
    pending_tags: Option<Vec<String>>,
    failure_logged: bool,
    overrun_logged: bool,
}

impl<F: Flusher> Pipeline<F> {
    pub(super) fn new(flusher: F) -> Self {
        Self::with_slot(Slot::Idle(flusher))
    }

    pub(super) fn down() -> Self {
        let mut p = Self::with_slot(Slot::Down);
        p.failure_logged = true;
        p
    }

    fn with_slot(slot: Slot<F>) -> Self {
        Self {
            slot,
            pending_tags: None,
            failure_logged: false,
            overrun_logged: false,
        }
    }

    pub(super) fn is_down(&self) -> bool {
        matches!(self.slot, Slot::Down)
    }

    /// Whether a flush can start now (none runs, the pipeline is up).
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.slot, Slot::Idle(_))
    }

    pub(super) fn set_tags(&mut self, tags: Vec<String>) {
        match &mut self.slot {
            Slot::Idle(f) => f.set_tags(tags),
            Slot::Flushing { .. } => self.pending_tags = Some(tags),
            Slot::Down => {}
        }
    }

    /// Start a flush unless one is running or the pipeline is down.
    pub(super) fn start(&mut self, deadline: Instant, kind: FlushKind) -> bool {
        match std::mem::replace(&mut self.slot, Slot::Down) {
            Slot::Idle(mut flusher) => {
                let task = tokio::spawn(async move {
                    let outcome = flusher.flush(deadline, kind).await;
                    (flusher, outcome)
                });
                self.slot = Slot::Flushing { task, deadline };
                true
            }
            other => {
                self.slot = other;
                false
            }
        }
    }

    /// Wait for a running flush until its deadline plus a grace period.
    pub(super) async fn settle(&mut self) {
        if let Slot::Flushing { deadline, .. } = &self.slot {
            let until = *deadline + FLUSH_GRACE;
            self.settle_until(until).await;
        }
    }

    /// Wait for a running flush until `until` at the latest.
    pub(super) async fn settle_until(&mut self, until: Instant) {
        if !matches!(self.slot, Slot::Flushing { .. }) {
            return;
        }
        if tokio::time::timeout_at(until, self.join()).await.is_err() && !self.overrun_logged {
            self.overrun_logged = true;
            tracing::warn!("a flush overran its deadline; not waiting for it");
        }
    }

    /// Take the result of a finished flush without waiting.
    pub(super) fn reap(&mut self) {
        let result = match &mut self.slot {
            // A finished task's result is ready: one poll completes it.
            Slot::Flushing { task, .. } if task.is_finished() => poll_once(task),
            _ => None,
        };
        if let Some(result) = result {
            self.complete(result);
        }
    }

    /// Wait until the running flush ends (pending forever when none runs). Cancel-safe.
    pub(super) async fn join(&mut self) {
        let result = match &mut self.slot {
            Slot::Flushing { task, .. } => task.await,
            _ => return std::future::pending().await,
        };
        self.complete(result);
    }

    fn complete(&mut self, result: Result<(F, FlushOutcome), JoinError>) {
        match result {
            Ok((mut flusher, outcome)) => {
                if let Some(tags) = self.pending_tags.take() {
                    flusher.set_tags(tags);
                }
                self.slot = Slot::Idle(flusher);
                match outcome {
                    FlushOutcome::Complete => tracing::debug!("flush complete"),
                    FlushOutcome::Deferred => {
                        tracing::debug!(
                            "flush deadline reached; the rest waits in the retry queue"
                        );
                    }
                    FlushOutcome::Failed(e) => self.failed(&e.to_string()),
                }
            }
            Err(e) => {
                self.slot = Slot::Down;
                self.failed(&format!("the flush task ended abnormally: {e}"));
            }
        }
    }

    fn failed(&mut self, error: &str) {
        if std::mem::replace(&mut self.failure_logged, true) {
            tracing::debug!(%error, "the metrics pipeline failed again");
        } else {
            tracing::error!(%error, "the metrics pipeline failed; the extension keeps answering the Runtime API");
        }
    }
}

/// Poll a task's handle once.
fn poll_once<F>(task: &mut FlushTask<F>) -> Option<Result<(F, FlushOutcome), JoinError>> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(task).poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}
