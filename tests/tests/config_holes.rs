//! Configuration holes an unlucky operator falls into: a size too large to allocate, an intake over plain
//! HTTP, a status endpoint off loopback, an API key short enough to appear inside words. Each is a clear
//! message naming the key, never an abort, never silence and never a mangled report.

use std::process::Output;

use offpath_tests::support::{Offpath, run_once};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_queue_too_large_to_allocate_is_an_error_naming_the_key_not_an_abort() {
    for (env, bound) in [
        (&[("DD_DOGSTATSD_QUEUE_SIZE", "999999999999")][..], "262144"),
        (
            &[
                ("DD_DOGSTATSD_QUEUE_SIZE", "262144"),
                ("OFFPATH_AGGREGATE_WORKERS", "64"),
            ][..],
            "OFFPATH_AGGREGATE_WORKERS",
        ),
    ] {
        let mut env = env.to_vec();
        env.extend([("OFFPATH_STATUS_ADDR", ""), ("DD_DOGSTATSD_PORT", "0")]);
        let out = run_once(&["run"], &env);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(
            all.contains("DD_DOGSTATSD_QUEUE_SIZE") && all.contains(bound),
            "{all}"
        );
    }
}

#[test]
fn a_plain_http_intake_is_a_warning_at_start_and_in_check() {
    let env = [
        ("DD_API_KEY", "0ff9a7e2e5ec2e7k3y7b1d4c8a9f6e0d"),
        ("DD_DD_URL", "http://127.0.0.1:1"),
        ("DD_DOGSTATSD_PORT", "0"),
        ("OFFPATH_FALLBACK", "stdout"),
        ("OFFPATH_SELF_TELEMETRY", "false"),
    ];
    let all = warned_at_start_and_in_check(&env, "plain http://", "DD_DD_URL");
    assert!(!all.contains("0ff9a7e2e5ec2e7k3y7b1d4c8a9f6e0d"), "{all}");

    // The key is removed as a whole token: a one-letter key `K` leaves the words holding a K alone.
    let mut env = env.to_vec();
    env[0] = ("DD_API_KEY", "K");
    let all = text(&run_once(&["check"], &env));
    assert!(
        all.contains("OFFPATH_FALLBACK_LOG_GROUP") && !all.contains("<redacted>"),
        "{all}"
    );
}

#[test]
fn a_status_address_off_loopback_is_a_warning_at_start_and_in_check() {
    let env = [
        ("OFFPATH_STATUS_ADDR", "0.0.0.0:0"),
        ("DD_DOGSTATSD_PORT", "0"),
        ("OFFPATH_FALLBACK", "stdout"),
        ("OFFPATH_SELF_TELEMETRY", "false"),
    ];
    warned_at_start_and_in_check(&env, "not on loopback", "OFFPATH_STATUS_ADDR");

    // On loopback: no such warning.
    let out = run_once(
        &["check"],
        &[
            ("OFFPATH_STATUS_ADDR", "127.0.0.1:0"),
            ("DD_DOGSTATSD_PORT", "0"),
        ],
    );
    assert!(!text(&out).contains("not on loopback"), "{}", text(&out));
}

/// offpath started with `env` logs a warning containing `what` that names `key`, and so does `offpath
/// check`; returns check's output.
#[track_caller]
fn warned_at_start_and_in_check(env: &[(&str, &str)], what: &str, key: &str) -> String {
    let mut offpath = Offpath::start(&[], env);
    assert_eq!(offpath.stop(), Some(0), "{}", offpath.stderr());
    let check = text(&run_once(&["check"], env));
    for (when, out) in [("at start", offpath.stderr()), ("in check", check.clone())] {
        let warning = out
            .lines()
            .find(|l| l.contains("WARN") && l.contains(what))
            .unwrap_or_else(|| panic!("no warning with {what:?} {when}:\n{out}"));
        assert!(warning.contains(key), "{warning}");
    }
    check
}
