//! CloudWatch Logs for the fallback tests: a real moto server, helpers to read events back, and a
//! fault-injecting proxy that records every request (moto does not enforce PutLogEvents' limits, so
//! tests assert on what offpath sent).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::{Credentials, Region};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const INSTALL_HINT: &str = "the CloudWatch Logs emulator is missing: install it with `pip install 'moto[server]'` \
     (tests/run.sh does this)";

/// A moto server (CloudWatch Logs API emulator) on a free port; killed when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    log: Arc<Mutex<Vec<u8>>>,
}

impl Moto {
    /// Start `python3 -m moto.server` on port 0 and wait for its "Running on" line (its readiness
    /// signal: printed once the socket is bound).
    ///
    /// # Panics
    /// When moto is not installed (with the command that installs it) or does not start.
    pub fn start() -> Self {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let probe = Command::new(&python)
            .args(["-c", "import moto.server, flask, werkzeug"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            matches!(probe, Ok(s) if s.success()),
            "{INSTALL_HINT} ({python} -c 'import moto.server' failed)"
        );
        let mut child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{INSTALL_HINT}: cannot run {python}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        // werkzeug writes "Running on http://127.0.0.1:PORT" to stderr once bound, then one line per
        // request: keep draining both pipes so moto never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for pipe in [
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().expect("stdout")),
        ] {
            let tx = tx.clone();
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(at) = line.find("Running on http://") {
                        let _ = tx.send(line[at + "Running on ".len()..].trim().to_owned());
                    }
                    let mut l = log.lock().unwrap();
                    if l.len() < 1 << 20 {
                        l.extend_from_slice(line.as_bytes());
                        l.push(b'\n');
                    }
                }
            });
        }
        drop(tx);
        let endpoint = match rx.recv() {
            Ok(url) => url,
            Err(_) => {
                let _ = child.wait();
                panic!(
                    "moto.server exited before it was ready:\n{}",
                    String::from_utf8_lossy(&log.lock().unwrap())
                );
            }
        };
        Self {
            child,
            endpoint,
            log,
        }
    }

    /// What moto printed so far (its request log), for failure messages.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// AWS settings pointing at this moto (or at `endpoint`, e.g. a [`FaultProxy`] in front of it).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint).await
    }

    /// A CloudWatch Logs client for this moto.
    pub async fn client(&self) -> Client {
        Client::new(&self.sdk_config().await)
    }

    /// Every event of a log group (all streams, or one), in CloudWatch's order, as (timestamp ms,
    /// message).
    pub async fn events(&self, group: &str, stream: Option<&str>) -> Vec<(i64, String)> {
        read_events(&self.client().await, group, stream).await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// AWS settings for a local endpoint: region us-east-1, fixed test credentials, no profile lookups.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(offpath::auth::sdk_https_client())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "offpath-tests",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Every event of a group (one stream, or all of them through FilterLogEvents), following every page.
pub async fn read_events(client: &Client, group: &str, stream: Option<&str>) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    match stream {
        Some(stream) => {
            let mut token: Option<String> = None;
            loop {
                let page = client
                    .get_log_events()
                    .log_group_name(group)
                    .log_stream_name(stream)
                    .start_from_head(true)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .expect("GetLogEvents");
                let n = page.events().len();
                for e in page.events() {
                    out.push((
                        e.timestamp().unwrap_or(0),
                        e.message().unwrap_or("").to_owned(),
                    ));
                }
                let next = page.next_forward_token().map(str::to_owned);
                if n == 0 || next.is_none() || next == token {
                    break;
                }
                token = next;
            }
        }
        None => {
            let mut token: Option<String> = None;
            loop {
                let page = client
                    .filter_log_events()
                    .log_group_name(group)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .expect("FilterLogEvents");
                for e in page.events() {
                    out.push((
                        e.timestamp().unwrap_or(0),
                        e.message().unwrap_or("").to_owned(),
                    ));
                }
                token = page.next_token().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
        }
    }
    out
}

/// What the proxy answers instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `{"__type":"ThrottlingException","message":"Rate exceeded"}` (as CloudWatch throttles).
    Throttle,
    /// HTTP 503 `ServiceUnavailableException`.
    Unavailable,
    /// HTTP 503 with an empty body (a load balancer's answer).
    Bare503,
}

/// One request that went through the proxy.
#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    /// The `X-Amz-Target` operation, e.g. `Logs_20140328.PutLogEvents`.
    pub target: String,
    /// Request headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Bytes,
    /// The fault answered instead of forwarding, if any.
    pub fault: Option<Fault>,
    /// The HTTP status the caller got (the fault's, or moto's).
    pub status: u16,
}

impl ProxiedRequest {
    /// The operation name without the service prefix (`PutLogEvents`).
    pub fn operation(&self) -> &str {
        self.target.rsplit('.').next().unwrap_or("")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One PutLogEvents call as offpath sent it.
#[derive(Debug, Clone)]
pub struct PutCall {
    /// `logGroupName`.
    pub group: String,
    /// `logStreamName`.
    pub stream: String,
    /// `(timestamp ms, message)` per event, in the order sent.
    pub events: Vec<(i64, String)>,
    /// Whether the proxy answered it with a fault.
    pub fault: Option<Fault>,
    /// The `x-amzn-logs-format` header, if sent.
    pub logs_format: Option<String>,
    /// The HTTP status the caller got.
    pub status: u16,
}

impl PutCall {
    /// True when the call was answered 200 (the events are stored).
    pub fn accepted(&self) -> bool {
        self.status == 200
    }

    /// The PutLogEvents batch size: message bytes (UTF-8) plus 26 per event.
    pub fn batch_bytes(&self) -> usize {
        self.events.iter().map(|(_, m)| m.len() + 26).sum()
    }
}

#[derive(Debug, Default)]
struct ProxyState {
    faults: Vec<Fault>,
    always: Option<Fault>,
    requests: Vec<ProxiedRequest>,
}

/// An HTTP proxy in front of moto that answers the first PutLogEvents calls with faults and records
/// every request. Stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    state: Arc<Mutex<ProxyState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Start a proxy to `upstream` (moto's endpoint) on a free port; the PutLogEvents calls get the
    /// `faults` in order, one each, then pass through.
    pub async fn start(upstream: &str, faults: Vec<Fault>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState {
            faults: faults.into_iter().rev().collect(),
            always: None,
            requests: Vec::new(),
        }));
        let upstream = upstream.trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = Arc::clone(&st);
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        proxy(req, Arc::clone(&st), client.clone(), upstream.clone())
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            endpoint: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// Answer every PutLogEvents call with `fault` from now on (`None`: back to the scripted faults,
    /// then pass-through).
    pub fn fail_every_put(&self, fault: Option<Fault>) {
        self.state.lock().unwrap().always = fault;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every PutLogEvents call so far (faulted ones included, marked).
    pub fn put_calls(&self) -> Vec<PutCall> {
        self.requests()
            .iter()
            .filter(|r| r.operation() == "PutLogEvents")
            .map(|r| {
                let v = r.json();
                PutCall {
                    group: v["logGroupName"].as_str().unwrap_or("").to_owned(),
                    stream: v["logStreamName"].as_str().unwrap_or("").to_owned(),
                    events: v["logEvents"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|e| {
                                    (
                                        e["timestamp"].as_i64().unwrap_or(0),
                                        e["message"].as_str().unwrap_or("").to_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    fault: r.fault,
                    logs_format: r.header("x-amzn-logs-format").map(str::to_owned),
                    status: r.status,
                }
            })
            .collect()
    }

    /// AWS settings pointing at the proxy.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint).await
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(
    req: Request<Incoming>,
    state: Arc<Mutex<ProxyState>>,
    client: reqwest::Client,
    upstream: String,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let target = headers
        .iter()
        .find(|(k, _)| k == "x-amz-target")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let (fault, index) = {
        let mut st = state.lock().unwrap();
        let fault = if target.ends_with(".PutLogEvents") {
            st.always.or_else(|| st.faults.pop())
        } else {
            None
        };
        st.requests.push(ProxiedRequest {
            target,
            headers: headers.clone(),
            body: body.clone(),
            fault,
            status: 0,
        });
        (fault, st.requests.len() - 1)
    };
    let set_status = |status: u16| state.lock().unwrap().requests[index].status = status;
    let fault_response = |status: u16, body: &str| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-requestid", "offpath-fault-proxy")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    match fault {
        Some(Fault::Throttle) => {
            set_status(400);
            return Ok(fault_response(
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            ));
        }
        Some(Fault::Unavailable) => {
            set_status(503);
            return Ok(fault_response(
                503,
                r#"{"__type":"ServiceUnavailableException","message":"The service is unavailable"}"#,
            ));
        }
        Some(Fault::Bare503) => {
            set_status(503);
            return Ok(fault_response(503, ""));
        }
        None => {}
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let mut up = client.request(method, format!("{upstream}{path}"));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            up = up.header(k.as_str(), v.as_str());
        }
    }
    let res = match up.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            set_status(502);
            return Ok(fault_response(502, &format!("proxy: {e}")));
        }
    };
    set_status(res.status().as_u16());
    let mut out = Response::builder().status(res.status().as_u16());
    for (k, v) in res.headers() {
        let name = k.as_str();
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            out = out.header(name, v.as_bytes());
        }
    }
    let bytes = res.bytes().await.unwrap_or_default();
    Ok(out.body(Full::new(bytes)).unwrap())
}
