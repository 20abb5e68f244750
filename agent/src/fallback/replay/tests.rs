use super::*;

const NOW_MS: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

#[test]
fn times_are_read_as_rfc3339_epoch_seconds_or_a_time_ago() {
    let cases: &[(&str, i64)] = &[
        ("2024-05-01T12:00:00Z", NOW_MS),
        ("2024-05-01T14:00:00+02:00", NOW_MS),
        ("2024-05-01T11:59:59.5Z", NOW_MS - 500),
        ("1714564800", NOW_MS),
        ("90m", NOW_MS - 90 * 60_000),
        ("2h", NOW_MS - 7_200_000),
        ("1h30m", NOW_MS - 90 * 60_000),
        ("45s", NOW_MS - 45_000),
        ("7d", NOW_MS - 7 * 86_400_000),
    ];
    for (arg, want) in cases {
        assert_eq!(parse_time("--since", arg, NOW_MS).unwrap(), *want, "{arg}");
    }
    for bad in [
        "",
        "yesterday",
        "2h ago",
        "5x",
        "m",
        "2024-05-01",
        "99999999999999999999",
    ] {
        let e = parse_time("--since", bad, NOW_MS).unwrap_err();
        assert!(e.to_string().contains("--since"), "{bad}: {e}");
    }
}

#[cfg(not(feature = "cloudwatch"))]
#[tokio::test]
async fn a_build_without_cloudwatch_refuses_a_log_group_and_says_why() {
    let config = crate::config::Config::load(&|k: &str| {
        (k == "DD_API_KEY").then(|| "0123456789abcdef".to_owned())
    })
    .unwrap();
    let telemetry = Telemetry::default();
    let key = crate::auth::ApiKeySource::Fixed(config.forward.api_key.clone().unwrap());
    let mut fwd = Forwarder::new(
        &config.forward,
        key,
        std::sync::Arc::new(Telemetry::default()),
        None,
    )
    .unwrap();
    let source = ReplaySource::log_group("/g", None, None, None, NOW_MS).unwrap();
    let opts = ReplayOptions::new(source, NOW_MS / 1000);
    let e = replay(&opts, &Encoder::new(1), &mut fwd, &telemetry)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ReplayError::NoCloudWatch(g) if g == "/g"),
        "{e}"
    );
    assert!(e.to_string().contains("--log-group"), "{e}");
    assert!(e.to_string().contains("`cloudwatch` feature"), "{e}");
}

#[test]
fn a_log_group_source_defaults_to_the_last_hour_and_checks_the_range() {
    let src = ReplaySource::log_group("g", None, None, None, NOW_MS).unwrap();
    assert_eq!(
        src,
        ReplaySource::LogGroup {
            group: "g".into(),
            stream: None,
            since_ms: NOW_MS - 3_600_000,
            until_ms: None
        }
    );
    assert!(matches!(
        ReplaySource::log_group("g", None, Some("1h"), Some("2h"), NOW_MS),
        Err(ReplayError::Range { .. })
    ));
    assert_eq!(ReplaySource::from_file_arg("-"), ReplaySource::Stdin);
}

#[test]
fn the_collector_keeps_records_and_counts_what_it_leaves_out() {
    let now = 1_000_000;
    let mut c = Collector::new(now, false);
    let lines = [
        "START RequestId: abc",
        r#"{"offpath":1,"kind":"series","metric":"m","type":"gauge","points":[[999990,1.0],[990000,2.0]],"tags":[]}"#,
        r#"{"offpath":1,"kind":"sketch","metric":"d","tags":[],"sketches":[{"ts":990000,"cnt":1,"min":1.0,"max":1.0,"sum":1.0,"avg":1.0,"k":[1338],"n":[1]}]}"#,
        r#"{"offpath":1,"kind":"event","title":"t","text":"","ts":990000,"priority":"normal","alert_type":"info","aggregation_key":"","source_type_name":"","tags":[]}"#,
        r#"{"offpath":1,"kind":"service_check","check":"c","status":0,"ts":990000,"message":"","tags":[]}"#,
        r#"{"offpath":9,"kind":"series"}"#,
    ];
    for l in lines {
        c.line(l);
    }
    let f = c.take();
    assert_eq!(f.series.len(), 1);
    assert_eq!(f.series[0].points, [(999_990, 1.0)]);
    assert_eq!(f.series[0].samples, 1);
    assert!(f.sketches.is_empty());
    assert_eq!(f.events.len(), 1);
    assert!(f.service_checks.is_empty());
    assert_eq!(
        c.report,
        ReplayReport {
            lines: 6,
            records: 4,
            skipped: 1,
            invalid: 1,
            too_old: 3,
            ..ReplayReport::default()
        }
    );
}

#[test]
fn dedupe_skips_identical_records_even_behind_different_prefixes() {
    let rec = r#"{"offpath":1,"kind":"series","metric":"m","type":"gauge","points":[[100,1.0]],"tags":[]}"#;
    for (dedupe, kept, dups) in [(false, 3, 0), (true, 1, 2)] {
        let mut c = Collector::new(100, dedupe);
        c.line(rec);
        c.line(rec);
        c.line(&format!("2024-05-01T12:00:00Z {rec}"));
        assert_eq!(c.take().series.len(), kept);
        assert_eq!(c.report.duplicates, dups);
    }
}
