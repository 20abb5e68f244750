//! Tests of the fallback's set-up and of dual shipping's records.

use super::*;
use crate::config::FallbackFormat;
use std::sync::atomic::Ordering::Relaxed;

fn cfg(sink: FallbackSink, group: Option<&str>) -> FallbackConfig {
    FallbackConfig {
        sink,
        log_group: group.map(str::to_owned),
        log_stream: None,
        format: FallbackFormat::Offpath,
        emf_dimensions: vec![],
        emf_namespace: "offpath".to_owned(),
    }
}

#[cfg(feature = "cloudwatch")]
#[tokio::test]
async fn bad_cloudwatch_settings_are_refused_with_the_key_to_fix() {
    let t = Arc::new(Telemetry::default());
    let aws = aws_config::SdkConfig::builder()
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let mut c = cfg(FallbackSink::CloudWatch, Some("bad name"));
    let e = Fallback::with_aws(&c, Arc::clone(&t), &aws).unwrap_err();
    assert!(e.to_string().contains("OFFPATH_FALLBACK_LOG_GROUP"));
    c.log_group = Some("good".into());
    c.log_stream = Some("a:b".into());
    let e = Fallback::with_aws(&c, Arc::clone(&t), &aws).unwrap_err();
    assert!(e.to_string().contains("OFFPATH_FALLBACK_LOG_STREAM"));
    c.log_stream = None;
    let no_region = aws_config::SdkConfig::builder().build();
    let e = Fallback::with_aws(&c, Arc::clone(&t), &no_region).unwrap_err();
    assert_eq!(e, FallbackError::NoRegion);
    c.log_group = None;
    let e = Fallback::with_aws(&c, t, &aws).unwrap_err();
    assert_eq!(e, FallbackError::NoLogGroup);
}

#[cfg(not(feature = "cloudwatch"))]
#[tokio::test]
async fn a_build_without_cloudwatch_refuses_a_cloudwatch_sink_and_names_the_keys() {
    let t = Arc::new(Telemetry::default());
    let e = Fallback::new(&cfg(FallbackSink::CloudWatch, Some("g")), Arc::clone(&t))
        .await
        .unwrap_err();
    assert_eq!(e, FallbackError::NoCloudWatch);
    let msg = e.to_string();
    assert!(msg.contains("OFFPATH_FALLBACK=cloudwatch"), "{msg}");
    assert!(msg.contains("OFFPATH_FALLBACK_LOG_GROUP"), "{msg}");
    assert!(msg.contains("`cloudwatch` feature"), "{msg}");
    let fb = Fallback::new(&cfg(FallbackSink::Stdout, Some("g")), t)
        .await
        .unwrap();
    assert_eq!(fb.sink(), FallbackSink::Stdout);
}

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn payload(dest: DestinationId) -> Payload {
    let mut flush = Flush::default();
    flush.service_checks.push(crate::model::ServiceCheck {
        check: "c".into(),
        status: 0,
        ts: 1_700_000_000,
        host: String::new(),
        message: String::new(),
        tags: vec![],
    });
    let mut p = crate::encode::Encoder::new(1)
        .encode(&flush)
        .unwrap()
        .remove(0);
    p.destination = dest;
    p
}

#[tokio::test]
async fn an_additional_destinations_records_name_it_and_replay_reads_them() {
    use crate::forward::DestinationId;
    let t = Arc::new(Telemetry::default());
    let out = Shared::default();
    let mut fb = Fallback::with_writer(
        &cfg(FallbackSink::Stdout, None),
        Arc::clone(&t),
        out.clone(),
    )
    .unwrap();
    fb.set_destinations(&[
        "https://a.example#aaaa1".into(),
        "https://b.example#bbbb2".into(),
    ]);
    let other = DestinationId::new(1).unwrap();
    fb.write_payloads(vec![payload(DestinationId::MAIN), payload(other)])
        .await;
    fb.flush(Instant::now() + Duration::from_secs(10)).await;
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(!lines[0].contains("\"dest\""), "{}", lines[0]);
    assert!(
        lines[1].starts_with("{\"offpath\":1,\"dest\":\"https://b.example#bbbb2\","),
        "{}",
        lines[1]
    );
    for l in &lines {
        assert!(records::parse_record(l).is_ok(), "{l}");
    }
    // Both copies fell back; the main one is also the process ledger.
    assert_eq!(t.points.fell_back.load(Relaxed), 1);
}

#[tokio::test]
async fn formats_that_cannot_name_a_destination_write_only_the_main_copy() {
    use crate::forward::{Destination, DestinationId};
    let t = Arc::new(Telemetry::default());
    let other = DestinationId::new(1).unwrap();
    t.register_destination(Destination::new(other, "https://b.example", Some("bbbb2")));
    let mut c = cfg(FallbackSink::Stdout, None);
    c.format = FallbackFormat::Forwarder;
    let out = Shared::default();
    let mut fb = Fallback::with_writer(&c, Arc::clone(&t), out.clone()).unwrap();
    fb.set_destinations(&[
        "https://a.example#aaaa1".into(),
        "https://b.example#bbbb2".into(),
    ]);
    fb.write_payloads(vec![payload(other)]).await;
    fb.flush(Instant::now() + Duration::from_secs(10)).await;
    assert!(out.0.lock().unwrap().is_empty());
    let row = &t.destinations()[0];
    assert_eq!(
        row.dropped[PointDrop::FallbackOff as usize].load(Relaxed),
        1
    );
    assert_eq!(t.points.dropped_total(), 0);
}
