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
            tracing::error!(error = %e, "offpath-lambda stops");
            1
        }
    };
    let _ = std::io::stdout().flush();
    // Exit at once: nothing left running may hold the process past Lambda's deadline.
    std::process::exit(code);
}

/// Logs go to stderr (stdout carries fallback records), filtered by `DD_LOG_LEVEL` (default `info`).
fn init_logging() {
    let level = std::env::var("DD_LOG_LEVEL").unwrap_or_default();
    tracing_subscriber::fmt()
        .with_max_level(max_level(&level))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

/// The level `DD_LOG_LEVEL` names: trace, debug, info, warn (warning), error, critical (as error) or off,
/// in any case; anything else is `info`. A plain level rather than an `EnvFilter` keeps the regex
/// engine out of the layer (about 0.3 MB).
fn max_level(value: &str) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match value.trim().to_ascii_lowercase().as_str() {
        "" => LevelFilter::INFO,
        "warning" => LevelFilter::WARN,
        "critical" => LevelFilter::ERROR,
        v => v.parse().unwrap_or(LevelFilter::INFO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn dd_log_level_names_a_level_and_anything_else_is_info() {
        let cases = [
            ("", LevelFilter::INFO),
            ("debug", LevelFilter::DEBUG),
            ("TRACE", LevelFilter::TRACE),
            (" warn ", LevelFilter::WARN),
            ("Warning", LevelFilter::WARN),
            ("error", LevelFilter::ERROR),
            ("critical", LevelFilter::ERROR),
            ("off", LevelFilter::OFF),
            ("offpath=debug", LevelFilter::INFO),
            ("loud", LevelFilter::INFO),
        ];
        for (value, want) in cases {
            assert_eq!(max_level(value), want, "{value:?}");
        }
    }
}
