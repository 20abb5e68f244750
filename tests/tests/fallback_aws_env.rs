//! The fallback and replay find CloudWatch Logs through the standard AWS environment
//! (`AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`, `AWS_REGION`, key pair), as a deployment configures them.
//! One test in its own binary: it sets the process environment before anything reads it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use offpath::config::{FallbackConfig, FallbackFormat, FallbackSink, ForwardConfig};
use offpath::encode::Encoder;
use offpath::fallback::Fallback;
use offpath::fallback::replay::{ReplayOptions, ReplaySource, replay};
use offpath::model::{Flush, Series, SeriesKind};
use offpath::telemetry::Telemetry;
use offpath_tests::cloudwatch::Moto;
use offpath_tests::fake_intake::FakeIntake;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_endpoint_url_cloudwatch_logs_points_the_fallback_and_replay_at_the_emulator() {
    let moto = Moto::start();
    // SAFETY: this binary's only test sets the environment before any thread reads it.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", &moto.endpoint);
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/offpath-test-aws-config");
        std::env::set_var(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/offpath-test-aws-creds",
        );
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_ENDPOINT_URL");
    }
    let cfg = FallbackConfig {
        sink: FallbackSink::CloudWatch,
        log_group: Some("/offpath/env".to_owned()),
        log_stream: Some("s".to_owned()),
        format: FallbackFormat::Offpath,
        emf_dimensions: vec![],
        emf_namespace: "offpath".to_owned(),
    };
    let telemetry = Arc::new(Telemetry::default());
    let mut fb = Fallback::new(&cfg, Arc::clone(&telemetry)).await.unwrap();
    assert_eq!(fb.sink(), FallbackSink::CloudWatch);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let flush = Flush {
        series: vec![Series {
            name: "env.metric".into(),
            tags: vec!["a:b".into()],
            host: String::new(),
            kind: SeriesKind::Gauge,
            interval: 0,
            points: vec![(t - 10, 2.5)],
            samples: 1,
        }],
        ..Flush::default()
    };
    fb.write_flush(&flush).await;
    fb.flush(Instant::now() + Duration::from_secs(30)).await;
    assert_eq!(telemetry.points.fell_back.load(Relaxed), 1);
    assert_eq!(moto.events("/offpath/env", Some("s")).await.len(), 1);

    let intake = FakeIntake::start("k").await;
    let fwd_telemetry = Arc::new(Telemetry::default());
    let mut fwd = offpath_tests::support::forwarder(
        &ForwardConfig {
            retry_queue_max_bytes: 1 << 20,
            ..offpath_tests::support::forward_config(&intake.url(), "k")
        },
        Arc::clone(&fwd_telemetry),
        None,
    )
    .unwrap();
    let opts = ReplayOptions::new(
        ReplaySource::log_group("/offpath/env", Some("s"), Some("10m"), None, t * 1000).unwrap(),
        t,
    );
    let report = replay(&opts, &Encoder::new(1), &mut fwd, &fwd_telemetry)
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(intake.points("env.metric", &["a:b"]), [(t - 10, 2.5)]);
}
