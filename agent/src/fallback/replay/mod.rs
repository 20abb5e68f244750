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
//! older than 1 hour, events older than 18 hours, service checks older than 10 minutes (`docs/protocols.md`,
//! "Requests"; sketches follow the series rule).
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

mod collect;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::encode::{EncodeError, Encoder};
use crate::forward::Forwarder;
use crate::telemetry::Telemetry;
use collect::Collector;

use super::destination::DestinationFilter;

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

#[cfg(test)]
mod tests;
