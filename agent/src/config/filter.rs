//! The mapper and blocklist settings (`dogstatsd_mapper_profiles`, `metric_filterlist`,
//! `statsd_metric_blocklist`), read into the aggregate section's [`FilterConfig`].

use std::num::NonZeroUsize;

use super::ConfigError;
use super::key::Reader;
use super::keys as k;
use super::parse;
use crate::enrich::{FilterConfig, MapperProfiles};

/// Largest `DD_DOGSTATSD_MAPPER_CACHE_SIZE`.
pub const MAX_MAPPER_CACHE_SIZE: usize = 1_000_000;

/// Read the mapper and the blocklist: `metric_filterlist` when it is not empty, else
/// `statsd_metric_blocklist`, each with its own `_match_prefix` (as the Agent does).
pub(super) fn load(r: &Reader<'_>) -> Result<FilterConfig, ConfigError> {
    let filterlist = r.value(&k::METRIC_FILTERLIST)?;
    let filterlist_prefix = r.value(&k::METRIC_FILTERLIST_MATCH_PREFIX)?;
    let blocklist = r.value(&k::STATSD_METRIC_BLOCKLIST)?;
    let blocklist_prefix = r.value(&k::STATSD_METRIC_BLOCKLIST_MATCH_PREFIX)?;
    let (blocklist, match_prefix) = if filterlist.is_empty() {
        (blocklist, blocklist_prefix)
    } else {
        (filterlist, filterlist_prefix)
    };
    Ok(FilterConfig {
        profiles: r.get(&k::DOGSTATSD_MAPPER_PROFILES)?.unwrap_or_default(),
        cache_size: r.value(&k::DOGSTATSD_MAPPER_CACHE_SIZE)?,
        blocklist,
        match_prefix,
    })
}

pub(super) fn mapper_profiles(v: &str) -> Result<MapperProfiles, &'static str> {
    crate::enrich::parse_profiles(v)
}

pub(super) fn cache_size(v: &str) -> Result<NonZeroUsize, &'static str> {
    const EXPECTED: &str = "a number of metric names from 1 to 1000000";
    parse::usize_in_range(v, 1, MAX_MAPPER_CACHE_SIZE, EXPECTED)
        .and_then(|n| NonZeroUsize::new(n).ok_or(EXPECTED))
}
