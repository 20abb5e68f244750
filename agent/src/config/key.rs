//! What a configuration key is: its names, its default, its parser and its documentation, declared once.
//!
//! A key is a [`Setting<T>`]: the untyped [`Key`] (environment names, `datadog.yaml` name, default, doc
//! line), which the YAML reader, the README table and `offpath config-table` read, plus the parser that
//! turns a raw value into a `T`. The default is text that goes through the same parser as a configured
//! value, so what the table shows is what offpath uses. Sections read their keys through a [`Reader`],
//! which only accepts a declared [`Setting`]: a key that is not declared cannot be looked up.

use super::{ConfigError, Deployment, Source};

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDefault {
    /// Unset unless configured; the text says what that means in the table (`none` when it is empty).
    Unset(&'static str),
    /// This value, parsed like a configured one.
    Value(&'static str),
    /// A value that depends on the deployment (the profile resolved at load).
    ByDeployment {
        /// In the sidecar (`offpath run`).
        sidecar: &'static str,
        /// In the Lambda extension.
        lambda: &'static str,
    },
}

/// No default: the key is unset unless configured.
pub const NONE: KeyDefault = KeyDefault::Unset("");

impl KeyDefault {
    /// The default text in `deployment`, if there is one.
    pub const fn value(self, deployment: Deployment) -> Option<&'static str> {
        match (self, deployment) {
            (Self::Unset(_), _) => None,
            (Self::Value(v), _) => Some(v),
            (Self::ByDeployment { sidecar, .. }, Deployment::Sidecar) => Some(sidecar),
            (Self::ByDeployment { lambda, .. }, Deployment::Lambda) => Some(lambda),
        }
    }
}

/// The part of a key every key shares, whatever its type: what the documentation and the YAML reader see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Environment names, first wins (`DD_DD_URL` before `DD_URL`). The first names the key in errors.
    pub envs: &'static [&'static str],
    /// Name in the YAML file: top level (`dogstatsd_port`), or `section.name` (`offpath.flush_interval`).
    pub yaml: &'static str,
    /// The value is a list: the YAML file may give a sequence.
    pub list: bool,
    /// Set to the empty string, the key is given to its parser as `""` instead of counting as unset
    /// (`OFFPATH_STATUS_ADDR=` disables the endpoint).
    pub empty_is_a_value: bool,
    /// The value is structured (the mapper profiles): the YAML file's value arrives as JSON text, as
    /// the environment gives it.
    pub json: bool,
    /// The default.
    pub default: KeyDefault,
    /// One or two sentences for the README table.
    pub doc: &'static str,
}

/// Parses a raw value (trimmed) into a typed one, or says what the key accepts.
pub type Parser<T> = fn(&str) -> Result<T, &'static str>;

/// One configuration key with its type: see the module documentation.
pub struct Setting<T: 'static> {
    /// Names, default, documentation.
    pub key: Key,
    /// How a raw value becomes a `T`.
    pub parse: Parser<T>,
}

impl<T> std::fmt::Debug for Setting<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<T> Setting<T> {
    /// A scalar key.
    pub const fn new(
        envs: &'static [&'static str],
        yaml: &'static str,
        default: KeyDefault,
        parse: Parser<T>,
        doc: &'static str,
    ) -> Self {
        Self {
            key: Key {
                envs,
                yaml,
                list: false,
                empty_is_a_value: false,
                json: false,
                default,
                doc,
            },
            parse,
        }
    }

    /// The same key, read as a list (a YAML sequence is accepted).
    pub const fn list(mut self) -> Self {
        self.key.list = true;
        self
    }

    /// The same key, structured: a YAML value of any shape is handed to the parser as JSON.
    pub const fn json(mut self) -> Self {
        self.key.json = true;
        self
    }

    /// The same key, with the empty string handed to the parser rather than counting as unset.
    pub const fn empty_is_a_value(mut self) -> Self {
        self.key.empty_is_a_value = true;
        self
    }

    /// Parse `value` as configured for this key.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key, the value and what it accepts.
    pub fn parse_value(&'static self, value: &str) -> Result<T, ConfigError> {
        let value = value.trim();
        (self.parse)(value).map_err(|expected| ConfigError {
            key: self.key.envs[0],
            value: value.to_owned(),
            expected,
        })
    }
}

/// A `Setting` of any type: what the list of every key holds.
pub trait AnySetting: Sync {
    /// The untyped key.
    fn key(&self) -> &Key;
    /// The default in `deployment` parses.
    ///
    /// # Errors
    /// The parser's message when it does not.
    fn check_default(&self, deployment: Deployment) -> Result<(), &'static str>;
}

impl<T> AnySetting for Setting<T> {
    fn key(&self) -> &Key {
        &self.key
    }

    fn check_default(&self, deployment: Deployment) -> Result<(), &'static str> {
        match self.key.default.value(deployment) {
            Some(v) => (self.parse)(v).map(drop),
            None => Ok(()),
        }
    }
}

/// Reads settings from a [`Source`] for one deployment.
pub(super) struct Reader<'s> {
    src: &'s dyn Source,
    deployment: Deployment,
}

impl<'s> Reader<'s> {
    pub(super) fn new(src: &'s dyn Source, deployment: Deployment) -> Self {
        Self { src, deployment }
    }

    /// The deployment the configuration is loaded for.
    pub(super) fn deployment(&self) -> Deployment {
        self.deployment
    }

    /// The configured text of `key`, trimmed; `None` when unset (or empty, unless the key takes it).
    pub(super) fn raw(&self, key: &'static Key) -> Option<String> {
        let v = self.src.get(key)?;
        let v = v.trim();
        (!v.is_empty() || key.empty_is_a_value).then(|| v.to_owned())
    }

    /// The value of `s`: configured, else its default, both through its parser; `None` when it is
    /// unset and has no default.
    pub(super) fn get<T>(&self, s: &'static Setting<T>) -> Result<Option<T>, ConfigError> {
        let value = match self.raw(&s.key) {
            Some(v) => v,
            None => match s.key.default.value(self.deployment) {
                Some(d) => d.to_owned(),
                None => return Ok(None),
            },
        };
        (s.parse)(&value)
            .map(Some)
            .map_err(|expected| self.err(&s.key, value, expected))
    }

    /// The value of a key that has a default.
    pub(super) fn value<T>(&self, s: &'static Setting<T>) -> Result<T, ConfigError> {
        self.get(s)?.ok_or(ConfigError {
            key: s.key.envs[0],
            value: String::new(),
            expected: "a value (this key has no default)",
        })
    }

    /// The error for `key` holding `value`.
    pub(super) fn err(&self, key: &Key, value: String, expected: &'static str) -> ConfigError {
        ConfigError {
            key: key.envs[0],
            value,
            expected,
        }
    }
}
