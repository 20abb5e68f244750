//! The `platform` events of the Telemetry API that the extension uses, parsed from a POSTed batch.
//!
//! A batch is a JSON array of `{"time", "type", "record"}`. Kept: `platform.initStart`,
//! `platform.initReport`, `platform.start`, `platform.runtimeDone` and `platform.report`, with the fields
//! the lifecycle and the enhanced metrics read (see `docs/protocols.md`, "Lambda Telemetry API"). Every
//! other event, and a record that is not an object (a function's log line), is skipped; a missing metric
//! is `None`, never a made-up zero.

use serde::Deserialize;

/// One platform event the extension cares about.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryEvent {
    /// `platform.initStart`: the sandbox's init phase began.
    InitStart {
        /// `on-demand`, `provisioned-concurrency` or `snap-start`.
        initialization_type: String,
    },
    /// `platform.initReport`: the init phase ended.
    InitReport(InitReport),
    /// `platform.start`: an invocation began.
    Start {
        /// The invocation's request id.
        request_id: String,
    },
    /// `platform.runtimeDone`: the runtime has sent the response (or failed); the caller is served.
    RuntimeDone(RuntimeDone),
    /// `platform.report`: the invocation's final report, after every extension was done.
    Report(Report),
}

/// `platform.initReport`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InitReport {
    /// `on-demand`, `provisioned-concurrency` or `snap-start`.
    pub initialization_type: String,
    /// `init`, or `invoke` when the init was re-run in the first invocation (a suppressed init).
    pub phase: String,
    /// `metrics.durationMs`.
    pub duration_ms: Option<f64>,
    /// The event's `time`, unix seconds.
    pub time: Option<i64>,
}

/// `platform.runtimeDone`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeDone {
    /// The invocation's request id.
    pub request_id: String,
    /// `success`, `failure`, `error` or `timeout`.
    pub status: String,
    /// `errorType` when the invocation failed, e.g. `Runtime.OutOfMemory`.
    pub error_type: Option<String>,
    /// `metrics.durationMs`: the runtime's time on the invocation.
    pub duration_ms: Option<f64>,
    /// `metrics.producedBytes`: the response's size.
    pub produced_bytes: Option<f64>,
    /// The event's `time`, unix seconds.
    pub time: Option<i64>,
}

/// `platform.report`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// The invocation's request id.
    pub request_id: String,
    /// `success`, `failure`, `error` or `timeout`.
    pub status: String,
    /// `metrics.durationMs`: the whole invocation, post-runtime time included.
    pub duration_ms: Option<f64>,
    /// `metrics.billedDurationMs`.
    pub billed_duration_ms: Option<f64>,
    /// `metrics.memorySizeMB`.
    pub memory_size_mb: Option<f64>,
    /// `metrics.maxMemoryUsedMB`.
    pub max_memory_used_mb: Option<f64>,
    /// `metrics.initDurationMs`, on the first invocation of an on-demand sandbox.
    pub init_duration_ms: Option<f64>,
    /// The event's `time`, unix seconds.
    pub time: Option<i64>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(default)]
    time: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    record: serde_json::Value,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Metrics {
    duration_ms: Option<f64>,
    produced_bytes: Option<f64>,
    billed_duration_ms: Option<f64>,
    #[serde(rename = "memorySizeMB")]
    memory_size_mb: Option<f64>,
    #[serde(rename = "maxMemoryUsedMB")]
    max_memory_used_mb: Option<f64>,
    init_duration_ms: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Record {
    request_id: String,
    status: String,
    error_type: Option<String>,
    initialization_type: String,
    phase: String,
    metrics: Metrics,
}

/// Unix seconds of an RFC 3339 `time` (`2024-01-01T00:00:00.000Z`).
fn unix_seconds(time: Option<&str>) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(time?, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp())
}

/// Parse one POSTed batch into the events that matter.
///
/// # Errors
/// The JSON error when the body is not an array of telemetry events.
pub fn parse_batch(body: &[u8]) -> Result<Vec<TelemetryEvent>, serde_json::Error> {
    let raw: Vec<RawEvent> = serde_json::from_slice(body)?;
    Ok(raw.into_iter().filter_map(event).collect())
}

fn event(e: RawEvent) -> Option<TelemetryEvent> {
    let kind = match e.kind.as_str() {
        k @ ("platform.initStart"
        | "platform.initReport"
        | "platform.start"
        | "platform.runtimeDone"
        | "platform.report") => k,
        _ => return None,
    };
    if !e.record.is_object() {
        return None;
    }
    let r: Record = serde_json::from_value(e.record).ok()?;
    let time = unix_seconds(e.time.as_deref());
    let m = r.metrics;
    Some(match kind {
        "platform.initStart" => TelemetryEvent::InitStart {
            initialization_type: r.initialization_type,
        },
        "platform.initReport" => TelemetryEvent::InitReport(InitReport {
            initialization_type: r.initialization_type,
            phase: r.phase,
            duration_ms: m.duration_ms,
            time,
        }),
        "platform.start" => TelemetryEvent::Start {
            request_id: r.request_id,
        },
        "platform.runtimeDone" => TelemetryEvent::RuntimeDone(RuntimeDone {
            request_id: r.request_id,
            status: r.status,
            error_type: r.error_type,
            duration_ms: m.duration_ms,
            produced_bytes: m.produced_bytes,
            time,
        }),
        _ => TelemetryEvent::Report(Report {
            request_id: r.request_id,
            status: r.status,
            duration_ms: m.duration_ms,
            billed_duration_ms: m.billed_duration_ms,
            memory_size_mb: m.memory_size_mb,
            max_memory_used_mb: m.max_memory_used_mb,
            init_duration_ms: m.init_duration_ms,
            time,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_yields_the_platform_events_with_their_metrics_and_skips_the_rest() {
        let body = br#"[
            {"time":"2024-01-01T00:00:00.000Z","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init","runtimeVersion":"python:3.12"}},
            {"time":"2024-01-01T00:00:00.250Z","type":"platform.initReport","record":{"initializationType":"on-demand","phase":"init","status":"success","metrics":{"durationMs":250.5}}},
            {"time":"2024-01-01T00:00:01.001Z","type":"platform.start","record":{"requestId":"r1","version":"$LATEST"}},
            {"time":"2024-01-01T00:00:01.050Z","type":"platform.runtimeDone","record":{"requestId":"r1","status":"error","errorType":"Runtime.OutOfMemory","metrics":{"durationMs":49.1,"producedBytes":12},"spans":[]}},
            {"time":"2024-01-01T00:00:01.090Z","type":"platform.report","record":{"requestId":"r1","status":"error","metrics":{"durationMs":89.0,"billedDurationMs":90,"memorySizeMB":128,"maxMemoryUsedMB":128,"initDurationMs":250.5}}},
            {"time":"2024-01-01T00:00:01.091Z","type":"platform.logsDropped","record":{"reason":"x","droppedRecords":1,"droppedBytes":3}},
            {"time":"2024-01-01T00:00:01.092Z","type":"function","record":"hello"}
        ]"#;
        let t0 = 1_704_067_200;
        assert_eq!(
            parse_batch(body).unwrap(),
            [
                TelemetryEvent::InitStart {
                    initialization_type: "on-demand".into()
                },
                TelemetryEvent::InitReport(InitReport {
                    initialization_type: "on-demand".into(),
                    phase: "init".into(),
                    duration_ms: Some(250.5),
                    time: Some(t0),
                }),
                TelemetryEvent::Start {
                    request_id: "r1".into()
                },
                TelemetryEvent::RuntimeDone(RuntimeDone {
                    request_id: "r1".into(),
                    status: "error".into(),
                    error_type: Some("Runtime.OutOfMemory".into()),
                    duration_ms: Some(49.1),
                    produced_bytes: Some(12.0),
                    time: Some(t0 + 1),
                }),
                TelemetryEvent::Report(Report {
                    request_id: "r1".into(),
                    status: "error".into(),
                    duration_ms: Some(89.0),
                    billed_duration_ms: Some(90.0),
                    memory_size_mb: Some(128.0),
                    max_memory_used_mb: Some(128.0),
                    init_duration_ms: Some(250.5),
                    time: Some(t0 + 1),
                }),
            ]
        );
    }

    #[test]
    fn missing_metrics_and_time_are_none_and_a_string_record_is_skipped() {
        let body = br#"[{"time":"t","type":"function","record":"hello"},
            {"type":"platform.runtimeDone","record":{"requestId":"r2","status":"timeout"}},
            {"time":"yesterday","type":"platform.report","record":"not an object"}]"#;
        assert_eq!(
            parse_batch(body).unwrap(),
            [TelemetryEvent::RuntimeDone(RuntimeDone {
                request_id: "r2".into(),
                status: "timeout".into(),
                ..RuntimeDone::default()
            })]
        );
    }

    #[test]
    fn a_metric_of_the_wrong_type_skips_that_event_only() {
        let body = br#"[{"type":"platform.report","record":{"requestId":"r3","metrics":{"durationMs":"fast"}}},
            {"type":"platform.start","record":{"requestId":"r4"}}]"#;
        assert_eq!(
            parse_batch(body).unwrap(),
            [TelemetryEvent::Start {
                request_id: "r4".into()
            }]
        );
    }

    #[test]
    fn a_body_that_is_not_an_array_is_an_error() {
        for body in [&b"{}"[..], b"", b"[1]"] {
            assert!(parse_batch(body).is_err(), "{body:?}");
        }
    }
}
