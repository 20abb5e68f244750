//! The request builder: packs encoded items into payloads that respect the intake limits.
//!
//! Items are appended to one raw buffer while an incremental estimate says the payload still fits
//! (exact raw bytes and points, compressed bytes estimated from the compression ratio seen so far).
//! When the next item would not fit, the buffer is compressed and the result verified; a payload
//! whose compressed size still exceeds the limit is cut in halves at item boundaries and compressed
//! again, so no payload ever leaves here over a limit unless it holds one item that cannot be split.

use std::borrow::Cow;

use bytes::Bytes;

use super::{EncodeError, Limits, Payload, PayloadKind};
use crate::forward::DestinationId;

/// One thing a payload carries: a series, a sketch series, an event or a service check.
pub(super) trait Item: Sized {
    /// Bytes this item adds to the raw body (without the separator of JSON arrays).
    fn encoded_len(&self) -> usize;
    /// Append the item's encoding; `len` is what [`Item::encoded_len`] returned, and exactly that many
    /// bytes are written.
    fn write(&self, len: usize, buf: &mut Vec<u8>);
    /// Points counted against [`Limits::points`].
    fn points(&self) -> usize;
    /// DogStatsD samples this item accounts for.
    fn samples(&self) -> u64;
    /// Two smaller items carrying the same data (points or buckets halved), if the item can be cut.
    fn halve(&self) -> Option<(Self, Self)>;
}

/// How items are framed into a body.
#[derive(Debug, Clone)]
pub(super) struct Framing {
    /// Bytes before the first item.
    pub open: Cow<'static, [u8]>,
    /// Bytes between two items.
    pub sep: &'static [u8],
    /// Bytes after the last item.
    pub close: Cow<'static, [u8]>,
}

impl Framing {
    /// Protobuf repeated fields: items are concatenated.
    pub const PROTOBUF: Framing = Framing {
        open: Cow::Borrowed(b""),
        sep: b"",
        close: Cow::Borrowed(b""),
    };
    /// A JSON array.
    pub const JSON_ARRAY: Framing = Framing {
        open: Cow::Borrowed(b"["),
        sep: b",",
        close: Cow::Borrowed(b"]"),
    };
}

/// Where one item sits in the raw buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    samples: u64,
}

/// Only payloads at least this large update the ratio estimate (small ones compress atypically).
const RATIO_SAMPLE_MIN: usize = 64 * 1024;
/// Margin kept under the compressed limit by the estimate, so that verification rarely has to split.
const RATIO_SAFETY: f64 = 0.85;

/// Packs items of one kind into payloads.
pub(super) struct Batcher<'z> {
    kind: PayloadKind,
    limits: Limits,
    framing: Framing,
    zstd: &'z mut zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
    buf: Vec<u8>,
    spans: Vec<Span>,
    points: usize,
    /// Raw / compressed size, measured on this call's data the first time the estimate matters.
    ratio: Option<f64>,
    out: Vec<Payload>,
}

impl<'z> Batcher<'z> {
    /// A batcher for `kind` that compresses with `zstd`.
    pub fn new(
        kind: PayloadKind,
        framing: Framing,
        zstd: &'z mut zstd::bulk::Compressor<'static>,
        size_hint: usize,
    ) -> Self {
        let limits = kind.limits();
        let mut buf = Vec::with_capacity(size_hint.min(limits.raw));
        buf.extend_from_slice(&framing.open);
        Self {
            kind,
            limits,
            framing,
            zstd,
            scratch: Vec::new(),
            buf,
            spans: Vec::new(),
            points: 0,
            ratio: None,
            out: Vec::new(),
        }
    }

    /// Add one item, closing the current payload first when the item would not fit.
    ///
    /// # Errors
    /// Compression failed.
    pub fn push<T: Item>(&mut self, item: &T) -> Result<(), EncodeError> {
        let len = item.encoded_len();
        let alone = self.framing.open.len() + len + self.framing.close.len();
        if alone > self.limits.raw || item.points() > self.limits.points {
            if let Some((a, b)) = item.halve() {
                self.push(&a)?;
                return self.push(&b);
            }
            // One item that cannot be cut: it travels alone, and the forwarder drops it as too large.
            self.finish()?;
            self.append(item, len);
            return self.finish();
        }
        if !self.spans.is_empty() {
            let raw = self.buf.len() + self.framing.sep.len() + len + self.framing.close.len();
            if raw > self.limits.raw
                || self.points + item.points() > self.limits.points
                || self.over_compressed_limit(raw)?
            {
                self.finish()?;
            }
        }
        self.append(item, len);
        Ok(())
    }

    /// Would a body of `raw` bytes likely compress to more than the limit (with a margin)?
    ///
    /// Below the limit raw, it cannot. Above, the ratio decides; it is measured by compressing the
    /// buffer once when first needed (about the limit's size, so ~1 ms at level 1), then updated from
    /// every payload compressed.
    fn over_compressed_limit(&mut self, raw: usize) -> Result<bool, EncodeError> {
        let budget = self.limits.compressed as f64 * RATIO_SAFETY;
        if raw as f64 <= budget {
            return Ok(false);
        }
        let ratio = match self.ratio {
            Some(r) => r,
            None => {
                self.compress(None)?;
                let r = self.buf.len() as f64 / self.scratch.len().max(1) as f64;
                self.ratio = Some(r);
                r
            }
        };
        Ok(raw as f64 / ratio > budget)
    }

    /// Compress `raw` (the whole buffer when `None`) into `scratch`.
    fn compress(&mut self, raw: Option<&[u8]>) -> Result<(), EncodeError> {
        let raw = raw.unwrap_or(&self.buf);
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(raw.len()));
        self.zstd
            .compress_to_buffer(raw, &mut self.scratch)
            .map_err(EncodeError::Compress)?;
        Ok(())
    }

    fn append<T: Item>(&mut self, item: &T, len: usize) {
        if !self.spans.is_empty() {
            self.buf.extend_from_slice(self.framing.sep);
        }
        let start = self.buf.len();
        self.buf.reserve(len);
        item.write(len, &mut self.buf);
        debug_assert_eq!(
            self.buf.len() - start,
            len,
            "encoded_len disagrees with write"
        );
        self.spans.push(Span {
            start,
            end: self.buf.len(),
            samples: item.samples(),
        });
        self.points += item.points();
    }

    /// Close the current payload, if it holds anything.
    ///
    /// # Errors
    /// Compression failed.
    pub fn finish(&mut self) -> Result<(), EncodeError> {
        if self.spans.is_empty() {
            return Ok(());
        }
        self.buf.extend_from_slice(&self.framing.close);
        let buf = std::mem::take(&mut self.buf);
        let spans = std::mem::take(&mut self.spans);
        let result = self.emit(&buf, &spans, true);
        // Reuse the allocation for the next payload.
        self.buf = buf;
        self.buf.clear();
        self.buf.extend_from_slice(&self.framing.open);
        self.spans = spans;
        self.spans.clear();
        self.points = 0;
        result
    }

    /// Compress the items `spans` of `buf` into one payload, or into halves when the compressed body is
    /// over the limit. `whole` says `buf` is exactly those items with their framing.
    fn emit(&mut self, buf: &[u8], spans: &[Span], whole: bool) -> Result<(), EncodeError> {
        let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
            return Ok(());
        };
        let owned;
        let raw: &[u8] = if whole {
            buf
        } else {
            // Items of a range are contiguous, JSON separators included.
            let mut v = Vec::with_capacity(
                self.framing.open.len() + last.end - first.start + self.framing.close.len(),
            );
            v.extend_from_slice(&self.framing.open);
            v.extend_from_slice(&buf[first.start..last.end]);
            v.extend_from_slice(&self.framing.close);
            owned = v;
            &owned
        };
        self.compress(Some(raw))?;
        if raw.len() >= RATIO_SAMPLE_MIN && !self.scratch.is_empty() {
            self.ratio = Some(raw.len() as f64 / self.scratch.len() as f64);
        }
        if self.scratch.len() > self.limits.compressed && spans.len() > 1 {
            let (a, b) = spans.split_at(spans.len() / 2);
            self.emit(buf, a, false)?;
            return self.emit(buf, b, false);
        }
        self.out.push(Payload {
            kind: self.kind,
            body: Bytes::copy_from_slice(&self.scratch),
            raw_len: raw.len(),
            items: spans.len(),
            samples: spans.iter().map(|s| s.samples).sum(),
            destination: DestinationId::MAIN,
        });
        Ok(())
    }

    /// Close the last payload and return them all.
    ///
    /// # Errors
    /// Compression failed.
    pub fn into_payloads(mut self) -> Result<Vec<Payload>, EncodeError> {
        self.finish()?;
        Ok(self.out)
    }
}
