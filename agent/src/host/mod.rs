//! Who this host is: the hostname as the Datadog Agent resolves it, and the ECS task tags.
//!
//! ```text
//!  Engine::start (sidecar) ─> HostInfo::resolve_in_background ─┬─ ECS /task (first try) ─> Fargate?
//!                                                             ├─ hostname::resolve ─> HostInfo.hostname
//!                                                             └─ ECS /task, retried with backoff ─> HostInfo.tags
//!  aggregate workers ─flush─> series of the default host carry HostInfo::hostname() (read at flush)
//!  Engine::flush ─> every metric, event and service check gets HostInfo::tags()
//! ```
//! Nothing waits for the look-ups: listeners and workers start at once. Until the hostname is resolved,
//! [`HostInfo::hostname`] is the [provisional](hostname::provisional) name, the one the Agent would fall
//! back to if the look-ups failed; since the default host is put on a series when it is flushed (10 s
//! buckets, the first flush after 15 s), points received meanwhile carry the resolved name unless a
//! flush comes first (a shutdown in the first second). Events and service checks take the host when
//! they arrive. Until the ECS task metadata answers, metrics carry no task tags; it is asked again with
//! backoff (1 s doubling to 1 min) for as long as it fails. A failing look-up is logged once.

pub mod ecs;
pub mod hostname;
mod imds;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use crate::config::{HostConfig, HostnameConfig, TagCardinality};
pub use ecs::EcsTask;
pub use hostname::{Facts, Resolved, Source};
pub use imds::Imds;

/// First wait before asking the ECS task metadata again.
const ECS_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two ECS task metadata requests.
const ECS_RETRY_MAX: Duration = Duration::from_secs(60);
/// How long the fully qualified name may take (the Agent's `hostname -f` timeout).
const FQDN_TIMEOUT: Duration = Duration::from_secs(1);
/// The inode of the initial (host) UTS namespace (`PROC_UTS_INIT_INO` in the kernel).
const HOST_UTS_INODE: u64 = 0xEFFF_FFFE;

/// The hostname and the host tags, shared by the pipeline's stages; filled in once, in the background.
#[derive(Debug)]
pub struct HostInfo {
    provisional: Resolved,
    resolved: OnceLock<Resolved>,
    tags: OnceLock<Vec<String>>,
}

impl HostInfo {
    /// A host known from the start: `name` (empty for none), no host tags. Lambda and tests.
    pub fn fixed(name: &str) -> Arc<Self> {
        let r = Resolved {
            name: name.to_owned(),
            source: if name.is_empty() {
                Source::None
            } else {
                Source::Config
            },
        };
        let info = Self {
            provisional: r.clone(),
            resolved: OnceLock::new(),
            tags: OnceLock::new(),
        };
        let _ = info.resolved.set(r);
        Arc::new(info)
    }

    /// The hostname points of the default host carry now (empty: none).
    pub fn hostname(&self) -> &str {
        self.resolved
            .get()
            .map_or(self.provisional.name.as_str(), |r| r.name.as_str())
    }

    /// The resolved hostname and its source, once resolution ended.
    pub fn resolved(&self) -> Option<&Resolved> {
        self.resolved.get()
    }

    /// The host tags (ECS task tags), empty until known.
    pub fn tags(&self) -> &[String] {
        self.tags.get().map_or(&[], Vec::as_slice)
    }

    /// Start resolving on the current tokio runtime: returns the shared value at once (with the
    /// provisional hostname) and the task filling it in, to abort at shutdown.
    pub fn resolve_in_background(
        cfg: &HostConfig,
        facts: Facts,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let info = Arc::new(Self {
            provisional: hostname::provisional(&cfg.hostname, &facts),
            resolved: OnceLock::new(),
            tags: OnceLock::new(),
        });
        let task = tokio::spawn(fill(Arc::clone(&info), cfg.clone(), facts));
        (info, task)
    }
}

/// The background resolution of [`HostInfo::resolve_in_background`].
async fn fill(info: Arc<HostInfo>, cfg: HostConfig, facts: Facts) {
    let ecs_client = facts
        .ecs_metadata_uri
        .as_ref()
        .and_then(|_| client(ecs::REQUEST_TIMEOUT).ok());
    let mut task = None;
    if let (Some(uri), Some(client)) = (&facts.ecs_metadata_uri, &ecs_client) {
        match ecs::fetch_task(client, uri).await {
            Ok(t) => task = Some(t),
            Err(e) => tracing::warn!(
                "ECS task metadata (ECS_CONTAINER_METADATA_URI_V4) unavailable, asking again in the \
                 background; metrics carry no task tags until it answers: {e}"
            ),
        }
    }
    let mut notes = Vec::new();
    let lookups = Network::new(&cfg.hostname, &facts);
    let fargate = task.as_ref().is_some_and(EcsTask::is_fargate);
    let resolved = hostname::resolve(&cfg.hostname, &facts, fargate, &lookups, &mut notes).await;
    for n in &notes {
        tracing::warn!("hostname: {n}");
    }
    tracing::info!("hostname: {resolved}");
    let _ = info.resolved.set(resolved);

    let (Some(uri), Some(client)) = (&facts.ecs_metadata_uri, &ecs_client) else {
        return;
    };
    let mut wait = ECS_RETRY_FIRST;
    let task = loop {
        if let Some(t) = task.take() {
            break t;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(ECS_RETRY_MAX);
        match ecs::fetch_task(client, uri).await {
            Ok(t) => {
                tracing::info!("ECS task metadata answered");
                task = Some(t);
            }
            Err(e) => tracing::debug!("ECS task metadata still unavailable: {e}"),
        }
    };
    let tags = task.tags(cfg.tag_cardinality, cfg.cluster_name_tag);
    tracing::info!(tags = %tags.join(","), "ECS task tags");
    let _ = info.tags.set(tags);
}

/// What [`inspect`] found: the hostname with its source and the notes on skipped or failed steps, and
/// the ECS task tags (when `ECS_CONTAINER_METADATA_URI_V4` is set) or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The hostname and where it came from.
    pub hostname: Resolved,
    /// Why steps were skipped or failed.
    pub notes: Vec<String>,
    /// The task tags, or the error of the one request made; `None` outside ECS.
    pub ecs_tags: Option<Result<Vec<String>, String>>,
}

/// Resolve the hostname and read the ECS task tags once, waiting for the answers (for `offpath check`).
pub async fn inspect(cfg: &HostConfig, facts: &Facts) -> Inspection {
    let task = match &facts.ecs_metadata_uri {
        None => None,
        Some(uri) => Some(match client(ecs::REQUEST_TIMEOUT) {
            Ok(c) => ecs::fetch_task(&c, uri).await,
            Err(e) => Err(e),
        }),
    };
    let fargate = matches!(&task, Some(Ok(t)) if t.is_fargate());
    let mut notes = Vec::new();
    let lookups = Network::new(&cfg.hostname, facts);
    let hostname = hostname::resolve(&cfg.hostname, facts, fargate, &lookups, &mut notes).await;
    Inspection {
        hostname,
        notes,
        ecs_tags: task.map(|t| t.map(|t| t.tags(cfg.tag_cardinality, cfg.cluster_name_tag))),
    }
}

/// The real look-ups: `getaddrinfo` for the FQDN, the instance metadata service for the instance id.
#[derive(Debug)]
pub struct Network {
    imds: Result<Imds, String>,
}

impl Network {
    /// Look-ups for these settings (the metadata endpoint and its timeout).
    pub fn new(cfg: &HostnameConfig, facts: &Facts) -> Self {
        let imds = match &facts.imds_endpoint {
            Some(e) => Imds::new(e, cfg.ec2_timeout),
            None => Err("the instance metadata service is disabled".to_owned()),
        };
        Self { imds }
    }
}

impl hostname::Lookups for Network {
    async fn fqdn(&self, os_hostname: &str) -> Result<String, String> {
        let host = os_hostname.to_owned();
        let lookup = tokio::task::spawn_blocking(move || canonical_name(&host));
        match tokio::time::timeout(FQDN_TIMEOUT, lookup).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("the lookup stopped: {e}")),
            Err(_) => Err(format!("no answer within {FQDN_TIMEOUT:?}")),
        }
    }

    async fn instance_id(&self) -> Result<String, String> {
        match &self.imds {
            Ok(imds) => imds.instance_id().await,
            Err(e) => Err(e.clone()),
        }
    }
}

/// The canonical name of `host` from the system resolver (`getaddrinfo` with `AI_CANONNAME`, as
/// `hostname -f`). Blocking.
fn canonical_name(host: &str) -> Result<String, String> {
    let c_host = std::ffi::CString::new(host).map_err(|_| "the hostname holds a NUL".to_owned())?;
    // SAFETY: an all-zero addrinfo is a valid "no hints" value; the fields set below are plain ints.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_DGRAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: c_host is NUL-terminated, hints is initialised, res receives a list we free below.
    let rc = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 || res.is_null() {
        return Err(format!("{host} does not resolve (getaddrinfo error {rc})"));
    }
    // SAFETY: res is the non-null list getaddrinfo returned; ai_canonname, when set on the first entry,
    // is a NUL-terminated string owned by the list, copied out before the list is freed.
    let name = unsafe {
        let first = &*res;
        let name = (!first.ai_canonname.is_null()).then(|| {
            std::ffi::CStr::from_ptr(first.ai_canonname)
                .to_string_lossy()
                .into_owned()
        });
        libc::freeaddrinfo(res);
        name
    };
    name.filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{host} has no canonical name"))
}

/// The OS hostname (`gethostname`), when set.
pub fn os_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..end]).trim().to_owned();
    (!h.is_empty()).then_some(h)
}

/// Whether this process runs in the host's UTS namespace; `None` when `/proc` does not say.
pub fn in_host_uts_namespace() -> Option<bool> {
    let link = std::fs::read_link("/proc/self/ns/uts").ok()?;
    let inode: u64 = link
        .to_str()?
        .strip_prefix("uts:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    Some(inode == HOST_UTS_INODE)
}

/// An HTTP client for link-local metadata services: no proxy, no pooled connections, `timeout` for
/// the whole request.
fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .user_agent(concat!("offpath/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Send `req` and read at most `max` bytes of the answer: (status, body).
async fn send_capped(req: reqwest::RequestBuilder, max: usize) -> Result<(u16, Vec<u8>), String> {
    let mut resp = req.send().await.map_err(|e| describe(&e))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() >= max {
            body.truncate(max);
            break;
        }
    }
    Ok((status, body))
}

/// A transport error in words: timed out, refused, or the error chain.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".to_owned();
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests;
