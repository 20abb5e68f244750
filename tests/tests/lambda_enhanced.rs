//! The real `offpath-lambda` binary: Datadog's enhanced metrics from the (fake) Telemetry API's events, the
//! switches that turn them off, the fallback when Datadog is down, and the Datadog libraries' endpoints.
//! (Datadog's real Python library against the compatible layer: `lambda_python.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use offpath_tests::fake_intake::{FakeIntake, Reply};
use offpath_tests::lambda_runtime::{
    CallKind, Extension, FakeRuntime, TelemetryMode, invocation, report, send_lines,
};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn enhanced_names(intake: &FakeIntake) -> Vec<String> {
    let mut names: Vec<String> = intake
        .all_sketches()
        .into_iter()
        .map(|s| s.metric)
        .filter(|m| m.starts_with("aws.lambda.enhanced."))
        .collect();
    names.sort();
    names.dedup();
    names
}

async fn start(
    intake: &FakeIntake,
    rt: &FakeRuntime,
    extra: &[(&str, &str)],
) -> (Extension, std::net::SocketAddr) {
    let url = intake.url();
    let mut env = vec![
        ("DD_API_KEY", KEY),
        ("DD_DD_URL", url.as_str()),
        ("DD_SERVERLESS_FLUSH_STRATEGY", "end"),
    ];
    env.extend_from_slice(extra);
    Extension::start_ready(rt, &env).await
}

#[tokio::test]
async fn enhanced_metrics_carry_the_reported_values_and_resource_use() {
    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let (mut ext, udp) = start(
        &intake,
        &rt,
        &[
            ("DD_ENV", "prod"),
            ("DD_SERVICE", "orders"),
            ("DD_VERSION", "1.2.3"),
            ("DD_TAGS", "team:data,tier:1"),
        ],
    )
    .await;
    for i in 0..3 {
        let id = format!("r{i}");
        invocation(&rt, udp, &id, &["app.hits:1|c"], i + 2).await;
        assert_eq!(report(&rt, &id, 20.0, 21, 512, 100).await, Some(200));
    }
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());

    let get = |name: &str| {
        intake
            .sketch_totals(
                &format!("aws.lambda.enhanced.{name}"),
                &[
                    "functionname:offpath-test-fn",
                    "function_arn:arn:aws:lambda:us-east-1:123456789012:function:offpath-test-fn",
                    "resource:offpath-test-fn",
                    "env:prod",
                    "service:orders",
                    "version:1.2.3",
                    "team:data",
                    "tier:1",
                ],
            )
            .unwrap_or_else(|| panic!("no {name}: {:?}", intake.all_sketches()))
    };
    assert_eq!(get("invocations").cnt, 3);
    // The fake's runtimeDone says 1.5 ms and 12 bytes.
    assert_eq!(
        (get("runtime_duration").cnt, get("runtime_duration").sum),
        (3, 4.5)
    );
    assert_eq!(get("produced_bytes").sum, 36.0);
    assert_eq!(get("duration").sum, 0.06);
    assert!((get("billed_duration").sum - 0.063).abs() < 1e-12);
    assert_eq!(get("post_runtime_duration").sum, 3.0 * 18.5);
    assert_eq!(
        (get("memorysize").max, get("max_memory_used").max),
        (512.0, 100.0)
    );
    let cost = get("estimated_cost");
    let arch = offpath_lambda::tags::architecture(std::env::consts::ARCH);
    let one = offpath_lambda::enhanced::estimated_cost(
        21.0,
        512.0,
        offpath_lambda::enhanced::price_per_gb_second(arch).unwrap(),
    );
    assert!(
        (cost.sum - 3.0 * one).abs() < 1e-15,
        "{cost:?} vs 3 × {one}"
    );
    assert_eq!(get("shutdowns").cnt, 1);
    for name in [
        "cpu_user_time",
        "cpu_system_time",
        "cpu_total_time",
        "fd_use",
        "fd_max",
        "threads_use",
        "threads_max",
        "tmp_used",
        "tmp_max",
    ] {
        assert_eq!(get(name).cnt, 3, "{name}");
    }
    assert!(!enhanced_names(&intake).contains(&"aws.lambda.enhanced.errors".to_owned()));
    assert!(ext.stdout().is_empty(), "{}", ext.stdout());
}

#[tokio::test]
async fn dd_enhanced_metrics_false_ships_none_and_lets_the_libraries_lines_through() {
    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let (mut ext, udp) = start(&intake, &rt, &[("DD_ENHANCED_METRICS", "false")]).await;
    invocation(
        &rt,
        udp,
        "r0",
        &["aws.lambda.enhanced.invocations:1|d|#from:library"],
        2,
    )
    .await;
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    assert_eq!(enhanced_names(&intake), ["aws.lambda.enhanced.invocations"]);
    let from_library = intake
        .sketch_totals("aws.lambda.enhanced.invocations", &["from:library"])
        .unwrap();
    assert_eq!(from_library.cnt, 1, "the library's line, not offpath's");
    assert!(!ext.stderr().contains("own_metric"), "{}", ext.stderr());
}

#[tokio::test]
async fn without_proc_metrics_the_resource_metrics_are_left_out() {
    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let (mut ext, udp) = start(
        &intake,
        &rt,
        &[("DD_LAMBDA_PROC_ENHANCED_METRICS", "false")],
    )
    .await;
    invocation(&rt, udp, "r0", &[], 2).await;
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    assert_eq!(
        enhanced_names(&intake),
        [
            "aws.lambda.enhanced.invocations",
            "aws.lambda.enhanced.produced_bytes",
            "aws.lambda.enhanced.runtime_duration",
            "aws.lambda.enhanced.shutdowns"
        ]
    );
}

#[tokio::test]
async fn with_datadog_down_enhanced_metrics_fall_back_like_any_point() {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (mut ext, udp) = Extension::start_ready(
        &rt,
        &[
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", dead.as_str()),
            ("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "50"),
        ],
    )
    .await;
    for i in 0..2 {
        invocation(&rt, udp, &format!("r{i}"), &["app.hits:1|c"], i + 2).await;
    }
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    let out = ext.stdout();
    let count = |metric: &str| -> f64 {
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["metric"] == metric)
            .flat_map(|r| r["sketches"].as_array().cloned().unwrap_or_default())
            .map(|s| s["cnt"].as_f64().unwrap_or(0.0))
            .sum()
    };
    assert_eq!(count("aws.lambda.enhanced.invocations"), 2.0, "{out}");
    assert_eq!(count("aws.lambda.enhanced.runtime_duration"), 2.0, "{out}");
    assert_eq!(count("app.hits"), 2.0, "{out}");
    // The ledger closes: nothing was dropped.
    let logs = ext.stderr();
    assert!(logs.contains(" dropped=0"), "{logs}");
}

#[tokio::test]
async fn a_library_flush_is_answered_at_once_and_runs_off_its_path() {
    let intake = FakeIntake::start(KEY).await;
    // The flush's request is held 3 s by the intake.
    intake.push_replies([Reply::Delay(Duration::from_secs(3), 202)]);
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let (mut ext, udp) = start(&intake, &rt, &[("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "50")]).await;
    let api = ext.api_addr().await;
    rt.invoke("r0", Duration::from_secs(30)).await;
    rt.wait_for("INVOKE r0", |c| {
        c.iter()
            .any(|c| c.kind == CallKind::EventDelivered("INVOKE r0".into()))
    })
    .await;
    send_lines(udp, &["app.flushed:1|c"]);
    // The library asks for a flush in the middle of its invocation, as datadog-lambda does with DD_LOCAL_TEST.
    let c = reqwest::Client::new();
    let resp = c
        .post(format!("http://{api}/lambda/flush"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    assert!(
        intake.requests().is_empty(),
        "answered before the intake did"
    );
    // The flush started without waiting for runtimeDone: its request reached the intake.
    assert!(intake.wait_arrivals(1, Duration::from_secs(10)).await);
    let hello = c
        .get(format!("http://{api}/lambda/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.status(), 200);
    rt.finish("r0").await;
    rt.wait_next_event(2).await;
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    assert_eq!(
        intake.sketch_totals("app.flushed", &[]).map(|s| s.cnt),
        Some(1)
    );
}

#[tokio::test]
async fn a_tracers_invocation_error_counts_once_with_the_runtimes() {
    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let (mut ext, udp) = start(&intake, &rt, &[]).await;
    let api = ext.api_addr().await;
    let c = reqwest::Client::new();
    let end_with_error = || {
        c.post(format!("http://{api}/lambda/end-invocation"))
            .header("x-datadog-invocation-error", "true")
            .body("{}")
            .send()
    };
    // r0: the tracer says it failed, the runtime said success: one error.
    rt.invoke("r0", Duration::from_secs(30)).await;
    rt.wait_for("INVOKE r0", |c| {
        c.iter()
            .any(|c| c.kind == CallKind::EventDelivered("INVOKE r0".into()))
    })
    .await;
    assert_eq!(end_with_error().await.unwrap().status(), 200);
    rt.finish("r0").await;
    rt.wait_next_event(2).await;
    // r1: both say it failed: still one.
    rt.invoke("r1", Duration::from_secs(30)).await;
    rt.wait_for("INVOKE r1", |c| {
        c.iter()
            .any(|c| c.kind == CallKind::EventDelivered("INVOKE r1".into()))
    })
    .await;
    assert_eq!(end_with_error().await.unwrap().status(), 200);
    let done = serde_json::json!([{
        "time": "2024-01-01T00:00:00.000Z",
        "type": "platform.runtimeDone",
        "record": {"requestId": "r1", "status": "error", "errorType": "Runtime.Unknown", "metrics": {"durationMs": 2.0}},
    }]);
    assert_eq!(rt.post_telemetry(&done).await, Some(200));
    rt.wait_next_event(3).await;
    // r2: nobody says so.
    invocation(&rt, udp, "r2", &[], 4).await;
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    let errors = intake
        .sketch_totals("aws.lambda.enhanced.errors", &[])
        .unwrap();
    assert_eq!(errors.cnt, 2);
}
