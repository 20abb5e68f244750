//! What the intake does not take: the retry queue, and the way to the fallback (`overflow`), with
//! `spill` holding what waits for room in the fallback channel.

use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc::error::TrySendError;

use super::store::body_id;
use super::{BreakerState, Deadline, Forwarder};
use crate::encode::Payload;
use crate::telemetry::PointDrop;

impl Forwarder {
    /// A payload that was not delivered: to the fallback while the breaker is open (and there is one),
    /// else into the retry queue, whose evictions go to the fallback.
    pub(super) fn undelivered(&mut self, p: Payload) {
        if self.breaker.state() != BreakerState::Closed && self.overflow.is_some() {
            // The intake is known to be down: nothing waits for it, queued payloads included.
            for old in self.queue.drain() {
                self.divert(old);
            }
            self.sync_queue_bytes();
            self.divert(p);
            return;
        }
        self.keep(&p);
        let evicted = self.queue.push(p);
        self.sync_queue_bytes();
        for old in evicted {
            self.divert(old);
        }
    }

    /// Give `p` a file in the retry storage (if on and it has none) before it waits for a retry; the
    /// payloads whose files the storage's size bound evicted leave the retry queue for the fallback.
    pub(super) fn keep(&mut self, p: &Payload) {
        let Some(storage) = &mut self.storage else {
            return;
        };
        for id in storage.keep(p) {
            // A payload being tried (in `pending`) just loses its file; it gets one again if it fails.
            if let Some(old) = self.queue.take(|q| body_id(q) == id) {
                self.telemetry
                    .forward
                    .storage_overflow
                    .fetch_add(1, Relaxed);
                self.divert(old);
            }
        }
        self.sync_queue_bytes();
    }

    /// `p` is settled (delivered, dropped, or handed to the fallback): delete its file, if any.
    pub(super) fn settled(&mut self, p: &Payload) {
        if let Some(storage) = &mut self.storage {
            storage.settled(p);
        }
    }

    /// Make the storage's writes and deletions of this delivery durable (one fsync batch).
    pub(super) fn sync_storage(&mut self) {
        if let Some(storage) = &mut self.storage {
            storage.sync();
        }
    }

    /// Give a payload to the fallback (in order: after what already waits in `spill`), or drop and
    /// count it when there is none. When the fallback channel is full it waits in `spill`; the
    /// delivery then waits for room ([`Forwarder::drain_spill`]).
    pub(super) fn divert(&mut self, p: Payload) {
        self.settled(&p);
        let Some(tx) = &self.overflow else {
            self.telemetry
                .drop_for(self.dest, PointDrop::RetryQueueOverflow, p.samples);
            return;
        };
        let p = if self.spill.is_empty() {
            match tx.try_send(p) {
                Ok(()) => return,
                Err(TrySendError::Full(p)) => p,
                Err(TrySendError::Closed(p)) => {
                    // The fallback task is gone (it only ends when the forwarder is dropped).
                    self.telemetry
                        .drop_for(self.dest, PointDrop::FallbackOverflow, p.samples);
                    return;
                }
            }
        } else {
            p
        };
        self.spill.push_back(p);
        // The fallback is behind by a whole channel: keep at most a retry queue's worth waiting.
        let mut bytes: usize = self.spill.iter().map(|p| p.body.len()).sum();
        while bytes > self.queue.max_bytes() && self.spill.len() > 1 {
            if let Some(old) = self.spill.pop_front() {
                bytes -= old.body.len();
                self.telemetry
                    .drop_for(self.dest, PointDrop::FallbackOverflow, old.samples);
            }
        }
    }

    /// Hand what waits in `spill` to the fallback channel, waiting for room until `deadline`; what is
    /// still waiting then stays for the next delivery or [`Forwarder::take_queued`]. A payload leaves
    /// `spill` only together with a reserved slot of the channel, so cancelling this loses nothing.
    pub(super) async fn drain_spill(&mut self, deadline: &Deadline) {
        while !self.spill.is_empty() {
            let Some(tx) = &self.overflow else {
                return;
            };
            let permit = match tx.try_reserve() {
                Ok(permit) => permit,
                Err(TrySendError::Full(())) => match deadline.bound(tx.reserve()).await {
                    Some(Ok(permit)) => permit,
                    Some(Err(_)) => break,
                    None => return,
                },
                Err(TrySendError::Closed(())) => break,
            };
            if let Some(p) = self.spill.pop_front() {
                permit.send(p);
            }
        }
        // The fallback task is gone (it only ends when the forwarder is dropped, or crashed).
        for p in self.spill.drain(..) {
            self.telemetry
                .drop_for(self.dest, PointDrop::FallbackOverflow, p.samples);
        }
    }
}
