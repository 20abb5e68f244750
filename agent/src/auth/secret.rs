//! The Datadog API key from AWS Secrets Manager (`DD_API_KEY_SECRET_ARN`), resolved lazily.
//!
//! ```text
//!  first flush ─> Forwarder ─> ApiKeySource::refresh ─> ApiKeySecret::poll ─spawn─> GetSecretValue
//!  intake 403  ─> Forwarder ─> ApiKeySource::rejected ─> one re-resolution at the next flush
//! ```
//!
//! Used when `DD_API_KEY` is unset. Nothing happens at start-up (a Lambda extension registers first):
//! the first flush starts one `secretsmanager.GetSecretValue` call ([`super::secrets_manager`]) in its
//! own task and waits for it until the flush deadline at most; an answer that comes later is picked up
//! by the next flush. Until the key is known the forwarder keeps payloads in its bounded retry queue
//! (the oldest overflow to the fallback, counted), and at shutdown the rest goes to the fallback:
//! nothing is lost silently.
//!
//! Failures are logged with what to fix (the ARN, the IAM permission `secretsmanager:GetSecretValue`,
//! the credentials) and retried with a jittered backoff from [`RETRY_BACKOFF`]. A 401/403 from the
//! intake asks for one re-resolution (the key may have been rotated; see `docs/protocols.md`, "Intake
//! answers"): a different key replaces the old one and closes the circuit breaker. Such
//! re-resolutions are at least [`REFRESH_MIN_INTERVAL`] apart, so a key that stays refused does not
//! hammer Secrets Manager (the payloads go to the fallback meanwhile, as for any refused key).
//!
//! The call is signed with credentials from a [`CredentialsProvider`]: aws-config's default chain in the
//! sidecar (with the `cloudwatch` feature), shared with the CloudWatch Logs sink; the environment, else
//! the container credentials endpoint, in Lambda (and without the feature). Expiring credentials are
//! fetched again before use; credentials Secrets Manager refuses are dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ApiKey;
use super::credentials::CredentialsProvider;
use super::secrets_manager::{KEY, REQUEST_TIMEOUT, SecretArn, SecretError, endpoint, fetch};
use crate::backoff::Backoff;

/// Backoff between failed resolutions: 2 s doubling to 5 min, jittered.
pub const RETRY_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(2),
    max: Duration::from_secs(300),
};

/// Shortest time between two re-resolutions asked for by 401/403 answers.
pub const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(300);

enum State {
    /// No call in flight; the next one may start at `not_before`.
    Idle { not_before: Option<Instant> },
    /// A call runs in its own task (it outlives a flush deadline; the next flush picks it up).
    InFlight(JoinHandle<Result<ApiKey, SecretError>>),
}

/// The API key behind `DD_API_KEY_SECRET_ARN`: resolved at the first flush, retried with backoff,
/// re-resolved once after the intake refuses it. See the module documentation.
pub struct ApiKeySecret {
    arn: Arc<SecretArn>,
    endpoint: Arc<str>,
    credentials: Arc<CredentialsProvider>,
    client: Option<reqwest::Client>,
    state: State,
    /// Failed attempts in a row.
    failures: u32,
    /// The key handed to the forwarder last.
    key: Option<ApiKey>,
    /// A 401/403 asked for a re-resolution.
    refresh: bool,
    /// When the last re-resolution asked for by a 401/403 started.
    last_refresh: Option<Instant>,
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeySecret")
            .field("arn", &self.arn.as_str())
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials.source_name())
            .field("resolved", &self.key.is_some())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Drop for ApiKeySecret {
    fn drop(&mut self) {
        if let State::InFlight(task) = &self.state {
            task.abort();
        }
    }
}

impl ApiKeySecret {
    /// The secret named by `arn`, with the endpoint from the process environment and credentials from
    /// it too (`AWS_*` variables, else the container credentials endpoint); see
    /// [`ApiKeySecret::with_credentials`] for other sources.
    ///
    /// # Errors
    /// [`SecretError::Arn`] for an invalid ARN.
    pub fn from_env(arn: &str) -> Result<Self, SecretError> {
        Self::from_lookup(arn, &|k| std::env::var(k).ok())
    }

    /// The secret named by `arn`, with credentials and endpoint looked up through `env`.
    ///
    /// # Errors
    /// [`SecretError::Arn`] for an invalid ARN.
    pub fn from_lookup(
        arn: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SecretError> {
        Ok(Self::new(SecretArn::parse(arn)?, env))
    }

    /// The secret named by `arn`, with credentials and endpoint looked up through `env`.
    pub fn new(arn: SecretArn, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let endpoint = endpoint(&arn, env);
        Self {
            endpoint: endpoint.into(),
            arn: Arc::new(arn),
            credentials: Arc::new(CredentialsProvider::from_lookup(env)),
            client: None,
            state: State::Idle { not_before: None },
            failures: 0,
            key: None,
            refresh: false,
            last_refresh: None,
        }
    }

    /// Sign with credentials from `provider` instead (aws-config's default chain in the sidecar).
    #[must_use]
    pub fn with_credentials(mut self, provider: CredentialsProvider) -> Self {
        self.credentials = Arc::new(provider);
        self
    }

    /// Where the credentials come from, for messages.
    pub fn credentials_source(&self) -> &'static str {
        self.credentials.source_name()
    }

    /// Read the secret now, once, without backoff or hand-over (`offpath check`, `offpath replay`).
    ///
    /// # Errors
    /// A [`SecretError`] saying what to fix: the ARN, the permission, the credentials, the network.
    pub async fn resolve(&mut self) -> Result<ApiKey, SecretError> {
        let client = self.client()?;
        fetch(
            client,
            Arc::clone(&self.arn),
            Arc::clone(&self.credentials),
            Arc::clone(&self.endpoint),
        )
        .await
    }

    /// The secret's region (from its ARN).
    pub fn region(&self) -> &str {
        self.arn.region()
    }

    /// The ARN.
    pub fn arn(&self) -> &str {
        self.arn.as_str()
    }

    /// The endpoint the secret is read from.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether a key was resolved.
    pub fn is_resolved(&self) -> bool {
        self.key.is_some()
    }

    /// The intake refused the key: re-resolve it at the next flush, unless the last re-resolution asked
    /// for this way started less than [`REFRESH_MIN_INTERVAL`] ago.
    pub fn key_rejected(&mut self, now: Instant) {
        if self.key.is_none() || self.refresh {
            return;
        }
        let due = self
            .last_refresh
            .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH_MIN_INTERVAL);
        if due {
            tracing::warn!(
                arn = %self.arn.as_str(),
                "the intake refused the API key from {KEY}; reading the secret again (it may have been rotated)"
            );
            self.refresh = true;
            self.last_refresh = Some(now);
            self.failures = 0;
            if let State::Idle { not_before } = &mut self.state {
                *not_before = None;
            }
        }
    }

    /// Start a call when one is wanted and due, wait for it until `deadline`; the key when it changed.
    pub async fn poll(&mut self, deadline: Instant) -> Option<ApiKey> {
        let wanted = self.key.is_none() || self.refresh;
        if let State::Idle { not_before } = &self.state {
            if !wanted || not_before.is_some_and(|t| Instant::now() < t) {
                return None;
            }
            match self.start() {
                Ok(task) => self.state = State::InFlight(task),
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            }
        }
        let State::InFlight(task) = &mut self.state else {
            return None;
        };
        // A finished task answers at once, even past the deadline.
        let result = match tokio::time::timeout_at(deadline, task).await {
            Err(_) => {
                tracing::debug!(arn = %self.arn.as_str(), "the secret is not read yet; payloads wait in the retry queue");
                return None;
            }
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(SecretError::Signing(format!(
                "the GetSecretValue task failed: {e}"
            ))),
        };
        self.state = State::Idle { not_before: None };
        match result {
            Ok(key) => {
                self.failures = 0;
                self.refresh = false;
                if self.key.as_ref() == Some(&key) {
                    tracing::info!(arn = %self.arn.as_str(), "the secret still holds the same API key");
                    return None;
                }
                tracing::info!(arn = %self.arn.as_str(), "API key read from {KEY}");
                self.key = Some(key.clone());
                Some(key)
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// The HTTP client for Secrets Manager, built at first use.
    fn client(&mut self) -> Result<reqwest::Client, SecretError> {
        Ok(match &self.client {
            Some(c) => c.clone(),
            None => {
                // Proxies come from the standard HTTPS_PROXY / NO_PROXY variables, as for the AWS SDKs.
                // No idle connection is kept: the next call may come after a Lambda freeze.
                let c = reqwest::Client::builder()
                    .connect_timeout(REQUEST_TIMEOUT)
                    .timeout(REQUEST_TIMEOUT)
                    .pool_max_idle_per_host(0)
                    .user_agent(crate::http::USER_AGENT)
                    .build()
                    .map_err(|e| SecretError::Transport {
                        endpoint: self.endpoint.to_string(),
                        reason: crate::errors::chain(&e),
                    })?;
                self.client = Some(c.clone());
                c
            }
        })
    }

    fn start(&mut self) -> Result<JoinHandle<Result<ApiKey, SecretError>>, SecretError> {
        let client = self.client()?;
        tracing::debug!(arn = %self.arn.as_str(), endpoint = %self.endpoint, "reading the API key from Secrets Manager");
        Ok(tokio::spawn(fetch(
            client,
            Arc::clone(&self.arn),
            Arc::clone(&self.credentials),
            Arc::clone(&self.endpoint),
        )))
    }

    fn failed(&mut self, e: &SecretError) {
        let delay = RETRY_BACKOFF.delay(self.failures, rand::random());
        self.failures = self.failures.saturating_add(1);
        self.state = State::Idle {
            not_before: Some(Instant::now() + delay),
        };
        let waiting = if self.key.is_some() {
            "the previous key stays in use"
        } else {
            "payloads wait in the retry queue (the oldest overflow to the fallback)"
        };
        tracing::error!(
            error = %crate::errors::Chain(e),
            attempt = self.failures,
            retry_in = ?delay,
            "cannot read the Datadog API key from {KEY}; {waiting}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-west-2:123456789012:secret:dd-api-key-AbCdEf";

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn missing_credentials_are_reported_when_resolving_not_at_construction() {
        let s = ApiKeySecret::from_lookup(ARN, &env_of(&[])).unwrap();
        assert_eq!(
            s.endpoint(),
            "https://secretsmanager.us-west-2.amazonaws.com"
        );
        assert!(!s.is_resolved());
        assert_eq!(s.credentials_source(), "none found");
        for looked in [
            crate::auth::ENV_AND_CONTAINER_SOURCES,
            crate::auth::DEFAULT_CHAIN_SOURCES,
        ] {
            let msg = SecretError::NoCredentials { looked }.to_string();
            assert!(msg.contains("AWS_ACCESS_KEY_ID"), "{msg}");
            assert!(msg.contains("DD_API_KEY_SECRET_ARN"), "{msg}");
        }
        assert!(ApiKeySecret::from_lookup("nope", &env_of(&[])).is_err());
    }

    #[tokio::test]
    async fn without_credentials_a_resolution_fails_at_once_and_backs_off() {
        let mut s = ApiKeySecret::from_lookup(ARN, &env_of(&[])).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(s.poll(deadline).await, None);
        assert_eq!(s.failures, 1);
        let State::Idle {
            not_before: Some(t),
        } = s.state
        else {
            panic!("expected a backoff");
        };
        assert!(t > Instant::now());
        // Not due yet: no new attempt.
        assert_eq!(s.poll(deadline).await, None);
        assert_eq!(s.failures, 1);
    }

    #[test]
    fn a_refused_key_asks_for_one_re_resolution_then_waits() {
        let mut s = ApiKeySecret::from_lookup(ARN, &env_of(&[])).unwrap();
        let t0 = Instant::now();
        // Nothing resolved yet: nothing to refresh.
        s.key_rejected(t0);
        assert!(!s.refresh);
        s.key = Some(ApiKey::new("k1"));
        s.key_rejected(t0);
        assert!(s.refresh);
        // The re-resolution brought the same key back: the next 403 does not ask again so soon.
        s.refresh = false;
        s.key_rejected(t0 + Duration::from_secs(1));
        assert!(!s.refresh);
        s.key_rejected(t0 + REFRESH_MIN_INTERVAL);
        assert!(s.refresh);
    }
}
