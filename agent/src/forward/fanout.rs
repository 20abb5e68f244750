//! Dual shipping: one [`Forwarder`] per destination, every payload to each of them, concurrently.
//!
//! The pipeline hands each flush's payloads to a [`Fanout`], which gives every destination its own
//! copy (bodies are `Bytes`: a copy is a reference) tagged with the destination, and runs the
//! deliveries side by side within the one deadline: an endpoint that is down uses up its own retries
//! and its own breaker, never another's time. Each forwarder owns its copies from the call on and
//! settles each once, so the ledger is exact per destination (`telemetry/destinations.rs`).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Deadline, ForwardError, Forwarder};
use crate::auth::{ApiKey, ApiKeySource};
use crate::config::{EndpointKey, ForwardConfig, StorageConfig};
use crate::destination::{Destination, DestinationId};
use crate::encode::Payload;
use crate::telemetry::Telemetry;

/// The forwarders of every destination, the main one first.
#[derive(Debug)]
pub struct Fanout {
    forwarders: Vec<Forwarder>,
}

/// One destination's delivery, run beside the others'.
type Run<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A copy of `payloads` per destination (bodies are `Bytes`: a copy is a reference); the last gets the
/// original. Each forwarder tags its copies with its destination.
fn copies(payloads: Vec<Payload>, n: usize) -> Vec<Vec<Payload>> {
    let mut out: Vec<Vec<Payload>> = (1..n).map(|_| payloads.clone()).collect();
    out.push(payloads);
    out
}

impl Fanout {
    /// Ship to these forwarders (one per destination, the main one first; at least one).
    pub fn new(forwarders: Vec<Forwarder>) -> Self {
        Self { forwarders }
    }

    /// One forwarder per destination: every (endpoint, key) of `fwd.endpoints`, the main one (with
    /// `key`, the main API key source) first; just the main one when `fwd.endpoints` is empty. An
    /// endpoint's keys share its retry queue budget. `overflow` as in [`Forwarder::new`].
    ///
    /// # Errors
    /// As [`Forwarder::new`].
    pub fn build(
        fwd: &ForwardConfig,
        key: ApiKeySource,
        telemetry: &Arc<Telemetry>,
        overflow: Option<&mpsc::Sender<Payload>>,
    ) -> Result<Self, ForwardError> {
        let mut main_key = Some(key);
        let mut out = Vec::new();
        for endpoint in &fwd.endpoints {
            let mut cfg = fwd.clone();
            cfg.intake_url.clone_from(&endpoint.url);
            cfg.retry_queue_max_bytes = fwd.retry_queue_max_bytes / endpoint.keys.len().max(1);
            for k in &endpoint.keys {
                let source = match k {
                    EndpointKey::Main => match main_key.take() {
                        Some(source) => source,
                        None => continue,
                    },
                    EndpointKey::Additional(k) => ApiKeySource::Fixed(k.clone()),
                };
                let Some(id) = DestinationId::new(out.len()) else {
                    break; // bounded at load (MAX_DESTINATIONS)
                };
                let dest =
                    Destination::new(id, &endpoint.url, source.initial().map(ApiKey::expose));
                if !id.is_main() {
                    tracing::info!(destination = %dest, "dual shipping: every payload also goes here");
                }
                out.push(Forwarder::for_destination(
                    dest,
                    &cfg,
                    source,
                    Arc::clone(telemetry),
                    overflow.cloned(),
                )?);
            }
        }
        if let Some(source) = main_key {
            // No merged endpoints (a configuration built in code): the main endpoint alone.
            let main = Forwarder::new(fwd, source, Arc::clone(telemetry), overflow.cloned())?;
            out.insert(0, main);
        }
        Ok(Self { forwarders: out })
    }

    /// Keep every destination's retry queue on disk too (see [`Forwarder::with_storage`]): one
    /// directory per destination under `cfg.path`, the size bound shared evenly, so that the whole
    /// storage stays within `cfg.max_bytes`. What a previous run left for a destination goes to that
    /// destination alone.
    ///
    /// # Errors
    /// As [`Forwarder::with_storage`].
    pub fn with_storage(self, cfg: &StorageConfig) -> Result<Self, ForwardError> {
        let share = StorageConfig {
            path: cfg.path.clone(),
            max_bytes: cfg.max_bytes / self.forwarders.len().max(1) as u64,
        };
        let forwarders = self
            .forwarders
            .into_iter()
            .map(|f| f.with_storage(&share))
            .collect::<Result<_, _>>()?;
        Ok(Self { forwarders })
    }

    /// Replace every destination's retry and breaker tuning (see [`Forwarder::with_retry_policy`]).
    #[must_use]
    pub fn with_retry_policy(self, policy: super::RetryPolicy) -> Self {
        Self {
            forwarders: self
                .forwarders
                .into_iter()
                .map(|f| f.with_retry_policy(policy))
                .collect(),
        }
    }

    /// The forwarders, the main one first.
    pub fn forwarders(&self) -> &[Forwarder] {
        &self.forwarders
    }

    /// The forwarders, the main one first (`offpath replay` runs one at a time).
    pub fn into_forwarders(self) -> Vec<Forwarder> {
        self.forwarders
    }

    /// What waits in each destination's retry queue, then a copy of `payloads`, to every destination
    /// before `deadline`, concurrently (see [`Forwarder::deliver`]): a destination busy with its own
    /// retries never holds up another's new payloads. Every forwarder owns its copies (and its queue)
    /// as soon as this is called.
    pub fn deliver(
        &mut self,
        payloads: Vec<Payload>,
        deadline: impl Into<Deadline>,
    ) -> impl Future<Output = ()> + '_ {
        let deadline = deadline.into();
        let copies = copies(payloads, self.forwarders.len());
        let runs: Vec<Run<'_>> = self
            .forwarders
            .iter_mut()
            .zip(copies)
            .map(|(f, copy)| -> Run<'_> { Box::pin(f.deliver(copy, deadline.clone())) })
            .collect();
        join_all(runs)
    }

    /// Retry what waits in every destination's retry queue before `deadline`, concurrently (see
    /// [`Forwarder::retry_queued`]).
    pub fn retry_queued(&mut self, deadline: impl Into<Deadline>) -> impl Future<Output = ()> + '_ {
        let deadline = deadline.into();
        let runs: Vec<Run<'_>> = self
            .forwarders
            .iter_mut()
            .map(|f| -> Run<'_> { Box::pin(f.retry_queued(deadline.clone())) })
            .collect();
        join_all(runs)
    }

    /// Everything not yet delivered, of every destination (each payload tagged with its own).
    pub fn take_queued(&mut self) -> Vec<Payload> {
        self.forwarders
            .iter_mut()
            .flat_map(Forwarder::take_queued)
            .collect()
    }

    /// Bytes waiting in the retry queues, over every destination.
    pub fn queued_bytes(&self) -> usize {
        self.forwarders.iter().map(Forwarder::queued_bytes).sum()
    }

    /// The destinations, in order.
    pub fn destinations(&self) -> impl Iterator<Item = DestinationId> + '_ {
        self.forwarders.iter().map(Forwarder::destination)
    }
}

/// Poll every unfinished future whenever the task wakes, until all are done (at most
/// `MAX_DESTINATIONS` of them).
async fn join_all(mut runs: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>>) {
    let mut done = vec![false; runs.len()];
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (run, done) in runs.iter_mut().zip(done.iter_mut()) {
            if !*done {
                if run.as_mut().poll(cx).is_ready() {
                    *done = true;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}
