//! The extension's life: register, subscribe to telemetry, then answer `event/next` until `SHUTDOWN`.
//!
//! ```text
//! register ─> load config (invalid: init/error, exit) ─┬─> start the pipeline  ─┬─> loop on event/next
//!                                                      └─> telemetry listener ──┘     INVOKE: flush per policy
//!                                                          + subscription              SHUTDOWN: final flush, exit
//! ```
//! The metrics pipeline sits behind [`Flusher`]. Every flush runs as its own task bounded by a
//! deadline, so a slow intake never holds `event/next` past the budget, and a pipeline that fails or
//! panics is logged once while the loop goes on answering the Runtime API: an extension must never
//! break its function.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use offpath::config::{Config, ConfigError, Deployment, LambdaConfig};
use offpath::errors::Chain;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use crate::extension::{EXTENSION_NAME, Event, ExtensionClient, ExtensionError, FatalError};
use crate::flush_policy::{self, FlushPolicy};
use crate::tags::{self, LambdaTags};
use crate::telemetry::{self, TelemetryEvent, TelemetryListener};

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
    /// Looks up an environment variable (configuration keys and the `AWS_*` variables for tags).
    pub env: EnvLookup,
    /// Where processes are listed, to find the runtime's `AWS_EXECUTION_ENV` (`/proc`).
    pub proc_root: PathBuf,
    /// OS release file naming custom runtimes (`/etc/os-release`).
    pub os_release: PathBuf,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("runtime_api", &self.runtime_api)
            .field("proc_root", &self.proc_root)
            .field("os_release", &self.os_release)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Settings from the process environment.
    ///
    /// # Errors
    /// [`RunError::NoRuntimeApi`] when `AWS_LAMBDA_RUNTIME_API` is not set.
    pub fn from_env() -> Result<Self, RunError> {
        let runtime_api = std::env::var("AWS_LAMBDA_RUNTIME_API")
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(RunError::NoRuntimeApi)?;
        Ok(Self {
            runtime_api,
            env: Arc::new(|k| std::env::var(k).ok()),
            proc_root: PathBuf::from("/proc"),
            os_release: PathBuf::from("/etc/os-release"),
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
/// Registers first, then loads the configuration (an invalid one is reported through `init/error`),
/// then starts the pipeline with `start_pipeline` while the telemetry listener starts and subscribes.
/// A pipeline that fails to start is logged and the loop runs without it.
///
/// # Errors
/// [`RunError`] when the extension cannot run at all; the caller exits non-zero.
pub async fn run<F, S, Fut>(opts: Options, start_pipeline: S) -> Result<Exit, RunError>
where
    F: Flusher,
    S: FnOnce(Startup) -> Fut,
    Fut: Future<Output = Result<F, BoxError>>,
{
    let (client, registration) = ExtensionClient::register(&opts.runtime_api, EXTENSION_NAME)
        .await
        .map_err(RunError::Register)?;
    tracing::debug!(function = %registration.function_name, "registered with the Extensions API");

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
    let pipeline = match pipeline {
        Ok(f) => Pipeline::new(f),
        Err(e) => {
            tracing::error!(error = %Chain(&*e), "the metrics pipeline failed to start; \
                the extension keeps answering the Runtime API without shipping metrics");
            Pipeline::down()
        }
    };

    let mut lc = Lifecycle {
        client,
        pipeline,
        telemetry,
        early_done: VecDeque::with_capacity(EARLY_DONE),
        policy: FlushPolicy::new(config.lambda.flush_strategy),
        budget: config.lambda.flush_budget,
        first_invoke: true,
        opts,
    };
    lc.event_loop(&mut tags).await
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

struct Lifecycle<F> {
    client: ExtensionClient,
    pipeline: Pipeline<F>,
    telemetry: Option<Telemetry>,
    /// `runtimeDone` request ids that arrived while nobody waited for them (bounded).
    early_done: VecDeque<String>,
    policy: FlushPolicy,
    budget: Duration,
    first_invoke: bool,
    opts: Options,
}

impl<F: Flusher> Lifecycle<F> {
    async fn event_loop(&mut self, tags: &mut LambdaTags) -> Result<Exit, RunError> {
        loop {
            match self.next_event().await? {
                Event::Invoke {
                    request_id,
                    deadline_ms,
                    invoked_function_arn,
                } => {
                    self.learn_tags(tags, &invoked_function_arn);
                    self.invocation(&request_id, deadline_ms).await;
                }
                Event::Shutdown {
                    reason,
                    deadline_ms,
                } => {
                    self.shutdown(&reason, deadline_ms).await;
                    return Ok(Exit { reason });
                }
                Event::Other(kind) => {
                    tracing::debug!(%kind, "ignoring an event this extension did not register for");
                }
            }
        }
    }

    async fn next_event(&mut self) -> Result<Event, RunError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.client.next_event().await {
                Ok(event) => return Ok(event),
                Err(e) if attempt < NEXT_ATTEMPTS => {
                    tracing::warn!(error = %Chain(&e), attempt, "event/next failed; retrying");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                }
                Err(e) => {
                    tracing::error!(error = %Chain(&e), "event/next keeps failing; reporting exit/error");
                    let fatal = FatalError {
                        error_type: "Fatal.EventNextFailed",
                        message: Chain(&e).to_string(),
                    };
                    if let Err(report) = self.client.exit_error(&fatal).await {
                        tracing::debug!(error = %report, "exit/error could not be reported");
                    }
                    return Err(RunError::NextEvent(e));
                }
            }
        }
    }

    fn learn_tags(&mut self, tags: &mut LambdaTags, invoked_function_arn: &str) {
        let mut learned = tags.learn_from_arn(invoked_function_arn);
        if std::mem::take(&mut self.first_invoke) {
            // The runtime process exists from the first invocation on (it starts after extensions).
            if let Some(runtime) =
                tags::resolve_runtime(&self.opts.proc_root, &self.opts.os_release)
            {
                learned |= tags.set_runtime(&runtime);
            }
        }
        if learned {
            self.pipeline.set_tags(tags.to_tags());
        }
    }

    /// Handle one `INVOKE`: flush per policy, and return when `event/next` may be called.
    async fn invocation(&mut self, request_id: &str, deadline_ms: u64) {
        // Re-read both clocks: the process may have been frozen for minutes.
        let now = Instant::now();
        let invocation_deadline =
            flush_policy::deadline_instant(deadline_ms, epoch_ms(), now.into_std())
                .map(Instant::from_std);
        self.drain_telemetry();
        self.pipeline.reap();
        if self.pipeline.is_down() {
            // Nothing to flush: answer event/next at once, never wait for runtimeDone.
            return;
        }

        let plan = self
            .policy
            .on_invoke(now.into_std(), self.telemetry.is_some());
        if plan.flush_at_start {
            self.start_flush(now, invocation_deadline);
        }
        if plan.flush_at_end && self.telemetry.is_some() {
            let done = self
                .wait_runtime_done(request_id, invocation_deadline, plan.flush_every)
                .await;
            self.pipeline.settle().await;
            if done {
                let now = Instant::now();
                if self.start_flush(now, invocation_deadline) {
                    self.pipeline.settle().await;
                }
            }
        }
        if plan.settle_before_next {
            self.pipeline.settle().await;
        }
    }

    /// Start an invocation flush bounded by the budget and the invocation deadline.
    fn start_flush(&mut self, now: Instant, invocation_deadline: Option<Instant>) -> bool {
        let Some(deadline) = flush_policy::invocation_flush_deadline(
            now.into_std(),
            self.budget,
            invocation_deadline.map(Instant::into_std),
        ) else {
            return false;
        };
        let started = self
            .pipeline
            .start(Instant::from_std(deadline), FlushKind::Invocation);
        if started {
            self.policy.flushed(now.into_std());
        }
        started
    }

    /// Wait for `runtimeDone` of `request_id`; flush every `every` meanwhile. False when the
    /// invocation deadline came first or telemetry stopped.
    async fn wait_runtime_done(
        &mut self,
        request_id: &str,
        invocation_deadline: Option<Instant>,
        every: Option<Duration>,
    ) -> bool {
        if let Some(i) = self.early_done.iter().position(|id| id == request_id) {
            self.early_done.remove(i);
            return true;
        }
        let give_up = invocation_deadline.unwrap_or_else(|| Instant::now() + MAX_INVOCATION);
        let mut next_tick = every.map(|e| Instant::now() + e);
        loop {
            let Some(telemetry) = self.telemetry.as_mut() else {
                return false;
            };
            tokio::select! {
                event = telemetry.events.recv() => match event {
                    Some(TelemetryEvent::RuntimeDone { request_id: id, status }) => {
                        if id == request_id {
                            tracing::debug!(%id, %status, "runtime done");
                            return true;
                        }
                        self.remember_done(id);
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!("the telemetry listener stopped; flushing at the next event from now on");
                        self.telemetry = None;
                        return false;
                    }
                },
                () = sleep_until_opt(next_tick) => {
                    let now = Instant::now();
                    self.start_flush(now, invocation_deadline);
                    next_tick = every.map(|e| now + e);
                }
                () = self.pipeline.join() => {}
                () = tokio::time::sleep_until(give_up) => {
                    tracing::debug!(%request_id, "no runtimeDone before the invocation deadline");
                    return false;
                }
            }
        }
    }

    fn remember_done(&mut self, request_id: String) {
        if self.early_done.len() == EARLY_DONE {
            self.early_done.pop_front();
        }
        self.early_done.push_back(request_id);
    }

    /// Take queued telemetry events without waiting, remembering `runtimeDone` ids.
    fn drain_telemetry(&mut self) {
        let mut done = Vec::new();
        if let Some(telemetry) = self.telemetry.as_mut() {
            while let Ok(event) = telemetry.events.try_recv() {
                if let TelemetryEvent::RuntimeDone { request_id, .. } = event {
                    done.push(request_id);
                }
            }
        }
        for id in done {
            self.remember_done(id);
        }
    }

    /// The final flush, bounded by the shutdown deadline minus a safety margin.
    async fn shutdown(&mut self, reason: &str, deadline_ms: u64) {
        let now = Instant::now();
        let shutdown_deadline =
            flush_policy::deadline_instant(deadline_ms, epoch_ms(), now.into_std());
        let deadline = Instant::from_std(flush_policy::shutdown_flush_deadline(
            now.into_std(),
            shutdown_deadline,
        ));
        tracing::debug!(%reason, budget_ms = (deadline - now).as_millis(), "shutdown: final flush");
        self.pipeline.settle_until(deadline).await;
        if self.pipeline.start(deadline, FlushKind::Final) {
            self.pipeline.settle_until(deadline + FINAL_GRACE).await;
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

type FlushTask<F> = JoinHandle<(F, FlushOutcome)>;

enum Slot<F> {
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
struct Pipeline<F> {
    slot: Slot<F>,
    /// Tags to hand over once the running flush gives the pipeline back.
    pending_tags: Option<Vec<String>>,
    failure_logged: bool,
    overrun_logged: bool,
}

impl<F: Flusher> Pipeline<F> {
    fn new(flusher: F) -> Self {
        Self::with_slot(Slot::Idle(flusher))
    }

    fn down() -> Self {
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

    fn is_down(&self) -> bool {
        matches!(self.slot, Slot::Down)
    }

    fn set_tags(&mut self, tags: Vec<String>) {
        match &mut self.slot {
            Slot::Idle(f) => f.set_tags(tags),
            Slot::Flushing { .. } => self.pending_tags = Some(tags),
            Slot::Down => {}
        }
    }

    /// Start a flush unless one is running or the pipeline is down.
    fn start(&mut self, deadline: Instant, kind: FlushKind) -> bool {
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
    async fn settle(&mut self) {
        if let Slot::Flushing { deadline, .. } = &self.slot {
            let until = *deadline + FLUSH_GRACE;
            self.settle_until(until).await;
        }
    }

    /// Wait for a running flush until `until` at the latest.
    async fn settle_until(&mut self, until: Instant) {
        if !matches!(self.slot, Slot::Flushing { .. }) {
            return;
        }
        if tokio::time::timeout_at(until, self.join()).await.is_err() && !self.overrun_logged {
            self.overrun_logged = true;
            tracing::warn!("a flush overran its deadline; not waiting for it");
        }
    }

    /// Take the result of a finished flush without waiting.
    fn reap(&mut self) {
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
    async fn join(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&'static str, &'static str)]) -> Options {
        let pairs = pairs.to_vec();
        Options {
            runtime_api: "127.0.0.1:9001".into(),
            env: Arc::new(move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }),
            proc_root: PathBuf::from("/nonexistent"),
            os_release: PathBuf::from("/nonexistent"),
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
