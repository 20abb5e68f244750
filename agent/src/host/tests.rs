//! The real look-ups against fake metadata servers on 127.0.0.1 port 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::*;

/// One request seen by a fake server: method, path and headers (lower-case names).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

/// How a fake answers: `Some((status, body))`, or `None` to never answer (a hanging server).
type Answer = fn(&Seen, usize) -> Option<(u16, String)>;

struct FakeServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, calls) = (Arc::clone(&log), Arc::clone(&calls));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
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
                        let n = calls.fetch_add(1, SeqCst);
                        async move {
                            match answer(&s, n) {
                                Some((status, body)) => {
                                    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                    Ok::<_, std::convert::Infallible>(r)
                                }
                                None => {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                    Ok(hyper::Response::new(Full::new(Bytes::new())))
                                }
                            }
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A well-behaved IMDSv2: a token for a PUT with a TTL, the id for a GET with that token.
fn imds_v2(s: &Seen, _: usize) -> Option<(u16, String)> {
    match (s.method.as_str(), s.path.as_str()) {
        ("PUT", "/latest/api/token")
            if s.headers
                .contains_key("x-aws-ec2-metadata-token-ttl-seconds") =>
        {
            Some((200, "AQAEAFakeToken==".into()))
        }
        ("GET", "/latest/meta-data/instance-id")
            if s.headers
                .get("x-aws-ec2-metadata-token")
                .map(String::as_str)
                == Some("AQAEAFakeToken==") =>
        {
            Some((200, "i-0123456789abcdef0".into()))
        }
        ("GET", "/latest/meta-data/instance-id") => Some((401, String::new())),
        _ => Some((404, String::new())),
    }
}

fn imds(url: &str) -> Imds {
    Imds::new(url, Duration::from_millis(300)).unwrap()
}

#[tokio::test]
async fn the_instance_id_is_read_with_an_imdsv2_token() {
    let fake = FakeServer::start(imds_v2).await;
    assert_eq!(
        imds(&fake.url()).instance_id().await.unwrap(),
        "i-0123456789abcdef0"
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("PUT", "/latest/api/token")
    );
    assert_eq!(
        seen[0]
            .headers
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .map(String::as_str),
        Some("21600")
    );
}

#[tokio::test]
async fn an_imdsv1_only_service_is_asked_without_a_token() {
    let fake = FakeServer::start(|s, _| match s.path.as_str() {
        "/latest/api/token" => Some((405, String::new())),
        "/latest/meta-data/instance-id" if !s.headers.contains_key("x-aws-ec2-metadata-token") => {
            Some((200, "i-0fedcba9876543210\n".into()))
        }
        _ => Some((400, String::new())),
    })
    .await;
    assert_eq!(
        imds(&fake.url()).instance_id().await.unwrap(),
        "i-0fedcba9876543210"
    );
}

#[tokio::test]
async fn a_hanging_turned_off_or_garbage_service_is_an_error_within_the_timeout() {
    let cases: [(Answer, &str); 5] = [
        (|_, _| None, "no answer in time"),
        (|_, _| Some((403, String::new())), "turned off"),
        (|_, _| Some((500, String::new())), "answered 500"),
        (
            |s, _| match s.method.as_str() {
                "PUT" => Some((200, "t".into())),
                _ => Some((200, "x".repeat(300))),
            },
            "longer than 255",
        ),
        (
            |s, _| match s.method.as_str() {
                "PUT" => Some((200, String::new())),
                _ => Some((200, "i-1".into())),
            },
            "not a token",
        ),
    ];
    for (answer, expected) in cases {
        let fake = FakeServer::start(answer).await;
        let started = std::time::Instant::now();
        let e = imds(&fake.url()).instance_id().await.unwrap_err();
        assert!(e.contains(expected), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // Nothing listening at all.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(imds(&format!("http://{addr}")).instance_id().await.is_err());
    assert!(Imds::new("169.254.169.254", Duration::from_millis(1)).is_err());
}

fn ecs_task(_: &Seen, _: usize) -> Option<(u16, String)> {
    Some((
        200,
        r#"{"Cluster":"arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
            "TaskARN":"arn:aws:ecs:eu-west-1:123456789012:task/prod/0abc",
            "Family":"web","Revision":"12","LaunchType":"FARGATE",
            "AvailabilityZone":"eu-west-1b","ServiceName":"Checkout"}"#
            .into(),
    ))
}

#[tokio::test]
async fn the_task_is_read_from_the_v4_endpoint() {
    let fake = FakeServer::start(ecs_task).await;
    let client = client(ecs::REQUEST_TIMEOUT).unwrap();
    let uri = format!("{}/v4/0abc-123", fake.url());
    let task = ecs::fetch_task(&client, &uri).await.unwrap();
    assert_eq!(task.family, "web");
    assert_eq!(fake.seen()[0].path, "/v4/0abc-123/task");
}

fn facts_for(imds: Option<String>, ecs: Option<String>, os: &str) -> Facts {
    Facts {
        os_hostname: Some(os.to_owned()),
        host_uts_namespace: Some(true),
        ecs_fargate: false,
        ecs_ec2: ecs.is_some(),
        ecs_metadata_uri: ecs,
        imds_endpoint: imds,
    }
}

fn host_cfg() -> HostConfig {
    HostConfig {
        hostname: HostnameConfig {
            ec2_timeout: Duration::from_millis(300),
            ec2_enabled: true,
            ..HostnameConfig::default()
        },
        tag_cardinality: TagCardinality::Low,
        cluster_name_tag: true,
        resolve: true,
    }
}

async fn until(mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn in_the_background_an_ec2_default_name_becomes_the_instance_id() {
    let fake = FakeServer::start(imds_v2).await;
    let (info, task) = HostInfo::resolve_in_background(
        &host_cfg(),
        facts_for(Some(fake.url()), None, "ip-10-1-2-3"),
    );
    // At once: the name the Agent falls back to.
    assert_eq!(info.hostname(), "ip-10-1-2-3");
    task.await.unwrap();
    assert_eq!(info.hostname(), "i-0123456789abcdef0");
    assert_eq!(info.resolved().unwrap().source, Source::Ec2);
    assert!(info.tags().is_empty());
}

#[tokio::test]
async fn a_hanging_metadata_service_never_holds_the_provisional_name_back() {
    let fake = FakeServer::start(|_, _| None).await;
    let (info, task) = HostInfo::resolve_in_background(
        &host_cfg(),
        facts_for(Some(fake.url()), None, "ip-10-1-2-3"),
    );
    assert_eq!(info.hostname(), "ip-10-1-2-3");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.resolved().unwrap(),
        &Resolved {
            name: "ip-10-1-2-3".into(),
            source: Source::Os
        }
    );
}

#[tokio::test]
async fn fargate_task_metadata_gives_task_tags_and_no_host() {
    let fake = FakeServer::start(ecs_task).await;
    let (info, task) = HostInfo::resolve_in_background(
        &host_cfg(),
        facts_for(None, Some(format!("{}/v4/x", fake.url())), "169-254-172-2"),
    );
    task.await.unwrap();
    assert_eq!(info.hostname(), "");
    assert_eq!(info.resolved().unwrap().source, Source::Fargate);
    assert!(info.tags().contains(&"ecs_service:checkout".to_owned()));
    assert!(
        info.tags()
            .contains(&"availability-zone:eu-west-1b".to_owned())
    );
}

#[tokio::test]
async fn an_ecs_endpoint_that_fails_first_is_asked_again_until_it_answers() {
    let fake = FakeServer::start(|s, n| match n {
        0 => Some((503, String::new())),
        1 => Some((200, "garbage".into())),
        _ => ecs_task(s, n),
    })
    .await;
    let (info, task) =
        HostInfo::resolve_in_background(&host_cfg(), facts_for(None, Some(fake.url()), "web-1"));
    until(|| info.resolved().is_some()).await;
    // The first answer failed: the hostname did not wait for the task tags.
    assert_eq!(info.hostname(), "web-1");
    assert!(info.tags().is_empty());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(info.tags().contains(&"task_family:web".to_owned()));
    assert_eq!(fake.seen().len(), 3);
}

#[test]
fn a_fixed_host_is_resolved_from_the_start() {
    let info = HostInfo::fixed("box");
    assert_eq!(info.hostname(), "box");
    assert_eq!(info.resolved().unwrap().source, Source::Config);
    assert_eq!(HostInfo::fixed("").resolved().unwrap().source, Source::None);
}

#[test]
fn the_system_facts_are_readable_here() {
    // Whatever this machine is, the readers do not fail in a way that panics, and a UTS inode parses.
    let _ = os_hostname();
    if std::path::Path::new("/proc/self/ns/uts").exists() {
        assert!(in_host_uts_namespace().is_some());
    }
}
