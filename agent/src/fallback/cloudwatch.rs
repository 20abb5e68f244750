//! The CloudWatch Logs sink: a bounded buffer of records, batches cut to the PutLogEvents limits, and
//! the calls themselves (create group and stream when missing, retry throttling with backoff).
//!
//! Limits enforced here because emulators do not (`docs/protocols.md`, "CloudWatch Logs PutLogEvents"): at most [`BATCH_MAX_EVENTS`] events
//! and [`BATCH_MAX_BYTES`] bytes (message bytes plus [`EVENT_OVERHEAD`] per event) per call, events in
//! chronological order, a batch spanning less than [`BATCH_MAX_SPAN_MS`]. Event size is bounded by the
//! record writer ([`super::records::MAX_RECORD_BYTES`]).
//!
//! The event timestamp is the record's own time (its earliest point), clamped into the window that
//! CloudWatch accepts (14 days back, 2 hours ahead; we keep an hour of margin on each side) so a
//! record about an odd time is still stored. The record's content is never changed.

use std::collections::VecDeque;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::forward::DestinationId;
use crate::telemetry::Tally;

/// Most events in one PutLogEvents call.
pub const BATCH_MAX_EVENTS: usize = 10_000;
/// Most bytes in one PutLogEvents call (sum of messages plus 26 per event).
pub const BATCH_MAX_BYTES: usize = 1_048_576;
/// Bytes CloudWatch counts per event on top of its message.
pub const EVENT_OVERHEAD: usize = 26;
/// A batch must span less than 24 hours.
pub const BATCH_MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Default bound of the records waiting for CloudWatch (message bytes): 32 MiB. With CloudWatch down,
/// this holds roughly 200,000 series records (about two minutes of a 10,000-series flush every 10 s
/// after the forwarder's own retry queue has filled); past it the oldest records are dropped and
/// counted as `fallback_overflow`.
pub const BUFFER_MAX_BYTES: usize = 32 * 1024 * 1024;

const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

/// One record waiting for CloudWatch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    /// Event timestamp, ms since the epoch.
    pub ts_ms: i64,
    /// The record.
    pub line: String,
    /// Samples it accounts for.
    pub samples: u64,
    /// The destination whose copy it holds (dual shipping).
    pub dest: DestinationId,
}

impl Pending {
    /// A record about `ts` (unix seconds), stamped for CloudWatch relative to `now_ms`.
    pub fn new(ts: i64, line: String, samples: u64, now_ms: i64) -> Self {
        let ts_ms = ts
            .saturating_mul(1000)
            .clamp(now_ms - 14 * DAY_MS + HOUR_MS, now_ms + HOUR_MS);
        Self {
            ts_ms,
            line,
            samples,
            dest: DestinationId::MAIN,
        }
    }

    /// The same record, holding `dest`'s copy.
    #[must_use]
    pub fn for_dest(mut self, dest: DestinationId) -> Self {
        self.dest = dest;
        self
    }

    fn cost(&self) -> usize {
        self.line.len() + EVENT_OVERHEAD
    }
}

/// The bounded buffer of records and the batch cutter (pure state, no I/O).
#[derive(Debug)]
pub(crate) struct Buffer {
    events: VecDeque<Pending>,
    bytes: usize,
    max_bytes: usize,
    sorted: bool,
}

impl Buffer {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            max_bytes,
            sorted: true,
        }
    }

    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    /// Add a record; returns the samples of the oldest records dropped to make room for it.
    pub fn push(&mut self, p: Pending) -> Tally {
        let mut dropped = Tally::default();
        while self.bytes + p.line.len() > self.max_bytes {
            let Some(old) = self.pop_oldest() else {
                // Larger than the whole buffer: nothing to keep.
                dropped.add(p.dest, p.samples);
                return dropped;
            };
            dropped.add(old.dest, old.samples);
        }
        if let Some(last) = self.events.back()
            && last.ts_ms > p.ts_ms
        {
            self.sorted = false;
        }
        self.bytes += p.line.len();
        self.events.push_back(p);
        dropped
    }

    fn pop_oldest(&mut self) -> Option<Pending> {
        self.sort();
        let old = self.events.pop_front()?;
        self.bytes -= old.line.len();
        Some(old)
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.events.make_contiguous().sort_by_key(|p| p.ts_ms);
            self.sorted = true;
        }
    }

    /// True when adding `len` bytes would push older records out.
    pub fn would_overflow(&self, len: usize) -> bool {
        !self.events.is_empty() && self.bytes + len > self.max_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes of the records held (messages only).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when a full batch is waiting (count or bytes), so a call should go out now.
    pub fn batch_ready(&self) -> bool {
        self.events.len() >= BATCH_MAX_EVENTS
            || self.bytes + self.events.len() * EVENT_OVERHEAD >= BATCH_MAX_BYTES
    }

    /// The next batch, chronological and within every PutLogEvents limit; empty when nothing waits.
    pub fn next_batch(&mut self) -> Vec<Pending> {
        self.sort();
        let Some(first) = self.events.front().map(|p| p.ts_ms) else {
            return Vec::new();
        };
        let mut n = 0;
        let mut bytes = 0;
        for p in &self.events {
            if n == BATCH_MAX_EVENTS
                || bytes + p.cost() > BATCH_MAX_BYTES
                || p.ts_ms - first >= BATCH_MAX_SPAN_MS
            {
                break;
            }
            n += 1;
            bytes += p.cost();
        }
        let batch: Vec<Pending> = self.events.drain(..n).collect();
        self.bytes -= batch.iter().map(|p| p.line.len()).sum::<usize>();
        batch
    }

    /// Return an unsent batch to the front (it is older than anything after it).
    pub fn put_back(&mut self, batch: Vec<Pending>) -> Tally {
        let mut dropped = Tally::default();
        for p in batch.into_iter().rev() {
            if self.bytes + p.line.len() > self.max_bytes {
                // The buffer filled meanwhile: the oldest (this batch) gives way.
                dropped.add(p.dest, p.samples);
                continue;
            }
            self.bytes += p.line.len();
            self.events.push_front(p);
        }
        dropped
    }

    /// Remove everything (shutdown accounting); returns the samples held.
    pub fn clear(&mut self) -> Tally {
        self.bytes = 0;
        tally(self.events.drain(..))
    }
}

/// The samples of `records`, per destination.
pub(crate) fn tally(records: impl IntoIterator<Item = impl std::borrow::Borrow<Pending>>) -> Tally {
    let mut t = Tally::default();
    for p in records {
        let p = p.borrow();
        t.add(p.dest, p.samples);
    }
    t
}

/// When the next call may start after failed calls: [`crate::backoff::Backoff`] (the one formula every
/// retry in offpath waits by), counted from the last failure; 100 ms doubling to 30 s.
#[derive(Debug)]
pub(crate) struct CallBackoff {
    failures: u32,
    not_before: Option<Instant>,
    backoff: Backoff,
}

impl CallBackoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            failures: 0,
            not_before: None,
            backoff: Backoff { base, max },
        }
    }

    /// When the next call may start; `None` = now.
    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    pub fn fail(&mut self, now: Instant) {
        let delay = self.backoff.delay(self.failures, rand::random());
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + delay);
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }
}

/// What a failed call means for its batch.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Throttling, 5xx, transport, credentials: keep the batch and try later.
    Retry(String),
    /// The group or stream does not exist: create them, then retry.
    NotFound,
    /// The batch itself is refused (`InvalidParameterException`): retrying cannot help.
    Refused(String),
}

/// Which events of a batch CloudWatch rejected (`rejectedLogEventsInfo`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// Events at or after this index are too new.
    pub too_new_from: Option<usize>,
    /// Events up to and including this index are too old or expired.
    pub too_old_through: Option<usize>,
}

impl Rejected {
    pub fn contains(&self, i: usize) -> bool {
        self.too_new_from.is_some_and(|n| i >= n) || self.too_old_through.is_some_and(|o| i <= o)
    }
}

/// A log group and stream and the client that writes them.
#[derive(Debug)]
pub(crate) struct Destination {
    client: Client,
    pub group: String,
    pub stream: String,
    emf: bool,
}

impl Destination {
    pub fn new(client: Client, group: String, stream: String, emf: bool) -> Self {
        Self {
            client,
            group,
            stream,
            emf,
        }
    }

    /// One PutLogEvents call for a chronological batch.
    pub async fn put(&self, batch: &[Pending]) -> Result<Rejected, CallError> {
        let mut events = Vec::with_capacity(batch.len());
        for p in batch {
            let e = InputLogEvent::builder()
                .timestamp(p.ts_ms)
                .message(p.line.clone())
                .build()
                .map_err(|e| CallError::Refused(e.to_string()))?;
            events.push(e);
        }
        let emf = self.emf;
        let res = self
            .client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events))
            .customize()
            .mutate_request(move |req| {
                if emf {
                    // EMF through PutLogEvents needs this header (`docs/protocols.md`, "CloudWatch Embedded
                    // Metric Format").
                    req.headers_mut().insert("x-amzn-logs-format", "json/emf");
                }
            })
            .send()
            .await;
        match res {
            Ok(out) => {
                let idx = |i: Option<i32>| i.and_then(|i| usize::try_from(i).ok());
                Ok(out
                    .rejected_log_events_info()
                    .map(|r| Rejected {
                        too_new_from: idx(r.too_new_log_event_start_index()),
                        too_old_through: idx(r.too_old_log_event_end_index())
                            .max(idx(r.expired_log_event_end_index())),
                    })
                    .unwrap_or_default())
            }
            Err(err) => Err(classify(&err)),
        }
    }

    /// Create the log group and stream; an existing one is success.
    pub async fn create(&self) -> Result<(), CallError> {
        match self
            .client
            .create_log_group()
            .log_group_name(&self.group)
            .send()
            .await
        {
            Ok(_) => tracing::info!(group = %self.group, "created the fallback log group"),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) => {}
            // No permission to create groups is fine when the group exists; the stream call tells.
            Err(e) => {
                tracing::debug!(group = %self.group, error = %describe(&e), "CreateLogGroup failed")
            }
        }
        match self
            .client
            .create_log_stream()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(group = %self.group, stream = %self.stream, "created the fallback log stream");
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(CallError::Retry(format!(
                "CreateLogStream {}/{}: {}",
                self.group,
                self.stream,
                describe(&e)
            ))),
        }
    }
}

/// Error code and message of an SDK error, or its display form.
pub(crate) fn describe<
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
>(
    err: &SdkError<E, R>,
) -> String {
    match err.as_service_error() {
        Some(e) => format!(
            "{}: {}",
            e.code().unwrap_or("error"),
            e.message().unwrap_or_default()
        ),
        None => {
            let mut s = err.to_string();
            let mut src = std::error::Error::source(err);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E, aws_sdk_cloudwatchlogs::config::http::HttpResponse>,
) -> CallError {
    let code = err.as_service_error().and_then(|e| e.code());
    match code {
        Some("ResourceNotFoundException") => CallError::NotFound,
        Some("InvalidParameterException") => CallError::Refused(describe(err)),
        // ThrottlingException arrives unmodelled; ServiceUnavailableException, 5xx without a code,
        // timeouts, transport and credential errors are all worth another try later.
        _ => CallError::Retry(describe(err)),
    }
}

/// `<hostname>-<pid>` with the characters CloudWatch forbids in stream names (`:` and `*`) replaced.
pub(crate) fn default_stream_name() -> String {
    let host = hostname().unwrap_or_else(|| "offpath".to_owned());
    let name = format!("{host}-{}", std::process::id());
    name.replace([':', '*'], "_")
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!h.is_empty()).then_some(h)
}

/// Log group names: 1–512 characters of `[a-zA-Z0-9_\-/.#]`.
pub(crate) fn valid_group(name: &str) -> bool {
    (1..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-/.#".contains(&b))
}

/// Log stream names: 1–512 characters, no `:` or `*`.
pub(crate) fn valid_stream(name: &str) -> bool {
    (1..=512).contains(&name.len()) && !name.contains([':', '*'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts_ms: i64, len: usize) -> Pending {
        Pending {
            ts_ms,
            line: "x".repeat(len),
            samples: 1,
            dest: DestinationId::MAIN,
        }
    }

    fn assert_within_limits(batch: &[Pending]) {
        assert!(!batch.is_empty());
        assert!(batch.len() <= BATCH_MAX_EVENTS);
        assert!(batch.iter().map(Pending::cost).sum::<usize>() <= BATCH_MAX_BYTES);
        assert!(batch.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
        assert!(batch[batch.len() - 1].ts_ms - batch[0].ts_ms < BATCH_MAX_SPAN_MS);
    }

    #[test]
    fn batches_respect_the_count_limit() {
        let mut b = Buffer::new(usize::MAX);
        for i in 0..25_000 {
            b.push(p(i, 10));
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| Some(b.next_batch()))
            .take_while(|b| !b.is_empty())
            .inspect(|b| assert_within_limits(b))
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [10_000, 10_000, 5_000]);
    }

    #[test]
    fn batches_respect_the_byte_limit_counting_26_bytes_per_event() {
        let mut b = Buffer::new(usize::MAX);
        // 1022 events of 1000 + 26 bytes make 1,048,572 bytes; a 1023rd would pass 1,048,576.
        for i in 0..3000 {
            b.push(p(i, 1000));
        }
        let first = b.next_batch();
        assert_within_limits(&first);
        assert_eq!(first.len(), 1022);
    }

    #[test]
    fn batches_are_chronological_and_span_less_than_a_day() {
        let mut b = Buffer::new(usize::MAX);
        let day = BATCH_MAX_SPAN_MS;
        for ts in [3 * day, 0, day - 1, day, 1, 2 * day + 5] {
            b.push(p(ts, 10));
        }
        let batches: Vec<Vec<i64>> = std::iter::from_fn(|| Some(b.next_batch()))
            .take_while(|b| !b.is_empty())
            .inspect(|b| assert_within_limits(b))
            .map(|b| b.iter().map(|p| p.ts_ms).collect())
            .collect();
        assert_eq!(
            batches,
            [vec![0, 1, day - 1], vec![day], vec![2 * day + 5, 3 * day]]
        );
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_records_and_reports_their_samples() {
        let mut b = Buffer::new(100);
        assert_eq!(b.push(p(5, 40)).total(), 0);
        assert_eq!(b.push(p(1, 40)).total(), 0);
        assert_eq!(b.push(p(9, 40)).total(), 1);
        let left: Vec<i64> = b.next_batch().iter().map(|p| p.ts_ms).collect();
        assert_eq!(left, [5, 9]);
        assert_eq!(b.push(p(1, 500)).total(), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn a_batch_put_back_is_sent_first_next_time() {
        let mut b = Buffer::new(usize::MAX);
        for i in 0..3 {
            b.push(p(i, 10));
        }
        let batch = b.next_batch();
        b.push(p(10, 10));
        assert_eq!(b.put_back(batch).total(), 0);
        let again: Vec<i64> = b.next_batch().iter().map(|p| p.ts_ms).collect();
        assert_eq!(again, [0, 1, 2, 10]);
    }

    #[test]
    fn event_timestamps_are_clamped_into_what_cloudwatch_accepts() {
        let now = 1_700_000_000_000;
        assert_eq!(
            Pending::new(1_700_000_000, String::new(), 0, now).ts_ms,
            now
        );
        assert_eq!(
            Pending::new(0, String::new(), 0, now).ts_ms,
            now - 14 * DAY_MS + HOUR_MS
        );
        assert_eq!(
            Pending::new(i64::MAX, String::new(), 0, now).ts_ms,
            now + HOUR_MS
        );
    }

    #[test]
    fn rejected_ranges_cover_too_new_from_and_too_old_through() {
        let r = Rejected {
            too_new_from: Some(8),
            too_old_through: Some(1),
        };
        let hit: Vec<usize> = (0..10).filter(|&i| r.contains(i)).collect();
        assert_eq!(hit, [0, 1, 8, 9]);
        assert!(!Rejected::default().contains(0));
    }

    #[test]
    fn names_are_validated_like_cloudwatch_does() {
        assert!(valid_group("/offpath/fallback_1.a#b"));
        assert!(!valid_group(""));
        assert!(!valid_group("a b"));
        assert!(valid_stream("host-1"));
        assert!(!valid_stream("a:b"));
        assert!(!default_stream_name().contains(':'));
    }

    #[test]
    fn backoff_grows_and_resets() {
        let now = Instant::now();
        let mut b = CallBackoff::new(Duration::from_millis(100), Duration::from_secs(1));
        b.fail(now);
        let first = b.not_before().unwrap() - now;
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            b.fail(now);
        }
        assert!(b.not_before().unwrap() - now <= Duration::from_secs(1));
        b.succeed();
        assert_eq!(b.not_before(), None);
    }
}
