//! The mapper and blocklist settings (`dogstatsd_mapper_profiles`, `metric_filterlist`,
//! `statsd_metric_blocklist`), read into the aggregate section's [`FilterConfig`].

use super::ConfigError;
use super::key::Reader;
use super::keys as k;
use crate::enrich::FilterConfig;

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
