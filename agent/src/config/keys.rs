//! Every configuration key offpath reads, declared once, in documentation order.
//!
//! Each declaration gives, in this order: the environment names (first wins), the `datadog.yaml` name
//! (`offpath.<name>` for offpath's own section), the default (text parsed like a configured value), the
//! parser, and the doc line of the README table. The section modules read these statics through their
//! `Reader`; `docs/architecture.md` says how to add one.

use super::endpoints::{self, AdditionalEndpoints};
use super::key::{AnySetting, KeyDefault, NONE, Setting};
use super::parse;
use super::values::{self as v, FallbackFormat, FallbackMode, FlushStrategy, HistogramAggregate};
use super::values::{MetricMapping, TagCardinality};
use crate::auth::{ApiKey, SecretArn};
use crate::enrich::MapperProfiles;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use tracing::level_filters::LevelFilter;

/// Declares each key as a `pub static` and lists them all in [`KEYS`].
macro_rules! keys {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = $setting:expr ;)*) => {
        $( $(#[$doc])* pub static $name: Setting<$ty> = $setting; )*

        /// Every key, in documentation order.
        pub static KEYS: &[&dyn AnySetting] = &[$( &$name ),*];
    };
}

use KeyDefault::{ByDeployment, Unset, Value};

keys! {
    // Delivery: the key, the site, the intake.

    /// `DD_API_KEY`.
    API_KEY: ApiKey = Setting::new(&["DD_API_KEY"], "api_key", NONE, v::api_key,
        "Datadog API key. Without it (and without DD_API_KEY_SECRET_ARN) offpath runs locally and \
         prints flushed metrics to stdout as offpath records.");
    /// `DD_API_KEY_SECRET_ARN`.
    API_KEY_SECRET_ARN: SecretArn = Setting::new(&["DD_API_KEY_SECRET_ARN"],
        "api_key_secret_arn", NONE, v::secret_arn,
        "AWS Secrets Manager secret ARN whose plain-text value is the API key, used when DD_API_KEY is \
         unset. Read at the first flush (payloads wait in the retry queue until then); needs \
         secretsmanager:GetSecretValue. Credentials: the sidecar uses the AWS default chain \
         (environment, profile/SSO, web identity, ECS task role, EC2 instance profile); the Lambda \
         layer AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, else \
         AWS_CONTAINER_CREDENTIALS_FULL_URI (SnapStart). Endpoint override: \
         AWS_ENDPOINT_URL_SECRETS_MANAGER, then AWS_ENDPOINT_URL.");
    /// `DD_SITE`.
    SITE: String = Setting::new(&["DD_SITE"], "site", Value("datadoghq.com"), v::site,
        "Datadog site; the intake is https://api.<site>. A site that is not one of Datadog's \
         (datadoghq.com, us3.datadoghq.com, us5.datadoghq.com, datadoghq.eu, ap1.datadoghq.com, \
         ap2.datadoghq.com, ddog-gov.com, us2.ddog-gov.com) is logged as a warning.");
    /// `DD_DD_URL`, `DD_URL`.
    DD_URL: String = Setting::new(&["DD_DD_URL", "DD_URL"], "dd_url", NONE,
        v::intake_url,
        "Intake URL override (scheme, host, port; no path). Wins over DD_SITE. A plain http:// URL is \
         logged as a warning (the API key travels unencrypted).");
    /// `DD_ADDITIONAL_ENDPOINTS`.
    ADDITIONAL_ENDPOINTS: AdditionalEndpoints = Setting::new(&["DD_ADDITIONAL_ENDPOINTS"],
        "additional_endpoints", NONE, endpoints::parse,
        "Dual shipping: intake URL to a list of API keys, JSON ({\"https://app.datadoghq.eu\": \
         [\"<key>\"]}; a YAML mapping in the file). Every payload goes to every (endpoint, key), at \
         most 8 in all; the main endpoint's URL shares its retry queue (keys merged, duplicates \
         removed, as in the Agent). Each endpoint has its own retry queue, breaker and ledger.")
        .json();
    /// `DD_PROXY_HTTPS`, `HTTPS_PROXY`.
    PROXY_HTTPS: String = Setting::new(&["DD_PROXY_HTTPS", "HTTPS_PROXY"], "proxy.https",
        NONE, parse::text, "HTTPS proxy for the intake.");
    /// `DD_SKIP_SSL_VALIDATION`.
    SKIP_SSL_VALIDATION: bool = Setting::new(&["DD_SKIP_SSL_VALIDATION"], "skip_ssl_validation",
        Value("false"), parse::boolean,
        "Disable TLS certificate verification (logged as a warning; never in production).");
    /// `DD_HOSTNAME`.
    HOSTNAME: String = Setting::new(&["DD_HOSTNAME"], "hostname", NONE, parse::text,
        "Host set on every metric unless a host: tag overrides it. Unset: the sidecar resolves one as \
         the Datadog Agent does (hostname_file, none on ECS Fargate, the FQDN with hostname_fqdn, the \
         OS hostname, the EC2 instance id when that is an EC2 default); offpath check shows it.");
    /// `DD_HOSTNAME_FILE`.
    HOSTNAME_FILE: PathBuf = Setting::new(&["DD_HOSTNAME_FILE"], "hostname_file", NONE,
        parse::path, "File whose content is the hostname, used when DD_HOSTNAME is unset.");
    /// `DD_HOSTNAME_FQDN`.
    HOSTNAME_FQDN: bool = Setting::new(&["DD_HOSTNAME_FQDN"], "hostname_fqdn", Value("false"),
        parse::boolean,
        "Use the fully qualified name (what hostname -f prints) rather than the OS hostname.");
    /// `DD_HOSTNAME_TRUST_UTS_NAMESPACE`.
    HOSTNAME_TRUST_UTS_NAMESPACE: bool = Setting::new(&["DD_HOSTNAME_TRUST_UTS_NAMESPACE"],
        "hostname_trust_uts_namespace", Value("false"), parse::boolean,
        "Use the OS hostname even in a container's own UTS namespace (where it names the container).");
    /// `DD_EC2_PRIORITIZE_INSTANCE_ID_AS_HOSTNAME`.
    EC2_PRIORITIZE_INSTANCE_ID_AS_HOSTNAME: bool = Setting::new(
        &["DD_EC2_PRIORITIZE_INSTANCE_ID_AS_HOSTNAME"], "ec2_prioritize_instance_id_as_hostname",
        Value("false"), parse::boolean,
        "On EC2, use the instance id as the hostname whatever the OS hostname.");
    /// `DD_EC2_METADATA_TIMEOUT`.
    EC2_METADATA_TIMEOUT: Duration = Setting::new(&["DD_EC2_METADATA_TIMEOUT"],
        "ec2_metadata_timeout", Value("300"), v::ec2_timeout,
        "Milliseconds (1 to 60000) per request to the EC2 instance metadata service \
         (AWS_EC2_METADATA_SERVICE_ENDPOINT, else 169.254.169.254; AWS_EC2_METADATA_DISABLED=true \
         turns it off).");
    /// `DD_CLOUD_PROVIDER_METADATA`.
    CLOUD_PROVIDER_METADATA: bool = Setting::new(&["DD_CLOUD_PROVIDER_METADATA"],
        "cloud_provider_metadata", Value("aws gcp azure alibaba oracle ibm"), v::aws_metadata,
        "Cloud metadata services offpath may ask; without aws the EC2 instance metadata service is \
         never contacted (offpath asks no other).").list();
    /// `DD_DOGSTATSD_TAG_CARDINALITY`.
    DOGSTATSD_TAG_CARDINALITY: TagCardinality = Setting::new(&["DD_DOGSTATSD_TAG_CARDINALITY"],
        "dogstatsd_tag_cardinality", Value("low"), v::tag_cardinality,
        "ECS task tags on every metric: low, or orchestrator (adds task_arn); high is orchestrator \
         here.");
    /// `DD_DISABLE_CLUSTER_NAME_TAG_KEY`.
    DISABLE_CLUSTER_NAME_TAG_KEY: bool = Setting::new(&["DD_DISABLE_CLUSTER_NAME_TAG_KEY"],
        "disable_cluster_name_tag_key", Value("false"), parse::boolean,
        "Leave cluster_name out of the ECS task tags (ecs_cluster_name stays).");

    // Listeners.

    /// `DD_DOGSTATSD_PORT`.
    DOGSTATSD_PORT: Option<u16> = Setting::new(&["DD_DOGSTATSD_PORT"], "dogstatsd_port",
        Value("8125"), v::udp_port,
        "UDP port; 0 disables UDP, `__random__` binds a free port (logged).");
    /// `DD_BIND_HOST`.
    BIND_HOST: IpAddr = Setting::new(&["DD_BIND_HOST"], "bind_host", Value("127.0.0.1"),
        v::bind_host, "Address the UDP listener binds to.");
    /// `DD_DOGSTATSD_NON_LOCAL_TRAFFIC`.
    DOGSTATSD_NON_LOCAL_TRAFFIC: bool = Setting::new(&["DD_DOGSTATSD_NON_LOCAL_TRAFFIC"],
        "dogstatsd_non_local_traffic", Value("false"), parse::boolean,
        "Listen on all interfaces instead of DD_BIND_HOST.");
    /// `DD_DOGSTATSD_SOCKET`.
    DOGSTATSD_SOCKET: PathBuf = Setting::new(&["DD_DOGSTATSD_SOCKET"], "dogstatsd_socket",
        NONE, parse::path, "Unix datagram socket path.");
    /// `DD_DOGSTATSD_STREAM_SOCKET`.
    DOGSTATSD_STREAM_SOCKET: PathBuf = Setting::new(&["DD_DOGSTATSD_STREAM_SOCKET"],
        "dogstatsd_stream_socket", NONE, parse::path,
        "Unix stream socket path (frames: u32 little-endian length + payload).");
    /// `DD_DOGSTATSD_BUFFER_SIZE`.
    DOGSTATSD_BUFFER_SIZE: NonZeroUsize = Setting::new(&["DD_DOGSTATSD_BUFFER_SIZE"],
        "dogstatsd_buffer_size", Value("8192"), v::buffer_size,
        "Largest datagram or stream frame in bytes, at most 1048576; larger ones are counted as \
         truncated/oversize, never parsed.");
    /// `DD_DOGSTATSD_SO_RCVBUF`.
    DOGSTATSD_SO_RCVBUF: usize = Setting::new(&["DD_DOGSTATSD_SO_RCVBUF"],
        "dogstatsd_so_rcvbuf", Unset("8388608 asked"), v::so_rcvbuf,
        "Socket receive buffer in bytes, at most 1073741824; the size the kernel grants is logged.");
    /// `DD_DOGSTATSD_QUEUE_SIZE`.
    DOGSTATSD_QUEUE_SIZE: NonZeroUsize = Setting::new(&["DD_DOGSTATSD_QUEUE_SIZE"],
        "dogstatsd_queue_size", Value("1024"), v::queue_size,
        "Packets queued between the listeners and each aggregate worker, at most 262144 and \
         1048576 over all the workers (allocated at start); a full queue drops and counts.");
    /// `OFFPATH_RECEIVE_THREADS`.
    RECEIVE_THREADS: usize = Setting::new(&["OFFPATH_RECEIVE_THREADS"], "offpath.receive_threads",
        Value("0"), v::receive_threads,
        "UDP receive threads (SO_REUSEPORT sockets), at most 64; 0 is one per core, at most 4.");
    /// `OFFPATH_RECEIVE_PACE`.
    RECEIVE_PACE: Option<Duration> = Setting::new(&["OFFPATH_RECEIVE_PACE"],
        "offpath.receive_pace", ByDeployment { sidecar: "0", lambda: "5" }, v::receive_pace,
        "Milliseconds a UDP receive thread sleeps between emptying its socket while traffic is light, \
         at most 100; 0 wakes for every datagram. Fewer wake-ups (CPU) per Lambda invocation; a flush \
         empties the sockets first, and a socket found a quarter full is not slept on.");

    // Tags and aggregation.

    /// `DD_TAGS`.
    TAGS: Vec<String> = Setting::new(&["DD_TAGS"], "tags", Value(""), parse::list,
        "Global tags, separated by spaces or commas.").list();
    /// `DD_DOGSTATSD_TAGS`.
    DOGSTATSD_TAGS: Vec<String> = Setting::new(&["DD_DOGSTATSD_TAGS"], "dogstatsd_tags", Value(""),
        parse::list, "Extra tags for everything received over DogStatsD.").list();
    /// `DD_ENV`.
    ENV: String = Setting::new(&["DD_ENV"], "env", NONE, parse::text, "Adds env:<value>.");
    /// `DD_SERVICE`.
    SERVICE: String = Setting::new(&["DD_SERVICE"], "service", NONE, parse::text,
        "Adds service:<value>.");
    /// `DD_VERSION`.
    VERSION: String = Setting::new(&["DD_VERSION"], "version", NONE, parse::text,
        "Adds version:<value>.");
    /// `DD_STATSD_METRIC_NAMESPACE`.
    STATSD_METRIC_NAMESPACE: String = Setting::new(&["DD_STATSD_METRIC_NAMESPACE"],
        "statsd_metric_namespace", NONE, parse::text,
        "Prefix for every metric name (a trailing . is added).");
    /// `DD_DOGSTATSD_MAPPER_PROFILES`.
    DOGSTATSD_MAPPER_PROFILES: MapperProfiles = Setting::new(&["DD_DOGSTATSD_MAPPER_PROFILES"],
        "dogstatsd_mapper_profiles", NONE, v::mapper_profiles,
        "Metric name mapping, before the namespace (a YAML list in the file, JSON in the \
         environment): the first profile whose prefix starts a name (or prefix *) maps it with its \
         first mapping that matches (match_type wildcard, the default, or regex) to name, plus tags, \
         with $1 and ${name} expanded. Not in the Lambda extension (a start-up error there).").json();
    /// `DD_DOGSTATSD_MAPPER_CACHE_SIZE`.
    DOGSTATSD_MAPPER_CACHE_SIZE: NonZeroUsize = Setting::new(&["DD_DOGSTATSD_MAPPER_CACHE_SIZE"],
        "dogstatsd_mapper_cache_size", Value("1000"), v::cache_size,
        "Metric names whose mapping each aggregate worker remembers, at most 1000000 (the cache is \
         emptied when full).");
    /// `DD_METRIC_FILTERLIST`.
    METRIC_FILTERLIST: Vec<String> = Setting::new(&["DD_METRIC_FILTERLIST"], "metric_filterlist",
        Value(""), parse::list,
        "Metric names dropped, after mapping and the namespace, counted as points.dropped.filtered; \
         when empty, statsd_metric_blocklist is used.").list();
    /// `DD_METRIC_FILTERLIST_MATCH_PREFIX`.
    METRIC_FILTERLIST_MATCH_PREFIX: bool = Setting::new(&["DD_METRIC_FILTERLIST_MATCH_PREFIX"],
        "metric_filterlist_match_prefix", Value("false"), parse::boolean,
        "metric_filterlist entries are name prefixes.");
    /// `DD_STATSD_METRIC_BLOCKLIST`.
    STATSD_METRIC_BLOCKLIST: Vec<String> = Setting::new(&["DD_STATSD_METRIC_BLOCKLIST"],
        "statsd_metric_blocklist", Value(""), parse::list,
        "The older name of metric_filterlist, used when that is empty.").list();
    /// `DD_STATSD_METRIC_BLOCKLIST_MATCH_PREFIX`.
    STATSD_METRIC_BLOCKLIST_MATCH_PREFIX: bool = Setting::new(
        &["DD_STATSD_METRIC_BLOCKLIST_MATCH_PREFIX"], "statsd_metric_blocklist_match_prefix",
        Value("false"), parse::boolean, "statsd_metric_blocklist entries are name prefixes.");
    /// `DD_HISTOGRAM_AGGREGATES`.
    HISTOGRAM_AGGREGATES: Vec<HistogramAggregate> = Setting::new(&["DD_HISTOGRAM_AGGREGATES"],
        "histogram_aggregates", Value("max,median,avg,count"), v::histogram_aggregates,
        "Histogram aggregates: max, min, median, avg, sum, count.").list();
    /// `DD_HISTOGRAM_PERCENTILES`.
    HISTOGRAM_PERCENTILES: Vec<f64> = Setting::new(&["DD_HISTOGRAM_PERCENTILES"],
        "histogram_percentiles", Value("0.95"), v::histogram_percentiles,
        "Histogram percentiles in (0, 1).").list();
    /// `DD_AGGREGATE_CONTEXT_LIMIT`.
    AGGREGATE_CONTEXT_LIMIT: NonZeroUsize = Setting::new(&["DD_AGGREGATE_CONTEXT_LIMIT"],
        "aggregate_context_limit", Value("100000"), v::context_limit,
        "Live contexts, at most 10000000; new contexts over the limit are dropped and counted.");
    /// `OFFPATH_CONTEXT_STATS`.
    CONTEXT_STATS: bool = Setting::new(&["OFFPATH_CONTEXT_STATS"], "offpath.context_stats",
        Value("true"), parse::boolean,
        "Keep live contexts, points/s and context-limit drops per metric name for \
         /status/contexts and offpath stats (counted when a context is made or forgotten and at \
         flush), and warn when one name holds over a quarter of DD_AGGREGATE_CONTEXT_LIMIT.");
    /// `OFFPATH_AGGREGATE_WORKERS`.
    AGGREGATE_WORKERS: usize = Setting::new(&["OFFPATH_AGGREGATE_WORKERS"],
        "offpath.aggregate_workers", ByDeployment { sidecar: "0", lambda: "1" }, v::workers,
        "Parse and aggregate threads, at most 64; 0 is one per core, at most 4. Lines go by metric \
         name and tag set, so each context lives in one. Each has its own DD_DOGSTATSD_QUEUE_SIZE queue.");
    /// `OFFPATH_FLUSH_INTERVAL`.
    FLUSH_INTERVAL: Duration = Setting::new(&["OFFPATH_FLUSH_INTERVAL"], "offpath.flush_interval",
        Value("15"), parse::seconds,
        "Seconds between flushes of closed 10 s buckets (sidecar), at most 3600.");

    // Retries and payloads.

    /// `DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE`.
    RETRY_QUEUE_MAX_SIZE: usize = Setting::new(&["DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE"],
        "forwarder_retry_queue_payloads_max_size", Value("15728640"), v::retry_queue_bytes,
        "Retry queue bound in bytes, at most 1073741824; the oldest payloads overflow to the \
         fallback.");
    /// `DD_FORWARDER_TIMEOUT`.
    FORWARDER_TIMEOUT: Duration = Setting::new(&["DD_FORWARDER_TIMEOUT"], "forwarder_timeout",
        Value("20"), parse::seconds,
        "Seconds before an intake request times out, at most 3600.");
    /// `OFFPATH_ZSTD_LEVEL`.
    ZSTD_LEVEL: i32 = Setting::new(&["OFFPATH_ZSTD_LEVEL"], "offpath.zstd_level", Value("1"),
        v::zstd_level, "zstd compression level for payloads, 1 to 22.");
    /// `DD_FORWARDER_STORAGE_PATH`.
    FORWARDER_STORAGE_PATH: PathBuf = Setting::new(&["DD_FORWARDER_STORAGE_PATH"],
        "forwarder_storage_path", NONE, parse::path,
        "Sidecar: directory of the on-disk retry storage (one sub-directory per destination, locked \
         by one process): payloads that failed a first attempt are written there and sent at the next \
         start after a crash. Used when DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES is above 0; ignored in \
         Lambda.");
    /// `DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES`.
    FORWARDER_STORAGE_MAX_SIZE: u64 = Setting::new(&["DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES"],
        "forwarder_storage_max_size_in_bytes", Value("0"), v::storage_bytes,
        "Sidecar: bytes the retry storage may hold, at most 1099511627776, shared evenly by the \
         destinations; 0 turns it off (as in the Agent). Over it the oldest payloads go to the \
         fallback.");

    // Fallback.

    /// `OFFPATH_FALLBACK`.
    FALLBACK: FallbackMode = Setting::new(&["OFFPATH_FALLBACK"], "offpath.fallback", Value("auto"),
        v::mode,
        "auto (stdout in Lambda, CloudWatch when a log group is set, else stdout), cloudwatch, \
         stdout, off.");
    /// `OFFPATH_FALLBACK_LOG_GROUP`.
    FALLBACK_LOG_GROUP: String = Setting::new(&["OFFPATH_FALLBACK_LOG_GROUP"],
        "offpath.fallback_log_group", NONE, parse::text, "CloudWatch Logs group for the fallback.");
    /// `OFFPATH_FALLBACK_LOG_STREAM`.
    FALLBACK_LOG_STREAM: String = Setting::new(&["OFFPATH_FALLBACK_LOG_STREAM"],
        "offpath.fallback_log_stream", Unset("<host>-<pid>"), parse::text,
        "CloudWatch Logs stream for the fallback.");
    /// `OFFPATH_FALLBACK_FORMAT`.
    FALLBACK_FORMAT: FallbackFormat = Setting::new(&["OFFPATH_FALLBACK_FORMAT"],
        "offpath.fallback_format", Value("offpath"), v::format,
        "offpath (replayable), forwarder ({m,v,e,t} lines), emf (CloudWatch metrics).");
    /// `OFFPATH_FALLBACK_EMF_DIMENSIONS`.
    FALLBACK_EMF_DIMENSIONS: Vec<String> = Setting::new(&["OFFPATH_FALLBACK_EMF_DIMENSIONS"],
        "offpath.fallback_emf_dimensions", Value(""), parse::list,
        "Tag keys that become EMF dimensions.").list();
    /// `OFFPATH_FALLBACK_EMF_NAMESPACE`.
    FALLBACK_EMF_NAMESPACE: String = Setting::new(&["OFFPATH_FALLBACK_EMF_NAMESPACE"],
        "offpath.fallback_emf_namespace", Value("offpath"), parse::text,
        "CloudWatch namespace of EMF records.");

    // Operations.

    /// `DD_LOG_LEVEL`.
    LOG_LEVEL: LevelFilter = Setting::new(&["DD_LOG_LEVEL"], "log_level", Value("info"),
        v::log_level,
        "Log level: trace, debug, info, warn (or warning), error, critical (as error) or off, in any \
         case; logs go to stderr.");
    /// `OFFPATH_SHUTDOWN_TIMEOUT`.
    SHUTDOWN_TIMEOUT: Duration = Setting::new(&["OFFPATH_SHUTDOWN_TIMEOUT"],
        "offpath.shutdown_timeout", Value("10"), parse::seconds,
        "Seconds to drain, flush and deliver on SIGTERM/SIGINT, at most 3600.");
    /// `OFFPATH_STATUS_ADDR`.
    STATUS_ADDR: Option<SocketAddr> = Setting::new(&["OFFPATH_STATUS_ADDR"], "offpath.status_addr",
        Value("127.0.0.1:8126"), v::status_addr,
        "Address of /health and /status; empty disables. An address other than loopback is logged \
         as a warning. Taken at start: an error when set, a warning (offpath runs without it) on the \
         default.").empty_is_a_value();
    /// `OFFPATH_SELF_TELEMETRY`.
    SELF_TELEMETRY: bool = Setting::new(&["OFFPATH_SELF_TELEMETRY"], "offpath.self_telemetry",
        ByDeployment { sidecar: "true", lambda: "false" }, parse::boolean,
        "Ship offpath's own counters as offpath.* metrics. Off by default in Lambda, where every \
         sandbox would ship its own series (custom metrics).");

    /// `OFFPATH_RELEASE_STARTUP_PAGES`.
    RELEASE_STARTUP_PAGES: bool = Setting::new(&["OFFPATH_RELEASE_STARTUP_PAGES"],
        "offpath.release_startup_pages", ByDeployment { sidecar: "true", lambda: "false" },
        parse::boolean,
        "Once, after the first flush, hand the kernel back the pages of code and read-only data that \
         only start-up touched (madvise MADV_PAGEOUT on the binary's file mappings): idle RSS drops by \
         about half; a page used again is read back on its next touch. Off in Lambda, where the \
         sandbox is short-lived and a re-read would land in an invocation.");

    // Lambda.

    /// `DD_SERVERLESS_FLUSH_STRATEGY`.
    SERVERLESS_FLUSH_STRATEGY: FlushStrategy = Setting::new(&["DD_SERVERLESS_FLUSH_STRATEGY"],
        "serverless_flush_strategy", Value("adaptive"), v::flush_strategy,
        "Lambda: end, end,<ms>, periodically,<ms>, continuously,<ms>, adaptive (ms at most \
         3600000).");
    /// `OFFPATH_LAMBDA_FLUSH_BUDGET_MS`.
    LAMBDA_FLUSH_BUDGET: Duration = Setting::new(&["OFFPATH_LAMBDA_FLUSH_BUDGET_MS"],
        "offpath.lambda_flush_budget_ms", Value("200"), v::flush_budget,
        "Lambda: milliseconds a flush at the end of an invocation may take, at most 3600000.");
    /// `OFFPATH_LAMBDA_METRICS`.
    LAMBDA_METRICS: MetricMapping = Setting::new(&["OFFPATH_LAMBDA_METRICS"],
        "offpath.lambda_metrics", Value("distribution"), v::lambda_metrics,
        "Lambda: distribution (c, h, ms, d as sketches) or agent (sidecar semantics).");
    /// `OFFPATH_LAMBDA_TELEMETRY_PORT`.
    LAMBDA_TELEMETRY_PORT: u16 = Setting::new(&["OFFPATH_LAMBDA_TELEMETRY_PORT"],
        "offpath.lambda_telemetry_port", Value("8999"), v::telemetry_port,
        "Lambda: port of the Telemetry API listener (0 picks a free port).");
    /// `OFFPATH_LAMBDA_TELEMETRY_HOST`.
    LAMBDA_TELEMETRY_HOST: String = Setting::new(&["OFFPATH_LAMBDA_TELEMETRY_HOST"],
        "offpath.lambda_telemetry_host", Value("sandbox.localdomain"), parse::text,
        "Lambda: host name Lambda posts telemetry to (the listener binds 0.0.0.0).");
    /// `DD_ENHANCED_METRICS`.
    ENHANCED_METRICS: bool = Setting::new(&["DD_ENHANCED_METRICS"], "enhanced_metrics",
        Value("true"), parse::boolean,
        "Lambda: ship Datadog's enhanced metrics (aws.lambda.enhanced.*: invocations, errors, \
         durations, memory, estimated cost) as distributions; the aws.lambda.enhanced.invocations and \
         .errors lines Datadog's libraries send over DogStatsD are then dropped (own_metric): offpath \
         counts both once per request id.");
    /// `DD_LAMBDA_PROC_ENHANCED_METRICS`.
    LAMBDA_PROC_ENHANCED_METRICS: bool = Setting::new(&["DD_LAMBDA_PROC_ENHANCED_METRICS"],
        "lambda_proc_enhanced_metrics", Value("true"), parse::boolean,
        "Lambda: with DD_ENHANCED_METRICS, also the resource metrics from /proc and /tmp (CPU time \
         and utilization, network bytes, /tmp, file descriptors, threads).");
    /// `OFFPATH_LAMBDA_API_PORT`.
    LAMBDA_API_PORT: u16 = Setting::new(&["OFFPATH_LAMBDA_API_PORT"],
        "offpath.lambda_api_port", Value("8124"), v::port,
        "Lambda: port on 127.0.0.1 of the endpoints the Datadog libraries call (/lambda/hello, \
         /lambda/flush, /lambda/start-invocation, /lambda/end-invocation); 0 picks a free port.");
    /// `OFFPATH_LAMBDA_TRACE_PORT`.
    LAMBDA_TRACE_PORT: u16 = Setting::new(&["OFFPATH_LAMBDA_TRACE_PORT"],
        "offpath.lambda_trace_port", Value("8126"), v::port,
        "Lambda: port on 127.0.0.1 where Datadog tracers send traces (they do when they find the \
         Datadog-compatible layer); offpath answers at once and drops them, counted and logged once: \
         it ships metrics, not traces. 0 picks a free port.");
}
