//! Fallback settings: where what cannot be delivered goes, and in which record format.

use super::key::Reader;
use super::keys as k;
use super::values::{FallbackFormat, FallbackMode};
use super::{ConfigError, Deployment};

/// Where fallback records go, resolved at load from `OFFPATH_FALLBACK` and the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackSink {
    /// Nowhere: dropped and counted.
    Off,
    /// stdout (or the writer given to `Fallback::with_writer`).
    Stdout,
    /// CloudWatch Logs.
    CloudWatch,
}

/// Fallback settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackConfig {
    /// The sink: `OFFPATH_FALLBACK` (`auto`), resolved for the deployment.
    pub sink: FallbackSink,
    /// CloudWatch log group (`OFFPATH_FALLBACK_LOG_GROUP`).
    pub log_group: Option<String>,
    /// CloudWatch log stream (`OFFPATH_FALLBACK_LOG_STREAM`); `None` = `<host>-<pid>`.
    pub log_stream: Option<String>,
    /// Record format (`OFFPATH_FALLBACK_FORMAT`, `offpath`).
    pub format: FallbackFormat,
    /// Tag keys that become EMF dimensions (`OFFPATH_FALLBACK_EMF_DIMENSIONS`, none).
    pub emf_dimensions: Vec<String>,
    /// EMF namespace (`OFFPATH_FALLBACK_EMF_NAMESPACE`, `offpath`).
    pub emf_namespace: String,
}

/// Why the CloudWatch keys are refused in a build without the CloudWatch sink.
#[cfg(not(feature = "cloudwatch"))]
const NO_CLOUDWATCH: &str = "no value: this build of offpath has no CloudWatch Logs sink (built \
     without the `cloudwatch` feature, like the Lambda layer); unset it, fallback records go to stdout";

impl FallbackConfig {
    pub(super) fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let mode = r.value(&k::FALLBACK)?;
        let log_group = r.get(&k::FALLBACK_LOG_GROUP)?;
        let log_stream = r.get(&k::FALLBACK_LOG_STREAM)?;
        #[cfg(not(feature = "cloudwatch"))]
        for key in [&k::FALLBACK_LOG_GROUP.key, &k::FALLBACK_LOG_STREAM.key] {
            if let Some(v) = r.raw(key) {
                return Err(r.err(key, v, NO_CLOUDWATCH));
            }
        }
        if mode == FallbackMode::CloudWatch && log_group.is_none() {
            return Err(r.err(
                &k::FALLBACK_LOG_GROUP.key,
                String::new(),
                "a log group name when OFFPATH_FALLBACK=cloudwatch",
            ));
        }
        let sink = match mode {
            FallbackMode::Off => FallbackSink::Off,
            FallbackMode::Stdout => FallbackSink::Stdout,
            FallbackMode::CloudWatch => FallbackSink::CloudWatch,
            // Lambda's stdout is free, asynchronous and lands in the function's log group.
            FallbackMode::Auto if r.deployment() == Deployment::Lambda => FallbackSink::Stdout,
            FallbackMode::Auto if log_group.is_some() => FallbackSink::CloudWatch,
            FallbackMode::Auto => FallbackSink::Stdout,
        };
        Ok(Self {
            sink,
            log_group,
            log_stream,
            format: r.value(&k::FALLBACK_FORMAT)?,
            emf_dimensions: r.value(&k::FALLBACK_EMF_DIMENSIONS)?,
            emf_namespace: r.value(&k::FALLBACK_EMF_NAMESPACE)?,
        })
    }
}
