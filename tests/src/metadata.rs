//! Fake cloud metadata services on 127.0.0.1 port 0: the EC2 instance metadata service (IMDSv2) for
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`, and the ECS task metadata endpoint v4 for
//! `ECS_CONTAINER_METADATA_URI_V4`. Each records the requests it saw and answers through a handler,
//! which may also never answer (a hanging server).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request: method, path, headers (lower-case names).
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `PUT`, …
    pub method: String,
    /// The path.
    pub path: String,
    /// Header values by lower-case name.
    pub headers: HashMap<String, String>,
}

/// The answer to the `n`-th request (from 0): `Some((status, body))`, or `None` to never answer.
pub type Handler = Arc<dyn Fn(&Seen, usize) -> Option<(u16, String)> + Send + Sync>;

/// A fake metadata server.
pub struct MetadataServer {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for MetadataServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The token every fake IMDS hands out.
pub const IMDS_TOKEN: &str = "AQAEAFakeImdsToken==";

impl MetadataServer {
    /// Serve `handler` on 127.0.0.1 port 0.
    pub async fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let count = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, count, handler) =
                    (Arc::clone(&log), Arc::clone(&count), Arc::clone(&handler));
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let s = Seen {
                            method: req.method().to_string(),
                            path: req.uri().path().to_owned(),
                            headers: req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect(),
                        };
                        log.lock().unwrap().push(s.clone());
                        let answer = handler(&s, count.fetch_add(1, SeqCst));
                        async move {
                            let Some((status, body)) = answer else {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())));
                            };
                            let mut r = Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok(r)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// An IMDSv2 that answers `instance_id` to a token-bearing `GET /latest/meta-data/instance-id`.
    pub async fn imds(instance_id: &'static str) -> Self {
        Self::start(Arc::new(move |s: &Seen, _| {
            match (s.method.as_str(), s.path.as_str()) {
                ("PUT", "/latest/api/token")
                    if s.headers
                        .contains_key("x-aws-ec2-metadata-token-ttl-seconds") =>
                {
                    Some((200, IMDS_TOKEN.into()))
                }
                ("GET", "/latest/meta-data/instance-id")
                    if s.headers
                        .get("x-aws-ec2-metadata-token")
                        .map(String::as_str)
                        == Some(IMDS_TOKEN) =>
                {
                    Some((200, instance_id.into()))
                }
                ("GET", _) => Some((401, String::new())),
                _ => Some((404, String::new())),
            }
        }))
        .await
    }

    /// A metadata server that accepts connections and never answers.
    pub async fn hanging() -> Self {
        Self::start(Arc::new(|_: &Seen, _| None)).await
    }

    /// An ECS task metadata endpoint answering `task` (JSON) to `GET <base>/task`.
    pub async fn ecs(task: String) -> Self {
        Self::start(Arc::new(move |s: &Seen, _| {
            s.path
                .ends_with("/task")
                .then(|| (200, task.clone()))
                .or(Some((404, String::new())))
        }))
        .await
    }

    /// The base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A task metadata v4 `/task` answer.
pub fn ecs_task(launch_type: &str, service: Option<&str>) -> String {
    let service = service.map_or(String::new(), |s| format!(r#""ServiceName": "{s}","#));
    format!(
        r#"{{
            "Cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
            "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/prod/5b8f0c6e2b1a4c3d9e7f",
            "Family": "checkout",
            "Revision": "42",
            {service}
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "AvailabilityZone": "eu-west-1b",
            "LaunchType": "{launch_type}",
            "Containers": []
        }}"#
    )
}
