//! A minimal HTTP/1.1 client for the local Runtime API: one fresh TCP connection per request.
//!
//! Nothing is pooled, so a connection can never go stale across a freeze: every call after a thaw
//! connects anew (a loopback connect costs tens of microseconds). No TLS, no proxy, no DNS cache: the
//! Runtime API is plain HTTP on `AWS_LAMBDA_RUNTIME_API` (`host:port`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest response body read from the Runtime API. Event payloads are a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A failed exchange with the Runtime API.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to the Runtime API at {addr} (AWS_LAMBDA_RUNTIME_API)")]
    Connect {
        /// `host:port` that was dialled.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed midway (connection closed, malformed response).
    #[error("HTTP exchange with the Runtime API failed")]
    Exchange(#[from] hyper::Error),
    /// The request could not be built (an invalid header value).
    #[error("invalid request to the Runtime API")]
    Request(#[from] hyper::http::Error),
    /// The response body was larger than [`MAX_RESPONSE_BYTES`] or could not be read.
    #[error("unreadable response body from the Runtime API: {0}")]
    Body(String),
    /// No complete answer within the call's time limit (the Runtime API accepted the connection, or
    /// not, but did not answer).
    #[error("the Runtime API at {addr} (AWS_LAMBDA_RUNTIME_API) did not answer within {limit:?}")]
    Timeout {
        /// `host:port` that was dialled.
        addr: String,
        /// The limit.
        limit: std::time::Duration,
    },
}

/// A response with its whole body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Client for one `host:port`.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
}

impl Client {
    /// A client for `addr` (`host:port`, the value of `AWS_LAMBDA_RUNTIME_API`).
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }

    /// The `host:port` this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// [`Client::send`], given up after `limit` (every call but `event/next`, which blocks by design).
    ///
    /// # Errors
    /// [`HttpError::Timeout`] after `limit`, else as [`Client::send`].
    pub async fn send_within(
        &self,
        limit: std::time::Duration,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        tokio::time::timeout(limit, self.send(method, path, headers, body))
            .await
            .map_err(|_| HttpError::Timeout {
                addr: self.addr.clone(),
                limit,
            })?
    }

    /// Send one request and read the whole response. No timeout: `event/next` blocks by design.
    ///
    /// # Errors
    /// [`HttpError`] when connecting, exchanging or reading the body fails.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.as_str());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;

        let stream = TcpStream::connect(self.addr.as_str())
            .await
            .map_err(|source| HttpError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        // Small request/response exchanges: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let exchange = async {
            let resp = sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError::Body(e.to_string()))?
                .to_bytes();
            Ok::<_, HttpError>(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::pin!(conn);
        tokio::select! {
            biased;
            resp = exchange => resp,
            // The connection future only ends first when the connection fails before the response.
            end = &mut conn => match end {
                Err(e) => Err(HttpError::Exchange(e)),
                Ok(()) => Err(HttpError::Body("connection closed before the response".to_owned())),
            },
        }
    }
}
