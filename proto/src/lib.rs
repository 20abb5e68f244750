//! Datadog agent-payload messages (`MetricPayload`, `SketchPayload`) as prost structs.
#![deny(missing_docs)]
