//! Which destination a fallback record is for (dual shipping), and which records a replay keeps.
//!
//! The `offpath` records of a copy that an additional destination missed name it right after the
//! version (`{"offpath":1,"dest":"<endpoint>#<key end>",…}`); a record without `dest` is the main
//! destination's (see `docs/protocols.md`). `offpath replay` runs once per configured destination, each
//! run keeping the records of its destination only.

/// How an `offpath` record naming its destination begins (after any log prefix).
const DEST_HEAD: &str = "{\"offpath\":1,\"dest\":";

/// The destination a record line names, if it names one (a record without `dest` is the main
/// destination's). Text before the first `{` (a log prefix) is ignored, as by `parse_record`.
pub fn record_destination(line: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        dest: Option<String>,
    }
    let json = &line[line.find('{')?..];
    if !json.starts_with(DEST_HEAD) {
        return None;
    }
    serde_json::from_str::<Probe>(json.trim_end())
        .ok()
        .and_then(|p| p.dest)
}

/// Which records one replay run keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationFilter {
    /// The destination of this run: `None` for the main one (records without `dest`).
    pub only: Option<String>,
    /// Every configured destination's name: a record naming none of them is counted as
    /// `unknown_destination` by the main run (and skipped by every run).
    pub known: Vec<String>,
}

/// What the filter made of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// For this run.
    Keep,
    /// For another configured destination.
    Other,
    /// For a destination that is not configured (counted by the main run only).
    Unknown,
}

impl DestinationFilter {
    /// Decide about one line.
    pub fn check(&self, line: &str) -> Verdict {
        let dest = record_destination(line);
        match (&self.only, dest) {
            (None, None) => Verdict::Keep,
            (Some(only), Some(d)) if same(only, &d) => Verdict::Keep,
            (None, Some(d)) if !self.known.iter().any(|k| same(k, &d)) => Verdict::Unknown,
            _ => Verdict::Other,
        }
    }
}

/// Two destination names are the same (a trailing `/` of the endpoint aside).
fn same(a: &str, b: &str) -> bool {
    let norm = |n: &str| match n.rsplit_once('#') {
        Some((e, k)) => format!("{}#{k}", e.trim_end_matches('/')),
        None => n.to_owned(),
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = r#"{"offpath":1,"kind":"service_check","check":"c","status":0,"ts":1,"message":"","tags":[]}"#;
    const B: &str = r#"{"offpath":1,"dest":"https://b.example#bbbb2","kind":"service_check","check":"c","status":0,"ts":1,"message":"","tags":[]}"#;
    const C: &str = r#"{"offpath":1,"dest":"https://c.example#cccc3","kind":"service_check","check":"c","status":0,"ts":1,"message":"","tags":[]}"#;

    #[test]
    fn a_record_names_its_destination_or_is_the_main_ones() {
        assert_eq!(record_destination(MAIN), None);
        assert_eq!(
            record_destination(B).as_deref(),
            Some("https://b.example#bbbb2")
        );
        let prefixed = format!("2026-12-04T09:00:00Z INFO {B}");
        assert_eq!(
            record_destination(&prefixed).as_deref(),
            Some("https://b.example#bbbb2")
        );
        assert_eq!(record_destination("not a record"), None);
        assert!(crate::fallback::records::parse_record(B).is_ok());
    }

    #[test]
    fn each_run_keeps_its_destinations_records_and_the_main_run_counts_unknown_ones() {
        let known = vec![
            "https://a.example#aaaa1".to_owned(),
            "https://b.example/#bbbb2".to_owned(),
        ];
        let main = DestinationFilter {
            only: None,
            known: known.clone(),
        };
        let b = DestinationFilter {
            only: Some(known[1].clone()),
            known,
        };
        assert_eq!(main.check(MAIN), Verdict::Keep);
        assert_eq!(main.check(B), Verdict::Other);
        assert_eq!(main.check(C), Verdict::Unknown);
        assert_eq!(b.check(MAIN), Verdict::Other);
        assert_eq!(b.check(B), Verdict::Keep);
        assert_eq!(b.check(C), Verdict::Other);
        // Old records (before dual shipping) have no `dest`: the main destination's.
        assert_eq!(DestinationFilter::default().check(MAIN), Verdict::Keep);
    }
}
