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
        #[cfg(target_os = "linux")]
        if config.ops.release_startup_pages {
            spawn_release_startup_pages(config.ops.flush_interval);
        }
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

/// Once, after the first flush (1.5 flush periods after start), page out the clean file-backed mappings
/// (`OFFPATH_RELEASE_STARTUP_PAGES`).
///
/// Idle RSS is mostly the binary's code and read-only data that start-up touched once: argument and
/// configuration parsing, the TLS and AWS clients' set-up, the first flush. Those pages stay resident
/// until the kernel needs memory, and count in RSS until then (7.4 MiB idle, 3.8 of it code). `MADV_PAGEOUT`
/// asks the kernel to reclaim them now; the ones the running pipeline uses are read back on their next
/// touch (once), and pages other processes map too (shared libraries) are left alone by the kernel.
#[cfg(target_os = "linux")]
fn spawn_release_startup_pages(period: std::time::Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(period + period / 2).await;
        match tokio::task::spawn_blocking(release_file_pages).await {
            Ok(Ok(bytes)) => tracing::debug!(bytes, "start-up pages released"),
            Ok(Err(e)) => tracing::debug!(
                error = %e,
                "cannot release start-up pages (MADV_PAGEOUT needs Linux 5.4); set \
                 OFFPATH_RELEASE_STARTUP_PAGES=false to skip"
            ),
            Err(_) => {}
        }
    });
}

/// Advise `MADV_PAGEOUT` on every read-only, file-backed mapping of this process; returns their size.
#[cfg(target_os = "linux")]
fn release_file_pages() -> std::io::Result<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut bytes = 0;
    for line in maps.lines() {
        // `start-end perms offset dev inode path`
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let [range, perms, _, _, inode, path, ..] = f[..] else {
            continue;
        };
        // Writable mappings may hold our own changes; anonymous ones and `[vdso]` have no file.
        if perms.contains('w') || inode == "0" || !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: advice on a mapping of this process, read from its own maps: MADV_PAGEOUT changes no
        // contents (clean file pages are read back from the file on their next touch), and a range
        // that was unmapped since only makes the call fail.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if rc == 0 {
            bytes += end - start;
            continue;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) {
            // The kernel does not know the advice.
            return Err(e);
        }
    }
    Ok(bytes)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::release_file_pages;

    #[test]
    fn released_file_pages_are_read_back_when_used_again() {
        let released = release_file_pages().unwrap();
        assert!(released > 0, "the test binary's own code is a file mapping");
        // The code and data paged out come back on their next touch.
        let text = format!("{:?}", (1..5).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(text, "[2, 4, 6, 8]");
        assert!(release_file_pages().unwrap() > 0);
    }
}
