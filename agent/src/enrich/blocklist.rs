//! The metric name blocklist (`metric_filterlist` / `statsd_metric_blocklist`), as the Agent tests it:
//! the name after mapping and the namespace equals an entry, or with `_match_prefix` starts with one.

/// Sorted entries, tested by binary search; built once per worker.
///
/// The list is tested against the name with the namespace, but offpath never builds that string: the
/// entries are kept twice, as written (for names without the namespace) and with the namespace taken
/// off (for names with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocklist {
    /// Entries as written, sorted (and without the entries another entry already covers by prefix).
    plain: Vec<String>,
    /// The entries that start with the namespace, the namespace taken off, sorted.
    under_namespace: Vec<String>,
    /// With `match_prefix`, an entry is a prefix of the namespace itself: every namespaced name is blocked.
    every_namespaced: bool,
    match_prefix: bool,
}

impl Blocklist {
    /// The blocklist of `entries` (empty ones ignored) for names that get `namespace` (with its `.`, or
    /// empty) when the aggregator says so.
    pub fn new(entries: &[String], match_prefix: bool, namespace: &str) -> Self {
        let plain = sorted(entries.iter().map(String::as_str), match_prefix);
        let (under_namespace, every_namespaced) = if namespace.is_empty() {
            (Vec::new(), false)
        } else {
            let under = entries.iter().filter_map(|e| e.strip_prefix(namespace));
            let every = match_prefix
                && entries
                    .iter()
                    .any(|e| !e.is_empty() && namespace.starts_with(e.as_str()));
            (sorted(under, match_prefix), every)
        };
        Self {
            plain,
            under_namespace,
            every_namespaced,
            match_prefix,
        }
    }

    /// Whether `name` (as mapped; `namespaced` when the namespace goes in front of it) is blocked.
    pub fn blocks(&self, name: &str, namespaced: bool) -> bool {
        if namespaced {
            self.every_namespaced || self.test(&self.under_namespace, name)
        } else {
            self.test(&self.plain, name)
        }
    }

    fn test(&self, list: &[String], name: &str) -> bool {
        match list.binary_search_by(|e| e.as_str().cmp(name)) {
            Ok(_) => true,
            // Entries covered by a shorter one are gone, so the only entry that can be a prefix of
            // `name` is the greatest one below it.
            Err(i) => self.match_prefix && i > 0 && name.starts_with(list[i - 1].as_str()),
        }
    }
}

fn sorted<'a>(entries: impl Iterator<Item = &'a str>, match_prefix: bool) -> Vec<String> {
    let mut out: Vec<String> = entries
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    out.sort_unstable();
    out.dedup();
    if match_prefix {
        let mut kept: Vec<String> = Vec::with_capacity(out.len());
        for e in out {
            if !kept.last().is_some_and(|k| e.starts_with(k.as_str())) {
                kept.push(e);
            }
        }
        out = kept;
    }
    out
}
