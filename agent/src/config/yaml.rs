//! The YAML configuration file (`datadog.yaml` style), layered under the environment.
//!
//! Keys are the Datadog Agent's `datadog.yaml` names from [`KEYS`] ([`Key::yaml`]): top-level keys such
//! as `api_key` or `dogstatsd_port`, `proxy.https` under a `proxy:` section, and offpath's own keys
//! (`offpath.flush_interval`, …) under an `offpath:` section. Scalars are kept as written (so
//! `version: 1.10` stays `1.10`) and handed to the same parsers as environment variables; list keys
//! accept a YAML sequence or a string of values separated by spaces or commas.
//!
//! Environment variables win over the file ([`EnvOverFile`]). As in the Datadog Agent, an environment
//! variable set to the empty string counts as unset when the file sets the key.
//!
//! Parsing uses `saphyr` (pure Rust, YAML 1.2) with scalar resolution turned off, so nothing is
//! reinterpreted before offpath's own parsers see it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use saphyr::{MarkedYaml, ScalarStyle, Tag, YamlData, YamlLoader};
use saphyr_parser::Parser;

use super::{KEYS, Key, Source};

/// Every key, untyped.
fn all_keys() -> impl Iterator<Item = &'static Key> {
    KEYS.iter().map(|k| k.key())
}

const EXPECTED_SCALAR: &str = "a single value (a string, number or boolean), not a list or mapping";
const EXPECTED_LIST: &str =
    "a list (a YAML sequence of strings or numbers, or a string separated by spaces or commas)";
const EXPECTED_JSON: &str = "a YAML list or mapping of strings (or its JSON text)";
const EXPECTED_SECTION: &str = "a mapping of keys (a YAML section)";

/// Why a configuration file could not be used. Messages name the file, the line and the key; they
/// never contain a value (the file may hold the API key).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read the config file {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML (the message carries the line and column).
    #[error("the config file {path} is not valid YAML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What the YAML parser reported, with its position.
        message: String,
    },
    /// The top level of the file is not a mapping of `key: value`.
    #[error("the config file {path} must be a mapping of `key: value` lines at the top level")]
    NotAMapping {
        /// The file.
        path: String,
    },
    /// A known key has a value of the wrong shape.
    #[error("the config file {path}, line {line}: `{key}` ({env}) must be {expected}")]
    WrongType {
        /// The file.
        path: String,
        /// 1-based line of the value.
        line: usize,
        /// The key as written in the file (`offpath.flush_interval` for a key in the section).
        key: String,
        /// The key's environment name.
        env: &'static str,
        /// The accepted form.
        expected: &'static str,
    },
}

/// The values of a YAML configuration file, keyed by their `datadog.yaml` names. `Debug` shows the
/// keys only (the file may hold the API key).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct YamlFile {
    /// Where the values came from (for messages).
    path: String,
    /// Raw values by `Key::yaml`; lists are joined with `,`; null is the empty string.
    values: HashMap<&'static str, String>,
}

impl YamlFile {
    /// Read and parse a file. Returns the values and the warnings (unknown keys) to log.
    ///
    /// # Errors
    /// [`FileError`] when the file cannot be read, is not YAML, or a known key has the wrong shape.
    pub fn read(path: &Path) -> Result<(Self, Vec<String>), FileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// Parse YAML text; `path` names it in messages.
    ///
    /// # Errors
    /// [`FileError`] when the text is not YAML or a known key has the wrong shape.
    pub fn parse(text: &str, path: &str) -> Result<(Self, Vec<String>), FileError> {
        let mut file = Self {
            path: path.to_owned(),
            values: HashMap::new(),
        };
        let mut warnings = Vec::new();

        let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
        loader.early_parse(false);
        let mut parser = Parser::new_from_str(text);
        let syntax = |e: saphyr::ScanError| FileError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        };
        parser.load(&mut loader, true).map_err(syntax)?;
        if let Some(e) = loader.error() {
            return Err(syntax(e.clone()));
        }
        let docs = loader.into_documents();
        if docs.len() > 1 {
            warnings.push(format!(
                "{path}: only the first YAML document is read; {} more ignored",
                docs.len() - 1
            ));
        }
        let Some(root) = docs.first() else {
            return Ok((file, warnings)); // an empty file: every key at its default
        };
        match &root.data {
            YamlData::Mapping(map) => file.read_mapping(map.iter(), "", &mut warnings)?,
            data if scalar(data).is_some_and(|s| s.is_empty()) => {} // `~` or only comments
            _ => return Err(FileError::NotAMapping { path: path.into() }),
        }
        Ok((file, warnings))
    }

    fn read_mapping<'a, 'i: 'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a MarkedYaml<'i>, &'a MarkedYaml<'i>)>,
        prefix: &str,
        warnings: &mut Vec<String>,
    ) -> Result<(), FileError> {
        for (k, v) in entries {
            let line = k.span.start.line();
            let Some(name) = scalar(&k.data) else {
                warnings.push(format!(
                    "{}, line {line}: a key that is not a string is ignored",
                    self.path
                ));
                continue;
            };
            let full = format!("{prefix}{name}");
            if let Some(key) = all_keys().find(|key| key.yaml == full) {
                let value = if key.json {
                    json(&v.data).ok_or(EXPECTED_JSON)
                } else if key.list {
                    list(&v.data).ok_or(EXPECTED_LIST)
                } else {
                    scalar(&v.data).map(Cow::into_owned).ok_or(EXPECTED_SCALAR)
                };
                let value = value.map_err(|expected| self.wrong_type(v, &full, key, expected))?;
                self.values.insert(key.yaml, value);
            } else if is_section(&full) {
                match &v.data {
                    YamlData::Mapping(map) => {
                        self.read_mapping(map.iter(), &format!("{full}."), warnings)?;
                    }
                    data if scalar(data).is_some_and(|s| s.is_empty()) => {} // empty section
                    _ => {
                        return Err(FileError::WrongType {
                            path: self.path.clone(),
                            line: v.span.start.line(),
                            key: full,
                            env: "a section",
                            expected: EXPECTED_SECTION,
                        });
                    }
                }
            } else {
                let hint = closest_key(&full)
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                warnings.push(format!(
                    "{}, line {line}: unknown key `{full}` is ignored{hint}",
                    self.path
                ));
            }
        }
        Ok(())
    }

    fn wrong_type(
        &self,
        node: &MarkedYaml<'_>,
        full: &str,
        key: &Key,
        expected: &'static str,
    ) -> FileError {
        FileError::WrongType {
            path: self.path.clone(),
            line: node.span.start.line(),
            key: full.to_owned(),
            env: key.envs[0],
            expected,
        }
    }

    /// Where the values came from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// True when the file sets `key` (even to an empty value).
    pub fn contains(&self, key: &Key) -> bool {
        self.values.contains_key(key.yaml)
    }
}

impl std::fmt::Debug for YamlFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&str> = self.values.keys().copied().collect();
        keys.sort_unstable();
        f.debug_struct("YamlFile")
            .field("path", &self.path)
            .field("keys", &keys)
            .finish()
    }
}

impl Source for YamlFile {
    fn get(&self, key: &Key) -> Option<String> {
        self.values.get(key.yaml).cloned()
    }
}

/// Environment variables over a YAML file: a key set (non-empty) in the environment wins; otherwise
/// the file's value; otherwise the environment's empty value, if set.
#[derive(Debug, Clone)]
pub struct EnvOverFile<E> {
    /// The environment (or a test map).
    pub env: E,
    /// The file.
    pub file: YamlFile,
}

impl<E: Source> EnvOverFile<E> {
    /// Layer `env` over `file`.
    pub fn new(env: E, file: YamlFile) -> Self {
        Self { env, file }
    }

    /// Say where the value of `key` comes from, for error messages: `in the environment (DD_X)` or
    /// `as `x` in <file>`.
    pub fn origin(&self, key: &Key) -> String {
        match self.env.get(key) {
            Some(v) if !v.trim().is_empty() || !self.file.contains(key) => {
                format!("in the environment ({})", key.envs.join(" or "))
            }
            _ if self.file.contains(key) => format!("as `{}` in {}", key.yaml, self.file.path()),
            _ => "nowhere (default)".to_owned(),
        }
    }
}

impl<E: Source> Source for EnvOverFile<E> {
    fn get(&self, key: &Key) -> Option<String> {
        match self.env.get(key) {
            Some(v) if !v.trim().is_empty() => Some(v),
            env => self.file.get(key).or(env),
        }
    }
}

fn is_section(name: &str) -> bool {
    all_keys().any(|k| k.yaml.split_once('.').is_some_and(|(s, _)| s == name))
}

/// The text of a scalar node, exactly as written; null (`~`, `null`, nothing) is the empty string.
fn scalar<'a, 'i>(data: &'a YamlData<'i, MarkedYaml<'i>>) -> Option<Cow<'a, str>> {
    match data {
        YamlData::Representation(text, style, tag) => {
            let null_tag = tag.as_deref().is_some_and(is_null_tag);
            let plain_null = *style == ScalarStyle::Plain
                && tag.is_none()
                && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL");
            Some(if null_tag || plain_null {
                Cow::Borrowed("")
            } else {
                Cow::Borrowed(text.as_ref())
            })
        }
        YamlData::Value(v) => Some(match v {
            saphyr::Scalar::Null => Cow::Borrowed(""),
            saphyr::Scalar::Boolean(b) => Cow::Owned(b.to_string()),
            saphyr::Scalar::Integer(i) => Cow::Owned(i.to_string()),
            saphyr::Scalar::FloatingPoint(f) => Cow::Owned(f.to_string()),
            saphyr::Scalar::String(s) => Cow::Borrowed(s.as_ref()),
        }),
        YamlData::Tagged(_, inner) => scalar(&inner.data),
        _ => None,
    }
}

fn is_null_tag(tag: &Tag) -> bool {
    tag.is_yaml_core_schema() && tag.suffix == "null"
}

/// A list value: a sequence of scalars joined with `,`, or a scalar as written.
fn list<'i>(data: &YamlData<'i, MarkedYaml<'i>>) -> Option<String> {
    match data {
        YamlData::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let s = scalar(&item.data)?;
                if !s.trim().is_empty() {
                    out.push(s.trim().to_owned());
                }
            }
            Some(out.join(","))
        }
        YamlData::Tagged(_, inner) => list(&inner.data),
        other => scalar(other).map(Cow::into_owned),
    }
}

/// A structured value as JSON text: mappings become objects, sequences arrays, scalars strings (as
/// written; null and empty become null). A scalar at the top is taken as JSON text already, as in the
/// environment.
fn json<'i>(data: &YamlData<'i, MarkedYaml<'i>>) -> Option<String> {
    fn value<'i>(data: &YamlData<'i, MarkedYaml<'i>>) -> Option<serde_json::Value> {
        use serde_json::Value;
        match data {
            YamlData::Mapping(map) => {
                let mut obj = serde_json::Map::new();
                for (k, v) in map {
                    obj.insert(scalar(&k.data)?.into_owned(), value(&v.data)?);
                }
                Some(Value::Object(obj))
            }
            YamlData::Sequence(items) => items
                .iter()
                .map(|i| value(&i.data))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array),
            YamlData::Tagged(_, inner) => value(&inner.data),
            other => scalar(other).map(|s| {
                if s.is_empty() {
                    Value::Null
                } else {
                    Value::String(s.into_owned())
                }
            }),
        }
    }
    match data {
        YamlData::Tagged(_, inner) => json(&inner.data),
        YamlData::Mapping(_) | YamlData::Sequence(_) => value(data).map(|v| v.to_string()),
        other => scalar(other).map(Cow::into_owned),
    }
}

/// The known key nearest to a misspelt one (edit distance at most 2), for the warning.
fn closest_key(name: &str) -> Option<&'static str> {
    all_keys()
        .map(|k| (edit_distance(name, k.yaml), k.yaml))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HistogramAggregate};
    use std::time::Duration;

    fn parse(text: &str) -> (YamlFile, Vec<String>) {
        YamlFile::parse(text, "offpath.yaml").unwrap()
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn load(text: &str, pairs: &'static [(&'static str, &'static str)]) -> Config {
        let (file, _) = parse(text);
        Config::load(&EnvOverFile::new(env(pairs), file)).unwrap()
    }

    #[test]
    fn agent_key_names_and_the_offpath_section_are_read() {
        let c = load(
            "api_key: abc\nsite: datadoghq.eu\ndogstatsd_port: 9125\n\
             proxy:\n  https: http://proxy:3128\n  http: ignored\n\
             offpath:\n  flush_interval: 5\n  fallback: stdout\n",
            &[],
        );
        assert_eq!(c.forward.api_key.as_ref().map(|k| k.expose()), Some("abc"));
        assert_eq!(c.forward.intake_url, "https://api.datadoghq.eu");
        assert_eq!(c.ingest.udp, Some("127.0.0.1:9125".parse().unwrap()));
        assert_eq!(c.forward.proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(c.ops.flush_interval, Duration::from_secs(5));
        assert_eq!(c.fallback.sink, crate::config::FallbackSink::Stdout);
    }

    #[test]
    fn environment_variables_win_over_the_file() {
        let text = "dogstatsd_port: 9125\nsite: datadoghq.eu\n";
        let c = load(text, &[("DD_DOGSTATSD_PORT", "7000")]);
        assert_eq!(c.ingest.udp, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(c.forward.site, "datadoghq.eu");
    }

    #[test]
    fn an_empty_environment_variable_falls_back_to_the_file_but_still_disables_status_alone() {
        let c = load("site: datadoghq.eu\n", &[("DD_SITE", "")]);
        assert_eq!(c.forward.site, "datadoghq.eu");
        let c = load("site: datadoghq.eu\n", &[("OFFPATH_STATUS_ADDR", "")]);
        assert_eq!(c.ops.status_addr, None);
        let c = load("offpath:\n  status_addr: \"\"\n", &[]);
        assert_eq!(c.ops.status_addr, None);
    }

    #[test]
    fn lists_may_be_sequences_or_strings() {
        let cases: &[&str] = &[
            "tags: [a:1, b:2]\nhistogram_aggregates: [max, count]\nhistogram_percentiles: [0.5, 0.99]\n",
            "tags:\n  - a:1\n  - b:2\nhistogram_aggregates:\n  - max\n  - count\nhistogram_percentiles:\n  - 0.5\n  - 0.99\n",
            "tags: a:1 b:2\nhistogram_aggregates: max,count\nhistogram_percentiles: \"0.5, 0.99\"\n",
        ];
        for text in cases {
            let c = load(text, &[]);
            assert_eq!(c.aggregate.tags, ["a:1", "b:2"], "{text}");
            assert_eq!(
                c.aggregate.histogram_aggregates,
                [HistogramAggregate::Max, HistogramAggregate::Count],
                "{text}"
            );
            assert_eq!(c.aggregate.histogram_percentiles, [0.5, 0.99], "{text}");
        }
    }

    #[test]
    fn scalars_are_kept_as_written() {
        let c = load(
            "version: 1.10\nenv: yes\nskip_ssl_validation: True\nhostname: 0x1F\n",
            &[],
        );
        assert!(c.aggregate.tags.contains(&"version:1.10".to_owned()));
        assert!(c.aggregate.tags.contains(&"env:yes".to_owned()));
        assert!(c.forward.skip_tls_verify);
        assert_eq!(c.aggregate.hostname, "0x1F");
    }

    #[test]
    fn null_and_empty_values_mean_the_default() {
        let c = load("site:\nhostname: ~\ntags: []\noffpath:\n", &[]);
        assert_eq!(c.forward.site, "datadoghq.com");
        assert_eq!(c.aggregate.hostname, "");
        assert!(c.aggregate.tags.is_empty());
    }

    #[test]
    fn unknown_keys_are_warned_about_with_a_suggestion() {
        let (file, warnings) = parse(
            "dogstatsd_prot: 1\nlogs_enabled: true\noffpath:\n  flush_intervl: 3\nproxy:\n  http: x\n",
        );
        assert_eq!(file, YamlFile::parse("", "offpath.yaml").unwrap().0);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].contains("line 1: unknown key `dogstatsd_prot`"));
        assert!(warnings[0].contains("did you mean `dogstatsd_port`?"));
        assert!(warnings[1].contains("`logs_enabled`"));
        assert!(!warnings[1].contains("did you mean"));
        assert!(warnings[2].contains("`offpath.flush_intervl`"));
        assert!(warnings[2].contains("`offpath.flush_interval`"));
        assert!(warnings[3].contains("`proxy.http`"));
    }

    #[test]
    fn a_value_of_the_wrong_shape_names_the_key_line_and_expected_form() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "site: ok\ndogstatsd_port: [1, 2]\n",
                "`dogstatsd_port` (DD_DOGSTATSD_PORT)",
                2,
                "a single value",
            ),
            (
                "tags:\n  a: b\n",
                "`tags` (DD_TAGS)",
                2,
                "a list (a YAML sequence",
            ),
            (
                "tags: [[a]]\n",
                "`tags` (DD_TAGS)",
                1,
                "a list (a YAML sequence",
            ),
            (
                "offpath:\n  fallback: {a: b}\n",
                "`offpath.fallback` (OFFPATH_FALLBACK)",
                2,
                "a single value",
            ),
            ("offpath: 3\n", "`offpath`", 1, "a mapping of keys"),
        ];
        for (text, key, line, expected) in cases {
            let e = YamlFile::parse(text, "offpath.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains(&format!("line {line}:")), "{e}");
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn malformed_yaml_is_an_error_with_a_position_and_no_value() {
        let cases = [
            "api_key: \"secretvalue\nsite: x\n",
            "site: a\nsite: b\n",
            "api_key: secretvalue\nsite: [unclosed\n",
        ];
        for text in cases {
            let e = match YamlFile::parse(text, "offpath.yaml") {
                Err(e) => e,
                Ok(v) => panic!("{text:?} parsed: {v:?}"),
            };
            assert!(matches!(e, FileError::Syntax { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("line"), "{msg}");
            assert!(msg.contains("offpath.yaml"), "{msg}");
            assert!(!msg.contains("secretvalue"), "{msg}");
        }
        let e = YamlFile::parse("- a\n- b\n", "f.yaml").unwrap_err();
        assert!(matches!(e, FileError::NotAMapping { .. }), "{e}");
    }

    #[test]
    fn an_invalid_value_from_the_file_names_the_key_and_where_it_was_set() {
        let (file, _) = parse("dogstatsd_port: eighty\n");
        let src = EnvOverFile::new(env(&[]), file);
        let e = Config::load(&src).unwrap_err();
        assert_eq!(e.key, "DD_DOGSTATSD_PORT");
        let k = all_keys().find(|k| k.envs[0] == e.key).unwrap();
        assert_eq!(src.origin(k), "as `dogstatsd_port` in offpath.yaml");
        let src = EnvOverFile::new(env(&[("DD_DOGSTATSD_PORT", "x")]), src.file);
        assert_eq!(src.origin(k), "in the environment (DD_DOGSTATSD_PORT)");
    }

    #[test]
    fn debug_output_shows_keys_but_never_values() {
        let (file, _) = parse("api_key: abcdef0123456789\n");
        let shown = format!("{file:?}");
        assert!(shown.contains("api_key"), "{shown}");
        assert!(!shown.contains("abcdef0123456789"), "{shown}");
    }

    #[test]
    fn an_empty_file_and_a_missing_file_behave_as_expected() {
        let (file, warnings) = parse("# only a comment\n");
        assert!(warnings.is_empty());
        assert_eq!(file.values.len(), 0);
        let e = YamlFile::read(Path::new("/nonexistent/offpath.yaml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/offpath.yaml"), "{e}");
    }

    #[test]
    fn the_example_config_file_loads_without_warnings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples/offpath.yaml");
        let (file, warnings) = YamlFile::read(&path).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let c = Config::load(&EnvOverFile::new(env(&[]), file)).unwrap();
        assert!(c.forward.api_key.is_none());
        assert_eq!(c.ingest.udp, Some("127.0.0.1:8125".parse().unwrap()));
    }
}
