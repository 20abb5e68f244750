//! Tests of `offpath check` against a fake intake, Secrets Manager and CloudWatch Logs on port 0.

use super::*;
use crate::cli::test_server::fake_server;
use std::collections::HashMap;
use std::net::SocketAddr;

#[cfg(feature = "cloudwatch")]
use super::aws::check_log_group;

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
    let l = line(&report, "api key");
    assert_eq!(l.outcome, Outcome::Ok);
    // DD_DD_URL wins over DD_SITE: the line names the URL, not a site that is not in use.
    assert_eq!(
        l.detail,
        format!("valid at http://{addr} (DD_DD_URL / dd_url)"),
        "{report}"
    );
    assert!(!l.detail.contains("datadoghq.com"), "{report}");
    assert!(!report.to_string().contains(KEY));
    assert!(!format!("{report:?}").contains(KEY));
}

#[test]
fn the_key_is_redacted_as_a_whole_token_never_inside_a_word() {
    assert_eq!(
        redact("OFFPATH_FALLBACK_LOG_GROUP=K (key K, OK, K-9, KK)", "K"),
        "OFFPATH_FALLBACK_LOG_GROUP=<redacted> (key <redacted>, OK, K-9, KK)"
    );
    assert_eq!(redact(KEY, KEY), "<redacted>");
    assert_eq!(
        redact(&format!("DD-API-KEY: {KEY}."), KEY),
        "DD-API-KEY: <redacted>."
    );
}

#[tokio::test]
async fn a_plain_http_intake_is_a_warning_naming_the_key_and_a_one_letter_key_mangles_nothing() {
    let addr = fake_server(intake).await;
    let c = config(&[
        ("DD_API_KEY", "K".into()),
        ("DD_DD_URL", format!("http://{addr}")),
    ]);
    let report = check_config(&c, "test", &[]).await;
    let warning = report
        .lines
        .iter()
        .find(|l| l.outcome == Outcome::Warn && l.detail.contains("plain http://"))
        .unwrap_or_else(|| panic!("no plain-http warning in:\n{report}"));
    assert!(warning.detail.contains("DD_DD_URL"), "{report}");
    let text = report.to_string();
    assert!(text.contains("DD_API_KEY"), "{text}");
    assert!(
        !text.contains("<redacted>_") && !text.contains("_<redacted>"),
        "{text}"
    );
    let https = config(&[
        ("DD_API_KEY", KEY.into()),
        ("DD_DD_URL", "https://127.0.0.1:1".into()),
    ]);
    assert!(
        https.warnings().iter().all(|w| !w.contains("http://")),
        "{:?}",
        https.warnings()
    );
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
    if headers.get("x-amz-target").map(String::as_str) != Some("secretsmanager.GetSecretValue") {
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
async fn check_secret_named(addr: SocketAddr, name: &str, aws_env: &[(&str, String)]) -> Report {
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
    use offpath::host::{Inspection, Resolved, Source};
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
