//! The DogStatsD mapper (`dogstatsd_mapper_profiles`), with the Datadog Agent's rules: the first
//! profile whose `prefix` starts the name (or whose prefix is `*`) decides; within it the first
//! mapping whose `match` matches the whole name gives the new name and tags, `$1`, `${1}` and
//! `${name}` expanded from the match; a name its profile does not map is left as it is. A `wildcard`
//! match (the default) is a name whose `*` each stand for one part between dots; a `regex` match is
//! anchored at both ends.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use hashbrown::HashMap;
use regex::Regex;
use rustc_hash::FxBuildHasher;
use serde::Deserialize;

/// Mapping profiles, validated and compiled at load; empty when none are configured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapperProfiles(Vec<Profile>);

impl MapperProfiles {
    /// No profile configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Profile {
    /// The name prefix; `*` takes every name.
    prefix: String,
    mappings: Vec<Mapping>,
}

#[derive(Debug, Clone)]
struct Mapping {
    regex: Regex,
    /// The new name, with `$n` / `${name}` references.
    name: String,
    /// Tag keys and value templates, sorted by key.
    tags: Vec<(String, String)>,
}

impl PartialEq for Mapping {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str()
            && self.name == other.name
            && self.tags == other.tags
    }
}

/// A profile as configured (YAML in the file, JSON in `DD_DOGSTATSD_MAPPER_PROFILES`).
#[derive(Deserialize)]
struct ProfileSpec {
    name: Option<String>,
    prefix: Option<String>,
    mappings: Option<Vec<MappingSpec>>,
}

#[derive(Deserialize)]
struct MappingSpec {
    #[serde(rename = "match")]
    pattern: Option<String>,
    match_type: Option<String>,
    name: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

/// Parse and validate `dogstatsd_mapper_profiles` (a JSON list; the YAML file's value arrives as JSON).
///
/// # Errors
/// What is wrong, with the profile and mapping it is in.
pub fn parse_profiles(v: &str) -> Result<MapperProfiles, &'static str> {
    let specs: Vec<ProfileSpec> = serde_json::from_str(v).map_err(|e| {
        leak(format!(
            "a list of profiles, each {{name, prefix, mappings: [{{match, match_type, name, \
             tags}}]}} ({e})"
        ))
    })?;
    let mut profiles = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let name = spec.name.filter(|n| !n.is_empty()).ok_or_else(|| {
            leak(format!(
                "mapper profiles: profile {i}: missing profile name"
            ))
        })?;
        let prefix = spec.prefix.filter(|p| !p.is_empty()).ok_or_else(|| {
            leak(format!(
                "mapper profiles: missing prefix for profile `{name}`"
            ))
        })?;
        let mut mappings = Vec::new();
        for (j, m) in spec.mappings.unwrap_or_default().into_iter().enumerate() {
            let at = |what: &str| {
                leak(format!(
                    "mapper profiles: profile `{name}`, mapping {j}: {what}"
                ))
            };
            let regex = match (m.match_type.as_deref().unwrap_or(""), m.pattern.as_deref()) {
                (_, None | Some("")) => return Err(at("match is required")),
                ("" | "wildcard", Some(p)) => wildcard(p).map_err(|e| at(&e))?,
                ("regex", Some(p)) => Regex::new(&format!("^{p}$"))
                    .map_err(|e| at(&format!("invalid regex `{p}`: {e}")))?,
                (t, _) => {
                    return Err(at(&format!(
                        "invalid match type `{t}`, must be `wildcard` or `regex`"
                    )));
                }
            };
            let new_name = m
                .name
                .filter(|n| !n.is_empty())
                .ok_or_else(|| at("name is required"))?;
            mappings.push(Mapping {
                regex,
                name: new_name,
                tags: m.tags.unwrap_or_default().into_iter().collect(),
            });
        }
        profiles.push(Profile { prefix, mappings });
    }
    Ok(MapperProfiles(profiles))
}

/// The regex of a wildcard match: letters, digits, `-`, `_`, `.` and single `*`s, each `*` one
/// dot-free part.
fn wildcard(pattern: &str) -> Result<Regex, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.');
    if !pattern.chars().all(allowed) {
        return Err(format!(
            "invalid wildcard match `{pattern}`: only letters, digits, `-`, `_`, `.` and `*` are \
             allowed (use match_type: regex)"
        ));
    }
    if pattern.contains("**") {
        return Err(format!(
            "invalid wildcard match `{pattern}`: it should not contain consecutive `*`"
        ));
    }
    let body = pattern.replace('.', "\\.").replace('*', "([^.]*)");
    Regex::new(&format!("^{body}$")).map_err(|e| format!("invalid wildcard match `{pattern}`: {e}"))
}

/// A configuration error's text lives as long as the process, which stops on it: the parser's
/// message type is `&'static str`, and these messages carry the profile and mapping at fault.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// One worker's mapper: the profiles (its own copy of the compiled regexes) and a bounded cache of
/// what names mapped to.
#[derive(Debug)]
pub struct Mapper {
    profiles: Vec<Profile>,
    /// Name → slot in `results` (`None`: its profile does not map it). Names under no profile's prefix
    /// are not cached (the prefix test is as cheap as a lookup).
    cache: HashMap<Box<str>, Option<u32>, FxBuildHasher>,
    results: Vec<Mapped>,
    capacity: usize,
}

/// A mapped name and its extra tags.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapped {
    name: String,
    tags: Vec<String>,
}

impl Mapper {
    /// The mapper of `profiles` remembering at most `cache_size` names; `None` without profiles.
    pub fn new(profiles: &MapperProfiles, cache_size: NonZeroUsize) -> Option<Self> {
        (!profiles.is_empty()).then(|| Self {
            profiles: profiles.0.clone(),
            cache: HashMap::default(),
            results: Vec::new(),
            capacity: cache_size.get(),
        })
    }

    /// Map `name`: the slot of its new name and tags ([`Mapper::result`]), or `None` to leave it.
    pub fn map(&mut self, name: &str) -> Option<u32> {
        let profile = self
            .profiles
            .iter()
            .position(|p| p.prefix == "*" || name.starts_with(p.prefix.as_str()))?;
        if let Some(&slot) = self.cache.get(name) {
            return slot;
        }
        if self.cache.len() >= self.capacity {
            // Bounded: forget everything at once (the names in use come back at their next line).
            self.cache.clear();
            self.results.clear();
        }
        let mapped = self.profiles[profile].mappings.iter().find_map(|m| {
            let caps = m.regex.captures(name)?;
            let mut new_name = String::new();
            caps.expand(&m.name, &mut new_name);
            let tags = m
                .tags
                .iter()
                .map(|(k, v)| {
                    let mut tag = format!("{k}:");
                    caps.expand(v, &mut tag);
                    tag
                })
                .collect();
            Some(Mapped {
                name: new_name,
                tags,
            })
        });
        let slot = mapped.map(|m| {
            self.results.push(m);
            u32::try_from(self.results.len() - 1).unwrap_or(u32::MAX)
        });
        self.cache.insert(name.into(), slot);
        slot
    }

    /// Names remembered.
    #[cfg(test)]
    pub(super) fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// The name and extra tags of `slot`, as returned by the last [`Mapper::map`].
    pub fn result(&self, slot: u32) -> Option<(&str, &[String])> {
        self.results
            .get(slot as usize)
            .map(|m| (m.name.as_str(), m.tags.as_slice()))
    }
}
