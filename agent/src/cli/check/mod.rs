//! `offpath check` and `offpath health`: validate the configuration and connectivity, one line per check.
//!
//! The checks, in order: the configuration loads (environment over the optional YAML file); with
//! `DD_API_KEY_SECRET_ARN` and no `DD_API_KEY`, the secret is read from Secrets Manager (a failure says
//! whether the ARN, the permission, the credentials or the network is at fault); the intake host
//! resolves and accepts a TCP connection; the API key is valid (`GET /api/v1/validate`, header
//! `DD-API-KEY`: 200 valid, 403 invalid); CloudWatch Logs answers `DescribeLogGroups` for the fallback
//! log group when one is set; last, the hostname offpath puts on metrics and where it came from (as the
//! Datadog Agent resolves it), and in ECS the task tags. Each failing line says what to fix and names
//! the config key.
//! The API key never appears in the report: every detail passes through a redactor.

mod aws;
mod intake;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::time::Duration;

#[cfg(feature = "cloudwatch")]
use offpath::auth::{self, ApiKeySource};
use offpath::auth::{ApiKey, ApiKeySecret};
use offpath::config::{Config, FallbackSink, LoadError};
use offpath::errors::Chain;

use super::args::CheckArgs;
use aws::check_secret;
#[cfg(feature = "cloudwatch")]
use aws::{check_cloudwatch, cloudwatch_group};
use intake::{check_api_key, check_reachable};

/// How long loading the AWS configuration may take (the credential chain may probe instance metadata).
#[cfg(feature = "cloudwatch")]
const AWS_TIMEOUT: Duration = Duration::from_secs(20);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Ok,
    /// Works, but something deserves attention.
    Warn,
    /// The check failed; the detail says what to fix.
    Fail,
    /// Not applicable with this configuration.
    Skip,
}

impl Outcome {
    /// The label printed in the report.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    /// What was checked (`config`, `intake dns`, `api key`, …).
    pub name: &'static str,
    /// The outcome.
    pub outcome: Outcome,
    /// What was found, and for a failure what to change (naming the config key). Redacted.
    pub detail: String,
}

/// The result of `offpath check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One line per check, in order.
    pub lines: Vec<CheckLine>,
    /// The configuration itself was invalid (nothing else was checked).
    pub invalid_config: bool,
    /// The API key, to remove from every detail (never printed, not part of `Debug`).
    pub(super) secret: Secret,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Secret(pub(super) Option<String>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `text` with every whole-token occurrence of `secret` replaced by `<redacted>`: where it is not part
/// of a longer word (letters, digits, `_`, `-`), so a short key cannot mangle the rest of the report.
fn redact(text: &str, secret: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    // Everything before `from` is in `out`; matches are looked for from `from` on, and their
    // neighbours read in the whole text (a match right after an unredacted one is inside a word).
    let mut from = 0;
    while let Some(at) = text[from..].find(secret).map(|i| from + i) {
        let end = at + secret.len();
        let bounded = !text[..at].ends_with(is_word) && !text[end..].starts_with(is_word);
        out.push_str(&text[from..at]);
        out.push_str(if bounded { "<redacted>" } else { secret });
        from = end;
    }
    out.push_str(&text[from..]);
    out
}

impl Report {
    fn push(&mut self, name: &'static str, outcome: Outcome, detail: impl Into<String>) {
        let mut detail = detail.into();
        if let Some(secret) = self.secret.0.as_deref().filter(|s| !s.is_empty()) {
            detail = redact(&detail, secret);
        }
        self.lines.push(CheckLine {
            name,
            outcome,
            detail,
        });
    }

    /// True when no check failed.
    pub fn passed(&self) -> bool {
        !self.invalid_config && self.lines.iter().all(|l| l.outcome != Outcome::Fail)
    }

    /// The process exit code: 0 when every check passed, 2 for an invalid configuration, 1 when a
    /// check failed.
    pub fn exit_code(&self) -> i32 {
        if self.invalid_config {
            2
        } else if self.passed() {
            0
        } else {
            1
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{:<4}  {:<12}  {}", l.outcome.as_str(), l.name, l.detail)?;
        }
        let failed = self
            .lines
            .iter()
            .filter(|l| l.outcome == Outcome::Fail)
            .count();
        if failed == 0 {
            write!(f, "all checks passed")
        } else {
            write!(f, "{failed} check(s) failed")
        }
    }
}

/// `offpath check`: load the configuration, run every check, print the report on stdout, and
/// return the exit code.
pub async fn check_command(args: &CheckArgs) -> i32 {
    let report = run(args.config.as_deref()).await;
    println!("{report}");
    report.exit_code()
}

/// Load the configuration (environment over the optional file) and run every check.
pub async fn run(config_path: Option<&Path>) -> Report {
    let loaded = match config_path {
        Some(p) => Config::from_file_and_env(p),
        None => Config::from_env()
            .map(|c| (c, Vec::new()))
            .map_err(|error| LoadError::Invalid {
                error,
                origin: "in the environment".to_owned(),
            }),
    };
    let (config, warnings) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            let mut report = Report {
                invalid_config: true,
                ..Report::default()
            };
            report.push("config", Outcome::Fail, Chain(&e).to_string());
            return report;
        }
    };
    let source = config_path.map_or_else(
        || "environment".to_owned(),
        |p| format!("{} and the environment", p.display()),
    );
    #[cfg(not(feature = "cloudwatch"))]
    let report = check_config_with_secret(&config, &source, &warnings, secret_of(&config)).await;
    #[cfg(feature = "cloudwatch")]
    let report = {
        // One AWS configuration for the secret's credentials and the CloudWatch Logs check (see
        // `auth::connect`); the secret alone takes its region from its ARN.
        let group = cloudwatch_group(&config);
        let fwd = &config.forward;
        let connect = auth::connect(
            fwd.api_key.clone(),
            fwd.api_key_secret_arn.clone(),
            fwd.aws_credentials,
            group.is_some(),
        );
        let (secret, sdk) = match tokio::time::timeout(AWS_TIMEOUT, connect).await {
            Ok(connected) => {
                let secret = match connected.api_key {
                    Some(ApiKeySource::Secret(secret)) => Some(*secret),
                    _ => None,
                };
                (secret, connected.aws.map(Ok))
            }
            // Loading the AWS configuration timed out: the secret is read with the credentials in
            // the environment, and the CloudWatch check says what happened.
            Err(elapsed) => (secret_of(&config), group.map(|_| Err(elapsed))),
        };
        let mut report = check_config_with_secret(&config, &source, &warnings, secret).await;
        // Without the `cloudwatch` feature a log group is a configuration error, reported above.
        if let (Some(group), Some(sdk)) = (group, sdk) {
            check_cloudwatch(&mut report, group, sdk).await;
        }
        report
    };
    // Where this host is (its name, the ECS task tags): from the process environment, so only here.
    let mut report = report;
    let facts = offpath::host::Facts::gather(|k| std::env::var(k).ok());
    report_host(
        &mut report,
        &offpath::host::inspect(&config.host, &facts).await,
    );
    report
}

#[cfg(test)]
/// Run the intake and API key checks for a loaded configuration. `source` says where it came from;
/// `warnings` are the config file's warnings (unknown keys), reported as WARN lines. The CloudWatch
/// check is separate ([`run`] adds it) because it needs AWS configuration from the environment. A
/// secret named by `DD_API_KEY_SECRET_ARN` is read with the credentials in the environment (or the
/// container credentials endpoint); [`run`] uses the AWS default chain when built with it.
pub async fn check_config(config: &Config, source: &str, warnings: &[String]) -> Report {
    check_config_with_secret(config, source, warnings, secret_of(config)).await
}

/// The API key secret to read when `DD_API_KEY` is unset and `DD_API_KEY_SECRET_ARN` is set, signed
/// with the credentials in the environment (or the container credentials endpoint). The ARN was
/// checked when the configuration loaded.
fn secret_of(config: &Config) -> Option<ApiKeySecret> {
    match (&config.forward.api_key, &config.forward.api_key_secret_arn) {
        (None, Some(arn)) => Some(ApiKeySecret::new(arn.clone(), &|k| std::env::var(k).ok())),
        _ => None,
    }
}

/// [`check_config`] reading the API key from `secret` when `DD_API_KEY` is unset (`secret` is only
/// consulted then).
pub async fn check_config_with_secret(
    config: &Config,
    source: &str,
    warnings: &[String],
    secret: Option<ApiKeySecret>,
) -> Report {
    let fwd = &config.forward;
    let mut report = Report {
        secret: Secret(fwd.api_key.as_ref().map(|k| k.expose().to_owned())),
        ..Report::default()
    };
    report.push("config", Outcome::Ok, format!("loaded from {source}"));
    for w in warnings.iter().cloned().chain(config.warnings()) {
        report.push("config", Outcome::Warn, w);
    }
    if fwd.skip_tls_verify {
        report.push(
            "tls",
            Outcome::Warn,
            "TLS certificate verification is OFF (DD_SKIP_SSL_VALIDATION / skip_ssl_validation); \
             never use this in production",
        );
    }
    let agg = &config.aggregate;
    if agg.histogram_aggregates.is_empty() && agg.histogram_percentiles.is_empty() {
        report.push(
            "histograms",
            Outcome::Warn,
            "DD_HISTOGRAM_AGGREGATES and DD_HISTOGRAM_PERCENTILES are both empty: histogram and timer \
             values (h, ms) ship nothing, as in the Datadog Agent, and are counted as \
             points.dropped.histogram_no_output; set either key to ship them",
        );
    }

    // The key to validate, and what to change when the intake refuses it.
    let (api_key, fix): (Option<ApiKey>, String) = match (&fwd.api_key, secret) {
        (Some(key), _) => {
            if let Some(arn) = &fwd.api_key_secret_arn {
                report.push(
                    "secret",
                    Outcome::Skip,
                    format!(
                        "DD_API_KEY is set and wins over DD_API_KEY_SECRET_ARN ({})",
                        arn.as_str()
                    ),
                );
            }
            (
                Some(key.clone()),
                "set DD_API_KEY (api_key) to a valid API key".to_owned(),
            )
        }
        (None, Some(mut secret)) => {
            let fix = format!(
                "store a valid API key in the secret {} (named by DD_API_KEY_SECRET_ARN)",
                secret.arn()
            );
            (check_secret(&mut report, &mut secret).await, fix)
        }
        (None, None) => {
            report.push(
                "api key",
                Outcome::Skip,
                "no API key (DD_API_KEY / api_key): offpath runs locally and prints flushed metrics \
                 on stdout; set DD_API_KEY to ship to Datadog",
            );
            report_fallback(&mut report, config);
            return report;
        }
    };

    let url = match reqwest::Url::parse(&fwd.intake_url) {
        Ok(u) if u.host_str().is_some() => u,
        _ => {
            report.push(
                "intake",
                Outcome::Fail,
                format!(
                    "intake URL {} has no host: fix DD_DD_URL (dd_url) or DD_SITE (site)",
                    fwd.intake_url
                ),
            );
            return report;
        }
    };
    if fwd.proxy.is_some() && url.scheme() == "https" {
        report.push(
            "intake dns",
            Outcome::Skip,
            "an HTTPS proxy is set (DD_PROXY_HTTPS); the proxy resolves and connects to the intake",
        );
    } else if !check_reachable(&mut report, &url).await {
        report_fallback(&mut report, config);
        return report;
    }
    match &api_key {
        Some(key) => check_api_key(&mut report, config, &url, key.expose(), &fix).await,
        None => report.push(
            "api key",
            Outcome::Skip,
            "not validated: the secret named by DD_API_KEY_SECRET_ARN could not be read",
        ),
    }
    report_fallback(&mut report, config);
    report
}

/// The `hostname` line (the name and where it came from), a warning per skipped or failed step, and
/// the `ecs tags` line in ECS.
fn report_host(report: &mut Report, found: &offpath::host::Inspection) {
    use offpath::host::Source;
    let outcome = match found.hostname.source {
        Source::None => Outcome::Warn,
        _ => Outcome::Ok,
    };
    report.push("hostname", outcome, found.hostname.to_string());
    for n in &found.notes {
        report.push("hostname", Outcome::Warn, n.clone());
    }
    match &found.ecs_tags {
        None => {}
        Some(Ok(tags)) => report.push("ecs tags", Outcome::Ok, tags.join(",")),
        Some(Err(e)) => report.push(
            "ecs tags",
            Outcome::Warn,
            format!(
                "the task metadata (ECS_CONTAINER_METADATA_URI_V4) did not answer: {e}; offpath asks \
                 again in the background and adds the task tags once it answers"
            ),
        ),
    }
}

fn report_fallback(report: &mut Report, config: &Config) {
    let fb = &config.fallback;
    let detail = match (fb.sink, fb.log_group.as_deref()) {
        (FallbackSink::Off, _) => {
            report.push(
                "fallback",
                Outcome::Warn,
                "OFFPATH_FALLBACK=off: what cannot be delivered is dropped (counted)",
            );
            return;
        }
        (FallbackSink::Stdout, _) => {
            "stdout (set OFFPATH_FALLBACK_LOG_GROUP for CloudWatch Logs)".to_owned()
        }
        (FallbackSink::CloudWatch, Some(group)) => format!("CloudWatch Logs group {group}"),
        (FallbackSink::CloudWatch, None) => "CloudWatch Logs".to_owned(),
    };
    report.push("fallback", Outcome::Ok, detail);
}
