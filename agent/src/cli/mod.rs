//! The `offpath` binary's command line: the subcommands and what each one runs. It belongs to the binary,
//! not to the library (the Lambda extension links the library without clap).
//!
//! ```text
//!  main ─> args (clap, or the service invocations parsed without it) ─┬─> run      the sidecar until a signal
//!                                                                     ├─> check    configuration and connectivity
//!                                                                     ├─> replay   fallback records back to Datadog
//!                                                                     ├─> health   ask a running offpath for /health
//!                                                                     ├─> stats    the cardinality view of a running offpath
//!                                                                     └─> config-table
//! ```

pub(crate) mod args;
pub(crate) mod check;
pub(crate) mod health;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod stats;
#[cfg(test)]
mod test_server;

use std::path::Path;

use anyhow::Context as _;
use offpath::config::Config;
use tracing::level_filters::LevelFilter;

/// Logs go to stderr (stdout carries records in local mode and for the stdout fallback).
pub(crate) fn init_logging(level: LevelFilter) {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        // journald, `docker logs` and CloudWatch show escape codes verbatim: colour only a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Load the configuration from the environment, under a YAML file when one is given.
pub(crate) fn load_config(path: Option<&Path>) -> anyhow::Result<(Config, Vec<String>)> {
    match path {
        Some(p) => Config::from_file_and_env(p).map_err(anyhow::Error::from),
        None => Ok((Config::from_env()?, Vec::new())),
    }
}

/// The async runtime: one thread, the main one. The async work is thin (flush ticks, HTTP to the intake,
/// `/status`, the fallback writer); receiving and aggregating run on their own threads, so worker
/// threads would only add stacks and malloc arenas to the idle footprint.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
