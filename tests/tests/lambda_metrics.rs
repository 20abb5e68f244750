//! The real `offpath-lambda` binary with its metrics pipeline: a statsd client sends during each
//! "handler", the fake Runtime API posts `runtimeDone`, and the metrics reach the fake intake (or
//! stdout without an API key), tagged with the Lambda tags.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::UdpSocket;
use std::time::Duration;

use offpath_tests::fake_intake::{FakeIntake, Reply};
use offpath_tests::lambda_runtime::{
    CallKind, Extension, FakeRuntime, TelemetryMode, invocation, send_lines as send,
};

const KEY: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn fifty_invocations_deliver_every_count_as_a_tagged_distribution() {
    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let url = intake.url();
    let (mut ext, udp) = Extension::start_ready(
        &rt,
        &[
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", url.as_str()),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("DD_ENV", "test"),
        ],
    )
    .await;
    for i in 0..50 {
        invocation(
            &rt,
            udp,
            &format!("r{i}"),
            &["lambda.e2e.hits:1|c|#route:a", "lambda.e2e.latency:12|ms"],
            i + 2,
        )
        .await;
    }
    let before_shutdown = intake.requests().len();
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    let status = ext.wait_exit().await;
    assert!(status.success(), "{status:?}\n{}", ext.stderr());

    // Flushes happened during the sandbox's life, not only at SHUTDOWN.
    assert!(before_shutdown > 0, "nothing delivered before SHUTDOWN");
    let tags = [
        "route:a",
        "env:test",
        "functionname:offpath-test-fn",
        "region:us-east-1",
        "account_id:123456789012",
        "memorysize:128",
        "function_arn:arn:aws:lambda:us-east-1:123456789012:function:offpath-test-fn",
    ];
    let hits = intake
        .sketch_totals("lambda.e2e.hits", &tags)
        .unwrap_or_else(|| panic!("no hits sketch; stderr:\n{}", ext.stderr()));
    assert_eq!(hits.cnt, 50);
    assert_eq!(hits.sum, 50.0);
    let latency = intake.sketch_totals("lambda.e2e.latency", &[]).unwrap();
    assert_eq!(latency.cnt, 50);
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    // Nothing fell back: everything was delivered.
    assert!(ext.stdout().is_empty(), "{}", ext.stdout());
}

#[tokio::test]
async fn without_an_api_key_metrics_are_written_to_stdout_as_records() {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let mut ext = Extension::start(&rt, &[("OFFPATH_SELF_TELEMETRY", "false")]);
    let udp = ext.udp_addr().await;
    rt.wait_next_event(1).await;
    invocation(&rt, udp, "r0", &["lambda.local.hits:2|c"], 2).await;
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success());
    let out = ext.stdout();
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let hits: Vec<_> = records
        .iter()
        .filter(|r| r["metric"] == "lambda.local.hits")
        .collect();
    assert!(!hits.is_empty(), "{out}");
    assert_eq!(hits[0]["kind"], "sketch", "{out}");
    let tags = hits[0]["tags"].as_array().unwrap();
    assert!(
        tags.iter().any(|t| t == "functionname:offpath-test-fn"),
        "{out}"
    );
}

#[tokio::test]
async fn an_unreachable_intake_loses_nothing_the_rest_is_written_to_stdout_at_shutdown() {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    // Nothing listens on this port (bound then released).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (mut ext, udp) = Extension::start_ready(
        &rt,
        &[
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", dead.as_str()),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "50"),
        ],
    )
    .await;
    for i in 0..3 {
        invocation(&rt, udp, &format!("r{i}"), &["lambda.down.hits:1|c"], i + 2).await;
    }
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    let out = ext.stdout();
    let total: f64 = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["metric"] == "lambda.down.hits")
        .flat_map(|r| r["sketches"].as_array().cloned().unwrap_or_default())
        .map(|s| s["cnt"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(total, 3.0, "stdout:\n{out}\nstderr:\n{}", ext.stderr());
}

#[tokio::test]
async fn an_intake_slower_than_the_budget_does_not_hold_event_next_and_the_data_arrives_later() {
    let intake = FakeIntake::start(KEY).await;
    // The first request is answered only after 3 s (and then refused, so it stores nothing): far
    // past the 50 ms budget. Every later request is accepted at once.
    intake.push_replies([Reply::Delay(Duration::from_secs(3), 503)]);
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let url = intake.url();
    let (mut ext, udp) = Extension::start_ready(
        &rt,
        &[
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", url.as_str()),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("DD_SERVERLESS_FLUSH_STRATEGY", "end"),
            ("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "50"),
        ],
    )
    .await;
    invocation(&rt, udp, "r0", &["lambda.slow.hits:1|c"], 2).await;
    // The extension asked for the next event while the intake still held the first request.
    assert!(
        intake.requests().is_empty(),
        "{:?}\nstderr:\n{}",
        intake.requests(),
        ext.stderr()
    );
    let kinds = rt.kinds();
    let done = kinds
        .iter()
        .position(|k| matches!(k, CallKind::RuntimeDone { request_id } if request_id == "r0"))
        .unwrap();
    assert_eq!(kinds[done + 1..].last(), Some(&CallKind::NextEvent));

    // The payload that missed the budget waited in the retry queue and goes out with later flushes.
    invocation(&rt, udp, "r1", &["lambda.slow.hits:1|c"], 3).await;
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    let delivered = intake
        .sketch_totals("lambda.slow.hits", &[])
        .map_or(0, |s| s.cnt);
    assert_eq!(
        delivered,
        2,
        "stdout:\n{}\nstderr:\n{}",
        ext.stdout(),
        ext.stderr()
    );
    assert!(ext.stdout().is_empty(), "{}", ext.stdout());
}

#[tokio::test]
async fn a_pipeline_that_cannot_start_never_breaks_the_function() {
    // The DogStatsD port is taken (no SO_REUSEPORT here), so the metrics pipeline cannot start.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let mut ext = Extension::start(
        &rt,
        &[
            ("DD_DOGSTATSD_PORT", port.as_str()),
            ("DD_SERVERLESS_FLUSH_STRATEGY", "end"),
        ],
    );
    rt.wait_next_event(1).await;
    for i in 0..3 {
        let id = format!("r{i}");
        rt.invoke(&id, Duration::from_secs(30)).await;
        rt.finish(&id).await;
        rt.wait_next_event(i + 2).await;
    }
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    let kinds = rt.kinds();
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, CallKind::InitError { .. } | CallKind::ExitError { .. })),
        "{kinds:?}"
    );
    let err = ext.stderr();
    assert_eq!(
        err.matches("the metrics pipeline failed to start").count(),
        1,
        "{err}"
    );
    drop(taken);
}

/// The lifecycle and the real metrics pipeline in this process, with a process list in which the
/// runtime's process shows `AWS_EXECUTION_ENV`: the runtime learned at the first INVOKE tags every metric
/// flushed after it, points received before it included.
#[tokio::test]
async fn the_runtime_learned_at_the_first_invocation_tags_every_metric_flushed_after_it() {
    use std::collections::HashMap;
    use std::sync::Arc;

    use offpath_lambda::lifecycle::{self, BoxError, Options, Startup};
    use offpath_lambda::pipeline::LambdaPipeline;

    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc/42")).unwrap();
    std::fs::write(
        dir.path().join("proc/42/environ"),
        b"PATH=/usr/bin\0AWS_EXECUTION_ENV=AWS_Lambda_python3.12\0",
    )
    .unwrap();
    let mut vars = offpath_tests::lambda_runtime::extension_env(
        &rt,
        &[
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", intake.url().as_str()),
            ("DD_LOG_LEVEL", "info"),
        ],
    );
    vars.remove("AWS_LAMBDA_RUNTIME_API");
    let vars: HashMap<String, String> = vars;
    let opts = Options {
        proc_root: dir.path().join("proc"),
        os_release: dir.path().join("os-release"),
        ..Options::new(rt.runtime_api(), Arc::new(move |k| vars.get(k).cloned()))
    };
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let run = tokio::spawn(lifecycle::run(opts, move |s: Startup| async move {
        let pipeline = LambdaPipeline::start(s).await.map_err(BoxError::from)?;
        let _ = addr_tx.send(pipeline.udp_addr());
        Ok::<_, BoxError>(pipeline)
    }));
    let udp = addr_rx.await.unwrap().unwrap();
    rt.wait_next_event(1).await;
    // Received during init, before the runtime is known; flushed after it is.
    send(udp, &["lambda.runtime.early:1|c"]);
    invocation(&rt, udp, "r0", &["lambda.runtime.hits:1|c"], 2).await;
    invocation(&rt, udp, "r1", &["lambda.runtime.hits:1|c"], 3).await;
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    let exit = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap();
    assert!(exit.is_ok(), "{exit:?}");

    let tags = ["runtime:python3.12", "functionname:offpath-test-fn"];
    let hits = intake.sketch_totals("lambda.runtime.hits", &tags).unwrap();
    assert_eq!(hits.cnt, 2);
    let early = intake.sketch_totals("lambda.runtime.early", &tags).unwrap();
    assert_eq!(early.cnt, 1);
    // Every sketch carries it, and only once.
    for s in intake.all_sketches() {
        let n = s.tags.iter().filter(|t| t.starts_with("runtime:")).count();
        assert_eq!(n, 1, "{s:?}");
    }
}
