//! The typed value of every configuration key and the parser that reads it: what `keys.rs` declares each
//! key with. The section modules (`aggregate.rs`, `forward.rs`, …) read the declared keys and build their
//! settings from these values; nothing here reads a key, so the dependency runs one way (sections →
//! keys → values). `docs/architecture.md` ("Adding a configuration key") says where each piece goes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use tracing::level_filters::LevelFilter;

use super::parse;
use crate::auth::{ApiKey, SecretArn};
use crate::enrich::MapperProfiles;

// Aggregation (read in `aggregate.rs`).

/// Most aggregate workers `OFFPATH_AGGREGATE_WORKERS` accepts.
pub const MAX_AGGREGATE_WORKERS: usize = 64;

/// Largest `DD_AGGREGATE_CONTEXT_LIMIT`: ten million live contexts (a few GiB of memory).
pub const MAX_CONTEXT_LIMIT: usize = 10_000_000;

/// Histogram aggregate names (`DD_HISTOGRAM_AGGREGATES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistogramAggregate {
    /// `.max`
    Max,
    /// `.min`
    Min,
    /// `.median`
    Median,
    /// `.avg`
    Avg,
    /// `.sum`
    Sum,
    /// `.count` (shipped as RATE)
    Count,
}

impl HistogramAggregate {
    /// The Agent's default aggregates, `DD_HISTOGRAM_AGGREGATES` unset (`max,median,avg,count`).
    pub const AGENT_DEFAULT: [HistogramAggregate; 4] =
        [Self::Max, Self::Median, Self::Avg, Self::Count];

    /// The Agent's default percentiles, `DD_HISTOGRAM_PERCENTILES` unset (`0.95`).
    pub const AGENT_DEFAULT_PERCENTILES: [f64; 1] = [0.95];

    /// The suffix without the dot.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Max => "max",
            Self::Min => "min",
            Self::Median => "median",
            Self::Avg => "avg",
            Self::Sum => "sum",
            Self::Count => "count",
        }
    }
}

/// How DogStatsD types map to what is shipped; the deployment decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricMapping {
    /// The Datadog Agent's sidecar semantics (see `docs/architecture.md`, "Deployment profiles").
    Agent,
    /// Lambda: `c`, `h`, `ms`, `d` as distributions; `g`, `s` as gauges; client self-telemetry dropped.
    LambdaDistribution,
}

pub(super) fn histogram_aggregates(v: &str) -> Result<Vec<HistogramAggregate>, &'static str> {
    parse::split_list(v)
        .iter()
        .map(|a| match a.as_str() {
            "max" => Ok(HistogramAggregate::Max),
            "min" => Ok(HistogramAggregate::Min),
            "median" => Ok(HistogramAggregate::Median),
            "avg" => Ok(HistogramAggregate::Avg),
            "sum" => Ok(HistogramAggregate::Sum),
            "count" => Ok(HistogramAggregate::Count),
            _ => Err("a list of max, min, median, avg, sum, count"),
        })
        .collect()
}

pub(super) fn histogram_percentiles(v: &str) -> Result<Vec<f64>, &'static str> {
    parse::split_list(v)
        .iter()
        .map(|p| {
            p.parse::<f64>()
                .ok()
                .filter(|p| *p > 0.0 && *p < 1.0)
                .ok_or("a list of numbers between 0 and 1, such as 0.95")
        })
        .collect()
}

pub(super) fn context_limit(v: &str) -> Result<NonZeroUsize, &'static str> {
    parse::usize_in_range(
        v,
        1,
        MAX_CONTEXT_LIMIT,
        "a number of contexts from 1 to 10000000",
    )
    .and_then(|n| NonZeroUsize::new(n).ok_or("a positive number"))
}

pub(super) fn workers(v: &str) -> Result<usize, &'static str> {
    parse::usize_in_range(
        v,
        0,
        MAX_AGGREGATE_WORKERS,
        "a number of aggregate workers from 1 to 64, or 0 for one per core (at most 4)",
    )
}

pub(super) fn lambda_metrics(v: &str) -> Result<MetricMapping, &'static str> {
    match v {
        "distribution" => Ok(MetricMapping::LambdaDistribution),
        "agent" => Ok(MetricMapping::Agent),
        _ => Err("distribution or agent"),
    }
}

// Fallback (read in `fallback.rs`).

/// `OFFPATH_FALLBACK` as configured; [`FallbackConfig::sink`] is what it resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackMode {
    /// stdout in Lambda, CloudWatch where a log group is set, otherwise stdout.
    Auto,
    /// CloudWatch Logs (`OFFPATH_FALLBACK_LOG_GROUP` required).
    CloudWatch,
    /// One record per line on stdout.
    Stdout,
    /// No fallback: what cannot be delivered is dropped and counted.
    Off,
}

/// Record format of the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackFormat {
    /// offpath records (see `docs/protocols.md`, "offpath records"), replayable, lossless.
    Offpath,
    /// Datadog Forwarder `{"m","v","e","t"}` lines (exact only for distributions).
    Forwarder,
    /// CloudWatch Embedded Metric Format.
    Emf,
}

/// What `OFFPATH_FALLBACK` accepts.
#[cfg(feature = "cloudwatch")]
const FALLBACK_MODES: &str = "auto, cloudwatch, stdout or off";

/// What `OFFPATH_FALLBACK` accepts in a build without the CloudWatch sink.
#[cfg(not(feature = "cloudwatch"))]
const FALLBACK_MODES: &str = "auto, stdout or off (this build of offpath has no CloudWatch Logs sink: \
     it was built without the `cloudwatch` feature, like the Lambda layer)";

pub(super) fn mode(v: &str) -> Result<FallbackMode, &'static str> {
    match v {
        "auto" => Ok(FallbackMode::Auto),
        "cloudwatch" if cfg!(feature = "cloudwatch") => Ok(FallbackMode::CloudWatch),
        "stdout" => Ok(FallbackMode::Stdout),
        "off" => Ok(FallbackMode::Off),
        _ => Err(FALLBACK_MODES),
    }
}

pub(super) fn format(v: &str) -> Result<FallbackFormat, &'static str> {
    match v {
        "offpath" => Ok(FallbackFormat::Offpath),
        "forwarder" => Ok(FallbackFormat::Forwarder),
        "emf" => Ok(FallbackFormat::Emf),
        _ => Err("offpath, forwarder or emf"),
    }
}

// Mapping and filtering (read in `filter.rs`).

/// Largest `DD_DOGSTATSD_MAPPER_CACHE_SIZE`.
pub const MAX_MAPPER_CACHE_SIZE: usize = 1_000_000;

pub(super) fn mapper_profiles(v: &str) -> Result<MapperProfiles, &'static str> {
    crate::enrich::parse_profiles(v)
}

pub(super) fn cache_size(v: &str) -> Result<NonZeroUsize, &'static str> {
    const EXPECTED: &str = "a number of metric names from 1 to 1000000";
    parse::usize_in_range(v, 1, MAX_MAPPER_CACHE_SIZE, EXPECTED)
        .and_then(|n| NonZeroUsize::new(n).ok_or(EXPECTED))
}

// Delivery (read in `forward.rs`).

/// Largest `DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE`: 1 GiB.
pub const MAX_RETRY_QUEUE_BYTES: usize = 1 << 30;

/// Largest `DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES`: 1 TiB.
pub const MAX_STORAGE_BYTES: u64 = 1 << 40;

#[allow(clippy::unnecessary_wraps)]
pub(super) fn api_key(v: &str) -> Result<ApiKey, &'static str> {
    Ok(ApiKey::new(v))
}

pub(super) fn secret_arn(v: &str) -> Result<SecretArn, &'static str> {
    SecretArn::parse(v).map_err(|_| {
        "a Secrets Manager secret ARN such as \
         arn:aws:secretsmanager:us-east-1:123456789012:secret:dd-api-key-AbCdEf"
    })
}

/// `DD_SITE`: a host name (letters, digits, `.`, `-`; a port is allowed).
pub(super) fn site(v: &str) -> Result<String, &'static str> {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    {
        Ok(v.to_owned())
    } else {
        Err("a Datadog site such as datadoghq.eu")
    }
}

/// `DD_DD_URL`: an http(s) URL with a host; a trailing `/` is removed.
pub(super) fn intake_url(v: &str) -> Result<String, &'static str> {
    let host = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .map(|rest| rest.trim_end_matches('/'));
    if host.is_none_or(str::is_empty) {
        return Err("an http:// or https:// URL such as https://api.datadoghq.eu");
    }
    Ok(v.trim_end_matches('/').to_owned())
}

pub(super) fn retry_queue_bytes(v: &str) -> Result<usize, &'static str> {
    parse::usize_in_range(
        v,
        0,
        MAX_RETRY_QUEUE_BYTES,
        "a size in bytes, at most 1073741824",
    )
}

pub(super) fn storage_bytes(v: &str) -> Result<u64, &'static str> {
    parse::in_range(
        v,
        0,
        MAX_STORAGE_BYTES,
        "a size in bytes, at most 1099511627776 (0 turns the storage off)",
    )
}

pub(super) fn zstd_level(v: &str) -> Result<i32, &'static str> {
    parse::in_range(v, 1, 22, "a zstd level from 1 to 22").map(|n| n as i32)
}

// Host (read in `host.rs`).

/// `DD_DOGSTATSD_TAG_CARDINALITY`: which orchestrator tags DogStatsD metrics get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagCardinality {
    /// `low` (the default): tags shared by every task of a family.
    #[default]
    Low,
    /// `orchestrator`: also the tags of one task (`task_arn`).
    Orchestrator,
    /// `high`: as `orchestrator` here (offpath adds no container-level tags).
    High,
}

/// `DD_EC2_METADATA_TIMEOUT`: milliseconds, 1 to 60000.
pub(super) fn ec2_timeout(v: &str) -> Result<Duration, &'static str> {
    parse::in_range(v, 1, 60_000, "a number of milliseconds from 1 to 60000")
        .map(Duration::from_millis)
}

/// `DD_CLOUD_PROVIDER_METADATA`: whether the list names `aws` (the only provider offpath asks).
pub(super) fn aws_metadata(v: &str) -> Result<bool, &'static str> {
    Ok(parse::split_list(v)
        .iter()
        .any(|p| p.eq_ignore_ascii_case("aws")))
}

/// `DD_DOGSTATSD_TAG_CARDINALITY`: `low`, `orchestrator` or `high`, in any case.
pub(super) fn tag_cardinality(v: &str) -> Result<TagCardinality, &'static str> {
    match v.to_ascii_lowercase().as_str() {
        "low" => Ok(TagCardinality::Low),
        "orchestrator" => Ok(TagCardinality::Orchestrator),
        "high" => Ok(TagCardinality::High),
        _ => Err("low, orchestrator or high"),
    }
}

// Listeners (read in `ingest.rs`).

/// Largest `DD_DOGSTATSD_BUFFER_SIZE`: 1 MiB (a datagram is at most 64 KiB; a stream frame larger than
/// this is not DogStatsD).
pub const MAX_BUFFER_SIZE: usize = 1 << 20;

/// Largest `DD_DOGSTATSD_QUEUE_SIZE`: 256 Ki packets per aggregate worker (the queue's slots are
/// allocated at start).
pub const MAX_QUEUE_SIZE: usize = 1 << 18;

/// Largest `DD_DOGSTATSD_SO_RCVBUF`: 1 GiB (the kernel takes a C int, doubled).
pub const MAX_SO_RCVBUF: usize = 1 << 30;

/// Most `OFFPATH_RECEIVE_THREADS`.
pub const MAX_RECEIVE_THREADS: usize = 64;

/// `DD_DOGSTATSD_PORT`: a port, `0` to disable UDP (`None`), or `__random__` (as in the Agent) for an
/// ephemeral port (`Some(0)`; the bound address is logged).
pub(super) fn udp_port(v: &str) -> Result<Option<u16>, &'static str> {
    match v {
        "__random__" => Ok(Some(0)),
        _ => match v.parse::<u16>() {
            Ok(0) => Ok(None),
            Ok(p) => Ok(Some(p)),
            Err(_) => Err("a UDP port 0-65535 (0 disables UDP) or __random__"),
        },
    }
}

/// `DD_BIND_HOST`: an IP address; `localhost` is 127.0.0.1.
pub(super) fn bind_host(v: &str) -> Result<IpAddr, &'static str> {
    if v == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    v.parse().map_err(|_| "an IP address such as 127.0.0.1")
}

pub(super) fn buffer_size(v: &str) -> Result<NonZeroUsize, &'static str> {
    parse::usize_in_range(v, 1, MAX_BUFFER_SIZE, "a size in bytes from 1 to 1048576")
        .and_then(|n| NonZeroUsize::new(n).ok_or("a positive size"))
}

pub(super) fn queue_size(v: &str) -> Result<NonZeroUsize, &'static str> {
    parse::usize_in_range(v, 1, MAX_QUEUE_SIZE, "a number of packets from 1 to 262144")
        .and_then(|n| NonZeroUsize::new(n).ok_or("a positive number"))
}

/// `DD_DOGSTATSD_SO_RCVBUF`: bytes; `0` keeps offpath's default.
pub(super) fn so_rcvbuf(v: &str) -> Result<usize, &'static str> {
    parse::usize_in_range(v, 0, MAX_SO_RCVBUF, "a size in bytes, at most 1073741824")
}

pub(super) fn receive_threads(v: &str) -> Result<usize, &'static str> {
    parse::usize_in_range(
        v,
        0,
        MAX_RECEIVE_THREADS,
        "a number of threads from 1 to 64, or 0 for one per core (at most 4)",
    )
}

/// Longest `OFFPATH_RECEIVE_PACE`, in milliseconds.
pub const MAX_RECEIVE_PACE_MS: u64 = 100;

/// `OFFPATH_RECEIVE_PACE`: milliseconds, `0` (no pacing: `None`) to 100.
pub(super) fn receive_pace(v: &str) -> Result<Option<Duration>, &'static str> {
    let ms = parse::in_range(
        v,
        0,
        MAX_RECEIVE_PACE_MS,
        "milliseconds from 0 (off) to 100",
    )?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

// Lambda (read in `lambda.rs`).

/// The parsed `DD_SERVERLESS_FLUSH_STRATEGY` (the extension's flush policy acts on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushStrategy {
    /// `adaptive` (default): `end` for quiet functions, periodic non-blocking for busy ones.
    Adaptive,
    /// `end`: after every `runtimeDone`.
    End,
    /// `end,<ms>`: after every `runtimeDone`, and every `<ms>` during long invocations.
    EndPeriodically(Duration),
    /// `periodically,<ms>`: non-blocking at invocation start, at most every `<ms>`.
    Periodically(Duration),
    /// `continuously,<ms>`: like `periodically`, without waiting for the flush before `event/next`.
    Continuously(Duration),
}

/// Longest period in a flush strategy and longest flush budget, in milliseconds: one hour.
const MAX_MS: u64 = 3_600_000;

pub(super) fn flush_strategy(v: &str) -> Result<FlushStrategy, &'static str> {
    const EXPECTED: &str = "adaptive, end, end,<ms>, periodically,<ms> or continuously,<ms> \
                            (ms a positive integer, at most 3600000)";
    let v = v.to_ascii_lowercase();
    let (name, ms) = match v.split_once(',') {
        None => (v.as_str(), None),
        Some((name, ms)) => {
            let ms = parse::in_range(ms.trim(), 1, MAX_MS, EXPECTED)?;
            (name.trim(), Some(Duration::from_millis(ms)))
        }
    };
    match (name, ms) {
        ("adaptive" | "", None) => Ok(FlushStrategy::Adaptive),
        ("end", None) => Ok(FlushStrategy::End),
        ("end", Some(d)) => Ok(FlushStrategy::EndPeriodically(d)),
        ("periodically", Some(d)) => Ok(FlushStrategy::Periodically(d)),
        ("continuously", Some(d)) => Ok(FlushStrategy::Continuously(d)),
        _ => Err(EXPECTED),
    }
}

pub(super) fn flush_budget(v: &str) -> Result<Duration, &'static str> {
    parse::in_range(v, 0, MAX_MS, "a number of milliseconds, at most 3600000")
        .map(Duration::from_millis)
}

pub(super) fn telemetry_port(v: &str) -> Result<u16, &'static str> {
    port(v)
}

/// A TCP port, 0 picking a free one.
pub fn port(v: &str) -> Result<u16, &'static str> {
    v.parse()
        .map_err(|_| "a TCP port 0-65535 (0 picks a free port)")
}

// Operations (read in `ops.rs`).

/// `DD_LOG_LEVEL`: the Datadog Agent's level names, in any case: `trace`, `debug`, `info`, `warn` (or
/// `warning`), `error`, `critical` (logged as error) or `off`.
pub(super) fn log_level(v: &str) -> Result<LevelFilter, &'static str> {
    match v.to_ascii_lowercase().as_str() {
        "trace" => Ok(LevelFilter::TRACE),
        "debug" => Ok(LevelFilter::DEBUG),
        "info" => Ok(LevelFilter::INFO),
        "warn" | "warning" => Ok(LevelFilter::WARN),
        "error" | "critical" => Ok(LevelFilter::ERROR),
        "off" => Ok(LevelFilter::OFF),
        _ => Err("trace, debug, info, warn (or warning), error, critical or off"),
    }
}

/// `OFFPATH_STATUS_ADDR`: an address, or the empty string to disable the endpoint.
pub(super) fn status_addr(v: &str) -> Result<Option<SocketAddr>, &'static str> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| "an address such as 127.0.0.1:8126, or empty to disable")
}
