//! A fake Datadog intake on `127.0.0.1:0`.
//!
//! It decodes what it receives the way the real intake does (zstd, then protobuf `MetricPayload` /
//! `SketchPayload` or JSON events and service checks), checks the headers and the size limits
//! (answering 413 and recording a violation when a payload is over a limit), answers scripted replies,
//! and answers typed queries about what it accepted.
//!
//! ```no_run
//! # async fn demo() {
//! use offpath_tests::fake_intake::{FakeIntake, Reply};
//! let intake = FakeIntake::start("test-key").await;
//! intake.push_replies([Reply::Status(500), Reply::Status(202)]);
//! // ... point DD_DD_URL at intake.url() and send ...
//! intake.wait_until(std::time::Duration::from_secs(10), |i| !i.series("my.metric").is_empty()).await;
//! # }
//! ```
//!
//! Only requests answered 2xx are stored as received data; every request is in [`FakeIntake::requests`].

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use offpath_proto::metric_payload::MetricType;
use offpath_proto::sketch_payload::sketch::Dogsketch;
use offpath_proto::{MetricPayload, SketchPayload};
use prost::Message;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `/api/v2/series` limits (`docs/protocols.md`, "Requests").
pub const SERIES_MAX_COMPRESSED: usize = 512_000;
/// `/api/v2/series` uncompressed limit.
pub const SERIES_MAX_RAW: usize = 5_242_880;
/// `/api/v2/series` points per payload.
pub const SERIES_MAX_POINTS: usize = 10_000;
/// Sketches and JSON bodies: the agent's generic compressed limit.
pub const GENERIC_MAX_COMPRESSED: usize = 2_621_440;
/// Sketches and JSON bodies: the agent's generic uncompressed limit.
pub const GENERIC_MAX_RAW: usize = 4_194_304;
/// Largest body the fake reads at all.
const READ_MAX: usize = 64 * 1024 * 1024;

/// A scripted answer to the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answer with this status (2xx: decode, validate and store the payload; otherwise store nothing).
    Status(u16),
    /// Wait, then answer with this status.
    Delay(Duration, u16),
    /// Never answer (the client has to time out).
    Hang,
    /// Close the connection without an answer.
    Drop,
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// With this status.
    Status(u16),
    /// The connection was closed without an answer.
    Dropped,
    /// No answer was sent (the request hung).
    Hung,
}

/// One request as the intake saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// `GET` or `POST`.
    pub method: String,
    /// The path.
    pub path: String,
    /// How it was answered.
    pub answer: Answer,
    /// The `DD-API-KEY` header matched the key the intake was started with.
    pub api_key_ok: bool,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `DD-Agent-Version`.
    pub agent_version: Option<String>,
    /// Body length as received.
    pub compressed_len: usize,
    /// Body length after decompression (0 when it did not decompress).
    pub raw_len: usize,
    /// Series, sketch series, events or service checks in the body.
    pub items: usize,
    /// Series points in the body.
    pub points: usize,
    /// When the request's head arrived (for latency measurements in tests, never for assertions).
    pub arrived: std::time::Instant,
}

/// A series the intake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSeries {
    /// Metric name.
    pub metric: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The `host` resource's name; empty when there was none.
    pub host: String,
    /// Intake type.
    pub metric_type: MetricType,
    /// Interval, seconds.
    pub interval: i64,
    /// `(timestamp, value)` points.
    pub points: Vec<(i64, f64)>,
}

/// A sketch series the intake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSketch {
    /// Metric name.
    pub metric: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Host.
    pub host: String,
    /// The sketches, one per bucket.
    pub dogsketches: Vec<Dogsketch>,
}

/// Summary of every sketch received for one metric (and tags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SketchTotals {
    /// Σ cnt.
    pub cnt: i64,
    /// min of min.
    pub min: f64,
    /// max of max.
    pub max: f64,
    /// Σ sum.
    pub sum: f64,
    /// Number of dogsketches (buckets).
    pub buckets: usize,
    /// Σ of the bin counts `n` (equals `cnt` for unweighted inserts).
    pub bin_count: u64,
}

/// An event the intake accepted (`POST /intake/`, the Agent's batched form, or `POST /api/v1/events`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReceivedEvent {
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// Unix seconds.
    #[serde(default)]
    pub date_happened: Option<i64>,
    /// `normal` or `low`.
    #[serde(default)]
    pub priority: Option<String>,
    /// Host.
    #[serde(default)]
    pub host: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `info`, `warning`, `error`, `success`.
    #[serde(default)]
    pub alert_type: Option<String>,
    /// Aggregation key.
    #[serde(default)]
    pub aggregation_key: Option<String>,
    /// Source type name.
    #[serde(default)]
    pub source_type_name: Option<String>,
}

/// A service check the intake accepted (`POST /api/v1/check_run`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReceivedServiceCheck {
    /// Check name.
    pub check: String,
    /// Host name.
    pub host_name: String,
    /// 0–3.
    pub status: u8,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// Message.
    #[serde(default)]
    pub message: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
}

#[derive(Debug)]
struct Inner {
    api_key: String,
    script: VecDeque<Reply>,
    default: Reply,
    requests: Vec<RequestRecord>,
    /// Requests whose body was read, answered or not yet.
    arrivals: usize,
    series: Vec<ReceivedSeries>,
    sketches: Vec<ReceivedSketch>,
    events: Vec<ReceivedEvent>,
    service_checks: Vec<ReceivedServiceCheck>,
    violations: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Bumped after every request is recorded; waiters watch it.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread may poison the lock; the data is still what was recorded.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The fake intake; stops serving when dropped.
#[derive(Debug)]
pub struct FakeIntake {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakeIntake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The connection is closed without an answer ([`Reply::Drop`]).
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted connection drop")
    }
}

impl std::error::Error for DropConnection {}

/// What a decoded body contained.
struct Decoded {
    series: Vec<ReceivedSeries>,
    sketches: Vec<ReceivedSketch>,
    events: Vec<ReceivedEvent>,
    service_checks: Vec<ReceivedServiceCheck>,
}

impl Decoded {
    fn items(&self) -> usize {
        self.series.len() + self.sketches.len() + self.events.len() + self.service_checks.len()
    }
    fn points(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn reply(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn decode_series(raw: &[u8]) -> Result<Vec<ReceivedSeries>, String> {
    let p = MetricPayload::decode(raw).map_err(|e| format!("not a MetricPayload: {e}"))?;
    p.series
        .into_iter()
        .map(|s| {
            let metric_type = MetricType::try_from(s.r#type)
                .map_err(|_| format!("unknown metric type {} for {}", s.r#type, s.metric))?;
            if s.metric.is_empty() {
                return Err("a series without a metric name".to_owned());
            }
            Ok(ReceivedSeries {
                host: s
                    .resources
                    .iter()
                    .find(|r| r.r#type == "host")
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
                metric: s.metric,
                tags: s.tags,
                metric_type,
                interval: s.interval,
                points: s.points.iter().map(|p| (p.timestamp, p.value)).collect(),
            })
        })
        .collect()
}

fn decode_sketches(raw: &[u8]) -> Result<Vec<ReceivedSketch>, String> {
    let p = SketchPayload::decode(raw).map_err(|e| format!("not a SketchPayload: {e}"))?;
    p.sketches
        .into_iter()
        .map(|s| {
            for d in &s.dogsketches {
                if d.k.len() != d.n.len() {
                    return Err(format!(
                        "{}: {} keys but {} counts",
                        s.metric,
                        d.k.len(),
                        d.n.len()
                    ));
                }
                if d.k.windows(2).any(|w| w[0] > w[1]) {
                    return Err(format!("{}: sketch keys not ascending", s.metric));
                }
                if d.n.iter().any(|&n| n > 65_535) {
                    return Err(format!("{}: a bin count above 65535", s.metric));
                }
            }
            Ok(ReceivedSketch {
                metric: s.metric,
                tags: s.tags,
                host: s.host,
                dogsketches: s.dogsketches,
            })
        })
        .collect()
}

fn decode_body(path: &str, raw: &[u8]) -> Result<Decoded, String> {
    let mut d = Decoded {
        series: Vec::new(),
        sketches: Vec::new(),
        events: Vec::new(),
        service_checks: Vec::new(),
    };
    match path {
        "/api/v2/series" => d.series = decode_series(raw)?,
        "/api/beta/sketches" => d.sketches = decode_sketches(raw)?,
        "/api/v1/events" => {
            d.events = vec![serde_json::from_slice(raw).map_err(|e| format!("not an event: {e}"))?]
        }
        "/intake/" => d.events = decode_intake_events(raw)?,
        "/api/v1/check_run" => {
            d.service_checks = serde_json::from_slice(raw)
                .map_err(|e| format!("not an array of service checks: {e}"))?
        }
        _ => return Err(format!("no such endpoint {path}")),
    }
    Ok(d)
}

/// One event of an `/intake/` body, as the Agent writes it.
#[derive(Deserialize)]
struct IntakeEvent {
    msg_title: String,
    #[serde(default)]
    msg_text: String,
    timestamp: Option<i64>,
    priority: Option<String>,
    host: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    alert_type: Option<String>,
    aggregation_key: Option<String>,
    source_type_name: Option<String>,
}

/// The Agent's events body: `{"apiKey":"","events":{"<source type>":[..]},"internalHostname":".."}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntakeEvents {
    #[serde(rename = "apiKey")]
    _api_key: String,
    events: std::collections::BTreeMap<String, Vec<IntakeEvent>>,
    #[serde(rename = "internalHostname")]
    _internal_hostname: String,
}

fn decode_intake_events(raw: &[u8]) -> Result<Vec<ReceivedEvent>, String> {
    let body: IntakeEvents =
        serde_json::from_slice(raw).map_err(|e| format!("not an /intake/ events body: {e}"))?;
    let mut out = Vec::new();
    for (group, events) in body.events {
        if group.is_empty() || events.is_empty() {
            return Err(format!("an empty events group {group:?}"));
        }
        for e in events {
            if e.source_type_name.as_deref().unwrap_or("api") != group {
                return Err(format!(
                    "event {:?} with source type {:?} in group {group:?}",
                    e.msg_title, e.source_type_name
                ));
            }
            out.push(ReceivedEvent {
                title: e.msg_title,
                text: e.msg_text,
                date_happened: e.timestamp,
                priority: e.priority,
                host: e.host,
                tags: e.tags,
                alert_type: e.alert_type,
                aggregation_key: e.aggregation_key,
                source_type_name: e.source_type_name,
            });
        }
    }
    Ok(out)
}

/// The v1 JSON API Datadog's Lambda libraries call themselves when they find no extension
/// (`datadog` ThreadStats): the fake answers it with the scripted status and keeps nothing.
pub const LIBRARY_API_PATH: &str = "/api/v1/distribution_points";

/// Limits and the expected content type of an endpoint.
fn endpoint(path: &str) -> Option<(usize, usize, usize, &'static str)> {
    match path {
        "/api/v2/series" => Some((
            SERIES_MAX_COMPRESSED,
            SERIES_MAX_RAW,
            SERIES_MAX_POINTS,
            "application/x-protobuf",
        )),
        "/api/beta/sketches" => Some((
            GENERIC_MAX_COMPRESSED,
            GENERIC_MAX_RAW,
            usize::MAX,
            "application/x-protobuf",
        )),
        "/api/v1/events" | "/intake/" | "/api/v1/check_run" => Some((
            GENERIC_MAX_COMPRESSED,
            GENERIC_MAX_RAW,
            usize::MAX,
            "application/json",
        )),
        _ => None,
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let (expected_key, scripted) = {
        let mut inner = shared.lock();
        let r = inner.script.pop_front().unwrap_or(inner.default);
        (inner.api_key.clone(), r)
    };
    let mut rec = RequestRecord {
        method,
        path: path.clone(),
        answer: Answer::Status(0),
        api_key_ok: header(&req, "dd-api-key").as_deref() == Some(expected_key.as_str()),
        content_type: header(&req, "content-type"),
        content_encoding: header(&req, "content-encoding"),
        user_agent: header(&req, "user-agent"),
        agent_version: header(&req, "dd-agent-version"),
        compressed_len: 0,
        raw_len: 0,
        items: 0,
        points: 0,
        arrived: std::time::Instant::now(),
    };
    let body = match Limited::new(req.into_body(), READ_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            rec.answer = Answer::Dropped;
            shared.lock().requests.push(rec);
            shared.bump();
            return Err(DropConnection);
        }
    };
    rec.compressed_len = body.len();
    shared.lock().arrivals += 1;
    shared.bump();

    let status = match scripted {
        Reply::Drop => {
            rec.answer = Answer::Dropped;
            shared.lock().requests.push(rec);
            shared.bump();
            return Err(DropConnection);
        }
        Reply::Hang => {
            rec.answer = Answer::Hung;
            shared.lock().requests.push(rec);
            shared.bump();
            std::future::pending::<()>().await;
            return Err(DropConnection);
        }
        Reply::Delay(d, status) => {
            tokio::time::sleep(d).await;
            status
        }
        Reply::Status(status) => status,
    };

    let (answer, resp) = answer(&shared, &mut rec, &path, &body, status);
    rec.answer = Answer::Status(answer);
    shared.lock().requests.push(rec);
    shared.bump();
    Ok(resp)
}

/// Validate and decode a request, store it when the answer is 2xx; returns the status sent.
fn answer(
    shared: &Shared,
    rec: &mut RequestRecord,
    path: &str,
    body: &[u8],
    scripted: u16,
) -> (u16, Response<Full<Bytes>>) {
    if rec.method == "GET" && path == "/api/v1/validate" {
        return match (rec.api_key_ok, scripted) {
            (_, s) if !(200..300).contains(&s) => (s, reply(s, r#"{"errors":["scripted"]}"#)),
            (true, _) => (200, reply(200, r#"{"valid":true}"#)),
            (false, _) => (403, reply(403, r#"{"errors":["Forbidden"]}"#)),
        };
    }
    if rec.method == "POST" && path == LIBRARY_API_PATH {
        // Datadog's Lambda libraries without an extension: answered (after the scripted delay), not decoded.
        return (scripted, reply(scripted, r#"{"status":"ok"}"#));
    }
    let Some((max_compressed, max_raw, max_points, content_type)) =
        (rec.method == "POST").then(|| endpoint(path)).flatten()
    else {
        return (404, reply(404, r#"{"errors":["Not found"]}"#));
    };
    if !rec.api_key_ok {
        return (403, reply(403, r#"{"errors":["Forbidden"]}"#));
    }

    let mut violations = Vec::new();
    if rec.content_type.as_deref() != Some(content_type) {
        violations.push(format!(
            "{path}: Content-Type {:?}, expected {content_type}",
            rec.content_type
        ));
    }
    if !rec
        .user_agent
        .as_deref()
        .is_some_and(|ua| ua.starts_with("offpath/"))
    {
        violations.push(format!("{path}: User-Agent {:?}", rec.user_agent));
    }
    if rec.agent_version.is_none() {
        violations.push(format!("{path}: no DD-Agent-Version"));
    }
    // Like the real intake: size limits first (413 without parsing), then the body.
    if body.len() > max_compressed {
        violations.push(format!(
            "{path}: {} B compressed > {max_compressed}",
            body.len()
        ));
        return finish(shared, violations, 413, None);
    }
    let raw = match rec.content_encoding.as_deref() {
        Some("zstd") => match zstd::stream::decode_all(body) {
            Ok(raw) => raw,
            Err(e) => {
                violations.push(format!("{path}: body is not zstd: {e}"));
                return finish(shared, violations, 400, None);
            }
        },
        other => {
            violations.push(format!("{path}: Content-Encoding {other:?}, expected zstd"));
            return finish(shared, violations, 400, None);
        }
    };
    rec.raw_len = raw.len();
    if raw.len() > max_raw {
        violations.push(format!("{path}: {} B uncompressed > {max_raw}", raw.len()));
        return finish(shared, violations, 413, None);
    }
    let decoded = match decode_body(path, &raw) {
        Ok(d) => d,
        Err(e) => {
            violations.push(format!("{path}: {e}"));
            return finish(shared, violations, 400, None);
        }
    };
    rec.items = decoded.items();
    rec.points = decoded.points();
    if rec.points > max_points {
        violations.push(format!("{path}: {} points > {max_points}", rec.points));
        return finish(shared, violations, 413, None);
    }
    if !(200..300).contains(&scripted) {
        return finish(shared, violations, scripted, None);
    }
    finish(shared, violations, 202, Some(decoded))
}

fn finish(
    shared: &Shared,
    violations: Vec<String>,
    status: u16,
    decoded: Option<Decoded>,
) -> (u16, Response<Full<Bytes>>) {
    let mut inner = shared.lock();
    inner.violations.extend(violations);
    if let Some(d) = decoded {
        inner.series.extend(d.series);
        inner.sketches.extend(d.sketches);
        inner.events.extend(d.events);
        inner.service_checks.extend(d.service_checks);
    }
    let body = match status {
        200..=299 => r#"{"errors":[]}"#,
        400 => r#"{"errors":["Bad Request"]}"#,
        403 => r#"{"errors":["Forbidden"]}"#,
        413 => r#"{"errors":["Payload too large"]}"#,
        _ => r#"{"errors":["scripted error"]}"#,
    };
    (status, reply(status, body))
}

fn has_tags(have: &[String], want: &[&str]) -> bool {
    want.iter().all(|w| have.iter().any(|h| h == w))
}

impl FakeIntake {
    /// Start serving on `127.0.0.1:0`, accepting `api_key`. Unscripted requests are answered 202.
    ///
    /// # Panics
    /// When no loopback port can be bound (the test cannot run).
    pub async fn start(api_key: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake intake on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the fake intake");
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                api_key: api_key.to_owned(),
                script: VecDeque::new(),
                default: Reply::Status(202),
                requests: Vec::new(),
                arrivals: 0,
                series: Vec::new(),
                sketches: Vec::new(),
                events: Vec::new(),
                service_checks: Vec::new(),
                violations: Vec::new(),
            }),
            changed,
        });
        let accept_shared = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            // Connection tasks live in this set, so aborting the server aborts them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = Arc::clone(&accept_shared);
                        conns.spawn(async move {
                            let svc = service_fn(move |req| handle(Arc::clone(&shared), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// The base URL (`http://127.0.0.1:<port>`), for `DD_DD_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queue scripted replies; each request takes the next one (validation still applies).
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().script.extend(replies);
    }

    /// The reply used when the script is empty (initially `Status(202)`).
    pub fn set_default_reply(&self, reply: Reply) {
        self.shared.lock().default = reply;
    }

    /// Every request so far, in arrival order of their answers.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Requests to one path.
    pub fn requests_to(&self, path: &str) -> Vec<RequestRecord> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Limit and header violations seen (empty when offpath behaved).
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// Every accepted series.
    pub fn all_series(&self) -> Vec<ReceivedSeries> {
        self.shared.lock().series.clone()
    }

    /// Accepted series named `metric`.
    pub fn series(&self, metric: &str) -> Vec<ReceivedSeries> {
        self.series_tagged(metric, &[])
    }

    /// Accepted series named `metric` carrying every tag of `tags`.
    pub fn series_tagged(&self, metric: &str, tags: &[&str]) -> Vec<ReceivedSeries> {
        self.shared
            .lock()
            .series
            .iter()
            .filter(|s| s.metric == metric && has_tags(&s.tags, tags))
            .cloned()
            .collect()
    }

    /// All points of the accepted series named `metric` with `tags`, in arrival order.
    pub fn points(&self, metric: &str, tags: &[&str]) -> Vec<(i64, f64)> {
        self.series_tagged(metric, tags)
            .into_iter()
            .flat_map(|s| s.points)
            .collect()
    }

    /// Distinct names of accepted series.
    pub fn series_names(&self) -> BTreeSet<String> {
        self.shared
            .lock()
            .series
            .iter()
            .map(|s| s.metric.clone())
            .collect()
    }

    /// Total points accepted over every series.
    pub fn series_point_count(&self) -> usize {
        self.shared
            .lock()
            .series
            .iter()
            .map(|s| s.points.len())
            .sum()
    }

    /// Every accepted sketch series.
    pub fn all_sketches(&self) -> Vec<ReceivedSketch> {
        self.shared.lock().sketches.clone()
    }

    /// Accepted sketch series named `metric` with every tag of `tags`.
    pub fn sketches(&self, metric: &str, tags: &[&str]) -> Vec<ReceivedSketch> {
        self.shared
            .lock()
            .sketches
            .iter()
            .filter(|s| s.metric == metric && has_tags(&s.tags, tags))
            .cloned()
            .collect()
    }

    /// cnt/min/max/sum over every accepted sketch named `metric` with `tags`; `None` if there is none.
    pub fn sketch_totals(&self, metric: &str, tags: &[&str]) -> Option<SketchTotals> {
        let sketches = self.sketches(metric, tags);
        let mut totals: Option<SketchTotals> = None;
        for d in sketches.iter().flat_map(|s| &s.dogsketches) {
            let bins: u64 = d.n.iter().map(|&n| u64::from(n)).sum();
            totals = Some(match totals {
                None => SketchTotals {
                    cnt: d.cnt,
                    min: d.min,
                    max: d.max,
                    sum: d.sum,
                    buckets: 1,
                    bin_count: bins,
                },
                Some(t) => SketchTotals {
                    cnt: t.cnt + d.cnt,
                    min: t.min.min(d.min),
                    max: t.max.max(d.max),
                    sum: t.sum + d.sum,
                    buckets: t.buckets + 1,
                    bin_count: t.bin_count + bins,
                },
            });
        }
        totals
    }

    /// Accepted events.
    pub fn events(&self) -> Vec<ReceivedEvent> {
        self.shared.lock().events.clone()
    }

    /// Accepted service checks.
    pub fn service_checks(&self) -> Vec<ReceivedServiceCheck> {
        self.shared.lock().service_checks.clone()
    }

    /// Wait until `cond` holds, re-checking after every request; false if `timeout` passes first.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&FakeIntake) -> bool) -> bool {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let _ = rx.borrow_and_update();
            if cond(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return cond(self),
            }
        }
    }

    /// Wait until at least `n` requests have been answered (or dropped / hung).
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |i| i.shared.lock().requests.len() >= n)
            .await
    }

    /// Wait until at least `n` requests have arrived whole, before their answer (a `Reply::Delay`
    /// request is in flight from then until it is answered).
    pub async fn wait_arrivals(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |i| i.shared.lock().arrivals >= n)
            .await
    }
}
