//! The Lambda Extensions API (`/2020-01-01/extension/...`): register, `event/next`, `init/error`,
//! `exit/error`.
//!
//! The client keeps the `Lambda-Extension-Identifier` from the register response and sends it on every
//! later call. `event/next` has no timeout: it blocks for as long as the sandbox is idle (and frozen).

use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::Deserialize;

use crate::http::{self, HttpError};

/// The name the extension registers under when its file name is unknown: the file name in offpath's own
/// layer (`extensions/offpath`). See [`name_from_path`].
pub const EXTENSION_NAME: &str = "offpath";

/// Longest wait for the answer to `register`. The Runtime API answers at once; one that accepts the
/// connection and never answers would otherwise hold the extension, and the sandbox's init, forever.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the answer to `init/error`, `exit/error` and the Telemetry API subscription.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

const REGISTER_PATH: &str = "/2020-01-01/extension/register";
const NEXT_PATH: &str = "/2020-01-01/extension/event/next";
const INIT_ERROR_PATH: &str = "/2020-01-01/extension/init/error";
const EXIT_ERROR_PATH: &str = "/2020-01-01/extension/exit/error";
const ID_HEADER: &str = "Lambda-Extension-Identifier";
const NAME_HEADER: &str = "Lambda-Extension-Name";
const FEATURE_HEADER: &str = "Lambda-Extension-Accept-Feature";
const ERROR_TYPE_HEADER: &str = "Lambda-Extension-Function-Error-Type";

/// An Extensions API failure.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    /// The HTTP exchange itself failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The Runtime API answered with an error status.
    #[error("{call} answered HTTP {status}: {body}")]
    Status {
        /// Which call (`register`, `event/next`, ...).
        call: &'static str,
        /// The status code.
        status: StatusCode,
        /// The response body (the API's `errorType`/`errorMessage` JSON), truncated.
        body: String,
    },
    /// Register succeeded without a `Lambda-Extension-Identifier` header.
    #[error("register answered without a Lambda-Extension-Identifier header")]
    MissingIdentifier,
    /// A response body was not the JSON the API documents.
    #[error("{call} answered an unexpected body")]
    Decode {
        /// Which call.
        call: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// What the register call tells about the function (`functionName`, `functionVersion`, `handler`,
/// `accountId` when the `accountId` feature was accepted).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The function's name.
    #[serde(default)]
    pub function_name: String,
    /// `$LATEST` or a published version number.
    #[serde(default)]
    pub function_version: String,
    /// The handler setting (not visible to extensions through the environment).
    #[serde(default)]
    pub handler: String,
    /// The AWS account id, present when Lambda supports the `accountId` feature.
    #[serde(default)]
    pub account_id: Option<String>,
}

/// One event from `event/next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A function invocation has started.
    Invoke {
        /// The invocation's request id (matches `platform.runtimeDone.record.requestId`).
        request_id: String,
        /// The invocation deadline, unix epoch milliseconds.
        deadline_ms: u64,
        /// The ARN the function was invoked with (may carry a version or alias qualifier).
        invoked_function_arn: String,
    },
    /// The sandbox is shutting down; the extension has until `deadline_ms` to finish.
    Shutdown {
        /// `SPINDOWN`, `TIMEOUT` or `FAILURE`.
        reason: String,
        /// The shutdown deadline, unix epoch milliseconds.
        deadline_ms: u64,
    },
    /// An event type this extension does not know (it registered for INVOKE and SHUTDOWN only).
    Other(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    event_type: String,
    #[serde(default)]
    deadline_ms: u64,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    invoked_function_arn: String,
    #[serde(default)]
    shutdown_reason: String,
}

impl Event {
    /// Parse an `event/next` body.
    ///
    /// # Errors
    /// The JSON error when the body is not an event object.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: RawEvent = serde_json::from_slice(body)?;
        Ok(match raw.event_type.as_str() {
            "INVOKE" => Self::Invoke {
                request_id: raw.request_id,
                deadline_ms: raw.deadline_ms,
                invoked_function_arn: raw.invoked_function_arn,
            },
            "SHUTDOWN" => Self::Shutdown {
                reason: raw.shutdown_reason,
                deadline_ms: raw.deadline_ms,
            },
            _ => Self::Other(raw.event_type),
        })
    }
}

/// A fatal error reported through `init/error` or `exit/error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalError {
    /// `Category.Reason`, e.g. `Fatal.ConfigInvalid`; sent as `Lambda-Extension-Function-Error-Type`.
    pub error_type: &'static str,
    /// A sentence saying what is wrong and which setting to fix.
    pub message: String,
}

/// A registered extension: the Runtime API address and the identifier Lambda gave it.
#[derive(Debug, Clone)]
pub struct ExtensionClient {
    http: http::Client,
    id: String,
}

impl ExtensionClient {
    /// Register for `INVOKE` and `SHUTDOWN` under `name`, asking for the `accountId` feature.
    ///
    /// # Errors
    /// [`ExtensionError`] if the call fails, Lambda refuses, or the identifier is missing.
    pub async fn register(
        runtime_api: &str,
        name: &str,
    ) -> Result<(Self, Registration), ExtensionError> {
        let http = http::Client::new(runtime_api);
        let resp = http
            .send_within(
                REGISTER_TIMEOUT,
                Method::POST,
                REGISTER_PATH,
                &[(NAME_HEADER, name), (FEATURE_HEADER, "accountId")],
                Some(br#"{"events":["INVOKE","SHUTDOWN"]}"#.to_vec()),
            )
            .await?;
        check("register", &resp)?;
        let id = resp
            .headers
            .get(ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(ExtensionError::MissingIdentifier)?
            .to_owned();
        let registration = if resp.body.iter().all(u8::is_ascii_whitespace) {
            Registration::default()
        } else {
            serde_json::from_slice(&resp.body).map_err(|source| ExtensionError::Decode {
                call: "register",
                source,
            })?
        };
        Ok((Self { http, id }, registration))
    }

    /// The `Lambda-Extension-Identifier` given at registration.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The Runtime API HTTP client (used by the Telemetry API subscription).
    pub(crate) fn http(&self) -> &http::Client {
        &self.http
    }

    /// Block until the next event. Never times out; the sandbox may be frozen while this waits.
    ///
    /// # Errors
    /// [`ExtensionError`] if the call fails or the body is not an event.
    pub async fn next_event(&self) -> Result<Event, ExtensionError> {
        let resp = self
            .http
            .send(Method::GET, NEXT_PATH, &[(ID_HEADER, &self.id)], None)
            .await?;
        check("event/next", &resp)?;
        Event::parse(&resp.body).map_err(|source| ExtensionError::Decode {
            call: "event/next",
            source,
        })
    }

    /// Report a fatal initialisation error. Lambda answers no further calls afterwards.
    ///
    /// # Errors
    /// [`ExtensionError`] if the report itself fails.
    pub async fn init_error(&self, error: &FatalError) -> Result<(), ExtensionError> {
        self.report("init/error", INIT_ERROR_PATH, error).await
    }

    /// Report a fatal error before exiting. Lambda answers no further calls afterwards.
    ///
    /// # Errors
    /// [`ExtensionError`] if the report itself fails.
    pub async fn exit_error(&self, error: &FatalError) -> Result<(), ExtensionError> {
        self.report("exit/error", EXIT_ERROR_PATH, error).await
    }

    async fn report(
        &self,
        call: &'static str,
        path: &str,
        error: &FatalError,
    ) -> Result<(), ExtensionError> {
        let reason = error
            .error_type
            .split_once('.')
            .map_or(error.error_type, |(_, r)| r);
        let body = serde_json::json!({
            "errorMessage": error.message,
            "errorType": reason,
            "stackTrace": [],
        });
        let resp = self
            .http
            .send_within(
                CALL_TIMEOUT,
                Method::POST,
                path,
                &[(ID_HEADER, &self.id), (ERROR_TYPE_HEADER, error.error_type)],
                Some(body.to_string().into_bytes()),
            )
            .await?;
        check(call, &resp)
    }
}

/// The name to register under: the file name the extension was started from (Lambda runs every file in
/// `/opt/extensions/`, and refuses `SHUTDOWN` to an extension whose registered name differs from its file,
/// treating it as internal: every invocation then fails). `extensions/offpath` registers as `offpath`,
/// offpath's Datadog-compatible layer's `extensions/datadog-agent` as `datadog-agent`. Without a usable
/// file name, [`EXTENSION_NAME`].
pub fn name_from_path(argv0: Option<&Path>) -> String {
    argv0
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(EXTENSION_NAME)
        .to_owned()
}

fn check(call: &'static str, resp: &http::Response) -> Result<(), ExtensionError> {
    if resp.status.is_success() {
        return Ok(());
    }
    let body = String::from_utf8_lossy(&resp.body);
    Err(ExtensionError::Status {
        call,
        status: resp.status,
        body: body.chars().take(512).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invoke_event_carries_request_id_deadline_and_arn() {
        let body = br#"{"eventType":"INVOKE","deadlineMs":1700000000123,"requestId":"r-1",
            "invokedFunctionArn":"arn:aws:lambda:us-east-1:123456789012:function:f:prod",
            "tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-abc"}}"#;
        assert_eq!(
            Event::parse(body).unwrap(),
            Event::Invoke {
                request_id: "r-1".into(),
                deadline_ms: 1_700_000_000_123,
                invoked_function_arn: "arn:aws:lambda:us-east-1:123456789012:function:f:prod"
                    .into(),
            }
        );
    }

    #[test]
    fn a_shutdown_event_carries_reason_and_deadline() {
        let body = br#"{"eventType":"SHUTDOWN","shutdownReason":"SPINDOWN","deadlineMs":42}"#;
        assert_eq!(
            Event::parse(body).unwrap(),
            Event::Shutdown {
                reason: "SPINDOWN".into(),
                deadline_ms: 42
            }
        );
    }

    #[test]
    fn an_unknown_event_type_is_kept_not_rejected() {
        let body = br#"{"eventType":"RESTORE","deadlineMs":1}"#;
        assert_eq!(Event::parse(body).unwrap(), Event::Other("RESTORE".into()));
    }

    #[test]
    fn a_body_that_is_not_an_event_is_an_error() {
        for body in [&b""[..], b"[]", b"{\"deadlineMs\":1}", b"not json"] {
            assert!(Event::parse(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn the_extension_registers_under_its_file_name() {
        let cases = [
            (Some("/opt/extensions/datadog-agent"), "datadog-agent"),
            (Some("/opt/extensions/offpath"), "offpath"),
            (Some("offpath-lambda"), "offpath-lambda"),
            (Some("/"), "offpath"),
            (Some(""), "offpath"),
            (None, "offpath"),
        ];
        for (argv0, want) in cases {
            assert_eq!(name_from_path(argv0.map(Path::new)), want, "{argv0:?}");
        }
    }

    #[test]
    fn the_register_response_parses_with_and_without_account_id() {
        let r: Registration = serde_json::from_str(
            r#"{"functionName":"f","functionVersion":"$LATEST","handler":"index.handler","accountId":"123"}"#,
        )
        .unwrap();
        assert_eq!(r.function_name, "f");
        assert_eq!(r.function_version, "$LATEST");
        assert_eq!(r.handler, "index.handler");
        assert_eq!(r.account_id.as_deref(), Some("123"));
        let r: Registration = serde_json::from_str(r#"{"functionName":"f"}"#).unwrap();
        assert_eq!(r.account_id, None);
        assert_eq!(r.function_version, "");
    }
}
