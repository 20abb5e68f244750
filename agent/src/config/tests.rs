//! Tests of configuration loading: defaults, deployments, parsers, bounds, warnings, the README table.

use super::forward::KNOWN_SITES;
use super::ingest::MAX_QUEUED_PACKETS;
use super::values::MAX_CONTEXT_LIMIT;
use super::values::{MAX_BUFFER_SIZE, MAX_QUEUE_SIZE};
use super::*;
use crate::auth::SecretArn;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load_for(Deployment::Sidecar, pairs)
}

fn load_for(deployment: Deployment, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::load_for(deployment, &move |k: &str| map.get(k).cloned())
}

#[test]
fn defaults_listen_on_loopback_8125_with_no_api_key() {
    let c = load(&[]).unwrap();
    assert_eq!(
        c.aggregate.histogram_aggregates,
        HistogramAggregate::AGENT_DEFAULT
    );
    assert_eq!(
        c.aggregate.histogram_percentiles,
        HistogramAggregate::AGENT_DEFAULT_PERCENTILES
    );
    assert_eq!(c.ingest.udp, Some("127.0.0.1:8125".parse().unwrap()));
    assert_eq!(c.forward.api_key, None);
    assert_eq!(c.forward.intake_url, "https://api.datadoghq.com");
    assert_eq!(c.ops.flush_interval, Duration::from_secs(15));
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
    assert_eq!(c.fallback.sink, FallbackSink::CloudWatch);
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
    assert_eq!(c.fallback.sink, FallbackSink::Stdout);
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
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    assert_eq!(load(&[]).unwrap().aggregate.workers.get(), cores.min(4));
    let c = load(&[("OFFPATH_AGGREGATE_WORKERS", "0")]).unwrap();
    assert_eq!(c.aggregate.workers.get(), cores.min(4));
    let c = load(&[("OFFPATH_AGGREGATE_WORKERS", "3")]).unwrap();
    assert_eq!(c.aggregate.workers.get(), 3);
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
    assert_eq!(
        c.forward.api_key_secret_arn.as_ref().map(SecretArn::as_str),
        Some(arn)
    );
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
fn every_default_parses_with_its_own_parser_in_both_deployments() {
    for deployment in [Deployment::Sidecar, Deployment::Lambda] {
        for k in KEYS {
            let r = k.check_default(deployment);
            assert!(r.is_ok(), "{}: {r:?} ({deployment:?})", k.key().envs[0]);
        }
        assert!(load_for(deployment, &[]).is_ok(), "{deployment:?}");
    }
}

#[test]
fn every_key_has_unique_names() {
    let mut envs = std::collections::HashSet::new();
    let mut yaml = std::collections::HashSet::new();
    for k in KEYS {
        let k = k.key();
        assert!(yaml.insert(k.yaml), "{} declared twice", k.yaml);
        for e in k.envs {
            assert!(envs.insert(*e), "{e} declared twice");
        }
    }
}

#[test]
fn the_deployment_picks_the_defaults_that_differ() {
    let sidecar = load_for(Deployment::Sidecar, &[]).unwrap();
    let lambda = load_for(Deployment::Lambda, &[]).unwrap();
    assert!(sidecar.ops.self_telemetry);
    assert!(!lambda.ops.self_telemetry);
    assert_eq!(sidecar.aggregate.mapping, MetricMapping::Agent);
    assert_eq!(lambda.aggregate.mapping, MetricMapping::LambdaDistribution);
    assert_eq!(lambda.aggregate.workers.get(), 1);
    assert!(sidecar.forward.keep_idle_connections);
    assert!(!lambda.forward.keep_idle_connections);
    assert_eq!(lambda.fallback.sink, FallbackSink::Stdout);
    assert_eq!(
        lambda.forward.aws_credentials,
        crate::auth::AwsCredentialSource::EnvironmentAndContainer
    );
    // Explicit settings win over the deployment's defaults.
    let c = load_for(
        Deployment::Lambda,
        &[
            ("OFFPATH_SELF_TELEMETRY", "true"),
            ("OFFPATH_LAMBDA_METRICS", "agent"),
            ("OFFPATH_AGGREGATE_WORKERS", "2"),
        ],
    )
    .unwrap();
    assert!(c.ops.self_telemetry);
    assert_eq!(c.aggregate.mapping, MetricMapping::Agent);
    assert_eq!(c.aggregate.workers.get(), 2);
    // An explicit 0 means the deployment's own default.
    let c = load_for(Deployment::Lambda, &[("OFFPATH_AGGREGATE_WORKERS", "0")]).unwrap();
    assert_eq!(c.aggregate.workers.get(), 1);
    // The sidecar ships with Agent semantics whatever OFFPATH_LAMBDA_METRICS says.
    let c = load(&[("OFFPATH_LAMBDA_METRICS", "distribution")]).unwrap();
    assert_eq!(c.aggregate.mapping, MetricMapping::Agent);
}

#[cfg(feature = "cloudwatch")]
#[test]
fn auto_fallback_is_stdout_in_lambda_even_with_a_log_group() {
    let group = [("OFFPATH_FALLBACK_LOG_GROUP", "/g")];
    assert_eq!(
        load(&group).unwrap().fallback.sink,
        FallbackSink::CloudWatch
    );
    let c = load_for(Deployment::Lambda, &group).unwrap();
    assert_eq!(c.fallback.sink, FallbackSink::Stdout);
}

#[test]
fn lambda_settings_are_parsed_at_load_in_every_deployment() {
    let c = load(&[("DD_SERVERLESS_FLUSH_STRATEGY", "periodically,60000")]).unwrap();
    assert_eq!(
        c.lambda.flush_strategy,
        FlushStrategy::Periodically(Duration::from_secs(60))
    );
    for deployment in [Deployment::Sidecar, Deployment::Lambda] {
        let e = load_for(deployment, &[("DD_SERVERLESS_FLUSH_STRATEGY", "sometimes")]).unwrap_err();
        assert_eq!(e.key, "DD_SERVERLESS_FLUSH_STRATEGY");
        let e = load_for(deployment, &[("OFFPATH_LAMBDA_METRICS", "gauges")]).unwrap_err();
        assert_eq!(e.key, "OFFPATH_LAMBDA_METRICS");
    }
}

#[test]
fn log_levels_take_the_agents_names_in_any_case_and_nothing_else() {
    use tracing::level_filters::LevelFilter;
    let cases = [
        ("trace", LevelFilter::TRACE),
        ("DEBUG", LevelFilter::DEBUG),
        ("info", LevelFilter::INFO),
        (" warn ", LevelFilter::WARN),
        ("Warning", LevelFilter::WARN),
        ("error", LevelFilter::ERROR),
        ("CRITICAL", LevelFilter::ERROR),
        ("off", LevelFilter::OFF),
    ];
    for (value, want) in cases {
        assert_eq!(log_level(value).unwrap(), want, "{value:?}");
        assert_eq!(
            load(&[("DD_LOG_LEVEL", value)]).unwrap().ops.log_level,
            want
        );
    }
    assert_eq!(load(&[]).unwrap().ops.log_level, LevelFilter::INFO);
    for bad in ["loud", "offpath=debug", "verbose", "5"] {
        let e = load(&[("DD_LOG_LEVEL", bad)]).unwrap_err();
        assert_eq!(e.key, "DD_LOG_LEVEL", "{bad}");
        assert!(e.to_string().contains("warning"), "{e}");
        assert_eq!(log_level(bad).unwrap_err(), e);
    }
}

#[test]
fn sizes_and_counts_are_bounded_with_an_error_naming_the_key() {
    let cases = [
        ("DD_DOGSTATSD_QUEUE_SIZE", "999999999999", "262144"),
        ("DD_DOGSTATSD_QUEUE_SIZE", "262145", "262144"),
        ("DD_DOGSTATSD_BUFFER_SIZE", "1048577", "1048576"),
        ("DD_DOGSTATSD_BUFFER_SIZE", "0", "1048576"),
        ("DD_DOGSTATSD_SO_RCVBUF", "1073741825", "1073741824"),
        ("OFFPATH_RECEIVE_THREADS", "65", "64"),
        ("OFFPATH_AGGREGATE_WORKERS", "65", "64"),
        ("DD_AGGREGATE_CONTEXT_LIMIT", "10000001", "10000000"),
        (
            "DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE",
            "1073741825",
            "1073741824",
        ),
        ("DD_FORWARDER_TIMEOUT", "3601", "3600"),
        ("OFFPATH_FLUSH_INTERVAL", "1e300", "3600"),
        ("OFFPATH_SHUTDOWN_TIMEOUT", "0", "3600"),
        ("OFFPATH_ZSTD_LEVEL", "23", "22"),
        ("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "3600001", "3600000"),
        ("DD_SERVERLESS_FLUSH_STRATEGY", "end,3600001", "3600000"),
    ];
    for (key, value, bound) in cases {
        let e = load(&[(key, value)]).unwrap_err();
        assert_eq!(e.key, key, "{key}={value}");
        let msg = e.to_string();
        assert!(msg.contains(key) && msg.contains(bound), "{msg}");
    }
    let c = load(&[
        ("DD_DOGSTATSD_QUEUE_SIZE", "262144"),
        ("DD_DOGSTATSD_BUFFER_SIZE", "1048576"),
        ("DD_AGGREGATE_CONTEXT_LIMIT", "10000000"),
        ("OFFPATH_FLUSH_INTERVAL", "3600"),
    ])
    .unwrap();
    assert_eq!(c.ingest.queue_size.get(), MAX_QUEUE_SIZE);
    assert_eq!(c.ingest.buffer_size.get(), MAX_BUFFER_SIZE);
    assert_eq!(c.aggregate.context_limit.get(), MAX_CONTEXT_LIMIT);
}

#[test]
fn the_queues_over_all_workers_are_bounded_with_an_error_naming_the_queue_size() {
    // The largest queue fits the sidecar's default workers (at most 4) and one Lambda worker.
    let c = load(&[
        ("DD_DOGSTATSD_QUEUE_SIZE", "262144"),
        ("OFFPATH_AGGREGATE_WORKERS", "4"),
    ])
    .unwrap();
    assert_eq!(
        c.ingest.queue_size.get() * c.aggregate.workers.get(),
        MAX_QUEUED_PACKETS
    );
    assert!(load(&[("DD_DOGSTATSD_QUEUE_SIZE", "262144")]).is_ok());
    for (queue, workers) in [("262144", "5"), ("262144", "64"), ("16385", "64")] {
        let e = load(&[
            ("DD_DOGSTATSD_QUEUE_SIZE", queue),
            ("OFFPATH_AGGREGATE_WORKERS", workers),
        ])
        .unwrap_err();
        assert_eq!(e.key, "DD_DOGSTATSD_QUEUE_SIZE", "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("1048576")
                && msg.contains("OFFPATH_AGGREGATE_WORKERS")
                && msg.contains(workers),
            "{msg}"
        );
    }
    assert!(
        load(&[
            ("DD_DOGSTATSD_QUEUE_SIZE", "16384"),
            ("OFFPATH_AGGREGATE_WORKERS", "64"),
        ])
        .is_ok()
    );
}

#[test]
fn an_unknown_site_is_a_warning_naming_the_known_ones_not_an_error() {
    for site in KNOWN_SITES {
        let c = load(&[("DD_SITE", site), ("DD_API_KEY", "k")]).unwrap();
        assert!(c.warnings().is_empty(), "{site}: {:?}", c.warnings());
    }
    let c = load(&[("DD_SITE", "nonsense"), ("DD_API_KEY", "k")]).unwrap();
    assert_eq!(c.forward.intake_url, "https://api.nonsense");
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("DD_SITE=nonsense"), "{}", w[0]);
    assert!(
        w[0].contains("datadoghq.eu") && w[0].contains("ap2.datadoghq.com"),
        "{}",
        w[0]
    );
    // The site names no intake when DD_DD_URL is set.
    let c = load(&[
        ("DD_SITE", "nonsense"),
        ("DD_DD_URL", "https://intake.example"),
    ])
    .unwrap();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn a_plain_http_intake_with_a_key_and_a_public_status_address_are_warnings() {
    let c = load(&[("DD_DD_URL", "http://intake.example:8080")]).unwrap();
    assert!(
        c.warnings().is_empty(),
        "no key, nothing sent: {:?}",
        c.warnings()
    );
    let c = load(&[
        ("DD_DD_URL", "http://intake.example:8080"),
        ("DD_API_KEY", "K"),
    ])
    .unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("http://intake.example:8080") && w[0].contains("DD_DD_URL"),
        "{}",
        w[0]
    );
    assert!(!w[0].contains(" K "), "{}", w[0]);

    let c = load(&[("OFFPATH_STATUS_ADDR", "0.0.0.0:8126")]).unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("OFFPATH_STATUS_ADDR") && w[0].contains("0.0.0.0:8126"),
        "{}",
        w[0]
    );
    for quiet in ["127.0.0.1:8126", "[::1]:8126", ""] {
        let c = load(&[("OFFPATH_STATUS_ADDR", quiet)]).unwrap();
        assert!(c.warnings().is_empty(), "{quiet}: {:?}", c.warnings());
    }
}

#[test]
fn the_random_port_binds_an_ephemeral_port() {
    let c = load(&[("DD_DOGSTATSD_PORT", "__random__")]).unwrap();
    assert_eq!(c.ingest.udp, Some(SocketAddr::from(([127, 0, 0, 1], 0))));
}

const START: &str = "<!-- config-table:start -->\n";
const END: &str = "<!-- config-table:end -->";

#[test]
fn the_readme_configuration_table_matches_the_keys() {
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
    assert!(table.contains(
        "| `OFFPATH_SELF_TELEMETRY` | `offpath.self_telemetry` | `true` (`false` in Lambda) |"
    ));
    assert!(table.contains("https://api.\\<site>"));
    for line in table.lines() {
        assert_eq!(line.matches(" | ").count(), 3, "{line}");
    }
}

#[cfg(feature = "cloudwatch")]
#[test]
fn the_fallback_sink_follows_offpath_fallback_in_each_deployment() {
    use Deployment::{Lambda, Sidecar};
    let cases = [
        ("auto", None, Sidecar, FallbackSink::Stdout),
        ("auto", Some("g"), Sidecar, FallbackSink::CloudWatch),
        ("auto", Some("g"), Lambda, FallbackSink::Stdout),
        ("auto", None, Lambda, FallbackSink::Stdout),
        ("cloudwatch", Some("g"), Lambda, FallbackSink::CloudWatch),
        ("stdout", Some("g"), Sidecar, FallbackSink::Stdout),
        ("off", Some("g"), Lambda, FallbackSink::Off),
    ];
    for (mode, group, deployment, want) in cases {
        let mut pairs = vec![("OFFPATH_FALLBACK", mode)];
        pairs.extend(group.map(|g| ("OFFPATH_FALLBACK_LOG_GROUP", g)));
        let c = load_for(deployment, &pairs).unwrap();
        assert_eq!(c.fallback.sink, want, "{mode} {group:?} {deployment:?}");
    }
}

#[test]
fn host_settings_use_the_agents_names_and_defaults() {
    let c = load(&[]).unwrap();
    let h = &c.host.hostname;
    assert!(c.host.resolve);
    assert_eq!(h.ec2_timeout, Duration::from_millis(300));
    assert!(h.ec2_enabled && !h.fqdn && !h.prioritize_instance_id && !h.trust_uts_namespace);
    assert_eq!(c.host.tag_cardinality, TagCardinality::Low);
    assert!(c.host.cluster_name_tag);
    let c = load(&[
        ("DD_HOSTNAME", "web-1"),
        ("DD_HOSTNAME_FILE", "/etc/dd-hostname"),
        ("DD_HOSTNAME_FQDN", "true"),
        ("DD_EC2_PRIORITIZE_INSTANCE_ID_AS_HOSTNAME", "true"),
        ("DD_EC2_METADATA_TIMEOUT", "1000"),
        ("DD_CLOUD_PROVIDER_METADATA", "gcp azure"),
        ("DD_DOGSTATSD_TAG_CARDINALITY", "Orchestrator"),
        ("DD_DISABLE_CLUSTER_NAME_TAG_KEY", "true"),
    ])
    .unwrap();
    let h = &c.host.hostname;
    assert_eq!(h.hostname, "web-1");
    assert_eq!(
        h.hostname_file.as_deref(),
        Some(std::path::Path::new("/etc/dd-hostname"))
    );
    assert!(h.fqdn && h.prioritize_instance_id && !h.ec2_enabled);
    assert_eq!(h.ec2_timeout, Duration::from_millis(1000));
    assert_eq!(c.host.tag_cardinality, TagCardinality::Orchestrator);
    assert!(!c.host.cluster_name_tag);
    for (key, bad) in [
        ("DD_DOGSTATSD_TAG_CARDINALITY", "none"),
        ("DD_EC2_METADATA_TIMEOUT", "fast"),
        ("DD_EC2_METADATA_TIMEOUT", "0"),
        ("DD_EC2_METADATA_TIMEOUT", "60001"),
    ] {
        assert_eq!(load(&[(key, bad)]).unwrap_err().key, key, "{bad}");
    }
    // Lambda sends no host of its own: nothing is resolved there.
    assert!(!load_for(Deployment::Lambda, &[]).unwrap().host.resolve);
}

#[test]
fn additional_endpoints_from_the_environment_merge_with_the_main_endpoint() {
    let c = load(&[
        ("DD_API_KEY", "k0"),
        ("DD_SITE", "datadoghq.eu"),
        (
            "DD_ADDITIONAL_ENDPOINTS",
            r#"{"https://app.datadoghq.eu": ["k1", "k0"], "https://api.us5.datadoghq.com/": ["k2"]}"#,
        ),
    ])
    .unwrap();
    let eps = &c.forward.endpoints;
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].url, "https://api.datadoghq.eu");
    assert_eq!(
        eps[0].keys,
        vec![
            EndpointKey::Main,
            EndpointKey::Additional(crate::auth::ApiKey::new("k1"))
        ]
    );
    assert_eq!(eps[1].url, "https://api.us5.datadoghq.com");
    // Without the key, only the main endpoint.
    let c = load(&[("DD_API_KEY", "k0")]).unwrap();
    assert_eq!(c.forward.endpoints.len(), 1);
    assert_eq!(c.forward.endpoints[0].keys, vec![EndpointKey::Main]);
}

#[test]
fn additional_endpoints_from_a_yaml_mapping_or_a_json_string_in_the_file() {
    for text in [
        "api_key: k0\nadditional_endpoints:\n  \"https://app.datadoghq.eu\":\n    - k1\n    - k2\n",
        "api_key: k0\nadditional_endpoints: '{\"https://app.datadoghq.eu\": [\"k1\", \"k2\"]}'\n",
    ] {
        let (file, warnings) = YamlFile::parse(text, "datadog.yaml").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let c = Config::load(&file).unwrap();
        assert_eq!(c.forward.endpoints.len(), 2, "{text}");
        assert_eq!(c.forward.endpoints[1].keys.len(), 2);
    }
}

#[test]
fn malformed_additional_endpoints_stop_offpath_naming_the_key_never_the_keys() {
    for bad in [
        r#"{"https://a.example": "#,
        r#"["https://a.example"]"#,
        r#"{"a.example": ["secretkey9"]}"#,
        r#"{"https://a.example": [{"secretkey9": 1}]}"#,
    ] {
        let err = load(&[("DD_API_KEY", "k0"), ("DD_ADDITIONAL_ENDPOINTS", bad)]).unwrap_err();
        assert_eq!(err.key, "DD_ADDITIONAL_ENDPOINTS", "{bad}");
        let msg = err.to_string();
        assert!(msg.contains("DD_ADDITIONAL_ENDPOINTS"), "{msg}");
        assert!(!msg.contains("secretkey9"), "{msg}");
    }
    // A YAML sequence where a mapping is expected: the file's error names the key and its line.
    let (file, _) = YamlFile::parse(
        "api_key: k0\nadditional_endpoints:\n  - https://a.example\n",
        "d.yaml",
    )
    .unwrap();
    let err = Config::load(&file).unwrap_err();
    assert_eq!(err.key, "DD_ADDITIONAL_ENDPOINTS");
    // Additional endpoints without a main key would ship nowhere: refused.
    let err = load(&[(
        "DD_ADDITIONAL_ENDPOINTS",
        r#"{"https://a.example": ["k1"]}"#,
    )])
    .unwrap_err();
    assert_eq!(err.key, "DD_ADDITIONAL_ENDPOINTS");
}

#[test]
fn the_retry_storage_is_on_with_a_size_and_a_path_and_never_in_lambda() {
    let path = ("DD_FORWARDER_STORAGE_PATH", "/var/lib/offpath");
    let size = ("DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES", "1048576");
    // 0 (the default) is off, as in the Agent, with or without a path.
    assert_eq!(load(&[]).unwrap().forward.storage, None);
    assert_eq!(load(&[path]).unwrap().forward.storage, None);
    let on = load(&[path, size]).unwrap().forward.storage.unwrap();
    assert_eq!(on.path, std::path::PathBuf::from("/var/lib/offpath"));
    assert_eq!(on.max_bytes, 1_048_576);
    // A size without a path names the key to set.
    let err = load(&[size]).unwrap_err();
    assert_eq!(err.key, "DD_FORWARDER_STORAGE_PATH");
    // Bounded like every size.
    let err = load(&[
        path,
        ("DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES", "1099511627777"),
    ])
    .unwrap_err();
    assert_eq!(err.key, "DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES");
    // Lambda: no disk outlives the sandbox.
    assert_eq!(
        load_for(Deployment::Lambda, &[path, size])
            .unwrap()
            .forward
            .storage,
        None
    );
}
