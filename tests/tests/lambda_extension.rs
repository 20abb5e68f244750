//! The real `offpath-lambda` binary against the fake Lambda Runtime API: registration, the Telemetry
//! API subscription, the event loop, SHUTDOWN, graceful mode and fatal start-up errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use offpath_tests::lambda_runtime::{CallKind, Extension, FakeRuntime, TelemetryMode};

fn position(kinds: &[CallKind], pred: impl Fn(&CallKind) -> bool) -> usize {
    kinds
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("not found in {kinds:#?}"))
}

async fn invoke_and_wait(rt: &FakeRuntime, id: &str, next_calls: usize) {
    rt.invoke(id, Duration::from_secs(30)).await;
    rt.finish(id).await;
    rt.wait_next_event(next_calls).await;
}

async fn shutdown_and_exit(rt: &FakeRuntime, ext: &mut Extension) -> std::process::ExitStatus {
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    ext.wait_exit().await
}

#[tokio::test]
async fn the_extension_registers_subscribes_and_answers_invocations_until_shutdown() {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let mut ext = Extension::start(&rt, &[]);
    rt.wait_next_event(1).await;

    for i in 0..5 {
        invoke_and_wait(&rt, &format!("req-{i}"), i + 2).await;
    }
    let status = shutdown_and_exit(&rt, &mut ext).await;
    assert!(status.success(), "{status:?}; stderr:\n{}", ext.stderr());

    let kinds = rt.kinds();
    // Register first, under its file name, for INVOKE and SHUTDOWN, asking for the account id.
    assert_eq!(
        kinds[0],
        CallKind::Register {
            name: "offpath-lambda".into(),
            accept_feature: Some("accountId".into()),
            events: vec!["INVOKE".into(), "SHUTDOWN".into()],
        }
    );
    // The listener was up before the subscription, which came before the first event/next.
    let subscribe = position(&kinds, |k| matches!(k, CallKind::Subscribe { .. }));
    let CallKind::Subscribe { body, listener_up } = &kinds[subscribe] else {
        unreachable!()
    };
    assert!(
        listener_up,
        "telemetry listener not accepting at subscription time"
    );
    assert_eq!(body["types"], serde_json::json!(["platform"]));
    assert_eq!(body["buffering"]["timeoutMs"], 25);
    assert!(subscribe < position(&kinds, |k| *k == CallKind::NextEvent));

    // Every call carried the identifier; nothing unexpected was called.
    assert!(
        !kinds.iter().any(|k| matches!(
            k,
            CallKind::BadIdentifier { .. }
                | CallKind::Other { .. }
                | CallKind::InitError { .. }
                | CallKind::ExitError { .. }
        )),
        "{kinds:#?}"
    );
    // One event/next per event, and none after SHUTDOWN.
    assert_eq!(rt.count(|k| *k == CallKind::NextEvent), 6);
    assert_eq!(
        kinds.last(),
        Some(&CallKind::EventDelivered("SHUTDOWN".into()))
    );
}

#[tokio::test]
async fn the_telemetry_listener_acknowledges_runtime_done_batches() {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let mut ext = Extension::start(&rt, &[]);
    rt.wait_next_event(1).await;
    rt.invoke("req-a", Duration::from_secs(30)).await;
    assert_eq!(rt.finish("req-a").await, Some(200));
    rt.wait_next_event(2).await;
    assert!(shutdown_and_exit(&rt, &mut ext).await.success());
}

async fn graceful_mode(mode: TelemetryMode) {
    let rt = FakeRuntime::start(mode).await;
    let mut ext = Extension::start(&rt, &[]);
    rt.wait_next_event(1).await;
    for i in 0..3 {
        // No runtimeDone ever arrives: the extension must not wait for one.
        rt.invoke(&format!("req-{i}"), Duration::from_secs(30))
            .await;
        assert_eq!(rt.finish(&format!("req-{i}")).await, None);
        rt.wait_next_event(i + 2).await;
    }
    let status = shutdown_and_exit(&rt, &mut ext).await;
    assert!(status.success(), "{status:?}; stderr:\n{}", ext.stderr());
    let logs = ext.stderr();
    assert_eq!(
        logs.matches("the Telemetry API is unavailable").count(),
        1,
        "logged once:\n{logs}"
    );
    assert_eq!(rt.count(|k| matches!(k, CallKind::InitError { .. })), 0);
}

#[tokio::test]
async fn a_refused_telemetry_subscription_degrades_to_graceful_mode() {
    graceful_mode(TelemetryMode::Refuse(400)).await;
}

#[tokio::test]
async fn telemetry_not_supported_degrades_to_graceful_mode() {
    graceful_mode(TelemetryMode::NotSupported).await;
}

#[tokio::test]
async fn an_invalid_configuration_is_reported_through_init_error_and_the_extension_exits() {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let mut ext = Extension::start(&rt, &[("DD_SERVERLESS_FLUSH_STRATEGY", "sometimes")]);
    let status = ext.wait_exit().await;
    assert_eq!(status.code(), Some(1), "stderr:\n{}", ext.stderr());

    let kinds = rt.kinds();
    assert!(matches!(kinds[0], CallKind::Register { .. }), "{kinds:#?}");
    let CallKind::InitError { error_type, body } = &kinds[1] else {
        panic!("expected init/error after register: {kinds:#?}")
    };
    assert_eq!(error_type, "Fatal.ConfigInvalid");
    assert_eq!(body["errorType"], "ConfigInvalid");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("DD_SERVERLESS_FLUSH_STRATEGY"),
        "{message}"
    );
    assert_eq!(rt.count(|k| *k == CallKind::NextEvent), 0);
}

#[tokio::test]
async fn an_invalid_budget_names_its_key_in_init_error() {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let mut ext = Extension::start(&rt, &[("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "fast")]);
    assert_eq!(ext.wait_exit().await.code(), Some(1));
    let reported = rt.kinds().into_iter().find_map(|k| match k {
        CallKind::InitError { body, .. } => Some(body),
        _ => None,
    });
    let body = reported.expect("init/error reported");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("OFFPATH_LAMBDA_FLUSH_BUDGET_MS")
    );
}

#[tokio::test]
async fn without_a_runtime_api_the_extension_exits_with_an_error() {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let mut env = offpath_tests::lambda_runtime::extension_env(&rt, &[]);
    env.remove("AWS_LAMBDA_RUNTIME_API");
    let mut ext = Extension::start_binary(&offpath_tests::support::binary("offpath-lambda"), env);
    assert_eq!(ext.wait_exit().await.code(), Some(1));
    assert!(
        ext.stderr().contains("AWS_LAMBDA_RUNTIME_API"),
        "{}",
        ext.stderr()
    );
    assert!(rt.calls().is_empty());
}

#[tokio::test]
async fn a_timeout_shutdown_in_the_middle_of_the_life_exits_cleanly() {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let mut ext = Extension::start(&rt, &[]);
    rt.wait_next_event(1).await;
    invoke_and_wait(&rt, "req-1", 2).await;
    rt.shutdown("TIMEOUT", Duration::from_millis(2000)).await;
    let status = ext.wait_exit().await;
    assert!(status.success(), "{status:?}");
    assert_eq!(rt.count(|k| *k == CallKind::NextEvent), 2);
    // Without an API key the enhanced metrics are written to stdout, as records and nothing else.
    for line in ext.stdout().lines() {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout is for records only: {line}: {e}"));
        assert!(
            record["metric"]
                .as_str()
                .unwrap()
                .starts_with("aws.lambda.enhanced."),
            "{line}"
        );
    }
}

/// Lambda refuses SHUTDOWN to an extension registered under another name than its file's: the binary
/// registers under the name it was started as, `datadog-agent` in the Datadog-compatible layer.
#[tokio::test]
async fn the_extension_registers_under_its_file_name() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["datadog-agent", "offpath"] {
        let file = dir.path().join(name);
        std::fs::copy(offpath_tests::support::binary("offpath-lambda"), &file).unwrap();
        let rt = FakeRuntime::start(TelemetryMode::Accept).await;
        let mut ext = Extension::start_binary(
            &file,
            offpath_tests::lambda_runtime::extension_env(&rt, &[]),
        );
        rt.wait_next_event(1).await;
        assert!(shutdown_and_exit(&rt, &mut ext).await.success());
        let CallKind::Register {
            name: registered, ..
        } = &rt.kinds()[0]
        else {
            panic!("{:#?}", rt.kinds())
        };
        assert_eq!(registered, name);
    }
}

/// A Runtime API that accepts the connection and never answers `register`: the extension gives up, says
/// why, and exits (Lambda then fails the init) instead of hanging the sandbox.
#[tokio::test]
async fn a_runtime_api_that_never_answers_register_ends_the_extension_with_an_error() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let mut env = offpath_tests::lambda_runtime::extension_env(&rt, &[]);
    env.insert("AWS_LAMBDA_RUNTIME_API".into(), addr);
    let started = std::time::Instant::now();
    let mut ext = Extension::start_binary(&offpath_tests::support::binary("offpath-lambda"), env);
    let status = ext.wait_exit().await;
    assert_eq!(status.code(), Some(1), "{}", ext.stderr());
    let logs = ext.stderr();
    assert!(
        logs.contains("register") && logs.contains("did not answer within 5s"),
        "{logs}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    held.abort();
}
