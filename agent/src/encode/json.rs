//! Events (`POST /api/v1/events`, one JSON object per request) and service checks
//! (`POST /api/v1/check_run`, a JSON array).

use serde::{Deserialize, Serialize};

use super::EncodeError;
use super::batch::Item;
use crate::model::{AlertType, Event, Priority, ServiceCheck};

/// `EventCreateRequest` as the public events API takes it.
#[derive(Serialize)]
struct EventOut<'a> {
    title: &'a str,
    text: &'a str,
    date_happened: i64,
    priority: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    host: &'a str,
    tags: &'a [String],
    alert_type: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    aggregation_key: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    source_type_name: &'a str,
}

#[derive(Deserialize)]
struct EventIn {
    title: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    date_happened: i64,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    host: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    alert_type: Option<String>,
    #[serde(default)]
    aggregation_key: String,
    #[serde(default)]
    source_type_name: String,
}

/// One entry of the `check_run` array.
#[derive(Serialize)]
struct CheckOut<'a> {
    check: &'a str,
    host_name: &'a str,
    status: u8,
    timestamp: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    tags: &'a [String],
}

#[derive(Deserialize)]
struct CheckIn {
    check: String,
    #[serde(default)]
    host_name: String,
    status: u8,
    #[serde(default)]
    timestamp: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// An item already serialized to JSON; events and service checks are few, so this costs nothing that
/// matters and lets the batcher treat them like protobuf items.
pub(super) struct JsonItem(Vec<u8>);

impl Item for JsonItem {
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn write(&self, _len: usize, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.0);
    }
    fn points(&self) -> usize {
        1
    }
    fn samples(&self) -> u64 {
        1
    }
    fn halve(&self) -> Option<(Self, Self)> {
        None
    }
}

/// Serialize an event for `/api/v1/events`.
///
/// # Errors
/// Serialization failed (it does not for these types; the error is kept typed rather than unwrapped).
pub(super) fn event(e: &Event) -> Result<JsonItem, EncodeError> {
    serde_json::to_vec(&EventOut {
        title: &e.title,
        text: &e.text,
        date_happened: e.ts,
        priority: e.priority.as_str(),
        host: &e.host,
        tags: &e.tags,
        alert_type: e.alert_type.as_str(),
        aggregation_key: &e.aggregation_key,
        source_type_name: &e.source_type_name,
    })
    .map(JsonItem)
    .map_err(EncodeError::Json)
}

/// Serialize a service check for the `/api/v1/check_run` array.
///
/// # Errors
/// Serialization failed.
pub(super) fn service_check(c: &ServiceCheck) -> Result<JsonItem, EncodeError> {
    serde_json::to_vec(&CheckOut {
        check: &c.check,
        host_name: &c.host,
        status: c.status,
        timestamp: c.ts,
        message: &c.message,
        tags: &c.tags,
    })
    .map(JsonItem)
    .map_err(EncodeError::Json)
}

fn priority(s: Option<&str>) -> Priority {
    match s {
        Some("low") => Priority::Low,
        _ => Priority::Normal,
    }
}

fn alert_type(s: Option<&str>) -> AlertType {
    match s {
        Some("error") => AlertType::Error,
        Some("warning") => AlertType::Warning,
        Some("success") => AlertType::Success,
        _ => AlertType::Info,
    }
}

/// Decode an `/api/v1/events` body.
///
/// # Errors
/// The body is not an event object.
pub(super) fn decode_event(raw: &[u8]) -> Result<Event, EncodeError> {
    let e: EventIn = serde_json::from_slice(raw).map_err(EncodeError::Json)?;
    Ok(Event {
        title: e.title,
        text: e.text,
        ts: e.date_happened,
        priority: priority(e.priority.as_deref()),
        alert_type: alert_type(e.alert_type.as_deref()),
        aggregation_key: e.aggregation_key,
        source_type_name: e.source_type_name,
        host: e.host,
        tags: e.tags,
    })
}

/// Decode an `/api/v1/check_run` body.
///
/// # Errors
/// The body is not an array of service checks.
pub(super) fn decode_service_checks(raw: &[u8]) -> Result<Vec<ServiceCheck>, EncodeError> {
    let checks: Vec<CheckIn> = serde_json::from_slice(raw).map_err(EncodeError::Json)?;
    Ok(checks
        .into_iter()
        .map(|c| ServiceCheck {
            check: c.check,
            status: c.status,
            ts: c.timestamp,
            message: c.message,
            host: c.host_name,
            tags: c.tags,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_the_fields_of_the_public_events_api() {
        let e = Event {
            title: "deploy".into(),
            text: "line 1\nline 2".into(),
            ts: 1_700_000_000,
            priority: Priority::Low,
            alert_type: AlertType::Warning,
            aggregation_key: "agg".into(),
            source_type_name: String::new(),
            host: "h".into(),
            tags: vec!["a:b".into()],
        };
        let JsonItem(bytes) = event(&e).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"title":"deploy","text":"line 1\nline 2","date_happened":1_700_000_000,
                "priority":"low","host":"h","tags":["a:b"],"alert_type":"warning","aggregation_key":"agg"})
        );
        assert_eq!(decode_event(&bytes).unwrap(), e);
    }

    #[test]
    fn a_service_check_has_the_fields_of_check_run_and_reads_back() {
        let c = ServiceCheck {
            check: "app.up".into(),
            status: 2,
            ts: 1_700_000_000,
            message: String::new(),
            host: String::new(),
            tags: vec![],
        };
        let JsonItem(bytes) = service_check(&c).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"check":"app.up","host_name":"","status":2,"timestamp":1_700_000_000,"tags":[]})
        );
        let mut array = b"[".to_vec();
        array.extend_from_slice(&bytes);
        array.push(b']');
        assert_eq!(decode_service_checks(&array).unwrap(), vec![c]);
    }
}
