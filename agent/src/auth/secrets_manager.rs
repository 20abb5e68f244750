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

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::ApiKey;
use super::credentials::{
    AwsCredentials, CredentialsError, CredentialsFailure, CredentialsProvider, non_empty,
};

/// The configuration key this module serves, for messages.
pub(super) const KEY: &str = "DD_API_KEY_SECRET_ARN";
/// The Secrets Manager operation.
const TARGET: &str = "secretsmanager.GetSecretValue";
/// The signing name of the service.
const SERVICE: &str = "secretsmanager";
/// JSON 1.1 protocol content type.
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Per-request timeout of a `GetSecretValue` call.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an answer read (a secret is at most 64 KiB).
const RESPONSE_READ_MAX: usize = 128 * 1024;
/// How much of an error answer is kept for the log.
const ERROR_EXCERPT: usize = 300;

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
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-west-2:123456789012:secret:dd-api-key-AbCdEf";

    fn arn() -> SecretArn {
        SecretArn::parse(ARN).unwrap()
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_owned),
            expiration: None,
        }
    }

    fn header<'a>(r: &'a SignedRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn secret_arns_give_their_region_and_regional_endpoint() {
        let cases = [
            (
                ARN,
                "us-west-2",
                "https://secretsmanager.us-west-2.amazonaws.com",
            ),
            (
                "arn:aws-cn:secretsmanager:cn-north-1:1:secret:k",
                "cn-north-1",
                "https://secretsmanager.cn-north-1.amazonaws.com.cn",
            ),
            (
                "arn:aws-us-gov:secretsmanager:us-gov-west-1:1:secret:k:with:colons",
                "us-gov-west-1",
                "https://secretsmanager.us-gov-west-1.amazonaws.com",
            ),
        ];
        for (arn, region, endpoint) in cases {
            let a = SecretArn::parse(arn).unwrap();
            assert_eq!(a.region(), region, "{arn}");
            assert_eq!(a.default_endpoint(), endpoint, "{arn}");
            assert_eq!(a.as_str(), arn);
        }
    }

    #[test]
    fn anything_but_a_secrets_manager_secret_arn_is_refused_naming_the_key() {
        for bad in [
            "",
            "dd-api-key",
            "arn:aws:secretsmanager:us-east-1:123456789012",
            "arn:aws:ssm:us-east-1:123456789012:parameter:dd",
            "arn:aws:secretsmanager::123456789012:secret:dd",
            "arn:aws:secretsmanager:US-EAST-1:123456789012:secret:dd",
            "arn:aws:secretsmanager:us-east-1::secret:dd",
            "arn:aws:secretsmanager:us-east-1:123456789012:key:dd",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
            "urn:aws:secretsmanager:us-east-1:123456789012:secret:dd",
        ] {
            let e = SecretArn::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("DD_API_KEY_SECRET_ARN"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_endpoint_override_follows_the_standard_aws_names() {
        let a = arn();
        assert_eq!(
            endpoint(&a, &env_of(&[])),
            "https://secretsmanager.us-west-2.amazonaws.com"
        );
        assert_eq!(
            endpoint(
                &a,
                &env_of(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/")])
            ),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            endpoint(
                &a,
                &env_of(&[
                    ("AWS_ENDPOINT_URL", "http://general"),
                    ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "https://vpce-1.example"),
                ])
            ),
            "https://vpce-1.example"
        );
        assert_eq!(
            endpoint(&a, &env_of(&[("AWS_ENDPOINT_URL_SECRETS_MANAGER", " ")])),
            "https://secretsmanager.us-west-2.amazonaws.com"
        );
    }

    #[test]
    fn credentials_need_a_key_id_and_a_secret_and_never_print_the_secret() {
        assert_eq!(AwsCredentials::from_lookup(&env_of(&[])), None);
        assert_eq!(
            AwsCredentials::from_lookup(&env_of(&[("AWS_ACCESS_KEY_ID", "AKID")])),
            None
        );
        let c = AwsCredentials::from_lookup(&env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_SESSION_TOKEN", "tok3n"),
        ]))
        .unwrap();
        assert_eq!(c.session_token.as_deref(), Some("tok3n"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok3n"),
            "{shown}"
        );
    }

    #[test]
    fn the_request_is_a_signed_json_1_1_get_secret_value_call() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_060_211); // 2024-05-30T09:10:11Z
        let r = get_secret_value_request(
            &arn(),
            &creds(Some("session-token")),
            "https://secretsmanager.us-west-2.amazonaws.com",
            time,
        )
        .unwrap();
        assert_eq!(r.url, "https://secretsmanager.us-west-2.amazonaws.com/");
        assert_eq!(
            String::from_utf8(r.body.clone()).unwrap(),
            format!(r#"{{"SecretId":"{ARN}"}}"#)
        );
        assert_eq!(
            header(&r, "content-type"),
            Some("application/x-amz-json-1.1")
        );
        assert_eq!(
            header(&r, "x-amz-target"),
            Some("secretsmanager.GetSecretValue")
        );
        assert_eq!(header(&r, "x-amz-date"), Some("20240530T091011Z"));
        assert_eq!(header(&r, "x-amz-security-token"), Some("session-token"));
        let auth = header(&r, "authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240530/us-west-2/secretsmanager/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="
            ),
            "{auth}"
        );
        // The same signature botocore computes for this request (its SigV4Auth, same inputs).
        assert!(
            auth.ends_with(
                "Signature=ecbf60141138c5c5311b7ddfa6b6dfd29c5ed6b98c0451fe2ae232d50b36c23e"
            ),
            "{auth}"
        );
    }

    #[test]
    fn a_request_without_session_token_signs_without_it_and_bad_endpoints_are_refused() {
        let r = get_secret_value_request(
            &arn(),
            &creds(None),
            "http://127.0.0.1:4566",
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(r.url, "http://127.0.0.1:4566/");
        assert_eq!(header(&r, "x-amz-security-token"), None);
        assert!(
            header(&r, "authorization")
                .unwrap()
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target,")
        );
        for bad in [
            "",
            "secretsmanager.us-west-2.amazonaws.com",
            "ftp://x",
            "http://",
        ] {
            assert!(
                matches!(
                    get_secret_value_request(&arn(), &creds(None), bad, SystemTime::now()),
                    Err(SecretError::Endpoint(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_secret_string_is_the_key_trimmed() {
        let body =
            br#"{"ARN":"x","Name":"dd","SecretString":"  0123456789abcdef\n","VersionId":"v1"}"#;
        assert_eq!(
            parse_response(200, body, &arn()).unwrap(),
            ApiKey::new("0123456789abcdef")
        );
    }

    #[test]
    fn values_that_are_not_a_bare_key_are_refused_with_the_fix() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"SecretString":"{\"api_key\":\"abc\"}"}"#,
                "JSON object",
            ),
            (br#"{"SecretBinary":"AAEC"}"#, "binary"),
            (br#"{"SecretString":"   "}"#, "empty"),
            (br#"{"SecretString":"abc def"}"#, "spaces"),
            (br#"{"Name":"dd"}"#, "no value"),
            (b"<html>", "unreadable"),
        ];
        for (body, problem) in cases {
            let e = parse_response(200, body, &arn()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(problem), "{msg}");
            assert!(
                msg.contains("DD_API_KEY_SECRET_ARN") && msg.contains(ARN),
                "{msg}"
            );
        }
    }

    #[test]
    fn error_answers_are_classified_with_what_to_fix() {
        let cases: &[(u16, &[u8], &str)] = &[
            (
                400,
                br#"{"__type":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."}"#,
                "does not exist: check DD_API_KEY_SECRET_ARN",
            ),
            (
                400,
                br#"{"__type":"com.amazonaws.secretsmanager#AccessDeniedException","message":"User: arn:aws:sts::1:assumed-role/r/f is not authorized"}"#,
                "secretsmanager:GetSecretValue",
            ),
            (
                400,
                br#"{"__type":"DecryptionFailure","Message":"kms"}"#,
                "kms:Decrypt",
            ),
            (
                403,
                b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>User: x is not authorized</Message></Error></ErrorResponse>",
                "secretsmanager:GetSecretValue",
            ),
            (
                400,
                br#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
                "AWS_SESSION_TOKEN",
            ),
            (
                403,
                b"<Response><Errors><Error><Code>SignatureDoesNotMatch</Code></Error></Errors></Response>",
                "AWS_SECRET_ACCESS_KEY",
            ),
            (
                400,
                br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
                "HTTP 400 ThrottlingException",
            ),
            (503, b"", "HTTP 503  for DD_API_KEY_SECRET_ARN: (empty answer)"),
        ];
        for (status, body, expect) in cases {
            let e = parse_response(*status, body, &arn()).unwrap_err();
            assert!(e.to_string().contains(expect), "{status}: {e}");
        }
    }
}
