//! `DD_API_KEY_SECRET_ARN` end to end: the real `offpath` and `offpath-lambda` binaries with no
//! `DD_API_KEY`, reading the key from Secrets Manager on the moto server (with IAM enforcement on, so
//! the SigV4 signature and the `secretsmanager:GetSecretValue` permission are checked), delivering to
//! the fake intake with that key; a missing secret or permission is logged with the fix and the
//! metrics fall back to stdout records, nothing lost; a 403 from the intake re-reads the secret once.
//! Credentials from a container credentials endpoint (Lambda SnapStart, ECS task role: the sidecar
//! through aws-config's default chain); `offpath check` and `offpath replay` with the secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use offpath_tests::cloudwatch::{FaultProxy, Moto};
use offpath_tests::fake_intake::{Answer, FakeIntake};
use offpath_tests::lambda_runtime::{
    Extension, FakeRuntime, TelemetryMode, invocation, send_lines as send,
};
use offpath_tests::secrets_manager::{self, ACCOUNT, ContainerCredentials, REGION};
use offpath_tests::support::{self, Offpath};
use serde_json::Value;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const WRONG_KEY: &str = "ffffffffffffffffffffffffffffffff";
const WAIT: Duration = Duration::from_secs(60);

/// The sum of every value `metric` carries in offpath records (series points, sketch counts).
fn record_total(stdout: &str, metric: &str) -> f64 {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .filter(|r| r["metric"] == metric)
        .map(|r| match r["kind"].as_str() {
            Some("series") => r["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[1].as_f64().unwrap() * r["interval"].as_f64().unwrap_or(1.0))
                .sum::<f64>(),
            _ => r["sketches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["cnt"].as_f64().unwrap())
                .sum(),
        })
        .sum()
}

#[tokio::test]
async fn the_sidecar_reads_its_api_key_from_secrets_manager_with_a_signed_request() {
    let moto = Moto::start();
    let arn = secrets_manager::create_secret(&moto, "dd-api-key-sidecar", KEY).await;
    let creds = secrets_manager::role_credentials(
        &moto,
        "offpath-sidecar",
        &["secretsmanager:GetSecretValue"],
    )
    .await;
    secrets_manager::enforce_iam(&moto).await;
    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let mut env = vec![
        ("DD_API_KEY_SECRET_ARN", arn.as_str()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint.as_str()),
        ("DD_DD_URL", url.as_str()),
        ("OFFPATH_FLUSH_INTERVAL", "1"),
        ("OFFPATH_SELF_TELEMETRY", "false"),
    ];
    env.extend(creds.env());
    let mut offpath = Offpath::start(&[], &env);
    send(offpath.udp.unwrap(), &["secret.sidecar.hits:3|c|#route:a"]);
    let delivered = intake
        .wait_until(WAIT, |i| !i.series("secret.sidecar.hits").is_empty())
        .await;
    assert!(
        delivered,
        "nothing delivered; stderr:\n{}\nmoto:\n{}",
        offpath.stderr(),
        moto.log()
    );
    assert_eq!(offpath.stop(), Some(0), "{}", offpath.stderr());
    let requests = intake.requests();
    assert!(requests.iter().all(|r| r.api_key_ok), "{requests:?}");
    let total: f64 = intake
        .points("secret.sidecar.hits", &["route:a"])
        .iter()
        .map(|(_, v)| v * 10.0)
        .sum();
    assert_eq!(total, 3.0);
    assert!(offpath.stdout().is_empty(), "{}", offpath.stdout());
}

/// The sidecar with credentials for a role allowed `actions` (changed by `tweak`) reads the secret at
/// its shutdown flush, is refused, and writes the one point it got (`metric` = `value`) as records.
/// Returns the logs; checks the point went to stdout, not to the intake.
async fn a_refused_read(
    case: &str,
    actions: &[&str],
    tweak: impl FnOnce(&mut secrets_manager::TempCredentials),
    metric: &str,
    value: f64,
) -> String {
    let moto = Moto::start();
    let arn = secrets_manager::create_secret(&moto, &format!("dd-api-key-{case}"), KEY).await;
    let mut creds =
        secrets_manager::role_credentials(&moto, &format!("offpath-{case}"), actions).await;
    tweak(&mut creds);
    secrets_manager::enforce_iam(&moto).await;
    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let mut env = vec![
        ("DD_API_KEY_SECRET_ARN", arn.as_str()),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("DD_DD_URL", url.as_str()),
        ("OFFPATH_SELF_TELEMETRY", "false"),
    ];
    env.extend(creds.env());
    let mut offpath = Offpath::start(&[], &env);
    send(
        offpath.udp.unwrap(),
        &[format!("{metric}:{value}|c").as_str()],
    );
    // The shutdown flush is the first one: it reads the secret, is refused, and writes the records.
    assert_eq!(offpath.stop(), Some(0), "{}", offpath.stderr());
    let stderr = offpath.stderr();
    assert!(stderr.contains("DD_API_KEY_SECRET_ARN"), "{stderr}");
    assert!(intake.series(metric).is_empty());
    assert_eq!(record_total(&offpath.stdout(), metric), value);
    stderr
}

#[tokio::test]
async fn without_the_iam_permission_the_error_names_it_and_the_metrics_fall_back() {
    let stderr = a_refused_read(
        "denied",
        &["logs:PutLogEvents"],
        |_| {},
        "secret.denied.hits",
        4.0,
    )
    .await;
    assert!(stderr.contains("secretsmanager:GetSecretValue"), "{stderr}");
    // The ARN (it ends in the secret's name and a random suffix) is named.
    assert!(stderr.contains(":secret:dd-api-key-denied"), "{stderr}");
}

#[tokio::test]
async fn a_request_signed_with_a_wrong_secret_key_is_refused_and_the_error_names_the_credentials() {
    let stderr = a_refused_read(
        "badsig",
        &["secretsmanager:GetSecretValue"],
        |c| c.secret_access_key.push('x'),
        "secret.badsig.hits",
        2.0,
    )
    .await;
    assert!(
        stderr.contains("SignatureDoesNotMatch") && stderr.contains("AWS_SECRET_ACCESS_KEY"),
        "{stderr}"
    );
}

fn get_secret_value_calls(proxy: &FaultProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.operation() == "GetSecretValue")
        .count()
}

#[tokio::test]
async fn the_lambda_extension_reads_the_key_at_the_first_flush_and_again_after_a_403() {
    let moto = Moto::start();
    // Moto checks nothing here; the proxy in front of it counts the GetSecretValue calls.
    let proxy = FaultProxy::start(&moto.endpoint, Vec::new()).await;
    let arn = secrets_manager::create_secret(&moto, "dd-api-key-lambda", WRONG_KEY).await;
    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let url = intake.url();
    let (mut ext, udp) = Extension::start_ready(
        &rt,
        &[
            ("DD_API_KEY_SECRET_ARN", arn.as_str()),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", proxy.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "ASIATESTTESTTESTTEST"),
            ("AWS_SECRET_ACCESS_KEY", "test-secret"),
            ("AWS_SESSION_TOKEN", "test-token"),
            ("DD_DD_URL", url.as_str()),
            // Room for the Python emulator on a loaded machine; a flush ends as soon as it is done.
            ("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "10000"),
        ],
    )
    .await;
    // Registered and waiting for events: the secret is not read before a flush needs it.
    assert_eq!(get_secret_value_calls(&proxy), 0);

    // A datagram is aggregated by whichever flush comes after the listener read it: invocations go on
    // until the wrong key has been refused (the first flush reads the secret, with or without data).
    send(udp, &["secret.lambda.hits:1|c"]);
    let mut n = 1;
    while !intake.requests().iter().any(|r| !r.api_key_ok) {
        assert!(
            n <= 10,
            "the wrong key never reached the intake:\n{}",
            ext.stderr()
        );
        invocation(&rt, udp, &format!("r{n}"), &[], n + 1).await;
        n += 1;
    }
    assert_eq!(get_secret_value_calls(&proxy), 1, "{}", ext.stderr());
    let refused: Vec<_> = intake
        .requests()
        .into_iter()
        .filter(|r| !r.api_key_ok)
        .collect();
    assert!(
        refused.iter().all(|r| r.answer == Answer::Status(403)),
        "{refused:?}"
    );

    // The key is rotated: the 403 makes the next flush read the secret again, and what follows is
    // delivered with the new key.
    secrets_manager::put_secret_value(&moto, &arn, KEY).await;
    send(udp, &["secret.lambda.hits:1|c"]);
    while intake
        .sketch_totals("secret.lambda.hits", &["functionname:offpath-test-fn"])
        .is_none()
    {
        assert!(
            n <= 20,
            "nothing delivered with the new key:\n{}",
            ext.stderr()
        );
        invocation(&rt, udp, &format!("r{n}"), &[], n + 1).await;
        n += 1;
    }
    assert_eq!(get_secret_value_calls(&proxy), 2, "{}", ext.stderr());
    assert!(intake.requests().iter().any(|r| r.api_key_ok));

    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    // The point refused with the old key was written to stdout, the other one delivered: nothing lost.
    assert_eq!(record_total(&ext.stdout(), "secret.lambda.hits"), 1.0);
    let hits = intake.sketch_totals("secret.lambda.hits", &[]).unwrap();
    assert_eq!(hits.cnt, 1);
    // Self-telemetry is off by default in Lambda.
    assert!(
        intake
            .series_names()
            .iter()
            .all(|n| !n.starts_with("offpath."))
    );
}

#[tokio::test]
async fn a_missing_secret_is_logged_with_the_fix_and_the_metrics_are_written_at_shutdown() {
    let moto = Moto::start();
    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let url = intake.url();
    let arn = format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:missing-AbCdEf");
    let (mut ext, udp) = Extension::start_ready(
        &rt,
        &[
            ("DD_API_KEY_SECRET_ARN", arn.as_str()),
            ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "ASIATESTTESTTESTTEST"),
            ("AWS_SECRET_ACCESS_KEY", "test-secret"),
            ("AWS_SESSION_TOKEN", "test-token"),
            ("DD_DD_URL", url.as_str()),
            ("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "10000"),
        ],
    )
    .await;
    for i in 0..3 {
        invocation(
            &rt,
            udp,
            &format!("r{i}"),
            &["secret.missing.hits:1|c"],
            i + 2,
        )
        .await;
    }
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    let stderr = ext.stderr();
    assert!(
        stderr.contains("does not exist: check DD_API_KEY_SECRET_ARN"),
        "{stderr}"
    );
    assert!(intake.sketches("secret.missing.hits", &[]).is_empty());
    assert_eq!(
        record_total(&ext.stdout(), "secret.missing.hits"),
        3.0,
        "stdout:\n{}\nstderr:\n{stderr}",
        ext.stdout()
    );
}

/// Environment that keeps aws-config's default chain to what the test gives it: no profile files
/// from the machine, no instance metadata probe.
const CHAIN_ISOLATION: [(&str, &str); 3] = [
    ("AWS_CONFIG_FILE", "/nonexistent/offpath-test/config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/offpath-test/credentials",
    ),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

#[tokio::test]
async fn the_lambda_extension_signs_with_container_credentials_when_the_environment_has_none() {
    // As a SnapStart function: no AWS_ACCESS_KEY_ID, a container credentials endpoint and its token.
    let moto = Moto::start();
    let arn = secrets_manager::create_secret(&moto, "dd-api-key-snapstart", KEY).await;
    let creds = secrets_manager::role_credentials(
        &moto,
        "offpath-snapstart",
        &["secretsmanager:GetSecretValue"],
    )
    .await;
    secrets_manager::enforce_iam(&moto).await;
    let container = ContainerCredentials::start(&creds, "snapstart-token").await;
    let intake = FakeIntake::start(KEY).await;
    let rt = FakeRuntime::start(TelemetryMode::Accept).await;
    let url = intake.url();
    let (mut ext, udp) = Extension::start_ready(
        &rt,
        &[
            ("DD_API_KEY_SECRET_ARN", arn.as_str()),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint.as_str()),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", container.url.as_str()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "snapstart-token"),
            ("DD_DD_URL", url.as_str()),
            ("OFFPATH_LAMBDA_FLUSH_BUDGET_MS", "10000"),
        ],
    )
    .await;
    assert!(
        container.calls().is_empty(),
        "credentials fetched before a flush needed them"
    );
    send(udp, &["secret.snapstart.hits:1|c"]);
    let mut n = 1;
    while intake
        .sketch_totals("secret.snapstart.hits", &["functionname:offpath-test-fn"])
        .is_none()
    {
        assert!(
            n <= 10,
            "nothing delivered:\n{}\nmoto:\n{}",
            ext.stderr(),
            moto.log()
        );
        invocation(&rt, udp, &format!("r{n}"), &[], n + 1).await;
        n += 1;
    }
    rt.shutdown("SPINDOWN", Duration::from_secs(2)).await;
    assert!(ext.wait_exit().await.success(), "{}", ext.stderr());
    // moto checked the signature made with the container credentials, fetched once with the token.
    assert_eq!(
        container.calls(),
        vec![Some("snapstart-token".to_owned())],
        "{}",
        ext.stderr()
    );
    assert!(intake.requests().iter().all(|r| r.api_key_ok));
    assert_eq!(
        intake
            .sketch_totals("secret.snapstart.hits", &[])
            .unwrap()
            .cnt,
        1
    );
}

#[tokio::test]
async fn the_sidecar_signs_with_the_task_role_found_by_the_default_credentials_chain() {
    // As an ECS task: the container credentials endpoint, its token in a file, nothing else.
    let moto = Moto::start();
    let arn = secrets_manager::create_secret(&moto, "dd-api-key-ecs", KEY).await;
    let creds = secrets_manager::role_credentials(
        &moto,
        "offpath-ecs-task",
        &["secretsmanager:GetSecretValue"],
    )
    .await;
    secrets_manager::enforce_iam(&moto).await;
    let container = ContainerCredentials::start(&creds, "task-token").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    // No trailing newline: aws-config sends the file as it is (offpath's own provider trims it).
    std::fs::write(&token_file, "task-token").unwrap();
    let token_file = token_file.to_str().unwrap();
    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let mut env = vec![
        ("DD_API_KEY_SECRET_ARN", arn.as_str()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint.as_str()),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", container.url.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file),
        ("DD_DD_URL", url.as_str()),
        ("OFFPATH_FLUSH_INTERVAL", "1"),
        ("OFFPATH_SELF_TELEMETRY", "false"),
    ];
    env.extend(CHAIN_ISOLATION);
    let mut offpath = Offpath::start(&[], &env);
    send(offpath.udp.unwrap(), &["secret.ecs.hits:3|c"]);
    let delivered = intake
        .wait_until(WAIT, |i| !i.series("secret.ecs.hits").is_empty())
        .await;
    assert!(
        delivered,
        "nothing delivered; stderr:\n{}\nmoto:\n{}",
        offpath.stderr(),
        moto.log()
    );
    assert_eq!(offpath.stop(), Some(0), "{}", offpath.stderr());
    let calls = container.calls();
    assert!(!calls.is_empty(), "{}", offpath.stderr());
    assert!(
        calls.iter().all(|c| c.as_deref() == Some("task-token")),
        "{calls:?}"
    );
    assert!(intake.requests().iter().all(|r| r.api_key_ok));
    let total: f64 = intake
        .points("secret.ecs.hits", &[])
        .iter()
        .map(|(_, v)| v * 10.0)
        .sum();
    assert_eq!(total, 3.0);
}

/// Run `offpath <args>` to completion with exactly `env` (plus PATH and HOME and
/// [`CHAIN_ISOLATION`]); returns (exit code, stdout + stderr).
async fn run_offpath(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(support::binary("offpath"))
        .args(args)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .envs(CHAIN_ISOLATION)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("offpath {args:?} did not finish"))
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), all)
}

#[tokio::test]
async fn offpath_check_reads_the_secret_validates_its_key_and_names_what_failed() {
    let moto = Moto::start();
    let good = secrets_manager::create_secret(&moto, "dd-api-key-check", KEY).await;
    let stale = secrets_manager::create_secret(&moto, "dd-api-key-stale", WRONG_KEY).await;
    let allowed = secrets_manager::role_credentials(
        &moto,
        "offpath-check",
        &["secretsmanager:GetSecretValue"],
    )
    .await;
    let denied =
        secrets_manager::role_credentials(&moto, "offpath-check-denied", &["logs:PutLogEvents"])
            .await;
    secrets_manager::enforce_iam(&moto).await;
    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let check = |arn: &str, creds: Option<&secrets_manager::TempCredentials>| {
        let mut env = vec![
            ("DD_API_KEY_SECRET_ARN", arn.to_owned()),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint.clone()),
            ("DD_DD_URL", url.clone()),
        ];
        if let Some(c) = creds {
            env.extend(c.env().map(|(k, v)| (k, v.to_owned())));
        }
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            run_offpath(&["check"], &env).await
        }
    };

    let (code, out) = check(&good, Some(&allowed)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("API key read from {good}")), "{out}");
    assert!(out.contains("AWS default chain"), "{out}");
    assert!(out.contains("all checks passed"), "{out}");
    assert!(!out.contains(KEY), "the key was printed:\n{out}");
    assert_eq!(intake.requests_to("/api/v1/validate").len(), 1);
    assert!(intake.requests_to("/api/v1/validate")[0].api_key_ok);

    let (code, out) = check(&stale, Some(&allowed)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("HTTP 403")
            && out.contains(&format!("store a valid API key in the secret {stale}")),
        "{out}"
    );
    assert!(!out.contains(WRONG_KEY), "the key was printed:\n{out}");

    let (code, out) = check(&good, Some(&denied)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("permission problem") && out.contains("secretsmanager:GetSecretValue"),
        "{out}"
    );

    let missing = format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:nope-AbCdEf");
    let (code, out) = check(&missing, Some(&allowed)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("ARN problem") && out.contains("does not exist"),
        "{out}"
    );

    let (code, out) = check(&good, None).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("credentials problem") && out.contains("no AWS credentials were found"),
        "{out}"
    );
}

#[tokio::test]
async fn offpath_replay_ships_records_with_the_key_from_the_secret() {
    let moto = Moto::start();
    let arn = secrets_manager::create_secret(&moto, "dd-api-key-replay", KEY).await;
    let creds = secrets_manager::role_credentials(
        &moto,
        "offpath-replay",
        &["secretsmanager:GetSecretValue"],
    )
    .await;
    secrets_manager::enforce_iam(&moto).await;
    let intake = FakeIntake::start(KEY).await;
    let url = intake.url();
    let now = offpath::control::unix_now();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");
    std::fs::write(
        &file,
        format!(
            "{{\"offpath\":1,\"kind\":\"series\",\"metric\":\"secret.replay.hits\",\"type\":\"count\",\
             \"interval\":10,\"points\":[[{now},5]],\"tags\":[\"route:r\"]}}\n"
        ),
    )
    .unwrap();
    let mut env = vec![
        ("DD_API_KEY_SECRET_ARN", arn.as_str()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint.as_str()),
        ("DD_DD_URL", url.as_str()),
    ];
    env.extend(creds.env());
    let (code, out) = run_offpath(&["replay", "--from-file", file.to_str().unwrap()], &env).await;
    assert_eq!(code, Some(0), "{out}\nmoto:\n{}", moto.log());
    assert!(out.contains("delivered=1 not_delivered=0"), "{out}");
    assert_eq!(
        intake.points("secret.replay.hits", &["route:r"]),
        vec![(now, 5.0)]
    );
    assert!(intake.requests().iter().all(|r| r.api_key_ok));
    assert!(!out.contains(KEY), "the key was printed:\n{out}");

    // A secret that cannot be read stops the replay before anything is sent, saying why.
    let missing = format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:nope-AbCdEf");
    env[0] = ("DD_API_KEY_SECRET_ARN", missing.as_str());
    let (code, out) = run_offpath(&["replay", "--from-file", file.to_str().unwrap()], &env).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("does not exist: check DD_API_KEY_SECRET_ARN"),
        "{out}"
    );
    assert_eq!(intake.points("secret.replay.hits", &["route:r"]).len(), 1);
}
