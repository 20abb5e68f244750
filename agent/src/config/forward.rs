//! Delivery settings: the API key (or its secret), the intake, the proxy, the retry queue.

use std::time::Duration;

use super::endpoints::{self, Endpoint};
use super::key::Reader;
use super::keys as k;
use super::parse;
use super::{ConfigError, Deployment};
use crate::auth::{ApiKey, AwsCredentialSource, SecretArn};

/// Largest `DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE`: 1 GiB.
pub const MAX_RETRY_QUEUE_BYTES: usize = 1 << 30;

/// Largest `DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES`: 1 TiB.
pub const MAX_STORAGE_BYTES: u64 = 1 << 40;

/// The Datadog sites (`DD_SITE`) as Datadog lists them (<https://docs.datadoghq.com/getting_started/site/>).
/// Another value is accepted with a warning.
pub const KNOWN_SITES: &[&str] = &[
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "ddog-gov.com",
    "us2.ddog-gov.com",
];

/// Delivery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// API key; `None` without a secret ARN runs locally (records to stdout).
    pub api_key: Option<ApiKey>,
    /// Secrets Manager secret whose value is the API key, read at the first flush when `api_key` is
    /// unset (`DD_API_KEY_SECRET_ARN`; see [`crate::auth`]).
    pub api_key_secret_arn: Option<SecretArn>,
    /// Where the credentials that read the secret come from: the AWS default chain in the sidecar
    /// (with the `cloudwatch` feature), the environment and the container endpoint in Lambda.
    pub aws_credentials: AwsCredentialSource,
    /// Intake base URL without path: `DD_DD_URL`/`DD_URL`, else `https://api.<DD_SITE>`.
    pub intake_url: String,
    /// Every intake endpoint with its keys, the main endpoint (`intake_url`) first: the main key merged
    /// with `DD_ADDITIONAL_ENDPOINTS` as the Datadog Agent merges them (see `config/endpoints.rs`).
    /// Used only with an API key (or its secret); empty means the main endpoint alone.
    pub endpoints: Vec<Endpoint>,
    /// What the merge of `DD_ADDITIONAL_ENDPOINTS` left out (endpoints without a key), for the log.
    pub endpoint_notes: Vec<String>,
    /// `DD_SITE` as given (default `datadoghq.com`).
    pub site: String,
    /// HTTPS proxy (`DD_PROXY_HTTPS`, `HTTPS_PROXY`).
    pub proxy: Option<String>,
    /// Skip TLS verification (`DD_SKIP_SSL_VALIDATION`, false; logged loudly).
    pub skip_tls_verify: bool,
    /// Retry queue bound in bytes (`DD_FORWARDER_RETRY_QUEUE_PAYLOADS_MAX_SIZE`, 15 MiB).
    pub retry_queue_max_bytes: usize,
    /// Per-request timeout (`DD_FORWARDER_TIMEOUT`, 20 s).
    pub timeout: Duration,
    /// zstd level (`OFFPATH_ZSTD_LEVEL`, 1 like the Agent).
    pub zstd_level: i32,
    /// Keep idle connections to the intake for reuse: true in the sidecar, false in Lambda, where a
    /// connection left idle across a freeze is dead on reuse.
    pub keep_idle_connections: bool,
    /// On-disk retry storage, so that a crash during an outage loses no queued payload; `None` when
    /// off (`DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES` 0, the default) and always in Lambda.
    pub storage: Option<StorageConfig>,
}

/// Where and how much the on-disk retry storage keeps (see `forward::store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// The directory (`DD_FORWARDER_STORAGE_PATH`); each intake gets a sub-directory.
    pub path: std::path::PathBuf,
    /// Bytes the directory of one intake may hold (`DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES`).
    pub max_bytes: u64,
}

impl ForwardConfig {
    pub(super) fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let site = r.value(&k::SITE)?;
        let intake_url = match r.get(&k::DD_URL)? {
            Some(url) => url,
            None => format!("https://api.{site}"),
        };
        let api_key: Option<ApiKey> = r.get(&k::API_KEY)?;
        let api_key_secret_arn = r.get(&k::API_KEY_SECRET_ARN)?;
        // The value holds API keys: an error shows the key's name and what it accepts, never the value.
        let additional = r.get(&k::ADDITIONAL_ENDPOINTS).map_err(|mut e| {
            e.value = "(not shown: it holds API keys)".to_owned();
            e
        })?;
        let additional = additional.unwrap_or_default();
        if !additional.0.is_empty() && api_key.is_none() && api_key_secret_arn.is_none() {
            return Err(ConfigError {
                key: k::ADDITIONAL_ENDPOINTS.key.envs[0],
                value: "(not shown: it holds API keys)".to_owned(),
                expected: "DD_API_KEY (or DD_API_KEY_SECRET_ARN) for the main endpoint too: without \
                    it offpath runs locally and ships nowhere",
            });
        }
        let (endpoints, endpoint_notes) =
            endpoints::merge(&intake_url, &site, api_key.as_ref(), &additional)?;
        Ok(Self {
            api_key,
            api_key_secret_arn,
            aws_credentials: match r.deployment() {
                Deployment::Lambda => AwsCredentialSource::EnvironmentAndContainer,
                Deployment::Sidecar if cfg!(feature = "cloudwatch") => {
                    AwsCredentialSource::DefaultChain
                }
                Deployment::Sidecar => AwsCredentialSource::EnvironmentAndContainer,
            },
            intake_url,
            endpoints,
            endpoint_notes,
            site,
            proxy: r.get(&k::PROXY_HTTPS)?,
            skip_tls_verify: r.value(&k::SKIP_SSL_VALIDATION)?,
            retry_queue_max_bytes: r.value(&k::RETRY_QUEUE_MAX_SIZE)?,
            timeout: r.value(&k::FORWARDER_TIMEOUT)?,
            zstd_level: r.value(&k::ZSTD_LEVEL)?,
            keep_idle_connections: r.deployment() == Deployment::Sidecar,
            storage: storage(r)?,
        })
    }

    /// Warnings about this configuration, for the log at start and for `offpath check`: a `DD_SITE`
    /// that is not one of Datadog's sites (when it names the intake), an intake reached over plain
    /// HTTP with an API key (the key travels in clear).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.endpoint_notes.clone();
        for e in self.endpoints.iter().skip(1) {
            if e.url.starts_with("http://") {
                out.push(format!(
                    "the additional endpoint {} (DD_ADDITIONAL_ENDPOINTS) is plain http://: its API keys \
                     and the metrics travel unencrypted; use https://",
                    e.url
                ));
            }
        }
        let from_site = self.intake_url == format!("https://api.{}", self.site);
        if from_site && !KNOWN_SITES.contains(&self.site.as_str()) {
            out.push(format!(
                "DD_SITE={} is not one of Datadog's sites ({}); offpath sends to {} anyway: check \
                 DD_SITE (site)",
                self.site,
                KNOWN_SITES.join(", "),
                self.intake_url
            ));
        }
        if self.intake_url.starts_with("http://")
            && (self.api_key.is_some() || self.api_key_secret_arn.is_some())
        {
            out.push(format!(
                "the intake URL {} (DD_DD_URL / DD_URL) is plain http://: the API key and the metrics \
                 travel unencrypted; use https://",
                self.intake_url
            ));
        }
        out
    }
}

#[allow(clippy::unnecessary_wraps)]
pub(super) fn api_key(v: &str) -> Result<ApiKey, &'static str> {
    Ok(ApiKey::new(v))
}

pub(super) fn secret_arn(v: &str) -> Result<SecretArn, &'static str> {
    SecretArn::parse(v).map_err(|_| {
        "a Secrets Manager secret ARN such as \
         arn:aws:secretsmanager:us-east-1:123456789012:secret:dd-api-key-AbCdEf"
    })
}

/// `DD_SITE`: a host name (letters, digits, `.`, `-`; a port is allowed).
pub(super) fn site(v: &str) -> Result<String, &'static str> {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    {
        Ok(v.to_owned())
    } else {
        Err("a Datadog site such as datadoghq.eu")
    }
}

/// `DD_DD_URL`: an http(s) URL with a host; a trailing `/` is removed.
pub(super) fn intake_url(v: &str) -> Result<String, &'static str> {
    let host = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .map(|rest| rest.trim_end_matches('/'));
    if host.is_none_or(str::is_empty) {
        return Err("an http:// or https:// URL such as https://api.datadoghq.eu");
    }
    Ok(v.trim_end_matches('/').to_owned())
}

pub(super) fn retry_queue_bytes(v: &str) -> Result<usize, &'static str> {
    parse::usize_in_range(
        v,
        0,
        MAX_RETRY_QUEUE_BYTES,
        "a size in bytes, at most 1073741824",
    )
}

/// The retry storage: on in the sidecar when its size is above 0, which needs a path. Lambda has no
/// disk that outlives the sandbox (a killed extension is a sandbox gone), so it never stores.
fn storage(r: &Reader<'_>) -> Result<Option<StorageConfig>, ConfigError> {
    let max_bytes = r.value(&k::FORWARDER_STORAGE_MAX_SIZE)?;
    let path = r.get(&k::FORWARDER_STORAGE_PATH)?;
    if r.deployment() == Deployment::Lambda || max_bytes == 0 {
        return Ok(None);
    }
    match path {
        Some(path) => Ok(Some(StorageConfig { path, max_bytes })),
        None => Err(r.err(
            &k::FORWARDER_STORAGE_PATH.key,
            String::new(),
            "a directory when DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES is above 0",
        )),
    }
}

pub(super) fn storage_bytes(v: &str) -> Result<u64, &'static str> {
    parse::in_range(
        v,
        0,
        MAX_STORAGE_BYTES,
        "a size in bytes, at most 1099511627776 (0 turns the storage off)",
    )
}

pub(super) fn zstd_level(v: &str) -> Result<i32, &'static str> {
    parse::in_range(v, 1, 22, "a zstd level from 1 to 22").map(|n| n as i32)
}
