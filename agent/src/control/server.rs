//! The status endpoint's HTTP server: one request per connection, bounded and fair.
//!
//! - **Bounded.** [`MAX_CONNECTIONS`] connections are served at once, plus one slot reserved for
//!   `/health` (any other path there answers `503 busy`), so a container health check gets an answer
//!   while the others are taken. Each connection has [`HEADER_TIMEOUT`] to send its request headers and
//!   [`CONNECTION_TIMEOUT`] in all; both are counted as `timed_out`.
//! - **Fair.** A connection that has not sent its headers yet holds a slot for nothing: when every slot
//!   is taken, a new connection closes the one that has waited longest for its headers and takes its
//!   slot (counted as `evicted`), so half-sent requests (slowloris) cannot lock out a client that
//!   sends its request at once, as `offpath health` and health checkers do. Only when every slot is
//!   busy answering, and the reserved one too, is a new connection closed at once (`refused`).
//!
//! The counters are in `/status` under `status_server`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};

use super::status::{Health, busy, respond, unix_now};
use crate::telemetry::{StatusServerStats, Telemetry};

/// Connections served at once (besides the one reserved for `/health`).
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request headers: local clients send them at once.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on one connection's life.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server knows of one connection it serves.
#[derive(Debug)]
struct Slot {
    /// When it was accepted.
    since: Instant,
    /// Set once its request headers were read.
    headers: Arc<AtomicBool>,
    /// Set when its task ends (finished, timed out or aborted).
    done: Arc<AtomicBool>,
    abort: AbortHandle,
}

/// Where a new connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// A slot is free.
    Slot,
    /// Close the connection in slot `i` (the longest waiting for its headers) and take its slot.
    Evict(usize),
    /// Every slot is busy answering: the reserved slot, `/health` only.
    Reserved,
    /// Every slot and the reserved one are busy: close it.
    Refuse,
}

/// Admit a connection given each served one's (accepted at, headers read), at most `max` of them,
/// and whether the reserved slot is free. Pure: the caller owns the state.
pub(crate) fn admit(slots: &[(Instant, bool)], max: usize, reserved_free: bool) -> Admit {
    if slots.len() < max {
        return Admit::Slot;
    }
    let waiting = slots
        .iter()
        .enumerate()
        .filter(|(_, (_, headers))| !headers)
        .min_by_key(|(_, (since, _))| *since);
    match waiting {
        Some((i, _)) => Admit::Evict(i),
        None if reserved_free => Admit::Reserved,
        None => Admit::Refuse,
    }
}

/// Sets `done` when the connection's task ends, however it ends (an aborted task drops its future).
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// Serve `/health` and `/status` on `listener` until `shutdown` completes.
///
/// # Errors
/// Never in practice: accept errors (e.g. too many open files) are logged and serving continues.
pub(crate) async fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    let mut slots: Vec<Slot> = Vec::with_capacity(MAX_CONNECTIONS);
    let mut reserved: Option<Arc<AtomicBool>> = None;
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "status endpoint: accept failed");
                    // Back off so that a persistent error (EMFILE) does not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        slots.retain(|s| !s.done.load(Relaxed));
        let stats = &telemetry.status_server;
        let reserved_free = reserved.as_ref().is_none_or(|d| d.load(Relaxed));
        let view: Vec<(Instant, bool)> = slots
            .iter()
            .map(|s| (s.since, s.headers.load(Relaxed)))
            .collect();
        let only_health = match admit(&view, MAX_CONNECTIONS, reserved_free) {
            Admit::Slot => false,
            Admit::Evict(i) => {
                slots.swap_remove(i).abort.abort();
                let n = stats.evicted.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        %peer,
                        evicted = n,
                        "status endpoint: every connection slot is taken; closing the one waiting \
                         longest for its request headers"
                    );
                }
                false
            }
            Admit::Reserved => true,
            Admit::Refuse => {
                stats.refused.fetch_add(1, Relaxed);
                tracing::debug!(%peer, "status endpoint: too many connections, closing");
                continue;
            }
        };
        let headers = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let abort = connections.spawn(connection(
            stream,
            Arc::clone(&telemetry),
            Arc::clone(&health),
            Arc::clone(&headers),
            Done(Arc::clone(&done)),
            only_health,
        ));
        if only_health {
            reserved = Some(done);
        } else {
            slots.push(Slot {
                since: Instant::now(),
                headers,
                done,
                abort,
            });
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// Serve one request on `stream`; `only_health` in the reserved slot.
async fn connection(
    stream: tokio::net::TcpStream,
    telemetry: Arc<Telemetry>,
    health: Arc<Health>,
    headers: Arc<AtomicBool>,
    done: Done,
    only_health: bool,
) {
    let counters = Arc::clone(&telemetry);
    let service = hyper::service::service_fn(move |req| {
        headers.store(true, Relaxed);
        let response = if only_health && req.uri().path() != "/health" {
            busy()
        } else {
            respond(&req, &telemetry, &health, unix_now())
        };
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let timed_out = |stats: &StatusServerStats| stats.timed_out.fetch_add(1, Relaxed);
    match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_timeout() => {
            timed_out(&counters.status_server);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "status endpoint: connection error"),
        Err(_) => {
            timed_out(&counters.status_server);
        }
    }
    drop(done);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn sixty_four_half_sent_requests_cannot_lock_out_health_or_status() {
        let telemetry = Arc::new(Telemetry::default());
        let health = Health::new(Duration::from_secs(30));
        health.set_listeners_up(true);
        health.heartbeat(unix_now());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::clone(&telemetry),
            Arc::new(health),
            async {
                let _ = stopped.await;
            },
        ));
        let mut held = Vec::new();
        for _ in 0..64 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            held.push(s);
        }
        for _ in 0..5 {
            let answer = get(addr, "/health").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        let answer = get(addr, "/status").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"evicted\""), "{answer}");
        let stats = &telemetry.status_server;
        assert!(stats.evicted.load(Relaxed) >= 64 - 16, "{stats:?}");
        assert_eq!(stats.refused.load(Relaxed), 0);
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[test]
    fn free_slots_come_first() {
        let t0 = Instant::now();
        assert_eq!(admit(&[(t0, false)], 2, true), Admit::Slot);
        assert_eq!(admit(&[], 2, false), Admit::Slot);
    }

    #[test]
    fn when_full_the_connection_waiting_longest_for_its_headers_is_evicted() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(5);
        let slots = [(later, false), (t0, true), (t0, false), (later, true)];
        assert_eq!(admit(&slots, 4, true), Admit::Evict(2));
        assert_eq!(admit(&slots, 4, false), Admit::Evict(2));
    }

    #[test]
    fn when_every_slot_is_answering_the_reserved_one_takes_it_then_refusal() {
        let t0 = Instant::now();
        let slots = [(t0, true); 4];
        assert_eq!(admit(&slots, 4, true), Admit::Reserved);
        assert_eq!(admit(&slots, 4, false), Admit::Refuse);
    }
}
