//! The offpath Lambda extension binary (`extensions/offpath` in the layer).
//!
//! Thin: logging, a single-threaded runtime, then [`offpath_lambda::lifecycle::run`] with the
//! metrics pipeline.

use std::io::Write;

use offpath_lambda::lifecycle::{self, BoxError, Options};
use offpath_lambda::pipeline::LambdaPipeline;

fn main() {
    init_logging();
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async {
            let opts = Options::from_env()?;
            lifecycle::run(opts, |startup| async {
                LambdaPipeline::start(startup).await.map_err(BoxError::from)
            })
            .await
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            std::process::exit(1);
        }
    };
    let code = match result {
        Ok(exit) => {
            tracing::debug!(reason = %exit.reason, "shut down");
            0
        }
        Err(e) => {
            tracing::error!(error = %offpath::errors::Chain(&e), "offpath-lambda stops");
            1
        }
    };
    let _ = std::io::stdout().flush();
    // Exit at once: nothing left running may hold the process past Lambda's deadline.
    std::process::exit(code);
}

/// Logs go to stderr (stdout carries fallback records), filtered by `DD_LOG_LEVEL` (default `info`),
/// parsed as the configuration parses it. Logging starts before the configuration is loaded: a value
/// that is not a level logs at `info` until the configuration load reports it (`init/error`). A plain
/// level rather than an `EnvFilter` keeps the regex engine out of the layer (about 0.3 MB).
fn init_logging() {
    let level = std::env::var("DD_LOG_LEVEL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| offpath::config::log_level(&v).ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}
