//! The extension's life: register, subscribe to telemetry, then answer `event/next` until `SHUTDOWN`.
//!
//! ```text
//! bind 127.0.0.1:8124 ─> register ─> load config (invalid: init/error, exit) ─┬─> start the pipeline ─┬─> loop on event/next
//! (libraries' endpoints)    (under its file name)                             └─> telemetry listener ─┘    INVOKE: flush per policy
//!                                                                                 + subscription           SHUTDOWN: final flush, exit
//! ```
//! The metrics pipeline sits behind [`Flusher`]. Every flush runs as its own task bounded by a
//! deadline, so a slow intake never holds `event/next` past the budget, and a pipeline that fails or
//! panics is logged once while the loop goes on answering the Runtime API: an extension must never
//! break its function. The loop ([`event_loop`]) also feeds the enhanced metrics
//! ([`crate::enhanced`]) with every event, and starts the flushes the Datadog libraries ask for
//! ([`crate::api`]) without making them wait. Every call to the Runtime API but `event/next` has a time
//! limit: a Runtime API that never answers `register` ends the extension with an error within 5 s.

mod event_loop;
mod slot;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use offpath::aggregate::OwnPoints;
use offpath::config::{Config, ConfigError, Deployment, LambdaConfig};
use offpath::errors::Chain;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::{self, ApiEvent, ApiServer, Endpoints};
use crate::enhanced::EnhancedMetrics;
use crate::extension::{self, ExtensionClient, ExtensionError, FatalError};
use crate::flush_policy::FlushPolicy;
use crate::tags::LambdaTags;
use crate::telemetry::{self, TelemetryEvent, TelemetryListener};
use event_loop::Lifecycle;
use slot::Pipeline;

/// A boxed error from the pipeline, whatever its stage.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Looks up an environment variable by name.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What a flush is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushKind {
    /// During the sandbox's life (after `runtimeDone`, at `INVOKE`, or on a timer in a long
    /// invocation). Emit every bucket, open ones included (the sandbox may freeze or die next), and
    /// deliver what can be delivered before the deadline; the rest waits in the retry queue.
    Invocation,
    /// At `SHUTDOWN`: emit everything, retry the queue, and write whatever is still undelivered at the
    /// deadline to the fallback (stdout) before returning. The process exits right after.
    Final,
}

/// How a flush ended.
#[derive(Debug)]
pub enum FlushOutcome {
    /// Everything flushed was delivered (or, for a final flush, delivered or written to the fallback).
    Complete,
    /// The deadline came first; undelivered payloads wait in the retry queue for the next flush.
    Deferred,
    /// The pipeline failed. The lifecycle logs the first failure and keeps answering the Runtime API.
    Failed(BoxError),
}

/// The metrics pipeline as the lifecycle sees it.
///
/// Each call runs in its own task, so a panic inside loses the pipeline, never the extension.
pub trait Flusher: Send + 'static {
    /// Flush per `kind`, returning no later than `deadline` (the lifecycle stops waiting shortly after).
    fn flush(
        &mut self,
        deadline: Instant,
        kind: FlushKind,
    ) -> impl Future<Output = FlushOutcome> + Send;

    /// Replace the Lambda tags added to every metric from now on. Called when tags are learned after
    /// start-up: the `runtime` at the first invocation, or the account from the invoked ARN.
    fn set_tags(&mut self, tags: Vec<String>);

    /// Where the enhanced metrics go (asked once, after start); `None`: they are not computed.
    fn own_points(&self) -> Option<OwnPoints> {
        None
    }
}

/// What the pipeline is started with.
#[derive(Debug, Clone)]
pub struct Startup {
    /// The validated configuration, loaded for Lambda, with the Lambda tags known at registration among
    /// its global tags.
    pub config: Config,
    /// The Lambda tags known at registration ([`LambdaTags::to_tags`]).
    pub tags: Vec<String>,
}

/// A fatal error: the extension cannot run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `AWS_LAMBDA_RUNTIME_API` is not set: not running inside Lambda.
    #[error("AWS_LAMBDA_RUNTIME_API is not set: offpath-lambda runs as a Lambda extension only")]
    NoRuntimeApi,
    /// Registration failed.
    #[error("cannot register with the Extensions API")]
    Register(#[source] ExtensionError),
    /// The configuration is invalid (reported through `init/error`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `event/next` kept failing (reported through `exit/error`).
    #[error("event/next failed")]
    NextEvent(#[source] ExtensionError),
}

/// Where the lifecycle gets its settings.
#[derive(Clone)]
pub struct Options {
    /// `host:port` of the Runtime API (`AWS_LAMBDA_RUNTIME_API`).
    pub runtime_api: String,
    /// The name to register under: the extension's file name ([`extension::name_from_path`]).
    pub name: String,
    /// Looks up an environment variable (configuration keys and the `AWS_*` variables for tags).
    pub env: EnvLookup,
    /// Where processes are listed, to find the runtime's `AWS_EXECUTION_ENV`, and read for the enhanced
    /// resource metrics (`/proc`).
    pub proc_root: PathBuf,
    /// OS release file naming custom runtimes (`/etc/os-release`).
    pub os_release: PathBuf,
    /// The function's scratch directory, measured for `tmp_used`/`tmp_max` (`/tmp`).
    pub tmp_dir: PathBuf,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("runtime_api", &self.runtime_api)
            .field("name", &self.name)
            .field("proc_root", &self.proc_root)
            .field("os_release", &self.os_release)
            .field("tmp_dir", &self.tmp_dir)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Settings for the Runtime API at `runtime_api`, with variables from `env` and the system's paths;
    /// registers as [`extension::EXTENSION_NAME`].
    pub fn new(runtime_api: impl Into<String>, env: EnvLookup) -> Self {
        Self {
            runtime_api: runtime_api.into(),
            name: extension::EXTENSION_NAME.to_owned(),
            env,
            proc_root: PathBuf::from("/proc"),
            os_release: PathBuf::from("/etc/os-release"),
            tmp_dir: PathBuf::from("/tmp"),
        }
    }

    /// Settings from the process environment; the name is the executable's file name.
    ///
    /// # Errors
    /// [`RunError::NoRuntimeApi`] when `AWS_LAMBDA_RUNTIME_API` is not set.
    pub fn from_env() -> Result<Self, RunError> {
        let runtime_api = std::env::var("AWS_LAMBDA_RUNTIME_API")
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(RunError::NoRuntimeApi)?;
        let argv0 = std::env::args_os().next().map(PathBuf::from);
        Ok(Self {
            name: extension::name_from_path(argv0.as_deref()),
            ..Self::new(runtime_api, Arc::new(|k| std::env::var(k).ok()))
        })
    }
}

/// How the extension ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The `SHUTDOWN` reason (`SPINDOWN`, `TIMEOUT`, `FAILURE`).
    pub reason: String,
}

/// Extra time given to a flush past its own deadline before the lifecycle stops waiting for it.
const FLUSH_GRACE: Duration = Duration::from_millis(50);
/// Extra time given to the final flush to write its fallback records.
const FINAL_GRACE: Duration = Duration::from_millis(250);
/// `runtimeDone` events remembered when they arrive before the lifecycle waits for them.
const EARLY_DONE: usize = 16;
/// Longest wait for a `runtimeDone` when the invocation has no deadline (Lambda's maximum timeout).
const MAX_INVOCATION: Duration = Duration::from_secs(15 * 60);
/// Attempts at `event/next` before giving up.
const NEXT_ATTEMPTS: u32 = 3;

/// Run the extension until `SHUTDOWN`.
///
/// Binds the Datadog libraries' endpoints first (they must answer before the runtime starts, which
/// Lambda does once every extension has registered), registers, then loads the configuration (an invalid
/// one is reported through `init/error`), then starts the pipeline with `start_pipeline` while the
/// telemetry listener starts and subscribes. A pipeline that fails to start is logged and the loop runs
/// without it.
///
/// # Errors
/// [`RunError`] when the extension cannot run at all; the caller exits non-zero.
pub async fn run<F, S, Fut>(opts: Options, start_pipeline: S) -> Result<Exit, RunError>
where
    F: Flusher,
    S: FnOnce(Startup) -> Fut,
    Fut: Future<Output = Result<F, BoxError>>,
{
    let started = std::time::Instant::now();
    let api = serve_local(
        &opts,
        "OFFPATH_LAMBDA_API_PORT",
        api::DEFAULT_PORT,
        Endpoints::Libraries,
    )
    .await;
    let traces = serve_local(
        &opts,
        "OFFPATH_LAMBDA_TRACE_PORT",
        api::DEFAULT_TRACE_PORT,
        Endpoints::Traces,
    )
    .await;
    let (client, registration) = ExtensionClient::register(&opts.runtime_api, &opts.name)
        .await
        .map_err(RunError::Register)?;
    tracing::debug!(function = %registration.function_name, name = %opts.name, "registered with the Extensions API");

    let config = match load_config(&opts) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration; reporting init/error");
            let fatal = FatalError {
                error_type: "Fatal.ConfigInvalid",
                message: e.to_string(),
            };
            if let Err(report) = client.init_error(&fatal).await {
                tracing::warn!(error = %report, "init/error could not be reported");
            }
            return Err(e.into());
        }
    };

    for w in config.forward.warnings() {
        tracing::warn!("{w}");
    }

    let env = Arc::clone(&opts.env);
    let mut tags = LambdaTags::from_registration(&registration, |k| env(k), std::env::consts::ARCH);
    let startup = Startup {
        config: config.clone().with_global_tags(tags.to_tags()),
        tags: tags.to_tags(),
    };
    let (pipeline, telemetry) = tokio::join!(
        start_pipeline(startup),
        start_telemetry(&client, &config.lambda)
    );
    let (pipeline, own_points) = match pipeline {
        Ok(f) => {
            let own = f.own_points();
            (Pipeline::new(f), own)
        }
        Err(e) => {
            tracing::error!(error = %Chain(&*e), "the metrics pipeline failed to start; \
                the extension keeps answering the Runtime API without shipping metrics");
            (Pipeline::down(), None)
        }
    };
    let lambda = &config.lambda;
    let enhanced = own_points.filter(|_| lambda.enhanced_metrics).map(|sink| {
        EnhancedMetrics::new(
            sink,
            started,
            tags.architecture.as_deref().unwrap_or_default(),
            lambda.proc_enhanced_metrics,
            &opts.proc_root,
            &opts.tmp_dir,
        )
    });

    let (api_server, api_events) = match api {
        Some((server, events)) => (Some(server), Some(events)),
        None => (None, None),
    };
    let mut lc = Lifecycle {
        client,
        pipeline,
        telemetry,
        api: api_events,
        enhanced,
        early_done: VecDeque::with_capacity(EARLY_DONE),
        policy: FlushPolicy::new(config.lambda.flush_strategy),
        budget: config.lambda.flush_budget,
        first_invoke: true,
        opts,
        invocation_deadline: None,
        flush_requested: false,
        unreported: None,
    };
    let exit = lc.event_loop(&mut tags).await;
    if let Some((server, _)) = &traces {
        let dropped = server
            .stats()
            .traces_dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            tracing::info!(
                dropped,
                "trace payloads received from Datadog tracers and dropped"
            );
        }
    }
    drop((api_server, traces));
    exit
}

/// Bind and serve, on 127.0.0.1, the Datadog libraries' endpoints (`OFFPATH_LAMBDA_API_PORT`) or the
/// trace intake (`OFFPATH_LAMBDA_TRACE_PORT`). The port is read here because it is needed before registering;
/// an invalid value is reported with the rest of the configuration. Without them the extension still runs:
/// the libraries then fall back to their own delivery.
async fn serve_local(
    opts: &Options,
    key: &str,
    default_port: u16,
    endpoints: Endpoints,
) -> Option<(ApiServer, mpsc::Receiver<ApiEvent>)> {
    let port = (opts.env)(key)
        .and_then(|v| v.trim().parse::<u16>().ok())
        .unwrap_or(default_port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => ApiServer::start(listener, endpoints),
        Err(e) => Err(e),
    };
    match started {
        Ok((server, events)) => {
            let what = match endpoints {
                Endpoints::Libraries => "listening for the Datadog libraries",
                Endpoints::Traces => "listening for Datadog tracers (their traces are dropped)",
            };
            tracing::debug!(addr = %server.local_addr(), "{what}");
            Some((server, events))
        }
        Err(e) => {
            tracing::warn!(%addr, error = %Chain(&e), "cannot listen on {key}; the Datadog libraries \
                and tracers will not reach this extension there");
            None
        }
    }
}

/// The configuration for Lambda: its defaults (self-telemetry off, one aggregate worker, stdout
/// fallback, distributions, no idle connections) come with [`Deployment::Lambda`]; explicit settings win.
fn load_config(opts: &Options) -> Result<Config, ConfigError> {
    let env = Arc::clone(&opts.env);
    Config::load_for(Deployment::Lambda, &move |k: &str| env(k))
}

/// The telemetry listener and its event stream, when the subscription was accepted.
struct Telemetry {
    _listener: TelemetryListener,
    events: mpsc::Receiver<TelemetryEvent>,
}

async fn start_telemetry(client: &ExtensionClient, cfg: &LambdaConfig) -> Option<Telemetry> {
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], cfg.telemetry_port));
    let (listener, events) = match TelemetryListener::start(addr).await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "no telemetry listener; flushing at the next event instead of after runtimeDone");
            return None;
        }
    };
    let destination = format!(
        "http://{}:{}",
        cfg.telemetry_host,
        listener.local_addr().port()
    );
    match telemetry::subscribe(client, &destination).await {
        Ok(()) => {
            tracing::debug!(%destination, "subscribed to platform telemetry");
            Some(Telemetry {
                _listener: listener,
                events,
            })
        }
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "the Telemetry API is unavailable; flushing at the next event instead of after runtimeDone");
            None
        }
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&'static str, &'static str)]) -> Options {
        let pairs = pairs.to_vec();
        Options {
            env: Arc::new(move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }),
            ..Options::new("127.0.0.1:9001", Arc::new(|_| None))
        }
    }

    #[test]
    fn self_telemetry_is_off_by_default_in_lambda_and_an_explicit_setting_wins() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[("OFFPATH_SELF_TELEMETRY", "")], false),
            (&[("OFFPATH_SELF_TELEMETRY", "true")], true),
            (&[("OFFPATH_SELF_TELEMETRY", "false")], false),
        ];
        for (env, want) in cases {
            let config = load_config(&options(env)).unwrap();
            assert_eq!(config.ops.self_telemetry, *want, "{env:?}");
        }
    }
}
