//! Reading `offpath` records back (`offpath replay`): [`parse_record`] is the inverse of the `offpath`
//! format; every other line (other logs, `forwarder` lines, EMF documents) is [`RecordError::NotARecord`].

use super::VERSION;
use crate::model::{
    AlertType, DogSketch, Event, Priority, Series, SeriesKind, ServiceCheck, SketchSeries,
};

/// One parsed `offpath` record.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A series record; `samples` is its number of points.
    Series(Series),
    /// A sketch record; `samples` is its number of sketch buckets.
    Sketch(SketchSeries),
    /// An event record.
    Event(Event),
    /// A service-check record.
    ServiceCheck(ServiceCheck),
}

/// Why a line is not a usable `offpath` record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The line is not a JSON object with an `offpath` key (another log line): skipped, not an error.
    #[error("not an offpath record")]
    NotARecord,
    /// An `offpath` version this build does not read.
    #[error("unsupported offpath record version {0} (this build reads version 1)")]
    Version(u64),
    /// An unknown `kind`.
    #[error("unknown record kind {0:?}")]
    Kind(String),
    /// A field that this kind needs is missing.
    #[error("{kind} record without {field:?}")]
    Missing {
        /// The record kind.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A field has a value this kind does not accept.
    #[error("invalid {field:?} in record: {value}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What was found.
        value: String,
    },
    /// The JSON is malformed or a field has the wrong JSON type.
    #[error("malformed offpath record: {0}")]
    Json(String),
}

#[derive(serde::Deserialize)]
struct WireSketch {
    ts: i64,
    cnt: i64,
    min: f64,
    max: f64,
    sum: f64,
    avg: f64,
    k: Vec<i32>,
    n: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Wire {
    offpath: u64,
    kind: String,
    metric: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    interval: Option<u32>,
    points: Option<Vec<(i64, f64)>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    host: String,
    sketches: Option<Vec<WireSketch>>,
    title: Option<String>,
    #[serde(default)]
    text: String,
    ts: Option<i64>,
    priority: Option<String>,
    alert_type: Option<String>,
    #[serde(default)]
    aggregation_key: String,
    #[serde(default)]
    source_type_name: String,
    check: Option<String>,
    status: Option<u8>,
    #[serde(default)]
    message: String,
}

#[derive(serde::Deserialize)]
struct Probe {
    offpath: Option<serde_json::Value>,
    /// Present in every EMF document, never in an `offpath` record: an EMF document whose metric or tag
    /// member happens to be called `offpath` is still not a record.
    _aws: Option<serde::de::IgnoredAny>,
}

/// Parse one line into an `offpath` record. Text before the first `{` (a log prefix) is ignored.
///
/// # Errors
/// [`RecordError::NotARecord`] for lines that are not `offpath` records (other logs), and the other
/// variants for records that are damaged or of an unknown version or kind.
pub fn parse_record(line: &str) -> Result<Parsed, RecordError> {
    let json = match line.find('{') {
        Some(i) => line[i..].trim_end(),
        None => return Err(RecordError::NotARecord),
    };
    match serde_json::from_str::<Probe>(json) {
        Ok(Probe {
            offpath: Some(_),
            _aws: None,
        }) => {}
        _ => return Err(RecordError::NotARecord),
    }
    let w: Wire = serde_json::from_str(json).map_err(|e| RecordError::Json(e.to_string()))?;
    if w.offpath != VERSION {
        return Err(RecordError::Version(w.offpath));
    }
    let missing = |kind, field| RecordError::Missing { kind, field };
    match w.kind.as_str() {
        "series" => {
            let name = w.metric.ok_or(missing("series", "metric"))?;
            let kind = match w.ty.as_deref() {
                Some("rate") => SeriesKind::Rate,
                Some("count") => SeriesKind::Count,
                Some("gauge") => SeriesKind::Gauge,
                Some(t) => {
                    return Err(RecordError::Invalid {
                        field: "type",
                        value: t.to_owned(),
                    });
                }
                None => return Err(missing("series", "type")),
            };
            let interval = match kind {
                SeriesKind::Gauge => 0,
                _ => w.interval.ok_or(missing("series", "interval"))?,
            };
            let points = w.points.ok_or(missing("series", "points"))?;
            Ok(Parsed::Series(Series {
                name,
                tags: w.tags,
                host: w.host,
                kind,
                interval,
                samples: points.len() as u64,
                points,
            }))
        }
        "sketch" => {
            let name = w.metric.ok_or(missing("sketch", "metric"))?;
            let wire = w.sketches.ok_or(missing("sketch", "sketches"))?;
            let mut sketches = Vec::with_capacity(wire.len());
            for s in wire {
                if s.k.len() != s.n.len() {
                    return Err(RecordError::Invalid {
                        field: "k",
                        value: format!("{} keys for {} counts", s.k.len(), s.n.len()),
                    });
                }
                sketches.push(DogSketch {
                    ts: s.ts,
                    cnt: s.cnt,
                    min: s.min,
                    max: s.max,
                    sum: s.sum,
                    avg: s.avg,
                    k: s.k,
                    n: s.n,
                });
            }
            Ok(Parsed::Sketch(SketchSeries {
                name,
                tags: w.tags,
                host: w.host,
                samples: sketches.len() as u64,
                sketches,
            }))
        }
        "event" => Ok(Parsed::Event(Event {
            title: w.title.ok_or(missing("event", "title"))?,
            text: w.text,
            ts: w.ts.ok_or(missing("event", "ts"))?,
            priority: match w.priority.as_deref() {
                None | Some("normal") => Priority::Normal,
                Some("low") => Priority::Low,
                Some(p) => {
                    return Err(RecordError::Invalid {
                        field: "priority",
                        value: p.to_owned(),
                    });
                }
            },
            alert_type: match w.alert_type.as_deref() {
                None | Some("info") => AlertType::Info,
                Some("error") => AlertType::Error,
                Some("warning") => AlertType::Warning,
                Some("success") => AlertType::Success,
                Some(a) => {
                    return Err(RecordError::Invalid {
                        field: "alert_type",
                        value: a.to_owned(),
                    });
                }
            },
            aggregation_key: w.aggregation_key,
            source_type_name: w.source_type_name,
            host: w.host,
            tags: w.tags,
        })),
        "service_check" => {
            let status = w.status.ok_or(missing("service_check", "status"))?;
            if status > 3 {
                return Err(RecordError::Invalid {
                    field: "status",
                    value: status.to_string(),
                });
            }
            Ok(Parsed::ServiceCheck(ServiceCheck {
                check: w.check.ok_or(missing("service_check", "check"))?,
                status,
                ts: w.ts.ok_or(missing("service_check", "ts"))?,
                message: w.message,
                host: w.host,
                tags: w.tags,
            }))
        }
        other => Err(RecordError::Kind(other.to_owned())),
    }
}
