//! `offpath replay`: re-ship `offpath` fallback records to Datadog.
//!
//! Records come from a file or stdin (one per line; text before the first `{` on a line, such as a
//! timestamp prefix, is ignored), or from a log group through `FilterLogEvents` (every page, optionally
//! one stream, between `--since` and `--until`; without `--since`, the last hour). Lines that are not
//! `offpath` records (other logs in a Lambda log group, `forwarder`/`emf` lines) are skipped and counted.
//!
//! The records are re-encoded with the [`Encoder`] and sent with a [`Forwarder`] exactly as they were
//! written: the same types, intervals, timestamps and sketches. Timestamps are never rewritten, so
//! what Datadog would refuse as too old is counted and not sent: series points and sketch buckets
//! older than 1 hour, events older than 18 hours, service checks older than 10 minutes (PROTOCOLS.md
//! §2.3, §2.6; sketches follow the series rule).
//!
//! **Running twice, and `--dedupe`.** Datadog keeps one value per series and timestamp, so re-sending
//! the same series points is harmless; sketch buckets are merged and events are created again, so
//! re-sending those counts them twice. The log group itself may hold a record twice: delivery to
//! CloudWatch is at least once (a PutLogEvents call that timed out is sent again), and two overlapping
//! ranges replayed in one run read the same events. `--dedupe` skips a record identical to one already
//! seen in this run (a 128-bit digest of its text, at most `DEDUPE_MAX` remembered). The trade-off:
//! two records that are identical but were both real are collapsed too — for example two Lambda
//! sandboxes without a host tag that each wrote a sketch of the single value 1 for the same metric,
//! tags and 10 s bucket. Nothing is remembered across runs: replaying the same range in two runs
//! sends its sketches and events twice, with or without `--dedupe`.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::encode::{EncodeError, Encoder};
use crate::forward::Forwarder;
use crate::model::Flush;
use crate::telemetry::Telemetry;

use super::destination::{DestinationFilter, Verdict};
use super::records::{Parsed, RecordError, parse_record};

/// Series points older than this (seconds) are refused by the intake.
pub(crate) const SERIES_MAX_AGE: i64 = 3600;
/// Sketch buckets older than this (seconds) are not sent (the series rule).
pub(crate) const SKETCH_MAX_AGE: i64 = 3600;
/// Events older than this (seconds) are refused by the intake.
pub(crate) const EVENT_MAX_AGE: i64 = 18 * 3600;
/// Service checks older than this (seconds) are refused by the intake.
pub(crate) const SERVICE_CHECK_MAX_AGE: i64 = 600;
/// Most record digests `--dedupe` remembers (16 bytes each, about 40 MiB in all); past it, records are
/// still checked against those remembered but no more are added.
pub(crate) const DEDUPE_MAX: usize = 2_000_000;
/// Items (points, sketch buckets, events, service checks) gathered before a batch is encoded and sent.
pub(crate) const BATCH_ITEMS: usize = 10_000;

/// Where replay reads records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySource {
    /// A file of records, one per line.
    File(PathBuf),
    /// Standard input.
    Stdin,
    /// A CloudWatch log group, read with FilterLogEvents.
    LogGroup {
        /// Log group name.
        group: String,
        /// Only this stream, when given.
        stream: Option<String>,
        /// Start of the range, ms since the epoch (inclusive).
        since_ms: i64,
        /// End of the range, ms since the epoch (inclusive); `None` = now.
        until_ms: Option<i64>,
    },
}

impl ReplaySource {
    /// `--from-file ARG`: `-` is stdin.
    pub fn from_file_arg(arg: &str) -> Self {
        if arg == "-" {
            Self::Stdin
        } else {
            Self::File(PathBuf::from(arg))
        }
    }

    /// `--log-group NAME [--log-stream S] [--since T] [--until T]`, times as `parse_time` reads them,
    /// relative to `now_ms`; without `since`, the last hour.
    ///
    /// # Errors
    /// [`ReplayError::Time`] for an unreadable time, [`ReplayError::Range`] when since is after until.
    pub fn log_group(
        group: &str,
        stream: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        now_ms: i64,
    ) -> Result<Self, ReplayError> {
        let since_ms = match since {
            Some(s) => parse_time("--since", s, now_ms)?,
            None => now_ms - 3600 * 1000,
        };
        let until_ms = until
            .map(|u| parse_time("--until", u, now_ms))
            .transpose()?;
        if let Some(u) = until_ms
            && u < since_ms
        {
            return Err(ReplayError::Range {
                since_ms,
                until_ms: u,
            });
        }
        Ok(Self::LogGroup {
            group: group.to_owned(),
            stream: stream.map(str::to_owned),
            since_ms,
            until_ms,
        })
    }
}

/// What `offpath replay` does.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Where the records come from.
    pub source: ReplaySource,
    /// Skip records identical to one already seen in this run (`--dedupe`).
    pub dedupe: bool,
    /// The current time, unix seconds: what is "too old" is measured from it.
    pub now: i64,
    /// Time each batch may take to be delivered, retries included (default 30 s).
    pub batch_deadline: Duration,
    /// AWS settings for a log group source; `None` = the standard SDK chain.
    #[cfg(feature = "cloudwatch")]
    pub aws: Option<aws_config::SdkConfig>,
    /// Dual shipping: the records of which destination this run sends (default: the main one's, which
    /// is every record without `dest`).
    pub destinations: DestinationFilter,
}

impl ReplayOptions {
    /// Options for `source` at `now` (unix seconds), without dedupe, 30 s per batch, AWS from the
    /// standard chain.
    pub fn new(source: ReplaySource, now: i64) -> Self {
        Self {
            source,
            dedupe: false,
            now,
            batch_deadline: Duration::from_secs(30),
            #[cfg(feature = "cloudwatch")]
            aws: None,
            destinations: DestinationFilter::default(),
        }
    }
}

/// What a replay did. "Items" are series points, sketch buckets, events and service checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Lines (or log events) read.
    pub lines: u64,
    /// `offpath` records among them.
    pub records: u64,
    /// Lines that are not `offpath` records (other logs), skipped.
    pub skipped: u64,
    /// `offpath` records that could not be read (damaged, unknown version or kind).
    pub invalid: u64,
    /// Records skipped as identical to one already seen (`--dedupe`).
    pub duplicates: u64,
    /// True when `--dedupe` reached `DEDUPE_MAX` and stopped remembering new records.
    pub dedupe_full: bool,
    /// Items not sent because the intake refuses them as too old.
    pub too_old: u64,
    /// Items handed to the forwarder.
    pub sent: u64,
    /// Items the intake accepted.
    pub delivered: u64,
    /// Items sent but not delivered (refused by the intake, or still failing at the deadline).
    pub not_delivered: u64,
    /// Records for another configured destination, left to its run (dual shipping).
    pub other_destination: u64,
    /// Records naming a destination that is not configured, not sent (check DD_ADDITIONAL_ENDPOINTS).
    pub unknown_destination: u64,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replay: lines={} records={} skipped={} invalid={} duplicates={} too_old={} sent={} delivered={} not_delivered={}",
            self.lines,
            self.records,
            self.skipped,
            self.invalid,
            self.duplicates,
            self.too_old,
            self.sent,
            self.delivered,
            self.not_delivered
        )?;
        if self.other_destination > 0 {
            write!(f, " other_destination={}", self.other_destination)?;
        }
        if self.unknown_destination > 0 {
            write!(f, " unknown_destination={}", self.unknown_destination)?;
        }
        if self.dedupe_full {
            f.write_str(" (dedupe memory full)")?;
        }
        Ok(())
    }
}

/// Why a replay could not run; the message names the flag or setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input file cannot be read.
    #[error("cannot read {path} (check --from-file)")]
    Read {
        /// The file (`-` for stdin).
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A time flag cannot be read.
    #[error(
        "invalid {flag} {value:?}: expected RFC 3339 (2024-05-01T12:00:00Z), epoch seconds, or a time ago such as 90m, 2h or 1h30m"
    )]
    Time {
        /// `--since` or `--until`.
        flag: &'static str,
        /// The value given.
        value: String,
    },
    /// `--since` is after `--until`.
    #[error("--since ({since_ms} ms) is after --until ({until_ms} ms)")]
    Range {
        /// Start, ms.
        since_ms: i64,
        /// End, ms.
        until_ms: i64,
    },
    /// `--log-group` in a build without the `cloudwatch` feature.
    #[error(
        "cannot read --log-group {0}: this build of offpath has no CloudWatch Logs support (built without \
         the `cloudwatch` feature); export the records to a file and use --from-file"
    )]
    NoCloudWatch(String),
    /// The AWS SDK found no region for the log group source.
    #[error("no AWS region to read --log-group from: set AWS_REGION")]
    NoRegion,
    /// The records could not be encoded for the intake.
    #[error("cannot encode replayed records")]
    Encode(#[from] EncodeError),
    /// FilterLogEvents failed.
    #[error(
        "FilterLogEvents on log group {group}: {message} (check --log-group, --log-stream and AWS credentials)"
    )]
    CloudWatch {
        /// The log group.
        group: String,
        /// The SDK's error.
        message: String,
    },
}

/// Read a time argument: RFC 3339 (`2024-05-01T12:00:00Z`, offsets allowed), epoch seconds
/// (`1714564800`), or a time before `now_ms` such as `90m`, `2h`, `1h30m`, `45s`, `7d`. Returns ms.
///
/// # Errors
/// [`ReplayError::Time`] naming `flag`.
pub(crate) fn parse_time(flag: &'static str, value: &str, now_ms: i64) -> Result<i64, ReplayError> {
    let err = || ReplayError::Time {
        flag,
        value: value.to_owned(),
    };
    let v = value.trim();
    if v.is_empty() {
        return Err(err());
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = v.parse().map_err(|_| err())?;
        return secs.checked_mul(1000).ok_or_else(err);
    }
    if v.contains('T') || v.contains('t') {
        let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
            .map_err(|_| err())?;
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| err());
    }
    // A duration ago: digits followed by a unit, repeated.
    let mut total: i64 = 0;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| err())?;
        let unit = rest[digits..].chars().next().ok_or_else(err)?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        total = n
            .checked_mul(secs * 1000)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(err)?;
        rest = &rest[digits + 1..];
    }
    Ok(now_ms - total)
}

/// Replay `opts.source` through `fwd`: read every record of `fwd`'s destination
/// (`opts.destinations`), re-encode with `enc`, send batch by batch, then retry what the forwarder
/// queued until a last deadline. `telemetry` must be the forwarder's: what was delivered is read from
/// its destination's ledger. Build the forwarder without an overflow channel so that nothing goes back
/// to a fallback.
///
/// # Errors
/// A [`ReplayError`] when the source cannot be read or the records cannot be encoded; what was sent
/// before the error stays sent.
pub async fn replay(
    opts: &ReplayOptions,
    enc: &Encoder,
    fwd: &mut Forwarder,
    telemetry: &Telemetry,
) -> Result<ReplayReport, ReplayError> {
    let dest = fwd.destination();
    let delivered = || {
        let own = telemetry.destinations();
        match own.iter().find(|d| d.destination.id() == dest) {
            Some(row) => row.delivered.load(Relaxed),
            None => telemetry.points.delivered.load(Relaxed),
        }
    };
    let delivered_before = delivered();
    let mut collector = Collector::new(opts.now, opts.dedupe);
    collector.destinations = opts.destinations.clone();
    let mut r = Replayer {
        collector,
        enc,
        fwd,
        batch_deadline: opts.batch_deadline,
    };
    match &opts.source {
        ReplaySource::File(path) => {
            let shown = path.display().to_string();
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|source| ReplayError::Read {
                    path: shown.clone(),
                    source,
                })?;
            r.read(BufReader::new(file), &shown).await?;
        }
        ReplaySource::Stdin => r.read(BufReader::new(tokio::io::stdin()), "-").await?,
        #[cfg(not(feature = "cloudwatch"))]
        ReplaySource::LogGroup { group, .. } => {
            return Err(ReplayError::NoCloudWatch(group.clone()));
        }
        #[cfg(feature = "cloudwatch")]
        ReplaySource::LogGroup {
            group,
            stream,
            since_ms,
            until_ms,
        } => {
            let aws = match &opts.aws {
                Some(aws) => aws.clone(),
                None => crate::auth::load_sdk_config(None).await,
            };
            if aws.region().is_none() {
                return Err(ReplayError::NoRegion);
            }
            let client = aws_sdk_cloudwatchlogs::Client::new(&aws);
            r.log_group(&client, group, stream.as_deref(), *since_ms, *until_ms)
                .await?;
        }
    }
    r.ship().await?;
    r.fwd
        .retry_queued(Instant::now() + opts.batch_deadline)
        .await;
    let left: u64 = r.fwd.take_queued().iter().map(|p| p.samples).sum();
    let mut report = r.collector.report;
    report.delivered = delivered().saturating_sub(delivered_before);
    report.not_delivered = report.sent.saturating_sub(report.delivered);
    if left > 0 {
        tracing::warn!(
            items = left,
            "replay: the intake did not accept everything before the deadline"
        );
    }
    tracing::info!("{report}");
    Ok(report)
}

/// The replay loop's state: the collector and where batches go.
struct Replayer<'a> {
    collector: Collector,
    enc: &'a Encoder,
    fwd: &'a mut Forwarder,
    batch_deadline: Duration,
}

impl Replayer<'_> {
    async fn line(&mut self, line: &str) -> Result<(), ReplayError> {
        self.collector.line(line);
        if self.collector.full() {
            self.ship().await?;
        }
        Ok(())
    }

    /// Encode and send what has been gathered.
    async fn ship(&mut self) -> Result<(), ReplayError> {
        let flush = self.collector.take();
        if flush.is_empty() {
            return Ok(());
        }
        self.collector.report.sent += flush.samples();
        let payloads = self.enc.encode(&flush)?;
        self.fwd
            .send(payloads, Instant::now() + self.batch_deadline)
            .await;
        Ok(())
    }

    async fn read(
        &mut self,
        mut input: impl AsyncBufRead + Unpin,
        shown: &str,
    ) -> Result<(), ReplayError> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n =
                input
                    .read_until(b'\n', &mut buf)
                    .await
                    .map_err(|source| ReplayError::Read {
                        path: shown.to_owned(),
                        source,
                    })?;
            if n == 0 {
                return Ok(());
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']);
            if !line.trim().is_empty() {
                self.line(line).await?;
            }
        }
    }

    /// Every page of FilterLogEvents over the range.
    #[cfg(feature = "cloudwatch")]
    async fn log_group(
        &mut self,
        client: &aws_sdk_cloudwatchlogs::Client,
        group: &str,
        stream: Option<&str>,
        since_ms: i64,
        until_ms: Option<i64>,
    ) -> Result<(), ReplayError> {
        let mut token: Option<String> = None;
        loop {
            let page = client
                .filter_log_events()
                .log_group_name(group)
                .set_log_stream_names(stream.map(|s| vec![s.to_owned()]))
                .start_time(since_ms)
                .set_end_time(until_ms)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| ReplayError::CloudWatch {
                    group: group.to_owned(),
                    message: super::cloudwatch::describe(&e),
                })?;
            for e in page.events() {
                if let Some(m) = e.message() {
                    self.line(m).await?;
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(()),
            }
        }
    }
}

/// Gathers records into a [`Flush`]: skips other lines, duplicates (with dedupe) and what is too old.
#[derive(Debug)]
pub(crate) struct Collector {
    now: i64,
    flush: Flush,
    items: usize,
    seen: Option<HashSet<u128>>,
    pub report: ReplayReport,
    /// Which destination's records are kept.
    pub destinations: DestinationFilter,
}

fn digest(line: &str) -> u128 {
    let mut a = DefaultHasher::new();
    line.hash(&mut a);
    let mut b = DefaultHasher::new();
    0x9e37_79b9_7f4a_7c15_u64.hash(&mut b);
    line.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

impl Collector {
    pub fn new(now: i64, dedupe: bool) -> Self {
        Self {
            now,
            flush: Flush::default(),
            items: 0,
            seen: dedupe.then(HashSet::new),
            report: ReplayReport::default(),
            destinations: DestinationFilter::default(),
        }
    }

    /// Read one line.
    pub fn line(&mut self, line: &str) {
        self.report.lines += 1;
        match self.destinations.check(line) {
            Verdict::Keep => {}
            Verdict::Other => {
                self.report.other_destination += 1;
                return;
            }
            Verdict::Unknown => {
                self.report.unknown_destination += 1;
                return;
            }
        }
        let parsed = match parse_record(line) {
            Ok(p) => p,
            Err(RecordError::NotARecord) => {
                self.report.skipped += 1;
                return;
            }
            Err(e) => {
                self.report.invalid += 1;
                if self.report.invalid <= 5 {
                    tracing::warn!(error = %e, "skipping an offpath record that cannot be read");
                }
                return;
            }
        };
        self.report.records += 1;
        if let Some(seen) = &mut self.seen {
            let key = digest(
                line.get(line.find('{').unwrap_or(0)..)
                    .unwrap_or(line)
                    .trim_end(),
            );
            if seen.contains(&key) {
                self.report.duplicates += 1;
                return;
            }
            if seen.len() < DEDUPE_MAX {
                seen.insert(key);
            } else {
                self.report.dedupe_full = true;
            }
        }
        let now = self.now;
        match parsed {
            Parsed::Series(mut s) => {
                let before = s.points.len();
                s.points.retain(|&(ts, _)| ts >= now - SERIES_MAX_AGE);
                self.report.too_old += (before - s.points.len()) as u64;
                if !s.points.is_empty() {
                    s.samples = s.points.len() as u64;
                    self.items += s.points.len();
                    self.flush.series.push(s);
                }
            }
            Parsed::Sketch(mut s) => {
                let before = s.sketches.len();
                s.sketches.retain(|d| d.ts >= now - SKETCH_MAX_AGE);
                self.report.too_old += (before - s.sketches.len()) as u64;
                if !s.sketches.is_empty() {
                    s.samples = s.sketches.len() as u64;
                    self.items += s.sketches.len();
                    self.flush.sketches.push(s);
                }
            }
            Parsed::Event(e) => {
                if e.ts < now - EVENT_MAX_AGE {
                    self.report.too_old += 1;
                } else {
                    self.items += 1;
                    self.flush.events.push(e);
                }
            }
            Parsed::ServiceCheck(c) => {
                if c.ts < now - SERVICE_CHECK_MAX_AGE {
                    self.report.too_old += 1;
                } else {
                    self.items += 1;
                    self.flush.service_checks.push(c);
                }
            }
        }
    }

    /// True when a batch is ready to send.
    pub fn full(&self) -> bool {
        self.items >= BATCH_ITEMS
    }

    /// Take what has been gathered.
    pub fn take(&mut self) -> Flush {
        self.items = 0;
        std::mem::take(&mut self.flush)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

    #[test]
    fn times_are_read_as_rfc3339_epoch_seconds_or_a_time_ago() {
        let cases: &[(&str, i64)] = &[
            ("2024-05-01T12:00:00Z", NOW_MS),
            ("2024-05-01T14:00:00+02:00", NOW_MS),
            ("2024-05-01T11:59:59.5Z", NOW_MS - 500),
            ("1714564800", NOW_MS),
            ("90m", NOW_MS - 90 * 60_000),
            ("2h", NOW_MS - 7_200_000),
            ("1h30m", NOW_MS - 90 * 60_000),
            ("45s", NOW_MS - 45_000),
            ("7d", NOW_MS - 7 * 86_400_000),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_time("--since", arg, NOW_MS).unwrap(), *want, "{arg}");
        }
        for bad in [
            "",
            "yesterday",
            "2h ago",
            "5x",
            "m",
            "2024-05-01",
            "99999999999999999999",
        ] {
            let e = parse_time("--since", bad, NOW_MS).unwrap_err();
            assert!(e.to_string().contains("--since"), "{bad}: {e}");
        }
    }

    #[cfg(not(feature = "cloudwatch"))]
    #[tokio::test]
    async fn a_build_without_cloudwatch_refuses_a_log_group_and_says_why() {
        let config = crate::config::Config::load(&|k: &str| {
            (k == "DD_API_KEY").then(|| "0123456789abcdef".to_owned())
        })
        .unwrap();
        let telemetry = Telemetry::default();
        let key = crate::auth::ApiKeySource::Fixed(config.forward.api_key.clone().unwrap());
        let mut fwd = Forwarder::new(
            &config.forward,
            key,
            std::sync::Arc::new(Telemetry::default()),
            None,
        )
        .unwrap();
        let source = ReplaySource::log_group("/g", None, None, None, NOW_MS).unwrap();
        let opts = ReplayOptions::new(source, NOW_MS / 1000);
        let e = replay(&opts, &Encoder::new(1), &mut fwd, &telemetry)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ReplayError::NoCloudWatch(g) if g == "/g"),
            "{e}"
        );
        assert!(e.to_string().contains("--log-group"), "{e}");
        assert!(e.to_string().contains("`cloudwatch` feature"), "{e}");
    }

    #[test]
    fn a_log_group_source_defaults_to_the_last_hour_and_checks_the_range() {
        let src = ReplaySource::log_group("g", None, None, None, NOW_MS).unwrap();
        assert_eq!(
            src,
            ReplaySource::LogGroup {
                group: "g".into(),
                stream: None,
                since_ms: NOW_MS - 3_600_000,
                until_ms: None
            }
        );
        assert!(matches!(
            ReplaySource::log_group("g", None, Some("1h"), Some("2h"), NOW_MS),
            Err(ReplayError::Range { .. })
        ));
        assert_eq!(ReplaySource::from_file_arg("-"), ReplaySource::Stdin);
    }

    #[test]
    fn the_collector_keeps_records_and_counts_what_it_leaves_out() {
        let now = 1_000_000;
        let mut c = Collector::new(now, false);
        let lines = [
            "START RequestId: abc",
            r#"{"offpath":1,"kind":"series","metric":"m","type":"gauge","points":[[999990,1.0],[990000,2.0]],"tags":[]}"#,
            r#"{"offpath":1,"kind":"sketch","metric":"d","tags":[],"sketches":[{"ts":990000,"cnt":1,"min":1.0,"max":1.0,"sum":1.0,"avg":1.0,"k":[1338],"n":[1]}]}"#,
            r#"{"offpath":1,"kind":"event","title":"t","text":"","ts":990000,"priority":"normal","alert_type":"info","aggregation_key":"","source_type_name":"","tags":[]}"#,
            r#"{"offpath":1,"kind":"service_check","check":"c","status":0,"ts":990000,"message":"","tags":[]}"#,
            r#"{"offpath":9,"kind":"series"}"#,
        ];
        for l in lines {
            c.line(l);
        }
        let f = c.take();
        assert_eq!(f.series.len(), 1);
        assert_eq!(f.series[0].points, [(999_990, 1.0)]);
        assert_eq!(f.series[0].samples, 1);
        assert!(f.sketches.is_empty());
        assert_eq!(f.events.len(), 1);
        assert!(f.service_checks.is_empty());
        assert_eq!(
            c.report,
            ReplayReport {
                lines: 6,
                records: 4,
                skipped: 1,
                invalid: 1,
                too_old: 3,
                ..ReplayReport::default()
            }
        );
    }

    #[test]
    fn dedupe_skips_identical_records_even_behind_different_prefixes() {
        let rec = r#"{"offpath":1,"kind":"series","metric":"m","type":"gauge","points":[[100,1.0]],"tags":[]}"#;
        for (dedupe, kept, dups) in [(false, 3, 0), (true, 1, 2)] {
            let mut c = Collector::new(100, dedupe);
            c.line(rec);
            c.line(rec);
            c.line(&format!("2024-05-01T12:00:00Z {rec}"));
            assert_eq!(c.take().series.len(), kept);
            assert_eq!(c.report.duplicates, dups);
        }
    }
}
