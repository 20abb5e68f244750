use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server() -> (ApiServer, mpsc::Receiver<ApiEvent>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (server, rx) = ApiServer::start(listener, Endpoints::Libraries).unwrap();
    let base = format!("http://{}", server.local_addr());
    (server, rx, base)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn hello_flush_and_the_invocation_calls_answer_an_empty_json_object() {
    let (_server, mut rx, base) = server().await;
    let c = client();
    for (method, path) in [
        (Method::GET, "/lambda/hello"),
        (Method::POST, "/lambda/hello"),
        (Method::GET, "/lambda/flush"),
        (Method::POST, "/lambda/flush"),
        (Method::POST, "/lambda/start-invocation"),
        (Method::POST, "/lambda/end-invocation"),
    ] {
        let resp = c
            .request(method.clone(), format!("{base}{path}"))
            .body(r#"{"some":"event"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method} {path}");
        assert_eq!(resp.text().await.unwrap(), "{}", "{method} {path}");
    }
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert_eq!(
        events,
        [
            ApiEvent::Flush,
            ApiEvent::Flush,
            ApiEvent::InvocationEnd { error: false }
        ]
    );
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let (_server, _rx, base) = server().await;
    let c = client();
    let status = |m: Method, p: &str| {
        let req = c.request(m, format!("{base}{p}"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(Method::GET, "/").await, 404);
    assert_eq!(status(Method::POST, "/lambda/other").await, 404);
    assert_eq!(status(Method::GET, "/v0.4/traces").await, 404);
    assert_eq!(status(Method::GET, "/lambda/start-invocation").await, 405);
    assert_eq!(status(Method::DELETE, "/lambda/flush").await, 405);
}

#[tokio::test]
async fn an_invocation_error_header_is_passed_on() {
    let (_server, mut rx, base) = server().await;
    let c = client();
    for (value, error) in [
        ("true", true),
        ("TRUE", true),
        ("false", false),
        ("1", false),
    ] {
        let resp = c
            .post(format!("{base}/lambda/end-invocation"))
            .header(INVOCATION_ERROR_HEADER, value)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            rx.recv().await,
            Some(ApiEvent::InvocationEnd { error }),
            "{value}"
        );
    }
}

#[tokio::test]
async fn a_body_over_6_mib_is_refused_with_413_declared_or_streamed() {
    let (_server, mut rx, base) = server().await;
    let c = client();
    let big = vec![b'x'; MAX_BODY_BYTES + 1];
    let resp = c
        .post(format!("{base}/lambda/end-invocation"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Chunked: no declared length, the limit applies while reading.
    let mut raw = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    raw.write_all(
        b"POST /lambda/start-invocation HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..7 {
        if raw
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || raw.write_all(&chunk).await.is_err()
            || raw.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let mut answer = vec![0u8; 12];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    let just_fits = vec![b'x'; MAX_BODY_BYTES];
    let resp = c
        .post(format!("{base}/lambda/end-invocation"))
        .body(just_fits)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(rx.try_recv(), Ok(ApiEvent::InvocationEnd { error: false }));
    assert!(rx.try_recv().is_err(), "the refused bodies made no event");
}

#[tokio::test]
async fn a_flush_is_answered_even_when_nobody_takes_the_events() {
    let (server, _rx, base) = server().await;
    let c = client();
    for _ in 0..EVENT_QUEUE + 10 {
        let resp = c.post(format!("{base}/lambda/flush")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(server.stats().events_dropped.load(Relaxed), 10);
}

#[tokio::test]
async fn a_stalled_client_holds_nobody_else_and_too_many_connections_are_closed_at_once() {
    let (server, _rx, base) = server().await;
    let addr = server.local_addr();
    // Half a request, then silence.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            b"POST /lambda/end-invocation HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let resp = client()
        .get(format!("{base}/lambda/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < READ_TIMEOUT,
        "served while the other stalls"
    );

    // Fill every slot with idle connections: the next one is closed without an answer.
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    extra
        .write_all(b"GET /lambda/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("closed at once, not left waiting")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(server.stats().connections_refused.load(Relaxed) >= 1);

    // The stalled body times out with 408 and its connection is released.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(READ_TIMEOUT * 3, stalled.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the stalled connection was not released");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(idle);
}

#[tokio::test]
async fn the_trace_port_answers_at_once_and_counts_what_it_drops() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (server, mut rx) = ApiServer::start(listener, Endpoints::Traces).unwrap();
    let base = format!("http://{}", server.local_addr());
    let c = client();
    for path in ["/v0.5/traces", "/v0.4/traces", "/v0.6/stats"] {
        let resp = c
            .put(format!("{base}{path}"))
            .body(vec![0x92u8, 0x91, 0x91])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.text().await.unwrap(), "{}");
    }
    assert_eq!(
        c.get(format!("{base}/info")).send().await.unwrap().status(),
        200
    );
    let big = c
        .put(format!("{base}/v0.4/traces"))
        .body(vec![0u8; MAX_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    assert_eq!(server.stats().traces_dropped.load(Relaxed), 3);
    assert!(rx.try_recv().is_err(), "traces make no event");
}
