//! Datadog agent-payload messages (`MetricPayload`, `SketchPayload`) as prost structs.
//!
//! The source of truth is `proto/agent_payload.proto` (a copy of the relevant part of
//! `DataDog/agent-payload proto/metrics/agent_payload.proto`). The structs are written by hand in the
//! shape `prost-build` would generate, so no `protoc` is needed at build time; the tests below pin their
//! wire encoding byte for byte.
//!
//! Layout, as prost generates it: messages nested in a message live in a module named after the
//! parent in snake case, e.g. [`metric_payload::MetricSeries`] and [`sketch_payload::sketch::Dogsketch`].
#![deny(missing_docs)]

/// Free-form metadata shared by a whole sketch payload (the agent leaves it empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommonMetadata {
    /// Agent version string.
    #[prost(string, tag = "1")]
    pub agent_version: String,
    /// Time zone name.
    #[prost(string, tag = "2")]
    pub timezone: String,
    /// Current time, seconds since the epoch.
    #[prost(double, tag = "3")]
    pub current_epoch: f64,
    /// Internal IP address.
    #[prost(string, tag = "4")]
    pub internal_ip: String,
    /// Public IP address.
    #[prost(string, tag = "5")]
    pub public_ip: String,
    /// API key (never set by offpath: the key travels in the `DD-API-KEY` header).
    #[prost(string, tag = "6")]
    pub api_key: String,
}

/// Where a metric came from (product, category, service codes); fields 1–3 are reserved.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Origin {
    /// Origin product code.
    #[prost(uint32, tag = "4")]
    pub origin_product: u32,
    /// Origin category code.
    #[prost(uint32, tag = "5")]
    pub origin_category: u32,
    /// Origin service code.
    #[prost(uint32, tag = "6")]
    pub origin_service: u32,
}

/// Per-series metadata; offpath omits it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    /// Origin of the metric.
    #[prost(message, optional, tag = "1")]
    pub origin: Option<Origin>,
}

/// The body of `POST /api/v2/series`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricPayload {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<metric_payload::MetricSeries>,
}

/// Messages nested in [`MetricPayload`].
pub mod metric_payload {
    /// How the intake types a series.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        /// No type ("Not Assigned" in the app).
        Unspecified = 0,
        /// A raw sum over `interval` seconds.
        Count = 1,
        /// A per-second rate over `interval` seconds.
        Rate = 2,
        /// A last value.
        Gauge = 3,
    }

    /// One point of a series.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct MetricPoint {
        /// The value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Seconds since the UNIX epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// A resource a series belongs to, e.g. `{type: "host", name: "i-123"}`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        /// Resource type (`host`).
        #[prost(string, tag = "1")]
        pub r#type: String,
        /// Resource name (the host name).
        #[prost(string, tag = "2")]
        pub name: String,
    }

    /// One series.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricSeries {
        /// Resources; the host travels here.
        #[prost(message, repeated, tag = "1")]
        pub resources: Vec<Resource>,
        /// Metric name.
        #[prost(string, tag = "2")]
        pub metric: String,
        /// Tags.
        #[prost(string, repeated, tag = "3")]
        pub tags: Vec<String>,
        /// Points.
        #[prost(message, repeated, tag = "4")]
        pub points: Vec<MetricPoint>,
        /// Intake type, a [`MetricType`] value.
        #[prost(enumeration = "MetricType", tag = "5")]
        pub r#type: i32,
        /// Unit name.
        #[prost(string, tag = "6")]
        pub unit: String,
        /// Source type name.
        #[prost(string, tag = "7")]
        pub source_type_name: String,
        /// Interval in seconds (rates and counts).
        #[prost(int64, tag = "8")]
        pub interval: i64,
        /// Origin metadata.
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<super::Metadata>,
    }
}

/// The body of `POST /api/beta/sketches`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SketchPayload {
    /// The sketch series.
    #[prost(message, repeated, tag = "1")]
    pub sketches: Vec<sketch_payload::Sketch>,
    /// Payload metadata (the agent leaves it empty).
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<CommonMetadata>,
}

/// Messages nested in [`SketchPayload`].
pub mod sketch_payload {
    /// One distribution series: a name, tags, a host and one sketch per bucket.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sketch {
        /// Metric name.
        #[prost(string, tag = "1")]
        pub metric: String,
        /// Host name.
        #[prost(string, tag = "2")]
        pub host: String,
        /// Legacy distributions; never written.
        #[prost(message, repeated, tag = "3")]
        pub distributions: Vec<sketch::Distribution>,
        /// Tags.
        #[prost(string, repeated, tag = "4")]
        pub tags: Vec<String>,
        /// One agent DDSketch per 10 s bucket.
        #[prost(message, repeated, tag = "7")]
        pub dogsketches: Vec<sketch::Dogsketch>,
        /// Origin metadata.
        #[prost(message, optional, tag = "8")]
        pub metadata: Option<super::Metadata>,
    }

    /// Messages nested in [`Sketch`].
    pub mod sketch {
        /// Legacy distribution summary; never written by the agent or offpath.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Distribution {
            /// Timestamp, seconds.
            #[prost(int64, tag = "1")]
            pub ts: i64,
            /// Count.
            #[prost(int64, tag = "2")]
            pub cnt: i64,
            /// Minimum.
            #[prost(double, tag = "3")]
            pub min: f64,
            /// Maximum.
            #[prost(double, tag = "4")]
            pub max: f64,
            /// Average.
            #[prost(double, tag = "5")]
            pub avg: f64,
            /// Sum.
            #[prost(double, tag = "6")]
            pub sum: f64,
            /// Values.
            #[prost(double, repeated, tag = "7")]
            pub v: Vec<f64>,
            /// GK g values.
            #[prost(uint32, repeated, tag = "8")]
            pub g: Vec<u32>,
            /// GK deltas.
            #[prost(uint32, repeated, tag = "9")]
            pub delta: Vec<u32>,
            /// Buffered values.
            #[prost(double, repeated, tag = "10")]
            pub buf: Vec<f64>,
        }

        /// One agent DDSketch bucket (γ = 1 + 2/128, bias 1338).
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Dogsketch {
            /// Bucket start, seconds.
            #[prost(int64, tag = "1")]
            pub ts: i64,
            /// Number of values.
            #[prost(int64, tag = "2")]
            pub cnt: i64,
            /// Smallest value.
            #[prost(double, tag = "3")]
            pub min: f64,
            /// Largest value.
            #[prost(double, tag = "4")]
            pub max: f64,
            /// Average value.
            #[prost(double, tag = "5")]
            pub avg: f64,
            /// Sum of values.
            #[prost(double, tag = "6")]
            pub sum: f64,
            /// Bin keys, ascending (packed `sint32`).
            #[prost(sint32, repeated, tag = "7")]
            pub k: Vec<i32>,
            /// Bin counts, each at most 65535 (packed `uint32`).
            #[prost(uint32, repeated, tag = "8")]
            pub n: Vec<u32>,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::metric_payload::{MetricPoint, MetricSeries, MetricType, Resource};
    use super::sketch_payload::{Sketch, sketch::Dogsketch};
    use super::*;
    use prost::Message;

    #[test]
    fn a_small_metric_payload_encodes_to_the_pinned_bytes() {
        let payload = MetricPayload {
            series: vec![MetricSeries {
                resources: vec![Resource {
                    r#type: "host".into(),
                    name: "h".into(),
                }],
                metric: "m".into(),
                tags: vec!["a:b".into()],
                points: vec![MetricPoint {
                    value: 1.5,
                    timestamp: 1_700_000_000,
                }],
                r#type: MetricType::Rate as i32,
                interval: 10,
                ..MetricSeries::default()
            }],
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0a, 0x28,                                     // series (1, LEN) 40 bytes
              0x0a, 0x09,                                   //   resources (1, LEN) 9
                0x0a, 0x04, b'h', b'o', b's', b't',         //     type = "host"
                0x12, 0x01, b'h',                           //     name = "h"
              0x12, 0x01, b'm',                             //   metric = "m"
              0x1a, 0x03, b'a', b':', b'b',                 //   tags = "a:b"
              0x22, 0x0f,                                   //   points (4, LEN) 15
                0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f,         //     value = 1.5 (fixed64)
                0x10, 0x80, 0xe2, 0xcf, 0xaa, 0x06,         //     timestamp = 1700000000
              0x28, 0x02,                                   //   type = RATE
              0x40, 0x0a,                                   //   interval = 10
        ];
        assert_eq!(payload.encode_to_vec(), expected);
        assert_eq!(MetricPayload::decode(expected).unwrap(), payload);
    }

    #[test]
    fn a_small_sketch_payload_encodes_k_as_packed_zigzag_sint32() {
        let payload = SketchPayload {
            sketches: vec![Sketch {
                metric: "d".into(),
                host: "h".into(),
                tags: vec!["t".into()],
                dogsketches: vec![Dogsketch {
                    ts: 10,
                    cnt: 3,
                    min: -1.0,
                    max: 1.0,
                    avg: 0.0,
                    sum: 0.0,
                    k: vec![-1338, 0, 1338],
                    n: vec![1, 1, 70_000],
                }],
                ..Sketch::default()
            }],
            metadata: None,
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0a, 0x2f,                                     // sketches (1, LEN) 47
              0x0a, 0x01, b'd',                             //   metric = "d"
              0x12, 0x01, b'h',                             //   host = "h"
              0x22, 0x01, b't',                             //   tags = "t"
              0x3a, 0x24,                                   //   dogsketches (7, LEN) 36
                0x08, 0x0a,                                 //     ts = 10
                0x10, 0x03,                                 //     cnt = 3
                0x19, 0, 0, 0, 0, 0, 0, 0xf0, 0xbf,         //     min = -1.0
                0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,         //     max = 1.0
                                                            //     avg, sum = 0: omitted
                0x3a, 0x05,                                 //     k (7, LEN) packed, 5 bytes
                  0xf3, 0x14,                               //       zigzag(-1338) = 2675
                  0x00,                                     //       0
                  0xf4, 0x14,                               //       zigzag(1338) = 2676
                0x42, 0x05,                                 //     n (8, LEN) packed, 5 bytes
                  0x01, 0x01, 0xf0, 0xa2, 0x04,             //       1, 1, 70000
        ];
        assert_eq!(payload.encode_to_vec(), expected);
        assert_eq!(SketchPayload::decode(expected).unwrap(), payload);
    }

    #[test]
    fn the_proto_file_declares_the_field_numbers_the_structs_use() {
        let proto = include_str!("../proto/agent_payload.proto");
        for line in [
            "repeated MetricSeries series = 1;",
            "MetricType type = 5;",
            "int64 interval = 8;",
            "repeated sint32 k = 7;",
            "repeated uint32 n = 8;",
            "repeated Dogsketch dogsketches = 7;",
            "repeated string tags = 4;",
        ] {
            assert!(
                proto.contains(line),
                "{line} missing from agent_payload.proto"
            );
        }
    }
}
