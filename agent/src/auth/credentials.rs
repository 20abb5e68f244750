//! The AWS credentials that sign the `GetSecretValue` call, and where they come from.
//!
//! ```text
//!  sidecar, `cloudwatch` feature ─> aws-config default chain (shared SdkConfig): environment, profiles,
//!                                   SSO, credential_process, web identity, ECS/EKS container endpoint,
//!                                   EC2 instance profile (IMDSv2)
//!  Lambda, or no `cloudwatch`     ─> AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else
//!                                   the container credentials endpoint (SnapStart, ECS, EKS Pod Identity)
//! ```
//!
//! Whatever the source, [`CredentialsProvider`] keeps the last credentials and asks its source again only
//! when they expire within [`REFRESH_BEFORE_EXPIRY`](super::aws::REFRESH_BEFORE_EXPIRY) or after Secrets Manager refused them
//! ([`CredentialsProvider::invalidate`]). Credentials are only needed when the secret is read (at the
//! first flush, after a 403 from the intake), so there is no background refresh. The container
//! credentials endpoint is in [`super::container`].
//!
//! The hand-written environment and container providers exist for the Lambda layer, which is built
//! without the AWS SDK (its size); the sidecar uses aws-config's chain for everything.

use std::sync::OnceLock;
use std::time::SystemTime;

use tokio::sync::Mutex;

use super::aws::{AwsCredentials, CredentialsError};
use super::container::{self, ContainerEndpoint};

/// Where the environment-and-container provider looks, for the "no credentials" message.
pub const ENV_AND_CONTAINER_SOURCES: &str = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, then the \
     container credentials endpoint AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / \
     AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// Where aws-config's default chain looks, for the "no credentials" message.
#[cfg(any(feature = "cloudwatch", test))]
pub const DEFAULT_CHAIN_SOURCES: &str = "the AWS default chain: AWS_ACCESS_KEY_ID / \
     AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the ~/.aws files (SSO, credential_process, role_arn), web \
     identity (AWS_WEB_IDENTITY_TOKEN_FILE), the ECS/EKS container endpoint, the EC2 instance profile";

/// Where a [`CredentialsProvider`] gets credentials.
enum Source {
    /// Nowhere: every request fails with "no credentials".
    None,
    /// The environment configured something unusable (reported at use, not at start).
    Invalid(CredentialsError),
    /// Fixed credentials (the `AWS_*` environment variables).
    Fixed(AwsCredentials),
    /// The container credentials endpoint, with its own client (no proxy) built at first use.
    Container {
        endpoint: ContainerEndpoint,
        client: OnceLock<reqwest::Client>,
    },
    /// aws-config's default chain.
    #[cfg(feature = "cloudwatch")]
    Chain(aws_credential_types::provider::SharedCredentialsProvider),
}

/// AWS credentials for the secret's requests, kept until they are about to expire. See the module
/// documentation.
pub struct CredentialsProvider {
    source: Source,
    /// The credentials fetched last (for sources that fetch).
    cached: Mutex<Option<AwsCredentials>>,
}

impl std::fmt::Debug for CredentialsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsProvider")
            .field("source", &self.source_name())
            .finish_non_exhaustive()
    }
}

/// Why [`CredentialsProvider::credentials`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsFailure {
    /// No source had credentials; the text says where it looked.
    NotFound(&'static str),
    /// A source failed.
    Failed(CredentialsError),
}

impl CredentialsProvider {
    fn new(source: Source) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
        }
    }

    /// Credentials from the environment as `env` looks it up: `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else the container credentials endpoint (see
    /// [`ContainerEndpoint::from_lookup`]). What the Lambda extension uses.
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Self {
        if let Some(c) = AwsCredentials::from_lookup(env) {
            return Self::new(Source::Fixed(c));
        }
        Self::new(match ContainerEndpoint::from_lookup(env) {
            Ok(Some(endpoint)) => Source::Container {
                endpoint,
                client: OnceLock::new(),
            },
            Ok(None) => Source::None,
            Err(e) => Source::Invalid(e),
        })
    }

    /// Always these credentials.
    pub fn fixed(credentials: AwsCredentials) -> Self {
        Self::new(Source::Fixed(credentials))
    }

    /// aws-config's default chain from `aws` (the configuration the CloudWatch Logs sink uses too).
    #[cfg(feature = "cloudwatch")]
    pub fn from_sdk_config(aws: &aws_config::SdkConfig) -> Self {
        Self::new(match aws.credentials_provider() {
            Some(chain) => Source::Chain(chain),
            None => Source::None,
        })
    }

    /// Where the credentials come from, for messages.
    pub fn source_name(&self) -> &'static str {
        match &self.source {
            Source::None => "none found",
            Source::Invalid(_) => "invalid container credentials settings",
            Source::Fixed(_) => "environment",
            Source::Container { .. } => "container credentials endpoint",
            #[cfg(feature = "cloudwatch")]
            Source::Chain(_) => "AWS default chain",
        }
    }

    /// Where this provider looks, for the "no credentials" message.
    fn looked(&self) -> &'static str {
        match &self.source {
            #[cfg(feature = "cloudwatch")]
            Source::Chain(_) => DEFAULT_CHAIN_SOURCES,
            _ => ENV_AND_CONTAINER_SOURCES,
        }
    }

    /// Credentials to sign with now: the kept ones unless they expire within
    /// [`REFRESH_BEFORE_EXPIRY`](super::aws::REFRESH_BEFORE_EXPIRY), else fresh ones from the source.
    ///
    /// # Errors
    /// [`CredentialsFailure::NotFound`] when no source has credentials, [`CredentialsFailure::Failed`]
    /// when the source failed.
    pub async fn credentials(&self) -> Result<AwsCredentials, CredentialsFailure> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached
            .as_ref()
            .filter(|c| !c.expires_soon(SystemTime::now()))
        {
            return Ok(c.clone());
        }
        let fresh = match &self.source {
            Source::None => return Err(CredentialsFailure::NotFound(self.looked())),
            Source::Invalid(e) => return Err(CredentialsFailure::Failed(e.clone())),
            Source::Fixed(c) => return Ok(c.clone()),
            Source::Container { endpoint, client } => {
                let client = match client.get() {
                    Some(c) => c,
                    None => {
                        let built = reqwest::Client::builder()
                            .no_proxy()
                            .connect_timeout(container::CONNECT_TIMEOUT)
                            .timeout(container::TIMEOUT)
                            .pool_max_idle_per_host(0)
                            .user_agent(crate::http::USER_AGENT)
                            .build()
                            .map_err(|e| {
                                CredentialsFailure::Failed(CredentialsError::ContainerTransport {
                                    url: endpoint.url().to_owned(),
                                    reason: crate::errors::chain(&e),
                                })
                            })?;
                        client.get_or_init(|| built)
                    }
                };
                endpoint
                    .fetch(client)
                    .await
                    .map_err(CredentialsFailure::Failed)?
            }
            #[cfg(feature = "cloudwatch")]
            Source::Chain(chain) => {
                use aws_credential_types::provider::ProvideCredentials as _;
                use aws_credential_types::provider::error::CredentialsError as Sdk;
                match chain.provide_credentials().await {
                    Ok(c) => AwsCredentials {
                        access_key_id: c.access_key_id().to_owned(),
                        secret_access_key: c.secret_access_key().to_owned(),
                        session_token: c.session_token().map(str::to_owned),
                        expiration: c.expiry(),
                    },
                    Err(Sdk::CredentialsNotLoaded(_)) => {
                        return Err(CredentialsFailure::NotFound(DEFAULT_CHAIN_SOURCES));
                    }
                    Err(e) => {
                        return Err(CredentialsFailure::Failed(CredentialsError::Chain(
                            crate::errors::chain(&e),
                        )));
                    }
                }
            }
        };
        tracing::debug!(
            source = self.source_name(),
            expiration = ?fresh.expiration,
            "AWS credentials fetched"
        );
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forget the kept credentials (the service refused them: they may have expired early or been
    /// revoked); the next [`CredentialsProvider::credentials`] asks the source again.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::aws::REFRESH_BEFORE_EXPIRY;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn environment_credentials_win_and_nothing_configured_is_not_found() {
        let p = CredentialsProvider::from_lookup(&env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/x"),
        ]));
        assert_eq!(p.source_name(), "environment");
        let p = CredentialsProvider::from_lookup(&env_of(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://127.0.0.1:9/x",
        )]));
        assert_eq!(p.source_name(), "container credentials endpoint");
        let p = CredentialsProvider::from_lookup(&env_of(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://10.1.1.1/x",
        )]));
        assert_eq!(p.source_name(), "invalid container credentials settings");
    }

    #[tokio::test]
    async fn without_any_source_the_failure_lists_where_it_looked() {
        let p = CredentialsProvider::from_lookup(&env_of(&[]));
        assert_eq!(
            p.credentials().await,
            Err(CredentialsFailure::NotFound(ENV_AND_CONTAINER_SOURCES))
        );
        let p = CredentialsProvider::from_lookup(&env_of(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://10.1.1.1/x",
        )]));
        assert!(matches!(
            p.credentials().await,
            Err(CredentialsFailure::Failed(CredentialsError::ContainerUri(
                _
            )))
        ));
    }

    #[test]
    fn credentials_are_refreshed_only_when_they_expire_soon() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let with = |expiration| AwsCredentials {
            access_key_id: "A".into(),
            secret_access_key: "S".into(),
            session_token: None,
            expiration,
        };
        assert!(!with(None).expires_soon(now));
        assert!(!with(Some(now + Duration::from_secs(3600))).expires_soon(now));
        assert!(with(Some(now + REFRESH_BEFORE_EXPIRY)).expires_soon(now));
        assert!(with(Some(now + Duration::from_secs(60))).expires_soon(now));
        assert!(with(Some(now - Duration::from_secs(1))).expires_soon(now));
    }

    /// `t` as an RFC 3339 UTC time, without the `time` crate's formatting feature.
    fn rfc3339(t: SystemTime) -> String {
        let t = time::OffsetDateTime::from(t);
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

    /// A container credentials endpoint on port 0 that answers with credentials expiring
    /// `valid_for` from now and counts its calls; it checks the `Authorization` header.
    async fn container_endpoint(
        valid_for: Duration,
        calls: Arc<AtomicUsize>,
    ) -> std::net::SocketAddr {
        use http_body_util::{BodyExt as _, Full};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let calls = Arc::clone(&calls);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let calls = Arc::clone(&calls);
                            async move {
                                let auth = req
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_owned());
                                let _ = req.into_body().collect().await;
                                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                                let expiration = rfc3339(SystemTime::now() + valid_for);
                                let (status, body) = if auth.as_deref() == Some("Bearer t0ken") {
                                    (
                                        200,
                                        serde_json::json!({
                                            "AccessKeyId": format!("ASIA{n}"),
                                            "SecretAccessKey": "secret",
                                            "Token": "session",
                                            "Expiration": expiration,
                                        })
                                        .to_string(),
                                    )
                                } else {
                                    (
                                        401,
                                        r#"{"code":"Unauthorized","message":"bad token"}"#
                                            .to_owned(),
                                    )
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(bytes::Bytes::from(body)))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    fn container_provider(addr: std::net::SocketAddr, token: &str) -> CredentialsProvider {
        let vars: HashMap<&str, String> = [
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://{addr}/2021-04-23/credentials"),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.to_owned()),
        ]
        .into_iter()
        .collect();
        CredentialsProvider::from_lookup(&|k| vars.get(k).cloned())
    }

    #[tokio::test]
    async fn container_credentials_are_kept_until_they_expire_soon() {
        let calls = Arc::new(AtomicUsize::new(0));
        let long = container_endpoint(Duration::from_secs(3600), Arc::clone(&calls)).await;
        let p = container_provider(long, "Bearer t0ken");
        let first = p.credentials().await.unwrap();
        assert_eq!(first.access_key_id, "ASIA1");
        assert_eq!(first.session_token.as_deref(), Some("session"));
        assert_eq!(p.credentials().await.unwrap(), first);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Refused by the service: asked again.
        p.invalidate().await;
        assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIA2");

        let calls = Arc::new(AtomicUsize::new(0));
        let short = container_endpoint(Duration::from_secs(60), Arc::clone(&calls)).await;
        let p = container_provider(short, "Bearer t0ken");
        assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIA1");
        assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIA2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_token_and_an_unreadable_token_file_name_their_setting() {
        let calls = Arc::new(AtomicUsize::new(0));
        let addr = container_endpoint(Duration::from_secs(3600), calls).await;
        let Err(CredentialsFailure::Failed(e)) =
            container_provider(addr, "Bearer wrong").credentials().await
        else {
            panic!("expected a failure");
        };
        assert!(
            e.to_string().contains("HTTP 401 Unauthorized: bad token"),
            "{e}"
        );

        let vars: HashMap<&str, String> = [
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://{addr}/creds"),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "/nonexistent/offpath-token".to_owned(),
            ),
        ]
        .into_iter()
        .collect();
        let p = CredentialsProvider::from_lookup(&|k| vars.get(k).cloned());
        let Err(CredentialsFailure::Failed(e)) = p.credentials().await else {
            panic!("expected a failure");
        };
        assert!(
            e.to_string()
                .contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/nonexistent/offpath-token"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_token_file_is_read_at_every_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let addr = container_endpoint(Duration::from_secs(60), Arc::clone(&calls)).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "Bearer t0ken\n").unwrap();
        let vars: HashMap<&str, String> = [
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://{addr}/creds"),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                path.display().to_string(),
            ),
        ]
        .into_iter()
        .collect();
        let p = CredentialsProvider::from_lookup(&|k| vars.get(k).cloned());
        assert!(p.credentials().await.is_ok());
        // Rotated to a token the endpoint refuses: the next fetch (the answer expires soon) sends it.
        std::fs::write(&path, "Bearer rotated").unwrap();
        assert!(p.credentials().await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
