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

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

#[cfg(feature = "cloudwatch")]
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[cfg(feature = "cloudwatch")]
use crate::auth::{self, ApiKeySource};
use crate::auth::{ApiKey, ApiKeySecret};
use crate::cli::{CheckArgs, HealthArgs};
use crate::config::{Config, FallbackSink, LoadError};
use crate::errors::Chain;

/// How long DNS resolution and the TCP connection to the intake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long reading the API key secret may take (the credential chain may probe instance metadata).
const SECRET_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the AWS checks may take (the credential chain may probe instance metadata).
#[cfg(feature = "cloudwatch")]
const AWS_TIMEOUT: Duration = Duration::from_secs(20);
/// Pages of `DescribeLogGroups` read while looking for the log group.
#[cfg(feature = "cloudwatch")]
const MAX_LOG_GROUP_PAGES: usize = 20;

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
    secret: Secret,
}

#[derive(Clone, Default, PartialEq, Eq)]
struct Secret(Option<String>);

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
    let mut rest = text;
    while let Some(at) = rest.find(secret) {
        let (before, after) = (&rest[..at], &rest[at + secret.len()..]);
        let bounded = !before.ends_with(is_word) && !after.starts_with(is_word);
        out.push_str(before);
        out.push_str(if bounded { "<redacted>" } else { secret });
        rest = after;
    }
    out.push_str(rest);
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
    let facts = crate::host::Facts::gather(|k| std::env::var(k).ok());
    report_host(
        &mut report,
        &crate::host::inspect(&config.host, &facts).await,
    );
    report
}

/// The CloudWatch Logs check with the loaded AWS configuration (`Err` when loading timed out).
#[cfg(feature = "cloudwatch")]
async fn check_cloudwatch(
    report: &mut Report,
    group: &str,
    sdk: Result<aws_config::SdkConfig, tokio::time::error::Elapsed>,
) {
    match sdk {
        Err(_) => report.push(
            "cloudwatch",
            Outcome::Fail,
            "loading AWS configuration timed out; check AWS_REGION and the credential chain",
        ),
        Ok(sdk) if sdk.region().is_none() => report.push(
            "cloudwatch",
            Outcome::Fail,
            format!(
                "no AWS region for log group {group}: set AWS_REGION (or a profile region), \
                     or unset OFFPATH_FALLBACK_LOG_GROUP"
            ),
        ),
        Ok(sdk) => {
            let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
            check_log_group(report, &client, group).await;
        }
    }
}

/// The log group the fallback writes to, when it uses CloudWatch Logs.
#[cfg(feature = "cloudwatch")]
fn cloudwatch_group(config: &Config) -> Option<&str> {
    match config.fallback.sink {
        FallbackSink::CloudWatch => config.fallback.log_group.as_deref(),
        FallbackSink::Stdout | FallbackSink::Off => None,
    }
}

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
fn report_host(report: &mut Report, found: &crate::host::Inspection) {
    use crate::host::Source;
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

/// Read the API key from Secrets Manager; a `secret` line says what was read or what failed (the
/// ARN, the permission, the credentials, the network). The key is redacted from the report.
async fn check_secret(report: &mut Report, secret: &mut ApiKeySecret) -> Option<ApiKey> {
    let arn = secret.arn().to_owned();
    let source = secret.credentials_source();
    match tokio::time::timeout(SECRET_TIMEOUT, secret.resolve()).await {
        Ok(Ok(key)) => {
            report.secret = Secret(Some(key.expose().to_owned()));
            report.push(
                "secret",
                Outcome::Ok,
                format!(
                    "API key read from {arn} at {} (AWS credentials: {source})",
                    secret.endpoint()
                ),
            );
            Some(key)
        }
        Ok(Err(e)) => {
            report.push(
                "secret",
                Outcome::Fail,
                format!("{} problem: {}", e.what_failed(), Chain(&e)),
            );
            None
        }
        Err(_) => {
            report.push(
                "secret",
                Outcome::Fail,
                format!(
                    "reading {arn} from {} timed out after {}s (AWS credentials: {source}); check \
                     network access to Secrets Manager (AWS_ENDPOINT_URL_SECRETS_MANAGER) and the \
                     credentials",
                    secret.endpoint(),
                    SECRET_TIMEOUT.as_secs()
                ),
            );
            None
        }
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

/// Resolve the intake host and open a TCP connection. Returns false when either fails.
async fn check_reachable(report: &mut Report, url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let fix = "check DD_SITE (site) / DD_DD_URL (dd_url), DNS and the firewall";
    let lookup = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await;
    let addrs: Vec<SocketAddr> = match lookup {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            report.push(
                "intake dns",
                Outcome::Fail,
                format!("cannot resolve {host}: {e}; {fix}"),
            );
            return false;
        }
        Err(_) => {
            report.push(
                "intake dns",
                Outcome::Fail,
                format!("resolving {host} timed out; {fix}"),
            );
            return false;
        }
    };
    let Some(first) = addrs.first().copied() else {
        report.push(
            "intake dns",
            Outcome::Fail,
            format!("{host} has no address; {fix}"),
        );
        return false;
    };
    report.push(
        "intake dns",
        Outcome::Ok,
        format!("{host} resolves to {}", first.ip()),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(first)).await {
        Ok(Ok(_)) => {
            report.push("intake tcp", Outcome::Ok, format!("connected to {first}"));
            true
        }
        Ok(Err(e)) => {
            report.push(
                "intake tcp",
                Outcome::Fail,
                format!("cannot connect to {first}: {e}; {fix}"),
            );
            false
        }
        Err(_) => {
            report.push(
                "intake tcp",
                Outcome::Fail,
                format!("connecting to {first} timed out; {fix}"),
            );
            false
        }
    }
}

/// Validate `key` against the intake; `fix` says what to change when the intake refuses it.
async fn check_api_key(
    report: &mut Report,
    config: &Config,
    url: &reqwest::Url,
    key: &str,
    fix: &str,
) {
    let fwd = &config.forward;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(fwd.timeout)
        .connect_timeout(CONNECT_TIMEOUT)
        .danger_accept_invalid_certs(fwd.skip_tls_verify)
        .user_agent(concat!("offpath/", env!("CARGO_PKG_VERSION")));
    if let Some(proxy) = fwd.proxy.as_deref() {
        match reqwest::Proxy::https(proxy) {
            Ok(p) => builder = builder.proxy(p),
            Err(e) => {
                report.push(
                    "api key",
                    Outcome::Fail,
                    format!("invalid proxy URL: {e}; fix DD_PROXY_HTTPS (proxy.https)"),
                );
                return;
            }
        }
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            report.push(
                "api key",
                Outcome::Fail,
                format!("cannot build the HTTP client: {}", Chain(&e)),
            );
            return;
        }
    };
    let mut validate = url.clone();
    validate.set_path("/api/v1/validate");
    let response = client
        .get(validate.clone())
        .header("DD-API-KEY", key)
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => {
            report.push(
                "api key",
                Outcome::Ok,
                format!(
                    "valid for {} ({})",
                    fwd.site,
                    url.as_str().trim_end_matches('/')
                ),
            );
        }
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => report.push(
            "api key",
            Outcome::Fail,
            format!(
                "the intake rejected the API key (HTTP {}): {fix} of the organisation on site {} \
                 (DD_SITE / site)",
                r.status().as_u16(),
                fwd.site
            ),
        ),
        Ok(r) => report.push(
            "api key",
            Outcome::Fail,
            format!(
                "unexpected HTTP {} from {validate}; check DD_DD_URL (dd_url) / DD_SITE (site)",
                r.status().as_u16()
            ),
        ),
        Err(e) => report.push(
            "api key",
            Outcome::Fail,
            format!(
                "request to {validate} failed: {}; check DD_DD_URL (dd_url), DD_PROXY_HTTPS \
                 (proxy.https) and TLS",
                Chain(&e)
            ),
        ),
    }
}

/// Look for the log group with `DescribeLogGroups` and report access problems.
#[cfg(feature = "cloudwatch")]
async fn check_log_group(
    report: &mut Report,
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
) {
    let region = client
        .config()
        .region()
        .map_or_else(|| "?".to_owned(), ToString::to_string);
    let mut token: Option<String> = None;
    for _ in 0..MAX_LOG_GROUP_PAGES {
        let call = client
            .describe_log_groups()
            .log_group_name_prefix(group)
            .set_next_token(token.take())
            .send();
        let page = match tokio::time::timeout(AWS_TIMEOUT, call).await {
            Err(_) => {
                report.push(
                    "cloudwatch",
                    Outcome::Fail,
                    format!(
                        "DescribeLogGroups in {region} timed out; check AWS_REGION, \
                         AWS_ENDPOINT_URL_CLOUDWATCH_LOGS and network access"
                    ),
                );
                return;
            }
            Ok(Err(e)) => {
                let fix = match e.code() {
                    Some("AccessDeniedException") => {
                        "grant logs:DescribeLogGroups, logs:CreateLogGroup, logs:CreateLogStream \
                         and logs:PutLogEvents on the group to offpath's role"
                    }
                    Some(
                        "UnrecognizedClientException"
                        | "InvalidSignatureException"
                        | "ExpiredTokenException",
                    ) => "check the AWS credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE / role)",
                    _ => {
                        "check AWS credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE / role), AWS_REGION \
                         and AWS_ENDPOINT_URL_CLOUDWATCH_LOGS, or unset OFFPATH_FALLBACK_LOG_GROUP"
                    }
                };
                report.push(
                    "cloudwatch",
                    Outcome::Fail,
                    format!(
                        "DescribeLogGroups for {group} in {region} failed: {}; {fix}",
                        DisplayErrorContext(&e)
                    ),
                );
                return;
            }
            Ok(Ok(page)) => page,
        };
        if page
            .log_groups()
            .iter()
            .any(|g| g.log_group_name() == Some(group))
        {
            report.push(
                "cloudwatch",
                Outcome::Ok,
                format!("log group {group} is reachable in {region}"),
            );
            return;
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    report.push(
        "cloudwatch",
        Outcome::Warn,
        format!(
            "log group {group} does not exist in {region}; offpath creates it on first use \
             (needs logs:CreateLogGroup, logs:CreateLogStream, logs:PutLogEvents)"
        ),
    );
}

/// Why `offpath health` reports the agent unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The status endpoint is disabled in the configuration.
    #[error("the status endpoint is disabled (OFFPATH_STATUS_ADDR is empty); pass --addr")]
    Disabled,
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// No connection or no answer.
    #[error("no answer from http://{addr}/health")]
    Io {
        /// The status address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("no answer from http://{addr}/health within {timeout:?}")]
    Timeout {
        /// The status address.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The endpoint answered something other than 200.
    #[error("unhealthy: {status_line} {body}")]
    Unhealthy {
        /// The HTTP status line.
        status_line: String,
        /// The body (the reason).
        body: String,
    },
}

/// `offpath health`: query `/health`, print one line, return the exit code (0 healthy, 1 not).
pub async fn health_command(args: &HealthArgs) -> i32 {
    let result = async {
        let addr = health_addr(args)?;
        probe_health(addr, Duration::from_secs(args.timeout.max(1))).await
    }
    .await;
    match result {
        Ok(body) => {
            println!("healthy: {body}");
            0
        }
        Err(e) => {
            eprintln!("offpath health: {}", Chain(&e));
            1
        }
    }
}

/// The address `offpath health` queries: `--addr`, else the configured status address; an
/// unspecified IP (`0.0.0.0`) is queried on loopback.
///
/// # Errors
/// [`ProbeError::Config`] when the configuration does not load, [`ProbeError::Disabled`] when the
/// endpoint is disabled.
pub fn health_addr(args: &HealthArgs) -> Result<SocketAddr, ProbeError> {
    let mut addr = match args.addr {
        Some(a) => a,
        None => {
            let config = match args.config.as_deref() {
                Some(p) => Config::from_file_and_env(p)?.0,
                None => Config::from_env().map_err(|error| LoadError::Invalid {
                    error,
                    origin: "in the environment".to_owned(),
                })?,
            };
            config.ops.status_addr.ok_or(ProbeError::Disabled)?
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// `GET /health` over plain HTTP/1.0 (no proxy, no TLS: loopback only). Returns the body on 200.
///
/// # Errors
/// [`ProbeError`] when there is no answer in time or the status is not 200.
pub async fn probe_health(addr: SocketAddr, timeout: Duration) -> Result<String, ProbeError> {
    let io = |source| ProbeError::Io { addr, source };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
        let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut response = Vec::with_capacity(512);
        // The answer is a few hundred bytes; read at most 64 KiB.
        (&mut stream)
            .take(64 * 1024)
            .read_to_end(&mut response)
            .await
            .map_err(io)?;
        Ok::<_, ProbeError>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    let body = body.trim().to_owned();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(body)
    } else {
        Err(ProbeError::Unhealthy { status_line, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    type Handler = fn(&str, &HashMap<String, String>, &str) -> (u16, String);

    /// A tiny HTTP server on port 0 answering with `handler(path, headers, body)`.
    async fn fake_server(handler: Handler) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: Request<hyper::body::Incoming>| async move {
                            let path = req.uri().path().to_owned();
                            let headers: HashMap<String, String> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let (status, text) =
                                handler(&path, &headers, &String::from_utf8_lossy(&body));
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-amz-json-1.1")
                                    .body(Full::new(Bytes::from(text)))
                                    .unwrap(),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    fn config(pairs: &[(&str, String)]) -> Config {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Config::load(&move |k: &str| map.get(k).cloned()).unwrap()
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn intake(path: &str, headers: &HashMap<String, String>, _: &str) -> (u16, String) {
        match (path, headers.get("dd-api-key").map(String::as_str)) {
            ("/api/v1/validate", Some(KEY)) => (200, r#"{"valid":true}"#.into()),
            ("/api/v1/validate", _) => (403, r#"{"errors":["Forbidden"]}"#.into()),
            _ => (404, String::new()),
        }
    }

    fn line<'a>(report: &'a Report, name: &str) -> &'a CheckLine {
        report
            .lines
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no {name} line in:\n{report}"))
    }

    #[tokio::test]
    async fn a_valid_key_passes_every_check() {
        let addr = fake_server(intake).await;
        let c = config(&[
            ("DD_API_KEY", KEY.into()),
            ("DD_DD_URL", format!("http://{addr}")),
        ]);
        let report = check_config(&c, "test", &[]).await;
        assert!(report.passed(), "{report}");
        assert_eq!(report.exit_code(), 0);
        assert_eq!(line(&report, "intake dns").outcome, Outcome::Ok);
        assert_eq!(line(&report, "intake tcp").outcome, Outcome::Ok);
        assert_eq!(line(&report, "api key").outcome, Outcome::Ok);
        assert!(!report.to_string().contains(KEY));
        assert!(!format!("{report:?}").contains(KEY));
    }

    #[tokio::test]
    async fn a_rejected_key_fails_and_names_dd_api_key_without_printing_it() {
        let addr = fake_server(intake).await;
        let wrong = "ffffffffffffffffffffffffffffffff";
        let c = config(&[
            ("DD_API_KEY", wrong.into()),
            ("DD_DD_URL", format!("http://{addr}")),
        ]);
        let report = check_config(&c, "test", &[]).await;
        assert_eq!(report.exit_code(), 1, "{report}");
        let l = line(&report, "api key");
        assert_eq!(l.outcome, Outcome::Fail);
        assert!(l.detail.contains("HTTP 403"), "{}", l.detail);
        assert!(l.detail.contains("DD_API_KEY"), "{}", l.detail);
        assert!(!report.to_string().contains(wrong));
    }

    #[tokio::test]
    async fn an_unreachable_intake_fails_at_the_tcp_check() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = config(&[
            ("DD_API_KEY", KEY.into()),
            ("DD_DD_URL", format!("http://127.0.0.1:{port}")),
        ]);
        let report = check_config(&c, "test", &[]).await;
        assert_eq!(report.exit_code(), 1);
        let l = line(&report, "intake tcp");
        assert_eq!(l.outcome, Outcome::Fail, "{report}");
        assert!(l.detail.contains("DD_DD_URL"), "{}", l.detail);
        assert!(report.lines.iter().all(|l| l.name != "api key"));
    }

    #[tokio::test]
    async fn an_unresolvable_host_fails_at_the_dns_check() {
        let c = config(&[
            ("DD_API_KEY", KEY.into()),
            ("DD_DD_URL", "https://offpath-check.invalid".into()),
        ]);
        let report = check_config(&c, "test", &[]).await;
        let l = line(&report, "intake dns");
        assert_eq!(l.outcome, Outcome::Fail, "{report}");
        assert!(l.detail.contains("DD_SITE"), "{}", l.detail);
    }

    #[tokio::test]
    async fn an_unexpected_status_is_a_failure_that_names_the_url_key() {
        let addr = fake_server(|_, _, _| (500, "boom".into())).await;
        let c = config(&[
            ("DD_API_KEY", KEY.into()),
            ("DD_DD_URL", format!("http://{addr}")),
        ]);
        let report = check_config(&c, "test", &[]).await;
        let l = line(&report, "api key");
        assert_eq!(l.outcome, Outcome::Fail);
        assert!(l.detail.contains("HTTP 500") && l.detail.contains("DD_DD_URL"));
    }

    const WRONG: &str = "ffffffffffffffffffffffffffffffff";

    fn secret_arn(name: &str) -> String {
        format!("arn:aws:secretsmanager:eu-west-1:123456789012:secret:{name}")
    }

    /// The intake, a Secrets Manager that checks the request is signed and answers by secret name,
    /// and a container credentials endpoint at `/creds` (token `Bearer t0ken`), on one server.
    fn intake_and_aws(path: &str, headers: &HashMap<String, String>, body: &str) -> (u16, String) {
        if path == "/creds" {
            return match headers.get("authorization").map(String::as_str) {
                Some("Bearer t0ken") => (
                    200,
                    r#"{"AccessKeyId":"ASIACONTAINER","SecretAccessKey":"s","Token":"t"}"#.into(),
                ),
                _ => (
                    401,
                    r#"{"code":"AccessDenied","message":"bad token"}"#.into(),
                ),
            };
        }
        if headers.get("x-amz-target").map(String::as_str) != Some("secretsmanager.GetSecretValue")
        {
            return intake(path, headers, body);
        }
        let auth = headers.get("authorization").cloned().unwrap_or_default();
        let signed_by = |id: &str| {
            auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={id}/"))
                && auth.contains("/eu-west-1/secretsmanager/aws4_request")
        };
        if !signed_by("AKIDCHECK") && !signed_by("ASIACONTAINER") {
            return (
                400,
                r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#.into(),
            );
        }
        let value = |key: &str| (200, format!(r#"{{"SecretString":"{key}"}}"#));
        if body.contains(":secret:good\"") {
            value(KEY)
        } else if body.contains(":secret:wrong\"") {
            value(WRONG)
        } else if body.contains(":secret:denied\"") {
            (
                400,
                r#"{"__type":"AccessDeniedException","message":"User: arn:aws:sts::1:assumed-role/r/s is not authorized"}"#.into(),
            )
        } else {
            (
                400,
                r#"{"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}"#.into(),
            )
        }
    }

    /// `check_config_with_secret` for `DD_API_KEY_SECRET_ARN=<arn of name>` against `addr`, the secret
    /// signed with the credentials in `aws_env` (plus the endpoint override).
    async fn check_secret_named(
        addr: SocketAddr,
        name: &str,
        aws_env: &[(&str, String)],
    ) -> Report {
        let arn = secret_arn(name);
        let c = config(&[
            ("DD_API_KEY_SECRET_ARN", arn.clone()),
            ("DD_DD_URL", format!("http://{addr}")),
        ]);
        let mut vars: HashMap<String, String> = aws_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        vars.insert(
            "AWS_ENDPOINT_URL_SECRETS_MANAGER".into(),
            format!("http://{addr}"),
        );
        let secret = ApiKeySecret::from_lookup(&arn, &|k| vars.get(k).cloned()).unwrap();
        check_config_with_secret(&c, "test", &[], Some(secret)).await
    }

    fn env_credentials() -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "AKIDCHECK".into()),
            ("AWS_SECRET_ACCESS_KEY", "secret".into()),
        ]
    }

    #[tokio::test]
    async fn a_key_read_from_the_secret_is_validated_against_the_intake_and_never_printed() {
        let addr = fake_server(intake_and_aws).await;
        let report = check_secret_named(addr, "good", &env_credentials()).await;
        assert!(report.passed(), "{report}");
        let s = line(&report, "secret");
        assert_eq!(s.outcome, Outcome::Ok);
        assert!(s.detail.contains(&secret_arn("good")), "{}", s.detail);
        assert!(
            s.detail.contains("AWS credentials: environment"),
            "{}",
            s.detail
        );
        assert_eq!(line(&report, "api key").outcome, Outcome::Ok);
        assert!(!report.to_string().contains(KEY), "{report}");
        assert!(!format!("{report:?}").contains(KEY));
    }

    #[tokio::test]
    async fn a_secret_holding_a_rejected_key_fails_and_says_to_fix_the_secret() {
        let addr = fake_server(intake_and_aws).await;
        let report = check_secret_named(addr, "wrong", &env_credentials()).await;
        assert_eq!(report.exit_code(), 1, "{report}");
        assert_eq!(line(&report, "secret").outcome, Outcome::Ok);
        let l = line(&report, "api key");
        assert_eq!(l.outcome, Outcome::Fail);
        assert!(l.detail.contains("HTTP 403"), "{}", l.detail);
        assert!(
            l.detail.contains(&format!(
                "store a valid API key in the secret {}",
                secret_arn("wrong")
            )),
            "{}",
            l.detail
        );
        assert!(!report.to_string().contains(WRONG), "{report}");
    }

    #[tokio::test]
    async fn a_secret_that_cannot_be_read_says_whether_the_arn_the_permission_or_the_credentials_are_at_fault()
     {
        let addr = fake_server(intake_and_aws).await;
        type Case = (
            &'static str,
            Vec<(&'static str, String)>,
            &'static [&'static str],
        );
        let cases: [Case; 4] = [
            (
                "missing",
                env_credentials(),
                &["ARN problem", "does not exist: check DD_API_KEY_SECRET_ARN"],
            ),
            (
                "denied",
                env_credentials(),
                &["permission problem", "secretsmanager:GetSecretValue"],
            ),
            (
                "good",
                vec![
                    ("AWS_ACCESS_KEY_ID", "AKIDUNKNOWN".into()),
                    ("AWS_SECRET_ACCESS_KEY", "secret".into()),
                ],
                &["credentials problem", "UnrecognizedClientException"],
            ),
            (
                "good",
                Vec::new(),
                &[
                    "credentials problem",
                    "no AWS credentials were found",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                ],
            ),
        ];
        for (name, creds, expect) in cases {
            let report = check_secret_named(addr, name, &creds).await;
            assert_eq!(report.exit_code(), 1, "{report}");
            let l = line(&report, "secret");
            assert_eq!(l.outcome, Outcome::Fail, "{report}");
            for e in expect {
                assert!(l.detail.contains(e), "{name}: {e} not in {}", l.detail);
            }
            // The intake is still checked; the key is not.
            assert_eq!(line(&report, "intake tcp").outcome, Outcome::Ok);
            assert_eq!(line(&report, "api key").outcome, Outcome::Skip, "{report}");
        }
    }

    #[tokio::test]
    async fn the_secret_can_be_read_with_container_credentials() {
        let addr = fake_server(intake_and_aws).await;
        let container = |token: &str| {
            vec![
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    format!("http://{addr}/creds"),
                ),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.to_owned()),
            ]
        };
        let report = check_secret_named(addr, "good", &container("Bearer t0ken")).await;
        assert!(report.passed(), "{report}");
        let s = line(&report, "secret");
        assert!(
            s.detail
                .contains("AWS credentials: container credentials endpoint"),
            "{}",
            s.detail
        );
        let report = check_secret_named(addr, "good", &container("Bearer nope")).await;
        let s = line(&report, "secret");
        assert_eq!(s.outcome, Outcome::Fail, "{report}");
        assert!(
            s.detail.contains("credentials problem") && s.detail.contains("HTTP 401 AccessDenied"),
            "{}",
            s.detail
        );
    }

    #[tokio::test]
    async fn with_both_the_api_key_wins_and_the_secret_is_not_read() {
        let addr = fake_server(intake).await;
        let c = config(&[
            ("DD_API_KEY", KEY.into()),
            ("DD_API_KEY_SECRET_ARN", secret_arn("good")),
            ("DD_DD_URL", format!("http://{addr}")),
        ]);
        let report = check_config(&c, "test", &[]).await;
        assert!(report.passed(), "{report}");
        assert_eq!(line(&report, "secret").outcome, Outcome::Skip);
        assert_eq!(line(&report, "api key").outcome, Outcome::Ok);
    }

    #[test]
    fn the_hostname_line_says_where_the_name_came_from_and_ecs_failures_are_warnings() {
        use crate::host::{Inspection, Resolved, Source};
        let mut report = Report::default();
        report_host(
            &mut report,
            &Inspection {
                hostname: Resolved {
                    name: "i-0abc".into(),
                    source: Source::Ec2,
                },
                notes: vec![],
                ecs_tags: Some(Ok(vec!["task_family:web".into(), "task_version:3".into()])),
            },
        );
        let l = line(&report, "hostname");
        assert_eq!(l.outcome, Outcome::Ok);
        assert_eq!(
            l.detail,
            "i-0abc (the EC2 instance id from the instance metadata service)"
        );
        assert_eq!(
            line(&report, "ecs tags").detail,
            "task_family:web,task_version:3"
        );
        let mut report = Report::default();
        report_host(
            &mut report,
            &Inspection {
                hostname: Resolved {
                    name: String::new(),
                    source: Source::None,
                },
                notes: vec!["no EC2 instance id: no answer in time".into()],
                ecs_tags: Some(Err("connection refused".into())),
            },
        );
        assert!(report.passed(), "{report}");
        assert!(
            report.lines.iter().all(|l| l.outcome == Outcome::Warn),
            "{report}"
        );
        assert!(report.to_string().contains("DD_HOSTNAME"), "{report}");
        assert!(
            report.to_string().contains("ECS_CONTAINER_METADATA_URI_V4"),
            "{report}"
        );
    }

    #[tokio::test]
    async fn histograms_that_would_ship_nothing_are_a_warning_naming_both_keys() {
        let c = config(&[
            ("DD_HISTOGRAM_AGGREGATES", "[]".into()),
            ("DD_HISTOGRAM_PERCENTILES", "[]".into()),
        ]);
        let report = check_config(&c, "test", &[]).await;
        let l = line(&report, "histograms");
        assert_eq!(l.outcome, Outcome::Warn, "{report}");
        assert!(
            l.detail.contains("DD_HISTOGRAM_AGGREGATES")
                && l.detail.contains("DD_HISTOGRAM_PERCENTILES")
        );
        let defaults = check_config(&config(&[]), "test", &[]).await;
        assert!(defaults.lines.iter().all(|l| l.name != "histograms"));
    }

    #[tokio::test]
    async fn without_an_api_key_the_intake_is_not_checked() {
        let c = config(&[]);
        let report = check_config(&c, "test", &["unknown key `x`".into()]).await;
        assert!(report.passed(), "{report}");
        assert_eq!(line(&report, "api key").outcome, Outcome::Skip);
        assert!(report.lines.iter().all(|l| !l.name.starts_with("intake")));
        assert!(
            report
                .lines
                .iter()
                .any(|l| l.outcome == Outcome::Warn && l.detail.contains("unknown key"))
        );
    }

    #[tokio::test]
    async fn an_invalid_config_file_exits_2_and_names_the_key() {
        let dir = std::env::temp_dir().join(format!("offpath-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.yaml");
        std::fs::write(&path, "dogstatsd_buffer_size: lots\n").unwrap();
        let report = run(Some(&path)).await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(report.exit_code(), 2);
        let l = line(&report, "config");
        assert!(
            l.detail.contains("DD_DOGSTATSD_BUFFER_SIZE"),
            "{}",
            l.detail
        );
        assert!(l.detail.contains("dogstatsd_buffer_size"), "{}", l.detail);
    }

    #[cfg(feature = "cloudwatch")]
    fn cloudwatch_client(addr: SocketAddr) -> aws_sdk_cloudwatchlogs::Client {
        use aws_sdk_cloudwatchlogs::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_cloudwatchlogs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .endpoint_url(format!("http://{addr}"))
            .build();
        aws_sdk_cloudwatchlogs::Client::from_conf(conf)
    }

    #[cfg(feature = "cloudwatch")]
    fn cloudwatch(_: &str, headers: &HashMap<String, String>, body: &str) -> (u16, String) {
        assert_eq!(
            headers.get("x-amz-target").map(String::as_str),
            Some("Logs_20140328.DescribeLogGroups")
        );
        if body.contains("\"/denied\"") {
            (
                400,
                r#"{"__type":"AccessDeniedException","message":"not authorized"}"#.into(),
            )
        } else if body.contains("\"/exists\"") && !body.contains("nextToken") {
            (
                200,
                r#"{"logGroups":[{"logGroupName":"/exists/other"}],"nextToken":"t1"}"#.into(),
            )
        } else if body.contains("\"/exists\"") {
            (200, r#"{"logGroups":[{"logGroupName":"/exists"}]}"#.into())
        } else {
            (200, r#"{"logGroups":[]}"#.into())
        }
    }

    #[cfg(feature = "cloudwatch")]
    #[tokio::test]
    async fn an_existing_log_group_is_found_across_pages() {
        let client = cloudwatch_client(fake_server(cloudwatch).await);
        let mut report = Report::default();
        check_log_group(&mut report, &client, "/exists").await;
        let l = line(&report, "cloudwatch");
        assert_eq!(l.outcome, Outcome::Ok, "{report}");
        assert!(l.detail.contains("eu-west-1"));
    }

    #[cfg(feature = "cloudwatch")]
    #[tokio::test]
    async fn a_missing_log_group_is_a_warning_because_offpath_creates_it() {
        let client = cloudwatch_client(fake_server(cloudwatch).await);
        let mut report = Report::default();
        check_log_group(&mut report, &client, "/missing").await;
        assert_eq!(
            line(&report, "cloudwatch").outcome,
            Outcome::Warn,
            "{report}"
        );
        assert!(report.passed());
    }

    #[cfg(feature = "cloudwatch")]
    #[tokio::test]
    async fn denied_access_fails_with_the_permissions_to_grant() {
        let client = cloudwatch_client(fake_server(cloudwatch).await);
        let mut report = Report::default();
        check_log_group(&mut report, &client, "/denied").await;
        let l = line(&report, "cloudwatch");
        assert_eq!(l.outcome, Outcome::Fail, "{report}");
        assert!(l.detail.contains("logs:DescribeLogGroups"), "{}", l.detail);
    }

    #[tokio::test]
    async fn the_health_probe_reads_the_status_and_body() {
        let ok = fake_server(|p, _, _| match p {
            "/health" => (200, "ok".into()),
            _ => (404, String::new()),
        })
        .await;
        assert_eq!(
            probe_health(ok, Duration::from_secs(5)).await.unwrap(),
            "ok"
        );
        let bad = fake_server(|_, _, _| (503, "listeners down".into())).await;
        let e = probe_health(bad, Duration::from_secs(5)).await.unwrap_err();
        assert!(e.to_string().contains("503"), "{e}");
        assert!(e.to_string().contains("listeners down"), "{e}");
    }

    #[tokio::test]
    async fn the_health_probe_fails_when_nothing_listens() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let e = probe_health(addr, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Io { .. }), "{e}");
    }

    #[test]
    fn health_queries_loopback_when_the_status_address_is_unspecified() {
        let args = HealthArgs {
            addr: Some("0.0.0.0:8126".parse().unwrap()),
            ..HealthArgs::default()
        };
        assert_eq!(
            health_addr(&args).unwrap(),
            "127.0.0.1:8126".parse().unwrap()
        );
    }
}
