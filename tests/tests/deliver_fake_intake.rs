//! The fake intake itself: it checks what the real intake checks, so that the other tests can trust it.

use std::time::Duration;

use offpath_tests::fake_intake::{Answer, FakeIntake, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "fake-intake-key";

/// One HTTP/1.1 request on a fresh connection; returns the status code, or `None` when the connection
/// closed without an answer.
async fn request(
    intake: &FakeIntake,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<u16> {
    let mut s = TcpStream::connect(intake.addr()).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: intake\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

fn good_headers(content_type: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("DD-API-KEY", KEY),
        ("Content-Type", content_type),
        ("Content-Encoding", "zstd"),
        ("User-Agent", "offpath/test"),
        ("DD-Agent-Version", "test"),
    ]
}

fn zstd(raw: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(raw, 1).unwrap()
}

/// Random letters and digits: valid UTF-8 that compresses to about 3/4 of its size.
fn noise(n: usize) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x1234_5678_9abc_def1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize]
        })
        .collect()
}

#[tokio::test]
async fn an_oversized_series_payload_is_answered_413_and_recorded_as_a_violation() {
    let intake = FakeIntake::start(KEY).await;
    // A MetricPayload with one series whose tag is 900 kB of noise: over 512,000 B compressed.
    let tag = noise(900_000);
    let mut series = vec![0x12, 0x01, b'm', 0x1a];
    prost::encoding::encode_varint(tag.len() as u64, &mut series);
    series.extend_from_slice(&tag);
    let mut raw = vec![0x0a];
    prost::encoding::encode_varint(series.len() as u64, &mut raw);
    raw.extend_from_slice(&series);
    let status = request(
        &intake,
        "POST",
        "/api/v2/series",
        &good_headers("application/x-protobuf"),
        &zstd(&raw),
    )
    .await;
    assert_eq!(status, Some(413));
    let v = intake.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("compressed > 512000"), "{v:?}");
    assert!(intake.all_series().is_empty());
}

#[tokio::test]
async fn a_wrong_key_is_403_and_a_wrong_encoding_is_400_with_a_violation() {
    let intake = FakeIntake::start(KEY).await;
    let mut headers = good_headers("application/json");
    headers[0] = ("DD-API-KEY", "nope");
    let body = zstd(br#"[{"check":"c","host_name":"h","status":0,"tags":[]}]"#);
    assert_eq!(
        request(&intake, "POST", "/api/v1/check_run", &headers, &body).await,
        Some(403)
    );
    assert!(intake.violations().is_empty());

    let mut headers = good_headers("application/json");
    headers[2] = ("Content-Encoding", "gzip");
    assert_eq!(
        request(&intake, "POST", "/api/v1/check_run", &headers, &body).await,
        Some(400)
    );
    assert_eq!(intake.violations().len(), 1);

    let headers = good_headers("application/json");
    assert_eq!(
        request(&intake, "POST", "/api/v1/check_run", &headers, &body).await,
        Some(202)
    );
    assert_eq!(intake.service_checks().len(), 1);
    let answers: Vec<Answer> = intake.requests().iter().map(|r| r.answer).collect();
    assert_eq!(
        answers,
        [
            Answer::Status(403),
            Answer::Status(400),
            Answer::Status(202)
        ]
    );
}

#[tokio::test]
async fn scripted_replies_are_answered_in_order_and_then_the_default() {
    let intake = FakeIntake::start(KEY).await;
    intake.push_replies([
        Reply::Status(500),
        Reply::Drop,
        Reply::Delay(Duration::from_millis(1), 429),
    ]);
    let headers = good_headers("application/json");
    let body = zstd(br#"{"title":"t","text":"x"}"#);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(request(&intake, "POST", "/api/v1/events", &headers, &body).await);
    }
    assert_eq!(statuses, [Some(500), None, Some(429), Some(202)]);
    assert_eq!(intake.events().len(), 1, "only the 202 is stored");
    assert!(intake.wait_requests(4, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_sketch_with_unsorted_keys_is_refused_as_the_intake_would() {
    use offpath_proto::SketchPayload;
    use offpath_proto::sketch_payload::{Sketch, sketch::Dogsketch};
    use prost::Message;
    let intake = FakeIntake::start(KEY).await;
    let bad = SketchPayload {
        sketches: vec![Sketch {
            metric: "d".into(),
            dogsketches: vec![Dogsketch {
                cnt: 2,
                k: vec![5, 3],
                n: vec![1, 1],
                ..Dogsketch::default()
            }],
            ..Sketch::default()
        }],
        metadata: None,
    };
    let status = request(
        &intake,
        "POST",
        "/api/beta/sketches",
        &good_headers("application/x-protobuf"),
        &zstd(&bad.encode_to_vec()),
    )
    .await;
    assert_eq!(status, Some(400));
    assert!(intake.violations()[0].contains("not ascending"));
}
