//! Configuration: Datadog Agent key names, loaded once, validated into typed values.
//!
//! Every key is listed in [`KEYS`] with its environment name, its `datadog.yaml` name, its default and
//! what it means; the README table is checked against that list. Values are looked up through a
//! [`Source`] (environment variables over an optional YAML file), parsed here, and errors name the key.

mod keys;
pub mod yaml;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use keys::{KEYS, Key, markdown_table};

/// Most aggregate workers `OFFPATH_AGGREGATE_WORKERS` accepts.
pub const MAX_AGGREGATE_WORKERS: usize = 64;

const WORKERS_EXPECTED: &str =
    "a number of aggregate workers from 1 to 64, or 0 for one per core (at most 4)";

/// A configuration error; the message names the key to fix and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {key}: expected {expected}")]
pub struct ConfigError {
    /// The environment name of the key (e.g. `DD_DOGSTATSD_PORT`).
    pub key: &'static str,
    /// The value that was given (redacted for secrets).
    pub value: String,
    /// What the key accepts.
    pub expected: &'static str,
}

/// Loading a config file and the environment failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read, is not YAML, or a key has the wrong shape.
    #[error(transparent)]
    File(#[from] yaml::FileError),
    /// A value is invalid; `origin` says where it was set (the environment or the file).
    #[error("{error} (set {origin})")]
    Invalid {
        /// The invalid key and value.
        error: ConfigError,
        /// `in the environment (DD_X)` or ``as `x` in <file>``.
        origin: String,
    },
}

/// Where raw values come from. Implemented for closures over environment names.
pub trait Source {
    /// The raw value of `key` (its environment name), if set.
    fn get(&self, key: &Key) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Source for F {
    fn get(&self, key: &Key) -> Option<String> {
        key.envs.iter().find_map(|e| self(e))
    }
}

/// The process environment as a [`Source`].
#[derive(Debug, Clone, Copy)]
pub struct Env;

impl Source for Env {
    fn get(&self, key: &Key) -> Option<String> {
        key.envs.iter().find_map(|e| std::env::var(e).ok())
    }
}

/// The Datadog API key; never printed (`Debug` and `Display` redact it).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    /// The key itself, for the `DD-API-KEY` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Listener settings.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// UDP address; `None` when `DD_DOGSTATSD_PORT=0`. Default `127.0.0.1:8125`.
    pub udp: Option<SocketAddr>,
    /// Unix datagram socket path (`DD_DOGSTATSD_SOCKET`).
    pub socket: Option<PathBuf>,
    /// Unix stream socket path (`DD_DOGSTATSD_STREAM_SOCKET`).
    pub stream_socket: Option<PathBuf>,
    /// Largest datagram or stream frame accepted (`DD_DOGSTATSD_BUFFER_SIZE`, 8192).
    pub buffer_size: NonZeroUsize,
    /// Requested `SO_RCVBUF` (`DD_DOGSTATSD_SO_RCVBUF`); `None` = offpath's default (8 MiB asked).
    pub so_rcvbuf: Option<usize>,
    /// Packets queued between listeners and each aggregate worker (`DD_DOGSTATSD_QUEUE_SIZE`, 1024).
    pub queue_size: NonZeroUsize,
    /// Receive threads for UDP (`SO_REUSEPORT` sockets) (`OFFPATH_RECEIVE_THREADS`, 0 = one per core up to 4).
    pub receive_threads: usize,
}

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

/// How DogStatsD types map to what is shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricMapping {
    /// The Datadog Agent's sidecar semantics (DESIGN.md §2).
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
    /// Time between periodic flushes of closed buckets (`OFFPATH_FLUSH_INTERVAL`, 15 s).
    pub flush_interval: Duration,
    /// Type mapping.
    pub mapping: MetricMapping,
    /// Aggregate worker threads, each with the contexts of its share of metric names
    /// (`OFFPATH_AGGREGATE_WORKERS`, 0 = one per core up to 4, one in Lambda).
    pub workers: usize,
    /// Metric names the embedding program emits itself (not a setting: the Lambda extension's
    /// `aws.lambda.enhanced.invocations` when it ships enhanced metrics). A received line with one of these
    /// names is dropped, counted as `own_metric`, so the value is not counted twice.
    pub own_names: Vec<String>,
}

/// Which fallback sink receives what the forwarder gives up on.
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
    /// offpath records (DESIGN.md §4), replayable, lossless.
    Offpath,
    /// Datadog Forwarder `{"m","v","e","t"}` lines (exact only for distributions).
    Forwarder,
    /// CloudWatch Embedded Metric Format.
    Emf,
}

/// Fallback settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackConfig {
    /// Sink selection (`OFFPATH_FALLBACK`, `auto`).
    pub mode: FallbackMode,
    /// CloudWatch log group (`OFFPATH_FALLBACK_LOG_GROUP`).
    pub log_group: Option<String>,
    /// CloudWatch log stream (`OFFPATH_FALLBACK_LOG_STREAM`); `None` = `<host>-<pid>`.
    pub log_stream: Option<String>,
    /// Record format (`OFFPATH_FALLBACK_FORMAT`, `offpath`).
    pub format: FallbackFormat,
    /// Tag keys that become EMF dimensions (`OFFPATH_FALLBACK_EMF_DIMENSIONS`, none).
    pub emf_dimensions: Vec<String>,
    /// EMF namespace (`OFFPATH_FALLBACK_EMF_NAMESPACE`, `offpath`).
    pub emf_namespace: String,
}

/// Delivery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// API key; `None` without a secret ARN runs locally (records to stdout).
    pub api_key: Option<ApiKey>,
    /// Secrets Manager ARN whose value is the API key, read at the first flush when `api_key` is
    /// unset (`DD_API_KEY_SECRET_ARN`; see [`crate::forward::secret`]). Checked to be a secret ARN.
    pub api_key_secret_arn: Option<String>,
    /// Intake base URL without path: `DD_DD_URL`/`DD_URL`, else `https://api.<DD_SITE>`.
    pub intake_url: String,
    /// `DD_SITE` as given (default `datadoghq.com`).
    pub site: String,
    /// HTTPS proxy (`DD_PROXY_HTTPS`, `HTTPS_PROXY`).
    pub proxy: Option<String>,
    /// Skip TLS verification (`DD_SKIP_SSL_VALIDATION`, false; logged loudly).
    pub skip_tls_verify: bool,
    /// Retry queue bound in bytes (`DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE`, 15 MiB).
    pub retry_queue_max_bytes: usize,
    /// Per-request timeout (`DD_FORWARDER_TIMEOUT`, 20 s).
    pub timeout: Duration,
    /// zstd level (`OFFPATH_ZSTD_LEVEL`, 1 like the Agent).
    pub zstd_level: i32,
    /// Keep idle connections to the intake for reuse (true; false in Lambda, where a connection
    /// left idle across a freeze is dead on reuse).
    pub keep_idle_connections: bool,
}

/// Operational settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsConfig {
    /// Log filter (`DD_LOG_LEVEL`, `info`).
    pub log_level: String,
    /// Deadline for drain and delivery on SIGTERM (`OFFPATH_SHUTDOWN_TIMEOUT`, 10 s).
    pub shutdown_timeout: Duration,
    /// `/health` and `/status` address (`OFFPATH_STATUS_ADDR`, `127.0.0.1:8126`; empty disables).
    pub status_addr: Option<SocketAddr>,
    /// Ship offpath's own counters as `offpath.*` metrics (`OFFPATH_SELF_TELEMETRY`, true; the Lambda
    /// extension defaults it to false).
    pub self_telemetry: bool,
}

/// Lambda-only settings (read by the extension).
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaConfig {
    /// `DD_SERVERLESS_FLUSH_STRATEGY` as given (`adaptive`); parsed by the extension's flush policy.
    pub flush_strategy: String,
    /// Budget for a flush at the end of an invocation (`OFFPATH_LAMBDA_FLUSH_BUDGET_MS`, 200 ms).
    pub flush_budget: Duration,
    /// `OFFPATH_LAMBDA_METRICS`: distribution (default) or agent.
    pub mapping: MetricMapping,
    /// Port of the Telemetry API listener (`OFFPATH_LAMBDA_TELEMETRY_PORT`, 8999; 0 picks a free one).
    pub telemetry_port: u16,
    /// Host name in the Telemetry API destination (`OFFPATH_LAMBDA_TELEMETRY_HOST`, `sandbox.localdomain`).
    pub telemetry_host: String,
    /// Ship Datadog's enhanced metrics (`DD_ENHANCED_METRICS`, true).
    pub enhanced_metrics: bool,
    /// With them, the resource metrics from `/proc` and `/tmp` (`DD_LAMBDA_PROC_ENHANCED_METRICS`, true).
    pub proc_enhanced_metrics: bool,
    /// Port on 127.0.0.1 of the Datadog libraries' endpoints (`OFFPATH_LAMBDA_API_PORT`, 8124; 0 picks one).
    pub api_port: u16,
}

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listeners.
    pub ingest: IngestConfig,
    /// Aggregation.
    pub aggregate: AggregateConfig,
    /// Delivery.
    pub forward: ForwardConfig,
    /// Fallback.
    pub fallback: FallbackConfig,
    /// Operations.
    pub ops: OpsConfig,
    /// Lambda.
    pub lambda: LambdaConfig,
}

/// What `OFFPATH_FALLBACK` accepts.
#[cfg(feature = "cloudwatch")]
const FALLBACK_MODES: &str = "auto, cloudwatch, stdout or off";
/// What `OFFPATH_FALLBACK` accepts in a build without the CloudWatch sink.
#[cfg(not(feature = "cloudwatch"))]
const FALLBACK_MODES: &str = "auto, stdout or off (this build of offpath has no CloudWatch Logs sink: \
     it was built without the `cloudwatch` feature, like the Lambda layer)";
/// Why the CloudWatch keys are refused in a build without the CloudWatch sink.
#[cfg(not(feature = "cloudwatch"))]
const NO_CLOUDWATCH: &str = "no value: this build of offpath has no CloudWatch Logs sink (built \
     without the `cloudwatch` feature, like the Lambda layer); unset it, fallback records go to stdout";

fn key(env: &str) -> &'static Key {
    // KEYS is a static table and every caller below names an entry of it (checked by a test).
    KEYS.iter().find(|k| k.envs[0] == env).unwrap_or(&KEYS[0])
}

struct Reader<'s> {
    src: &'s dyn Source,
}

impl Reader<'_> {
    fn raw(&self, env: &str) -> Option<String> {
        let k = key(env);
        self.src
            .get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn string(&self, env: &str) -> Option<String> {
        self.raw(env)
    }

    fn err(&self, env: &str, value: String, expected: &'static str) -> ConfigError {
        ConfigError {
            key: key(env).envs[0],
            value,
            expected,
        }
    }

    fn parse<T: std::str::FromStr>(
        &self,
        env: &str,
        default: T,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        match self.raw(env) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| self.err(env, v, expected)),
        }
    }

    fn bool(&self, env: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(env) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(self.err(env, v, "true or false")),
            },
        }
    }

    fn nonzero(&self, env: &str, default: usize) -> Result<NonZeroUsize, ConfigError> {
        let n: usize = self.parse(env, default, "a positive integer")?;
        NonZeroUsize::new(n).ok_or_else(|| self.err(env, n.to_string(), "a positive integer"))
    }

    fn seconds(&self, env: &str, default: f64) -> Result<Duration, ConfigError> {
        let s: f64 = self.parse(env, default, "a number of seconds")?;
        Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| self.err(env, s.to_string(), "a positive number of seconds"))
    }

    fn list(&self, env: &str) -> Vec<String> {
        self.raw(env).map(|v| split_list(&v)).unwrap_or_default()
    }
}

/// Split a list the way the Agent accepts it: separated by commas and/or whitespace; a YAML or JSON
/// style `[a, b]` is accepted too.
pub fn split_list(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|s| s.trim_matches(|c| c == '"' || c == '\''))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Name a percentile like the Agent: 0.95 → `95percentile`, 0.299 → `30percentile`.
pub fn percentile_name(p: f64) -> String {
    format!("{}percentile", (p * 100.0).round() as i64)
}

impl Config {
    /// Load from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid key.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env)
    }

    /// Load from a YAML config file (`datadog.yaml` key names) with environment variables over it.
    /// Returns the configuration and the warnings to log (unknown keys in the file).
    ///
    /// # Errors
    /// [`LoadError::File`] for an unreadable or malformed file, [`LoadError::Invalid`] naming the
    /// first invalid key and where it was set.
    pub fn from_file_and_env(path: &Path) -> Result<(Self, Vec<String>), LoadError> {
        let (file, warnings) = yaml::YamlFile::read(path)?;
        let src = yaml::EnvOverFile::new(Env, file);
        match Self::load(&src) {
            Ok(config) => Ok((config, warnings)),
            Err(error) => {
                let origin = src.origin(key(error.key));
                Err(LoadError::Invalid { error, origin })
            }
        }
    }

    /// Load from any [`Source`] (environment, YAML file layered under it, or a test map).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid key.
    pub fn load(src: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader { src };

        // ingest
        // `__random__` (as in the Agent) binds an ephemeral port; the bound address is logged.
        let (port, random_port) = match r.raw("DD_DOGSTATSD_PORT").as_deref() {
            Some("__random__") => (0, true),
            _ => (
                r.parse(
                    "DD_DOGSTATSD_PORT",
                    8125u16,
                    "a UDP port 0-65535 (0 disables UDP) or __random__",
                )?,
                false,
            ),
        };
        let non_local = r.bool("DD_DOGSTATSD_NON_LOCAL_TRAFFIC", false)?;
        let bind_host = match r.string("DD_BIND_HOST") {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(h) if h == "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(h) => h
                .parse()
                .map_err(|_| r.err("DD_BIND_HOST", h, "an IP address such as 127.0.0.1"))?,
        };
        let ip = if non_local {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            bind_host
        };
        let ingest = IngestConfig {
            udp: (port != 0 || random_port).then_some(SocketAddr::new(ip, port)),
            socket: r.string("DD_DOGSTATSD_SOCKET").map(PathBuf::from),
            stream_socket: r.string("DD_DOGSTATSD_STREAM_SOCKET").map(PathBuf::from),
            buffer_size: r.nonzero("DD_DOGSTATSD_BUFFER_SIZE", 8192)?,
            so_rcvbuf: match r.parse::<usize>("DD_DOGSTATSD_SO_RCVBUF", 0, "a size in bytes")? {
                0 => None,
                n => Some(n),
            },
            queue_size: r.nonzero("DD_DOGSTATSD_QUEUE_SIZE", 1024)?,
            receive_threads: r.parse("OFFPATH_RECEIVE_THREADS", 0, "a number of threads")?,
        };

        // tags and host
        let hostname = r.string("DD_HOSTNAME").unwrap_or_default();
        let mut tags = r.list("DD_TAGS");
        tags.extend(r.list("DD_DOGSTATSD_TAGS"));
        for (env, name) in [
            ("DD_ENV", "env"),
            ("DD_SERVICE", "service"),
            ("DD_VERSION", "version"),
        ] {
            if let Some(v) = r.string(env) {
                tags.push(format!("{name}:{v}"));
            }
        }
        let mut namespace = r.string("DD_STATSD_METRIC_NAMESPACE").unwrap_or_default();
        if !namespace.is_empty() && !namespace.ends_with('.') {
            namespace.push('.');
        }
        let histogram_aggregates = match r.raw("DD_HISTOGRAM_AGGREGATES") {
            None => vec![
                HistogramAggregate::Max,
                HistogramAggregate::Median,
                HistogramAggregate::Avg,
                HistogramAggregate::Count,
            ],
            Some(v) => split_list(&v)
                .into_iter()
                .map(|a| match a.as_str() {
                    "max" => Ok(HistogramAggregate::Max),
                    "min" => Ok(HistogramAggregate::Min),
                    "median" => Ok(HistogramAggregate::Median),
                    "avg" => Ok(HistogramAggregate::Avg),
                    "sum" => Ok(HistogramAggregate::Sum),
                    "count" => Ok(HistogramAggregate::Count),
                    _ => Err(r.err(
                        "DD_HISTOGRAM_AGGREGATES",
                        v.clone(),
                        "a list of max, min, median, avg, sum, count",
                    )),
                })
                .collect::<Result<_, _>>()?,
        };
        let histogram_percentiles = match r.raw("DD_HISTOGRAM_PERCENTILES") {
            None => vec![0.95],
            Some(v) => split_list(&v)
                .into_iter()
                .map(|p| {
                    p.parse::<f64>()
                        .ok()
                        .filter(|p| *p > 0.0 && *p < 1.0)
                        .ok_or_else(|| {
                            r.err(
                                "DD_HISTOGRAM_PERCENTILES",
                                v.clone(),
                                "a list of numbers between 0 and 1, such as 0.95",
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let lambda_mapping = match r.string("OFFPATH_LAMBDA_METRICS").as_deref() {
            None | Some("distribution") => MetricMapping::LambdaDistribution,
            Some("agent") => MetricMapping::Agent,
            Some(v) => {
                return Err(r.err(
                    "OFFPATH_LAMBDA_METRICS",
                    v.to_owned(),
                    "distribution or agent",
                ));
            }
        };
        let aggregate = AggregateConfig {
            namespace,
            tags,
            hostname,
            histogram_aggregates,
            histogram_percentiles,
            context_limit: r.nonzero("DD_AGGREGATE_CONTEXT_LIMIT", 100_000)?,
            flush_interval: r.seconds("OFFPATH_FLUSH_INTERVAL", 15.0)?,
            mapping: MetricMapping::Agent,
            workers: match r.parse("OFFPATH_AGGREGATE_WORKERS", 0usize, WORKERS_EXPECTED)? {
                n if n > MAX_AGGREGATE_WORKERS => {
                    return Err(r.err(
                        "OFFPATH_AGGREGATE_WORKERS",
                        n.to_string(),
                        WORKERS_EXPECTED,
                    ));
                }
                n => n,
            },
            own_names: Vec::new(),
        };

        // forward
        let site = r
            .string("DD_SITE")
            .unwrap_or_else(|| "datadoghq.com".to_owned());
        if !site
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
        {
            return Err(r.err("DD_SITE", site, "a Datadog site such as datadoghq.eu"));
        }
        let intake_url = match r.string("DD_DD_URL") {
            Some(u) => {
                let host = u
                    .strip_prefix("https://")
                    .or_else(|| u.strip_prefix("http://"))
                    .map(|rest| rest.trim_end_matches('/'));
                if host.is_none_or(str::is_empty) {
                    return Err(r.err(
                        "DD_DD_URL",
                        u,
                        "an http:// or https:// URL such as https://api.datadoghq.eu",
                    ));
                }
                u.trim_end_matches('/').to_owned()
            }
            None => format!("https://api.{site}"),
        };
        let forward = ForwardConfig {
            api_key: r.string("DD_API_KEY").map(ApiKey),
            api_key_secret_arn: match r.string("DD_API_KEY_SECRET_ARN") {
                None => None,
                Some(arn) => match crate::forward::secret::SecretArn::parse(&arn) {
                    Ok(_) => Some(arn),
                    Err(_) => {
                        return Err(r.err(
                            "DD_API_KEY_SECRET_ARN",
                            arn,
                            "a Secrets Manager secret ARN such as \
                             arn:aws:secretsmanager:us-east-1:123456789012:secret:dd-api-key-AbCdEf",
                        ));
                    }
                },
            },
            intake_url,
            site,
            proxy: r.string("DD_PROXY_HTTPS"),
            skip_tls_verify: r.bool("DD_SKIP_SSL_VALIDATION", false)?,
            retry_queue_max_bytes: r.parse(
                "DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE",
                15 * 1024 * 1024,
                "a size in bytes",
            )?,
            timeout: r.seconds("DD_FORWARDER_TIMEOUT", 20.0)?,
            zstd_level: r.parse("OFFPATH_ZSTD_LEVEL", 1, "a zstd level 1-19")?,
            keep_idle_connections: true,
        };

        // fallback
        let mode = match r.string("OFFPATH_FALLBACK").as_deref() {
            None | Some("auto") => FallbackMode::Auto,
            Some("cloudwatch") if cfg!(feature = "cloudwatch") => FallbackMode::CloudWatch,
            Some("stdout") => FallbackMode::Stdout,
            Some("off") => FallbackMode::Off,
            Some(v) => {
                return Err(r.err("OFFPATH_FALLBACK", v.to_owned(), FALLBACK_MODES));
            }
        };
        let log_group = r.string("OFFPATH_FALLBACK_LOG_GROUP");
        #[cfg(not(feature = "cloudwatch"))]
        for k in ["OFFPATH_FALLBACK_LOG_GROUP", "OFFPATH_FALLBACK_LOG_STREAM"] {
            if let Some(v) = r.string(k) {
                return Err(r.err(k, v, NO_CLOUDWATCH));
            }
        }
        if mode == FallbackMode::CloudWatch && log_group.is_none() {
            return Err(r.err(
                "OFFPATH_FALLBACK_LOG_GROUP",
                String::new(),
                "a log group name when OFFPATH_FALLBACK=cloudwatch",
            ));
        }
        let format = match r.string("OFFPATH_FALLBACK_FORMAT").as_deref() {
            None | Some("offpath") => FallbackFormat::Offpath,
            Some("forwarder") => FallbackFormat::Forwarder,
            Some("emf") => FallbackFormat::Emf,
            Some(v) => {
                return Err(r.err(
                    "OFFPATH_FALLBACK_FORMAT",
                    v.to_owned(),
                    "offpath, forwarder or emf",
                ));
            }
        };
        let fallback = FallbackConfig {
            mode,
            log_group,
            log_stream: r.string("OFFPATH_FALLBACK_LOG_STREAM"),
            format,
            emf_dimensions: r.list("OFFPATH_FALLBACK_EMF_DIMENSIONS"),
            emf_namespace: r
                .string("OFFPATH_FALLBACK_EMF_NAMESPACE")
                .unwrap_or_else(|| "offpath".to_owned()),
        };

        // ops
        let status_addr = match src.get(key("OFFPATH_STATUS_ADDR")) {
            None => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8126)),
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(v.trim().parse().map_err(|_| {
                r.err(
                    "OFFPATH_STATUS_ADDR",
                    v.clone(),
                    "an address such as 127.0.0.1:8126, or empty to disable",
                )
            })?),
        };
        let ops = OpsConfig {
            log_level: r
                .string("DD_LOG_LEVEL")
                .unwrap_or_else(|| "info".to_owned()),
            shutdown_timeout: r.seconds("OFFPATH_SHUTDOWN_TIMEOUT", 10.0)?,
            status_addr,
            self_telemetry: r.bool("OFFPATH_SELF_TELEMETRY", true)?,
        };

        let lambda = LambdaConfig {
            flush_strategy: r
                .string("DD_SERVERLESS_FLUSH_STRATEGY")
                .unwrap_or_else(|| "adaptive".to_owned()),
            flush_budget: Duration::from_millis(r.parse(
                "OFFPATH_LAMBDA_FLUSH_BUDGET_MS",
                200,
                "a number of milliseconds",
            )?),
            mapping: lambda_mapping,
            telemetry_port: r.parse(
                "OFFPATH_LAMBDA_TELEMETRY_PORT",
                8999,
                "a TCP port 0-65535 (0 picks a free port)",
            )?,
            telemetry_host: r
                .string("OFFPATH_LAMBDA_TELEMETRY_HOST")
                .unwrap_or_else(|| "sandbox.localdomain".to_owned()),
            enhanced_metrics: r.bool("DD_ENHANCED_METRICS", true)?,
            proc_enhanced_metrics: r.bool("DD_LAMBDA_PROC_ENHANCED_METRICS", true)?,
            api_port: r.parse(
                "OFFPATH_LAMBDA_API_PORT",
                8124,
                "a TCP port 0-65535 (0 picks a free port)",
            )?,
        };

        Ok(Self {
            ingest,
            aggregate,
            forward,
            fallback,
            ops,
            lambda,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load(&move |k: &str| map.get(k).cloned())
    }

    #[test]
    fn defaults_listen_on_loopback_8125_with_no_api_key() {
        let c = load(&[]).unwrap();
        assert_eq!(c.ingest.udp, Some("127.0.0.1:8125".parse().unwrap()));
        assert_eq!(c.forward.api_key, None);
        assert_eq!(c.forward.intake_url, "https://api.datadoghq.com");
        assert_eq!(c.aggregate.flush_interval, Duration::from_secs(15));
        assert_eq!(c.ops.status_addr, Some("127.0.0.1:8126".parse().unwrap()));
    }

    #[test]
    fn port_zero_disables_udp_and_non_local_binds_all_interfaces() {
        assert_eq!(
            load(&[("DD_DOGSTATSD_PORT", "0")]).unwrap().ingest.udp,
            None
        );
        let c = load(&[("DD_DOGSTATSD_NON_LOCAL_TRAFFIC", "true")]).unwrap();
        assert_eq!(c.ingest.udp, Some("0.0.0.0:8125".parse().unwrap()));
    }

    #[test]
    fn dd_dd_url_wins_over_dd_url_and_site() {
        let c = load(&[
            ("DD_URL", "http://b"),
            ("DD_DD_URL", "http://a/"),
            ("DD_SITE", "datadoghq.eu"),
        ])
        .unwrap();
        assert_eq!(c.forward.intake_url, "http://a");
        let c = load(&[("DD_URL", "http://b")]).unwrap();
        assert_eq!(c.forward.intake_url, "http://b");
        let c = load(&[("DD_SITE", "datadoghq.eu")]).unwrap();
        assert_eq!(c.forward.intake_url, "https://api.datadoghq.eu");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = load(&[("DD_DOGSTATSD_PORT", "eighty")]).unwrap_err();
        assert_eq!(e.key, "DD_DOGSTATSD_PORT");
        assert!(e.to_string().contains("DD_DOGSTATSD_PORT"));
        let e = load(&[("OFFPATH_FALLBACK", "maybe")]).unwrap_err();
        assert_eq!(e.key, "OFFPATH_FALLBACK");
    }

    #[cfg(feature = "cloudwatch")]
    #[test]
    fn the_cloudwatch_fallback_needs_a_log_group() {
        let e = load(&[("OFFPATH_FALLBACK", "cloudwatch")]).unwrap_err();
        assert_eq!(e.key, "OFFPATH_FALLBACK_LOG_GROUP");
        let c = load(&[
            ("OFFPATH_FALLBACK", "cloudwatch"),
            ("OFFPATH_FALLBACK_LOG_GROUP", "/g"),
        ])
        .unwrap();
        assert_eq!(c.fallback.mode, FallbackMode::CloudWatch);
        assert_eq!(c.fallback.log_group.as_deref(), Some("/g"));
    }

    #[cfg(not(feature = "cloudwatch"))]
    #[test]
    fn a_build_without_cloudwatch_refuses_every_cloudwatch_setting_by_name() {
        for (env, value) in [
            ("OFFPATH_FALLBACK", "cloudwatch"),
            ("OFFPATH_FALLBACK_LOG_GROUP", "/g"),
            ("OFFPATH_FALLBACK_LOG_STREAM", "s"),
        ] {
            let e = load(&[(env, value)]).unwrap_err();
            assert_eq!(e.key, env);
            let msg = e.to_string();
            assert!(msg.contains("no CloudWatch Logs sink"), "{msg}");
            assert!(msg.contains("`cloudwatch` feature"), "{msg}");
        }
        let c = load(&[("OFFPATH_FALLBACK", "stdout")]).unwrap();
        assert_eq!(c.fallback.mode, FallbackMode::Stdout);
    }

    #[test]
    fn global_tags_accept_spaces_and_commas_and_env_service_version() {
        let c = load(&[
            ("DD_TAGS", "a:1 b:2,c:3"),
            ("DD_DOGSTATSD_TAGS", "d:4"),
            ("DD_ENV", "prod"),
            ("DD_SERVICE", "web"),
        ])
        .unwrap();
        assert_eq!(
            c.aggregate.tags,
            ["a:1", "b:2", "c:3", "d:4", "env:prod", "service:web"]
        );
    }

    #[test]
    fn percentiles_are_named_like_the_agent() {
        assert_eq!(percentile_name(0.95), "95percentile");
        assert_eq!(percentile_name(0.299), "30percentile");
    }

    #[test]
    fn aggregate_workers_default_to_auto_and_are_bounded() {
        assert_eq!(load(&[]).unwrap().aggregate.workers, 0);
        let c = load(&[("OFFPATH_AGGREGATE_WORKERS", "3")]).unwrap();
        assert_eq!(c.aggregate.workers, 3);
        for bad in ["65", "-1", "many"] {
            let e = load(&[("OFFPATH_AGGREGATE_WORKERS", bad)]).unwrap_err();
            assert_eq!(e.key, "OFFPATH_AGGREGATE_WORKERS");
        }
    }

    #[test]
    fn empty_status_addr_disables_the_endpoint() {
        let c = load(&[("OFFPATH_STATUS_ADDR", "")]).unwrap();
        assert_eq!(c.ops.status_addr, None);
    }

    #[test]
    fn a_secret_arn_is_checked_at_load_and_names_the_key() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dd-AbCdEf";
        let c = load(&[("DD_API_KEY_SECRET_ARN", arn)]).unwrap();
        assert_eq!(c.forward.api_key_secret_arn.as_deref(), Some(arn));
        assert_eq!(c.forward.api_key, None);
        let e = load(&[("DD_API_KEY_SECRET_ARN", "dd-api-key")]).unwrap_err();
        assert_eq!(e.key, "DD_API_KEY_SECRET_ARN");
        assert!(e.to_string().contains("arn:aws:secretsmanager:"), "{e}");
    }

    #[test]
    fn the_api_key_is_never_printed() {
        let c = load(&[("DD_API_KEY", "abcdef0123456789")]).unwrap();
        assert!(!format!("{c:?}").contains("abcdef0123456789"));
    }

    #[test]
    fn every_key_read_by_load_is_in_the_table() {
        let src = include_str!("mod.rs");
        for env in src.split('"').filter(|s| {
            (s.starts_with("DD_") || s.starts_with("OFFPATH_"))
                && !s.ends_with('_')
                && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        }) {
            assert!(
                KEYS.iter().any(|k| k.envs.contains(&env)),
                "{env} is read but not listed in KEYS"
            );
        }
    }
}
