//! A delivery deadline that can be brought forward while the delivery runs.
//!
//! A shutdown signal during a periodic flush must not wait for that flush's own deadline (a whole flush
//! interval), and must not drop the flush's future either: a request whose answer is on its way would be
//! lost, its payload sent a second time. Instead the signal brings the [`Deadline`] forward; every wait of
//! the forwarder (request, answer, backoff, hand-off to the fallback) ends when it is reached, and the
//! forwarder's own code settles what was not delivered (retry queue, then fallback at shutdown).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// When a delivery must stop: a fixed instant, or one that a [`DeadlineCut`] may bring forward.
///
/// `Deadline::from(instant)` is a fixed one; [`Deadline::movable`] pairs one with its cut.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: watch::Receiver<Instant>,
}

/// Brings its [`Deadline`] forward (never back).
#[derive(Debug)]
pub struct DeadlineCut {
    at: watch::Sender<Instant>,
}

impl Deadline {
    /// A deadline at `at` that never moves.
    pub fn fixed(at: Instant) -> Self {
        let (_cut, at) = watch::channel(at);
        Self { at }
    }

    /// A deadline at `at` and the cut that can bring it forward.
    pub fn movable(at: Instant) -> (Self, DeadlineCut) {
        let (cut, at) = watch::channel(at);
        (Self { at }, DeadlineCut { at: cut })
    }

    /// The instant as it stands now.
    pub fn at(&self) -> Instant {
        *self.at.borrow()
    }

    /// Time left from now (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at().saturating_duration_since(Instant::now())
    }

    /// Resolves when the deadline is reached, following it when it is brought forward.
    pub async fn reached(&self) {
        let mut at = self.at.clone();
        loop {
            let when = *at.borrow_and_update();
            tokio::select! {
                () = tokio::time::sleep_until(when) => return,
                changed = at.changed() => {
                    if changed.is_err() {
                        // The cut is gone: the deadline cannot move any more.
                        let last = *at.borrow();
                        tokio::time::sleep_until(last).await;
                        return;
                    }
                }
            }
        }
    }

    /// Run `f` until the deadline: `None` when the deadline came first (`f` is dropped). When both are
    /// ready at once, `f`'s result wins: an answer that arrived is never thrown away.
    pub async fn bound<F: Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = f => Some(out),
            () = self.reached() => None,
        }
    }
}

impl From<Instant> for Deadline {
    fn from(at: Instant) -> Self {
        Self::fixed(at)
    }
}

impl DeadlineCut {
    /// Move the deadline to `at` if that is earlier; waits bounded by it end then.
    pub fn bring_forward(&self, at: Instant) {
        self.at.send_if_modified(|current| {
            let earlier = at < *current;
            if earlier {
                *current = at;
            }
            earlier
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(600);

    #[tokio::test]
    async fn a_fixed_deadline_ends_a_wait_that_outlasts_it() {
        let d = Deadline::from(Instant::now() + Duration::from_millis(10));
        assert_eq!(d.bound(std::future::pending::<()>()).await, None);
        assert_eq!(d.remaining(), Duration::ZERO);
    }

    #[tokio::test]
    async fn work_done_before_the_deadline_returns_its_result() {
        let d = Deadline::from(Instant::now() + LONG);
        assert_eq!(d.bound(async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn bringing_a_deadline_forward_ends_the_wait_in_progress() {
        let (d, cut) = Deadline::movable(Instant::now() + LONG);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let wait = async {
            let _ = started_tx.send(());
            d.bound(std::future::pending::<()>()).await
        };
        let cutter = async {
            let _ = started_rx.await;
            cut.bring_forward(Instant::now());
        };
        let (out, ()) = tokio::join!(wait, cutter);
        assert_eq!(out, None);
    }

    #[test]
    fn a_deadline_is_never_pushed_back() {
        let start = Instant::now();
        let (d, cut) = Deadline::movable(start + Duration::from_secs(5));
        cut.bring_forward(start + Duration::from_secs(50));
        assert_eq!(d.at(), start + Duration::from_secs(5));
        cut.bring_forward(start + Duration::from_secs(1));
        assert_eq!(d.at(), start + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_deadline_whose_cut_is_gone_still_ends_waits() {
        let (d, cut) = Deadline::movable(Instant::now() + Duration::from_millis(10));
        drop(cut);
        assert_eq!(d.bound(std::future::pending::<()>()).await, None);
    }

    #[tokio::test]
    async fn a_result_ready_when_the_deadline_passes_is_kept() {
        let d = Deadline::from(Instant::now());
        assert_eq!(d.bound(async { 1 }).await, Some(1));
    }
}
