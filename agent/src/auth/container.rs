//! The container credentials endpoint: AWS credentials for ECS tasks, EKS Pod Identity and Lambda
//! SnapStart functions, fetched over HTTP the way the AWS SDKs' container provider does.
//!
//! The endpoint is `http://169.254.170.2` + `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, else
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` (HTTPS, or HTTP to a loopback, ECS or EKS Pod Identity
//! address); a `GET` with the `Authorization` header read from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`
//! (read at every call: the token rotates) or `AWS_CONTAINER_AUTHORIZATION_TOKEN`, answered with JSON
//! `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration` (RFC 3339). It is called without any proxy.
//! See `docs/protocols.md`, "Container credentials".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::aws::{AwsCredentials, CredentialsError, non_empty};

/// Connect timeout to the container credentials endpoint (as the AWS SDKs).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-request timeout of a container credentials call (as the AWS SDKs).
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);
/// The ECS task metadata address `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is relative to.
const ECS_BASE: &str = "http://169.254.170.2";
/// Most bytes of a container credentials answer read.
const READ_MAX: usize = 64 * 1024;
/// How much of an unreadable answer is kept for the log.
const EXCERPT: usize = 200;

/// How the container credentials endpoint is authorized.
#[derive(Clone, PartialEq, Eq)]
enum ContainerToken {
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`: read at every call.
    File(PathBuf),
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    Value(String),
}

impl std::fmt::Debug for ContainerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// The container credentials endpoint named by the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEndpoint {
    url: String,
    token: Option<ContainerToken>,
}

/// Whether an http (not https) container endpoint may be at `ip`: loopback, the ECS task metadata
/// address, or the EKS Pod Identity addresses.
fn allowed_http_ip(ip: IpAddr) -> bool {
    const ECS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
    const EKS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);
    const EKS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4 == ECS || v4 == EKS,
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6 == EKS6
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| allowed_http_ip(v4.into()))
        }
    }
}

impl ContainerEndpoint {
    /// The endpoint `env` names: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (relative to
    /// `http://169.254.170.2`) first, else `AWS_CONTAINER_CREDENTIALS_FULL_URI`; `Ok(None)` when
    /// neither is set. The token comes from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, else
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    ///
    /// # Errors
    /// [`CredentialsError::ContainerUri`] when the full URI is not an allowed URL. An http URL with a
    /// host name other than `localhost` is refused: its addresses cannot be checked without DNS.
    pub fn from_lookup(
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, CredentialsError> {
        let url = if let Some(rel) = non_empty(env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) {
            let sep = if rel.starts_with('/') { "" } else { "/" };
            format!("{ECS_BASE}{sep}{rel}")
        } else if let Some(full) = non_empty(env("AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
            let bad = || CredentialsError::ContainerUri(full.clone());
            let parsed = reqwest::Url::parse(&full).map_err(|_| bad())?;
            let host = parsed.host_str().unwrap_or_default();
            let allowed = match parsed.scheme() {
                "https" => !host.is_empty(),
                "http" => {
                    let bare = host.trim_start_matches('[').trim_end_matches(']');
                    match bare.parse::<IpAddr>() {
                        Ok(ip) => allowed_http_ip(ip),
                        Err(_) => host.eq_ignore_ascii_case("localhost"),
                    }
                }
                _ => false,
            };
            if !allowed {
                return Err(bad());
            }
            full
        } else {
            return Ok(None);
        };
        let token = non_empty(env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"))
            .map(|p| ContainerToken::File(PathBuf::from(p)))
            .or_else(|| {
                non_empty(env("AWS_CONTAINER_AUTHORIZATION_TOKEN")).map(ContainerToken::Value)
            });
        Ok(Some(Self { url, token }))
    }

    /// The URL credentials are fetched from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `Authorization` header value, read from the token file when there is one.
    async fn authorization(&self) -> Result<Option<String>, CredentialsError> {
        let (token, origin) = match &self.token {
            None => return Ok(None),
            Some(ContainerToken::Value(v)) => {
                (v.clone(), "AWS_CONTAINER_AUTHORIZATION_TOKEN".to_owned())
            }
            Some(ContainerToken::File(path)) => {
                let origin = format!("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}", path.display());
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    CredentialsError::ContainerToken {
                        origin: origin.clone(),
                        reason: e.to_string(),
                    }
                })?;
                (text.trim().to_owned(), origin)
            }
        };
        if token.contains(['\r', '\n']) {
            return Err(CredentialsError::ContainerToken {
                origin,
                reason: "the token holds a line break".to_owned(),
            });
        }
        Ok(Some(token))
    }

    /// One `GET` of the endpoint with `client`.
    pub(super) async fn fetch(
        &self,
        client: &reqwest::Client,
    ) -> Result<AwsCredentials, CredentialsError> {
        let mut request = client.get(&self.url);
        if let Some(token) = self.authorization().await? {
            let mut value = reqwest::header::HeaderValue::from_str(&token).map_err(|_| {
                CredentialsError::ContainerToken {
                    origin: "AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)".to_owned(),
                    reason: "the token is not a valid HTTP header value".to_owned(),
                }
            })?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let transport = |e: &reqwest::Error| CredentialsError::ContainerTransport {
            url: self.url.clone(),
            reason: crate::errors::chain(e),
        };
        let resp = request.send().await.map_err(|e| transport(&e))?;
        let status = resp.status().as_u16();
        let body = crate::http::read_body(resp, READ_MAX)
            .await
            .map_err(|e| transport(&e))?;
        parse_container_response(&self.url, status, &body)
    }
}

/// The credentials in a container credentials endpoint answer.
///
/// # Errors
/// [`CredentialsError::ContainerRefused`] for an error status (with the answer's `code`/`message`),
/// [`CredentialsError::ContainerAnswer`] for an answer without a key id, secret key or readable
/// expiration.
pub fn parse_container_response(
    url: &str,
    status: u16,
    body: &[u8],
) -> Result<AwsCredentials, CredentialsError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |names: &[&str]| -> Option<String> {
        let v = json.as_ref()?;
        names
            .iter()
            .find_map(|n| v.get(*n).and_then(serde_json::Value::as_str))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if !(200..300).contains(&status) {
        let message = field(&["message", "Message"]).unwrap_or_else(|| {
            let text: String = String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(EXCERPT)
                .collect();
            if text.is_empty() {
                "(empty answer)".to_owned()
            } else {
                text
            }
        });
        return Err(CredentialsError::ContainerRefused {
            url: url.to_owned(),
            status,
            code: field(&["code", "Code"]).unwrap_or_default(),
            message,
        });
    }
    let problem = |problem: &str| CredentialsError::ContainerAnswer {
        url: url.to_owned(),
        problem: problem.to_owned(),
    };
    if json.is_none() {
        return Err(problem("the answer is not JSON"));
    }
    let access_key_id = field(&["AccessKeyId"]).ok_or_else(|| problem("no AccessKeyId"))?;
    let secret_access_key =
        field(&["SecretAccessKey"]).ok_or_else(|| problem("no SecretAccessKey"))?;
    let expiration = match field(&["Expiration"]) {
        None => None,
        Some(text) => Some(
            time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .map(SystemTime::from)
                .map_err(|_| problem(&format!("Expiration {text:?} is not an RFC 3339 time")))?,
        ),
    };
    Ok(AwsCredentials {
        access_key_id,
        secret_access_key,
        session_token: field(&["Token", "SessionToken"]),
        expiration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const URL: &str = "http://127.0.0.1:1/creds";

    #[test]
    fn a_container_answer_gives_keys_token_and_expiration() {
        let body = br#"{"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cr3t","Token":"tok3n",
                        "Expiration":"2024-05-30T09:10:11Z","RoleArn":"arn:aws:iam::1:role/r"}"#;
        let c = parse_container_response(URL, 200, body).unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key, "s3cr3t");
        assert_eq!(c.session_token.as_deref(), Some("tok3n"));
        assert_eq!(
            c.expiration,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_060_211))
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok3n"),
            "{shown}"
        );
        // Fractional seconds and offsets are RFC 3339 too; no expiration means long-lived.
        let c = parse_container_response(
            URL,
            200,
            br#"{"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"2024-05-30T11:10:11.500+02:00"}"#,
        )
        .unwrap();
        assert_eq!(
            c.expiration,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_717_060_211_500))
        );
        assert_eq!(c.session_token, None);
        let c = parse_container_response(URL, 200, br#"{"AccessKeyId":"A","SecretAccessKey":"S"}"#)
            .unwrap();
        assert_eq!(c.expiration, None);
    }

    #[test]
    fn container_answers_without_credentials_say_what_is_missing() {
        let cases: &[(&[u8], &str)] = &[
            (b"<html>", "not JSON"),
            (br#"{"SecretAccessKey":"S"}"#, "no AccessKeyId"),
            (
                br#"{"AccessKeyId":"A","SecretAccessKey":" "}"#,
                "no SecretAccessKey",
            ),
            (
                br#"{"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"tomorrow"}"#,
                "\"tomorrow\" is not an RFC 3339 time",
            ),
        ];
        for (body, expect) in cases {
            let e = parse_container_response(URL, 200, body).unwrap_err();
            assert!(matches!(e, CredentialsError::ContainerAnswer { .. }), "{e}");
            assert!(e.to_string().contains(expect), "{e}");
            assert!(e.to_string().contains(URL), "{e}");
        }
    }

    #[test]
    fn container_error_answers_keep_their_code_and_message() {
        let e = parse_container_response(
            URL,
            403,
            br#"{"code":"AccessDenied","message":"Unable to validate the token"}"#,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("HTTP 403 AccessDenied: Unable to validate the token"),
            "{msg}"
        );
        assert!(msg.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN"), "{msg}");
        let e = parse_container_response(URL, 500, b"").unwrap_err();
        assert!(e.to_string().contains("HTTP 500 : (empty answer)"), "{e}");
    }

    #[test]
    fn the_relative_uri_wins_over_the_full_uri_and_the_token_file_over_the_token() {
        let e = ContainerEndpoint::from_lookup(&env_of(&[
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/abc",
            ),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/x"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/token"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(e.url(), "http://169.254.170.2/v2/credentials/abc");
        assert_eq!(
            e.token,
            Some(ContainerToken::File(PathBuf::from("/var/run/token")))
        );
        let e = ContainerEndpoint::from_lookup(&env_of(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/x"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(e.url(), "http://127.0.0.1:9/x");
        assert_eq!(e.token, Some(ContainerToken::Value("tok".into())));
        assert!(!format!("{e:?}").contains("tok\""), "{e:?}");
        assert_eq!(ContainerEndpoint::from_lookup(&env_of(&[])).unwrap(), None);
    }

    #[test]
    fn a_full_uri_must_be_https_or_http_to_an_allowed_address() {
        for ok in [
            "https://credentials.example.com/creds",
            "http://127.0.0.1:9001/2021-04-23/credentials",
            "http://127.0.0.2/x",
            "http://localhost:8080/x",
            "http://[::1]:80/x",
            "http://169.254.170.2/v2/credentials",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
        ] {
            let e = ContainerEndpoint::from_lookup(&env_of(&[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                ok,
            )]));
            assert!(matches!(e, Ok(Some(_))), "{ok}: {e:?}");
        }
        for bad in [
            "http://10.0.0.1/creds",
            "http://169.254.169.254/latest/meta-data",
            "http://example.com/creds",
            "ftp://127.0.0.1/x",
            "/relative",
        ] {
            let e = ContainerEndpoint::from_lookup(&env_of(&[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                bad,
            )]))
            .unwrap_err();
            assert!(
                e.to_string().contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
                "{bad}: {e}"
            );
        }
    }
}
