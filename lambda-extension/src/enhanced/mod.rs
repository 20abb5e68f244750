//! Datadog's enhanced Lambda metrics (`aws.lambda.enhanced.*`, `DD_ENHANCED_METRICS`), computed from the
//! Extensions API and Telemetry API events the extension already receives.
//!
//! ```text
//!  lifecycle ─INVOKE / runtimeDone / report / initReport / end-invocation error / SHUTDOWN─> EnhancedMetrics
//!      ─snapshot (proc::Sampler, at INVOKE and runtimeDone only)─> state::Enhanced (pure) ─OwnPoint─>
//!      Engine::own_points (aggregated, counted, delivered or fallen back like any point)
//! ```
//! [`state`] says which metric comes from which event, with which unit and tags.

pub mod proc;
mod state;

use std::path::Path;
use std::time::{Duration, Instant};

use offpath::aggregate::{OwnPoint, OwnPoints};

pub use state::{Enhanced, LIBRARY_SENT, PREFIX, estimated_cost, price_per_gb_second};

use crate::telemetry::TelemetryEvent;
use proc::{Counters, Sampler, Usage};

/// The enhanced metrics of one sandbox: the state, the `/proc` sampler and where the points go.
#[derive(Debug)]
pub struct EnhancedMetrics {
    state: Enhanced,
    sampler: Option<Sampler>,
    sink: OwnPoints,
    /// When the sandbox started (the extension's start), for `proactive_initialization`.
    started: Instant,
    out: Vec<OwnPoint>,
    /// Thread CPU time spent here, and the invocations it was spent on (logged at shutdown).
    cpu: Duration,
    invocations: u64,
}

impl EnhancedMetrics {
    /// Metrics for a sandbox that started at `started`, on `architecture` (`x86_64`, `arm64`), sent to
    /// `sink`; with `proc_metrics`, snapshots of `proc_root` (`/proc`) and `tmp` (`/tmp`).
    pub fn new(
        sink: OwnPoints,
        started: Instant,
        architecture: &str,
        proc_metrics: bool,
        proc_root: &Path,
        tmp: &Path,
    ) -> Self {
        Self {
            state: Enhanced::new(proc_metrics, architecture),
            sampler: proc_metrics.then(|| Sampler::new(proc_root, tmp)),
            sink,
            started,
            out: Vec::with_capacity(32),
            cpu: Duration::ZERO,
            invocations: 0,
        }
    }

    /// `INVOKE` of `request_id`.
    pub fn invoke(&mut self, request_id: &str) {
        let t0 = thread_cpu();
        let (counters, usage) = match self.sampler.as_mut() {
            Some(s) => (s.counters(), s.usage()),
            None => (Counters::default(), Usage::default()),
        };
        let since_start = self.started.elapsed();
        self.state.on_invoke(
            request_id,
            unix_now(),
            since_start,
            counters,
            usage,
            &mut self.out,
        );
        self.invocations += 1;
        self.send(t0);
    }

    /// A Telemetry API event.
    pub fn telemetry(&mut self, event: &TelemetryEvent) {
        let t0 = thread_cpu();
        let now = unix_now();
        match event {
            TelemetryEvent::RuntimeDone(rd) => {
                let (end, usage, limits) = match self.sampler.as_mut() {
                    Some(s) => (s.counters(), s.usage(), s.limits()),
                    None => Default::default(),
                };
                self.state
                    .on_runtime_done(rd, now, &end, usage, &limits, &mut self.out);
            }
            TelemetryEvent::Report(r) => self.state.on_report(r, now, &mut self.out),
            TelemetryEvent::InitReport(ir) => self.state.on_init_report(ir, now, &mut self.out),
            TelemetryEvent::InitStart { .. } | TelemetryEvent::Start { .. } => {}
        }
        self.send(t0);
    }

    /// A Datadog library said the current invocation failed (`x-datadog-invocation-error: true`).
    pub fn invocation_error(&mut self) {
        let t0 = thread_cpu();
        self.state.on_invocation_error(unix_now(), &mut self.out);
        self.send(t0);
    }

    /// `SHUTDOWN`.
    pub fn shutdown(&mut self) {
        let t0 = thread_cpu();
        self.state.on_shutdown(unix_now(), &mut self.out);
        self.send(t0);
        tracing::debug!(
            invocations = self.invocations,
            cpu_us = self.cpu.as_micros() as u64,
            "enhanced metrics: CPU time spent"
        );
    }

    fn send(&mut self, t0: Option<Duration>) {
        if !self.out.is_empty() {
            self.sink.send(std::mem::take(&mut self.out));
        }
        if let (Some(t0), Some(t1)) = (t0, thread_cpu()) {
            self.cpu += t1.saturating_sub(t0);
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The calling thread's CPU time (user + system).
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}
