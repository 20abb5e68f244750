//! Wires the stages together with bounded channels; [`Engine`] is the whole pipeline as one value.
//!
//! ```text
//! Listeners (threads) ──one bounded Packet queue per worker──> aggregate workers (parse + Aggregator)
//!       Engine::flush ──Control::Flush──> each worker ──Flush (merged)──> Encoder ──Vec<Payload>──> Fanout
//!       Fanout ──a copy to each destination's Forwarder (DD_ADDITIONAL_ENDPOINTS), concurrently
//!       Forwarders ──overflow mpsc<Payload>──> fallback task (CloudWatch Logs / stdout)
//!       no API key: Engine::flush ──Flush──> Fallback::write_flush (local stdout mode)
//! ```
//! The sidecar ([`run`]) flushes closed buckets every `OFFPATH_FLUSH_INTERVAL`; the Lambda extension
//! calls [`Engine::flush`] itself around invocations, and adds its enhanced metrics through
//! [`Engine::own_points`] (a queue of its own to each worker). Both end with [`Engine::shutdown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::aggregate::{Aggregator, OwnPoints, WorkerError, Workers};
use crate::auth;
use crate::config::{Config, FallbackSink};
use crate::control::status::{Health, unix_now};
use crate::encode::{Encoder, Payload};
use crate::errors::Chain;
use crate::fallback::{self, Fallback, FallbackError};
use crate::forward::{Deadline, Fanout, ForwardError};
use crate::host::{Facts, HostInfo};
use crate::ingest::{IngestError, Listeners};
use crate::model::Flush;
use crate::telemetry::{PointDrop, SelfMetrics, Telemetry};

/// Payloads waiting between the forwarder and the fallback task.
const OVERFLOW_QUEUE: usize = 256;

/// Longest a flush waits for paced listeners to empty their sockets ([`Listeners::syncer`]).
const SYNC_WAIT: Duration = Duration::from_millis(50);

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A listener could not be started.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The HTTP client for the intake could not be built.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// The fallback sink could not be set up.
    #[error(transparent)]
    Fallback(#[from] FallbackError),
    /// An aggregate worker thread could not be started.
    #[error(transparent)]
    Aggregate(#[from] WorkerError),
    /// The status endpoint could not be bound to the address `OFFPATH_STATUS_ADDR` sets explicitly
    /// (with the default address this is a warning instead).
    #[error(
        "cannot bind the status endpoint to {addr} (OFFPATH_STATUS_ADDR): set a free address, or \
         the empty string to disable it; `offpath health --addr {addr}` shows which process holds it"
    )]
    Status {
        /// The address asked for.
        addr: SocketAddr,
        /// The system error.
        source: std::io::Error,
    },
}

/// Where flushed data goes.
enum Delivery {
    /// `DD_API_KEY` (or `DD_API_KEY_SECRET_ARN`) set: the intake, with the fallback task behind it.
    Intake {
        forwarder: Box<Fanout>,
        overflow: mpsc::Sender<Payload>,
        fallback_task: Option<fallback::FallbackTask>,
    },
    /// No API key: every flush is written as records by the fallback sink (stdout by default).
    Local { fallback: Fallback },
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Intake { .. } => "Delivery::Intake",
            Self::Local { .. } => "Delivery::Local",
        })
    }
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Payloads handed to the forwarder (or records written in local mode).
    pub payloads: usize,
    /// Points the flush carried.
    pub samples: u64,
    /// Bytes left in the retry queue afterwards.
    pub queued_bytes: usize,
}

/// The running pipeline: listeners, aggregate workers, encoder and delivery.
#[derive(Debug)]
pub struct Engine {
    telemetry: Arc<Telemetry>,
    health: Arc<Health>,
    listeners: Option<Listeners>,
    udp_addr: Option<SocketAddr>,
    workers: Option<Workers>,
    encoder: Encoder,
    delivery: Delivery,
    self_metrics: Option<SelfMetrics>,
    /// Tags added to everything flushed, on top of the global tags (see [`Engine::set_extra_tags`]).
    extra_tags: Vec<String>,
    /// The hostname and the host (ECS task) tags; resolved in the background in the sidecar.
    host: Arc<HostInfo>,
    /// The background resolution, stopped at shutdown (it may still be retrying the ECS endpoint).
    host_task: Option<tokio::task::JoinHandle<()>>,
}

/// The API key source and the fallback sink, with one AWS configuration between them when either needs
/// one (see [`auth::connect`]).
async fn key_and_fallback(
    config: &Config,
    telemetry: &Arc<Telemetry>,
) -> Result<(Option<auth::ApiKeySource>, Fallback), PipelineError> {
    let fwd = &config.forward;
    let connected = auth::connect(
        fwd.api_key.clone(),
        fwd.api_key_secret_arn.clone(),
        fwd.aws_credentials,
        config.fallback.sink == FallbackSink::CloudWatch,
    )
    .await;
    #[cfg(feature = "cloudwatch")]
    if let Some(aws) = &connected.aws {
        let fallback = Fallback::with_aws(&config.fallback, Arc::clone(telemetry), aws)?;
        return Ok((connected.api_key, fallback));
    }
    let fallback = Fallback::new(&config.fallback, Arc::clone(telemetry)).await?;
    Ok((connected.api_key, fallback))
}

impl Engine {
    /// Start listeners, the aggregate workers and delivery, as `config` (resolved for its deployment)
    /// says.
    ///
    /// # Errors
    /// A [`PipelineError`] when a socket cannot be bound, the HTTP client or the fallback sink cannot
    /// be built.
    pub async fn start(config: &Config, telemetry: Arc<Telemetry>) -> Result<Self, PipelineError> {
        let health = Arc::new(Health::new(Health::stale_after_for(
            config.ops.flush_interval,
        )));
        // Lambda sends no host of its own; the sidecar resolves one as the Agent does, without waiting.
        let (host, host_task) = if config.host.resolve {
            let facts = Facts::gather(|k| std::env::var(k).ok());
            let (host, task) = HostInfo::resolve_in_background(&config.host, facts);
            (host, Some(task))
        } else {
            (HostInfo::fixed(&config.aggregate.hostname), None)
        };
        let n = config.aggregate.workers.get();
        let mut aggregators = Aggregator::sharded(&config.aggregate, &telemetry, n);
        for a in &mut aggregators {
            a.set_host(Arc::clone(&host));
        }
        let (workers, queues) =
            Workers::start(aggregators, config.ingest.queue_size.get(), unix_now)?;
        let listeners =
            Listeners::start_sharded(&config.ingest, &telemetry, queues, workers.route())?;
        let udp_addr = listeners.udp_addr();
        tracing::debug!(workers = n, "aggregate workers started");

        let (api_key, fallback) = key_and_fallback(config, &telemetry).await?;
        if let Some(stall) = fallback.stall() {
            health.watch(
                "the fallback's stdout",
                "is anything reading offpath's stdout (a stuck log shipper, a full pipe)?",
                stall,
            );
        }
        let delivery = if let Some(key) = api_key {
            let (overflow, overflow_rx) = mpsc::channel(OVERFLOW_QUEUE);
            // With OFFPATH_FALLBACK=off there is nowhere to divert to while an intake is down: payloads
            // wait in the retry queue (and the retry storage) for it, and only what the queue evicts is
            // dropped (`retry_queue_overflow`).
            let divert = (config.fallback.sink != FallbackSink::Off).then_some(&overflow);
            let mut forwarder = Fanout::build(&config.forward, key, &telemetry, divert)?;
            if let Some(storage) = &config.forward.storage {
                forwarder = forwarder.with_storage(storage)?;
            }
            let forwarder = Box::new(forwarder);
            let names: Vec<String> = telemetry
                .destinations()
                .iter()
                .map(|d| d.destination.name())
                .collect();
            let mut fallback = fallback;
            fallback.set_destinations(&names);
            Delivery::Intake {
                forwarder,
                overflow,
                fallback_task: Some(fallback::spawn(fallback, overflow_rx)),
            }
        } else {
            tracing::info!(
                "no DD_API_KEY: running locally, flushed metrics are written as offpath records"
            );
            Delivery::Local { fallback }
        };
        health.set_listeners_up(true);
        health.heartbeat(unix_now());

        Ok(Self {
            telemetry,
            health,
            listeners: Some(listeners),
            udp_addr,
            workers: Some(workers),
            encoder: Encoder::new(config.forward.zstd_level),
            delivery,
            self_metrics: config.ops.self_telemetry.then(|| {
                SelfMetrics::new(
                    config.aggregate.hostname.clone(),
                    config.aggregate.tags.clone(),
                )
            }),
            extra_tags: Vec::new(),
            host,
            host_task,
        })
    }

    /// Add `tags` to everything flushed from now on (points aggregated before included), on top of the
    /// global tags the engine started with; replaces the tags of the previous call. The Lambda
    /// extension adds `runtime:<x>` this way once the first invocation shows the runtime.
    pub fn set_extra_tags(&mut self, mut tags: Vec<String>) {
        tags.sort_unstable();
        tags.dedup();
        self.extra_tags = tags;
    }

    /// A handle for distribution values produced in this process rather than received (the Lambda
    /// extension's enhanced metrics): they are aggregated and flushed with what the listeners receive, counted
    /// in the same ledger, and delivered or fallen back like any point. `None` once the engine is shut down.
    pub fn own_points(&self) -> Option<OwnPoints> {
        self.workers
            .as_ref()
            .map(|w| w.own_points(Arc::clone(&self.telemetry)))
    }

    /// The bound UDP address, when UDP is enabled.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The hostname and host tags the engine puts on what it flushes.
    pub fn host(&self) -> Arc<HostInfo> {
        Arc::clone(&self.host)
    }

    /// Health flags for `/health`.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Ask every worker for a flush. `final_flush` also emits open buckets.
    async fn collect(&mut self, final_flush: bool, deadline: &Deadline) -> Option<Flush> {
        // Paced listeners may hold datagrams in their sockets: hand them over first (bounded).
        if let Some(syncer) = self.listeners.as_ref().and_then(Listeners::syncer) {
            let wait = deadline
                .at()
                .saturating_duration_since(Instant::now())
                .min(SYNC_WAIT);
            if !matches!(
                tokio::task::spawn_blocking(move || syncer.sync(wait)).await,
                Ok(true)
            ) {
                tracing::debug!("a paced listener did not empty its socket before the flush");
            }
        }
        let answer = self
            .workers
            .as_ref()?
            .flush(final_flush, deadline.at())
            .await;
        if answer.answered == answer.asked {
            self.health.heartbeat(unix_now());
        }
        (answer.answered > 0).then_some(answer.flush)
    }

    /// Free half the packet buffers the listeners keep free ([`Listeners::trim_buffers`]); the sidecar
    /// calls it once per flush period, so that memory a burst took goes back once bursts stop.
    pub fn trim_buffers(&self) {
        if let Some(listeners) = &self.listeners {
            let freed = listeners.trim_buffers();
            if freed > 0 {
                tracing::debug!(freed, "packet buffers freed");
            }
        }
    }

    /// Flush the aggregator and deliver what it emits before `deadline`; what misses the deadline stays
    /// in the retry queue (or goes to the fallback when that overflows).
    ///
    /// `deadline` is an `Instant`, or a movable [`Deadline`]: bringing that forward ends the delivery
    /// early with exact accounting (answers already on their way still count). End it that way, not by
    /// dropping this future: the forwarder would keep what it was delivering, but a flush collected from
    /// the aggregator and not yet handed to it (or being written in local mode) would be lost uncounted.
    pub async fn flush(&mut self, final_flush: bool, deadline: impl Into<Deadline>) -> FlushReport {
        self.flush_as(final_flush, false, deadline.into()).await
    }

    /// [`Engine::flush`]; `last` marks the last flush of the process (its self-telemetry cannot wait for
    /// a later flush, see [`SelfMetrics::collect_last`]).
    async fn flush_as(&mut self, final_flush: bool, last: bool, deadline: Deadline) -> FlushReport {
        let Some(mut flush) = self.collect(final_flush, &deadline).await else {
            return FlushReport::default();
        };
        drop_non_finite(&mut flush, &self.telemetry);
        // offpath's own counters ride along to Datadog (not in local mode, where stdout shows only
        // what the application sent).
        if let (Some(sm), Delivery::Intake { .. }) = (self.self_metrics.as_mut(), &self.delivery) {
            sm.set_host(self.host.hostname());
            let now = unix_now();
            flush.series.extend(if last {
                sm.collect_last(&self.telemetry, now, None)
            } else {
                sm.collect(&self.telemetry, now, None)
            });
        }
        flush.add_tags(&self.extra_tags);
        flush.add_tags(self.host.tags());
        let samples = flush.samples();
        match &mut self.delivery {
            Delivery::Local { fallback } => {
                if !flush.is_empty() {
                    fallback.write_flush(&flush).await;
                    fallback.flush(deadline.at()).await;
                }
                FlushReport {
                    payloads: usize::from(!flush.is_empty()),
                    samples,
                    queued_bytes: 0,
                }
            }
            Delivery::Intake { forwarder, .. } => {
                let payloads = match self.encoder.encode(&flush) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %Chain(&e), "cannot encode a flush; its points are dropped");
                        self.telemetry
                            .points
                            .drop_points(PointDrop::TooLarge, samples);
                        Vec::new()
                    }
                };
                let n = payloads.len();
                // Each destination retries what it queued, then takes the new payloads, side by side.
                forwarder.deliver(payloads, deadline).await;
                FlushReport {
                    payloads: n,
                    samples,
                    queued_bytes: forwarder.queued_bytes(),
                }
            }
        }
    }

    /// Stop listening, drain the socket queues, flush everything (open buckets included), deliver
    /// or fall back, all before `deadline`, whatever the sinks do: writes to stdout or CloudWatch get
    /// what is left of it, and what misses it is counted as `shutdown_deadline`. Logs the accounting
    /// summary once everything is counted.
    pub async fn shutdown(mut self, deadline: Instant) {
        self.health.set_shutting_down();
        self.health.set_listeners_up(false);
        if let Delivery::Local { fallback } = &mut self.delivery {
            fallback.set_deadline(deadline);
        }
        if let Some(task) = self.host_task.take() {
            task.abort();
        }
        if let Some(listeners) = self.listeners.take() {
            // Blocking join of the receive threads: they stop within their read timeout.
            let stop = tokio::task::spawn_blocking(move || listeners.stop());
            if tokio::time::timeout_at(deadline, stop).await.is_err() {
                tracing::warn!("the listeners did not stop before the shutdown deadline");
            }
        }
        // Leave a slice of the deadline for writing what was not delivered to the fallback.
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let deliver_by = now + left.mul_f64(0.7);
        self.flush_as(true, true, deliver_by.into()).await;
        if let Some(workers) = self.workers.take() {
            let join = tokio::task::spawn_blocking(move || workers.join());
            if tokio::time::timeout_at(deadline, join).await.is_err() {
                tracing::warn!("an aggregate worker did not stop before the shutdown deadline");
            }
        }
        match self.delivery {
            // Dropping the fallback counts what its sink has not written as shutdown_deadline.
            Delivery::Local { mut fallback } => fallback.flush(deadline).await,
            Delivery::Intake {
                mut forwarder,
                overflow,
                mut fallback_task,
                ..
            } => {
                let rest = forwarder.take_queued();
                if !rest.is_empty() {
                    tracing::info!(
                        payloads = rest.len(),
                        "shutdown: undelivered payloads go to the fallback"
                    );
                }
                for p in rest {
                    let (dest, samples) = (p.destination, p.samples);
                    if tokio::time::timeout_at(deadline, overflow.send(p))
                        .await
                        .map_or(true, |r| r.is_err())
                    {
                        self.telemetry
                            .drop_for(dest, PointDrop::ShutdownDeadline, samples);
                    }
                }
                drop(forwarder);
                drop(overflow);
                if let Some(task) = fallback_task.take() {
                    task.finish(deadline).await;
                }
            }
        }
        tracing::info!("{}", self.telemetry.summary());
    }
}

/// Take the values that overflowed `f64` out of a flush (they cannot travel: the intake would get ±inf,
/// a record `null`), count their samples as `non_finite` and say so once per flush.
fn drop_non_finite(flush: &mut Flush, telemetry: &Telemetry) {
    let gone = flush.retain_finite(false);
    if gone.values > 0 {
        telemetry
            .points
            .drop_points(PointDrop::NonFinite, gone.samples);
        tracing::warn!(
            values = gone.values,
            samples = gone.samples,
            metric = gone.example.as_deref().unwrap_or_default(),
            "dropped aggregated values that overflowed (a sum or rate beyond ±1.8e308, or a sample rate \
             so small that 1/rate is infinite); counted as non_finite"
        );
    }
}

/// Run the sidecar until `shutdown` resolves: periodic flushes of closed buckets, then a final flush
/// and delivery within `OFFPATH_SHUTDOWN_TIMEOUT`.
///
/// `ready` is called once the listeners are bound, with the UDP address and the status address.
///
/// # Errors
/// A [`PipelineError`] when the pipeline cannot start.
pub async fn run(
    config: Config,
    telemetry: Arc<Telemetry>,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(Option<SocketAddr>, Option<SocketAddr>),
) -> Result<(), PipelineError> {
    // The status address first: when it was set explicitly and is taken (a second offpath started
    // with the same settings), nothing else starts.
    let status_listener = match config.ops.status_addr {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(source) if config.ops.status_addr_set => {
                return Err(PipelineError::Status { addr, source });
            }
            Err(e) => {
                tracing::warn!(
                    "cannot bind the status endpoint to {addr}, the default: {}; continuing without \
                     /health and /status. Another offpath probably runs (`offpath health` shows which); \
                     give this one its own address with OFFPATH_STATUS_ADDR (for example \
                     127.0.0.1:{}), or the empty string to disable it",
                    Chain(&e),
                    addr.port().wrapping_add(1)
                );
                None
            }
        },
    };
    let mut engine = Engine::start(&config, Arc::clone(&telemetry)).await?;

    let (status_stop_tx, status_stop_rx) = oneshot::channel::<()>();
    let mut status_addr = None;
    let mut status_task = None;
    if let Some(listener) = status_listener {
        status_addr = listener.local_addr().ok();
        status_task = Some(tokio::spawn(crate::control::status::serve(
            listener,
            Arc::clone(&telemetry),
            engine.health(),
            async move {
                let _ = status_stop_rx.await;
            },
        )));
    }
    ready(engine.udp_addr(), status_addr);

    let period = config.ops.flush_interval;
    let grace = config.ops.shutdown_timeout;
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    // The shutdown deadline counts from the signal.
    let stop_by = loop {
        tokio::select! {
            () = &mut shutdown => break Instant::now() + grace,
            _ = ticker.tick() => {
                engine.trim_buffers();
                // Deliveries may take up to one period; the next tick waits for this one.
                let (deadline, cut) = Deadline::movable(Instant::now() + period.max(Duration::from_secs(1)));
                let flush = engine.flush(false, deadline);
                tokio::pin!(flush);
                tokio::select! {
                    report = &mut flush => tracing::debug!(?report, "flushed"),
                    () = &mut shutdown => {
                        // A signal during a slow delivery: it gets half the shutdown time instead of the
                        // rest of its period, then stops as at any deadline (what is left waits in the
                        // retry queue for the shutdown). Its future is not dropped, so an answer that
                        // arrives in time still counts.
                        let signalled = Instant::now();
                        cut.bring_forward(signalled + grace / 2);
                        let report = flush.await;
                        tracing::debug!(?report, "flushed, cut short by the signal");
                        break signalled + grace;
                    }
                }
            }
        }
    };
    tracing::info!("shutting down: draining listeners and flushing everything");
    engine.shutdown(stop_by).await;
    let _ = status_stop_tx.send(());
    if let Some(task) = status_task {
        let _ = task.await;
    }
    Ok(())
}
