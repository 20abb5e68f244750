//! `offpath run` (the default): the sidecar until SIGTERM/SIGINT, then shut down under a deadline.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use offpath::errors::Chain;
use offpath::telemetry::Telemetry;
use tracing::level_filters::LevelFilter;

use super::{init_logging, load_config, runtime};

/// Load the configuration (exit 2 when it is invalid), then run the pipeline until a signal.
pub(crate) fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, warnings) = match load_config(config_path) {
        Ok(c) => c,
        Err(e) => {
            init_logging(LevelFilter::ERROR);
            tracing::error!("configuration error: {}", Chain(e.as_ref()));
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(config.ops.log_level);
    for w in warnings.iter().chain(&config.warnings()) {
        tracing::warn!("{w}");
    }
    let telemetry = Arc::new(Telemetry::default());
    let rt = runtime()?;
    let result = rt.block_on(async move {
        let shutdown = offpath::control::shutdown_signal()
            .context("cannot install the SIGTERM/SIGINT handlers")?;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        spawn_malloc_trim(config.ops.flush_interval);
        offpath::pipeline::run(config, telemetry, shutdown, |udp, status| {
            let show =
                |a: Option<std::net::SocketAddr>| a.map_or("off".to_owned(), |a| a.to_string());
            tracing::info!(
                "offpath ready udp={} status={} version={}",
                show(udp),
                show(status),
                env!("CARGO_PKG_VERSION")
            );
        })
        .await
        .context("offpath could not start")
    });
    // The shutdown deadline is over: leave at once, even if a thread still waits on a sink (a write
    // to a stdout nobody reads); everything is counted and logged by now.
    rt.shutdown_background();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Give the memory glibc holds free back to the kernel, every `period`, half a period after each flush.
///
/// glibc keeps what is freed in its arenas for reuse and returns little of it: after a burst of contexts
/// (and the flushes that carried them) RSS stays at the burst's high-water mark, 218 MiB measured after a
/// garbage flood for a live heap of 14 MiB. `malloc_trim(0)` releases the free pages of every arena, so
/// RSS follows the live heap again (25 MiB there). It runs on the runtime thread, between flushes; when
/// little is free it has little to do.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn spawn_malloc_trim(period: std::time::Duration) {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + period + period / 2;
        let mut tick = tokio::time::interval_at(start, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            // SAFETY: malloc_trim takes each arena's lock while it walks the arena's free chunks; it
            // touches no memory of ours. A pad of 0 keeps nothing spare at the top of the heap.
            let released = unsafe { libc::malloc_trim(0) } != 0;
            tracing::debug!(
                released,
                micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "malloc_trim"
            );
        }
    });
}
