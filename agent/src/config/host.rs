//! Host settings: how the sidecar resolves its hostname, and which ECS task tags metrics get.

use std::path::PathBuf;
use std::time::Duration;

use super::key::Reader;
use super::keys as k;
use super::values::TagCardinality;
use super::{ConfigError, Deployment};

/// How the hostname is resolved (`datadog.yaml` names; see `crate::host::hostname`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostnameConfig {
    /// `hostname` / `DD_HOSTNAME`; empty when unset.
    pub hostname: String,
    /// `hostname_file`: a file whose trimmed content is the hostname.
    pub hostname_file: Option<PathBuf>,
    /// `hostname_fqdn` (false): prefer the fully qualified name over the OS hostname.
    pub fqdn: bool,
    /// `ec2_prioritize_instance_id_as_hostname` (false): on EC2, use the instance id whatever the OS
    /// hostname.
    pub prioritize_instance_id: bool,
    /// `hostname_trust_uts_namespace` (false): use the OS hostname even inside a container's own UTS
    /// namespace.
    pub trust_uts_namespace: bool,
    /// `ec2_metadata_timeout` (300 ms): per request to the EC2 instance metadata service.
    pub ec2_timeout: Duration,
    /// `cloud_provider_metadata` includes `aws` (the default): the EC2 metadata service may be asked.
    pub ec2_enabled: bool,
}

/// Host settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostConfig {
    /// Resolve the hostname and read the ECS task tags in the background (the sidecar); false in
    /// Lambda, which sends no host of its own (only `DD_HOSTNAME`, as configured).
    pub resolve: bool,
    /// How the hostname is resolved.
    pub hostname: HostnameConfig,
    /// `DD_DOGSTATSD_TAG_CARDINALITY` (`low`).
    pub tag_cardinality: TagCardinality,
    /// Tag metrics with `cluster_name` as well as `ecs_cluster_name` (false with
    /// `disable_cluster_name_tag_key`).
    pub cluster_name_tag: bool,
}

impl HostConfig {
    pub(super) fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            resolve: r.deployment() == Deployment::Sidecar,
            hostname: HostnameConfig {
                hostname: r.get(&k::HOSTNAME)?.unwrap_or_default(),
                hostname_file: r.get(&k::HOSTNAME_FILE)?,
                fqdn: r.value(&k::HOSTNAME_FQDN)?,
                prioritize_instance_id: r.value(&k::EC2_PRIORITIZE_INSTANCE_ID_AS_HOSTNAME)?,
                trust_uts_namespace: r.value(&k::HOSTNAME_TRUST_UTS_NAMESPACE)?,
                ec2_timeout: r.value(&k::EC2_METADATA_TIMEOUT)?,
                ec2_enabled: r.value(&k::CLOUD_PROVIDER_METADATA)?,
            },
            tag_cardinality: r.value(&k::DOGSTATSD_TAG_CARDINALITY)?,
            cluster_name_tag: !r.value(&k::DISABLE_CLUSTER_NAME_TAG_KEY)?,
        })
    }
}
