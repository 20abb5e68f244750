//! The EC2 instance metadata service (IMDS): the instance id, with an IMDSv2 session token.
//!
//! `PUT <endpoint>/latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 21600` (the Agent's
//! `ec2_metadata_token_lifetime` default) answers a token; `GET <endpoint>/latest/meta-data/instance-id`
//! with `X-aws-ec2-metadata-token: <token>` answers the id. A token endpoint that answers 404 or 405
//! (IMDSv1 only, as some emulators and old proxies) is skipped and the id asked without a token, as the
//! AWS SDKs do; 403 means the service is turned off for the instance. Each request has the Agent's
//! `ec2_metadata_timeout` (300 ms) as its whole deadline; an answer over 255 bytes is refused (the
//! Agent's `metadata_endpoints_max_hostname_size`). No proxy is ever used.

use std::time::Duration;

use super::hostname::MAX_HOSTNAME_LEN;

/// Seconds an IMDSv2 token is asked to live (the Agent's `ec2_metadata_token_lifetime` default).
pub const TOKEN_TTL_SECONDS: u32 = 21_600;
/// Header asking for a token's lifetime.
pub const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
/// Header carrying the token.
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Most bytes of a token read (tokens are about 60 bytes).
const TOKEN_READ_MAX: usize = 4096;

/// An IMDS client for one endpoint.
#[derive(Debug, Clone)]
pub struct Imds {
    client: reqwest::Client,
    base: String,
}

impl Imds {
    /// A client for `endpoint` (scheme, host and port, no path) with `timeout` per request.
    ///
    /// # Errors
    /// When the endpoint is not an `http://` or `https://` URL or the HTTP client cannot be built.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, String> {
        let base = endpoint.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT {base:?} is not an http:// URL"
            ));
        }
        Ok(Self {
            client: super::client(timeout)?,
            base: base.to_owned(),
        })
    }

    /// The instance id.
    ///
    /// # Errors
    /// What failed, in words: unreachable, timed out, refused, or an answer that is not an id.
    pub async fn instance_id(&self) -> Result<String, String> {
        let token = self.token().await?;
        let mut req = self
            .client
            .get(format!("{}/latest/meta-data/instance-id", self.base));
        if let Some(t) = &token {
            req = req.header(TOKEN_HEADER, t);
        }
        let (status, body) = super::send_capped(req, MAX_HOSTNAME_LEN + 1).await?;
        if status != 200 {
            return Err(format!(
                "the instance metadata service answered {status} for instance-id"
            ));
        }
        if body.len() > MAX_HOSTNAME_LEN {
            return Err(format!(
                "the instance-id answer is longer than {MAX_HOSTNAME_LEN} bytes"
            ));
        }
        let id = std::str::from_utf8(&body)
            .map_err(|_| "the instance-id answer is not text".to_owned())?
            .trim();
        if id.is_empty() {
            return Err("the instance-id answer is empty".to_owned());
        }
        Ok(id.to_owned())
    }

    /// An IMDSv2 token, or `None` where the service only speaks IMDSv1.
    async fn token(&self) -> Result<Option<String>, String> {
        let req = self
            .client
            .put(format!("{}/latest/api/token", self.base))
            .header(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS.to_string());
        let (status, body) = super::send_capped(req, TOKEN_READ_MAX).await?;
        match status {
            200 => {
                let token = String::from_utf8(body)
                    .map_err(|_| "the IMDSv2 token is not text".to_owned())?;
                let token = token.trim();
                if token.is_empty()
                    || reqwest::header::HeaderValue::from_str(token).is_err()
                    || token.len() >= TOKEN_READ_MAX
                {
                    return Err("the IMDSv2 token answer is not a token".to_owned());
                }
                Ok(Some(token.to_owned()))
            }
            404 | 405 => Ok(None),
            403 => {
                Err("the instance metadata service is turned off for this instance (403)".into())
            }
            s => Err(format!(
                "the instance metadata service answered {s} to the token request"
            )),
        }
    }
}
