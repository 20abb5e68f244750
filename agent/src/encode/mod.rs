//! Protobuf series and sketches, JSON events (batched, as the Agent sends them) and service checks,
//! intake size limits, zstd.
//!
//! [`Encoder::encode`] turns one aggregator [`Flush`] into compressed [`Payload`]s, each within the
//! intake limits of its endpoint (`PayloadKind::limits`): the request builder packs items while an
//! incremental size estimate says they fit, verifies the compressed size and cuts a payload in halves
//! when it is still too large. `decode` is the exact inverse (used by the fallback, replay and
//! `split`); `split` halves a payload the intake answered 413 to.
//!
//! One item that alone exceeds a limit and cannot be cut (a single point with megabytes of tags) is
//! the only exception: it travels in a payload of its own, and the forwarder drops it as
//! `PointDrop::TooLarge` instead of sending it.

mod batch;
mod json;
mod protobuf;

use std::io::Read;

use bytes::Bytes;

use crate::forward::DestinationId;
use crate::model::{Event, Flush, Series, SketchSeries};
use batch::{Batcher, Framing, Item};

/// Size limits of one intake endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Largest compressed body, bytes.
    pub compressed: usize,
    /// Largest uncompressed body, bytes.
    pub raw: usize,
    /// Most points (series points); `usize::MAX` when the endpoint has no limit.
    pub points: usize,
}

/// `/api/v2/series`: 512,000 B compressed, 5,242,880 B raw, 10,000 points (`docs/protocols.md`,
/// "Requests").
pub(crate) const SERIES_LIMITS: Limits = Limits {
    compressed: 512_000,
    raw: 5_242_880,
    points: 10_000,
};

/// The agent's generic payload limits, used for sketches and JSON bodies: 2,621,440 B compressed,
/// 4,194,304 B raw (`docs/protocols.md`, "Requests").
pub(crate) const GENERIC_LIMITS: Limits = Limits {
    compressed: 2_621_440,
    raw: 4_194_304,
    points: usize::MAX,
};

/// Which endpoint a payload goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// `POST /api/v2/series`, protobuf `MetricPayload`.
    Series,
    /// `POST /api/beta/sketches`, protobuf `SketchPayload`.
    Sketches,
    /// `POST /intake/`, a JSON body of events grouped by source type (the Agent's events route), as
    /// many per request as the generic limits allow.
    Events,
    /// `POST /api/v1/check_run`, a JSON array of service checks.
    ServiceChecks,
}

impl PayloadKind {
    /// The intake path.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Series => "/api/v2/series",
            Self::Sketches => "/api/beta/sketches",
            Self::Events => "/intake/",
            Self::ServiceChecks => "/api/v1/check_run",
        }
    }

    /// The `Content-Type` of the body (before compression).
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Series | Self::Sketches => "application/x-protobuf",
            Self::Events | Self::ServiceChecks => "application/json",
        }
    }

    /// The intake limits this kind's payloads respect.
    pub(crate) const fn limits(self) -> Limits {
        match self {
            Self::Series => SERIES_LIMITS,
            Self::Sketches | Self::Events | Self::ServiceChecks => GENERIC_LIMITS,
        }
    }

    /// A short name for logs and counters.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Series => "series",
            Self::Sketches => "sketches",
            Self::Events => "events",
            Self::ServiceChecks => "service_checks",
        }
    }
}

/// One request body, compressed, ready for the intake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The endpoint.
    pub kind: PayloadKind,
    /// The zstd-compressed body.
    pub body: Bytes,
    /// Uncompressed length of the body, bytes.
    pub raw_len: usize,
    /// Items (series, sketch series, events, service checks) in the body.
    pub items: usize,
    /// DogStatsD samples the items account for (one per event and service check); what
    /// `points.delivered` / `points.fell_back` / `points.dropped` are counted in.
    pub samples: u64,
    /// The destination this copy is for (dual shipping: one copy per destination, each settled once);
    /// the main one unless the pipeline says otherwise.
    pub destination: DestinationId,
}

impl Payload {
    /// True when the body is over its endpoint's byte limits (only ever a single item that cannot
    /// be cut; such a payload must not be sent).
    pub fn exceeds_limits(&self) -> bool {
        let l = self.kind.limits();
        self.body.len() > l.compressed || self.raw_len > l.raw
    }
}

/// Errors of encoding, decoding and splitting payloads.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// zstd failed to compress.
    #[error("zstd compression failed (check OFFPATH_ZSTD_LEVEL)")]
    Compress(#[source] std::io::Error),
    /// The body is not valid zstd, or decompresses to more than its size limit.
    #[error("payload body is not valid zstd")]
    Decompress(#[source] std::io::Error),
    /// The body is not the expected protobuf message.
    #[error("payload body is not a valid protobuf message")]
    Protobuf(#[source] prost::DecodeError),
    /// The body is not the expected JSON.
    #[error("payload body is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// A decoded value is out of range for offpath's model.
    #[error("invalid {what} in payload: {detail}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The value and the metric it belongs to.
        detail: String,
    },
    /// The payload holds one item that cannot be cut any further.
    #[error("a {kind} payload with a single item cannot be split further")]
    Unsplittable {
        /// The payload kind.
        kind: &'static str,
    },
}

/// Turns flushes into compressed payloads within the intake limits.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    level: i32,
}

impl Encoder {
    /// An encoder compressing at zstd `level` (`OFFPATH_ZSTD_LEVEL`; the Agent uses 1).
    pub fn new(zstd_level: i32) -> Self {
        Self { level: zstd_level }
    }

    /// The zstd level.
    pub fn level(&self) -> i32 {
        self.level
    }

    fn compressor(&self) -> Result<zstd::bulk::Compressor<'static>, EncodeError> {
        zstd::bulk::Compressor::new(self.level).map_err(EncodeError::Compress)
    }

    /// Encode everything in `flush`: series, then sketches, service checks and events.
    ///
    /// Each payload respects its endpoint's limits; `samples` of each payload is the sum over its items.
    ///
    /// # Errors
    /// Compression or JSON serialization failed (neither happens with valid input and a valid level).
    pub fn encode(&self, flush: &Flush) -> Result<Vec<Payload>, EncodeError> {
        let mut out = Vec::new();
        if flush.is_empty() {
            return Ok(out);
        }
        let mut z = self.compressor()?;
        out.extend(encode_series(&mut z, &flush.series)?);
        out.extend(encode_sketches(&mut z, &flush.sketches)?);
        if !flush.service_checks.is_empty() {
            let items = flush
                .service_checks
                .iter()
                .map(json::service_check)
                .collect::<Result<Vec<_>, _>>()?;
            out.extend(encode_items(
                &mut z,
                PayloadKind::ServiceChecks,
                &Framing::JSON_ARRAY,
                &items,
            )?);
        }
        out.extend(encode_events(&mut z, &flush.events)?);
        Ok(out)
    }
}

/// Events in as few `/intake/` payloads as the limits allow: one group per source type and host (in
/// that order, each group's events in their order), each group packed and split like any other kind.
fn encode_events(
    z: &mut zstd::bulk::Compressor<'static>,
    events: &[Event],
) -> Result<Vec<Payload>, EncodeError> {
    let mut order: Vec<&Event> = events.iter().collect();
    order.sort_by(|a, b| (&a.source_type_name, &a.host).cmp(&(&b.source_type_name, &b.host)));
    let mut out = Vec::new();
    for group in order.chunk_by(|a, b| a.source_type_name == b.source_type_name && a.host == b.host)
    {
        let Some(first) = group.first() else { continue };
        let items = group
            .iter()
            .map(|e| json::event(e))
            .collect::<Result<Vec<_>, _>>()?;
        let framing = json::events_framing(&first.source_type_name, &first.host);
        out.extend(encode_items(z, PayloadKind::Events, &framing, &items)?);
    }
    Ok(out)
}

fn encode_items<T: Item>(
    z: &mut zstd::bulk::Compressor<'static>,
    kind: PayloadKind,
    framing: &Framing,
    items: &[T],
) -> Result<Vec<Payload>, EncodeError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let hint = items.iter().take(64).map(Item::encoded_len).sum::<usize>() * items.len()
        / items.len().min(64);
    let mut b = Batcher::new(kind, framing.clone(), z, hint);
    for item in items {
        b.push(item)?;
    }
    b.into_payloads()
}

fn encode_series(
    z: &mut zstd::bulk::Compressor<'static>,
    series: &[Series],
) -> Result<Vec<Payload>, EncodeError> {
    encode_items(z, PayloadKind::Series, &Framing::PROTOBUF, series)
}

fn encode_sketches(
    z: &mut zstd::bulk::Compressor<'static>,
    sketches: &[SketchSeries],
) -> Result<Vec<Payload>, EncodeError> {
    encode_items(z, PayloadKind::Sketches, &Framing::PROTOBUF, sketches)
}

/// Split `total` in two parts in the proportion `part : whole - part`.
fn share(total: u64, part: u64, whole: u64) -> (u64, u64) {
    if whole == 0 {
        return (total, 0);
    }
    let a = (u128::from(total) * u128::from(part) / u128::from(whole)) as u64;
    (a, total - a)
}

/// Spread `total` over items in proportion to `weights` (equally when all weights are 0); the parts
/// sum to `total` exactly.
fn distribute(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u64 = weights.iter().sum();
    let (weights, sum): (Vec<u64>, u64) = if sum == 0 {
        (vec![1; weights.len()], weights.len() as u64)
    } else {
        (weights.to_vec(), sum)
    };
    let mut parts: Vec<u64> = weights
        .iter()
        .map(|&w| (u128::from(total) * u128::from(w) / u128::from(sum)) as u64)
        .collect();
    let rest = total - parts.iter().sum::<u64>();
    if let Some(last) = parts.last_mut() {
        *last += rest;
    }
    parts
}

fn decompress(payload: &Payload) -> Result<Vec<u8>, EncodeError> {
    let cap = payload.raw_len.max(payload.kind.limits().raw);
    let mut raw = Vec::with_capacity(payload.raw_len);
    let decoder =
        zstd::stream::read::Decoder::new(&payload.body[..]).map_err(EncodeError::Decompress)?;
    decoder
        .take(cap as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(EncodeError::Decompress)?;
    if raw.len() > cap {
        return Err(EncodeError::Decompress(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("body decompresses to more than {cap} bytes"),
        )));
    }
    Ok(raw)
}

/// Decode a payload back into the flush items it carries: the exact inverse of [`Encoder::encode`].
///
/// The wire format does not carry per-item sample counts, so the payload's `samples` are spread over
/// the decoded items in proportion to their points (series), buckets (sketches) or one each (events,
/// service checks); the items' samples always sum to `payload.samples`.
///
/// # Errors
/// The body is not valid zstd or not the message its kind says.
pub(crate) fn decode(payload: &Payload) -> Result<Flush, EncodeError> {
    let raw = decompress(payload)?;
    let mut flush = Flush::default();
    match payload.kind {
        PayloadKind::Series => {
            flush.series = protobuf::decode_series(&raw)?;
            let w: Vec<u64> = flush.series.iter().map(|s| s.points.len() as u64).collect();
            for (s, n) in flush.series.iter_mut().zip(distribute(payload.samples, &w)) {
                s.samples = n;
            }
        }
        PayloadKind::Sketches => {
            flush.sketches = protobuf::decode_sketches(&raw)?;
            let w: Vec<u64> = flush
                .sketches
                .iter()
                .map(|s| s.sketches.len() as u64)
                .collect();
            for (s, n) in flush
                .sketches
                .iter_mut()
                .zip(distribute(payload.samples, &w))
            {
                s.samples = n;
            }
        }
        PayloadKind::Events => flush.events = json::decode_events(&raw)?,
        PayloadKind::ServiceChecks => flush.service_checks = json::decode_service_checks(&raw)?,
    }
    Ok(flush)
}

/// Cut a list of items in two halves: by items, or a single item by its points or buckets.
fn halves<T: Item>(mut items: Vec<T>, kind: PayloadKind) -> Result<(Vec<T>, Vec<T>), EncodeError> {
    if items.len() >= 2 {
        let b = items.split_off(items.len() / 2);
        return Ok((items, b));
    }
    match items.first().and_then(Item::halve) {
        Some((a, b)) => Ok((vec![a], vec![b])),
        None => Err(EncodeError::Unsplittable {
            kind: kind.as_str(),
        }),
    }
}

fn encode_halves<T: Item>(
    enc: &Encoder,
    kind: PayloadKind,
    framing: &Framing,
    items: Vec<T>,
) -> Result<Vec<Payload>, EncodeError> {
    let (a, b) = halves(items, kind)?;
    let mut z = enc.compressor()?;
    let mut out = encode_items(&mut z, kind, framing, &a)?;
    out.extend(encode_items(&mut z, kind, framing, &b)?);
    Ok(out)
}

/// Split a payload the intake refused as too large (413) into smaller payloads carrying the same data.
///
/// Several items are halved by items; a single series or sketch series is halved by its points or
/// buckets. The parts' `samples` sum to the payload's.
///
/// # Errors
/// [`EncodeError::Unsplittable`] when the payload holds a single item with a single point or bucket
/// (or one event); decode errors as in [`decode`].
pub(crate) fn split(payload: &Payload, enc: &Encoder) -> Result<Vec<Payload>, EncodeError> {
    let mut parts = split_parts(payload, enc)?;
    for p in &mut parts {
        p.destination = payload.destination;
    }
    Ok(parts)
}

fn split_parts(payload: &Payload, enc: &Encoder) -> Result<Vec<Payload>, EncodeError> {
    let flush = decode(payload)?;
    match payload.kind {
        PayloadKind::Series => encode_halves(enc, payload.kind, &Framing::PROTOBUF, flush.series),
        PayloadKind::Sketches => {
            encode_halves(enc, payload.kind, &Framing::PROTOBUF, flush.sketches)
        }
        PayloadKind::ServiceChecks => {
            let items = flush
                .service_checks
                .iter()
                .map(json::service_check)
                .collect::<Result<Vec<_>, _>>()?;
            encode_halves(enc, payload.kind, &Framing::JSON_ARRAY, items)
        }
        PayloadKind::Events => {
            // A payload holds one group: one source type and host.
            let framing = match flush.events.first() {
                Some(e) => json::events_framing(&e.source_type_name, &e.host),
                None => json::events_framing("", ""),
            };
            let items = flush
                .events
                .iter()
                .map(json::event)
                .collect::<Result<Vec<_>, _>>()?;
            encode_halves(enc, payload.kind, &framing, items)
        }
    }
}

#[cfg(test)]
mod tests;
