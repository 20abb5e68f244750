//! The `offpath` sidecar binary: parse the command line, then run the subcommand ([`cli`]): by default
//! load config -> start the pipeline -> wait for a signal -> shut down under a deadline.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;
use offpath::errors::Chain;
use tracing::level_filters::LevelFilter;

use cli::args::{Cli, Command};

fn main() -> ExitCode {
    let command =
        Cli::parse_run(std::env::args_os().skip(1)).unwrap_or_else(|| Cli::parse().into_command());
    let result = match command {
        Command::Run(args) => cli::run::run(args.config.as_deref()),
        Command::Check(args) => cli::runtime().map(|rt| {
            cli::init_logging(LevelFilter::WARN);
            ExitCode::from(rt.block_on(cli::check::check_command(&args)).clamp(0, 255) as u8)
        }),
        Command::Health(args) => cli::runtime().map(|rt| {
            ExitCode::from(
                rt.block_on(cli::health::health_command(&args))
                    .clamp(0, 255) as u8,
            )
        }),
        Command::Stats(args) => cli::runtime().map(|rt| {
            ExitCode::from(rt.block_on(cli::stats::stats_command(&args)).clamp(0, 255) as u8)
        }),
        Command::Replay(args) => cli::replay::replay(&args),
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
