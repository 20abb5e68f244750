//! The hostname, resolved in the Datadog Agent's order (sidecar only; Lambda sends no host).
//!
//! ```text
//!  hostname (DD_HOSTNAME), if valid ─> hostname_file, if readable and valid ─> none on ECS Fargate
//!    ─> the FQDN when hostname_fqdn ─> the OS hostname ─> the EC2 instance id (IMDS) when the name so far
//!       is an EC2 default (ip-…, domu…), on ECS on EC2, or with ec2_prioritize_instance_id_as_hostname
//! ```
//! The first two and Fargate end the search; the FQDN, OS and EC2 steps each refine the name found so
//! far, and a failing step keeps it. The FQDN and OS steps are skipped when offpath runs in its own UTS
//! namespace (a container: the OS hostname names the container, not the host) unless
//! `hostname_trust_uts_namespace` is set. The Agent's GCE, Azure and container-runtime providers are not
//! consulted. Where the Agent gives up (no name at all) and refuses to start, offpath ships without a host.
//!
//! [`resolve`] takes the network look-ups as a [`Lookups`] value, so the order is tested without a network;
//! [`provisional`] is the answer when every look-up fails, which is what points carry if a flush comes
//! before the look-ups end (the Agent would have fallen back to the same name).

use std::fmt;
use std::future::Future;

pub use crate::config::HostnameConfig;

/// The longest hostname the Agent accepts (and the most bytes read from a metadata endpoint for it).
pub const MAX_HOSTNAME_LEN: usize = 255;

/// Names the Agent treats as no name at all.
const LOCAL_HOSTNAMES: [&str; 4] = [
    "localhost",
    "localhost.localdomain",
    "localhost6.localdomain6",
    "ip6-localhost",
];

/// Prefixes of the hostnames EC2 gives its Linux instances (the Agent's `IsDefaultHostname`).
const EC2_DEFAULT_PREFIXES: [&str; 2] = ["ip-", "domu"];

/// What offpath knows of where it runs, read once from the environment and the system.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// The OS hostname (`gethostname`), when there is one.
    pub os_hostname: Option<String>,
    /// Whether offpath runs in the host's UTS namespace; `None` when unknown (then assumed yes).
    pub host_uts_namespace: Option<bool>,
    /// ECS Fargate: `ECS_FARGATE` is set or `AWS_EXECUTION_ENV=AWS_ECS_FARGATE`.
    pub ecs_fargate: bool,
    /// ECS on EC2: `AWS_EXECUTION_ENV=AWS_ECS_EC2`, or (not Fargate) an ECS metadata or container
    /// credentials variable is set, or `/etc/ecs/ecs.config` exists.
    pub ecs_ec2: bool,
    /// `ECS_CONTAINER_METADATA_URI_V4`.
    pub ecs_metadata_uri: Option<String>,
    /// The EC2 instance metadata service base URL (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, else
    /// `http://169.254.169.254`); `None` when `AWS_EC2_METADATA_DISABLED=true`.
    pub imds_endpoint: Option<String>,
}

/// The AWS SDKs' default instance metadata address.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

impl Facts {
    /// Read the facts from `env` (a variable lookup) and the system: the OS hostname, the UTS
    /// namespace, whether `/etc/ecs/ecs.config` exists.
    pub fn gather(env: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
        let execution_env = env("AWS_EXECUTION_ENV").unwrap_or_default();
        let ecs_fargate = set("ECS_FARGATE") || execution_env == "AWS_ECS_FARGATE";
        let ecs_ec2 = execution_env == "AWS_ECS_EC2"
            || (!ecs_fargate
                && (set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                    || set("ECS_CONTAINER_METADATA_URI")
                    || set("ECS_CONTAINER_METADATA_URI_V4")
                    || std::path::Path::new("/etc/ecs/ecs.config").exists()));
        let disabled =
            env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let imds_endpoint = (!disabled).then(|| {
            env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .map(|v| v.trim().trim_end_matches('/').to_owned())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_owned())
        });
        Self {
            os_hostname: super::os_hostname(),
            host_uts_namespace: super::in_host_uts_namespace(),
            ecs_fargate,
            ecs_ec2,
            ecs_metadata_uri: env("ECS_CONTAINER_METADATA_URI_V4")
                .map(|v| v.trim().trim_end_matches('/').to_owned())
                .filter(|v| !v.is_empty()),
            imds_endpoint,
        }
    }
}

/// Where the hostname came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `hostname` / `DD_HOSTNAME`.
    Config,
    /// `hostname_file`.
    File,
    /// ECS Fargate: no host, as the Agent.
    Fargate,
    /// The fully qualified name (`hostname_fqdn`).
    Fqdn,
    /// The OS hostname.
    Os,
    /// The EC2 instance id from the instance metadata service.
    Ec2,
    /// Nothing usable: points carry no host.
    None,
}

impl Source {
    /// A few words for `offpath check` and the log.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Config => "from DD_HOSTNAME (hostname)",
            Self::File => "from hostname_file",
            Self::Fargate => "none: ECS Fargate tasks have no host",
            Self::Fqdn => "the fully qualified name (hostname_fqdn)",
            Self::Os => "the OS hostname",
            Self::Ec2 => "the EC2 instance id from the instance metadata service",
            Self::None => "none: no usable name (set DD_HOSTNAME)",
        }
    }
}

/// A resolved hostname (empty for no host) and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The name; empty means points carry no host.
    pub name: String,
    /// Where it came from.
    pub source: Source,
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str(self.source.describe())
        } else {
            write!(f, "{} ({})", self.name, self.source.describe())
        }
    }
}

/// The network look-ups the resolution may need. Each is called at most once.
pub trait Lookups {
    /// The fully qualified name of the OS hostname (what `hostname -f` prints).
    fn fqdn(&self, os_hostname: &str) -> impl Future<Output = Result<String, String>>;
    /// The EC2 instance id from the instance metadata service.
    fn instance_id(&self) -> impl Future<Output = Result<String, String>>;
}

/// Look-ups that all fail at once: [`provisional`]'s view.
#[derive(Debug, Clone, Copy)]
pub struct NoLookups;

impl Lookups for NoLookups {
    async fn fqdn(&self, _: &str) -> Result<String, String> {
        Err("not looked up yet".to_owned())
    }
    async fn instance_id(&self) -> Result<String, String> {
        Err("not looked up yet".to_owned())
    }
}

/// Why a name is not a usable hostname (the Agent's `ValidHostname`), or `Ok`.
///
/// # Errors
/// The reason: empty, a local name, longer than 255 bytes, or not RFC 1123 (labels of letters, digits
/// and inner `-`, separated by `.`).
pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    if LOCAL_HOSTNAMES.iter().any(|l| l.eq_ignore_ascii_case(name)) {
        return Err(format!("{name} is a local hostname"));
    }
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(format!("it is longer than {MAX_HOSTNAME_LEN} characters"));
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if !name.split('.').all(label_ok) {
        return Err(format!("{name:?} is not RFC 1123 compliant"));
    }
    Ok(())
}

/// Whether `name` is a hostname EC2 gives by default (`ip-…`, `domu…`, any case).
pub fn is_ec2_default(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    EC2_DEFAULT_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// Resolve the hostname. `fargate_task` is true when the ECS task metadata says `LaunchType: FARGATE`.
/// `notes` collects why steps were skipped or failed (for the log and `offpath check`).
pub async fn resolve(
    cfg: &HostnameConfig,
    facts: &Facts,
    fargate_task: bool,
    lookups: &impl Lookups,
    notes: &mut Vec<String>,
) -> Resolved {
    let found = |name: String, source| Resolved { name, source };
    let configured = cfg.hostname.trim();
    if !configured.is_empty() {
        match validate(configured) {
            Ok(()) => return found(configured.to_owned(), Source::Config),
            Err(e) => notes.push(format!("DD_HOSTNAME (hostname) is not used: {e}")),
        }
    }
    if let Some(path) = &cfg.hostname_file {
        match std::fs::read_to_string(path) {
            Ok(text) => match validate(text.trim()) {
                Ok(()) => return found(text.trim().to_owned(), Source::File),
                Err(e) => notes.push(format!("hostname_file {} is not used: {e}", path.display())),
            },
            Err(e) => notes.push(format!(
                "hostname_file {} cannot be read: {e}",
                path.display()
            )),
        }
    }
    if facts.ecs_fargate || fargate_task {
        return found(String::new(), Source::Fargate);
    }
    let os_usable = cfg.trust_uts_namespace || facts.host_uts_namespace != Some(false);
    if !os_usable {
        notes.push(
            "the OS hostname names this container (own UTS namespace), not the host; set DD_HOSTNAME \
             or hostname_trust_uts_namespace"
                .to_owned(),
        );
    }
    let os = facts.os_hostname.as_deref().filter(|_| os_usable);
    let mut current: Option<Resolved> = None;
    if let (true, Some(os)) = (cfg.fqdn, os) {
        match lookups.fqdn(os).await {
            Ok(fqdn) => current = Some(found(fqdn, Source::Fqdn)),
            Err(e) => notes.push(format!("hostname_fqdn: no fully qualified name: {e}")),
        }
    }
    if current.is_none() {
        current = os.map(|o| found(o.to_owned(), Source::Os));
    }
    let name_so_far = current.as_ref().map_or("", |r| r.name.as_str());
    if facts.ecs_ec2 || is_ec2_default(name_so_far) || cfg.prioritize_instance_id {
        if cfg.ec2_enabled && facts.imds_endpoint.is_some() {
            match lookups.instance_id().await {
                Ok(id) => match validate(&id) {
                    Ok(()) => current = Some(found(id, Source::Ec2)),
                    Err(e) => {
                        notes.push(format!("the EC2 instance id is not a usable hostname: {e}"))
                    }
                },
                Err(e) => notes.push(format!("no EC2 instance id: {e}")),
            }
        } else {
            notes.push(
                "the EC2 instance metadata service is disabled (AWS_EC2_METADATA_DISABLED or \
                 cloud_provider_metadata)"
                    .to_owned(),
            );
        }
    }
    // The Agent takes the FQDN and the OS hostname as they are (only configured names and the instance
    // id are validated).
    current
        .filter(|r| !r.name.is_empty())
        .unwrap_or_else(|| found(String::new(), Source::None))
}

/// The hostname when every look-up fails: what the Agent falls back to, and what points carry until
/// [`resolve`] ends.
pub fn provisional(cfg: &HostnameConfig, facts: &Facts) -> Resolved {
    let mut notes = Vec::new();
    let fut = resolve(cfg, facts, false, &NoLookups, &mut notes);
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        // NoLookups never waits; this arm is unreachable in practice.
        std::task::Poll::Pending => Resolved {
            name: String::new(),
            source: Source::None,
        },
    }
}

#[cfg(test)]
mod tests;
