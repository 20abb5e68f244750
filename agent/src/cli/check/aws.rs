//! The AWS checks of `offpath check`: the API key secret is read from Secrets Manager, and CloudWatch
//! Logs answers for the fallback log group.

use std::time::Duration;

#[cfg(feature = "cloudwatch")]
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata};
use offpath::auth::{ApiKey, ApiKeySecret};
#[cfg(feature = "cloudwatch")]
use offpath::config::{Config, FallbackSink};
use offpath::errors::Chain;

use super::{Outcome, Report, Secret};

/// How long reading the API key secret may take (the credential chain may probe instance metadata).
const SECRET_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a CloudWatch Logs call may take.
#[cfg(feature = "cloudwatch")]
const AWS_TIMEOUT: Duration = Duration::from_secs(20);
/// Pages of `DescribeLogGroups` read while looking for the log group.
#[cfg(feature = "cloudwatch")]
const MAX_LOG_GROUP_PAGES: usize = 20;

/// Read the API key from Secrets Manager; a `secret` line says what was read or what failed (the
/// ARN, the permission, the credentials, the network). The key is redacted from the report.
pub(super) async fn check_secret(report: &mut Report, secret: &mut ApiKeySecret) -> Option<ApiKey> {
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

/// The CloudWatch Logs check with the loaded AWS configuration (`Err` when loading timed out).
#[cfg(feature = "cloudwatch")]
pub(super) async fn check_cloudwatch(
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
pub(super) fn cloudwatch_group(config: &Config) -> Option<&str> {
    match config.fallback.sink {
        FallbackSink::CloudWatch => config.fallback.log_group.as_deref(),
        FallbackSink::Stdout | FallbackSink::Off => None,
    }
}

/// Look for the log group with `DescribeLogGroups` and report access problems.
#[cfg(feature = "cloudwatch")]
pub(super) async fn check_log_group(
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
