//! Fallback records: one JSON object per line (one CloudWatch log event or one stdout line).
//!
//! Three formats, chosen by `OFFPATH_FALLBACK_FORMAT`, one module each behind the [`Format`] trait:
//!
//! * **`offpath`** (default, lossless, replayable by `offpath replay`): `offpath.rs`, read back by
//!   [`parse_record`] (`parse.rs`).
//! * **`forwarder`**: lines for the Datadog Forwarder, which makes distributions of them:
//!   `forwarder.rs`.
//! * **`emf`**: CloudWatch Embedded Metric Format: `emf.rs`.
//!
//! Each module's documentation gives its exact shapes and what it keeps of each metric type. Shared by
//! them: `json.rs` (writing JSON by hand), `pack.rs` (packing fragments into records, sharing samples),
//! `expand.rs` (a sketch bucket as the values it stands for).
//!
//! Events and service checks are always written as `offpath` records: the Forwarder ships such a line as
//! a log, and EMF ignores it, so neither format loses them.
//!
//! **Size.** No record exceeds [`MAX_RECORD_BYTES`]: 256 KiB minus CloudWatch's 26 bytes of per-event
//! overhead. 256 KiB is the older PutLogEvents event limit (1 MiB today) and Lambda's log line limit, so
//! records fit every partition and stdout in Lambda. A series with many points or a sketch series with
//! many buckets becomes several records (each a valid record of the same kind). An event whose text does
//! not fit is cut at a character boundary; an item that cannot fit even alone (one point whose tags alone
//! pass the limit, one sketch bucket of more than ~20,000 bins, which takes over a billion values in one
//! 10 s bucket) is reported in [`Oversize`] and counted as dropped by the caller.
//!
//! **Adding a format**: a module with a type implementing [`Format`], a variant of `FallbackFormat`
//! (`config/fallback.rs`) with its name in the key's parser and doc line, and its arm in
//! [`Formatter::write_flush`].

mod emf;
mod expand;
mod forwarder;
mod json;
mod offpath;
mod pack;
mod parse;

use crate::config::{FallbackConfig, FallbackFormat};
use crate::model::Flush;

use emf::Emf;
pub use emf::{EMF_MAX_DIMENSIONS, EMF_MAX_METRICS, EMF_MAX_VALUES};
pub use expand::{EXPANDED_VALUES_MAX, bin_value, sketch_values};
use forwarder::ForwarderLines;
use offpath::{Offpath, event_line, service_check_line};
pub use offpath::{event_record, series_records, service_check_record, sketch_records};
pub use parse::{Parsed, RecordError, parse_record};

/// Largest record in bytes: 256 KiB minus the 26 bytes CloudWatch adds per event.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 - 26;
/// The record version written in the `offpath` key.
pub const VERSION: u64 = 1;

/// One record format: how it writes the series and sketches of a flush (events and service checks are
/// `offpath` records in every format).
trait Format {
    /// Append the records of `flush`'s series and sketches to `out`, each line at most `max` bytes; what
    /// cannot fit even alone is added to `over`. `flush` holds finite values only.
    fn write_metrics(&self, flush: &Flush, max: usize, out: &mut Vec<Record>, over: &mut Oversize);
}

/// One line for a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Unix seconds the record is about (its earliest point); the CloudWatch event timestamp.
    pub ts: i64,
    /// The JSON object, without a trailing newline.
    pub line: String,
    /// DogStatsD samples this record accounts for (an item's samples are shared among its records).
    pub samples: u64,
}

/// What could not be written because a single item does not fit in [`MAX_RECORD_BYTES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Oversize {
    /// Items left out: points, sketch buckets (in `emf`, expanded values), events, service checks.
    pub items: usize,
    /// Their samples.
    pub samples: u64,
    /// Samples of series points and sketch buckets left out because a value is not finite (an
    /// overflowed sum or rate; in `forwarder` and `emf` also a rate whose `value × interval` overflows):
    /// JSON has no ±inf, and `null` would not replay. Counted apart (`non_finite`), not in `items`.
    pub non_finite: u64,
}

/// Turns a [`Flush`] into records of the configured format.
#[derive(Debug, Clone)]
pub struct Formatter {
    format: FallbackFormat,
    emf: Emf,
    max_bytes: usize,
}

impl Default for Formatter {
    fn default() -> Self {
        Self {
            format: FallbackFormat::Offpath,
            emf: Emf {
                namespace: "offpath".to_owned(),
                dimensions: Vec::new(),
            },
            max_bytes: MAX_RECORD_BYTES,
        }
    }
}

impl Formatter {
    /// The formatter for `OFFPATH_FALLBACK_FORMAT` and the EMF settings of `cfg`.
    pub fn new(cfg: &FallbackConfig) -> Self {
        Self {
            format: cfg.format,
            emf: Emf {
                namespace: cfg.emf_namespace.clone(),
                dimensions: cfg
                    .emf_dimensions
                    .iter()
                    .take(EMF_MAX_DIMENSIONS)
                    .cloned()
                    .collect(),
            },
            max_bytes: MAX_RECORD_BYTES,
        }
    }

    /// Use a smaller record limit (tests of the splitting; never above [`MAX_RECORD_BYTES`]).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.min(MAX_RECORD_BYTES);
        self
    }

    /// The format this formatter writes.
    pub fn format(&self) -> FallbackFormat {
        self.format
    }

    /// Append the records of `flush` to `out`; returns what did not fit.
    pub fn write_flush(&self, flush: &Flush, out: &mut Vec<Record>) -> Oversize {
        let mut over = Oversize::default();
        let scale_rates = self.format != FallbackFormat::Offpath;
        let finite;
        let flush = if flush.has_non_finite(scale_rates) {
            let mut copy = flush.clone();
            over.non_finite = copy.retain_finite(scale_rates).samples;
            finite = copy;
            &finite
        } else {
            flush
        };
        let format: &dyn Format = match self.format {
            FallbackFormat::Offpath => &Offpath,
            FallbackFormat::Forwarder => &ForwarderLines,
            FallbackFormat::Emf => &self.emf,
        };
        format.write_metrics(flush, self.max_bytes, out, &mut over);
        for e in &flush.events {
            match event_line(e, self.max_bytes) {
                Some(line) => out.push(Record {
                    ts: e.ts,
                    line,
                    samples: 1,
                }),
                None => over.add(1, 1),
            }
        }
        for c in &flush.service_checks {
            match service_check_line(c, self.max_bytes) {
                Some(line) => out.push(Record {
                    ts: c.ts,
                    line,
                    samples: 1,
                }),
                None => over.add(1, 1),
            }
        }
        over
    }
}

impl Oversize {
    fn add(&mut self, items: usize, samples: u64) {
        self.items += items;
        self.samples += samples;
    }
}

#[cfg(test)]
mod tests;
