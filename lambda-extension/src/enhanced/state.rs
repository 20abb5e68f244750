//! What the enhanced metrics are, from the lifecycle's events: pure state, times and snapshots passed in.
//!
//! | event | metrics (`aws.lambda.enhanced.` + name, all distributions) |
//! | --- | --- |
//! | `INVOKE` | `invocations` (1) |
//! | `platform.runtimeDone` | `runtime_duration` (ms), `produced_bytes`; `errors` (status not `success`), `timeouts` (`timeout`), `out_of_memory` (`Runtime.OutOfMemory`) |
//! | | from the snapshots at `INVOKE` and now: `cpu_user_time`, `cpu_system_time`, `cpu_total_time` (ms), `cpu_total_utilization_pct`, `cpu_total_utilization` (cores), `num_cores`, `cpu_max_utilization`, `cpu_min_utilization` (%), `rx_bytes`, `tx_bytes`, `total_network`, `tmp_used`, `tmp_max`, `tmp_free` (bytes), `fd_use`, `fd_max`, `threads_use`, `threads_max` |
//! | `platform.report` | `duration`, `billed_duration` (s), `max_memory_used`, `memorysize` (MB), `post_runtime_duration` (ms), `estimated_cost` (USD); `out_of_memory` when max memory used = memory size |
//! | `platform.initReport` (else the first report's `initDurationMs`) | `init_duration` (s), tagged `init_type` |
//! | `/lambda/end-invocation` with `x-datadog-invocation-error: true` | `errors` |
//! | `SHUTDOWN` | `shutdowns`; `unused_init` when no invocation came |
//!
//! `errors` and `out_of_memory` count at most once per request id, whichever event reports them first. Every
//! point is tagged `cold_start:true|false` (true on the sandbox's first invocation), plus
//! `proactive_initialization:true` on the first when it came more than 10 s after the sandbox started (then
//! `cold_start:false`); the engine adds the Lambda tags and `DD_ENV`/`DD_SERVICE`/`DD_VERSION`/`DD_TAGS`.
//! `tmp_*`, `fd_use` and `threads_use` are the largest of the snapshots at `INVOKE` and `runtimeDone`.

use std::collections::VecDeque;
use std::time::Duration;

use offpath::aggregate::OwnPoint;

use super::proc::{Counters, Limits, Usage};
use crate::telemetry::{InitReport, Report, RuntimeDone};

/// Prefix of every enhanced metric.
pub const PREFIX: &str = "aws.lambda.enhanced.";
/// The enhanced metrics Datadog's libraries also send over DogStatsD (the JavaScript library sends
/// `invocations`, the Python library `errors` when the handler raises): with enhanced metrics on, such lines
/// are dropped (counted as `own_metric`), so each is counted once per request id, by offpath.
pub const LIBRARY_SENT: [&str; 2] = [
    "aws.lambda.enhanced.invocations",
    "aws.lambda.enhanced.errors",
];
/// A first invocation later than this after the sandbox started was proactively initialised.
pub const PROACTIVE_AFTER: Duration = Duration::from_secs(10);
/// Invocations remembered until their report (one at a time in a sandbox; a few reports may lag).
const REMEMBERED: usize = 8;

/// AWS Lambda list prices, us-east-1, first pricing tier (<https://aws.amazon.com/lambda/pricing/>), as
/// Datadog's extension uses them: USD per request, and per GB-second by architecture.
const PRICE_PER_REQUEST: f64 = 0.000_000_2;
const PRICE_PER_GB_SECOND_X86_64: f64 = 0.000_016_666_7;
const PRICE_PER_GB_SECOND_ARM64: f64 = 0.000_013_333_4;

/// The price of one GB-second on `architecture` (`x86_64` or `arm64`); `None` for another.
pub fn price_per_gb_second(architecture: &str) -> Option<f64> {
    match architecture {
        "x86_64" => Some(PRICE_PER_GB_SECOND_X86_64),
        "arm64" => Some(PRICE_PER_GB_SECOND_ARM64),
        _ => None,
    }
}

/// The estimated cost in USD of one invocation billed `billed_ms` with `memory_mb` MB, rounded to 1e-12.
pub fn estimated_cost(billed_ms: f64, memory_mb: f64, price_per_gb_second: f64) -> f64 {
    let gb_seconds = billed_ms / 1000.0 * (memory_mb / 1024.0);
    ((PRICE_PER_REQUEST + gb_seconds * price_per_gb_second) * 1e12).round() / 1e12
}

/// One invocation, from its `INVOKE` until its report.
#[derive(Debug)]
struct Invocation {
    request_id: String,
    /// `cold_start:…` (and `proactive_initialization:true`).
    tags: String,
    /// Counters at `INVOKE`.
    start: Counters,
    /// The largest usage seen so far.
    usage: Usage,
    runtime_duration_ms: Option<f64>,
    error_counted: bool,
    oom_counted: bool,
}

/// The enhanced metrics' state for one sandbox.
#[derive(Debug)]
pub struct Enhanced {
    proc_metrics: bool,
    price_per_gb_second: Option<f64>,
    invocations: VecDeque<Invocation>,
    invoked: bool,
    /// Tags of the first invocation (`init_duration` carries them).
    first_tags: Option<String>,
    /// `init_duration` seen before the first invocation: seconds, init type, time.
    pending_init: Option<(f64, String, i64)>,
    init_duration_done: bool,
}

impl Enhanced {
    /// State for a sandbox on `architecture` (`x86_64`, `arm64`); `proc_metrics` adds the resource metrics
    /// (`DD_LAMBDA_PROC_ENHANCED_METRICS`).
    pub fn new(proc_metrics: bool, architecture: &str) -> Self {
        Self {
            proc_metrics,
            price_per_gb_second: price_per_gb_second(architecture),
            invocations: VecDeque::with_capacity(REMEMBERED),
            invoked: false,
            first_tags: None,
            pending_init: None,
            init_duration_done: false,
        }
    }

    /// Whether snapshots are wanted (`DD_LAMBDA_PROC_ENHANCED_METRICS`).
    pub fn wants_snapshots(&self) -> bool {
        self.proc_metrics
    }

    /// `INVOKE` of `request_id` at `now` (unix seconds), `since_start` after the sandbox started, with the
    /// snapshot taken then (empty without proc metrics).
    pub fn on_invoke(
        &mut self,
        request_id: &str,
        now: i64,
        since_start: Duration,
        start: Counters,
        usage: Usage,
        out: &mut Vec<OwnPoint>,
    ) {
        let tags = if self.invoked {
            "cold_start:false".to_owned()
        } else if since_start > PROACTIVE_AFTER {
            "cold_start:false,proactive_initialization:true".to_owned()
        } else {
            "cold_start:true".to_owned()
        };
        if !self.invoked {
            self.invoked = true;
            self.first_tags = Some(tags.clone());
            if let Some((seconds, init_type, ts)) = self.pending_init.take() {
                out.push(point(
                    "init_duration",
                    seconds,
                    &init_tags(&tags, &init_type),
                    ts,
                ));
            }
        }
        out.push(point("invocations", 1.0, &tags, now));
        if self.invocations.len() == REMEMBERED {
            self.invocations.pop_front();
        }
        self.invocations.push_back(Invocation {
            request_id: request_id.to_owned(),
            tags,
            start,
            usage,
            runtime_duration_ms: None,
            error_counted: false,
            oom_counted: false,
        });
    }

    /// `platform.runtimeDone`, processed at `now`, with the snapshot and the limits read then.
    pub fn on_runtime_done(
        &mut self,
        rd: &RuntimeDone,
        now: i64,
        end: &Counters,
        usage: Usage,
        limits: &Limits,
        out: &mut Vec<OwnPoint>,
    ) {
        let ts = rd.time.unwrap_or(now);
        let proc_metrics = self.proc_metrics;
        let inv = self.invocation(&rd.request_id);
        inv.runtime_duration_ms = rd.duration_ms;
        let tags = inv.tags.clone();
        if let Some(ms) = rd.duration_ms {
            out.push(point("runtime_duration", ms, &tags, ts));
        }
        if let Some(bytes) = rd.produced_bytes {
            out.push(point("produced_bytes", bytes, &tags, ts));
        }
        if !rd.status.is_empty()
            && rd.status != "success"
            && !std::mem::replace(&mut inv.error_counted, true)
        {
            out.push(point("errors", 1.0, &tags, ts));
        }
        if rd.status == "timeout" {
            out.push(point("timeouts", 1.0, &tags, ts));
        }
        if rd.error_type.as_deref() == Some("Runtime.OutOfMemory")
            && !std::mem::replace(&mut inv.oom_counted, true)
        {
            out.push(point("out_of_memory", 1.0, &tags, ts));
        }
        if proc_metrics {
            let usage = inv.usage.max(usage);
            resources(&inv.start, end, usage, limits, &tags, now, out);
        }
    }

    /// `platform.report`, processed at `now`.
    pub fn on_report(&mut self, r: &Report, now: i64, out: &mut Vec<OwnPoint>) {
        let ts = r.time.unwrap_or(now);
        let price = self.price_per_gb_second;
        let inv = self.invocation(&r.request_id);
        let tags = inv.tags.clone();
        let seconds = |ms: f64| ms / 1000.0;
        if let Some(ms) = r.duration_ms {
            out.push(point("duration", seconds(ms), &tags, ts));
            if let Some(runtime) = inv.runtime_duration_ms {
                out.push(point("post_runtime_duration", ms - runtime, &tags, ts));
            }
        }
        if let Some(ms) = r.billed_duration_ms {
            out.push(point("billed_duration", seconds(ms), &tags, ts));
        }
        if let Some(mb) = r.max_memory_used_mb {
            out.push(point("max_memory_used", mb, &tags, ts));
        }
        if let Some(mb) = r.memory_size_mb {
            out.push(point("memorysize", mb, &tags, ts));
        }
        if let (Some(billed), Some(memory), Some(price)) =
            (r.billed_duration_ms, r.memory_size_mb, price)
        {
            out.push(point(
                "estimated_cost",
                estimated_cost(billed, memory, price),
                &tags,
                ts,
            ));
        }
        if let (Some(used), Some(size)) = (r.max_memory_used_mb, r.memory_size_mb)
            && used >= size
            && !std::mem::replace(&mut inv.oom_counted, true)
        {
            out.push(point("out_of_memory", 1.0, &tags, ts));
        }
        let done = r.request_id.clone();
        if let Some(ms) = r.init_duration_ms {
            self.init_duration(ms, "on-demand", ts, out);
        }
        self.invocations.retain(|i| i.request_id != done);
    }

    /// `platform.initReport`, processed at `now`.
    pub fn on_init_report(&mut self, ir: &InitReport, now: i64, out: &mut Vec<OwnPoint>) {
        if let Some(ms) = ir.duration_ms {
            let init_type = if ir.initialization_type.is_empty() {
                "on-demand"
            } else {
                ir.initialization_type.as_str()
            };
            self.init_duration(ms, init_type, ir.time.unwrap_or(now), out);
        }
    }

    fn init_duration(&mut self, ms: f64, init_type: &str, ts: i64, out: &mut Vec<OwnPoint>) {
        if std::mem::replace(&mut self.init_duration_done, true) {
            return;
        }
        match &self.first_tags {
            Some(tags) => out.push(point(
                "init_duration",
                ms / 1000.0,
                &init_tags(tags, init_type),
                ts,
            )),
            None => self.pending_init = Some((ms / 1000.0, init_type.to_owned(), ts)),
        }
    }

    /// A Datadog library reported (`/lambda/end-invocation`, `x-datadog-invocation-error: true`) that the
    /// current invocation failed, at `now`.
    pub fn on_invocation_error(&mut self, now: i64, out: &mut Vec<OwnPoint>) {
        if let Some(inv) = self.invocations.back_mut()
            && !std::mem::replace(&mut inv.error_counted, true)
        {
            out.push(point("errors", 1.0, &inv.tags, now));
        }
    }

    /// `SHUTDOWN` at `now`.
    pub fn on_shutdown(&mut self, now: i64, out: &mut Vec<OwnPoint>) {
        let tags = self
            .invocations
            .back()
            .map(|i| i.tags.clone())
            .or_else(|| self.first_tags.clone())
            .unwrap_or_default();
        if let Some((seconds, init_type, ts)) = self.pending_init.take() {
            out.push(point(
                "init_duration",
                seconds,
                &init_tags(&tags, &init_type),
                ts,
            ));
        }
        out.push(point("shutdowns", 1.0, &tags, now));
        if !self.invoked {
            out.push(point("unused_init", 1.0, &tags, now));
        }
    }

    /// The remembered invocation `request_id`, or a new warm one (its `INVOKE` was not seen).
    fn invocation(&mut self, request_id: &str) -> &mut Invocation {
        let at = match self
            .invocations
            .iter()
            .position(|i| i.request_id == request_id)
        {
            Some(at) => at,
            None => {
                if self.invocations.len() == REMEMBERED {
                    self.invocations.pop_front();
                }
                self.invocations.push_back(Invocation {
                    request_id: request_id.to_owned(),
                    tags: "cold_start:false".to_owned(),
                    start: Counters::default(),
                    usage: Usage::default(),
                    runtime_duration_ms: None,
                    error_counted: false,
                    oom_counted: false,
                });
                self.invocations.len() - 1
            }
        };
        &mut self.invocations[at]
    }
}

fn init_tags(tags: &str, init_type: &str) -> String {
    if tags.is_empty() {
        format!("init_type:{init_type}")
    } else {
        format!("{tags},init_type:{init_type}")
    }
}

fn point(name: &str, value: f64, tags: &str, ts: i64) -> OwnPoint {
    OwnPoint {
        name: format!("{PREFIX}{name}"),
        value,
        tags: tags.to_owned(),
        ts,
    }
}

/// The resource metrics between the `INVOKE` counters and `end`.
fn resources(
    start: &Counters,
    end: &Counters,
    usage: Usage,
    limits: &Limits,
    tags: &str,
    now: i64,
    out: &mut Vec<OwnPoint>,
) {
    let mut put = |name: &str, v: f64| out.push(point(name, v, tags, now));
    if let (Some(a), Some(b)) = (&start.cpu, &end.cpu) {
        let user = (b.user_ms - a.user_ms).max(0.0);
        let system = (b.system_ms - a.system_ms).max(0.0);
        put("cpu_user_time", user);
        put("cpu_system_time", system);
        put("cpu_total_time", user + system);
        if let (Some(up_a), Some(up_b)) = (start.uptime_ms, end.uptime_ms)
            && up_b > up_a
            && !b.core_idle_ms.is_empty()
        {
            let uptime = up_b - up_a;
            let cores = b.core_idle_ms.len() as f64;
            let idle = (b.idle_ms - a.idle_ms).max(0.0);
            let busy_share = ((uptime * cores - idle) / (uptime * cores)).max(0.0);
            let core_idle: Vec<f64> = b
                .core_idle_ms
                .iter()
                .zip(&a.core_idle_ms)
                .map(|(end, start)| (end - start).max(0.0))
                .collect();
            put("cpu_total_utilization_pct", busy_share * 100.0);
            put("cpu_total_utilization", busy_share * cores);
            put("num_cores", cores);
            if let (Some(min_idle), Some(max_idle)) = (
                core_idle.iter().copied().reduce(f64::min),
                core_idle.iter().copied().reduce(f64::max),
            ) {
                put(
                    "cpu_max_utilization",
                    ((uptime - min_idle) / uptime * 100.0).max(0.0),
                );
                put(
                    "cpu_min_utilization",
                    ((uptime - max_idle) / uptime * 100.0).max(0.0),
                );
            }
        }
    }
    if let (Some(a), Some(b)) = (start.net, end.net) {
        let rx = (b.rx_bytes - a.rx_bytes).max(0.0);
        let tx = (b.tx_bytes - a.tx_bytes).max(0.0);
        put("rx_bytes", rx);
        put("tx_bytes", tx);
        put("total_network", rx + tx);
    }
    if let Some(used) = usage.tmp_used.filter(|u| *u > 0.0) {
        put("tmp_used", used);
        if let Some(max) = limits.tmp_max {
            put("tmp_max", max);
            put("tmp_free", (max - used).max(0.0));
        }
    }
    if let Some(fds) = usage.fd_use.filter(|n| *n > 0.0) {
        put("fd_use", fds);
    }
    put("fd_max", limits.fd_max);
    if let Some(threads) = usage.threads_use.filter(|n| *n > 0.0) {
        put("threads_use", threads);
    }
    put("threads_max", limits.threads_max);
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
