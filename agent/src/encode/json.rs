//! Events (`POST /intake/`, many per request, as the Datadog Agent sends DogStatsD events) and service
//! checks (`POST /api/v1/check_run`, a JSON array).
//!
//! The events body (docs/protocols.md, "Events"): one JSON object
//! `{"apiKey":"","events":{"<source type>":[<event>,…]},"internalHostname":"<host>"}`, where each event
//! is `{"msg_title","msg_text","timestamp","priority","host","tags","alert_type","aggregation_key",
//! "source_type_name"}` and the group key is the events' source type name (`api` when they have none).
//! offpath puts one group per payload: the events of one source type and host, so `internalHostname`
//! is their host.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::EncodeError;
use super::batch::{Framing, Item};
use crate::model::{AlertType, Event, Priority, ServiceCheck};

/// The group key of events without a source type name (as the Agent).
const DEFAULT_SOURCE: &str = "api";

/// One event of the `/intake/` body.
#[derive(Serialize)]
struct EventOut<'a> {
    msg_title: &'a str,
    msg_text: &'a str,
    timestamp: i64,
    priority: &'static str,
    host: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    alert_type: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    aggregation_key: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    source_type_name: &'a str,
}

#[derive(Deserialize)]
struct EventIn {
    msg_title: String,
    #[serde(default)]
    msg_text: String,
    #[serde(default)]
    timestamp: i64,
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

/// The `/intake/` events body.
#[derive(Deserialize)]
struct EventsIn {
    events: BTreeMap<String, Vec<EventIn>>,
}

/// The framing of one `/intake/` events body: the events of one source type (`source_type_name`) and
/// one host.
pub(super) fn events_framing(source_type_name: &str, host: &str) -> Framing {
    let key = if source_type_name.is_empty() {
        DEFAULT_SOURCE
    } else {
        source_type_name
    };
    let mut open = b"{\"apiKey\":\"\",\"events\":{".to_vec();
    // Serializing a string cannot fail; an empty key would only be refused by the intake.
    open.extend(serde_json::to_vec(key).unwrap_or_default());
    open.extend_from_slice(b":[");
    let mut close = b"]},\"internalHostname\":".to_vec();
    close.extend(serde_json::to_vec(host).unwrap_or_default());
    close.push(b'}');
    Framing {
        open: Cow::Owned(open),
        sep: b",",
        close: Cow::Owned(close),
    }
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

/// Serialize one event of an `/intake/` body (frame it with [`events_framing`]).
///
/// # Errors
/// Serialization failed (it does not for these types; the error is kept typed rather than unwrapped).
pub(super) fn event(e: &Event) -> Result<JsonItem, EncodeError> {
    serde_json::to_vec(&EventOut {
        msg_title: &e.title,
        msg_text: &e.text,
        timestamp: e.ts,
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

/// Decode an `/intake/` events body, group after group.
///
/// # Errors
/// The body is not an events body.
pub(super) fn decode_events(raw: &[u8]) -> Result<Vec<Event>, EncodeError> {
    let body: EventsIn = serde_json::from_slice(raw).map_err(EncodeError::Json)?;
    Ok(body
        .events
        .into_values()
        .flatten()
        .map(|e| Event {
            title: e.msg_title,
            text: e.msg_text,
            ts: e.timestamp,
            priority: priority(e.priority.as_deref()),
            alert_type: alert_type(e.alert_type.as_deref()),
            aggregation_key: e.aggregation_key,
            source_type_name: e.source_type_name,
            host: e.host,
            tags: e.tags,
        })
        .collect())
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
    fn an_event_has_the_fields_the_agent_sends_to_the_intake_and_reads_back() {
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
            serde_json::json!({"msg_title":"deploy","msg_text":"line 1\nline 2","timestamp":1_700_000_000,
                "priority":"low","host":"h","tags":["a:b"],"alert_type":"warning","aggregation_key":"agg"})
        );
        let framing = events_framing("", "h");
        let mut body = framing.open.to_vec();
        body.extend_from_slice(&bytes);
        body.extend_from_slice(&framing.close);
        let whole: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(whole["apiKey"], "");
        assert_eq!(whole["internalHostname"], "h");
        assert_eq!(whole["events"]["api"][0], v);
        assert_eq!(decode_events(&body).unwrap(), vec![e]);
    }

    #[test]
    fn events_are_grouped_under_their_source_type_name() {
        let framing = events_framing("jenkins \"ci\"", "");
        let mut body = framing.open.to_vec();
        body.extend_from_slice(
            b"{\"msg_title\":\"t\",\"source_type_name\":\"jenkins \\\"ci\\\"\"}",
        );
        body.extend_from_slice(&framing.close);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["events"]["jenkins \"ci\""][0]["msg_title"], "t");
        let back = decode_events(&body).unwrap();
        assert_eq!(back[0].source_type_name, "jenkins \"ci\"");
        assert_eq!(back[0].priority, Priority::Normal);
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
