//! Configuration: Datadog Agent key names, loaded once for a deployment, parsed into typed values.
//!
//! ```text
//!  environment ─┐                      keys.rs: one Setting per key (names, default, parser, doc line)
//!               ├─> Source ─> Reader ─> IngestConfig, AggregateConfig, ForwardConfig, FallbackConfig,
//!  YAML file  ──┘   (env wins)          OpsConfig, LambdaConfig  ─>  Config (the stages read only this)
//! ```
//!
//! Every key is declared once in `keys`: its environment names, its `datadog.yaml` name, its default,
//! its parser and its doc line. The loader, the YAML reader, the README table and `offpath config-table`
//! all read those declarations. Each section module (`ingest.rs`, `forward.rs`, …) holds its struct and
//! reads its keys through a `key::Reader`, which only takes a declared key; every value is parsed at
//! load, so an invalid one stops offpath at start in every deployment, with an error naming the key.
//!
//! The [`Deployment`] (sidecar or Lambda) is resolved here, once: it picks the defaults that differ
//! (aggregate workers, the fallback sink, self-telemetry, the metric mapping, idle connections, AWS
//! credentials), so no stage asks where it runs. To add a key, see `docs/architecture.md`.

mod aggregate;
mod endpoints;
mod fallback;
mod filter;
mod forward;
mod host;
mod ingest;
mod key;
mod keys;
mod lambda;
mod ops;
mod parse;
mod table;
#[cfg(test)]
mod tests;
mod yaml;

use std::path::Path;

use tracing::level_filters::LevelFilter;

pub(crate) use aggregate::percentile_name;
pub use aggregate::{AggregateConfig, HistogramAggregate, MetricMapping};
pub use endpoints::{AdditionalEndpoints, Endpoint, EndpointKey};
pub use fallback::{FallbackConfig, FallbackFormat, FallbackMode, FallbackSink};
pub use forward::{ForwardConfig, StorageConfig};
pub use host::{HostConfig, HostnameConfig, TagCardinality};
pub use ingest::IngestConfig;
pub use key::{AnySetting, Key, KeyDefault};
pub use keys::KEYS;
pub use lambda::{FlushStrategy, LambdaConfig};
pub use ops::OpsConfig;
pub use table::markdown_table;
pub use yaml::{EnvOverFile, FileError, YamlFile};

use key::Reader;

/// Where offpath runs; resolved once, when the configuration is loaded, and never asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// `offpath run`: a long-lived sidecar or host agent.
    Sidecar,
    /// The Lambda extension: frozen between invocations, flushed around them.
    Lambda,
}

/// A configuration error; the message names the key to fix and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {key}: expected {expected}")]
pub struct ConfigError {
    /// The environment name of the key (e.g. `DD_DOGSTATSD_PORT`).
    pub key: &'static str,
    /// The value that was given.
    pub value: String,
    /// What the key accepts.
    pub expected: &'static str,
}

/// Loading a config file and the environment failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read, is not YAML, or a key has the wrong shape.
    #[error(transparent)]
    File(#[from] yaml::FileError),
    /// A value is invalid; `origin` says where it was set (the environment or the file).
    #[error("{error} (set {origin})")]
    Invalid {
        /// The invalid key and value.
        error: ConfigError,
        /// `in the environment (DD_X)` or ``as `x` in <file>``.
        origin: String,
    },
}

/// Where raw values come from. Implemented for closures over environment names.
pub trait Source {
    /// The raw value of `key`, if set.
    fn get(&self, key: &Key) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Source for F {
    fn get(&self, key: &Key) -> Option<String> {
        key.envs.iter().find_map(|e| self(e))
    }
}

/// The process environment as a [`Source`].
#[derive(Debug, Clone, Copy)]
pub struct Env;

impl Source for Env {
    fn get(&self, key: &Key) -> Option<String> {
        key.envs.iter().find_map(|e| std::env::var(e).ok())
    }
}

/// The key whose first environment name is `env`.
fn key_named(env: &str) -> Option<&'static Key> {
    KEYS.iter().map(|k| k.key()).find(|k| k.envs[0] == env)
}

/// The whole configuration, validated, for one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The hostname's resolution and the ECS task tags.
    pub host: HostConfig,
    /// Listeners.
    pub ingest: IngestConfig,
    /// Aggregation.
    pub aggregate: AggregateConfig,
    /// Delivery.
    pub forward: ForwardConfig,
    /// Fallback.
    pub fallback: FallbackConfig,
    /// Operations.
    pub ops: OpsConfig,
    /// Lambda.
    pub lambda: LambdaConfig,
}

/// The level `DD_LOG_LEVEL` names (the extension sets up logging before it loads the configuration).
///
/// # Errors
/// A [`ConfigError`] naming `DD_LOG_LEVEL` for a name that is not a level.
pub fn log_level(value: &str) -> Result<LevelFilter, ConfigError> {
    keys::LOG_LEVEL.parse_value(value)
}

impl Config {
    /// Load the sidecar's configuration from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid key.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&Env)
    }

    /// Load the sidecar's configuration from a YAML config file (`datadog.yaml` key names) with
    /// environment variables over it. Returns the configuration and the warnings to log (unknown keys
    /// in the file).
    ///
    /// # Errors
    /// [`LoadError::File`] for an unreadable or malformed file, [`LoadError::Invalid`] naming the
    /// first invalid key and where it was set.
    pub fn from_file_and_env(path: &Path) -> Result<(Self, Vec<String>), LoadError> {
        let (file, warnings) = yaml::YamlFile::read(path)?;
        let src = yaml::EnvOverFile::new(Env, file);
        match Self::load(&src) {
            Ok(config) => Ok((config, warnings)),
            Err(error) => {
                let origin = key_named(error.key)
                    .map_or_else(|| "in the environment".to_owned(), |key| src.origin(key));
                Err(LoadError::Invalid { error, origin })
            }
        }
    }

    /// Load the sidecar's configuration from any [`Source`] (environment, YAML file layered under it,
    /// or a test map).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid key.
    pub fn load(src: &dyn Source) -> Result<Self, ConfigError> {
        Self::load_for(Deployment::Sidecar, src)
    }

    /// Load the configuration of `deployment` from any [`Source`]: every key is read and parsed, and
    /// the deployment's defaults applied.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid key.
    pub fn load_for(deployment: Deployment, src: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(src, deployment);
        let ingest = IngestConfig::load(&r)?;
        let aggregate = AggregateConfig::load(&r)?;
        ingest::check_queued_packets(ingest.queue_size, aggregate.workers)?;
        Ok(Self {
            host: HostConfig::load(&r)?,
            ingest,
            aggregate,
            forward: ForwardConfig::load(&r)?,
            fallback: FallbackConfig::load(&r)?,
            ops: OpsConfig::load(&r)?,
            lambda: LambdaConfig::load(&r)?,
        })
    }

    /// Add `tags` to the global tags (the Lambda tags the extension learns at registration).
    #[must_use]
    pub fn with_global_tags(mut self, tags: impl IntoIterator<Item = String>) -> Self {
        self.aggregate.tags.extend(tags);
        self
    }

    /// What deserves a warning in this configuration, one sentence each naming the key: logged at
    /// start, and WARN lines of `offpath check`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.forward.warnings();
        out.extend(self.ops.warnings());
        out
    }
}
