//! Metric names before aggregation, in the Datadog Agent's order: the mapper rewrites a name and adds
//! tags (`dogstatsd_mapper_profiles`), the namespace applies to the result (the aggregator's
//! `DD_STATSD_METRIC_NAMESPACE`), then the blocklist drops names (`metric_filterlist`, else
//! `statsd_metric_blocklist`), counted as `points.dropped.filtered`.
//!
//! ```text
//!  name ─> mapper (first profile whose prefix matches; cached) ─> namespace ─> blocklist ─> contexts
//! ```
//!
//! Each aggregate worker owns one [`Filter`] (the mapper's cache is its own: no lock). With neither
//! configured a worker holds none and a line costs one branch. The mapper needs the `regex` crate and
//! is the `mapper` feature; the Lambda extension is built without it, and there mapper profiles are a
//! start-up error naming `DD_DOGSTATSD_MAPPER_PROFILES`.

mod blocklist;
#[cfg(feature = "mapper")]
mod mapper;
#[cfg(not(feature = "mapper"))]
#[path = "no_mapper.rs"]
mod mapper;
#[cfg(test)]
mod tests;

pub use blocklist::Blocklist;
pub use mapper::{Mapper, MapperProfiles};

pub use mapper::parse_profiles;

use std::num::NonZeroUsize;

/// What the filter needs from the configuration (part of `AggregateConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct FilterConfig {
    /// `dogstatsd_mapper_profiles`, validated (regexes compiled); empty when unset.
    pub profiles: MapperProfiles,
    /// `dogstatsd_mapper_cache_size` (1000): names whose mapping (or its absence) each worker remembers.
    pub cache_size: NonZeroUsize,
    /// `metric_filterlist` when set, else `statsd_metric_blocklist`: names dropped after mapping and the
    /// namespace.
    pub blocklist: Vec<String>,
    /// The `_match_prefix` key that goes with the list in use: entries are name prefixes.
    pub match_prefix: bool,
}

/// The Agent's default `dogstatsd_mapper_cache_size`.
pub const DEFAULT_CACHE_SIZE: NonZeroUsize = match NonZeroUsize::new(1000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            profiles: MapperProfiles::default(),
            cache_size: DEFAULT_CACHE_SIZE,
            blocklist: Vec::new(),
            match_prefix: false,
        }
    }
}

impl FilterConfig {
    /// Whether there is anything to do per line.
    pub fn is_active(&self) -> bool {
        !self.profiles.is_empty() || !self.blocklist.is_empty()
    }
}

/// What to do with one metric line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it as received.
    Keep,
    /// Keep it under the mapped name and tags of this slot ([`Filter::mapped`]).
    Mapped(u32),
    /// Blocked: drop it, counted as `filtered`.
    Drop,
}

/// One aggregate worker's mapper and blocklist.
#[derive(Debug)]
pub struct Filter {
    mapper: Option<Mapper>,
    blocklist: Option<Blocklist>,
}

impl Filter {
    /// The filter of `cfg` for names that get `namespace` (with its `.`, or empty); `None` when nothing
    /// is configured.
    pub fn new(cfg: &FilterConfig, namespace: &str) -> Option<Box<Self>> {
        if !cfg.is_active() {
            return None;
        }
        Some(Box::new(Self {
            mapper: Mapper::new(&cfg.profiles, cfg.cache_size),
            blocklist: (!cfg.blocklist.is_empty())
                .then(|| Blocklist::new(&cfg.blocklist, cfg.match_prefix, namespace)),
        }))
    }

    /// Map `name`, then test the result against the blocklist; `namespaced` says whether a (mapped)
    /// name gets the namespace.
    pub fn check(&mut self, name: &str, namespaced: impl Fn(&str) -> bool) -> Verdict {
        let slot = self.mapper.as_mut().and_then(|m| m.map(name));
        let Some(blocklist) = &self.blocklist else {
            return slot.map_or(Verdict::Keep, Verdict::Mapped);
        };
        let mapped = slot.and_then(|s| self.mapped(s)).map_or(name, |(n, _)| n);
        if blocklist.blocks(mapped, namespaced(mapped)) {
            return Verdict::Drop;
        }
        slot.map_or(Verdict::Keep, Verdict::Mapped)
    }

    /// The name and the extra tags (`key:value`) of a [`Verdict::Mapped`] slot, valid until the next
    /// [`Filter::check`].
    pub fn mapped(&self, slot: u32) -> Option<(&str, &[String])> {
        self.mapper.as_ref().and_then(|m| m.result(slot))
    }
}
