//! How the process is controlled and observed: the shutdown signals, and the local `/health` and
//! `/status` endpoint ([`status`]).

mod server;
pub mod status;

pub use status::unix_now;

/// Resolves at the first SIGTERM or SIGINT. A second signal exits the process at once (status 130).
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
    })
}
