//! Datadog's own Python library (`datadog-lambda`) in a real Python runtime client (`awslambdaric`) against
//! the fake Runtime API, with offpath installed as Datadog's extension file (`/opt/extensions/datadog-agent`,
//! as the Datadog-compatible layer ships it): the library detects the extension and sends DogStatsD to it
//! instead of calling Datadog; the metrics arrive as distributions with the Lambda tags, the enhanced metrics
//! with the values the Telemetry API reported, and nothing reaches the intake but offpath's own payloads.
//!
//! The libraries use fixed places (`/opt`, ports 8124 and 8125), so the scenario runs in private mount and
//! network namespaces: the visible test re-runs this binary under `unshare`, where the ignored test does the
//! work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use offpath_tests::fake_intake::FakeIntake;
use offpath_tests::lambda_runtime::{
    ACCOUNT_ID, CallKind, Extension, FUNCTION_NAME, FakeRuntime, TelemetryMode, extension_env,
};
use offpath_tests::lambda_sandbox::{self, EXTENSION_FILE, PythonRuntime};
use serde_json::json;

const KEY: &str = "0123456789abcdef0123456789abcdef";

const HANDLER: &str = r#"
import socket
import urllib.request

from datadog_lambda.metric import lambda_metric
from datadog_lambda.wrapper import datadog_lambda_wrapper


def _call(path, headers=None):
    req = urllib.request.Request("http://127.0.0.1:8124" + path, data=b"{}", headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


@datadog_lambda_wrapper
def fn(event, context):
    hello = _call("/lambda/hello")
    for i in range(event.get("metrics", 0)):
        lambda_metric("offpath.py.records", i, tags=["route:a"])
    if event.get("js_invocations"):
        # What Datadog's JavaScript library sends: offpath counts invocations itself.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"aws.lambda.enhanced.invocations:1|d", ("127.0.0.1", 8125))
    if event.get("tracer_error"):
        # What a Datadog tracer says at the end of a failed invocation.
        _call("/lambda/end-invocation", {"x-datadog-invocation-error": "true"})
    if event.get("fail"):
        raise RuntimeError("the handler failed on purpose")
    return {"hello": hello, "metrics": event.get("metrics", 0)}
"#;

#[test]
fn datadogs_python_library_ships_through_offpaths_compatible_layer() {
    let exe = std::env::current_exe().unwrap();
    let (status, output) = lambda_sandbox::in_namespaces(
        &exe,
        &[
            "--exact",
            "inside_namespaces_python_library_and_compatible_layer",
            "--ignored",
            "--nocapture",
        ],
    );
    assert!(status.success(), "{output}");
    assert!(output.contains("1 passed"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside private namespaces, started by datadogs_python_library_ships_through_offpaths_compatible_layer"]
async fn inside_namespaces_python_library_and_compatible_layer() {
    lambda_sandbox::enter(Some(&offpath_tests::support::binary("offpath-lambda")));
    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let url = intake.url();
    // The Datadog libraries' fixed ports: 8124 and 8125 (this network namespace is private).
    let mut env = extension_env(
        &rt,
        &[
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", url.as_str()),
            ("DD_ENV", "test"),
            ("DD_SERVICE", "checkout"),
            ("DD_SERVERLESS_FLUSH_STRATEGY", "end"),
        ],
    );
    env.remove("DD_DOGSTATSD_PORT");
    env.remove("OFFPATH_LAMBDA_API_PORT");
    env.remove("OFFPATH_LAMBDA_TRACE_PORT");
    let mut ext = Extension::start_binary(std::path::Path::new(EXTENSION_FILE), env);
    // Lambda starts the runtime once the extensions have registered.
    rt.wait_next_event(1).await;
    let mut runtime = PythonRuntime::start(
        &rt,
        HANDLER,
        &[
            ("DD_LOG_LEVEL", "debug"),
            // Tracing stays on, the library's default: its tracer finds the extension file too and sends
            // its traces to 127.0.0.1:8126 at the end of each invocation.
            // Had the library missed the extension, it would have sent its metrics here itself.
            ("DD_API_KEY", KEY),
            ("DATADOG_HOST", url.as_str()),
        ],
    );
    lambda_sandbox::init_report(&rt, Duration::from_millis(300)).await;

    let events = [
        json!({"metrics": 3}),
        json!({"metrics": 3, "js_invocations": true}),
        json!({"metrics": 3, "tracer_error": true}),
        json!({"metrics": 3, "fail": true}),
        json!({"metrics": 3}),
    ];
    let mut done = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let inv = lambda_sandbox::invoke(&rt, &format!("r{i}"), event.clone(), true).await;
        if i != 3 {
            assert!(!inv.failed, "{:?}\n{}", inv.response, runtime.output());
            assert_eq!(inv.response["hello"], 200, "GET /lambda/hello answered");
        }
        done.push(inv);
    }
    // The last report is processed while the extension waits for its next event; SHUTDOWN flushes it.
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    let status = ext.wait_exit().await;
    assert!(status.success(), "{status:?}\n{}", ext.stderr());
    assert!(runtime.is_running(), "{}", runtime.output());
    let logs = ext.stderr();
    let out = runtime.output();

    // The tracer's traces were answered at once and dropped, said once.
    assert_eq!(
        logs.matches("offpath ships metrics, not traces").count(),
        1,
        "{logs}"
    );
    // The library saw the extension and used it: no request of its own reached the intake.
    assert!(
        out.contains("identified primary metrics handler as MetricsHandler.EXTENSION"),
        "{out}"
    );
    for r in intake.requests() {
        assert_eq!(r.path, "/api/beta/sketches", "{r:?}");
        assert!(r.api_key_ok);
    }
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    assert!(
        ext.stdout().is_empty(),
        "nothing fell back: {}",
        ext.stdout()
    );
    assert_eq!(
        rt.count(|k| matches!(k, CallKind::Register { name, .. } if name == "datadog-agent")),
        1
    );

    // Every lambda_metric sample, as a distribution with the Lambda tags.
    let lambda_tags = [
        format!("functionname:{FUNCTION_NAME}"),
        "region:us-east-1".to_owned(),
        format!("account_id:{ACCOUNT_ID}"),
        format!("aws_account:{ACCOUNT_ID}"),
        format!("resource:{FUNCTION_NAME}"),
        "memorysize:128".to_owned(),
        format!(
            "architecture:{}",
            offpath_lambda::tags::architecture(std::env::consts::ARCH)
        ),
        format!("function_arn:arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{FUNCTION_NAME}"),
        "env:test".to_owned(),
        "service:checkout".to_owned(),
    ];
    let tags: Vec<&str> = lambda_tags.iter().map(String::as_str).collect();
    let mut with_route = tags.clone();
    with_route.push("route:a");
    let records = intake
        .sketch_totals("offpath.py.records", &with_route)
        .unwrap_or_else(|| panic!("no records sketch: {:#?}\n{logs}", intake.all_sketches()));
    assert_eq!(records.cnt, 15);
    assert_eq!(records.sum, 5.0 * (0.0 + 1.0 + 2.0));
    assert!(
        intake.sketches("offpath.py.records", &[]).iter().all(|s| s
            .tags
            .iter()
            .any(|t| t.starts_with("dd_lambda_layer:datadog-python"))),
        "the library's own tag is kept"
    );

    // The enhanced metrics, with the values the Telemetry API reported.
    let enhanced = |name: &str, extra: &[&str]| {
        let mut t = tags.clone();
        t.extend_from_slice(extra);
        intake
            .sketch_totals(&format!("aws.lambda.enhanced.{name}"), &t)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} sketch tagged {t:?}: {:#?}",
                    intake.all_sketches()
                )
            })
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
    assert_eq!(
        enhanced("invocations", &[]).cnt,
        5,
        "the JS-style line was not counted"
    );
    // The JS-style invocations line and the library's own errors line for the failed handler.
    assert!(logs.contains("dropped.own_metric=2"), "{logs}");
    assert_eq!(enhanced("invocations", &["cold_start:true"]).cnt, 1);
    assert_eq!(enhanced("invocations", &["cold_start:false"]).cnt, 4);
    assert_eq!(
        enhanced("errors", &[]).cnt,
        2,
        "the failed handler and the tracer's error"
    );
    let runtime_ms: f64 = done.iter().map(|d| d.function.as_secs_f64() * 1e3).sum();
    let rd = enhanced("runtime_duration", &[]);
    assert_eq!(rd.cnt, 5);
    assert!(close(rd.sum, runtime_ms), "{} vs {runtime_ms}", rd.sum);
    let total_ms: f64 = done.iter().map(|d| d.next.as_secs_f64() * 1e3).sum();
    let duration = enhanced("duration", &[]);
    assert_eq!(duration.cnt, 5);
    assert!(
        close(duration.sum, total_ms / 1e3),
        "seconds: {} vs {total_ms}",
        duration.sum
    );
    let billed: f64 = done
        .iter()
        .map(|d| (d.next.as_secs_f64() * 1e3).ceil())
        .sum();
    assert!(close(enhanced("billed_duration", &[]).sum, billed / 1e3));
    assert!(close(
        enhanced("post_runtime_duration", &[]).sum,
        total_ms - runtime_ms
    ));
    assert_eq!(enhanced("memorysize", &[]).max, 128.0);
    assert_eq!(enhanced("max_memory_used", &[]).max, 64.0);
    let cost = enhanced("estimated_cost", &[]);
    assert_eq!(cost.cnt, 5);
    assert!(cost.min > 0.000_000_2, "{cost:?}");
    let init = enhanced("init_duration", &["init_type:on-demand", "cold_start:true"]);
    assert_eq!((init.cnt, init.sum), (1, 0.3));
    assert_eq!(enhanced("shutdowns", &[]).cnt, 1);
    assert_eq!(enhanced("produced_bytes", &[]).cnt, 5);
    // (cpu_total_utilization_pct needs /proc/uptime to move: 10 ms ticks, more than a quick invocation.)
    for name in [
        "cpu_total_time",
        "fd_use",
        "fd_max",
        "threads_use",
        "threads_max",
    ] {
        assert_eq!(enhanced(name, &[]).cnt, 5, "{name}");
    }
}
