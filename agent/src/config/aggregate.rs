//! Aggregation settings: tags, histogram outputs, the context limit, the type mapping and the workers.

use std::num::NonZeroUsize;

use super::key::Reader;
use super::keys as k;
use super::parse;
use super::{ConfigError, Deployment};
use crate::enrich::FilterConfig;

/// Most aggregate workers `OFFPATH_AGGREGATE_WORKERS` accepts.
pub const MAX_AGGREGATE_WORKERS: usize = 64;
/// Aggregate workers at most when `OFFPATH_AGGREGATE_WORKERS=0` in the sidecar (one per core).
pub const MAX_DEFAULT_WORKERS: usize = 4;
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

/// Aggregator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateConfig {
    /// Prefix for every metric name, with a trailing `.` (`DD_STATSD_METRIC_NAMESPACE`).
    pub namespace: String,
    /// Global tags added to every metric, event and service check.
    pub tags: Vec<String>,
    /// Host put on every series unless a `host:` tag overrides it (`DD_HOSTNAME`).
    pub hostname: String,
    /// Histogram aggregates (`DD_HISTOGRAM_AGGREGATES`, `max,median,avg,count`).
    pub histogram_aggregates: Vec<HistogramAggregate>,
    /// Histogram percentiles in (0, 1) (`DD_HISTOGRAM_PERCENTILES`, `0.95`).
    pub histogram_percentiles: Vec<f64>,
    /// Live contexts allowed (`DD_AGGREGATE_CONTEXT_LIMIT`, 100000).
    pub context_limit: NonZeroUsize,
    /// Type mapping: [`MetricMapping::Agent`] in the sidecar, `OFFPATH_LAMBDA_METRICS` in Lambda.
    pub mapping: MetricMapping,
    /// Aggregate worker threads, each with the contexts of its share of metric names
    /// (`OFFPATH_AGGREGATE_WORKERS`; its 0 resolved at load: one per core up to 4, one in Lambda).
    pub workers: NonZeroUsize,
    /// Metric names the embedding program emits itself (not a key: the Lambda extension's
    /// `aws.lambda.enhanced.invocations` and `.errors` when it ships enhanced metrics). A received line with
    /// one of these names is dropped, counted as `own_metric`, so the value is not counted twice.
    pub own_names: Vec<String>,
    /// The mapper and the blocklist, applied to every received metric line.
    pub filter: FilterConfig,
    /// Per-name counts for the cardinality view (`OFFPATH_CONTEXT_STATS`, true).
    pub context_stats: bool,
}

impl AggregateConfig {
    pub(super) fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let mut tags = r.value(&k::TAGS)?;
        tags.extend(r.value(&k::DOGSTATSD_TAGS)?);
        for (key, name) in [
            (&k::ENV, "env"),
            (&k::SERVICE, "service"),
            (&k::VERSION, "version"),
        ] {
            if let Some(v) = r.get(key)? {
                tags.push(format!("{name}:{v}"));
            }
        }
        let mut namespace = r.get(&k::STATSD_METRIC_NAMESPACE)?.unwrap_or_default();
        if !namespace.is_empty() && !namespace.ends_with('.') {
            namespace.push('.');
        }
        let lambda_mapping = r.value(&k::LAMBDA_METRICS)?;
        Ok(Self {
            namespace,
            tags,
            hostname: r.get(&k::HOSTNAME)?.unwrap_or_default(),
            histogram_aggregates: r.value(&k::HISTOGRAM_AGGREGATES)?,
            histogram_percentiles: r.value(&k::HISTOGRAM_PERCENTILES)?,
            context_limit: r.value(&k::AGGREGATE_CONTEXT_LIMIT)?,
            mapping: match r.deployment() {
                Deployment::Sidecar => MetricMapping::Agent,
                Deployment::Lambda => lambda_mapping,
            },
            workers: match NonZeroUsize::new(r.value(&k::AGGREGATE_WORKERS)?) {
                Some(n) => n,
                None => default_workers(r.deployment()),
            },
            own_names: Vec::new(),
            filter: super::filter::load(r)?,
            context_stats: r.value(&k::CONTEXT_STATS)?,
        })
    }
}

/// The workers `OFFPATH_AGGREGATE_WORKERS=0` means: one per core up to [`MAX_DEFAULT_WORKERS`] in the
/// sidecar, one in Lambda (whose functions get a fraction of a core at small memory sizes).
fn default_workers(deployment: Deployment) -> NonZeroUsize {
    match deployment {
        Deployment::Lambda => NonZeroUsize::MIN,
        Deployment::Sidecar => std::thread::available_parallelism()
            .map_or(NonZeroUsize::MIN, |n| {
                n.min(NonZeroUsize::new(MAX_DEFAULT_WORKERS).unwrap_or(NonZeroUsize::MIN))
            }),
    }
}

/// Name a percentile like the Agent: 0.95 → `95percentile`, 0.299 → `30percentile`.
pub fn percentile_name(p: f64) -> String {
    format!("{}percentile", (p * 100.0).round() as i64)
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
