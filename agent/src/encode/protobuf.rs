//! Series and sketches written straight from the model types as agent-payload protobuf.
//!
//! Writing the wire format directly (rather than building `offpath_proto` structs first) avoids cloning
//! every name and tag at each flush. The output is byte-identical to prost's encoding of the
//! equivalent `offpath_proto` message (tested below), and [`decode_series`] / [`decode_sketches`] read
//! it back through those prost structs.

use bytes::BufMut;
use offpath_proto::metric_payload::{MetricType, Resource};
use offpath_proto::sketch_payload::sketch::Dogsketch;
use offpath_proto::{MetricPayload, SketchPayload};
use prost::Message;
use prost::encoding::{WireType, encoded_len_varint};

use super::EncodeError;
use super::batch::Item;
use crate::model::{DogSketch, Series, SeriesKind, SketchSeries};

/// Length of a length-delimited field (key + length prefix + body); every tag here is below 16.
const fn delimited_len(body: usize) -> usize {
    1 + encoded_len_varint(body as u64) + body
}

/// The body length of a length-delimited field of total length `len` (the inverse of
/// [`delimited_len`], which is strictly increasing).
fn body_of(len: usize) -> usize {
    (1..=10)
        .map(|k| len.saturating_sub(1 + k))
        .find(|&body| delimited_len(body) == len)
        .unwrap_or(0)
}

/// A varint, inlined (the hot loop of sketch bins).
#[inline]
fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A field key; every tag written here is below 16, so the key is one byte.
#[inline]
fn encode_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    debug_assert!(tag < 16);
    buf.push(((tag << 3) | wire_type as u32) as u8);
}

/// ZigZag encoding of a `sint32`.
#[inline]
const fn zigzag(v: i32) -> u64 {
    ((v << 1) ^ (v >> 31)) as u32 as u64
}

fn put_delimited_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_str(tag: u32, s: &str, buf: &mut Vec<u8>) {
    put_delimited_header(tag, s.len(), buf);
    buf.put_slice(s.as_bytes());
}

/// A proto3 string field: omitted when empty.
fn opt_str_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(s.len())
    }
}

fn put_opt_str(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        put_str(tag, s, buf);
    }
}

/// A proto3 int64 field: omitted when zero; negative values take ten bytes, as in prost.
fn opt_i64_len(v: i64) -> usize {
    if v == 0 {
        0
    } else {
        1 + encoded_len_varint(v as u64)
    }
}

fn put_opt_i64(tag: u32, v: i64, buf: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v as u64, buf);
    }
}

/// A proto3 double field: omitted when `0.0` (or `-0.0`, which prost also skips).
fn opt_f64_len(v: f64) -> usize {
    if v == 0.0 { 0 } else { 9 }
}

fn put_opt_f64(tag: u32, v: f64, buf: &mut Vec<u8>) {
    if v != 0.0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.put_f64_le(v);
    }
}

const fn metric_type(kind: SeriesKind) -> MetricType {
    match kind {
        SeriesKind::Count => MetricType::Count,
        SeriesKind::Rate => MetricType::Rate,
        SeriesKind::Gauge => MetricType::Gauge,
    }
}

// ---- series: MetricPayload.series (field 1) of MetricSeries ----

const HOST_RESOURCE: &str = "host";

fn resource_len(host: &str) -> usize {
    delimited_len(HOST_RESOURCE.len()) + delimited_len(host.len())
}

fn point_len(ts: i64, value: f64) -> usize {
    opt_f64_len(value) + opt_i64_len(ts)
}

fn series_body_len(s: &Series) -> usize {
    let mut len = 0;
    if !s.host.is_empty() {
        len += delimited_len(resource_len(&s.host));
    }
    len += opt_str_len(&s.name);
    for t in &s.tags {
        len += delimited_len(t.len());
    }
    for &(ts, v) in &s.points {
        len += delimited_len(point_len(ts, v));
    }
    len += 1 + encoded_len_varint(metric_type(s.kind) as u64);
    len += opt_i64_len(i64::from(s.interval));
    len
}

impl Item for Series {
    fn encoded_len(&self) -> usize {
        delimited_len(series_body_len(self))
    }

    fn write(&self, len: usize, buf: &mut Vec<u8>) {
        put_delimited_header(1, body_of(len), buf);
        if !self.host.is_empty() {
            put_delimited_header(1, resource_len(&self.host), buf);
            put_str(1, HOST_RESOURCE, buf);
            put_str(2, &self.host, buf);
        }
        put_opt_str(2, &self.name, buf);
        for t in &self.tags {
            put_str(3, t, buf);
        }
        for &(ts, v) in &self.points {
            put_delimited_header(4, point_len(ts, v), buf);
            put_opt_f64(1, v, buf);
            put_opt_i64(2, ts, buf);
        }
        encode_key(5, WireType::Varint, buf);
        encode_varint(metric_type(self.kind) as u64, buf);
        put_opt_i64(8, i64::from(self.interval), buf);
    }

    fn points(&self) -> usize {
        self.points.len()
    }

    fn samples(&self) -> u64 {
        self.samples
    }

    fn halve(&self) -> Option<(Self, Self)> {
        if self.points.len() < 2 {
            return None;
        }
        let mid = self.points.len() / 2;
        let (a, b) = super::share(self.samples, mid as u64, self.points.len() as u64);
        let half = |points: &[(i64, f64)], samples| Series {
            points: points.to_vec(),
            samples,
            ..self.clone_header()
        };
        Some((half(&self.points[..mid], a), half(&self.points[mid..], b)))
    }
}

impl Series {
    fn clone_header(&self) -> Series {
        Series {
            name: self.name.clone(),
            tags: self.tags.clone(),
            host: self.host.clone(),
            kind: self.kind,
            interval: self.interval,
            points: Vec::new(),
            samples: 0,
        }
    }
}

// ---- sketches: SketchPayload.sketches (field 1) of Sketch ----

fn packed_sint32_len(k: &[i32]) -> usize {
    k.iter().map(|&v| encoded_len_varint(zigzag(v))).sum()
}

fn packed_uint32_len(n: &[u32]) -> usize {
    n.iter().map(|&v| encoded_len_varint(u64::from(v))).sum()
}

fn dogsketch_body_len(d: &DogSketch) -> usize {
    dogsketch_len_from(d, packed_sint32_len(&d.k), packed_uint32_len(&d.n))
}

/// A dogsketch's body length given its packed `k` and `n` lengths.
fn dogsketch_len_from(d: &DogSketch, k_len: usize, n_len: usize) -> usize {
    let mut len = opt_i64_len(d.ts)
        + opt_i64_len(d.cnt)
        + opt_f64_len(d.min)
        + opt_f64_len(d.max)
        + opt_f64_len(d.avg)
        + opt_f64_len(d.sum);
    if !d.k.is_empty() {
        len += delimited_len(k_len);
    }
    if !d.n.is_empty() {
        len += delimited_len(n_len);
    }
    len
}

fn sketch_body_len(s: &SketchSeries) -> usize {
    let mut len = opt_str_len(&s.name) + opt_str_len(&s.host);
    for t in &s.tags {
        len += delimited_len(t.len());
    }
    for d in &s.sketches {
        len += delimited_len(dogsketch_body_len(d));
    }
    len
}

impl Item for SketchSeries {
    fn encoded_len(&self) -> usize {
        delimited_len(sketch_body_len(self))
    }

    fn write(&self, len: usize, buf: &mut Vec<u8>) {
        put_delimited_header(1, body_of(len), buf);
        put_opt_str(1, &self.name, buf);
        put_opt_str(2, &self.host, buf);
        for t in &self.tags {
            put_str(4, t, buf);
        }
        for d in &self.sketches {
            let k_len = packed_sint32_len(&d.k);
            let n_len = packed_uint32_len(&d.n);
            put_delimited_header(7, dogsketch_len_from(d, k_len, n_len), buf);
            put_opt_i64(1, d.ts, buf);
            put_opt_i64(2, d.cnt, buf);
            put_opt_f64(3, d.min, buf);
            put_opt_f64(4, d.max, buf);
            put_opt_f64(5, d.avg, buf);
            put_opt_f64(6, d.sum, buf);
            if !d.k.is_empty() {
                put_delimited_header(7, k_len, buf);
                for &v in &d.k {
                    encode_varint(zigzag(v), buf);
                }
            }
            if !d.n.is_empty() {
                put_delimited_header(8, n_len, buf);
                for &v in &d.n {
                    encode_varint(u64::from(v), buf);
                }
            }
        }
    }

    /// Sketch payloads have no point limit; buckets are what a too-large sketch series is cut into.
    fn points(&self) -> usize {
        self.sketches.len()
    }

    fn samples(&self) -> u64 {
        self.samples
    }

    fn halve(&self) -> Option<(Self, Self)> {
        if self.sketches.len() < 2 {
            return None;
        }
        let mid = self.sketches.len() / 2;
        let (a, b) = super::share(self.samples, mid as u64, self.sketches.len() as u64);
        let half = |sketches: &[DogSketch], samples| SketchSeries {
            name: self.name.clone(),
            tags: self.tags.clone(),
            host: self.host.clone(),
            sketches: sketches.to_vec(),
            samples,
        };
        Some((
            half(&self.sketches[..mid], a),
            half(&self.sketches[mid..], b),
        ))
    }
}

// ---- decoding ----

/// Decode a raw `MetricPayload` into series (`samples` left at 0).
///
/// # Errors
/// The bytes are not a `MetricPayload`, or a series has no valid type.
pub(super) fn decode_series(raw: &[u8]) -> Result<Vec<Series>, EncodeError> {
    let payload = MetricPayload::decode(raw).map_err(EncodeError::Protobuf)?;
    payload
        .series
        .into_iter()
        .map(|s| {
            let kind = match MetricType::try_from(s.r#type) {
                Ok(MetricType::Count) => SeriesKind::Count,
                Ok(MetricType::Rate) => SeriesKind::Rate,
                Ok(MetricType::Gauge) => SeriesKind::Gauge,
                Ok(MetricType::Unspecified) | Err(_) => {
                    return Err(EncodeError::Invalid {
                        what: "series type",
                        detail: format!("{} for {}", s.r#type, s.metric),
                    });
                }
            };
            let interval = u32::try_from(s.interval).map_err(|_| EncodeError::Invalid {
                what: "series interval",
                detail: format!("{} for {}", s.interval, s.metric),
            })?;
            let host = s
                .resources
                .into_iter()
                .find(|r: &Resource| r.r#type == HOST_RESOURCE)
                .map(|r| r.name)
                .unwrap_or_default();
            Ok(Series {
                name: s.metric,
                tags: s.tags,
                host,
                kind,
                interval,
                points: s.points.iter().map(|p| (p.timestamp, p.value)).collect(),
                samples: 0,
            })
        })
        .collect()
}

/// Decode a raw `SketchPayload` into sketch series (`samples` left at 0).
///
/// # Errors
/// The bytes are not a `SketchPayload`.
pub(super) fn decode_sketches(raw: &[u8]) -> Result<Vec<SketchSeries>, EncodeError> {
    let payload = SketchPayload::decode(raw).map_err(EncodeError::Protobuf)?;
    Ok(payload
        .sketches
        .into_iter()
        .map(|s| SketchSeries {
            name: s.metric,
            tags: s.tags,
            host: s.host,
            sketches: s
                .dogsketches
                .into_iter()
                .map(|d: Dogsketch| DogSketch {
                    ts: d.ts,
                    cnt: d.cnt,
                    min: d.min,
                    max: d.max,
                    sum: d.sum,
                    avg: d.avg,
                    k: d.k,
                    n: d.n,
                })
                .collect(),
            samples: 0,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use offpath_proto::metric_payload::{MetricPoint, MetricSeries};
    use offpath_proto::sketch_payload::Sketch;
    use proptest::prelude::*;

    fn to_proto_series(s: &Series) -> MetricSeries {
        MetricSeries {
            resources: if s.host.is_empty() {
                vec![]
            } else {
                vec![Resource {
                    r#type: "host".into(),
                    name: s.host.clone(),
                }]
            },
            metric: s.name.clone(),
            tags: s.tags.clone(),
            points: s
                .points
                .iter()
                .map(|&(timestamp, value)| MetricPoint { value, timestamp })
                .collect(),
            r#type: metric_type(s.kind) as i32,
            interval: i64::from(s.interval),
            ..MetricSeries::default()
        }
    }

    fn to_proto_sketch(s: &SketchSeries) -> Sketch {
        Sketch {
            metric: s.name.clone(),
            host: s.host.clone(),
            tags: s.tags.clone(),
            dogsketches: s
                .sketches
                .iter()
                .map(|d| Dogsketch {
                    ts: d.ts,
                    cnt: d.cnt,
                    min: d.min,
                    max: d.max,
                    avg: d.avg,
                    sum: d.sum,
                    k: d.k.clone(),
                    n: d.n.clone(),
                })
                .collect(),
            ..Sketch::default()
        }
    }

    fn write<T: Item>(items: &[T]) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in items {
            let before = buf.len();
            i.write(i.encoded_len(), &mut buf);
            assert_eq!(buf.len() - before, i.encoded_len());
        }
        buf
    }

    fn arb_series() -> impl Strategy<Value = Series> {
        (
            "[a-z.]{0,20}",
            proptest::collection::vec("[ -~]{0,30}", 0..4),
            "[a-z0-9-]{0,12}",
            prop_oneof![
                Just(SeriesKind::Count),
                Just(SeriesKind::Rate),
                Just(SeriesKind::Gauge)
            ],
            prop_oneof![Just(0u32), Just(10), any::<u32>()],
            proptest::collection::vec(
                (
                    prop_oneof![Just(0i64), any::<i64>()],
                    prop_oneof![Just(0.0f64), Just(-0.5), any::<f64>()],
                ),
                0..4,
            ),
        )
            .prop_map(|(name, tags, host, kind, interval, points)| Series {
                name,
                tags,
                host,
                kind,
                interval,
                points,
                samples: 0,
            })
    }

    fn arb_sketch() -> impl Strategy<Value = SketchSeries> {
        let dogsketch = (
            any::<i64>(),
            any::<i64>(),
            any::<f64>(),
            any::<f64>(),
            proptest::collection::vec((any::<i32>(), any::<u32>()), 0..6),
        )
            .prop_map(|(ts, cnt, min, sum, bins)| DogSketch {
                ts,
                cnt,
                min,
                max: 0.0,
                sum,
                avg: -0.0,
                k: bins.iter().map(|b| b.0).collect(),
                n: bins.iter().map(|b| b.1).collect(),
            });
        (
            "[a-z.]{0,20}",
            proptest::collection::vec("[a-z:]{0,10}", 0..3),
            "[a-z]{0,5}",
            proptest::collection::vec(dogsketch, 0..3),
        )
            .prop_map(|(name, tags, host, sketches)| SketchSeries {
                name,
                tags,
                host,
                sketches,
                samples: 0,
            })
    }

    proptest! {
        #[test]
        fn series_bytes_equal_prosts_encoding_of_the_same_message(
            series in proptest::collection::vec(arb_series(), 0..4)
        ) {
            let expected = MetricPayload { series: series.iter().map(to_proto_series).collect() };
            prop_assert_eq!(write(&series), expected.encode_to_vec());
        }

        #[test]
        fn sketch_bytes_equal_prosts_encoding_of_the_same_message(
            sketches in proptest::collection::vec(arb_sketch(), 0..4)
        ) {
            let expected = SketchPayload {
                sketches: sketches.iter().map(to_proto_sketch).collect(),
                metadata: None,
            };
            prop_assert_eq!(write(&sketches), expected.encode_to_vec());
        }
    }

    #[test]
    fn body_of_inverts_delimited_len_across_varint_widths() {
        for body in [
            0,
            1,
            126,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            300_000_000,
        ] {
            assert_eq!(body_of(delimited_len(body)), body, "{body}");
        }
    }

    #[test]
    fn a_series_reads_back_with_its_host_type_interval_and_points() {
        let s = Series {
            name: "a.b".into(),
            tags: vec!["env:prod".into(), "x".into()],
            host: "i-1".into(),
            kind: SeriesKind::Rate,
            interval: 10,
            points: vec![(1_700_000_000, 0.5), (1_700_000_010, 0.0)],
            samples: 0,
        };
        assert_eq!(
            decode_series(&write(std::slice::from_ref(&s))).unwrap(),
            vec![s]
        );
    }

    #[test]
    fn a_series_without_a_type_is_refused_on_decode() {
        let raw = MetricPayload {
            series: vec![MetricSeries {
                metric: "m".into(),
                ..MetricSeries::default()
            }],
        }
        .encode_to_vec();
        assert!(matches!(
            decode_series(&raw),
            Err(EncodeError::Invalid {
                what: "series type",
                ..
            })
        ));
    }
}
