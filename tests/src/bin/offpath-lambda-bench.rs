//! Lambda benchmarks against the fake Runtime API and the fake intake (run by `packaging/bench/lambda-seed.sh`
//! and `packaging/bench/lambda-cpu.sh`; they are benchmarks, never tests).
//!
//! ```text
//! offpath-lambda-bench seed --extension <offpath-lambda> [--invocations 100] [--delay-ms 150] [--configs a,b,..]
//! offpath-lambda-bench cpu  --extension <offpath-lambda> [--invocations 100] [--metrics 100]
//! ```
//!
//! `seed` reproduces the seed's Kinesis-batch function with the real runtime client (`python -m awslambdaric`)
//! and Datadog's library (`datadog-lambda`): each invocation gets a 200-record batch, processes it (a fixed
//! amount of CPU work, 70–120 ms on this machine, drawn per invocation) and, except in the baseline, calls
//! `lambda_metric` 200–1,000 times spread over the records. The same seeded sequence of batches runs in each
//! configuration, each in fresh private mount, network and PID namespaces (the library's fixed places; `/proc`
//! shows the sandbox's few processes, as in Lambda, so the enhanced metrics' `/proc` snapshots cost what they
//! cost there):
//! - `baseline`: the work alone, no library, no extension;
//! - `api`: the library without an extension: it flushes to the fake intake (`DATADOG_HOST`) synchronously
//!   at the end of each invocation;
//! - `offpath`: the library with offpath installed as `/opt/extensions/datadog-agent` (the compatible layer);
//! - `offpath-down`: the same with the intake down (connection refused);
//! - `library`: the library's own floor: `/opt/extensions/datadog-agent` exists, so the library sends each
//!   sample as a DogStatsD datagram, but no extension runs: a UDP socket bound on 127.0.0.1:8125 that nobody
//!   reads takes the datagrams (the kernel drops them once its buffer is full). What the `lambda_metric`
//!   calls cost the function whatever is listening.
//!
//! The fake intake answers every request after `--delay-ms`. Per configuration it prints the median and p99
//! of the function's duration (event delivered -> response posted) and of the time until the next
//! `event/next` (event delivered -> runtime and extension both asked for their next event: what Lambda bills
//! and what holds a shard's next batch back), also from invocation 20 on (when `adaptive` takes the flush off
//! the path), and the time the handler spent inside `lambda_metric`. A configuration may be named more than
//! once (`--configs baseline,library,offpath,baseline,library,offpath`): the comparisons pair the k-th runs
//! and report the median over those rounds, since the machine drifts more between runs than the
//! differences looked for.
//!
//! `cpu` runs the release extension in a private PID namespace (so `/proc` shows a sandbox's few processes,
//! as in Lambda) against a healthy local fake intake, sends `--metrics` DogStatsD lines per invocation, and
//! reads the extension's CPU time after each invocation: user + system from `/proc/<pid>/stat` (10 ms ticks:
//! a total), and the threads' run time from `/proc/<pid>/task/*/schedstat` (nanoseconds: per invocation).
//! Three configurations: enhanced metrics off, on without the `/proc` metrics, and on (the default).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use offpath_tests::fake_intake::{FakeIntake, LIBRARY_API_PATH, Reply};
use offpath_tests::lambda_runtime::{
    CallKind, Extension, FakeRuntime, TelemetryMode, extension_env, report,
};
use offpath_tests::lambda_sandbox::{self, EXTENSION_FILE, PythonRuntime};
use serde_json::{Value, json};

const KEY: &str = "0123456789abcdef0123456789abcdef";
/// Invocations run before the measured ones (imports, first connections).
const WARMUP: usize = 3;
/// Records per batch.
const RECORDS: usize = 200;
/// Marks the result line a run inside the namespaces prints.
const RESULT: &str = "BENCHRESULT ";
/// Set when the `cpu` run is inside its PID namespace.
const PIDNS: &str = "OFFPATH_BENCH_PIDNS";

/// Under the default `adaptive` strategy a sandbox flushes at the end of each of its first 20 invocations
/// (a function that may never be invoked again leaves nothing behind), then off the invocation's path.
const BUSY_AFTER: usize = 20;

const CONFIGS: [&str; 5] = ["baseline", "api", "offpath", "offpath-down", "library"];

const HANDLER: &str = r#"
import base64
import hashlib
import json
import os
import time

ITERS_PER_MS = float(os.environ["BENCH_ITERS_PER_MS"])
PLAIN = os.environ.get("BENCH_PLAIN") == "1"
if not PLAIN:
    from datadog_lambda.metric import lambda_metric
    from datadog_lambda.wrapper import datadog_lambda_wrapper

BLOCK = b"x" * 1024


def work(event, context):
    records = event["Records"]
    n_metrics = 0 if PLAIN else event["metrics"]
    iters = int(event["work_ms"] * ITERS_PER_MS / len(records))
    total, emitted, metric_s = 0, 0, 0.0
    for i, rec in enumerate(records):
        data = json.loads(base64.b64decode(rec["kinesis"]["data"]))
        total += data["amount"]
        h = hashlib.sha256(data["payload"].encode())
        for _ in range(iters):
            h.update(BLOCK)
        due = n_metrics * (i + 1) // len(records)
        if emitted < due:
            t = time.perf_counter()
            while emitted < due:
                lambda_metric(
                    "bench.kinesis.amount",
                    data["amount"],
                    tags=["stream:orders", "shard:" + str(emitted % 4)],
                )
                emitted += 1
            metric_s += time.perf_counter() - t
    return {"records": len(records), "total": total, "metrics": emitted, "metric_ms": metric_s * 1e3}


fn = work if PLAIN else datadog_lambda_wrapper(work)
"#;

const CALIBRATE: &str = r#"
import hashlib, time
block = b"x" * 1024
best = None
for _ in range(7):
    h = hashlib.sha256()
    t = time.perf_counter()
    for _ in range(20000):
        h.update(block)
    d = time.perf_counter() - t
    best = d if best is None else min(best, d)
print(20000 / (best * 1e3))
"#;

/// A small deterministic generator (xorshift64*), so every configuration gets the same batches.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `i`-th Kinesis batch: 200 records, the work to do (ms) and the metrics to emit.
fn batch(rng: &mut Rng, i: usize) -> Value {
    let records: Vec<Value> = (0..RECORDS)
        .map(|r| {
            let data = json!({
                "id": format!("{i}-{r}"),
                "amount": rng.range(1, 10_000),
                "payload": format!("order-{i}-{r}-{}", rng.next()),
            });
            json!({
                "eventSource": "aws:kinesis",
                "eventID": format!("shardId-000000000000:{i:08}{r:04}"),
                "kinesis": {
                    "partitionKey": format!("pk-{r}"),
                    "sequenceNumber": format!("{i:08}{r:04}"),
                    "data": base64(data.to_string().as_bytes()),
                },
            })
        })
        .collect();
    json!({
        "Records": records,
        "work_ms": rng.range(70, 120),
        "metrics": rng.range(200, 1000),
    })
}

fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * q).round() as usize]
}

struct Args {
    extension: Option<PathBuf>,
    invocations: usize,
    delay_ms: u64,
    metrics: usize,
    seed: u64,
    iters_per_ms: Option<f64>,
    configs: Vec<String>,
    rest: Vec<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        extension: None,
        invocations: 100,
        delay_ms: 150,
        metrics: 100,
        seed: 1,
        iters_per_ms: None,
        configs: CONFIGS.map(str::to_owned).to_vec(),
        rest: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().unwrap_or_else(|| panic!("{arg} needs {what}"));
        match arg.as_str() {
            "--extension" => a.extension = Some(value("a path").into()),
            "--invocations" => a.invocations = value("N").parse().expect("--invocations N"),
            "--delay-ms" => a.delay_ms = value("MS").parse().expect("--delay-ms MS"),
            "--metrics" => a.metrics = value("N").parse().expect("--metrics N"),
            "--seed" => a.seed = value("N").parse().expect("--seed N"),
            "--iters-per-ms" => {
                a.iters_per_ms = Some(value("X").parse().expect("--iters-per-ms X"))
            }
            "--configs" => {
                a.configs = value("a,b").split(',').map(str::to_owned).collect();
                for c in &a.configs {
                    assert!(
                        CONFIGS.contains(&c.as_str()),
                        "unknown configuration {c}: {CONFIGS:?}"
                    );
                }
            }
            _ => a.rest.push(arg),
        }
    }
    a
}

fn usage() -> ! {
    eprintln!(
        "usage: offpath-lambda-bench seed --extension <offpath-lambda> [--invocations N] [--delay-ms MS] \
         [--configs baseline,api,offpath,offpath-down,library] [--seed N]\n       \
         offpath-lambda-bench cpu --extension <offpath-lambda> [--invocations N] [--metrics N]"
    );
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_else(|| usage());
    let args = parse(argv);
    match command.as_str() {
        "seed" => seed(&args),
        "seed-one" => seed_one(&args).await,
        "cpu" => cpu(&args).await,
        _ => usage(),
    }
}

/// The outer `seed` run: calibrate the work, run each configuration in its namespaces, print the table.
fn seed(args: &Args) {
    let extension = args.extension.clone().unwrap_or_else(|| usage());
    let python = lambda_sandbox::python();
    let out = std::process::Command::new(&python)
        .args(["-c", CALIBRATE])
        .output()
        .unwrap();
    let iters_per_ms: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("calibration: {out:?}"));
    println!(
        "seed bench: {} invocations per configuration (+{WARMUP} warm-up), {RECORDS} records, 70-120 ms of work \
         ({iters_per_ms:.1} SHA-256 KiB blocks per ms), 200-1000 lambda_metric calls, intake answers after \
         {} ms, python {}",
        args.invocations,
        args.delay_ms,
        python.display()
    );
    let exe = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    for config in &args.configs {
        let inner = [
            "seed-one".to_owned(),
            "--configs".to_owned(),
            config.clone(),
            "--extension".to_owned(),
            extension.display().to_string(),
            "--invocations".to_owned(),
            args.invocations.to_string(),
            "--delay-ms".to_owned(),
            args.delay_ms.to_string(),
            "--seed".to_owned(),
            args.seed.to_string(),
            "--iters-per-ms".to_owned(),
            iters_per_ms.to_string(),
        ];
        let inner: Vec<&str> = inner.iter().map(String::as_str).collect();
        let (status, output) = lambda_sandbox::in_namespaces_with_pids(&exe, &inner);
        let Some(line) = output.lines().find_map(|l| l.strip_prefix(RESULT)) else {
            panic!("{config}: no result ({status:?}):\n{output}");
        };
        let r: Value = serde_json::from_str(line).unwrap();
        let list = |k: &str| -> Vec<f64> {
            r[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        };
        let (function, next, metric) = (list("function_ms"), list("next_ms"), list("metric_ms"));
        let note = r["note"].as_str().unwrap_or("").to_owned();
        let steady = list("next_steady_ms");
        rows.push(Row {
            config: config.clone(),
            function,
            next,
            metric,
            steady,
            note,
        });
    }
    println!();
    println!(
        "| configuration | function median | function p99 | until next event/next median | p99 | \
         from invocation {BUSY_AFTER}: until next median | p99 | in lambda_metric median | |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in &rows {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            r.config,
            quantile(&r.function, 0.5),
            quantile(&r.function, 0.99),
            quantile(&r.next, 0.5),
            quantile(&r.next, 0.99),
            quantile(&r.steady, 0.5),
            quantile(&r.steady, 0.99),
            quantile(&r.metric, 0.5),
            r.note,
        );
    }
    // Each comparison pairs the k-th run of one configuration with the k-th run of the other (the same
    // seeded batches, run back to back), and gives the median over those rounds: the machine's drift
    // between rounds is larger than the differences looked for.
    for (a, b, what) in [
        (
            "offpath",
            "baseline",
            "the work alone (target: within 2 ms)",
        ),
        (
            "offpath",
            "library",
            "the library's floor (the same lambda_metric calls, nobody reading)",
        ),
    ] {
        let (ra, rb): (Vec<&Row>, Vec<&Row>) = (
            rows.iter().filter(|r| r.config == a).collect(),
            rows.iter().filter(|r| r.config == b).collect(),
        );
        if ra.is_empty() || rb.is_empty() {
            continue;
        }
        let diff = |pick: fn(&Row) -> &[f64], q: f64| -> Vec<f64> {
            ra.iter()
                .zip(&rb)
                .map(|(x, y)| quantile(pick(x), q) - quantile(pick(y), q))
                .collect()
        };
        let rounds = ra.len().min(rb.len());
        let show = |v: &[f64]| {
            let each: Vec<String> = v.iter().map(|d| format!("{d:+.1}")).collect();
            format!("{:+.1} ms (rounds: {})", quantile(v, 0.5), each.join(", "))
        };
        println!(
            "\n{a} - {b}, {what}, {rounds} round(s), median over rounds:\n  \
             function median {}\n  until next median {}, p99 {}\n  \
             from invocation {BUSY_AFTER}: until next median {}, p99 {}",
            show(&diff(|r| &r.function, 0.5)),
            show(&diff(|r| &r.next, 0.5)),
            show(&diff(|r| &r.next, 0.99)),
            show(&diff(|r| &r.steady, 0.5)),
            show(&diff(|r| &r.steady, 0.99)),
        );
    }
}

/// One configuration's samples, in milliseconds.
struct Row {
    config: String,
    function: Vec<f64>,
    next: Vec<f64>,
    metric: Vec<f64>,
    /// Until next event/next, from invocation [`BUSY_AFTER`] on (the same invocations in every configuration).
    steady: Vec<f64>,
    note: String,
}

/// One configuration, inside fresh namespaces: prints one result line.
async fn seed_one(args: &Args) {
    let config = args.configs[0].as_str();
    let extension = config.starts_with("offpath");
    let binary = args.extension.clone().unwrap();
    // `library`: the file the library looks for, and a DogStatsD port nobody reads.
    let floor = config == "library";
    lambda_sandbox::enter((extension || floor).then_some(binary.as_path()));
    let _unread = floor.then(|| std::net::UdpSocket::bind("127.0.0.1:8125").unwrap());
    let intake = FakeIntake::start(KEY).await;
    intake.set_default_reply(Reply::Delay(Duration::from_millis(args.delay_ms), 202));
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let url = intake.url();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut ext = None;
    if extension {
        let dd_url = if config == "offpath-down" {
            &dead
        } else {
            &url
        };
        let mut env = extension_env(
            &rt,
            &[
                ("DD_API_KEY", KEY),
                ("DD_DD_URL", dd_url.as_str()),
                ("DD_LOG_LEVEL", "warn"),
            ],
        );
        // The libraries' fixed ports (this network namespace is private).
        env.remove("DD_DOGSTATSD_PORT");
        env.remove("OFFPATH_LAMBDA_API_PORT");
        env.remove("OFFPATH_LAMBDA_TRACE_PORT");
        ext = Some(Extension::start_binary(Path::new(EXTENSION_FILE), env));
        rt.wait_next_event(1).await;
    }
    let iters = args.iters_per_ms.unwrap().to_string();
    let plain = if config == "baseline" { "1" } else { "0" };
    let mut runtime = PythonRuntime::start(
        &rt,
        HANDLER,
        &[
            ("DD_API_KEY", KEY),
            ("DATADOG_HOST", url.as_str()),
            ("DD_TRACE_ENABLED", "false"),
            ("BENCH_PLAIN", plain),
            ("BENCH_ITERS_PER_MS", iters.as_str()),
        ],
    );
    if extension {
        lambda_sandbox::init_report(&rt, Duration::from_millis(300)).await;
    }
    let mut rng = Rng(args.seed.max(1));
    let (mut function, mut next, mut metric) = (Vec::new(), Vec::new(), Vec::new());
    let mut steady = Vec::new();
    let mut samples = 0u64;
    for i in 0..WARMUP + args.invocations {
        let event = batch(&mut rng, i);
        let inv = lambda_sandbox::invoke(&rt, &format!("r{i}"), event, extension).await;
        assert!(!inv.failed, "{:?}\n{}", inv.response, runtime.output());
        samples += inv.response["metrics"].as_u64().unwrap_or(0);
        if i >= BUSY_AFTER {
            steady.push(inv.next.as_secs_f64() * 1e3);
        }
        if i >= WARMUP {
            function.push(inv.function.as_secs_f64() * 1e3);
            next.push(inv.next.as_secs_f64() * 1e3);
            metric.push(inv.response["metric_ms"].as_f64().unwrap_or(0.0));
        }
    }
    let note = match ext.as_mut() {
        Some(ext) => {
            rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
            let status = ext.wait_exit().await;
            assert!(status.success(), "{status:?}\n{}", ext.stderr());
            if config == "offpath-down" {
                format!(
                    "{samples} samples; the intake refused every connection; {} fallback records at shutdown",
                    ext.stdout().lines().count()
                )
            } else {
                let delivered = intake
                    .sketch_totals("bench.kinesis.amount", &[])
                    .map_or(0, |s| s.cnt);
                format!("{delivered} of {samples} samples delivered")
            }
        }
        None if config == "api" => format!(
            "{samples} samples; {} synchronous API requests",
            intake.requests_to(LIBRARY_API_PATH).len()
        ),
        None => String::new(),
    };
    assert!(runtime.is_running(), "{}", runtime.output());
    let result = json!({
        "config": config,
        "function_ms": function,
        "next_ms": next,
        "metric_ms": metric,
        "next_steady_ms": steady,
        "note": note,
    });
    println!("{RESULT}{result}");
}

/// The extension's CPU time so far: (`/proc/<pid>/stat` user + system ticks, sum of its live threads'
/// `schedstat` run time in ns).
fn cpu_of(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_ascii_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat_ticks = ticks(14) + ticks(15);
    let mut run_ns = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.filter_map(Result::ok) {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            run_ns += s
                .split_ascii_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (stat_ticks, run_ns)
}

/// The `cpu` bench: re-run in a private PID namespace, then one extension per configuration.
async fn cpu(args: &Args) {
    if std::env::var_os(PIDNS).is_none() {
        let exe = std::env::current_exe().unwrap();
        let status = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--"])
            .arg(exe)
            .arg("cpu")
            .args(std::env::args().skip(2))
            .env(PIDNS, "1")
            .status()
            .unwrap_or_else(|e| panic!("cannot run unshare (util-linux; needs root): {e}"));
        std::process::exit(status.code().unwrap_or(1));
    }
    let binary = args.extension.clone().unwrap_or_else(|| usage());
    // SAFETY: sysconf reads a constant of the system.
    let tick_ms = 1000.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "cpu bench: {} invocations (+{WARMUP} warm-up), {} DogStatsD lines each, healthy local intake, \
         {} processes in /proc",
        args.invocations,
        args.metrics,
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit()))
            .count()
            + 1
    );
    println!(
        "\n| configuration | CPU per invocation median (schedstat) | p90 | mean | mean from /proc/<pid>/stat (10 ms ticks) | delivered |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    let configs: [(&str, &[(&str, &str)]); 3] = [
        ("enhanced metrics off", &[("DD_ENHANCED_METRICS", "false")]),
        (
            "enhanced on, /proc metrics off",
            &[("DD_LAMBDA_PROC_ENHANCED_METRICS", "false")],
        ),
        ("enhanced on (default)", &[]),
    ];
    let lines: Vec<String> = (0..args.metrics)
        .map(|k| {
            format!(
                "bench.cpu.amount:{}|d|#stream:orders,shard:{},dd_lambda_layer:datadog-python312_8.130.0",
                k * 7 % 1000,
                k % 4
            )
        })
        .collect();
    for (name, extra) in configs {
        let intake = FakeIntake::start(KEY).await;
        let rt = FakeRuntime::start(TelemetryMode::Accept).await;
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let url = intake.url();
        let mut vars = vec![
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", url.as_str()),
            ("DD_LOG_LEVEL", "warn"),
            ("DD_DOGSTATSD_PORT", port.as_str()),
        ];
        vars.extend_from_slice(extra);
        let mut ext = Extension::start_binary(&binary, extension_env(&rt, &vars));
        rt.wait_next_event(1).await;
        let pid = ext.pid().unwrap();
        let udp: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (mut per_invocation, mut start_ticks, mut last) = (Vec::new(), 0, cpu_of(pid));
        for i in 0..WARMUP + args.invocations {
            let id = format!("r{i}");
            rt.invoke(&id, Duration::from_secs(30)).await;
            rt.wait_for("INVOKE delivered", |c| {
                c.iter()
                    .any(|c| c.kind == CallKind::EventDelivered(format!("INVOKE {id}")))
            })
            .await;
            for line in &lines {
                sock.send_to(line.as_bytes(), udp).unwrap();
            }
            rt.finish(&id).await;
            rt.wait_next_event(i + 2).await;
            report(&rt, &id, 20.0, 21, 512, 100).await;
            let now = cpu_of(pid);
            if i == WARMUP - 1 {
                start_ticks = now.0;
            }
            if i >= WARMUP {
                per_invocation.push(now.1.saturating_sub(last.1) as f64 / 1e6);
            }
            last = now;
        }
        let ticks = last.0 - start_ticks;
        rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
        let status = ext.wait_exit().await;
        assert!(status.success(), "{status:?}\n{}", ext.stderr());
        let delivered = intake
            .sketch_totals("bench.cpu.amount", &[])
            .map_or(0, |s| s.cnt);
        let mean = per_invocation.iter().sum::<f64>() / per_invocation.len() as f64;
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {mean:.3} ms | {:.3} ms | {delivered} of {} lines |",
            quantile(&per_invocation, 0.5),
            quantile(&per_invocation, 0.9),
            ticks as f64 * tick_ms / args.invocations as f64,
            (WARMUP + args.invocations) * args.metrics,
        );
    }
}
