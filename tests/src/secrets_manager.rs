//! Secrets Manager, IAM and STS on the moto server, for the `DD_API_KEY_SECRET_ARN` tests: create and
//! update secrets, make a role and assume it (temporary credentials with a session token, as Lambda
//! gives), then turn on moto's IAM enforcement so that offpath's requests must carry a valid SigV4
//! signature and the permission to read the secret.
//!
//! [`ContainerCredentials`] serves such credentials the way the ECS / Lambda SnapStart container
//! credentials endpoint does.
//!
//! Set-up calls go over moto's HTTP API with a placeholder `Authorization` header: moto routes on the
//! credential scope (service, region) and checks nothing until [`enforce_iam`].

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::cloudwatch::Moto;

/// The region every call uses.
pub const REGION: &str = "us-east-1";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// Temporary credentials from STS `AssumeRole`.
#[derive(Debug, Clone)]
pub struct TempCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: String,
}

impl TempCredentials {
    /// The three `AWS_*` variables.
    pub fn env(&self) -> [(&'static str, &str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.as_str()),
            ("AWS_SESSION_TOKEN", self.session_token.as_str()),
        ]
    }
}

fn placeholder_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20240101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One Secrets Manager call (JSON 1.1); returns (status, JSON answer).
pub async fn secretsmanager(endpoint: &str, operation: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/", endpoint.trim_end_matches('/')))
        .header("authorization", placeholder_auth("secretsmanager"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("secretsmanager.{operation}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("secretsmanager {operation}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// One IAM or STS call (query protocol); returns the XML answer, failing the test unless it is 200.
async fn query(endpoint: &str, service: &str, params: &[(&str, &str)]) -> String {
    let resp = client()
        .post(format!("{}/", endpoint.trim_end_matches('/')))
        .header("authorization", placeholder_auth(service))
        .form(params)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{service} {params:?}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{service} {params:?}: {text}");
    text
}

fn xml_tag(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split_once(open.as_str())
        .and_then(|(_, rest)| rest.split_once(close.as_str()))
        .map(|(v, _)| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
}

/// Create a secret whose `SecretString` is `value`; returns its ARN.
pub async fn create_secret(moto: &Moto, name: &str, value: &str) -> String {
    let (status, v) = secretsmanager(
        &moto.endpoint,
        "CreateSecret",
        json!({ "Name": name, "SecretString": value }),
    )
    .await;
    assert_eq!(status, 200, "CreateSecret: {v}");
    v["ARN"].as_str().unwrap().to_owned()
}

/// Store a new `SecretString` for the secret (it becomes `AWSCURRENT`).
pub async fn put_secret_value(moto: &Moto, arn: &str, value: &str) {
    let (status, v) = secretsmanager(
        &moto.endpoint,
        "PutSecretValue",
        json!({ "SecretId": arn, "SecretString": value }),
    )
    .await;
    assert_eq!(status, 200, "PutSecretValue: {v}");
}

/// Create role `name` allowed `actions` on every resource, assume it, and return its temporary
/// credentials.
pub async fn role_credentials(moto: &Moto, name: &str, actions: &[&str]) -> TempCredentials {
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "lambda.amazonaws.com" },
            "Action": "sts:AssumeRole",
        }],
    })
    .to_string();
    query(
        &moto.endpoint,
        "iam",
        &[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", &trust),
        ],
    )
    .await;
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": "*" }],
    })
    .to_string();
    query(
        &moto.endpoint,
        "iam",
        &[
            ("Action", "PutRolePolicy"),
            ("Version", "2010-05-08"),
            ("RoleName", name),
            ("PolicyName", "offpath-test"),
            ("PolicyDocument", &policy),
        ],
    )
    .await;
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/{name}");
    let xml = query(
        &moto.endpoint,
        "sts",
        &[
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", &role_arn),
            ("RoleSessionName", "offpath-test"),
        ],
    )
    .await;
    TempCredentials {
        access_key_id: xml_tag(&xml, "AccessKeyId"),
        secret_access_key: xml_tag(&xml, "SecretAccessKey"),
        session_token: xml_tag(&xml, "SessionToken"),
    }
}

/// From now on moto checks every request's SigV4 signature and IAM permissions (`/moto-api/reset-auth`).
pub async fn enforce_iam(moto: &Moto) {
    let resp = client()
        .post(format!("{}/moto-api/reset-auth", moto.endpoint))
        .body("0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "reset-auth");
}

/// A container credentials endpoint on port 0, as ECS (task role), EKS Pod Identity and Lambda
/// SnapStart provide: `GET` with `Authorization: <token>` answers the credentials as JSON
/// (`AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration` one hour ahead); another token gets a 401.
#[derive(Debug)]
pub struct ContainerCredentials {
    /// The value for `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub url: String,
    calls: Arc<Mutex<Vec<Option<String>>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ContainerCredentials {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `unix` seconds as an RFC 3339 UTC time (`2024-05-30T09:10:11Z`).
fn rfc3339(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl ContainerCredentials {
    /// Serve `creds` to requests that carry `token`.
    pub async fn start(creds: &TempCredentials, token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/2021-04-23/credentials",
            listener.local_addr().unwrap()
        );
        let calls: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let seen = Arc::clone(&calls);
        let creds = creds.clone();
        let token = token.to_owned();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, creds, token) = (Arc::clone(&seen), creds.clone(), token.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        seen.lock().unwrap().push(auth.clone());
                        let (status, body) = if auth.as_deref() == Some(token.as_str()) {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_secs() as i64;
                            let body = json!({
                                "AccessKeyId": creds.access_key_id,
                                "SecretAccessKey": creds.secret_access_key,
                                "Token": creds.session_token,
                                "Expiration": rfc3339(now + 3600),
                            });
                            (200, body.to_string())
                        } else {
                            let body = json!({"code": "AccessDenied", "message": "bad token"});
                            (401, body.to_string())
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, calls, server }
    }

    /// The `Authorization` header of every request so far, in order.
    pub fn calls(&self) -> Vec<Option<String>> {
        self.calls.lock().unwrap().clone()
    }
}
