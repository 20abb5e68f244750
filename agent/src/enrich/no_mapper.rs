//! The build without the `mapper` feature (the Lambda extension): no regex engine, so mapper profiles
//! are refused at start-up, naming `DD_DOGSTATSD_MAPPER_PROFILES`.

use std::num::NonZeroUsize;

/// Mapping profiles: always empty in this build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapperProfiles(());

impl MapperProfiles {
    /// No profile configured (always, in this build).
    pub fn is_empty(&self) -> bool {
        true
    }
}

/// Accept only an empty list.
///
/// # Errors
/// Any profile: this build cannot map.
pub fn parse_profiles(v: &str) -> Result<MapperProfiles, &'static str> {
    match serde_json::from_str::<Vec<serde_json::Value>>(v) {
        Ok(list) if list.is_empty() => Ok(MapperProfiles(())),
        _ => Err(
            "no mapper profiles: this build of offpath has no mapper (it was built without \
                  the `mapper` feature, as the Lambda extension is); remove the key",
        ),
    }
}

/// No mapper exists in this build (the type has no values).
#[derive(Debug)]
pub enum Mapper {}

impl Mapper {
    /// Always `None`: there are no profiles.
    pub fn new(_profiles: &MapperProfiles, _cache_size: NonZeroUsize) -> Option<Self> {
        None
    }

    /// Never called: no value of this type exists.
    pub fn map(&mut self, _name: &str) -> Option<u32> {
        match *self {}
    }

    /// Never called: no value of this type exists.
    pub fn result(&self, _slot: u32) -> Option<(&str, &[String])> {
        match *self {}
    }
}
