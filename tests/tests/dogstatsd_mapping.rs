//! Datadog's Python DogStatsD client (the `datadog` package from PyPI) sending to the sidecar configured
//! as a `datadog.yaml` would configure the Agent: a mapper profile in the file (wildcard and regex
//! matches), a namespace, and a prefix blocklist in the environment (space-separated). What the intake
//! gets is mapped, namespaced and filtered in the Agent's order; filtered points are counted in
//! `/status` and the shutdown ledger, never silently gone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use offpath_tests::fake_intake::FakeIntake;
use offpath_tests::lambda_sandbox::PYTHON_ENV;
use offpath_tests::support::{Offpath, status};

const KEY: &str = "0123456789abcdef0123456789abcdef";

const CONFIG: &str = r#"
statsd_metric_namespace: app
dogstatsd_mapper_profiles:
  - name: jobs
    prefix: 'jobs.'
    mappings:
      - match: 'jobs.*.duration'
        name: 'jobs.duration'
        tags:
          job: '$1'
      - match: 'jobs\.(?P<job>[a-z]+)\.debug\.(.*)'
        match_type: regex
        name: 'noisy.$2'
        tags:
          job: '${job}'
"#;

/// Sends with the real client, then flushes and closes it.
const CLIENT: &str = r#"
import sys
from datadog.dogstatsd import DogStatsd

s = DogStatsd(host="127.0.0.1", port=int(sys.argv[1]), disable_telemetry=True)
s.gauge("jobs.etl.duration", 42, tags=["team:data"])   # mapped -> app.jobs.duration, job:etl
s.increment("jobs.etl.debug.cache_misses", 3)          # mapped -> app.noisy.cache_misses: blocked
s.increment("noisy.direct", 2)                         # app.noisy.direct: blocked
s.increment("jobs.etl.size")                           # under the profile, not mapped -> app.jobs.etl.size
s.increment("other.requests", 5)                       # app.other.requests
getattr(s, "flush", lambda: None)()
s.close_socket()
"#;

fn python() -> String {
    std::env::var(PYTHON_ENV).unwrap_or_else(|_| {
        panic!(
            "{PYTHON_ENV} is unset: run `bash tests/run.sh` (its virtual environment has the \
             `datadog` client), or point {PYTHON_ENV} at a python that has it"
        )
    })
}

#[test]
fn the_python_client_goes_through_mapping_namespace_and_blocklist() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let intake = rt.block_on(FakeIntake::start(KEY));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("offpath.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut offpath = Offpath::start(
        &["run", "--config", config.to_str().unwrap()],
        &[
            ("DD_API_KEY", KEY),
            ("DD_DD_URL", &intake.url()),
            ("OFFPATH_SELF_TELEMETRY", "false"),
            ("DD_STATSD_METRIC_BLOCKLIST", "app.noisy. app.unused"),
            ("DD_STATSD_METRIC_BLOCKLIST_MATCH_PREFIX", "true"),
        ],
    );
    let port = offpath.udp.expect("udp address").port();
    let out = std::process::Command::new(python())
        .args(["-c", CLIENT, &port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Readiness: all five lines parsed (the client's points: 1 + 3 + 2 + 1 + 5 values → 5 points).
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = status(&offpath);
        if s["points"]["received"].as_u64() == Some(5) {
            break s;
        }
        assert!(Instant::now() < deadline, "never received 5 points: {s}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(s["points"]["dropped"]["filtered"], 2, "{s}");

    offpath.signal(libc::SIGTERM);
    assert_eq!(offpath.wait(), Some(0), "{}", offpath.stderr());
    let stderr = offpath.stderr();
    let ledger = stderr
        .lines()
        .rev()
        .find(|l| l.contains("points received="))
        .unwrap_or_else(|| panic!("no shutdown summary:\n{stderr}"));
    assert!(ledger.contains("received=5"), "{ledger}");
    assert!(ledger.contains("delivered=3"), "{ledger}");
    assert!(ledger.contains("dropped=2"), "{ledger}");

    let names = intake.series_names();
    let want: std::collections::BTreeSet<String> = [
        "app.jobs.duration",
        "app.jobs.etl.size",
        "app.other.requests",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, want, "what the intake got");
    let mapped = intake.series_tagged("app.jobs.duration", &["job:etl", "team:data"]);
    assert_eq!(mapped.len(), 1, "{:?}", intake.series("app.jobs.duration"));
    assert_eq!(mapped[0].points.last().map(|p| p.1), Some(42.0));
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
}
