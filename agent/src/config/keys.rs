//! The table of every configuration key: environment name(s), `datadog.yaml` name, default, meaning.

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Environment names, first wins (e.g. `DD_DD_URL` before `DD_URL`).
    pub envs: &'static [&'static str],
    /// Name in the YAML config file (`offpath.` prefix for offpath's own section).
    pub yaml: &'static str,
    /// Default, as documented.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

macro_rules! keys {
    ($( [$($env:literal),+] $yaml:literal $default:literal $doc:literal ;)*) => {
        /// Every configuration key offpath reads, in documentation order.
        pub const KEYS: &[Key] = &[ $( Key { envs: &[$($env),+], yaml: $yaml, default: $default, doc: $doc } ),* ];
    };
}

keys! {
    ["DD_API_KEY"] "api_key" "none" "Datadog API key. Without it (and without DD_API_KEY_SECRET_ARN) offpath runs locally and prints flushed metrics to stdout as offpath records.";
    ["DD_API_KEY_SECRET_ARN"] "api_key_secret_arn" "none" "AWS Secrets Manager secret ARN whose plain-text value is the API key, used when DD_API_KEY is unset. Read at the first flush (payloads wait in the retry queue until then); needs secretsmanager:GetSecretValue. Credentials: the sidecar uses the AWS default chain (environment, profile/SSO, web identity, ECS task role, EC2 instance profile); the Lambda layer AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, else AWS_CONTAINER_CREDENTIALS_FULL_URI (SnapStart). Endpoint override: AWS_ENDPOINT_URL_SECRETS_MANAGER, then AWS_ENDPOINT_URL.";
    ["DD_SITE"] "site" "datadoghq.com" "Datadog site; the intake is https://api.<site>.";
    ["DD_DD_URL", "DD_URL"] "dd_url" "none" "Intake URL override (scheme, host, port; no path). Wins over DD_SITE.";
    ["DD_PROXY_HTTPS", "HTTPS_PROXY"] "proxy.https" "none" "HTTPS proxy for the intake.";
    ["DD_SKIP_SSL_VALIDATION"] "skip_ssl_validation" "false" "Disable TLS certificate verification (logged as a warning; never in production).";
    ["DD_HOSTNAME"] "hostname" "none" "Host set on every metric unless a host: tag overrides it.";
    ["DD_DOGSTATSD_PORT"] "dogstatsd_port" "8125" "UDP port; 0 disables UDP.";
    ["DD_BIND_HOST"] "bind_host" "127.0.0.1" "Address the UDP listener binds to.";
    ["DD_DOGSTATSD_NON_LOCAL_TRAFFIC"] "dogstatsd_non_local_traffic" "false" "Listen on all interfaces instead of DD_BIND_HOST.";
    ["DD_DOGSTATSD_SOCKET"] "dogstatsd_socket" "none" "Unix datagram socket path.";
    ["DD_DOGSTATSD_STREAM_SOCKET"] "dogstatsd_stream_socket" "none" "Unix stream socket path (frames: u32 little-endian length + payload).";
    ["DD_DOGSTATSD_BUFFER_SIZE"] "dogstatsd_buffer_size" "8192" "Largest datagram or stream frame in bytes; larger ones are counted as truncated/oversize, never parsed.";
    ["DD_DOGSTATSD_SO_RCVBUF"] "dogstatsd_so_rcvbuf" "8388608 asked" "Socket receive buffer in bytes; the size the kernel grants is logged.";
    ["DD_DOGSTATSD_QUEUE_SIZE"] "dogstatsd_queue_size" "1024" "Packets queued between the listeners and each aggregate worker; a full queue drops and counts.";
    ["OFFPATH_RECEIVE_THREADS"] "offpath.receive_threads" "0 (one per core, at most 4)" "UDP receive threads (SO_REUSEPORT sockets).";
    ["DD_TAGS"] "tags" "none" "Global tags, separated by spaces or commas.";
    ["DD_DOGSTATSD_TAGS"] "dogstatsd_tags" "none" "Extra tags for everything received over DogStatsD.";
    ["DD_ENV"] "env" "none" "Adds env:<value>.";
    ["DD_SERVICE"] "service" "none" "Adds service:<value>.";
    ["DD_VERSION"] "version" "none" "Adds version:<value>.";
    ["DD_STATSD_METRIC_NAMESPACE"] "statsd_metric_namespace" "none" "Prefix for every metric name (a trailing . is added).";
    ["DD_HISTOGRAM_AGGREGATES"] "histogram_aggregates" "max,median,avg,count" "Histogram aggregates: max, min, median, avg, sum, count.";
    ["DD_HISTOGRAM_PERCENTILES"] "histogram_percentiles" "0.95" "Histogram percentiles in (0, 1).";
    ["DD_AGGREGATE_CONTEXT_LIMIT"] "aggregate_context_limit" "100000" "Live contexts; new contexts over the limit are dropped and counted.";
    ["OFFPATH_AGGREGATE_WORKERS"] "offpath.aggregate_workers" "0 (one per core, at most 4; 1 in Lambda)" "Parse and aggregate threads, at most 64; lines go by metric name, so each context lives in one. Each has its own DD_DOGSTATSD_QUEUE_SIZE queue.";
    ["OFFPATH_FLUSH_INTERVAL"] "offpath.flush_interval" "15" "Seconds between flushes of closed 10 s buckets (sidecar).";
    ["DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE"] "forwarder_retry_queue_payloads_max_size" "15728640" "Retry queue bound in bytes; the oldest payloads overflow to the fallback.";
    ["DD_FORWARDER_TIMEOUT"] "forwarder_timeout" "20" "Seconds before an intake request times out.";
    ["OFFPATH_ZSTD_LEVEL"] "offpath.zstd_level" "1" "zstd compression level for payloads.";
    ["OFFPATH_FALLBACK"] "offpath.fallback" "auto" "auto (stdout in Lambda, CloudWatch when a log group is set, else stdout), cloudwatch, stdout, off.";
    ["OFFPATH_FALLBACK_LOG_GROUP"] "offpath.fallback_log_group" "none" "CloudWatch Logs group for the fallback.";
    ["OFFPATH_FALLBACK_LOG_STREAM"] "offpath.fallback_log_stream" "<host>-<pid>" "CloudWatch Logs stream for the fallback.";
    ["OFFPATH_FALLBACK_FORMAT"] "offpath.fallback_format" "offpath" "offpath (replayable), forwarder ({m,v,e,t} lines), emf (CloudWatch metrics).";
    ["OFFPATH_FALLBACK_EMF_DIMENSIONS"] "offpath.fallback_emf_dimensions" "none" "Tag keys that become EMF dimensions.";
    ["OFFPATH_FALLBACK_EMF_NAMESPACE"] "offpath.fallback_emf_namespace" "offpath" "CloudWatch namespace of EMF records.";
    ["DD_LOG_LEVEL"] "log_level" "info" "Log level (error, warn, info, debug, trace); logs go to stderr.";
    ["OFFPATH_SHUTDOWN_TIMEOUT"] "offpath.shutdown_timeout" "10" "Seconds to drain, flush and deliver on SIGTERM/SIGINT.";
    ["OFFPATH_STATUS_ADDR"] "offpath.status_addr" "127.0.0.1:8126" "Address of /health and /status; empty disables.";
    ["OFFPATH_SELF_TELEMETRY"] "offpath.self_telemetry" "true (false in Lambda)" "Ship offpath's own counters as offpath.* metrics. Off by default in Lambda, where every sandbox would ship its own series (custom metrics).";
    ["DD_SERVERLESS_FLUSH_STRATEGY"] "serverless_flush_strategy" "adaptive" "Lambda: end, end,<ms>, periodically,<ms>, continuously,<ms>, adaptive.";
    ["OFFPATH_LAMBDA_FLUSH_BUDGET_MS"] "offpath.lambda_flush_budget_ms" "200" "Lambda: milliseconds a flush at the end of an invocation may take.";
    ["OFFPATH_LAMBDA_METRICS"] "offpath.lambda_metrics" "distribution" "Lambda: distribution (c, h, ms, d as sketches) or agent (sidecar semantics).";
    ["OFFPATH_LAMBDA_TELEMETRY_PORT"] "offpath.lambda_telemetry_port" "8999" "Lambda: port of the Telemetry API listener (0 picks a free port).";
    ["OFFPATH_LAMBDA_TELEMETRY_HOST"] "offpath.lambda_telemetry_host" "sandbox.localdomain" "Lambda: host name Lambda posts telemetry to (the listener binds 0.0.0.0).";
    ["DD_ENHANCED_METRICS"] "enhanced_metrics" "true" "Lambda: ship Datadog's enhanced metrics (aws.lambda.enhanced.*: invocations, errors, durations, memory, estimated cost) as distributions; the aws.lambda.enhanced.invocations and .errors lines Datadog's libraries send over DogStatsD are then dropped (own_metric): offpath counts both once per request id.";
    ["DD_LAMBDA_PROC_ENHANCED_METRICS"] "lambda_proc_enhanced_metrics" "true" "Lambda: with DD_ENHANCED_METRICS, also the resource metrics from /proc and /tmp (CPU time and utilization, network bytes, /tmp, file descriptors, threads).";
    ["OFFPATH_LAMBDA_API_PORT"] "offpath.lambda_api_port" "8124" "Lambda: port on 127.0.0.1 of the endpoints the Datadog libraries call (/lambda/hello, /lambda/flush, /lambda/start-invocation, /lambda/end-invocation); 0 picks a free port.";
}

/// The configuration table for the README, rendered from [`KEYS`] as GitHub markdown.
///
/// The README holds it verbatim between `<!-- config-table:start -->` and
/// `<!-- config-table:end -->`; a test fails (and prints this table) when the two drift apart.
pub fn markdown_table() -> String {
    fn cell(s: &str) -> String {
        s.replace('|', "\\|").replace('<', "\\<")
    }
    fn code(s: &str) -> String {
        format!("`{}`", s.replace('|', "\\|"))
    }
    let mut out = String::from(
        "| Environment variable | YAML key | Default | Meaning |\n| --- | --- | --- | --- |\n",
    );
    for k in KEYS {
        let envs: Vec<String> = k.envs.iter().map(|e| code(e)).collect();
        let default = if k.default == "none" {
            "none".to_owned()
        } else {
            code(k.default)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            envs.join(" or "),
            code(k.yaml),
            default,
            cell(k.doc)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "<!-- config-table:start -->\n";
    const END: &str = "<!-- config-table:end -->";

    #[test]
    fn the_readme_configuration_table_matches_the_key_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let expected = markdown_table();
        let found = readme
            .split_once(START)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(table, _)| table);
        assert!(
            found == Some(expected.as_str()),
            "README.md must contain, between `{}` and `{END}`, exactly this table \
             (also printed by `offpath config-table`):\n\n{expected}",
            START.trim_end()
        );
    }

    #[test]
    fn the_markdown_table_has_one_row_per_key_and_escapes_cells() {
        let table = markdown_table();
        assert_eq!(table.lines().count(), KEYS.len() + 2);
        assert!(table.contains("| `DD_DD_URL` or `DD_URL` | `dd_url` | none |"));
        assert!(table.contains("https://api.\\<site>"));
        for line in table.lines() {
            assert_eq!(line.matches(" | ").count(), 3, "{line}");
        }
    }
}
