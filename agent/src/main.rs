//! The `offpath` sidecar binary: load config -> start the pipeline -> wait for a signal -> shut down
//! under a deadline.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use offpath::cli::{Cli, Command};
use offpath::config::Config;
use offpath::errors::Chain;
use offpath::telemetry::Telemetry;
use tracing::level_filters::LevelFilter;

/// Logs go to stderr (stdout carries records in local mode and for the stdout fallback).
fn init_logging(level: LevelFilter) {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        // journald, `docker logs` and CloudWatch show escape codes verbatim: colour only a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
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

/// Load the configuration from the environment, under a YAML file when one is given.
fn load_config(path: Option<&Path>) -> anyhow::Result<(Config, Vec<String>)> {
    match path {
        Some(p) => Config::from_file_and_env(p).map_err(anyhow::Error::from),
        None => Ok((Config::from_env()?, Vec::new())),
    }
}

/// The async runtime: one thread, the main one. The async work is thin (flush ticks, HTTP to the intake,
/// `/status`, the fallback writer); receiving and aggregating run on their own threads, so worker
/// threads would only add stacks and malloc arenas to the idle footprint.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
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
        let shutdown = offpath::lifecycle::shutdown_signal()
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

/// `offpath replay`: re-ship offpath records from a file, stdin or a CloudWatch Logs group.
fn replay(args: &offpath::cli::ReplayArgs) -> anyhow::Result<ExitCode> {
    use offpath::fallback::replay::{ReplayOptions, ReplaySource};
    let (config, warnings) = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("offpath replay: configuration error: {}", Chain(e.as_ref()));
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(config.ops.log_level);
    for w in warnings.iter().chain(&config.forward.warnings()) {
        tracing::warn!("{w}");
    }
    if config.forward.api_key.is_none() && config.forward.api_key_secret_arn.is_none() {
        anyhow::bail!(
            "offpath replay needs DD_API_KEY (or api_key in the config file) or \
             DD_API_KEY_SECRET_ARN to ship records"
        );
    }
    let now = offpath::lifecycle::unix_now();
    let source = match (&args.from_file, &args.log_group, &config.fallback.log_group) {
        (Some(path), _, _) => ReplaySource::from_file_arg(&path.to_string_lossy()),
        (None, Some(group), _) | (None, None, Some(group)) => ReplaySource::log_group(
            group,
            args.log_stream.as_deref(),
            args.since.as_deref(),
            args.until.as_deref(),
            now * 1000,
        )?,
        (None, None, None) => anyhow::bail!(
            "offpath replay needs --from-file PATH (or - for stdin) or --log-group NAME (or OFFPATH_FALLBACK_LOG_GROUP)"
        ),
    };
    #[cfg(feature = "cloudwatch")]
    let log_group_source = matches!(source, ReplaySource::LogGroup { .. });
    #[cfg(not(feature = "cloudwatch"))]
    let log_group_source = false;
    let mut opts = ReplayOptions::new(source, now);
    opts.dedupe = args.dedupe;
    let telemetry = Arc::new(Telemetry::default());
    let rt = runtime()?;
    let report = rt.block_on(async {
        let fwd = &config.forward;
        let connected = offpath::auth::connect(
            fwd.api_key.clone(),
            fwd.api_key_secret_arn.clone(),
            fwd.aws_credentials,
            log_group_source,
        )
        .await;
        #[cfg(feature = "cloudwatch")]
        if log_group_source {
            opts.aws = connected.aws;
        }
        let Some(mut key) = connected.api_key else {
            anyhow::bail!("offpath replay needs DD_API_KEY or DD_API_KEY_SECRET_ARN");
        };
        // DD_API_KEY wins; else the secret is read once, before anything is sent.
        if let Some(secret) = key.secret() {
            let read = secret
                .resolve()
                .await
                .context("offpath replay cannot read the API key from DD_API_KEY_SECRET_ARN")?;
            tracing::info!(arn = %secret.arn(), "API key read from DD_API_KEY_SECRET_ARN");
            key = offpath::auth::ApiKeySource::Fixed(read);
        }
        let encoder = offpath::encode::Encoder::new(fwd.zstd_level);
        let mut forwarder =
            offpath::forward::Forwarder::new(fwd, key, Arc::clone(&telemetry), None)?;
        offpath::fallback::replay::replay(&opts, &encoder, &mut forwarder, &telemetry)
            .await
            .map_err(anyhow::Error::from)
    })?;
    println!("{report}");
    Ok(if report.not_delivered == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let command =
        Cli::parse_run(std::env::args_os().skip(1)).unwrap_or_else(|| Cli::parse().into_command());
    let result = match command {
        Command::Run(args) => run(args.config.as_deref()),
        Command::Check(args) => runtime().map(|rt| {
            init_logging(LevelFilter::WARN);
            ExitCode::from(
                rt.block_on(offpath::check::check_command(&args))
                    .clamp(0, 255) as u8,
            )
        }),
        Command::Health(args) => runtime().map(|rt| {
            ExitCode::from(
                rt.block_on(offpath::check::health_command(&args))
                    .clamp(0, 255) as u8,
            )
        }),
        Command::Replay(args) => replay(&args),
        Command::ConfigTable => {
            print!("{}", offpath::config::markdown_table());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("offpath: {}", Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
