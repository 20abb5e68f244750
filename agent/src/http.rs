//! Plumbing shared by offpath's HTTP clients (the intake, Secrets Manager, the container credentials
//! endpoint, `offpath check`).

/// `User-Agent` of every request offpath makes.
pub const USER_AGENT: &str = concat!("offpath/", env!("CARGO_PKG_VERSION"));

/// Read at most about `max` bytes of an answer's body (the rest is not read; the connection is then not
/// reused).
///
/// # Errors
/// The transport error that cut the body short.
pub async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() >= max {
            break;
        }
    }
    Ok(body)
}
