//! Command-line interface of the `offpath` binary: definitions and parsing only.
//!
//! `main.rs` parses with [`Cli::parse`] (or [`Cli::try_parse_from`] in tests) and dispatches on
//! [`Cli::into_command`]; the usual service invocations skip clap ([`Cli::parse_run`]). Every setting lives in the configuration (environment variables, or a YAML
//! file given with `--config`), never on the command line, so secrets never appear in `ps` or `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Configuration comes from environment variables (DD_API_KEY, DD_SITE, DD_DOGSTATSD_PORT, OFFPATH_*, ...)
and, with --config, from a YAML file using the Datadog Agent's datadog.yaml key names; environment
variables win. The README lists every key (`offpath config-table` prints the table).";

/// offpath: a DogStatsD sidecar that ships metrics to Datadog off the request path.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "offpath",
    version,
    about,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; `run` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run`'s options, accepted without the subcommand (`offpath --config FILE`).
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// The command to execute: the subcommand, or `run` with the top-level options.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }

    /// `args` (after the program name) when they are one of the invocations a service manager uses,
    /// parsed without clap: nothing, `run`, and either with `--config PATH` or `--config=PATH`.
    /// Anything else is `None`, for [`Cli::parse`].
    ///
    /// Building clap's parser touches some 0.5 MiB of code that would then stay resident for the life
    /// of the process, a sixth of the idle RSS; this gives the same result as clap on these inputs.
    pub fn parse_run<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Option<Command> {
        let args: Vec<std::ffi::OsString> = args.into_iter().collect();
        let rest = match args.first() {
            Some(a) if a == "run" => &args[1..],
            _ => &args[..],
        };
        let path = |p: &std::ffi::OsStr| {
            let bytes = p.as_encoded_bytes();
            (!bytes.is_empty() && !bytes.starts_with(b"-")).then(|| PathBuf::from(p))
        };
        let config = match rest {
            [] => None,
            [flag, p] if flag == "--config" => Some(path(p)?),
            // (A path that is not UTF-8 after `=` is left to clap.)
            [arg] => Some(path(std::ffi::OsStr::new(
                arg.to_str()?.strip_prefix("--config=")?,
            ))?),
            _ => return None,
        };
        Some(Command::Run(RunArgs { config }))
    }
}

/// The subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Listen for DogStatsD, aggregate and ship to Datadog until SIGTERM/SIGINT (the default).
    Run(RunArgs),
    /// Validate the configuration and test connectivity: intake DNS and TCP, the API key
    /// (GET /api/v1/validate), and CloudWatch Logs access when a fallback log group is set.
    /// Exit code 0 when every check passes, 1 when one fails, 2 when the configuration is invalid.
    Check(CheckArgs),
    /// Re-ship offpath fallback records to Datadog, from a file or stdin, or from a CloudWatch
    /// Logs group over a time range.
    Replay(ReplayArgs),
    /// Ask a running offpath for GET /health on its status address; exit 0 when healthy.
    /// Meant for container health checks (the image has no curl).
    Health(HealthArgs),
    /// Show the cardinality view of a running offpath (GET /status/contexts): live contexts against
    /// DD_AGGREGATE_CONTEXT_LIMIT, and per metric name its contexts, points/s and drops.
    Stats(StatsArgs),
    /// Print every configuration key (environment variable, YAML key, default, meaning) as the
    /// markdown table the README carries.
    ConfigTable,
}

/// Options of `offpath run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct RunArgs {
    /// YAML configuration file (datadog.yaml key names); environment variables override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Options of `offpath check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct CheckArgs {
    /// YAML configuration file (datadog.yaml key names); environment variables override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Options of `offpath replay`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ReplayArgs {
    /// Read records from a file, or from stdin with `-`.
    #[arg(long, value_name = "PATH|-", conflicts_with_all = ["log_group", "log_stream"])]
    pub from_file: Option<PathBuf>,
    /// Read records from this CloudWatch Logs group (default: OFFPATH_FALLBACK_LOG_GROUP).
    #[arg(long, value_name = "NAME")]
    pub log_group: Option<String>,
    /// Only this log stream of the group (default: every stream).
    #[arg(long, value_name = "NAME")]
    pub log_stream: Option<String>,
    /// Start of the time range: RFC 3339, epoch seconds, or relative like 90m or 2h (default: 1h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// End of the time range, same forms as --since (default: now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Skip records identical to one already seen in this run (overlapping ranges, a record the log
    /// group holds twice). Nothing is remembered across runs: replaying a range again in a later run
    /// sends it again (counts and sketches would count twice).
    #[arg(long)]
    pub dedupe: bool,
    /// YAML configuration file (datadog.yaml key names); environment variables override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl ReplayArgs {
    /// True when records are read from stdin (`--from-file -`).
    #[cfg(test)]
    pub fn reads_stdin(&self) -> bool {
        self.from_file.as_deref() == Some(std::path::Path::new("-"))
    }
}

/// Options of `offpath health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct HealthArgs {
    /// Status address to query (default: OFFPATH_STATUS_ADDR from the configuration, 127.0.0.1:8126).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    pub timeout: u64,
    /// Keep asking until offpath is healthy, for at most SECONDS: for scripts that start offpath in
    /// the background and wait until it listens.
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
    /// YAML configuration file, to read the status address from.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Options of `offpath stats`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct StatsArgs {
    /// Status address to query (default: OFFPATH_STATUS_ADDR from the configuration, 127.0.0.1:8126).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
    /// Metric names shown, largest first (at most 1000).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top: u16,
    /// Print the JSON of /status/contexts instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Redraw the table every --interval seconds, like top (Ctrl-C quits).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws with --watch.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub interval: u64,
    /// With --watch, stop after this many redraws.
    #[arg(long, value_name = "N", hide = true)]
    pub count: Option<u64>,
    /// Seconds to wait for each answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    pub timeout: u64,
    /// YAML configuration file, to read the status address from.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[track_caller]
    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("offpath").chain(args.iter().copied()))
            .unwrap()
            .into_command()
    }

    #[track_caller]
    fn rejects(args: &[&str]) -> clap::error::ErrorKind {
        Cli::try_parse_from(std::iter::once("offpath").chain(args.iter().copied()))
            .unwrap_err()
            .kind()
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_service_invocations_parse_without_clap_as_clap_parses_them() {
        for args in [
            &[][..],
            &["run"],
            &["--config", "/etc/offpath.yaml"],
            &["--config=/etc/offpath.yaml"],
            &["run", "--config", "offpath.yaml"],
            &["run", "--config=/etc/o ffpath.yaml"],
        ] {
            let fast = Cli::parse_run(args.iter().map(std::ffi::OsString::from));
            assert_eq!(fast, Some(parse(args)), "{args:?}");
        }
    }

    #[test]
    fn every_other_invocation_is_left_to_clap() {
        for args in [
            &["check"][..],
            &["health"],
            &["--help"],
            &["-h"],
            &["--version"],
            &["run", "--help"],
            &["run", "--config"],
            &["run", "--config", "-"],
            &["--config="],
            &["run", "--config", "a", "--config", "b"],
            &["run", "extra"],
            &["--config", "a", "run"],
            &["config-table"],
        ] {
            assert_eq!(
                Cli::parse_run(args.iter().map(std::ffi::OsString::from)),
                None,
                "{args:?}"
            );
        }
    }

    #[test]
    fn no_subcommand_means_run() {
        assert_eq!(parse(&[]), Command::Run(RunArgs::default()));
        let with_config = Command::Run(RunArgs {
            config: Some("/etc/offpath.yaml".into()),
        });
        assert_eq!(parse(&["--config", "/etc/offpath.yaml"]), with_config);
        assert_eq!(
            parse(&["run", "--config", "/etc/offpath.yaml"]),
            with_config
        );
    }

    #[test]
    fn check_takes_an_optional_config() {
        assert_eq!(parse(&["check"]), Command::Check(CheckArgs::default()));
        assert_eq!(
            parse(&["check", "--config", "a.yaml"]),
            Command::Check(CheckArgs {
                config: Some("a.yaml".into())
            })
        );
    }

    #[test]
    fn replay_reads_every_option() {
        let Command::Replay(r) = parse(&[
            "replay",
            "--log-group",
            "/offpath/fallback",
            "--log-stream",
            "host-1",
            "--since",
            "2h",
            "--until",
            "2024-01-01T00:00:00Z",
            "--dedupe",
            "--config",
            "c.yaml",
        ]) else {
            panic!("not replay");
        };
        assert_eq!(r.log_group.as_deref(), Some("/offpath/fallback"));
        assert_eq!(r.log_stream.as_deref(), Some("host-1"));
        assert_eq!(r.since.as_deref(), Some("2h"));
        assert_eq!(r.until.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert!(r.dedupe);
        assert_eq!(r.config, Some("c.yaml".into()));
        assert!(!r.reads_stdin());
    }

    #[test]
    fn replay_from_stdin_is_a_dash() {
        let Command::Replay(r) = parse(&["replay", "--from-file", "-"]) else {
            panic!("not replay");
        };
        assert!(r.reads_stdin());
        let Command::Replay(r) = parse(&["replay", "--from-file", "records.jsonl"]) else {
            panic!("not replay");
        };
        assert_eq!(r.from_file, Some("records.jsonl".into()));
        assert!(!r.reads_stdin());
    }

    #[test]
    fn a_file_and_a_log_group_cannot_both_be_replayed() {
        assert_eq!(
            rejects(&["replay", "--from-file", "x", "--log-group", "g"]),
            clap::error::ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn health_takes_an_address_and_a_timeout() {
        assert_eq!(
            parse(&["health"]),
            Command::Health(HealthArgs {
                timeout: 3,
                ..HealthArgs::default()
            })
        );
        assert_eq!(
            parse(&["health", "--addr", "127.0.0.1:9000", "--timeout", "1"]),
            Command::Health(HealthArgs {
                addr: Some("127.0.0.1:9000".parse().unwrap()),
                timeout: 1,
                wait: None,
                config: None
            })
        );
        assert_eq!(
            parse(&["health", "--wait", "30"]),
            Command::Health(HealthArgs {
                timeout: 3,
                wait: Some(30),
                ..HealthArgs::default()
            })
        );
        assert_eq!(
            rejects(&["health", "--addr", "localhost"]),
            clap::error::ErrorKind::ValueValidation
        );
    }

    #[test]
    fn every_subcommand_is_in_the_help() {
        assert_eq!(parse(&["config-table"]), Command::ConfigTable);
        let help = Cli::command().render_long_help().to_string();
        for sub in ["run", "check", "replay", "health", "config-table"] {
            // Listed as a command (a line of its own), not only mentioned in the text.
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(sub)),
                "{sub} missing from:\n{help}"
            );
        }
    }

    #[test]
    fn unknown_subcommands_and_flags_are_errors() {
        assert_eq!(
            rejects(&["serve"]),
            clap::error::ErrorKind::InvalidSubcommand
        );
        assert_eq!(
            rejects(&["run", "--api-key", "x"]),
            clap::error::ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn version_and_help_are_displayed() {
        assert_eq!(
            rejects(&["--version"]),
            clap::error::ErrorKind::DisplayVersion
        );
        assert_eq!(rejects(&["--help"]), clap::error::ErrorKind::DisplayHelp);
        assert_eq!(
            rejects(&["replay", "--help"]),
            clap::error::ErrorKind::DisplayHelp
        );
        let help = Cli::command()
            .find_subcommand_mut("replay")
            .unwrap()
            .render_long_help()
            .to_string();
        // `--dedupe` says what the code does: one run, not across runs (fallback/replay.rs).
        assert!(help.contains("Nothing is remembered across runs"), "{help}");
        for flag in [
            "--from-file",
            "--log-group",
            "--log-stream",
            "--since",
            "--until",
            "--dedupe",
            "--config",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }
}
