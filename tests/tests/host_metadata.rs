//! The sidecar's hostname and ECS task tags, as the Datadog Agent resolves them, against fake metadata
//! services on 127.0.0.1 (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, `ECS_CONTAINER_METADATA_URI_V4`).
//! offpath runs in local mode, so every flushed record shows the host and tags it would ship.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use offpath_tests::metadata::{MetadataServer, ecs_task};
use offpath_tests::support::{Offpath, binary};
use serde_json::Value;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn send(offpath: &Offpath, lines: &[&str]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for l in lines {
        s.send_to(l.as_bytes(), offpath.udp.unwrap()).unwrap();
    }
}

/// Wait until offpath's log holds `needle` (a readiness signal, not a delay).
#[track_caller]
fn wait_for_log(offpath: &Offpath, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !offpath.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            offpath.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stop offpath (SIGTERM flushes everything) and return its records for `metric`.
fn stop_and_records(offpath: &mut Offpath, metric: &str) -> Vec<Value> {
    assert_eq!(offpath.stop(), Some(0), "{}", offpath.stderr());
    offpath
        .stdout_json()
        .into_iter()
        .filter(|r| r["metric"] == metric)
        .collect()
}

fn tags(r: &Value) -> Vec<String> {
    r["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

fn base_env<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("OFFPATH_SELF_TELEMETRY", "false"),
        ("OFFPATH_FLUSH_INTERVAL", "3600"),
        ("AWS_EC2_METADATA_DISABLED", "false"),
    ]
}

#[test]
fn on_ecs_on_ec2_metrics_carry_the_instance_id_and_the_task_tags() {
    let rt = runtime();
    let imds = rt.block_on(MetadataServer::imds("i-0123456789abcdef0"));
    let ecs = rt.block_on(MetadataServer::ecs(ecs_task("EC2", Some("Checkout-API"))));
    let (imds_url, ecs_url) = (imds.url(), format!("{}/v4/5b8f0c6e", ecs.url()));
    let mut env = base_env();
    env.extend([
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_url.as_str()),
        ("ECS_CONTAINER_METADATA_URI_V4", ecs_url.as_str()),
        ("DD_TAGS", "team:core"),
    ]);
    let mut offpath = Offpath::start(&[], &env);
    wait_for_log(&offpath, "ECS task tags");
    send(
        &offpath,
        &["ecs.requests:1|c|#route:/a", "ecs.requests:2|c|#route:/a"],
    );
    let recs = stop_and_records(&mut offpath, "ecs.requests");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["host"], "i-0123456789abcdef0");
    let t = tags(&recs[0]);
    for want in [
        "route:/a",
        "team:core",
        "task_family:checkout",
        "task_name:checkout",
        "task_version:42",
        "ecs_cluster_name:prod",
        "cluster_name:prod",
        "region:eu-west-1",
        "aws_account:123456789012",
        "ecs_service:checkout-api",
    ] {
        assert!(t.contains(&want.to_owned()), "{want} missing from {t:?}");
    }
    assert!(
        !t.iter().any(|t| t.starts_with("availability")),
        "EC2: {t:?}"
    );
    assert!(
        !t.iter().any(|t| t.starts_with("task_arn:")),
        "low cardinality: {t:?}"
    );
    // IMDSv2: a token, then the instance id with it.
    let seen = imds.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(
        seen[0].headers["x-aws-ec2-metadata-token-ttl-seconds"],
        "21600"
    );
    assert_eq!(seen[1].path, "/latest/meta-data/instance-id");
    assert_eq!(ecs.seen()[0].path, "/v4/5b8f0c6e/task");
}

#[test]
fn on_fargate_metrics_carry_no_host_and_the_task_tags_with_the_availability_zone() {
    let rt = runtime();
    let imds = rt.block_on(MetadataServer::imds("i-0123456789abcdef0"));
    let ecs = rt.block_on(MetadataServer::ecs(ecs_task("FARGATE", None)));
    let (imds_url, ecs_url) = (imds.url(), ecs.url());
    let mut env = base_env();
    env.extend([
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_url.as_str()),
        ("ECS_CONTAINER_METADATA_URI_V4", ecs_url.as_str()),
        ("DD_DOGSTATSD_TAG_CARDINALITY", "orchestrator"),
        ("DD_EC2_PRIORITIZE_INSTANCE_ID_AS_HOSTNAME", "true"),
    ]);
    let mut offpath = Offpath::start(&[], &env);
    wait_for_log(&offpath, "ECS task tags");
    send(&offpath, &["fargate.jobs:1|g"]);
    let recs = stop_and_records(&mut offpath, "fargate.jobs");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert!(
        recs[0].get("host").is_none(),
        "no host on Fargate: {:?}",
        recs[0]
    );
    let t = tags(&recs[0]);
    for want in [
        "availability-zone:eu-west-1b",
        "availability_zone:eu-west-1b",
        "task_arn:arn:aws:ecs:eu-west-1:123456789012:task/prod/5b8f0c6e2b1a4c3d9e7f",
    ] {
        assert!(t.contains(&want.to_owned()), "{want} missing from {t:?}");
    }
    assert!(!t.iter().any(|t| t.starts_with("ecs_service:")), "{t:?}");
    assert!(imds.seen().is_empty(), "Fargate never asks EC2 metadata");
}

#[test]
fn a_hanging_metadata_service_is_logged_once_and_points_keep_the_os_hostname() {
    let rt = runtime();
    let imds = rt.block_on(MetadataServer::hanging());
    let ecs = rt.block_on(MetadataServer::start(std::sync::Arc::new(|_, _| {
        Some((200, "<html>not a task</html>".to_owned()))
    })));
    let (imds_url, ecs_url) = (imds.url(), ecs.url());
    let mut env = base_env();
    env.extend([
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_url.as_str()),
        ("ECS_CONTAINER_METADATA_URI_V4", ecs_url.as_str()),
        ("DD_EC2_PRIORITIZE_INSTANCE_ID_AS_HOSTNAME", "true"),
        ("DD_HOSTNAME_TRUST_UTS_NAMESPACE", "true"),
    ]);
    let mut offpath = Offpath::start(&[], &env);
    // Ingest does not wait for the metadata service.
    send(&offpath, &["slow.imds:5|c"]);
    wait_for_log(&offpath, "hostname: no EC2 instance id");
    // The garbage ECS endpoint is asked again (first retry after 1 s), but logged once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ecs.seen().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the ECS endpoint was not asked again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    send(&offpath, &["slow.imds:5|c"]);
    let recs = stop_and_records(&mut offpath, "slow.imds");
    let os = offpath::host::os_hostname().unwrap_or_default();
    assert!(
        recs.iter().all(|r| r["host"].as_str().unwrap_or("") == os),
        "{recs:?}"
    );
    let points: f64 = recs
        .iter()
        .flat_map(|r| r["points"].as_array().unwrap().clone())
        .map(|p| p[1].as_f64().unwrap())
        .sum();
    assert_eq!(points, 1.0, "both counts shipped: {recs:?}");
    assert!(
        recs.iter()
            .all(|r| !tags(r).iter().any(|t| t.starts_with("task_")))
    );
    let log = offpath.stderr();
    assert_eq!(log.matches("no EC2 instance id").count(), 1, "{log}");
    assert_eq!(log.matches("ECS task metadata").count(), 1, "{log}");
    assert!(log.contains("not a task"), "{log}");
}

#[test]
fn offpath_check_prints_the_hostname_and_where_it_came_from() {
    let rt = runtime();
    let imds = rt.block_on(MetadataServer::imds("i-0fedcba9876543210"));
    let ecs = rt.block_on(MetadataServer::ecs(ecs_task("EC2", None)));
    let (imds_url, ecs_url) = (imds.url(), ecs.url());
    // The fakes run on `rt`, so the command runs on it too.
    let out = rt
        .block_on(async {
            tokio::process::Command::new(binary("offpath"))
                .arg("check")
                .env_clear()
                .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds_url)
                .env("ECS_CONTAINER_METADATA_URI_V4", &ecs_url)
                .kill_on_drop(true)
                .output()
                .await
        })
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("hostname"))
        .unwrap_or_else(|| panic!("no hostname line:\n{stdout}"));
    assert!(line.starts_with("OK"), "{line}");
    assert!(
        line.contains(
            "i-0fedcba9876543210 (the EC2 instance id from the instance metadata service)"
        ),
        "{line}"
    );
    assert!(stdout.contains("task_family:checkout"), "{stdout}");

    // With DD_HOSTNAME, that is what the line says.
    let out = std::process::Command::new(binary("offpath"))
        .arg("check")
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("DD_HOSTNAME", "web-7")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("web-7 (from DD_HOSTNAME (hostname))"),
        "{stdout}"
    );
}
