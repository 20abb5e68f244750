//! The extension lifecycle with a test flusher in place of the metrics pipeline, against the fake
//! Runtime API: when flushes happen relative to `runtimeDone` and `event/next`, under each strategy,
//! with a slow, failing or crashing pipeline, and at SHUTDOWN.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use offpath_lambda::lifecycle::{
    self, BoxError, Exit, FlushKind, FlushOutcome, Flusher, Options, RunError, Startup,
};
use offpath_tests::lambda_runtime::{Call, CallKind, FakeRuntime, Marker, TelemetryMode};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the test flusher does when asked to flush.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Return at once.
    Quick,
    /// Ignore the deadline and take this long (a slow intake).
    Slow(Duration),
    /// Panic on the first flush.
    Panic,
    /// Report a failure every time.
    Fail,
}

/// Records `flush <kind> start <budget ms>` and `flush <kind> end` marks on the fake's timeline.
struct TestFlusher {
    marker: Marker,
    behaviour: Behaviour,
    tags: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Flusher for TestFlusher {
    async fn flush(&mut self, deadline: Instant, kind: FlushKind) -> FlushOutcome {
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        self.marker.mark(format!("flush {kind:?} start {budget}"));
        let outcome = match self.behaviour {
            Behaviour::Quick => FlushOutcome::Complete,
            Behaviour::Slow(d) => {
                tokio::time::sleep(d).await;
                FlushOutcome::Deferred
            }
            Behaviour::Panic => panic!("pipeline crash (test)"),
            Behaviour::Fail => FlushOutcome::Failed("intake unreachable (test)".into()),
        };
        self.marker.mark(format!("flush {kind:?} end"));
        outcome
    }

    fn set_tags(&mut self, tags: Vec<String>) {
        self.tags.lock().unwrap().push(tags);
    }
}

struct Harness {
    rt: FakeRuntime,
    run: JoinHandle<Result<Exit, RunError>>,
    startup: Arc<Mutex<Option<Startup>>>,
    tags: Arc<Mutex<Vec<Vec<String>>>>,
    _dir: tempfile::TempDir,
}

async fn start(mode: TelemetryMode, env: &[(&str, &str)], behaviour: Option<Behaviour>) -> Harness {
    let rt = FakeRuntime::start(mode).await;
    let mut vars: HashMap<String, String> = [
        ("OFFPATH_LAMBDA_TELEMETRY_PORT", "0"),
        ("OFFPATH_LAMBDA_TELEMETRY_HOST", "127.0.0.1"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("OFFPATH_STATUS_ADDR", ""),
        ("OFFPATH_LAMBDA_API_PORT", "0"),
        ("OFFPATH_LAMBDA_TRACE_PORT", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in env {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    // An empty process list and an Amazon Linux 2023 release file: the runtime is `provided.al2023`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("proc")).unwrap();
    std::fs::write(
        dir.path().join("os-release"),
        "ID=\"amzn\"\nVERSION_ID=\"2023\"\n",
    )
    .unwrap();
    let opts = Options {
        proc_root: dir.path().join("proc"),
        os_release: dir.path().join("os-release"),
        ..Options::new(rt.runtime_api(), Arc::new(move |k| vars.get(k).cloned()))
    };
    let startup = Arc::new(Mutex::new(None));
    let tags = Arc::new(Mutex::new(Vec::new()));
    let flusher = behaviour.map(|behaviour| TestFlusher {
        marker: rt.marker(),
        behaviour,
        tags: Arc::clone(&tags),
    });
    let seen = Arc::clone(&startup);
    let run = tokio::spawn(lifecycle::run(opts, move |s: Startup| async move {
        *seen.lock().unwrap() = Some(s);
        flusher.ok_or_else(|| BoxError::from("pipeline start failed (test)"))
    }));
    rt.wait_next_event(1).await;
    Harness {
        rt,
        run,
        startup,
        tags,
        _dir: dir,
    }
}

impl Harness {
    /// One invocation whose handler finishes at once; returns when the extension asks for the next
    /// event (the `n`-th event/next call).
    async fn invocation(&self, id: &str, n: usize) {
        self.rt.invoke(id, Duration::from_secs(30)).await;
        self.rt
            .wait_for("the INVOKE to be delivered", |c| {
                has(c, &CallKind::EventDelivered(format!("INVOKE {id}")))
            })
            .await;
        self.rt.finish(id).await;
        self.rt.wait_next_event(n).await;
    }

    async fn shutdown(self) -> (Vec<Call>, Exit) {
        self.rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
        let exit = tokio::time::timeout(Duration::from_secs(30), self.run)
            .await
            .expect("lifecycle returns after SHUTDOWN")
            .unwrap()
            .expect("clean exit");
        (self.rt.calls(), exit)
    }
}

fn has(calls: &[Call], kind: &CallKind) -> bool {
    calls.iter().any(|c| c.kind == *kind)
}

fn is_mark(kind: &CallKind, prefix: &str) -> bool {
    matches!(kind, CallKind::Mark(m) if m.starts_with(prefix))
}

/// The timeline as short strings: `next`, `INVOKE r`, `done r`, `flush Invocation start`, …
fn timeline(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| match &c.kind {
            CallKind::NextEvent => Some("next".to_owned()),
            CallKind::EventDelivered(e) => Some(e.clone()),
            CallKind::RuntimeDone { request_id } => Some(format!("done {request_id}")),
            // Drop the budget from start marks; it is checked separately.
            CallKind::Mark(m) => Some(m.split(' ').take(3).collect::<Vec<_>>().join(" ")),
            _ => None,
        })
        .collect()
}

fn budgets_ms(calls: &[Call], kind: &str) -> Vec<u128> {
    calls
        .iter()
        .filter_map(|c| match &c.kind {
            CallKind::Mark(m) => m
                .strip_prefix(&format!("flush {kind} start "))
                .map(|b| b.parse().unwrap()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn end_flushes_after_runtime_done_and_before_the_next_event_call() {
    let h = start(
        TelemetryMode::Accept,
        &[("DD_SERVERLESS_FLUSH_STRATEGY", "end")],
        Some(Behaviour::Quick),
    )
    .await;
    for i in 0..3 {
        h.invocation(&format!("r{i}"), i + 2).await;
    }
    let (calls, exit) = h.shutdown().await;
    assert_eq!(exit.reason, "SPINDOWN");
    let mut want = vec!["next".to_owned()];
    for i in 0..3 {
        want.extend([
            format!("INVOKE r{i}"),
            format!("done r{i}"),
            "flush Invocation start".into(),
            "flush Invocation end".into(),
            "next".into(),
        ]);
    }
    want.extend([
        "SHUTDOWN".into(),
        "flush Final start".into(),
        "flush Final end".into(),
    ]);
    assert_eq!(timeline(&calls), want);
    // Each end flush is bounded by the default 200 ms budget.
    assert!(
        budgets_ms(&calls, "Invocation").iter().all(|b| *b <= 200),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn the_default_adaptive_strategy_flushes_quiet_functions_at_the_end() {
    let h = start(TelemetryMode::Accept, &[], Some(Behaviour::Quick)).await;
    h.invocation("r0", 2).await;
    let (calls, _) = h.shutdown().await;
    let t = timeline(&calls);
    let done = t.iter().position(|e| e == "done r0").unwrap();
    assert_eq!(t[done + 1], "flush Invocation start");
}

#[tokio::test]
async fn a_slow_intake_does_not_hold_event_next_past_the_flush_budget() {
    let h = start(
        TelemetryMode::Accept,
        &[
            ("DD_SERVERLESS_FLUSH_STRATEGY", "end"),
            ("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "100"),
        ],
        Some(Behaviour::Slow(Duration::from_secs(3))),
    )
    .await;
    h.invocation("r0", 2).await;
    let calls = h.rt.calls();
    // The extension asked for the next event while the flush was still running.
    let t = timeline(&calls);
    let flush = t
        .iter()
        .position(|e| e == "flush Invocation start")
        .unwrap();
    assert_eq!(t[flush - 1], "done r0");
    assert_eq!(t[flush + 1], "next");
    assert!(!t.contains(&"flush Invocation end".to_owned()), "{t:?}");
    assert!(budgets_ms(&calls, "Invocation")[0] <= 100);
    // The next invocation cannot start a second flush while the first still runs; SHUTDOWN waits
    // for the running one within its deadline, and the lifecycle still exits.
    let (_, exit) = h.shutdown().await;
    assert_eq!(exit.reason, "SPINDOWN");
}

#[tokio::test]
async fn a_crashing_pipeline_is_survived_and_the_extension_keeps_answering() {
    let h = start(
        TelemetryMode::Accept,
        &[("DD_SERVERLESS_FLUSH_STRATEGY", "end")],
        Some(Behaviour::Panic),
    )
    .await;
    for i in 0..3 {
        h.invocation(&format!("r{i}"), i + 2).await;
    }
    let (calls, exit) = h.shutdown().await;
    assert_eq!(exit.reason, "SPINDOWN");
    // One flush started and crashed; the pipeline is gone, the Runtime API still answered.
    assert_eq!(
        calls.iter().filter(|c| is_mark(&c.kind, "flush")).count(),
        1
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.kind == CallKind::NextEvent)
            .count(),
        4
    );
}

#[tokio::test]
async fn a_failing_pipeline_is_retried_at_every_flush() {
    let h = start(
        TelemetryMode::Accept,
        &[("DD_SERVERLESS_FLUSH_STRATEGY", "end")],
        Some(Behaviour::Fail),
    )
    .await;
    for i in 0..3 {
        h.invocation(&format!("r{i}"), i + 2).await;
    }
    let (calls, _) = h.shutdown().await;
    assert_eq!(
        calls
            .iter()
            .filter(|c| is_mark(&c.kind, "flush Invocation start"))
            .count(),
        3
    );
    assert!(calls.iter().any(|c| is_mark(&c.kind, "flush Final end")));
}

#[tokio::test]
async fn a_pipeline_that_fails_to_start_leaves_the_event_loop_running() {
    let h = start(TelemetryMode::Accept, &[], None).await;
    // No runtimeDone is needed: with no pipeline there is nothing to wait for.
    h.rt.invoke("r0", Duration::from_secs(30)).await;
    h.rt.wait_next_event(2).await;
    let (calls, exit) = h.shutdown().await;
    assert_eq!(exit.reason, "SPINDOWN");
    assert!(!calls.iter().any(|c| is_mark(&c.kind, "flush")));
}

#[tokio::test]
async fn the_final_flush_gets_at_most_one_and_a_half_seconds() {
    let h = start(TelemetryMode::Accept, &[], Some(Behaviour::Quick)).await;
    let (calls, _) = h.shutdown().await;
    let budgets = budgets_ms(&calls, "Final");
    assert_eq!(budgets.len(), 1);
    assert!(budgets[0] <= 1500, "{budgets:?}");
}

#[tokio::test]
async fn a_slow_final_flush_does_not_keep_the_extension_past_the_shutdown_deadline() {
    let h = start(
        TelemetryMode::Accept,
        &[],
        Some(Behaviour::Slow(Duration::from_secs(20))),
    )
    .await;
    // The lifecycle returns although the flush would take 20 s (the harness gives up after 30 s).
    let (calls, _) = h.shutdown().await;
    assert!(calls.iter().any(|c| is_mark(&c.kind, "flush Final start")));
    assert!(!calls.iter().any(|c| is_mark(&c.kind, "flush Final end")));
}

#[tokio::test]
async fn without_telemetry_flushes_happen_at_the_next_invoke_and_at_shutdown() {
    for mode in [TelemetryMode::NotSupported, TelemetryMode::Refuse(500)] {
        let h = start(mode, &[], Some(Behaviour::Quick)).await;
        for i in 0..3 {
            h.rt.invoke(&format!("r{i}"), Duration::from_secs(30)).await;
            h.rt.wait_next_event(i + 2).await;
        }
        let (calls, _) = h.shutdown().await;
        let mut want = vec!["next".to_owned()];
        for i in 0..3 {
            want.extend([
                format!("INVOKE r{i}"),
                "flush Invocation start".into(),
                "flush Invocation end".into(),
                "next".into(),
            ]);
        }
        want.extend([
            "SHUTDOWN".into(),
            "flush Final start".into(),
            "flush Final end".into(),
        ]);
        assert_eq!(timeline(&calls), want, "{mode:?}");
    }
}

#[tokio::test]
async fn periodically_flushes_at_invocation_start_without_waiting_for_runtime_done() {
    let h = start(
        TelemetryMode::Accept,
        &[("DD_SERVERLESS_FLUSH_STRATEGY", "periodically,60000")],
        Some(Behaviour::Quick),
    )
    .await;
    // The handlers never finish as far as telemetry goes: the extension must not wait for them.
    for i in 0..3 {
        h.rt.invoke(&format!("r{i}"), Duration::from_secs(30)).await;
        h.rt.wait_next_event(i + 2).await;
    }
    let (calls, _) = h.shutdown().await;
    let t = timeline(&calls);
    // Only the first invocation is due (60 s interval).
    assert_eq!(
        t[..7],
        [
            "next",
            "INVOKE r0",
            "flush Invocation start",
            "flush Invocation end",
            "next",
            "INVOKE r1",
            "next"
        ]
    );
}

#[tokio::test]
async fn end_with_an_interval_also_flushes_during_a_long_invocation() {
    let h = start(
        TelemetryMode::Accept,
        &[("DD_SERVERLESS_FLUSH_STRATEGY", "end,20")],
        Some(Behaviour::Quick),
    )
    .await;
    h.rt.invoke("long", Duration::from_secs(30)).await;
    // The handler is still running; flushes come on the interval meanwhile.
    h.rt.wait_for("two flushes during the invocation", |c| {
        c.iter()
            .filter(|c| is_mark(&c.kind, "flush Invocation end"))
            .count()
            >= 2
    })
    .await;
    assert_eq!(h.rt.count(|k| *k == CallKind::NextEvent), 1);
    h.rt.finish("long").await;
    h.rt.wait_next_event(2).await;
    let (calls, _) = h.shutdown().await;
    let t = timeline(&calls);
    let done = t.iter().position(|e| e == "done long").unwrap();
    let next = t.iter().rposition(|e| e == "next").unwrap();
    assert!(
        t[done..next].contains(&"flush Invocation start".to_owned()),
        "an end flush after runtimeDone: {t:?}"
    );
}

#[tokio::test]
async fn tags_known_at_registration_go_to_the_pipeline_start_and_the_runtime_follows() {
    let h = start(TelemetryMode::Accept, &[], Some(Behaviour::Quick)).await;
    let startup = h.startup.lock().unwrap().clone().unwrap();
    assert_eq!(
        startup.tags,
        [
            "functionname:offpath-test-fn",
            "region:us-east-1",
            "account_id:123456789012",
            "aws_account:123456789012",
            "resource:offpath-test-fn",
            "memorysize:256",
            &format!(
                "architecture:{}",
                offpath_lambda::tags::architecture(std::env::consts::ARCH)
            ),
            "function_arn:arn:aws:lambda:us-east-1:123456789012:function:offpath-test-fn",
        ]
    );
    assert_eq!(
        startup.config.lambda.flush_budget,
        Duration::from_millis(200)
    );
    h.invocation("r0", 2).await;
    h.invocation("r1", 3).await;
    let updates = h.tags.lock().unwrap().clone();
    // Learned once, at the first invocation.
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert!(updates[0].contains(&"runtime:provided.al2023".to_owned()));
    h.shutdown().await;
}
