//! The local `/health` and `/status` HTTP endpoint (`OFFPATH_STATUS_ADDR`, loopback by default).
//!
//! - `GET /health`: `200 ok` when the listeners are up and the pipeline is alive (its heartbeat is
//!   recent), `503 <reason>` otherwise. Container health checks call it through `offpath health`.
//! - `GET /status`: the counters as JSON ([`Status`]); never the API key.
//! - `GET /metrics`: the same counters in the Prometheus text format, named as the `offpath.*`
//!   self-telemetry ([`crate::telemetry::prometheus`]).
//!
//! The pipeline owns a shared `Health` and updates it; `serve` takes an already-bound listener
//! and a shutdown future. Connections are bounded, short and fair (one request each, short header
//! timeout, a slot reserved for `/health`): see [`super::server`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Acquire, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::dogstatsd::ParseError;
use crate::telemetry::{DestinationStatus, PacketDrop, PointDrop, Telemetry, breaker_name};

pub(crate) use super::server::serve;

/// A write to a fallback sink waiting longer than this makes `/health` unhealthy.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

/// Since when a blocking operation (a write to a sink) has been waiting: set by the thread doing it,
/// read by `/health` ([`Health::watch`]).
#[derive(Debug, Default)]
pub struct Stall {
    /// Unix seconds when the operation began; 0 while none waits.
    since: AtomicI64,
}

impl Stall {
    /// An operation begins at `now` (unix seconds).
    pub fn begin(&self, now: i64) {
        self.since.store(now.max(1), Relaxed);
    }

    /// It is over.
    pub fn end(&self) {
        self.since.store(0, Relaxed);
    }

    /// Seconds the current operation has waited at `now`; `None` when none waits.
    pub fn waited(&self, now: i64) -> Option<i64> {
        match self.since.load(Relaxed) {
            0 => None,
            since => Some(now.saturating_sub(since).max(0)),
        }
    }
}

/// A watched [`Stall`] and how `/health` names it.
#[derive(Debug)]
struct Watched {
    what: String,
    hint: String,
    stall: Arc<Stall>,
}

/// Liveness shared between the pipeline (which updates it) and `/health` (which reads it).
#[derive(Debug)]
pub struct Health {
    /// Set once every configured listener is bound and reading; cleared when they stop.
    listeners_up: AtomicBool,
    /// Unix seconds of the pipeline's last sign of life; 0 = not started.
    heartbeat: AtomicI64,
    /// Set when shutdown begins, so orchestrators stop routing to this instance.
    shutting_down: AtomicBool,
    /// A heartbeat older than this makes `/health` answer 503.
    stale_after: Duration,
    /// Sinks whose blocked writes make `/health` answer 503 ([`Health::watch`]).
    watched: std::sync::Mutex<Vec<Watched>>,
}

impl Health {
    /// A `Health` whose heartbeat goes stale after `stale_after` (see [`Health::stale_after_for`]).
    pub fn new(stale_after: Duration) -> Self {
        Self {
            listeners_up: AtomicBool::new(false),
            heartbeat: AtomicI64::new(0),
            shutting_down: AtomicBool::new(false),
            stale_after,
            watched: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Answer 503 while an operation of `stall` has waited [`STALL_LIMIT`] or longer, with the reason
    /// `<what> blocked: a write has waited N s (limit 5 s); <hint>`.
    pub fn watch(&self, what: impl Into<String>, hint: impl Into<String>, stall: Arc<Stall>) {
        if let Ok(mut w) = self.watched.lock() {
            w.push(Watched {
                what: what.into(),
                hint: hint.into(),
                stall,
            });
        }
    }

    /// A staleness bound for a flush interval: three missed flushes, and never under 30 s.
    pub fn stale_after_for(flush_interval: Duration) -> Duration {
        (flush_interval * 3).max(Duration::from_secs(30))
    }

    /// Record whether the listeners are up (true after `Listeners::start`, false after `stop`).
    pub fn set_listeners_up(&self, up: bool) {
        self.listeners_up.store(up, Relaxed);
    }

    /// Record a sign of life of the pipeline at `now` (unix seconds): call it when the pipeline
    /// starts and after every flush the aggregate worker answered.
    pub fn heartbeat(&self, now: i64) {
        self.heartbeat.fetch_max(now, Relaxed);
    }

    /// Mark the start of shutdown: `/health` answers 503 from now on.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Relaxed);
    }

    /// `Ok` when healthy at `now` (unix seconds), else the reason.
    ///
    /// # Errors
    /// The reason the agent is unhealthy, as shown by `/health`.
    pub fn evaluate(&self, now: i64) -> Result<(), String> {
        if self.shutting_down.load(Relaxed) {
            return Err("shutting down".to_owned());
        }
        if !self.listeners_up.load(Relaxed) {
            return Err("listeners are not up".to_owned());
        }
        let limit = i64::try_from(STALL_LIMIT.as_secs()).unwrap_or(i64::MAX);
        if let Ok(watched) = self.watched.lock() {
            for w in watched.iter() {
                if let Some(age) = w.stall.waited(now).filter(|&a| a >= limit) {
                    return Err(format!(
                        "{} blocked: a write has waited {age} s (limit {limit} s); {}",
                        w.what, w.hint
                    ));
                }
            }
        }
        let beat = self.heartbeat.load(Relaxed);
        if beat == 0 {
            return Err("pipeline not started".to_owned());
        }
        let age = now.saturating_sub(beat);
        let limit = i64::try_from(self.stale_after.as_secs()).unwrap_or(i64::MAX);
        if age > limit {
            return Err(format!(
                "pipeline stalled: last heartbeat {age} s ago (limit {limit} s)"
            ));
        }
        Ok(())
    }
}

/// One listener in `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerStatus {
    /// `udp`, `unixgram` or `unix`, plus the address.
    pub name: String,
    /// Packets read.
    pub packets: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Packets dropped, by reason (`queue_full`, `truncated`, `oversize_frame`).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Unix stream connections closed at once: every slot was taken and the peer's user already held
    /// its share.
    pub connections_refused: u64,
    /// Unix stream connections closed to give their slot to another user's new connection.
    pub connections_evicted: u64,
    /// Unix stream connections closed for trickling a frame (10 s) or idling while slots were short.
    pub connections_timed_out: u64,
    /// Failed `accept` calls of the Unix stream listener (out of file descriptors, typically).
    pub accept_errors: u64,
}

/// Lines parsed and rejected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParseStatus {
    /// Metric lines parsed.
    pub metrics: u64,
    /// Event lines parsed.
    pub events: u64,
    /// Service-check lines parsed.
    pub service_checks: u64,
    /// Rejected lines, by reason.
    pub errors: BTreeMap<&'static str, u64>,
}

/// The point ledger: `received = delivered + fell_back + dropped` once everything is flushed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointsStatus {
    /// Metric values, events and service checks accepted by the parser.
    pub received: u64,
    /// Points in payloads the intake accepted.
    pub delivered: u64,
    /// Points written to the fallback (CloudWatch Logs or stdout).
    pub fell_back: u64,
    /// Points a previous run left in the retry storage, read back at start: they join `received`
    /// on the left of the ledger.
    pub recovered: u64,
    /// Dropped points, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Sum of `dropped`.
    pub dropped_total: u64,
}

/// Delivery counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardStatus {
    /// Payloads the intake accepted.
    pub payloads_delivered: u64,
    /// Requests retried.
    pub retries: u64,
    /// Records written to the fallback sink.
    pub fallback_records: u64,
    /// Bytes written to the fallback sink.
    pub fallback_bytes: u64,
    /// Bytes in the on-disk retry storage.
    pub storage_bytes: u64,
    /// Payload files in the on-disk retry storage.
    pub storage_files: u64,
    /// Payloads written to the retry storage.
    pub storage_written: u64,
    /// Torn or corrupt storage files found at start.
    pub storage_corrupt: u64,
    /// Payloads that left the storage for the fallback at its size bound.
    pub storage_overflow: u64,
    /// Storage writes and fsyncs that failed.
    pub storage_errors: u64,
}

/// The status endpoint's own connections ([`super::server`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusServerStatus {
    /// Closed at once: every slot, the reserved one included, was busy answering.
    pub refused: u64,
    /// Closed for sending no whole request within the header timeout, or outliving the connection
    /// timeout.
    pub timed_out: u64,
    /// Closed while still waiting for their request headers, to give their slot to a new connection.
    pub evicted: u64,
}

/// `/health` as seen by `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthStatus {
    /// Whether `/health` answers 200.
    pub ok: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// The `/status` JSON document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// offpath's version.
    pub version: &'static str,
    /// This process's id: with several offpaths on one machine, which one answered.
    pub pid: u32,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
    /// The `/health` verdict.
    pub health: HealthStatus,
    /// Per-listener counters.
    pub listeners: Vec<ListenerStatus>,
    /// Packets read over every listener.
    pub packets_received: u64,
    /// Packets dropped over every listener, by reason.
    pub packets_dropped: BTreeMap<&'static str, u64>,
    /// Parser counters.
    pub parse: ParseStatus,
    /// The point ledger.
    pub points: PointsStatus,
    /// Bytes waiting in the retry queue.
    pub retry_queue_bytes: u64,
    /// Circuit breaker: `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// The last error the intake returned (status and short body), if any.
    pub last_intake_error: Option<String>,
    /// Delivery and fallback counters.
    pub forward: ForwardStatus,
    /// Each destination's ledger and delivery state (dual shipping), the main one first.
    pub destinations: Vec<DestinationStatus>,
    /// The status endpoint's refused, timed-out and evicted connections.
    pub status_server: StatusServerStatus,
}

impl Status {
    /// Read every counter now (`now` in unix seconds for the health verdict).
    pub fn snapshot(t: &Telemetry, health: &Health, now: i64) -> Self {
        let listeners: Vec<ListenerStatus> = t
            .listeners
            .lock()
            .map(|all| {
                all.iter()
                    .map(|l| ListenerStatus {
                        name: l.name.clone(),
                        packets: l.packets.load(Relaxed),
                        bytes: l.bytes.load(Relaxed),
                        dropped: PacketDrop::ALL
                            .iter()
                            .map(|r| (r.as_str(), l.dropped[*r as usize].load(Relaxed)))
                            .collect(),
                        connections_refused: l.connections_refused.load(Relaxed),
                        connections_evicted: l.connections_evicted.load(Relaxed),
                        connections_timed_out: l.connections_timed_out.load(Relaxed),
                        accept_errors: l.accept_errors.load(Relaxed),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let packets_received = listeners.iter().map(|l| l.packets).sum();
        let packets_dropped = PacketDrop::ALL
            .iter()
            .map(|r| {
                let n = listeners.iter().map(|l| l.dropped[r.as_str()]).sum();
                (r.as_str(), n)
            })
            .collect();
        let p = &t.points;
        // Received first (Acquire), then the drops: the writers add a batch's drops before its points
        // received (Release), so every point counted here that was dropped shows in `dropped`.
        let received = p.received.load(Acquire);
        let dropped: BTreeMap<&'static str, u64> = PointDrop::ALL
            .iter()
            .map(|r| (r.as_str(), p.dropped[*r as usize].load(Relaxed)))
            .collect();
        let verdict = health.evaluate(now);
        let f = &t.forward;
        Self {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_seconds: t.started.elapsed().as_secs(),
            health: HealthStatus {
                ok: verdict.is_ok(),
                reason: verdict.err(),
            },
            listeners,
            packets_received,
            packets_dropped,
            parse: ParseStatus {
                metrics: t.parse.metrics.load(Relaxed),
                events: t.parse.events.load(Relaxed),
                service_checks: t.parse.service_checks.load(Relaxed),
                errors: ParseError::ALL
                    .iter()
                    .map(|r| (r.as_str(), t.parse.errors[r.index()].load(Relaxed)))
                    .collect(),
            },
            points: PointsStatus {
                received,
                delivered: p.delivered.load(Relaxed),
                fell_back: p.fell_back.load(Relaxed),
                recovered: p.recovered.load(Relaxed),
                dropped_total: dropped.values().sum(),
                dropped,
            },
            retry_queue_bytes: f.retry_queue_bytes.load(Relaxed),
            breaker: breaker_name(f.breaker.load(Relaxed)),
            last_intake_error: f.last_intake_error.lock().ok().and_then(|e| e.clone()),
            forward: ForwardStatus {
                payloads_delivered: f.payloads_delivered.load(Relaxed),
                retries: f.retries.load(Relaxed),
                fallback_records: f.fallback_records.load(Relaxed),
                fallback_bytes: f.fallback_bytes.load(Relaxed),
                storage_bytes: f.storage_bytes.load(Relaxed),
                storage_files: f.storage_files.load(Relaxed),
                storage_written: f.storage_written.load(Relaxed),
                storage_corrupt: f.storage_corrupt.load(Relaxed),
                storage_overflow: f.storage_overflow.load(Relaxed),
                storage_errors: f.storage_errors.load(Relaxed),
            },
            destinations: t
                .destinations()
                .iter()
                .map(|r| DestinationStatus::of(r))
                .collect(),
            status_server: StatusServerStatus {
                refused: t.status_server.refused.load(Relaxed),
                timed_out: t.status_server.timed_out.load(Relaxed),
                evicted: t.status_server.evicted.load(Relaxed),
            },
        }
    }
}

/// Seconds since the Unix epoch (the clock `serve` hands to [`Health::evaluate`]).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `503 busy` for a request other than `/health` in the slot reserved for it.
pub(super) fn busy() -> Response<Full<Bytes>> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy: every status connection slot is taken; only /health is answered now\n",
    )
}

/// The answer to one request.
pub(super) fn respond(
    req: &Request<Incoming>,
    telemetry: &Telemetry,
    health: &Health,
    now: i64,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(
        path,
        "/health" | "/status" | "/status/contexts" | "/metrics"
    ) {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /health, /status, /status/contexts or /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/health" {
        return match health.evaluate(now) {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{reason}\n")),
        };
    }
    if path == "/metrics" {
        let body = crate::telemetry::prometheus::render(telemetry, Default::default());
        return build(
            StatusCode::OK,
            crate::telemetry::prometheus::CONTENT_TYPE,
            Bytes::from(body),
        );
    }
    if path == "/status/contexts" {
        return match top_param(req.uri().query()) {
            Some(top) => json(&telemetry.contexts.view(top)),
            None => text(
                StatusCode::BAD_REQUEST,
                "top must be a number of metric names, at most 1000\n",
            ),
        };
    }
    json(&Status::snapshot(telemetry, health, now))
}

/// `?top=N` of `/status/contexts` (20 when absent); `None` when it is not a number up to 1000.
fn top_param(query: Option<&str>) -> Option<usize> {
    let top = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("top="));
    match top {
        None => Some(20),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= crate::telemetry::contexts::PUBLISHED_NAMES),
    }
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            build(StatusCode::OK, "application/json", Bytes::from(body))
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode status: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    build(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    h.insert(
        CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    struct Server {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Server {
        async fn start(telemetry: Arc<Telemetry>, health: Arc<Health>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, telemetry, health, async {
                let _ = stopped.await;
            }));
            Self {
                addr,
                stop: Some(stop),
                task,
            }
        }

        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            self.task.await.unwrap().unwrap();
        }
    }

    /// A raw HTTP/1.1 exchange: returns (status code, body).
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, body.to_owned())
    }

    fn healthy() -> Arc<Health> {
        let h = Health::new(Duration::from_secs(30));
        h.set_listeners_up(true);
        h.heartbeat(unix_now());
        Arc::new(h)
    }

    #[test]
    fn health_needs_listeners_and_a_fresh_heartbeat() {
        let h = Health::new(Duration::from_secs(30));
        assert_eq!(h.evaluate(1000).unwrap_err(), "listeners are not up");
        h.set_listeners_up(true);
        assert_eq!(h.evaluate(1000).unwrap_err(), "pipeline not started");
        h.heartbeat(1000);
        assert_eq!(h.evaluate(1030), Ok(()));
        assert!(h.evaluate(1031).unwrap_err().contains("stalled"));
        h.heartbeat(990); // an older heartbeat never moves it back
        assert_eq!(h.evaluate(1030), Ok(()));
        h.set_shutting_down();
        assert_eq!(h.evaluate(1000).unwrap_err(), "shutting down");
    }

    #[test]
    fn a_write_blocked_past_the_limit_makes_health_fail_with_the_reason() {
        let h = Health::new(Duration::from_secs(30));
        h.set_listeners_up(true);
        h.heartbeat(1000);
        let stall = Arc::new(Stall::default());
        h.watch(
            "fallback stdout",
            "is anything reading it?",
            Arc::clone(&stall),
        );
        assert_eq!(h.evaluate(1000), Ok(()));
        stall.begin(1000);
        assert_eq!(h.evaluate(1004), Ok(()), "a short wait is no problem");
        assert_eq!(
            h.evaluate(1005).unwrap_err(),
            "fallback stdout blocked: a write has waited 5 s (limit 5 s); is anything reading it?"
        );
        stall.end();
        assert_eq!(h.evaluate(1005), Ok(()));
    }

    #[test]
    fn staleness_is_three_flushes_and_at_least_thirty_seconds() {
        assert_eq!(
            Health::stale_after_for(Duration::from_secs(15)),
            Duration::from_secs(45)
        );
        assert_eq!(
            Health::stale_after_for(Duration::from_secs(1)),
            Duration::from_secs(30)
        );
    }

    #[tokio::test]
    async fn health_answers_200_when_healthy_and_503_with_the_reason_otherwise() {
        let t = Arc::new(Telemetry::default());
        let health = Arc::new(Health::new(Duration::from_secs(30)));
        let server = Server::start(t, Arc::clone(&health)).await;
        assert_eq!(
            request(server.addr, "GET", "/health").await,
            (503, "listeners are not up\n".to_owned())
        );
        health.set_listeners_up(true);
        health.heartbeat(unix_now());
        assert_eq!(
            request(server.addr, "GET", "/health").await,
            (200, "ok\n".to_owned())
        );
        assert_eq!(request(server.addr, "HEAD", "/health").await.0, 200);
        health.set_listeners_up(false);
        assert_eq!(request(server.addr, "GET", "/health").await.0, 503);
        server.stop().await;
    }

    #[tokio::test]
    async fn status_reports_the_counters() {
        let t = Arc::new(Telemetry::default());
        let udp = t.register_listener("udp 127.0.0.1:8125");
        udp.packets.store(7, Relaxed);
        udp.bytes.store(700, Relaxed);
        udp.drop_packet(PacketDrop::QueueFull, 2);
        t.parse.metrics.store(40, Relaxed);
        t.parse.error(ParseError::BadValue);
        t.points.received.store(40, Relaxed);
        t.points.delivered.store(30, Relaxed);
        t.points.fell_back.store(5, Relaxed);
        t.points.drop_points(PointDrop::NonFinite, 5);
        t.forward.retry_queue_bytes.store(1234, Relaxed);
        t.forward.breaker.store(1, Relaxed);
        *t.forward.last_intake_error.lock().unwrap() = Some("503 Service Unavailable".into());
        let server = Server::start(Arc::clone(&t), healthy()).await;

        let (code, body) = request(server.addr, "GET", "/status").await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["uptime_seconds"].is_u64());
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["health"]["ok"], true);
        assert_eq!(v["listeners"][0]["name"], "udp 127.0.0.1:8125");
        assert_eq!(v["listeners"][0]["packets"], 7);
        assert_eq!(v["listeners"][0]["bytes"], 700);
        assert_eq!(v["listeners"][0]["dropped"]["queue_full"], 2);
        assert_eq!(v["packets_received"], 7);
        assert_eq!(v["packets_dropped"]["queue_full"], 2);
        assert_eq!(v["parse"]["metrics"], 40);
        assert_eq!(v["parse"]["errors"]["bad_value"], 1);
        assert_eq!(v["points"]["received"], 40);
        assert_eq!(v["points"]["delivered"], 30);
        assert_eq!(v["points"]["fell_back"], 5);
        assert_eq!(v["points"]["dropped"]["non_finite"], 5);
        assert_eq!(v["points"]["dropped"]["context_limit"], 0);
        assert_eq!(v["points"]["dropped_total"], 5);
        assert_eq!(v["retry_queue_bytes"], 1234);
        assert_eq!(v["breaker"], "open");
        assert_eq!(v["last_intake_error"], "503 Service Unavailable");
        server.stop().await;
    }

    #[tokio::test]
    async fn metrics_serves_the_counters_in_the_prometheus_format() {
        let t = Arc::new(Telemetry::default());
        t.points.received.store(12, Relaxed);
        let server = Server::start(t, healthy()).await;
        let (code, body) = request(server.addr, "GET", "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("offpath_points_received_total 12\n"),
            "{body}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn status_contexts_answers_the_cardinality_view_in_the_documented_shape() {
        use crate::telemetry::contexts::NameRow;
        let t = Arc::new(Telemetry::default());
        let slot = t.contexts.register(1000);
        let row = |name: &str, contexts, points_per_second, dropped| NameRow {
            name: name.into(),
            contexts,
            points_per_second,
            dropped,
        };
        let rows = vec![row("small", 2, 0.0, 0), row("big", 5, 1.5, 3)];
        t.contexts.publish(slot, 7, rows, 0);
        let server = Server::start(t, healthy()).await;
        let (code, body) = request(server.addr, "GET", "/status/contexts?top=1").await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"limit": 1000, "live": 7, "metrics": [
                {"name": "big", "contexts": 5, "points_per_second": 1.5, "dropped": 3}]})
        );
        let (_, body) = request(server.addr, "GET", "/status/contexts").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["metrics"][1]["name"], "small", "largest first: {v}");
        for bad in ["top=x", "top=1001", "top=-1"] {
            let path = format!("/status/contexts?{bad}");
            assert_eq!(request(server.addr, "GET", &path).await.0, 400, "{bad}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused() {
        let server = Server::start(Arc::new(Telemetry::default()), healthy()).await;
        assert_eq!(request(server.addr, "GET", "/").await.0, 404);
        assert_eq!(request(server.addr, "GET", "/metric").await.0, 404);
        assert_eq!(request(server.addr, "POST", "/status").await.0, 405);
        server.stop().await;
    }

    #[tokio::test]
    async fn shutdown_stops_serving_and_closes_the_socket() {
        let server = Server::start(Arc::new(Telemetry::default()), healthy()).await;
        let addr = server.addr;
        // An idle connection that never sends a request must not hold shutdown up.
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        server.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn breaker_states_have_names() {
        assert_eq!(
            [0, 1, 2, 9].map(breaker_name),
            ["closed", "open", "half_open", "unknown"]
        );
    }
}
