use super::wire::SignedRequest;
use super::*;
use crate::auth::aws::AwsCredentials;

const ARN: &str = "arn:aws:secretsmanager:us-west-2:123456789012:secret:dd-api-key-AbCdEf";

fn arn() -> SecretArn {
    SecretArn::parse(ARN).unwrap()
}

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn creds(token: Option<&str>) -> AwsCredentials {
    AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: token.map(str::to_owned),
        expiration: None,
    }
}

fn header<'a>(r: &'a SignedRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn secret_arns_give_their_region_and_regional_endpoint() {
    let cases = [
        (
            ARN,
            "us-west-2",
            "https://secretsmanager.us-west-2.amazonaws.com",
        ),
        (
            "arn:aws-cn:secretsmanager:cn-north-1:1:secret:k",
            "cn-north-1",
            "https://secretsmanager.cn-north-1.amazonaws.com.cn",
        ),
        (
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:1:secret:k:with:colons",
            "us-gov-west-1",
            "https://secretsmanager.us-gov-west-1.amazonaws.com",
        ),
    ];
    for (arn, region, endpoint) in cases {
        let a = SecretArn::parse(arn).unwrap();
        assert_eq!(a.region(), region, "{arn}");
        assert_eq!(a.default_endpoint(), endpoint, "{arn}");
        assert_eq!(a.as_str(), arn);
    }
}

#[test]
fn anything_but_a_secrets_manager_secret_arn_is_refused_naming_the_key() {
    for bad in [
        "",
        "dd-api-key",
        "arn:aws:secretsmanager:us-east-1:123456789012",
        "arn:aws:ssm:us-east-1:123456789012:parameter:dd",
        "arn:aws:secretsmanager::123456789012:secret:dd",
        "arn:aws:secretsmanager:US-EAST-1:123456789012:secret:dd",
        "arn:aws:secretsmanager:us-east-1::secret:dd",
        "arn:aws:secretsmanager:us-east-1:123456789012:key:dd",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
        "urn:aws:secretsmanager:us-east-1:123456789012:secret:dd",
    ] {
        let e = SecretArn::parse(bad).unwrap_err();
        assert!(
            e.to_string().contains("DD_API_KEY_SECRET_ARN"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn the_endpoint_override_follows_the_standard_aws_names() {
    let a = arn();
    assert_eq!(
        endpoint(&a, &env_of(&[])),
        "https://secretsmanager.us-west-2.amazonaws.com"
    );
    assert_eq!(
        endpoint(
            &a,
            &env_of(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/")])
        ),
        "http://127.0.0.1:5000"
    );
    assert_eq!(
        endpoint(
            &a,
            &env_of(&[
                ("AWS_ENDPOINT_URL", "http://general"),
                ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "https://vpce-1.example"),
            ])
        ),
        "https://vpce-1.example"
    );
    assert_eq!(
        endpoint(&a, &env_of(&[("AWS_ENDPOINT_URL_SECRETS_MANAGER", " ")])),
        "https://secretsmanager.us-west-2.amazonaws.com"
    );
}

#[test]
fn credentials_need_a_key_id_and_a_secret_and_never_print_the_secret() {
    assert_eq!(AwsCredentials::from_lookup(&env_of(&[])), None);
    assert_eq!(
        AwsCredentials::from_lookup(&env_of(&[("AWS_ACCESS_KEY_ID", "AKID")])),
        None
    );
    let c = AwsCredentials::from_lookup(&env_of(&[
        ("AWS_ACCESS_KEY_ID", "AKID"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ("AWS_SESSION_TOKEN", "tok3n"),
    ]))
    .unwrap();
    assert_eq!(c.session_token.as_deref(), Some("tok3n"));
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("tok3n"),
        "{shown}"
    );
}

#[test]
fn the_request_is_a_signed_json_1_1_get_secret_value_call() {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_060_211); // 2024-05-30T09:10:11Z
    let r = get_secret_value_request(
        &arn(),
        &creds(Some("session-token")),
        "https://secretsmanager.us-west-2.amazonaws.com",
        time,
    )
    .unwrap();
    assert_eq!(r.url, "https://secretsmanager.us-west-2.amazonaws.com/");
    assert_eq!(
        String::from_utf8(r.body.clone()).unwrap(),
        format!(r#"{{"SecretId":"{ARN}"}}"#)
    );
    assert_eq!(
        header(&r, "content-type"),
        Some("application/x-amz-json-1.1")
    );
    assert_eq!(
        header(&r, "x-amz-target"),
        Some("secretsmanager.GetSecretValue")
    );
    assert_eq!(header(&r, "x-amz-date"), Some("20240530T091011Z"));
    assert_eq!(header(&r, "x-amz-security-token"), Some("session-token"));
    let auth = header(&r, "authorization").unwrap();
    assert!(
        auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240530/us-west-2/secretsmanager/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="
        ),
        "{auth}"
    );
    // The same signature botocore computes for this request (its SigV4Auth, same inputs).
    assert!(
        auth.ends_with(
            "Signature=ecbf60141138c5c5311b7ddfa6b6dfd29c5ed6b98c0451fe2ae232d50b36c23e"
        ),
        "{auth}"
    );
}

#[test]
fn a_request_without_session_token_signs_without_it_and_bad_endpoints_are_refused() {
    let r = get_secret_value_request(
        &arn(),
        &creds(None),
        "http://127.0.0.1:4566",
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(r.url, "http://127.0.0.1:4566/");
    assert_eq!(header(&r, "x-amz-security-token"), None);
    assert!(
        header(&r, "authorization")
            .unwrap()
            .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target,")
    );
    for bad in [
        "",
        "secretsmanager.us-west-2.amazonaws.com",
        "ftp://x",
        "http://",
    ] {
        assert!(
            matches!(
                get_secret_value_request(&arn(), &creds(None), bad, SystemTime::now()),
                Err(SecretError::Endpoint(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn the_secret_string_is_the_key_trimmed() {
    let body = br#"{"ARN":"x","Name":"dd","SecretString":"  0123456789abcdef\n","VersionId":"v1"}"#;
    assert_eq!(
        parse_response(200, body, &arn()).unwrap(),
        ApiKey::new("0123456789abcdef")
    );
}

#[test]
fn values_that_are_not_a_bare_key_are_refused_with_the_fix() {
    let cases: &[(&[u8], &str)] = &[
        (
            br#"{"SecretString":"{\"api_key\":\"abc\"}"}"#,
            "JSON object",
        ),
        (br#"{"SecretBinary":"AAEC"}"#, "binary"),
        (br#"{"SecretString":"   "}"#, "empty"),
        (br#"{"SecretString":"abc def"}"#, "spaces"),
        (br#"{"Name":"dd"}"#, "no value"),
        (b"<html>", "unreadable"),
    ];
    for (body, problem) in cases {
        let e = parse_response(200, body, &arn()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(problem), "{msg}");
        assert!(
            msg.contains("DD_API_KEY_SECRET_ARN") && msg.contains(ARN),
            "{msg}"
        );
    }
}

#[test]
fn error_answers_are_classified_with_what_to_fix() {
    let cases: &[(u16, &[u8], &str)] = &[
        (
            400,
            br#"{"__type":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."}"#,
            "does not exist: check DD_API_KEY_SECRET_ARN",
        ),
        (
            400,
            br#"{"__type":"com.amazonaws.secretsmanager#AccessDeniedException","message":"User: arn:aws:sts::1:assumed-role/r/f is not authorized"}"#,
            "secretsmanager:GetSecretValue",
        ),
        (
            400,
            br#"{"__type":"DecryptionFailure","Message":"kms"}"#,
            "kms:Decrypt",
        ),
        (
            403,
            b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>User: x is not authorized</Message></Error></ErrorResponse>",
            "secretsmanager:GetSecretValue",
        ),
        (
            400,
            br#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
            "AWS_SESSION_TOKEN",
        ),
        (
            403,
            b"<Response><Errors><Error><Code>SignatureDoesNotMatch</Code></Error></Errors></Response>",
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            400,
            br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            "HTTP 400 ThrottlingException",
        ),
        (503, b"", "HTTP 503  for DD_API_KEY_SECRET_ARN: (empty answer)"),
    ];
    for (status, body, expect) in cases {
        let e = parse_response(*status, body, &arn()).unwrap_err();
        assert!(e.to_string().contains(expect), "{status}: {e}");
    }
}
