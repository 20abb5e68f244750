//! The `GetSecretValue` request as it goes on the wire (JSON 1.1, signed with SigV4) and its answer read
//! back into the API key or a [`SecretError`] saying what to fix. Pure: no I/O, the time is passed in.

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::{SERVICE, SecretArn, SecretError};
use crate::auth::ApiKey;
use crate::auth::aws::AwsCredentials;

/// The Secrets Manager operation.
const TARGET: &str = "secretsmanager.GetSecretValue";
/// JSON 1.1 protocol content type.
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// How much of an error answer is kept for the log.
const ERROR_EXCERPT: usize = 300;

/// A signed `GetSecretValue` request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// `POST` target: the endpoint with path `/`.
    pub url: String,
    /// Every header to send (content type, target, date, token, authorization).
    pub headers: Vec<(String, String)>,
    /// `{"SecretId":"<arn>"}`.
    pub body: Vec<u8>,
}

/// Build and sign the `GetSecretValue` request for `arn` at `endpoint`, as of `time`.
///
/// # Errors
/// [`SecretError::Endpoint`] when `endpoint` is not an http(s) URL with a host,
/// [`SecretError::Signing`] when signing fails.
pub fn get_secret_value_request(
    arn: &SecretArn,
    credentials: &AwsCredentials,
    endpoint: &str,
    time: SystemTime,
) -> Result<SignedRequest, SecretError> {
    let parsed =
        reqwest::Url::parse(endpoint).map_err(|_| SecretError::Endpoint(endpoint.to_owned()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(SecretError::Endpoint(endpoint.to_owned()));
    }
    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let body = serde_json::json!({ "SecretId": arn.as_str() })
        .to_string()
        .into_bytes();
    let unsigned = [("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)];

    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        credentials.expiration,
        "offpath",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(arn.region())
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SecretError::Signing(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        unsigned.iter().copied(),
        SignableBody::Bytes(&body),
    )
    .map_err(|e| SecretError::Signing(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SecretError::Signing(e.to_string()))?
        .into_parts();
    let mut headers: Vec<(String, String)> = unsigned
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    headers.extend(
        instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    Ok(SignedRequest { url, headers, body })
}

/// The AWS error code and message of an error answer: JSON 1.1 (`__type`, `message`/`Message`) or
/// the XML `<Code>`/`<Message>` some front ends answer with.
fn error_parts(body: &[u8]) -> (String, String) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let code = v["__type"]
            .as_str()
            .or_else(|| v["code"].as_str())
            .or_else(|| v["Code"].as_str())
            .unwrap_or("");
        // `com.amazonaws.secretsmanager#ResourceNotFoundException` -> the name after `#`.
        let code = code.rsplit('#').next().unwrap_or(code);
        let message = v["message"]
            .as_str()
            .or_else(|| v["Message"].as_str())
            .unwrap_or("");
        return (code.to_owned(), message.to_owned());
    }
    let text = String::from_utf8_lossy(body);
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        text.split_once(open.as_str())
            .and_then(|(_, rest)| rest.split_once(close.as_str()))
            .map(|(inner, _)| inner.trim().to_owned())
    };
    match tag("Code") {
        Some(code) => (code, tag("Message").unwrap_or_default()),
        None => {
            let mut excerpt: String = text.trim().chars().take(ERROR_EXCERPT).collect();
            if excerpt.is_empty() {
                excerpt = "(empty answer)".to_owned();
            }
            (String::new(), excerpt)
        }
    }
}

/// The API key in a `GetSecretValue` answer.
///
/// # Errors
/// A [`SecretError`] for an error answer (classified by its AWS error code) or a value that is not a
/// bare API key.
pub fn parse_response(status: u16, body: &[u8], arn: &SecretArn) -> Result<ApiKey, SecretError> {
    if !(200..300).contains(&status) {
        let (code, message) = error_parts(body);
        return Err(match code.as_str() {
            "ResourceNotFoundException" => SecretError::NotFound {
                arn: arn.as_str().to_owned(),
                message,
            },
            "AccessDeniedException" | "AccessDenied" | "DecryptionFailure" => {
                SecretError::AccessDenied {
                    arn: arn.as_str().to_owned(),
                    code,
                    message,
                }
            }
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "MissingAuthenticationToken" => SecretError::BadCredentials { code, message },
            _ => SecretError::Service {
                status,
                code,
                message,
            },
        });
    }
    let bad = |problem| SecretError::BadValue {
        arn: arn.as_str().to_owned(),
        problem,
    };
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| bad("came back as an unreadable answer"))?;
    let Some(secret) = v["SecretString"].as_str() else {
        return Err(if v.get("SecretBinary").is_some() {
            bad("holds a binary value (SecretBinary)")
        } else {
            bad("has no value (SecretString)")
        });
    };
    let key = secret.trim();
    if key.is_empty() {
        return Err(bad("is empty"));
    }
    if key.starts_with('{') {
        return Err(bad("holds a JSON object"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("holds spaces or characters an API key cannot have"));
    }
    Ok(ApiKey::new(key))
}
