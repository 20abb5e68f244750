//! Lambda tags added to every metric, lower-cased like Datadog's.
//!
//! | tag | source |
//! | --- | --- |
//! | `functionname` | register response `functionName` (else `AWS_LAMBDA_FUNCTION_NAME`) |
//! | `region` | `AWS_REGION` (else the invoked ARN) |
//! | `account_id`, `aws_account` | register response `accountId` (else the invoked ARN) |
//! | `memorysize` | `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` |
//! | `architecture` | the binary's own architecture: `x86_64` or `arm64` |
//! | `function_arn` | `arn:<partition>:lambda:<region>:<account>:function:<name>`, unqualified |
//! | `executedversion` | register response `functionVersion`, unless `$LATEST` |
//! | `resource` | `<functionname>`, or `<functionname>:<executedversion>` for a published version |
//! | `runtime` | see below |
//!
//! **Runtime.** `AWS_EXECUTION_ENV` (e.g. `AWS_Lambda_python3.12`) is set for the runtime but is one of
//! the variables Lambda hides from extensions, and the runtime process only starts after every
//! extension has registered. So the runtime is read from the runtime process's environment
//! (`/proc/<pid>/environ`, same user) at the first `INVOKE`; OS-only runtimes, which set no
//! `AWS_EXECUTION_ENV`, are named from `/etc/os-release` (`provided.al2023`, `provided.al2`). If
//! neither says anything, the tag is left out.

use std::path::Path;

use crate::extension::Registration;

/// Upper bound on `/proc` entries looked at when searching for the runtime's environment.
const MAX_PROC_ENTRIES: usize = 256;

/// The Lambda tags known so far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LambdaTags {
    /// `functionname`
    pub function_name: Option<String>,
    /// `region`
    pub region: Option<String>,
    /// `account_id`
    pub account_id: Option<String>,
    /// `memorysize`
    pub memory_size: Option<String>,
    /// `architecture`
    pub architecture: Option<String>,
    /// `executedversion`
    pub executed_version: Option<String>,
    /// `runtime`
    pub runtime: Option<String>,
}

fn clean(v: Option<String>) -> Option<String> {
    v.map(|v| v.trim().to_lowercase()).filter(|v| !v.is_empty())
}

/// `x86_64` or `arm64` for a Rust `std::env::consts::ARCH` value; other values pass through.
pub fn architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "aarch64" => "arm64",
        other => other,
    }
}

impl LambdaTags {
    /// The tags known at registration: from the register response and the environment (`env` looks
    /// a variable up), and the architecture (a `std::env::consts::ARCH` value).
    pub fn from_registration(
        reg: &Registration,
        env: impl Fn(&str) -> Option<String>,
        rust_arch: &str,
    ) -> Self {
        let function_name = Some(reg.function_name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| env("AWS_LAMBDA_FUNCTION_NAME"));
        let version = Some(reg.function_version.clone())
            .filter(|v| !v.is_empty())
            .or_else(|| env("AWS_LAMBDA_FUNCTION_VERSION"))
            .filter(|v| v != "$LATEST");
        Self {
            function_name: clean(function_name),
            region: clean(env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"))),
            account_id: clean(reg.account_id.clone()),
            memory_size: clean(env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")),
            architecture: clean(Some(architecture(rust_arch).to_owned())),
            executed_version: clean(version),
            runtime: None,
        }
    }

    /// Fill what is still missing (region, account id, function name) from an invoked function ARN
    /// (`arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`). Returns whether any tag
    /// was learned.
    pub fn learn_from_arn(&mut self, arn: &str) -> bool {
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() < 7 || parts[0] != "arn" || parts[2] != "lambda" || parts[5] != "function" {
            return false;
        }
        let mut learned = false;
        for (slot, value) in [
            (&mut self.region, parts[3]),
            (&mut self.account_id, parts[4]),
            (&mut self.function_name, parts[6]),
        ] {
            if slot.is_none() && !value.is_empty() {
                *slot = Some(value.to_lowercase());
                learned = true;
            }
        }
        learned
    }

    /// Set the runtime; returns whether it changed.
    pub fn set_runtime(&mut self, runtime: &str) -> bool {
        let runtime = clean(Some(runtime.to_owned()));
        let changed = runtime.is_some() && runtime != self.runtime;
        if changed {
            self.runtime = runtime;
        }
        changed
    }

    /// The unqualified function ARN, when region, account and name are known.
    pub fn function_arn(&self) -> Option<String> {
        let (region, account, name) = (
            self.region.as_deref()?,
            self.account_id.as_deref()?,
            self.function_name.as_deref()?,
        );
        let partition = if region.starts_with("cn-") {
            "aws-cn"
        } else if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        };
        Some(format!(
            "arn:{partition}:lambda:{region}:{account}:function:{name}"
        ))
    }

    /// The tags as `key:value` strings, in a stable order, known ones only.
    pub fn to_tags(&self) -> Vec<String> {
        let arn = self.function_arn();
        let resource =
            self.function_name
                .as_deref()
                .map(|name| match self.executed_version.as_deref() {
                    Some(version) => format!("{name}:{version}"),
                    None => name.to_owned(),
                });
        [
            ("functionname", self.function_name.as_deref()),
            ("region", self.region.as_deref()),
            ("account_id", self.account_id.as_deref()),
            ("aws_account", self.account_id.as_deref()),
            ("resource", resource.as_deref()),
            ("memorysize", self.memory_size.as_deref()),
            ("architecture", self.architecture.as_deref()),
            ("runtime", self.runtime.as_deref()),
            ("function_arn", arn.as_deref()),
            ("executedversion", self.executed_version.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}:{v}")))
        .collect()
    }
}

/// The runtime named by one process environment (`NUL`-separated `KEY=value`): the value of
/// `AWS_EXECUTION_ENV` without its `AWS_Lambda_` prefix.
pub fn runtime_from_environ(environ: &[u8]) -> Option<String> {
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"AWS_EXECUTION_ENV="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .map(|v| {
            v.strip_prefix("AWS_Lambda_")
                .map(str::to_owned)
                .unwrap_or(v)
        })
        .filter(|v| !v.is_empty())
}

/// The runtime of an OS-only (custom) runtime, from `/etc/os-release` contents.
pub fn runtime_from_os_release(os_release: &str) -> Option<String> {
    let mut id = None;
    let mut version = None;
    for line in os_release.lines() {
        if let Some(v) = line.strip_prefix("ID=") {
            id = Some(v.trim_matches('"'));
        } else if let Some(v) = line.strip_prefix("VERSION_ID=") {
            version = Some(v.trim_matches('"'));
        }
    }
    match (id?, version?) {
        ("amzn", "2023") => Some("provided.al2023".to_owned()),
        ("amzn", "2") => Some("provided.al2".to_owned()),
        _ => None,
    }
}

/// Find the runtime: `AWS_EXECUTION_ENV` in the environment of a process under `proc_root`, else
/// what `os_release` says. Reads at most [`MAX_PROC_ENTRIES`] entries.
pub fn resolve_runtime(proc_root: &Path, os_release: &Path) -> Option<String> {
    let own = std::process::id().to_string();
    let from_proc = std::fs::read_dir(proc_root).ok().and_then(|dir| {
        dir.filter_map(Result::ok)
            .take(MAX_PROC_ENTRIES)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.bytes().all(|b| b.is_ascii_digit()) && name != own.as_str()
            })
            .find_map(|e| {
                std::fs::read(e.path().join("environ"))
                    .ok()
                    .and_then(|env| runtime_from_environ(&env))
            })
    });
    from_proc.or_else(|| {
        std::fs::read_to_string(os_release)
            .ok()
            .and_then(|s| runtime_from_os_release(&s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn reg(name: &str, version: &str, account: Option<&str>) -> Registration {
        Registration {
            function_name: name.into(),
            function_version: version.into(),
            handler: "index.handler".into(),
            account_id: account.map(str::to_owned),
        }
    }

    #[test]
    fn tags_come_from_the_register_response_and_the_environment_lower_cased() {
        let env = env_of(&[
            ("AWS_REGION", "EU-West-1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
        ]);
        let t = LambdaTags::from_registration(
            &reg("My-Function", "7", Some("123456789012")),
            env,
            "aarch64",
        );
        assert_eq!(
            t.to_tags(),
            [
                "functionname:my-function",
                "region:eu-west-1",
                "account_id:123456789012",
                "aws_account:123456789012",
                "resource:my-function:7",
                "memorysize:1024",
                "architecture:arm64",
                "function_arn:arn:aws:lambda:eu-west-1:123456789012:function:my-function",
                "executedversion:7",
            ]
        );
    }

    #[test]
    fn latest_is_not_an_executed_version_and_unknown_tags_are_left_out() {
        let t = LambdaTags::from_registration(&reg("f", "$LATEST", None), env_of(&[]), "x86_64");
        assert_eq!(
            t.to_tags(),
            ["functionname:f", "resource:f", "architecture:x86_64"]
        );
    }

    #[test]
    fn the_function_name_falls_back_to_the_environment() {
        let t = LambdaTags::from_registration(
            &Registration::default(),
            env_of(&[
                ("AWS_LAMBDA_FUNCTION_NAME", "Fn"),
                ("AWS_LAMBDA_FUNCTION_VERSION", "3"),
            ]),
            "x86_64",
        );
        assert_eq!(t.function_name.as_deref(), Some("fn"));
        assert_eq!(t.executed_version.as_deref(), Some("3"));
    }

    #[test]
    fn the_invoked_arn_fills_missing_account_and_region_but_never_overrides() {
        let mut t = LambdaTags::from_registration(
            &reg("f", "1", None),
            env_of(&[("AWS_REGION", "us-east-1")]),
            "x86_64",
        );
        assert_eq!(t.function_arn(), None);
        assert!(t.learn_from_arn("arn:aws:lambda:us-west-2:210987654321:function:other:prod"));
        assert_eq!(t.region.as_deref(), Some("us-east-1"));
        assert_eq!(t.account_id.as_deref(), Some("210987654321"));
        assert_eq!(t.function_name.as_deref(), Some("f"));
        assert_eq!(
            t.function_arn().as_deref(),
            Some("arn:aws:lambda:us-east-1:210987654321:function:f")
        );
        assert!(!t.learn_from_arn("arn:aws:lambda:us-east-1:210987654321:function:f"));
        for bad in [
            "",
            "nonsense",
            "arn:aws:s3:::bucket",
            "arn:aws:lambda:r:a:layer:x",
        ] {
            assert!(!LambdaTags::default().learn_from_arn(bad), "{bad}");
        }
    }

    #[test]
    fn the_arn_partition_follows_the_region() {
        let cases = [
            ("us-east-1", "arn:aws:"),
            ("cn-north-1", "arn:aws-cn:"),
            ("us-gov-west-1", "arn:aws-us-gov:"),
        ];
        for (region, prefix) in cases {
            let t = LambdaTags {
                region: Some(region.into()),
                account_id: Some("1".into()),
                function_name: Some("f".into()),
                ..LambdaTags::default()
            };
            assert!(t.function_arn().unwrap().starts_with(prefix), "{region}");
        }
    }

    #[test]
    fn the_runtime_is_read_from_aws_execution_env() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (
                b"PATH=/usr/bin\0AWS_EXECUTION_ENV=AWS_Lambda_python3.12\0LANG=C\0",
                Some("python3.12"),
            ),
            (
                b"AWS_EXECUTION_ENV=AWS_Lambda_nodejs20.x",
                Some("nodejs20.x"),
            ),
            (b"AWS_EXECUTION_ENV=custom\0", Some("custom")),
            (b"AWS_EXECUTION_ENV=\0", None),
            (b"PATH=/usr/bin\0", None),
            (b"", None),
        ];
        for (environ, want) in cases {
            assert_eq!(
                runtime_from_environ(environ).as_deref(),
                *want,
                "{environ:?}"
            );
        }
    }

    #[test]
    fn os_only_runtimes_are_named_from_os_release() {
        let cases = [
            (
                "NAME=\"Amazon Linux\"\nVERSION=\"2023\"\nID=\"amzn\"\nVERSION_ID=\"2023\"\n",
                Some("provided.al2023"),
            ),
            ("ID=\"amzn\"\nVERSION_ID=\"2\"\n", Some("provided.al2")),
            ("ID=debian\nVERSION_ID=\"12\"\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(runtime_from_os_release(text).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn resolve_runtime_scans_a_proc_tree_then_falls_back_to_os_release() {
        let dir = std::env::temp_dir().join(format!("offpath-tags-{}", std::process::id()));
        let proc_root = dir.join("proc");
        std::fs::create_dir_all(proc_root.join("12")).unwrap();
        std::fs::create_dir_all(proc_root.join("self")).unwrap();
        std::fs::write(proc_root.join("12/environ"), b"A=1\0").unwrap();
        std::fs::write(
            proc_root.join("self/environ"),
            b"AWS_EXECUTION_ENV=AWS_Lambda_java21\0",
        )
        .unwrap();
        let os_release = dir.join("os-release");
        std::fs::write(&os_release, "ID=amzn\nVERSION_ID=2023\n").unwrap();
        // Only numeric entries count: "self" is skipped, so the OS fallback answers.
        assert_eq!(
            resolve_runtime(&proc_root, &os_release).as_deref(),
            Some("provided.al2023")
        );
        std::fs::create_dir_all(proc_root.join("13")).unwrap();
        std::fs::write(
            proc_root.join("13/environ"),
            b"AWS_EXECUTION_ENV=AWS_Lambda_ruby3.3\0",
        )
        .unwrap();
        assert_eq!(
            resolve_runtime(&proc_root, &os_release).as_deref(),
            Some("ruby3.3")
        );
        assert_eq!(
            resolve_runtime(&dir.join("missing"), &dir.join("missing")),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
