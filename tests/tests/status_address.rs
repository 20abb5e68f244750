//! Two offpaths on one machine: a status address that is taken stops the second one when it was set
//! explicitly, and only warns (saying how to pick another) on the default; `offpath health` names the
//! instance that answered (pid, version, listeners).

use std::process::{Command, Output, Stdio};

use offpath_tests::support::{self, Offpath, run_once};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_explicit_status_address_that_is_taken_stops_the_second_instance() {
    let mut first = Offpath::start(&[], &[("OFFPATH_SELF_TELEMETRY", "false")]);
    let status = first.status.expect("status address").to_string();
    let udp = first.udp.expect("udp address");

    let second = run_once(
        &[],
        &[
            ("DD_DOGSTATSD_PORT", "__random__"),
            ("OFFPATH_STATUS_ADDR", status.as_str()),
        ],
    );
    let shown = text(&second);
    assert_eq!(second.status.code(), Some(1), "{shown}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot bind the status endpoint to {status} (OFFPATH_STATUS_ADDR)"
        )),
        "{shown}"
    );
    assert!(stderr.contains("offpath health --addr"), "{shown}");
    assert_eq!(stderr.matches("os error").count(), 1, "{shown}");
    assert!(!stderr.contains("offpath ready"), "{shown}");

    // `offpath health` says which instance holds the address: the first one.
    let health = run_once(&["health", "--addr", status.as_str()], &[]);
    assert_eq!(health.status.code(), Some(0), "{}", text(&health));
    assert_eq!(
        String::from_utf8_lossy(&health.stdout).trim(),
        format!(
            "healthy: ok [pid {}, offpath {}, listeners udp {udp}]",
            first.pid(),
            env!("CARGO_PKG_VERSION")
        ),
        "{}",
        text(&health)
    );
    assert_eq!(first.stop(), Some(0), "{}", first.stderr());
}

/// The issue's case on the defaults (UDP 8125, status 127.0.0.1:8126), in a private network namespace so
/// the fixed ports are free: a second offpath on another UDP port keeps running without a status
/// endpoint and says how to give it one; `offpath health` answers for the first and says so.
#[test]
fn the_default_status_address_taken_is_a_warning_that_says_how_to_set_another() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
set -eu
ip link set lo up
ready() { for _ in $(seq 1200); do grep -q 'offpath ready' "$1" && return 0; sleep 0.05; done; cat "$1"; return 1; }
"$OFFPATH" 2>first.log & first=$!
ready first.log
DD_DOGSTATSD_PORT=8127 "$OFFPATH" 2>second.log & second=$!
ready second.log
"$OFFPATH" health >health.out 2>&1 || true
kill -TERM "$first" "$second"
wait "$first" "$second"
echo "$first" >first.pid
"#;
    let out = Command::new("unshare")
        .args(["--net", "--", "bash", "-c", script])
        .current_dir(dir.path())
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .env("OFFPATH", support::binary("offpath"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("OFFPATH_SELF_TELEMETRY", "false")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run unshare (util-linux; needs root): {e}"));
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    let shown = format!(
        "{}\n--- second.log\n{}\n--- health.out\n{}",
        text(&out),
        read("second.log"),
        read("health.out")
    );
    assert!(out.status.success(), "{shown}");

    let second = read("second.log");
    assert!(
        second.contains("cannot bind the status endpoint to 127.0.0.1:8126, the default"),
        "{shown}"
    );
    assert!(second.contains("OFFPATH_STATUS_ADDR"), "{shown}");
    assert!(second.contains("127.0.0.1:8127"), "{shown}");
    assert!(second.contains("udp=127.0.0.1:8127 status=off"), "{shown}");

    let first_pid = read("first.pid");
    assert_eq!(
        read("health.out").trim(),
        format!(
            "healthy: ok [pid {}, offpath {}, listeners udp 127.0.0.1:8125]",
            first_pid.trim(),
            env!("CARGO_PKG_VERSION")
        ),
        "{shown}"
    );
}
