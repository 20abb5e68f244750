//! Protobuf series and sketches, JSON events and service checks, intake size limits, zstd.
