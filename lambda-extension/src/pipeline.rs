//! The metrics pipeline inside Lambda: offpath's [`Engine`] behind the lifecycle's [`Flusher`].
//!
//! ```text
//!  handler ─UDP 127.0.0.1:8125─> Engine (listeners, aggregate worker, encoder, forwarder, fallback)
//!  lifecycle ─Flusher::flush(Invocation)─> Engine::flush(every bucket, open ones included)
//!            ─Flusher::flush(Final)──────> Engine::shutdown (deliver, rest to stdout records)
//! ```
//! In Lambda every flush emits open buckets too: the sandbox may freeze or be reclaimed right after.
//! The Lambda tags known at registration become global tags; those learned later (the `runtime`, at
//! the first invocation) are added to everything flushed from then on ([`Engine::set_extra_tags`]).
//! `OFFPATH_LAMBDA_METRICS` selects the type mapping (distributions by default). With
//! `DD_ENHANCED_METRICS` the enhanced metrics enter through [`Engine::own_points`], and the
//! `aws.lambda.enhanced.invocations` and `.errors` lines Datadog's libraries send are dropped (counted as
//! `own_metric`): offpath counts both itself, once per request id.

use std::net::SocketAddr;
use std::sync::Arc;

use offpath::aggregate::OwnPoints;
use offpath::pipeline::{Engine, PipelineError};
use offpath::telemetry::Telemetry;
use tokio::time::Instant;

use crate::enhanced;
use crate::lifecycle::{FlushKind, FlushOutcome, Flusher, Startup};

/// The Lambda pipeline: an [`Engine`] until the final flush shuts it down.
#[derive(Debug)]
pub struct LambdaPipeline {
    engine: Option<Engine>,
    telemetry: Arc<Telemetry>,
    udp_addr: Option<SocketAddr>,
    /// Tags learned after start-up, added by the engine at every flush (see [`Flusher::set_tags`]).
    late_tags: Vec<String>,
    start_tags: Vec<String>,
}

impl LambdaPipeline {
    /// Start the engine with the configuration loaded for Lambda (its mapping, its defaults, the Lambda
    /// tags among the global tags).
    ///
    /// # Errors
    /// A [`PipelineError`] when a listener cannot bind (`DD_DOGSTATSD_PORT` in use), the intake
    /// client or the fallback cannot be built.
    pub async fn start(startup: Startup) -> Result<Self, PipelineError> {
        let mut config = startup.config;
        if config.lambda.enhanced_metrics {
            config
                .aggregate
                .own_names
                .extend(enhanced::LIBRARY_SENT.map(str::to_owned));
        }
        let telemetry = Arc::new(Telemetry::default());
        let engine = Engine::start(&config, Arc::clone(&telemetry)).await?;
        Ok(Self {
            udp_addr: engine.udp_addr(),
            engine: Some(engine),
            telemetry,
            late_tags: Vec::new(),
            start_tags: startup.tags,
        })
    }

    /// The pipeline's counters.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Tags learned after start-up, added to everything flushed since.
    pub fn late_tags(&self) -> &[String] {
        &self.late_tags
    }

    /// The DogStatsD UDP address, when UDP is enabled.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }
}

impl Flusher for LambdaPipeline {
    async fn flush(&mut self, deadline: Instant, kind: FlushKind) -> FlushOutcome {
        match kind {
            FlushKind::Invocation => {
                let Some(engine) = self.engine.as_mut() else {
                    return FlushOutcome::Failed("the pipeline was already shut down".into());
                };
                let report = engine.flush(true, deadline).await;
                tracing::debug!(?report, "flushed");
                if report.queued_bytes > 0 {
                    FlushOutcome::Deferred
                } else {
                    FlushOutcome::Complete
                }
            }
            FlushKind::Final => match self.engine.take() {
                Some(engine) => {
                    engine.shutdown(deadline).await;
                    FlushOutcome::Complete
                }
                None => FlushOutcome::Complete,
            },
        }
    }

    fn own_points(&self) -> Option<OwnPoints> {
        self.engine.as_ref().and_then(Engine::own_points)
    }

    fn set_tags(&mut self, tags: Vec<String>) {
        let late: Vec<String> = tags
            .into_iter()
            .filter(|t| !self.start_tags.contains(t))
            .collect();
        if late != self.late_tags {
            tracing::debug!(tags = ?late, "Lambda tags learned after start-up");
            if let Some(engine) = self.engine.as_mut() {
                engine.set_extra_tags(late.clone());
            }
            self.late_tags = late;
        }
    }
}
