//! Credentials, in one leaf module: the Datadog API key and where it comes from, the AWS credentials
//! that read it from Secrets Manager, and the AWS SDK configuration the process shares.
//!
//! ```text
//!  DD_API_KEY ───────────────────────────────> ApiKeySource::Fixed ──┐
//!  DD_API_KEY_SECRET_ARN ─> ApiKeySecret ────> ApiKeySource::Secret ─┴─> owned by the Forwarder
//!                            └─ signed with a CredentialsProvider: the AWS default chain (sidecar) or
//!                               the environment, else the container endpoint (Lambda)
//! ```
//!
//! [`connect`] builds all of it, once, for whoever ships (the pipeline, `offpath replay`,
//! `offpath check`): the [`ApiKeySource`], and the AWS SDK configuration when the CloudWatch Logs
//! sink or the default credentials chain needs one. Nothing here depends on the rest of offpath.

mod aws;
mod container;
mod credentials;
mod secret;
mod secrets_manager;

use reqwest::header::HeaderValue;
use tokio::time::Instant;

pub use aws::CredentialsError;
#[cfg(feature = "cloudwatch")]
use credentials::CredentialsProvider;
pub use secret::ApiKeySecret;
pub use secrets_manager::{SecretArn, SecretError};

/// The Datadog API key; never printed (`Debug` redacts it).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the `DD-API-KEY` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key as a `DD-API-KEY` header value (marked sensitive); `None` when it holds characters a
    /// header cannot carry.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&self.0).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where the AWS credentials that read the API key secret come from; the deployment decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsCredentialSource {
    /// aws-config's default chain (environment, profiles, SSO, web identity, the ECS task role, the EC2
    /// instance profile): the sidecar, built with the `cloudwatch` feature.
    DefaultChain,
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else the container credentials
    /// endpoint: the Lambda extension (whose layer has no AWS SDK).
    EnvironmentAndContainer,
}

/// Where the forwarder's API key comes from; built once by [`connect`], owned by the forwarder (one
/// per destination).
#[derive(Debug)]
pub enum ApiKeySource {
    /// `DD_API_KEY`: known from the start, never changes.
    Fixed(ApiKey),
    /// The secret of `DD_API_KEY_SECRET_ARN`: read at the first flush, read again after a 401/403.
    Secret(Box<ApiKeySecret>),
}

impl ApiKeySource {
    /// The key known before anything is sent (`None` until a secret is read).
    pub fn initial(&self) -> Option<&ApiKey> {
        match self {
            Self::Fixed(key) => Some(key),
            Self::Secret(_) => None,
        }
    }

    /// Before a delivery: read the secret when its key is unknown (or was refused) and the backoff
    /// allows, waiting for the answer until `deadline` at most. The new key when it changed.
    pub async fn refresh(&mut self, deadline: Instant) -> Option<ApiKey> {
        match self {
            Self::Fixed(_) => None,
            Self::Secret(secret) => secret.poll(deadline).await,
        }
    }

    /// The intake refused the key (401/403): a secret is read again at the next delivery (at most every
    /// `REFRESH_MIN_INTERVAL`); a fixed key stays as it is.
    pub fn rejected(&mut self, now: Instant) {
        if let Self::Secret(secret) = self {
            secret.key_rejected(now);
        }
    }

    /// The secret, when the key comes from one.
    pub fn secret(&mut self) -> Option<&mut ApiKeySecret> {
        match self {
            Self::Fixed(_) => None,
            Self::Secret(secret) => Some(secret),
        }
    }
}

/// What [`connect`] sets up.
#[derive(Debug)]
pub struct Connected {
    /// `DD_API_KEY`, else the secret of `DD_API_KEY_SECRET_ARN`; `None` when neither is set (local mode).
    pub api_key: Option<ApiKeySource>,
    /// The AWS SDK configuration, loaded when the CloudWatch Logs sink or the default credentials chain
    /// needs it.
    #[cfg(feature = "cloudwatch")]
    pub aws: Option<aws_config::SdkConfig>,
}

/// Set up the credentials of a process that ships: the API key source, and the AWS SDK configuration
/// (loaded once, shared by the CloudWatch Logs sink and the secret's credentials chain).
///
/// `aws_needed`: something else uses AWS (the CloudWatch Logs sink, a log group to replay from); the
/// configuration is then loaded with the standard region chain. Otherwise it is loaded only for a
/// secret read with the default chain, in the secret's region (so nothing probes for a region).
/// Nothing is called over the network here: the secret is read at the first delivery.
pub async fn connect(
    api_key: Option<ApiKey>,
    secret_arn: Option<SecretArn>,
    credentials: AwsCredentialSource,
    aws_needed: bool,
) -> Connected {
    let secret = match (&api_key, secret_arn) {
        (None, Some(arn)) => Some(ApiKeySecret::new(arn, &|k| std::env::var(k).ok())),
        _ => None,
    };
    #[cfg(feature = "cloudwatch")]
    let (secret, aws) = {
        let chain = credentials == AwsCredentialSource::DefaultChain;
        let chain_region = secret
            .as_ref()
            .filter(|_| chain)
            .map(|s| s.region().to_owned());
        if aws_needed || chain_region.is_some() {
            let region = if aws_needed { None } else { chain_region };
            let aws = load_sdk_config(region.as_deref()).await;
            let secret = secret.map(|s| match credentials {
                AwsCredentialSource::DefaultChain => {
                    s.with_credentials(CredentialsProvider::from_sdk_config(&aws))
                }
                AwsCredentialSource::EnvironmentAndContainer => s,
            });
            (secret, Some(aws))
        } else {
            (secret, None)
        }
    };
    #[cfg(not(feature = "cloudwatch"))]
    let _ = (credentials, aws_needed);
    let api_key = match (api_key, secret) {
        (Some(key), _) => Some(ApiKeySource::Fixed(key)),
        (None, Some(secret)) => Some(ApiKeySource::Secret(Box::new(secret))),
        (None, None) => None,
    };
    Connected {
        api_key,
        #[cfg(feature = "cloudwatch")]
        aws,
    }
}

/// Load aws-config's configuration (credentials chain, region, endpoints). `region`: `None` for the
/// standard region chain (what the CloudWatch Logs sink needs), `Some` to use that region (the secret
/// alone: its ARN names the region, so nothing probes for one).
#[cfg(feature = "cloudwatch")]
pub async fn load_sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    match region {
        Some(r) => loader.region(aws_config::Region::new(r.to_owned())),
        None => loader,
    }
    .load()
    .await
}
