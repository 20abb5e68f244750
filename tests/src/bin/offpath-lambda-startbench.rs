//! Start-up benchmark of the Lambda extension: time from exec to the register call, and to the first
//! `event/next` (registered, configured, telemetry subscribed), against the fake Runtime API.
//!
//! ```text
//! offpath-lambda-startbench [--runs N] <offpath-lambda binary>...
//! offpath-lambda-startbench [--runs N] --probe <register_probe example binary>
//! offpath-lambda-startbench [--runs N] --post-runtime
//! offpath-lambda-startbench [--runs N] --with-intake <offpath-lambda binary>
//! ```
//! `--with-intake` runs the binary against the fake intake (healthy, local) with two metrics sent per
//! invocation and times `runtimeDone` POSTed -> next `event/next`: the post-runtime time the
//! extension adds per invocation, flush included (Lambda's 25 ms telemetry buffering excluded).
//! `--post-runtime` runs the lifecycle in process with a flusher that returns at once (`end` strategy)
//! and times `runtimeDone` POSTed -> next `event/next`: the lifecycle's own post-runtime cost, without
//! Lambda's telemetry buffering (25 ms) and without the pipeline's flush.
//! Each run starts a fresh fake Runtime API and a fresh process, then shuts it down with SHUTDOWN.
//! `--probe` compares the cold register round trip of the extension's hyper client with reqwest's
//! (`cargo build --release -p offpath-lambda --example register_probe`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use offpath_lambda::lifecycle::{self, BoxError, FlushKind, FlushOutcome, Flusher, Options};

use offpath_tests::lambda_runtime::{
    Call, CallKind, Extension, FakeRuntime, TelemetryMode, extension_env,
};

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<34} n={:<3} median {:>8.2} ms  p90 {:>8.2} ms  min {:>8.2} ms  max {:>8.2} ms",
        samples.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}

/// One start of `binary` (with `args`); returns (exec -> register, exec -> first event/next).
async fn one_start(binary: &Path, args: &[&str], wait_ready: bool) -> (Duration, Option<Duration>) {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let env = extension_env(&rt, &[("DD_LOG_LEVEL", "warn")]);
    let t0 = Instant::now();
    let mut ext = Extension::start_with_args(binary, args, env);
    let calls = rt
        .wait_for("register", |c| {
            c.iter()
                .any(|c| matches!(c.kind, CallKind::Register { .. }))
        })
        .await;
    let register = calls
        .iter()
        .find(|c| matches!(c.kind, CallKind::Register { .. }))
        .unwrap()
        .at
        - t0;
    let ready = if wait_ready {
        let calls = rt.wait_next_event(1).await;
        let first = calls
            .iter()
            .find(|c| c.kind == CallKind::NextEvent)
            .unwrap();
        rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
        Some(first.at - t0)
    } else {
        None
    };
    ext.wait_exit().await;
    (register, ready)
}

/// A flusher that has nothing to do: isolates the lifecycle's own cost.
struct NothingToFlush;

impl Flusher for NothingToFlush {
    async fn flush(&mut self, _deadline: tokio::time::Instant, _kind: FlushKind) -> FlushOutcome {
        FlushOutcome::Complete
    }
    fn set_tags(&mut self, _tags: Vec<String>) {}
}

async fn post_runtime(runs: usize) {
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let vars = extension_env(&rt, &[("DD_SERVERLESS_FLUSH_STRATEGY", "end")]);
    let opts = Options::new(rt.runtime_api(), Arc::new(move |k| vars.get(k).cloned()));
    let run = tokio::spawn(lifecycle::run(opts, |_| async {
        Ok::<_, BoxError>(NothingToFlush)
    }));
    rt.wait_next_event(1).await;
    let mut samples = Vec::new();
    for i in 0..runs {
        let id = format!("r{i}");
        rt.invoke(&id, Duration::from_secs(30)).await;
        rt.wait_for("INVOKE delivered", |c| {
            c.iter()
                .any(|c| c.kind == CallKind::EventDelivered(format!("INVOKE {id}")))
        })
        .await;
        rt.finish(&id).await;
        let calls = rt.wait_next_event(i + 2).await;
        samples.push(post_runtime_gap(&calls, &id));
    }
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    run.await.unwrap().unwrap();
    summary("runtimeDone -> event/next (no-op flush)", samples.clone());
    samples.sort();
    let p99 = samples[((samples.len() - 1) as f64 * 0.99).round() as usize];
    println!("  p99 {:.2} ms", p99.as_secs_f64() * 1e3);
}

async fn with_intake(binary: &Path, runs: usize) {
    const KEY: &str = "0123456789abcdef0123456789abcdef";
    let intake = offpath_tests::fake_intake::FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let url = intake.url();
    let env = extension_env(
        &rt,
        &[
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", url.as_str()),
            ("DD_LOG_LEVEL", "info"),
            ("DD_SERVERLESS_FLUSH_STRATEGY", "end"),
        ],
    );
    let mut ext = Extension::start_with_args(binary, &[], env);
    let udp = ext.udp_addr().await;
    rt.wait_next_event(1).await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut samples = Vec::new();
    for i in 0..runs {
        let id = format!("r{i}");
        rt.invoke(&id, Duration::from_secs(30)).await;
        rt.wait_for("INVOKE delivered", |c| {
            c.iter()
                .any(|c| c.kind == CallKind::EventDelivered(format!("INVOKE {id}")))
        })
        .await;
        sock.send_to(b"bench.hits:1|c|#route:a", udp).unwrap();
        sock.send_to(b"bench.latency:12.5|ms", udp).unwrap();
        rt.finish(&id).await;
        let calls = rt.wait_next_event(i + 2).await;
        samples.push(post_runtime_gap(&calls, &id));
    }
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    ext.wait_exit().await;
    println!(
        "{} ({} intake requests)",
        binary.display(),
        intake.requests().len()
    );
    summary("runtimeDone -> event/next (intake)", samples.clone());
    samples.sort();
    let p99 = samples[((samples.len() - 1) as f64 * 0.99).round() as usize];
    println!("  p99 {:.2} ms", p99.as_secs_f64() * 1e3);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut runs = 20;
    let mut post_runtime_mode = false;
    let mut probe: Option<PathBuf> = None;
    let mut intake_binary: Option<PathBuf> = None;
    let mut binaries = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--probe" => probe = Some(args.next().expect("--probe <binary>").into()),
            "--post-runtime" => post_runtime_mode = true,
            "--with-intake" => {
                intake_binary = Some(args.next().expect("--with-intake <binary>").into());
            }
            _ => binaries.push(PathBuf::from(a)),
        }
    }
    if post_runtime_mode {
        post_runtime(runs).await;
    }
    if let Some(binary) = &intake_binary {
        with_intake(binary, runs).await;
    }
    if binaries.is_empty() && probe.is_none() && !post_runtime_mode && intake_binary.is_none() {
        eprintln!(
            "usage: offpath-lambda-startbench [--runs N] <offpath-lambda>... | --probe <register_probe>"
        );
        std::process::exit(2);
    }
    for binary in &binaries {
        let mut register = Vec::new();
        let mut ready = Vec::new();
        for _ in 0..runs {
            let (r, f) = one_start(binary, &[], true).await;
            register.push(r);
            ready.extend(f);
        }
        println!("{}", binary.display());
        summary("exec -> register", register);
        summary("exec -> first event/next", ready);
    }
    if let Some(probe) = probe {
        for client in ["hyper", "reqwest"] {
            let mut register = Vec::new();
            for _ in 0..runs {
                register.push(one_start(&probe, &[client], false).await.0);
            }
            summary(&format!("probe {client}: exec -> register"), register);
        }
    }
}

/// Time from request `id`'s `platform.runtimeDone` to the extension's last `event/next` call.
fn post_runtime_gap(calls: &[Call], id: &str) -> Duration {
    let done = calls
        .iter()
        .rfind(|c| matches!(&c.kind, CallKind::RuntimeDone { request_id } if request_id == id))
        .unwrap()
        .at;
    let next = calls
        .iter()
        .rfind(|c| c.kind == CallKind::NextEvent)
        .unwrap()
        .at;
    next - done
}
