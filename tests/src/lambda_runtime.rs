//! A fake AWS Lambda Runtime API (Extensions API + Telemetry API + the runtime's invocation API) on port 0,
//! and a runner for the real `offpath-lambda` binary against it.
//!
//! The test scripts the sandbox: [`FakeRuntime::invoke`] hands an `INVOKE` to the pending (or next)
//! `event/next`, [`FakeRuntime::finish`] POSTs `platform.runtimeDone` to the subscribed listener as
//! Lambda does when the handler has returned, [`FakeRuntime::shutdown`] hands a `SHUTDOWN`. Every call
//! the extension makes is recorded with the time it arrived, so tests assert on order and timing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The identifier the fake hands out at registration.
pub const EXTENSION_ID: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";
/// The account id returned when the `accountId` feature is asked for.
pub const ACCOUNT_ID: &str = "123456789012";
/// The function name in the register response.
pub const FUNCTION_NAME: &str = "offpath-test-fn";
/// How long the helpers wait for something the extension should do before failing the test.
pub const WAIT: Duration = Duration::from_secs(30);

/// How the fake answers the Telemetry API subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryMode {
    /// 200: events are POSTed to the destination when the test calls [`FakeRuntime::finish`].
    Accept,
    /// This error status with a `ValidationError` body.
    Refuse(u16),
    /// 202 with a `Telemetry.NotSupported` body, as some emulators answer.
    NotSupported,
}

/// One recorded call or happening, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum CallKind {
    /// `POST /2020-01-01/extension/register`.
    Register {
        /// `Lambda-Extension-Name`.
        name: String,
        /// `Lambda-Extension-Accept-Feature`, if sent.
        accept_feature: Option<String>,
        /// The `events` of the body.
        events: Vec<String>,
    },
    /// `GET /2020-01-01/extension/event/next` arrived (the extension is done with the last event).
    NextEvent,
    /// An event was answered to a pending `event/next` (`INVOKE <id>` or `SHUTDOWN`).
    EventDelivered(String),
    /// `POST /2020-01-01/extension/init/error`.
    InitError {
        /// `Lambda-Extension-Function-Error-Type`.
        error_type: String,
        /// The JSON body.
        body: Value,
    },
    /// `POST /2020-01-01/extension/exit/error`.
    ExitError {
        /// `Lambda-Extension-Function-Error-Type`.
        error_type: String,
        /// The JSON body.
        body: Value,
    },
    /// `PUT /2022-07-01/telemetry`.
    Subscribe {
        /// The JSON body.
        body: Value,
        /// Whether the destination accepted a TCP connection at subscription time.
        listener_up: bool,
    },
    /// A `platform.runtimeDone` batch is about to be POSTed to the destination (recorded first, so
    /// anything the extension does in reaction comes later on the timeline).
    RuntimeDone {
        /// The request id.
        request_id: String,
    },
    /// A call without the registered `Lambda-Extension-Identifier`.
    BadIdentifier {
        /// Method and path.
        call: String,
    },
    /// Anything else the extension called.
    Other {
        /// Method and path.
        call: String,
    },
    /// A mark recorded by the test itself (e.g. by a test flusher), on the same timeline.
    Mark(String),
    /// The runtime's `GET /2018-06-01/runtime/invocation/next` arrived (it is done with the last event).
    RuntimeNext,
    /// An event was answered to the runtime's pending `invocation/next` (its request id).
    RuntimeEventDelivered(String),
    /// `POST /2018-06-01/runtime/invocation/<id>/response`.
    RuntimeResponse {
        /// The request id.
        request_id: String,
        /// The response body.
        body: Value,
    },
    /// `POST /2018-06-01/runtime/invocation/<id>/error`.
    RuntimeError {
        /// The request id.
        request_id: String,
        /// The error body.
        body: Value,
    },
    /// `POST /2018-06-01/runtime/init/error`.
    RuntimeInitError {
        /// The error body.
        body: Value,
    },
}

/// A recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// When it arrived.
    pub at: Instant,
    /// What it was.
    pub kind: CallKind,
}

struct Shared {
    calls: Mutex<Vec<Call>>,
    changed: watch::Sender<usize>,
    events: tokio::sync::Mutex<mpsc::Receiver<Value>>,
    /// Invocations for the runtime: request id, deadline (epoch ms), event.
    runtime_events: tokio::sync::Mutex<mpsc::Receiver<(String, u64, Value)>>,
    telemetry: TelemetryMode,
    destination: Mutex<Option<String>>,
}

impl Shared {
    fn record(&self, kind: CallKind) {
        let mut calls = self.calls.lock().unwrap();
        calls.push(Call {
            at: Instant::now(),
            kind,
        });
        let n = calls.len();
        drop(calls);
        self.changed.send_replace(n);
    }
}

/// The fake Runtime API server.
pub struct FakeRuntime {
    addr: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::Sender<Value>,
    runtime_events: mpsc::Sender<(String, u64, Value)>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl FakeRuntime {
    /// Start on 127.0.0.1 port 0.
    pub async fn start(telemetry: TelemetryMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(64);
        let (runtime_tx, runtime_rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            calls: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
            events: tokio::sync::Mutex::new(rx),
            runtime_events: tokio::sync::Mutex::new(runtime_rx),
            telemetry,
            destination: Mutex::new(None),
        });
        let server_shared = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = Arc::clone(&server_shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, Arc::clone(&shared)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            shared,
            events: tx,
            runtime_events: runtime_tx,
            server,
        }
    }

    /// Hand `event` to the runtime's pending (or next) `invocation/next` as request `request_id`, with a
    /// deadline `timeout` from now. (The extension's `INVOKE` is [`FakeRuntime::invoke`].)
    pub async fn invoke_runtime(&self, request_id: &str, event: Value, timeout: Duration) {
        let deadline = epoch_ms() + timeout.as_millis() as u64;
        self.runtime_events
            .send((request_id.to_owned(), deadline, event))
            .await
            .unwrap();
    }

    /// Whether the extension subscribed to the Telemetry API (and it was accepted).
    pub fn subscribed(&self) -> bool {
        self.shared.destination.lock().unwrap().is_some()
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    /// Hand an `INVOKE` to the extension, with a deadline `timeout` from now.
    pub async fn invoke(&self, request_id: &str, timeout: Duration) {
        let event = json!({
            "eventType": "INVOKE",
            "deadlineMs": epoch_ms() + timeout.as_millis() as u64,
            "requestId": request_id,
            "invokedFunctionArn": format!("arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{FUNCTION_NAME}"),
            "tracing": { "type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793" },
        });
        self.events.send(event).await.unwrap();
    }

    /// Hand a `SHUTDOWN` with `reason`, with a deadline `deadline` from now.
    pub async fn shutdown(&self, reason: &str, deadline: Duration) {
        let event = json!({
            "eventType": "SHUTDOWN",
            "shutdownReason": reason,
            "deadlineMs": epoch_ms() + deadline.as_millis() as u64,
        });
        self.events.send(event).await.unwrap();
    }

    /// The handler of `request_id` has returned: POST `platform.runtimeDone` to the subscribed
    /// listener (nothing when telemetry is not subscribed). Returns the listener's status.
    pub async fn finish(&self, request_id: &str) -> Option<u16> {
        let batch = json!([{
            "time": "2024-01-01T00:00:00.000Z",
            "type": "platform.runtimeDone",
            "record": {
                "requestId": request_id,
                "status": "success",
                "metrics": { "durationMs": 1.5, "producedBytes": 12 },
                "spans": [],
            },
        }]);
        if self.shared.destination.lock().unwrap().is_none() {
            return None;
        }
        self.shared.record(CallKind::RuntimeDone {
            request_id: request_id.to_owned(),
        });
        self.post_telemetry(&batch).await
    }

    /// POST any batch to the subscribed destination; `None` when nothing is subscribed.
    pub async fn post_telemetry(&self, batch: &Value) -> Option<u16> {
        let destination = self.shared.destination.lock().unwrap().clone()?;
        let hostport = destination
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let stream = TcpStream::connect(&hostport).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = Request::post("/")
            .header("host", hostport)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(batch.to_string())))
            .unwrap();
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Some(status)
    }

    /// Record a mark on the call timeline.
    pub fn mark(&self, what: impl Into<String>) {
        self.shared.record(CallKind::Mark(what.into()));
    }

    /// A cloneable handle that records marks (for test flushers living in other tasks).
    pub fn marker(&self) -> Marker {
        Marker(Arc::clone(&self.shared))
    }

    /// Everything recorded so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// The recorded kinds, without times.
    pub fn kinds(&self) -> Vec<CallKind> {
        self.calls().into_iter().map(|c| c.kind).collect()
    }

    /// How many recorded calls match.
    pub fn count(&self, pred: impl Fn(&CallKind) -> bool) -> usize {
        self.calls().iter().filter(|c| pred(&c.kind)).count()
    }

    /// Wait until `pred` holds over the calls; fails the test after [`WAIT`].
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let mut rx = self.shared.changed.subscribe();
        let give_up = tokio::time::Instant::now() + WAIT;
        loop {
            let calls = self.calls();
            if pred(&calls) {
                return calls;
            }
            if tokio::time::timeout_at(give_up, rx.changed())
                .await
                .is_err()
            {
                panic!("timed out waiting for {what}; calls: {calls:#?}");
            }
        }
    }

    /// Wait until the extension has called `event/next` `n` times in all.
    pub async fn wait_next_event(&self, n: usize) -> Vec<Call> {
        self.wait_for(&format!("event/next call #{n}"), |calls| {
            calls
                .iter()
                .filter(|c| c.kind == CallKind::NextEvent)
                .count()
                >= n
        })
        .await
    }
}

/// Records marks on a [`FakeRuntime`]'s timeline.
#[derive(Clone)]
pub struct Marker(Arc<Shared>);

impl std::fmt::Debug for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Marker")
    }
}

impl Marker {
    /// Record a mark.
    pub fn mark(&self, what: impl Into<String>) {
        self.0.record(CallKind::Mark(what.into()));
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let call = format!("{} {}", req.method(), req.uri().path());
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") {
        return Ok(runtime_call(req.method().clone(), rest.to_owned(), req, &shared).await);
    }
    if path != "/2020-01-01/extension/register"
        && header(&req, "lambda-extension-identifier").as_deref() != Some(EXTENSION_ID)
    {
        shared.record(CallKind::BadIdentifier { call });
        return Ok(reply(
            403,
            r#"{"errorType":"Extension.Forbidden","errorMessage":"bad identifier"}"#,
        ));
    }
    let error_type = header(&req, "lambda-extension-function-error-type").unwrap_or_default();
    let name = header(&req, "lambda-extension-name").unwrap_or_default();
    let feature = header(&req, "lambda-extension-accept-feature");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    Ok(match call.as_str() {
        "POST /2020-01-01/extension/register" => {
            let events = json_body["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let with_account = feature.as_deref() == Some("accountId");
            shared.record(CallKind::Register {
                name,
                accept_feature: feature,
                events,
            });
            let mut body = json!({
                "functionName": FUNCTION_NAME,
                "functionVersion": "$LATEST",
                "handler": "index.handler",
            });
            if with_account {
                body["accountId"] = json!(ACCOUNT_ID);
            }
            let mut resp = reply(200, body.to_string());
            resp.headers_mut()
                .insert("lambda-extension-identifier", EXTENSION_ID.parse().unwrap());
            resp
        }
        "GET /2020-01-01/extension/event/next" => {
            shared.record(CallKind::NextEvent);
            let mut events = shared.events.lock().await;
            match events.recv().await {
                Some(event) => {
                    let what = match event["eventType"].as_str() {
                        Some("INVOKE") => {
                            format!("INVOKE {}", event["requestId"].as_str().unwrap_or(""))
                        }
                        Some(other) => other.to_owned(),
                        None => "?".to_owned(),
                    };
                    shared.record(CallKind::EventDelivered(what));
                    reply(200, event.to_string())
                }
                None => reply(500, r#"{"errorType":"Runtime.Gone"}"#),
            }
        }
        "POST /2020-01-01/extension/init/error" => {
            shared.record(CallKind::InitError {
                error_type,
                body: json_body,
            });
            reply(202, r#"{"status":"OK"}"#)
        }
        "POST /2020-01-01/extension/exit/error" => {
            shared.record(CallKind::ExitError {
                error_type,
                body: json_body,
            });
            reply(202, r#"{"status":"OK"}"#)
        }
        "PUT /2022-07-01/telemetry" => {
            let destination = json_body["destination"]["URI"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let hostport = destination
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            let listener_up = TcpStream::connect(&hostport).await.is_ok();
            shared.record(CallKind::Subscribe {
                body: json_body,
                listener_up,
            });
            match shared.telemetry {
                TelemetryMode::Accept => {
                    *shared.destination.lock().unwrap() = Some(destination);
                    reply(200, "OK")
                }
                TelemetryMode::Refuse(status) => reply(
                    status,
                    r#"{"errorType":"ValidationError","errorMessage":"subscription refused"}"#,
                ),
                TelemetryMode::NotSupported => reply(
                    202,
                    r#"{"errorMessage":"Telemetry API is not supported","errorType":"Telemetry.NotSupported"}"#,
                ),
            }
        }
        _ => {
            shared.record(CallKind::Other { call });
            reply(404, "")
        }
    })
}

/// The runtime's side of the API (`/2018-06-01/runtime/...`, no identifier), as a real runtime client
/// (awslambdaric) calls it.
async fn runtime_call(
    method: hyper::Method,
    rest: String,
    req: Request<Incoming>,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let parts: Vec<&str> = rest.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["invocation", "next"]) => {
            shared.record(CallKind::RuntimeNext);
            let mut events = shared.runtime_events.lock().await;
            match events.recv().await {
                Some((id, deadline, event)) => {
                    shared.record(CallKind::RuntimeEventDelivered(id.clone()));
                    let mut resp = reply(200, event.to_string());
                    let h = resp.headers_mut();
                    h.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
                    h.insert("lambda-runtime-deadline-ms", deadline.into());
                    h.insert(
                        "lambda-runtime-invoked-function-arn",
                        format!("arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{FUNCTION_NAME}")
                            .parse()
                            .unwrap(),
                    );
                    h.insert(
                        "lambda-runtime-trace-id",
                        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"
                            .parse()
                            .unwrap(),
                    );
                    h.insert("content-type", "application/json".parse().unwrap());
                    resp
                }
                None => reply(500, r#"{"errorType":"Runtime.Gone"}"#),
            }
        }
        ("POST", ["invocation", id, "response"]) => {
            shared.record(CallKind::RuntimeResponse {
                request_id: (*id).to_owned(),
                body: json_body,
            });
            reply(202, r#"{"status":"OK"}"#)
        }
        ("POST", ["invocation", id, "error"]) => {
            shared.record(CallKind::RuntimeError {
                request_id: (*id).to_owned(),
                body: json_body,
            });
            reply(202, r#"{"status":"OK"}"#)
        }
        ("POST", ["init", "error"]) => {
            shared.record(CallKind::RuntimeInitError { body: json_body });
            reply(202, r#"{"status":"OK"}"#)
        }
        _ => {
            shared.record(CallKind::Other {
                call: format!("{method} /2018-06-01/runtime/{rest}"),
            });
            reply(404, "")
        }
    }
}

/// A running `offpath-lambda` process with its output captured.
#[derive(Debug)]
pub struct Extension {
    child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout_changed: watch::Sender<usize>,
    stderr_changed: watch::Sender<usize>,
    readers: Vec<JoinHandle<()>>,
}

/// The environment the extension starts with: the fake's address, a telemetry listener and the Datadog
/// libraries' endpoints on free ports reachable at 127.0.0.1, function settings, debug logs; `extra` adds or
/// overrides.
pub fn extension_env(rt: &FakeRuntime, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("AWS_LAMBDA_RUNTIME_API", rt.runtime_api().as_str()),
        ("OFFPATH_LAMBDA_TELEMETRY_PORT", "0"),
        ("OFFPATH_LAMBDA_TELEMETRY_HOST", "127.0.0.1"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("DD_LOG_LEVEL", "debug"),
        ("OFFPATH_STATUS_ADDR", ""),
        ("DD_DOGSTATSD_PORT", "__random__"),
        ("OFFPATH_LAMBDA_API_PORT", "0"),
        ("OFFPATH_LAMBDA_TRACE_PORT", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars
}

fn capture(
    mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
    changed: watch::Sender<usize>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut chunk = [0u8; 16384];
        while let Ok(n) = from.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let len = {
                let mut buf = into.lock().unwrap();
                buf.extend_from_slice(&chunk[..n]);
                buf.len()
            };
            changed.send_replace(len);
        }
    })
}

async fn wait_output(
    what: &str,
    buf: &Arc<Mutex<Vec<u8>>>,
    changed: &watch::Sender<usize>,
    pred: impl Fn(&str) -> bool,
) -> String {
    let mut rx = changed.subscribe();
    let give_up = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        if pred(&text) {
            return text;
        }
        if tokio::time::timeout_at(give_up, rx.changed())
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}; output so far:\n{text}");
        }
    }
}

impl Extension {
    /// Start the real `offpath-lambda` binary against `rt` with exactly [`extension_env`] (plus PATH).
    pub fn start(rt: &FakeRuntime, extra: &[(&str, &str)]) -> Self {
        Self::start_binary(
            &crate::support::binary("offpath-lambda"),
            extension_env(rt, extra),
        )
    }

    /// [`Extension::start`], then wait until it listens for DogStatsD and has asked for its first event
    /// (registered, subscribed, ready for an INVOKE); returns it with its DogStatsD UDP address.
    pub async fn start_ready(rt: &FakeRuntime, extra: &[(&str, &str)]) -> (Self, SocketAddr) {
        let ext = Self::start(rt, extra);
        let udp = ext.udp_addr().await;
        rt.wait_next_event(1).await;
        (ext, udp)
    }

    /// Start `binary` (an `offpath-lambda` build) with exactly `env` (plus PATH).
    pub fn start_binary(binary: &std::path::Path, env: HashMap<String, String>) -> Self {
        Self::start_with_args(binary, &[], env)
    }

    /// Start `binary` with `args` and exactly `env` (plus PATH).
    pub fn start_with_args(
        binary: &std::path::Path,
        args: &[&str],
        env: HashMap<String, String>,
    ) -> Self {
        let mut child = tokio::process::Command::new(binary)
            .args(args)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH"))
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout_changed = watch::Sender::new(0);
        let stderr_changed = watch::Sender::new(0);
        let readers = vec![
            capture(
                child.stdout.take().unwrap(),
                Arc::clone(&stdout),
                stdout_changed.clone(),
            ),
            capture(
                child.stderr.take().unwrap(),
                Arc::clone(&stderr),
                stderr_changed.clone(),
            ),
        ];
        Self {
            child,
            stdout,
            stderr,
            stdout_changed,
            stderr_changed,
            readers,
        }
    }

    /// Wait until stdout satisfies `pred`; returns it. Fails the test after [`WAIT`].
    pub async fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_output(what, &self.stdout, &self.stdout_changed, pred).await
    }

    /// Wait until stderr (the logs) satisfies `pred`; returns it. Fails the test after [`WAIT`].
    pub async fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_output(what, &self.stderr, &self.stderr_changed, pred).await
    }

    /// The DogStatsD UDP address the extension logged when its listener came up.
    pub async fn udp_addr(&self) -> SocketAddr {
        let logs = self
            .wait_stderr("the UDP listener", |l| {
                l.contains("listening for DogStatsD on UDP")
            })
            .await;
        logs.lines()
            .find(|l| l.contains("listening for DogStatsD on UDP"))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr= in the listener log line:\n{logs}"))
    }

    /// The address of the Datadog libraries' endpoints, from the extension's debug log line.
    pub async fn api_addr(&self) -> SocketAddr {
        const LINE: &str = "listening for the Datadog libraries";
        let logs = self
            .wait_stderr("the libraries' endpoints", |l| l.contains(LINE))
            .await;
        logs.lines()
            .find(|l| l.contains(LINE))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr= in the endpoints' log line:\n{logs}"))
    }

    /// Wait for the process to exit (failing the test after [`WAIT`]); its output is then complete.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let status = match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("offpath-lambda did not exit; stderr:\n{}", self.stderr()),
        };
        for r in self.readers.drain(..) {
            let _ = r.await;
        }
        status
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Everything written to stderr so far (the logs).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

/// Send each of `lines` as one UDP datagram to `to` (a statsd client in the "handler").
pub fn send_lines(to: SocketAddr, lines: &[&str]) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for line in lines {
        sock.send_to(line.as_bytes(), to).unwrap();
    }
}

/// Post `platform.report` for `request_id`: `duration_ms` in all, `billed_ms`, `memory_mb` of which
/// `max_used_mb` were used.
pub async fn report(
    rt: &FakeRuntime,
    request_id: &str,
    duration_ms: f64,
    billed_ms: u64,
    memory_mb: u64,
    max_used_mb: u64,
) -> Option<u16> {
    rt.post_telemetry(&json!([{
        "time": "2024-01-01T00:00:00.100Z",
        "type": "platform.report",
        "record": {
            "requestId": request_id,
            "status": "success",
            "metrics": {
                "durationMs": duration_ms,
                "billedDurationMs": billed_ms,
                "memorySizeMB": memory_mb,
                "maxMemoryUsedMB": max_used_mb,
            },
        },
    }]))
    .await
}

/// One invocation whose handler sends `lines` to `udp`; returns when the extension has made its `n`-th
/// `event/next` call (it is done with this invocation).
pub async fn invocation(rt: &FakeRuntime, udp: SocketAddr, id: &str, lines: &[&str], n: usize) {
    rt.invoke(id, Duration::from_secs(30)).await;
    rt.wait_for("the INVOKE to be delivered", |c| {
        c.iter()
            .any(|c| c.kind == CallKind::EventDelivered(format!("INVOKE {id}")))
    })
    .await;
    send_lines(udp, lines);
    rt.finish(id).await;
    rt.wait_next_event(n).await;
}
