//! The event loop: `event/next` until `SHUTDOWN`, with the flushes the policy asks for, the telemetry events,
//! the Datadog libraries' calls and the enhanced metrics in between.

use std::collections::VecDeque;
use std::time::Duration;

use offpath::errors::Chain;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::slot::Pipeline;
use super::{
    EARLY_DONE, FINAL_GRACE, FlushKind, Flusher, MAX_INVOCATION, NEXT_ATTEMPTS, Options, RunError,
    Telemetry, epoch_ms, sleep_until_opt,
};
use crate::api::ApiEvent;
use crate::enhanced::EnhancedMetrics;
use crate::extension::{Event, ExtensionClient, FatalError};
use crate::flush_policy::{self, FlushPolicy};
use crate::lifecycle::Exit;
use crate::tags::{self, LambdaTags};
use crate::telemetry::TelemetryEvent;

/// Longest wait at `SHUTDOWN` for the report of the last invocation (its enhanced metrics), when it has not
/// come yet; Lambda sends telemetry at most 25 ms after the event.
const REPORT_WAIT: Duration = Duration::from_millis(100);

pub(super) struct Lifecycle<F> {
    pub(super) client: ExtensionClient,
    pub(super) pipeline: Pipeline<F>,
    pub(super) telemetry: Option<Telemetry>,
    /// The Datadog libraries' calls (`/lambda/*` on 127.0.0.1:8124).
    pub(super) api: Option<mpsc::Receiver<ApiEvent>>,
    pub(super) enhanced: Option<EnhancedMetrics>,
    /// `runtimeDone` request ids that arrived while nobody waited for them (bounded).
    pub(super) early_done: VecDeque<String>,
    pub(super) policy: FlushPolicy,
    pub(super) budget: Duration,
    pub(super) first_invoke: bool,
    pub(super) opts: Options,
    /// The deadline of the invocation in progress (a library's flush request is bounded by it).
    pub(super) invocation_deadline: Option<Instant>,
    /// A library asked for a flush while one was running: start one when it ends.
    pub(super) flush_requested: bool,
    /// The last invocation's request id, until its report is processed.
    pub(super) unreported: Option<String>,
}

impl<F: Flusher> Lifecycle<F> {
    pub(super) async fn event_loop(&mut self, tags: &mut LambdaTags) -> Result<Exit, RunError> {
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

    /// Call `event/next` (retried), serving telemetry, the libraries' calls and a finished flush while it
    /// blocks.
    async fn next_event(&mut self) -> Result<Event, RunError> {
        let next = next_with_retries(self.client.clone());
        tokio::pin!(next);
        loop {
            tokio::select! {
                biased;
                event = &mut next => return event,
                Some(event) = recv(&mut self.api) => self.on_api(event),
                Some(event) = recv_telemetry(&mut self.telemetry) => {
                    if let Some(id) = self.on_telemetry(&event) {
                        self.remember_done(id);
                    }
                }
                () = self.pipeline.join() => self.flush_if_requested(),
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
        self.invocation_deadline = invocation_deadline;
        // First the INVOKE, then what arrived meanwhile (this invocation's runtimeDone may be among it).
        if let Some(enhanced) = self.enhanced.as_mut() {
            enhanced.invoke(request_id);
            self.unreported = Some(request_id.to_owned());
        }
        self.drain_events();
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
            if self.telemetry.is_none() {
                return false;
            }
            tokio::select! {
                event = recv_telemetry(&mut self.telemetry) => match event {
                    Some(event) => {
                        if let Some(id) = self.on_telemetry(&event) {
                            if id == request_id {
                                tracing::debug!(%id, "runtime done");
                                // What the library said about this invocation goes in its flush.
                                self.drain_api();
                                return true;
                            }
                            self.remember_done(id);
                        }
                    }
                    None => {
                        tracing::warn!("the telemetry listener stopped; flushing at the next event from now on");
                        self.telemetry = None;
                        return false;
                    }
                },
                Some(event) = recv(&mut self.api) => self.on_api(event),
                () = sleep_until_opt(next_tick) => {
                    let now = Instant::now();
                    self.start_flush(now, invocation_deadline);
                    next_tick = every.map(|e| now + e);
                }
                () = self.pipeline.join() => self.flush_if_requested(),
                () = tokio::time::sleep_until(give_up) => {
                    tracing::debug!(%request_id, "no runtimeDone before the invocation deadline");
                    return false;
                }
            }
        }
    }

    /// One telemetry event: the enhanced metrics see every one; returns the request id of a `runtimeDone`.
    fn on_telemetry(&mut self, event: &TelemetryEvent) -> Option<String> {
        if let Some(enhanced) = self.enhanced.as_mut() {
            enhanced.telemetry(event);
        }
        match event {
            TelemetryEvent::RuntimeDone(rd) => {
                tracing::debug!(request_id = %rd.request_id, status = %rd.status, "runtimeDone");
                Some(rd.request_id.clone())
            }
            TelemetryEvent::Report(r) => {
                if self.unreported.as_deref() == Some(r.request_id.as_str()) {
                    self.unreported = None;
                }
                None
            }
            _ => None,
        }
    }

    /// One call from a Datadog library.
    fn on_api(&mut self, event: ApiEvent) {
        match event {
            ApiEvent::Flush => {
                self.pipeline.reap();
                if self.pipeline.is_down() {
                    return;
                }
                if !self.start_flush(Instant::now(), self.invocation_deadline) {
                    // Either a flush runs (then another follows it) or the invocation has no time left.
                    self.flush_requested = !self.pipeline.is_idle();
                }
            }
            ApiEvent::InvocationEnd { error } => {
                if let (true, Some(enhanced)) = (error, self.enhanced.as_mut()) {
                    enhanced.invocation_error();
                }
            }
        }
    }

    /// A flush just ended: start the one a library asked for meanwhile.
    fn flush_if_requested(&mut self) {
        if std::mem::take(&mut self.flush_requested) && self.pipeline.is_idle() {
            self.start_flush(Instant::now(), self.invocation_deadline);
        }
    }

    fn remember_done(&mut self, request_id: String) {
        if self.early_done.len() == EARLY_DONE {
            self.early_done.pop_front();
        }
        self.early_done.push_back(request_id);
    }

    /// Take queued telemetry events and library calls without waiting.
    fn drain_events(&mut self) {
        let mut events = Vec::new();
        if let Some(telemetry) = self.telemetry.as_mut() {
            while let Ok(event) = telemetry.events.try_recv() {
                events.push(event);
            }
        }
        for event in &events {
            if let Some(id) = self.on_telemetry(event) {
                self.remember_done(id);
            }
        }
        self.drain_api();
    }

    fn drain_api(&mut self) {
        while let Some(event) = self.api.as_mut().and_then(|api| api.try_recv().ok()) {
            self.on_api(event);
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
        self.drain_events();
        if self.enhanced.is_some() {
            self.wait_last_report((now + REPORT_WAIT).min(deadline))
                .await;
            if let Some(enhanced) = self.enhanced.as_mut() {
                enhanced.shutdown();
            }
        }
        self.pipeline.settle_until(deadline).await;
        if self.pipeline.start(deadline, FlushKind::Final) {
            self.pipeline.settle_until(deadline + FINAL_GRACE).await;
        }
    }

    /// Wait until `until` at the latest for the report of the last invocation.
    async fn wait_last_report(&mut self, until: Instant) {
        while self.unreported.is_some() {
            let event = tokio::time::timeout_at(until, recv_telemetry(&mut self.telemetry)).await;
            match event {
                Ok(Some(event)) => {
                    self.on_telemetry(&event);
                }
                Ok(None) | Err(_) => return,
            }
        }
    }
}

/// `event/next`, retried; after the last failure, reported through `exit/error`.
async fn next_with_retries(client: ExtensionClient) -> Result<Event, RunError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.next_event().await {
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
                if let Err(report) = client.exit_error(&fatal).await {
                    tracing::debug!(error = %report, "exit/error could not be reported");
                }
                return Err(RunError::NextEvent(e));
            }
        }
    }
}

/// The next library call; pending forever without the endpoint.
async fn recv(api: &mut Option<mpsc::Receiver<ApiEvent>>) -> Option<ApiEvent> {
    match api {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next telemetry event (`None`: the listener stopped); pending forever without telemetry.
async fn recv_telemetry(telemetry: &mut Option<Telemetry>) -> Option<TelemetryEvent> {
    match telemetry {
        Some(t) => t.events.recv().await,
        None => std::future::pending().await,
    }
}
