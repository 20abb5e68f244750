use std::cell::Cell;
use std::time::Duration;

use super::*;

/// Look-ups that answer from fixed values and count their calls.
struct Fake {
    fqdn: Result<String, String>,
    instance_id: Result<String, String>,
    fqdn_calls: Cell<u32>,
    imds_calls: Cell<u32>,
}

impl Fake {
    fn new(fqdn: Result<&str, &str>, instance_id: Result<&str, &str>) -> Self {
        Self {
            fqdn: fqdn.map(str::to_owned).map_err(str::to_owned),
            instance_id: instance_id.map(str::to_owned).map_err(str::to_owned),
            fqdn_calls: Cell::new(0),
            imds_calls: Cell::new(0),
        }
    }
}

impl Lookups for Fake {
    async fn fqdn(&self, _: &str) -> Result<String, String> {
        self.fqdn_calls.set(self.fqdn_calls.get() + 1);
        self.fqdn.clone()
    }
    async fn instance_id(&self) -> Result<String, String> {
        self.imds_calls.set(self.imds_calls.get() + 1);
        self.instance_id.clone()
    }
}

fn cfg() -> HostnameConfig {
    HostnameConfig {
        ec2_timeout: Duration::from_millis(300),
        ec2_enabled: true,
        ..HostnameConfig::default()
    }
}

fn facts(os: &str) -> Facts {
    Facts {
        os_hostname: Some(os.to_owned()).filter(|o| !o.is_empty()),
        host_uts_namespace: Some(true),
        imds_endpoint: Some("http://127.0.0.1:9".to_owned()),
        ..Facts::default()
    }
}

#[track_caller]
fn run(cfg: &HostnameConfig, facts: &Facts, fargate_task: bool, fake: &Fake) -> Resolved {
    let mut notes = Vec::new();
    let fut = resolve(cfg, facts, fargate_task, fake, &mut notes);
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => panic!("the fake look-ups never wait"),
    }
}

fn r(name: &str, source: Source) -> Resolved {
    Resolved {
        name: name.to_owned(),
        source,
    }
}

#[test]
fn a_valid_configured_hostname_wins_and_nothing_is_looked_up() {
    let fake = Fake::new(Ok("web.example.com"), Ok("i-0123456789abcdef0"));
    let c = HostnameConfig {
        hostname: "my-host".into(),
        fqdn: true,
        prioritize_instance_id: true,
        ..cfg()
    };
    assert_eq!(
        run(&c, &facts("ip-10-0-0-1"), false, &fake),
        r("my-host", Source::Config)
    );
    assert_eq!((fake.fqdn_calls.get(), fake.imds_calls.get()), (0, 0));
}

#[test]
fn an_invalid_configured_hostname_is_skipped_like_the_agent() {
    let fake = Fake::new(Err("no"), Err("no"));
    for bad in [
        "localhost",
        "under_score",
        "-lead",
        "a..b",
        &"x".repeat(256),
    ] {
        let c = HostnameConfig {
            hostname: bad.into(),
            ..cfg()
        };
        assert_eq!(
            run(&c, &facts("box"), false, &fake),
            r("box", Source::Os),
            "{bad}"
        );
    }
}

#[test]
fn the_hostname_file_comes_second_and_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostname");
    std::fs::write(&path, "  from-file.example \n").unwrap();
    let fake = Fake::new(Err("no"), Err("no"));
    let c = HostnameConfig {
        hostname_file: Some(path.clone()),
        ..cfg()
    };
    assert_eq!(
        run(&c, &facts("box"), false, &fake),
        r("from-file.example", Source::File)
    );
    let c = HostnameConfig {
        hostname: "configured".into(),
        hostname_file: Some(path),
        ..cfg()
    };
    assert_eq!(
        run(&c, &facts("box"), false, &fake),
        r("configured", Source::Config)
    );
    let c = HostnameConfig {
        hostname_file: Some(dir.path().join("missing")),
        ..cfg()
    };
    assert_eq!(run(&c, &facts("box"), false, &fake), r("box", Source::Os));
}

#[test]
fn fargate_has_no_host_from_the_environment_or_the_task_metadata() {
    let fake = Fake::new(Ok("f.q.dn"), Ok("i-0123456789abcdef0"));
    let mut f = facts("ip-10-0-0-1");
    f.ecs_fargate = true;
    assert_eq!(run(&cfg(), &f, false, &fake), r("", Source::Fargate));
    assert_eq!(
        run(&cfg(), &facts("ip-10-0-0-1"), true, &fake),
        r("", Source::Fargate)
    );
    assert_eq!((fake.fqdn_calls.get(), fake.imds_calls.get()), (0, 0));
    let c = HostnameConfig {
        hostname: "pinned".into(),
        ..cfg()
    };
    assert_eq!(run(&c, &f, true, &fake), r("pinned", Source::Config));
}

#[test]
fn an_ec2_default_os_hostname_is_replaced_by_the_instance_id() {
    for os in [
        "ip-10-0-0-1",
        "IP-10-0-0-1.ec2.internal",
        "domU-12-31-39-00-00-01",
    ] {
        let fake = Fake::new(Err("no"), Ok("i-0123456789abcdef0"));
        assert_eq!(
            run(&cfg(), &facts(os), false, &fake),
            r("i-0123456789abcdef0", Source::Ec2),
            "{os}"
        );
        assert_eq!(fake.imds_calls.get(), 1);
    }
}

#[test]
fn a_chosen_os_hostname_does_not_ask_the_metadata_service() {
    let fake = Fake::new(Err("no"), Ok("i-0123456789abcdef0"));
    assert_eq!(
        run(&cfg(), &facts("web-1"), false, &fake),
        r("web-1", Source::Os)
    );
    assert_eq!(fake.imds_calls.get(), 0);
}

#[test]
fn prioritising_the_instance_id_or_ecs_on_ec2_asks_for_it_whatever_the_name() {
    let fake = Fake::new(Err("no"), Ok("i-0123456789abcdef0"));
    let c = HostnameConfig {
        prioritize_instance_id: true,
        ..cfg()
    };
    assert_eq!(
        run(&c, &facts("web-1"), false, &fake),
        r("i-0123456789abcdef0", Source::Ec2)
    );
    let mut f = facts("3f2a9c0e7b1d");
    f.ecs_ec2 = true;
    f.host_uts_namespace = Some(false);
    assert_eq!(
        run(&cfg(), &f, false, &fake),
        r("i-0123456789abcdef0", Source::Ec2)
    );
}

#[test]
fn a_failing_or_garbage_metadata_service_keeps_the_os_hostname() {
    for answer in [Err("no answer in time"), Ok("<html>oops</html>"), Ok("")] {
        let fake = Fake::new(Err("no"), answer);
        assert_eq!(
            run(&cfg(), &facts("ip-10-0-0-1"), false, &fake),
            r("ip-10-0-0-1", Source::Os),
            "{answer:?}"
        );
    }
}

#[test]
fn a_disabled_metadata_service_is_never_asked() {
    let fake = Fake::new(Err("no"), Ok("i-0123456789abcdef0"));
    let mut f = facts("ip-10-0-0-1");
    f.imds_endpoint = None;
    assert_eq!(run(&cfg(), &f, false, &fake), r("ip-10-0-0-1", Source::Os));
    let c = HostnameConfig {
        ec2_enabled: false,
        ..cfg()
    };
    assert_eq!(
        run(&c, &facts("ip-10-0-0-1"), false, &fake),
        r("ip-10-0-0-1", Source::Os)
    );
    assert_eq!(fake.imds_calls.get(), 0);
}

#[test]
fn hostname_fqdn_prefers_the_fqdn_and_falls_back_to_the_os_hostname() {
    let c = HostnameConfig {
        fqdn: true,
        ..cfg()
    };
    let fake = Fake::new(Ok("web-1.prod.example.com"), Err("no"));
    assert_eq!(
        run(&c, &facts("web-1"), false, &fake),
        r("web-1.prod.example.com", Source::Fqdn)
    );
    let fake = Fake::new(Err("does not resolve"), Err("no"));
    assert_eq!(
        run(&c, &facts("web-1"), false, &fake),
        r("web-1", Source::Os)
    );
    // An EC2 default FQDN still gives way to the instance id.
    let fake = Fake::new(Ok("ip-10-0-0-1.ec2.internal"), Ok("i-0abc"));
    assert_eq!(
        run(&c, &facts("ip-10-0-0-1"), false, &fake),
        r("i-0abc", Source::Ec2)
    );
}

#[test]
fn in_its_own_uts_namespace_the_os_hostname_is_not_used_unless_trusted() {
    let fake = Fake::new(Ok("x.example"), Err("no"));
    let mut f = facts("3f2a9c0e7b1d");
    f.host_uts_namespace = Some(false);
    let c = HostnameConfig {
        fqdn: true,
        ..cfg()
    };
    assert_eq!(run(&c, &f, false, &fake), r("", Source::None));
    assert_eq!(fake.fqdn_calls.get(), 0);
    let c = HostnameConfig {
        trust_uts_namespace: true,
        ..cfg()
    };
    assert_eq!(run(&c, &f, false, &fake), r("3f2a9c0e7b1d", Source::Os));
    f.host_uts_namespace = None;
    assert_eq!(run(&cfg(), &f, false, &fake), r("3f2a9c0e7b1d", Source::Os));
}

#[test]
fn the_provisional_name_is_the_answer_when_every_lookup_fails() {
    assert_eq!(
        provisional(&cfg(), &facts("ip-10-0-0-1")),
        r("ip-10-0-0-1", Source::Os)
    );
    let c = HostnameConfig {
        hostname: "pinned".into(),
        ..cfg()
    };
    assert_eq!(provisional(&c, &facts("x")), r("pinned", Source::Config));
    assert_eq!(provisional(&cfg(), &facts("")), r("", Source::None));
}

#[test]
fn facts_come_from_the_environment_like_the_agent_reads_it() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let f = Facts::gather(env(&[("AWS_EXECUTION_ENV", "AWS_ECS_FARGATE")]));
    assert!(f.ecs_fargate && !f.ecs_ec2);
    let f = Facts::gather(env(&[
        ("ECS_FARGATE", "true"),
        (
            "ECS_CONTAINER_METADATA_URI_V4",
            "http://169.254.170.2/v4/abc/",
        ),
    ]));
    assert!(f.ecs_fargate && !f.ecs_ec2);
    assert_eq!(
        f.ecs_metadata_uri.as_deref(),
        Some("http://169.254.170.2/v4/abc")
    );
    let f = Facts::gather(env(&[("ECS_CONTAINER_METADATA_URI_V4", "http://x")]));
    assert!(f.ecs_ec2 && !f.ecs_fargate);
    let f = Facts::gather(env(&[("AWS_EXECUTION_ENV", "AWS_ECS_EC2")]));
    assert!(f.ecs_ec2);
    let f = Facts::gather(env(&[]));
    assert_eq!(f.imds_endpoint.as_deref(), Some(DEFAULT_IMDS_ENDPOINT));
    let f = Facts::gather(env(&[(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "http://127.0.0.1:1234/",
    )]));
    assert_eq!(f.imds_endpoint.as_deref(), Some("http://127.0.0.1:1234"));
    for v in ["true", "TRUE", " True "] {
        let pairs: &'static [(&'static str, &'static str)] = match v {
            "true" => &[("AWS_EC2_METADATA_DISABLED", "true")],
            "TRUE" => &[("AWS_EC2_METADATA_DISABLED", "TRUE")],
            _ => &[("AWS_EC2_METADATA_DISABLED", " True ")],
        };
        assert_eq!(Facts::gather(env(pairs)).imds_endpoint, None, "{v}");
    }
    let f = Facts::gather(env(&[("AWS_EC2_METADATA_DISABLED", "false")]));
    assert!(f.imds_endpoint.is_some());
}

#[test]
fn validation_and_ec2_defaults_follow_the_agent() {
    for ok in [
        "a",
        "web-1",
        "web-1.example.com",
        "i-0123456789abcdef0",
        "A1",
    ] {
        assert_eq!(validate(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "LOCALHOST",
        "ip6-localhost",
        "a_b",
        "a.",
        ".a",
        "a-",
        "a b",
        "é",
    ] {
        assert!(validate(bad).is_err(), "{bad}");
    }
    assert!(is_ec2_default("ip-172-31-1-2"));
    assert!(is_ec2_default("domu-1"));
    assert!(!is_ec2_default("ec2amaz-abc"));
    assert!(!is_ec2_default("web-ip-1"));
}
