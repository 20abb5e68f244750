//! CloudWatch Logs and stdout sinks for what the forwarder could not deliver; record formats; replay.

pub mod records;
