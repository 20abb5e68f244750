//! The one Secrets Manager call offpath makes: `GetSecretValue` for the secret of `DD_API_KEY_SECRET_ARN`.
//!
//! The request is JSON 1.1 (`X-Amz-Target: secretsmanager.GetSecretValue`, body `{"SecretId":"<arn>"}`),
//! signed with [`aws_sigv4`] for the region in the ARN; the endpoint is
//! `https://secretsmanager.<region>.amazonaws.com` (`.amazonaws.com.cn` in China), or
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER`, else `AWS_ENDPOINT_URL` (VPC endpoints, tests). Like Datadog's
//! Lambda extension, the secret's `SecretString` is the key itself (surrounding whitespace trimmed); a
//! JSON object or a binary secret is refused with a message saying so. Error answers are classified by
//! their AWS error code into what to fix: the ARN, the permission, the credentials, the network. See
//! `docs/protocols.md`, "Secrets Manager".

mod wire;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::ApiKey;
use super::aws::{CredentialsError, non_empty};
use super::credentials::{CredentialsFailure, CredentialsProvider};
use wire::{get_secret_value_request, parse_response};

/// The configuration key this module serves, for messages.
pub(super) const KEY: &str = "DD_API_KEY_SECRET_ARN";
/// The signing name of the service.
const SERVICE: &str = "secretsmanager";
/// Per-request timeout of a `GetSecretValue` call.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an answer read (a secret is at most 64 KiB).
const RESPONSE_READ_MAX: usize = 128 * 1024;

/// Why the API key could not be read from Secrets Manager. Every message names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The ARN is not a Secrets Manager secret ARN.
    #[error(
        "{KEY} must be a Secrets Manager secret ARN such as \
         arn:aws:secretsmanager:us-east-1:123456789012:secret:datadog-api-key-AbCdEf, got {0:?}"
    )]
    Arn(String),
    /// No AWS credentials were found.
    #[error(
        "{KEY} is set but no AWS credentials were found (looked at {looked}): give offpath \
         credentials (an IAM role), or set DD_API_KEY instead"
    )]
    NoCredentials {
        /// Where offpath looked.
        looked: &'static str,
    },
    /// The AWS credentials could not be obtained.
    #[error("cannot get AWS credentials to read the secret named by {KEY}")]
    Credentials(#[from] CredentialsError),
    /// The endpoint override is not a URL.
    #[error(
        "invalid Secrets Manager endpoint {0:?}: check AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL"
    )]
    Endpoint(String),
    /// The request could not be signed.
    #[error("cannot sign the GetSecretValue request: {0}")]
    Signing(String),
    /// Secrets Manager could not be reached.
    #[error(
        "cannot reach Secrets Manager at {endpoint} for {KEY}: {reason} (network access to the \
         Secrets Manager endpoint, or a VPC endpoint through AWS_ENDPOINT_URL_SECRETS_MANAGER)"
    )]
    Transport {
        /// The endpoint called.
        endpoint: String,
        /// The transport error chain.
        reason: String,
    },
    /// The secret does not exist (or is not visible in that region and account).
    #[error(
        "the secret {arn} does not exist: check {KEY} (secret name, region, account): {message}"
    )]
    NotFound {
        /// The ARN asked for.
        arn: String,
        /// Secrets Manager's message.
        message: String,
    },
    /// The credentials are not allowed to read the secret (or to decrypt it).
    #[error(
        "access to the secret {arn} was denied ({code}): the role needs secretsmanager:GetSecretValue \
         on this secret (and kms:Decrypt on its key when it uses a customer managed KMS key): {message}"
    )]
    AccessDenied {
        /// The ARN asked for.
        arn: String,
        /// The AWS error code.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// The credentials themselves were refused.
    #[error(
        "Secrets Manager refused the AWS credentials ({code}): check AWS_ACCESS_KEY_ID, \
         AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or the role that provides them: {message}"
    )]
    BadCredentials {
        /// The AWS error code.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// Any other error answer (throttling, internal errors, ...).
    #[error("Secrets Manager answered HTTP {status} {code} for {KEY}: {message}")]
    Service {
        /// The HTTP status.
        status: u16,
        /// The AWS error code (empty when the answer had none).
        code: String,
        /// AWS's message or the start of the answer.
        message: String,
    },
    /// The secret holds no usable key.
    #[error(
        "the secret {arn} named by {KEY} {problem}: store the bare Datadog API key as the secret's \
         plain-text value (SecretString), as Datadog's Lambda extension expects"
    )]
    BadValue {
        /// The ARN asked for.
        arn: String,
        /// What is wrong with the value.
        problem: &'static str,
    },
}

impl SecretError {
    /// What failed, in a word or two, for reports: `ARN`, `permission`, `credentials`, `network`,
    /// `secret value` or `Secrets Manager`.
    pub fn what_failed(&self) -> &'static str {
        match self {
            Self::Arn(_) | Self::NotFound { .. } => "ARN",
            Self::AccessDenied { .. } => "permission",
            Self::NoCredentials { .. } | Self::Credentials(_) | Self::BadCredentials { .. } => {
                "credentials"
            }
            Self::Endpoint(_) | Self::Transport { .. } => "network",
            Self::BadValue { .. } => "secret value",
            Self::Signing(_) | Self::Service { .. } => "Secrets Manager",
        }
    }
}

/// A parsed Secrets Manager secret ARN: `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArn {
    arn: String,
    region_at: std::ops::Range<usize>,
}

impl SecretArn {
    /// Parse and check an ARN.
    ///
    /// # Errors
    /// [`SecretError::Arn`] when it is not a Secrets Manager secret ARN with a region.
    pub fn parse(arn: &str) -> Result<Self, SecretError> {
        let arn = arn.trim();
        let bad = || SecretError::Arn(arn.to_owned());
        let parts: Vec<&str> = arn.splitn(7, ':').collect();
        let [scheme, partition, service, region, account, kind, name] = parts[..] else {
            return Err(bad());
        };
        let region_ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if scheme != "arn"
            || partition.is_empty()
            || service != SERVICE
            || !region_ok
            || account.is_empty()
            || kind != "secret"
            || name.is_empty()
        {
            return Err(bad());
        }
        let start = scheme.len() + partition.len() + service.len() + 3;
        Ok(Self {
            arn: arn.to_owned(),
            region_at: start..start + region.len(),
        })
    }

    /// The ARN as given.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The secret's region (the request is signed for and sent to it).
    pub fn region(&self) -> &str {
        &self.arn[self.region_at.clone()]
    }

    /// The regional endpoint: `https://secretsmanager.<region>.amazonaws.com` (`.amazonaws.com.cn` in
    /// China regions).
    pub fn default_endpoint(&self) -> String {
        let region = self.region();
        let domain = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("https://{SERVICE}.{region}.{domain}")
    }
}

/// The endpoint for `arn`: `AWS_ENDPOINT_URL_SECRETS_MANAGER`, else `AWS_ENDPOINT_URL`, else the
/// regional endpoint. Without a trailing slash.
pub fn endpoint(arn: &SecretArn, env: &dyn Fn(&str) -> Option<String>) -> String {
    non_empty(env("AWS_ENDPOINT_URL_SECRETS_MANAGER"))
        .or_else(|| non_empty(env("AWS_ENDPOINT_URL")))
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| arn.default_endpoint())
}

/// One `GetSecretValue` call, with credentials from `provider` (dropped when Secrets Manager refuses
/// them, so that the next call fetches new ones).
pub(super) async fn fetch(
    client: reqwest::Client,
    arn: Arc<SecretArn>,
    provider: Arc<CredentialsProvider>,
    endpoint: Arc<str>,
) -> Result<ApiKey, SecretError> {
    let credentials = provider.credentials().await.map_err(|e| match e {
        CredentialsFailure::NotFound(looked) => SecretError::NoCredentials { looked },
        CredentialsFailure::Failed(e) => SecretError::Credentials(e),
    })?;
    let req = get_secret_value_request(&arn, &credentials, &endpoint, SystemTime::now())?;
    let mut builder = client.post(&req.url).body(req.body);
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let resp = builder.send().await.map_err(|e| SecretError::Transport {
        endpoint: endpoint.to_string(),
        reason: crate::errors::chain(&e),
    })?;
    let status = resp.status().as_u16();
    let body = crate::http::read_body(resp, RESPONSE_READ_MAX)
        .await
        .unwrap_or_default();
    let result = parse_response(status, &body, &arn);
    if matches!(result, Err(SecretError::BadCredentials { .. })) {
        provider.invalidate().await;
    }
    result
}

#[cfg(test)]
mod tests;
