//! AWS credentials as offpath signs with them, and why none could be had: shared by the providers
//! (`credentials.rs`, `container.rs`) and the Secrets Manager call that uses them.

use std::time::{Duration, SystemTime};

/// Credentials that expire within this are fetched again before use.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// AWS credentials; `Debug` shows the access key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN` (temporary credentials, as in Lambda).
    pub session_token: Option<String>,
    /// When temporary credentials stop working; `None` for long-lived ones.
    pub expiration: Option<SystemTime>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("session_token", &self.session_token.is_some())
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

pub(super) fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl AwsCredentials {
    /// The credentials named by `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`
    /// as `env` looks them up; `None` when the key id or the secret key is missing.
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        Some(Self {
            access_key_id: non_empty(env("AWS_ACCESS_KEY_ID"))?,
            secret_access_key: non_empty(env("AWS_SECRET_ACCESS_KEY"))?,
            session_token: non_empty(env("AWS_SESSION_TOKEN")),
            expiration: None,
        })
    }

    /// True when the credentials must be fetched again before signing at `now`: they expire within
    /// [`REFRESH_BEFORE_EXPIRY`] (or already did).
    pub fn expires_soon(&self, now: SystemTime) -> bool {
        self.expiration
            .is_some_and(|e| e <= now + REFRESH_BEFORE_EXPIRY)
    }
}

/// Why no credentials could be had. Every message names the setting to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` is not allowed.
    #[error(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI={0:?} is not usable: it must be an https URL, or an http \
         URL to a loopback address, the ECS address 169.254.170.2 or the EKS Pod Identity address \
         169.254.170.23 / [fd00:ec2::23]"
    )]
    ContainerUri(String),
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` cannot be read, or a token cannot be sent.
    #[error("cannot use the container authorization token {origin}: {reason}")]
    ContainerToken {
        /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=<path>` or `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
        origin: String,
        /// What went wrong.
        reason: String,
    },
    /// The container credentials endpoint could not be reached.
    #[error(
        "cannot reach the container credentials endpoint {url}: {reason} (check \
         AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / AWS_CONTAINER_CREDENTIALS_FULL_URI and the task role)"
    )]
    ContainerTransport {
        /// The URL called.
        url: String,
        /// The transport error chain.
        reason: String,
    },
    /// The container credentials endpoint answered with an error.
    #[error(
        "the container credentials endpoint {url} answered HTTP {status} {code}: {message} (check \
         AWS_CONTAINER_AUTHORIZATION_TOKEN / AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE and the task role)"
    )]
    ContainerRefused {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error code in the answer (empty when it had none).
        code: String,
        /// The message in the answer, or its start.
        message: String,
    },
    /// The container credentials endpoint answered something that holds no credentials.
    #[error(
        "the container credentials endpoint {url} answered without usable credentials: {problem}"
    )]
    ContainerAnswer {
        /// The URL called.
        url: String,
        /// What is wrong with the answer.
        problem: String,
    },
    /// aws-config's default chain failed (a profile, SSO, web identity, the instance profile, ...).
    #[error("the AWS default credentials chain failed: {0}")]
    Chain(String),
}
