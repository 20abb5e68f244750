//! CloudWatch Logs and stdout sinks for what the forwarder could not deliver; record formats; replay.
//!
//! ```text
//! forward ─overflow mpsc<Payload>─> spawn() task ─> Fallback::write_payloads ─decode─> records ─┬─> stdout (buffered)
//! no API key: flush driver ─────────────────────────> Fallback::write_flush ──────────────────┘   CloudWatch Logs (batched)
//! ```
//!
//! * **Sink** (`OFFPATH_FALLBACK`): `auto` is stdout inside Lambda (free, asynchronous, lands in the
//!   function's log group), CloudWatch Logs where `OFFPATH_FALLBACK_LOG_GROUP` is set, stdout otherwise;
//!   `cloudwatch`, `stdout`; `off` drops and counts (`points.dropped.fallback_off`).
//! * **Records** ([`records`]): one JSON object per line in the format of `OFFPATH_FALLBACK_FORMAT`.
//! * **CloudWatch**: PutLogEvents to the group and stream (default stream `<hostname>-<pid>`), both
//!   created when missing. Every call respects the PutLogEvents limits (see `cloudwatch.rs`).
//!   `ThrottlingException`, `ServiceUnavailableException`, other 5xx, transport and credential errors are
//!   retried with jittered exponential backoff (100 ms doubling to 30 s); meanwhile records wait in a
//!   buffer bounded by [`BUFFER_MAX_BYTES`] and are dropped, oldest first, only when it overflows
//!   (`points.dropped.fallback_overflow`). Events CloudWatch rejects (`rejectedLogEventsInfo`: too old,
//!   too new, expired) and batches it refuses (`InvalidParameterException`) are counted
//!   (`points.dropped.fallback_rejected`), never retried. The SDK's own retries are off, so these
//!   decisions (and the counters) are ours.
//! * **Accounting**: `points.fell_back` grows by a record's samples only once the record is written:
//!   stdout flushed, or CloudWatch accepted it. `forward.fallback_records` / `fallback_bytes` count the
//!   records and message bytes written. Records still held when the `Fallback` is dropped are counted
//!   as `points.dropped.shutdown_deadline`. Delivery to CloudWatch is at least once: a call that timed
//!   out may have landed and is sent again (replay's `--dedupe` removes such duplicates).
//! * **Feature `cloudwatch`** (default): the CloudWatch sink needs the AWS SDK. Builds without it (the
//!   Lambda layer) refuse CloudWatch settings in the configuration, and [`Fallback::new`] refuses a
//!   CloudWatch sink with [`FallbackError::NoCloudWatch`].

#[cfg(feature = "cloudwatch")]
mod cloudwatch;
pub mod records;
pub mod replay;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

#[cfg(feature = "cloudwatch")]
use aws_sdk_cloudwatchlogs::config::retry::RetryConfig;
#[cfg(feature = "cloudwatch")]
use aws_sdk_cloudwatchlogs::config::timeout::TimeoutConfig;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

#[cfg(feature = "cloudwatch")]
use crate::config::FallbackFormat;
use crate::config::{FallbackConfig, FallbackSink};
use crate::encode::{Payload, decode};
use crate::errors::Chain;
use crate::model::Flush;
use crate::telemetry::{PointDrop, Telemetry};
#[cfg(feature = "cloudwatch")]
pub use cloudwatch::{
    BATCH_MAX_BYTES, BATCH_MAX_EVENTS, BATCH_MAX_SPAN_MS, BUFFER_MAX_BYTES, EVENT_OVERHEAD,
};
#[cfg(feature = "cloudwatch")]
use cloudwatch::{Backoff, Buffer, CallError, Destination, Pending};
use records::{Formatter, Record};

/// How often the [`spawn`]ed task pushes buffered records out.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Time a periodic flush of the [`spawn`]ed task may take (including backoff waits).
pub const PERIODIC_FLUSH_BUDGET: Duration = Duration::from_secs(5);
/// Time the [`spawn`]ed task gives its last flush once its channel closes; abort the task to cut it
/// shorter (what is still held is then counted as `shutdown_deadline`).
pub const FINAL_FLUSH_BUDGET: Duration = Duration::from_secs(10);

/// An error setting up the fallback; the message names the setting to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FallbackError {
    /// `OFFPATH_FALLBACK=cloudwatch` without a log group.
    #[error("OFFPATH_FALLBACK=cloudwatch needs a log group: set OFFPATH_FALLBACK_LOG_GROUP")]
    NoLogGroup,
    /// The log group name is not one CloudWatch accepts.
    #[error(
        "invalid OFFPATH_FALLBACK_LOG_GROUP {0:?}: expected 1-512 characters of a-z A-Z 0-9 _ - / . #"
    )]
    LogGroupName(String),
    /// The log stream name is not one CloudWatch accepts.
    #[error("invalid OFFPATH_FALLBACK_LOG_STREAM {0:?}: expected 1-512 characters without : or *")]
    LogStreamName(String),
    /// The AWS SDK found no region.
    #[error(
        "no AWS region for the CloudWatch fallback: set AWS_REGION (or use OFFPATH_FALLBACK=stdout)"
    )]
    NoRegion,
    /// A CloudWatch sink was asked of a build without the `cloudwatch` feature.
    #[error(
        "OFFPATH_FALLBACK=cloudwatch (or OFFPATH_FALLBACK_LOG_GROUP) is set, but this build of offpath has no \
         CloudWatch Logs sink (built without the `cloudwatch` feature, like the Lambda layer): use \
         OFFPATH_FALLBACK=stdout"
    )]
    NoCloudWatch,
}

/// Records written to a writer but not yet flushed.
#[derive(Debug, Default)]
struct Unflushed {
    records: u64,
    bytes: u64,
    samples: u64,
}

struct StdoutSink {
    out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    unflushed: Unflushed,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("unflushed", &self.unflushed)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "cloudwatch")]
#[derive(Debug)]
struct CloudWatchSink {
    dest: Destination,
    buffer: Buffer,
    backoff: Backoff,
}

#[derive(Debug)]
enum Sink {
    Off,
    Stdout(StdoutSink),
    #[cfg(feature = "cloudwatch")]
    CloudWatch(Box<CloudWatchSink>),
}

/// The fallback: turns what could not be delivered into records and writes them to its sink.
#[derive(Debug)]
pub struct Fallback {
    sink: Sink,
    formatter: Formatter,
    telemetry: Arc<Telemetry>,
    scratch: Vec<Record>,
}

#[cfg(feature = "cloudwatch")]
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Fallback {
    /// The fallback that `cfg.sink` names. For CloudWatch, AWS settings come from the standard SDK
    /// chain (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`, roles).
    ///
    /// # Errors
    /// A [`FallbackError`] naming the setting to fix (log group or stream name, missing region, or
    /// [`FallbackError::NoCloudWatch`] in a build without the `cloudwatch` feature).
    pub async fn new(
        cfg: &FallbackConfig,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, FallbackError> {
        #[cfg(feature = "cloudwatch")]
        if cfg.sink == FallbackSink::CloudWatch {
            let aws = crate::auth::load_sdk_config(None).await;
            return Self::with_aws(cfg, telemetry, &aws);
        }
        Self::without_aws(cfg, telemetry)
    }

    fn without_aws(cfg: &FallbackConfig, telemetry: Arc<Telemetry>) -> Result<Self, FallbackError> {
        let sink = match cfg.sink {
            FallbackSink::Off => Sink::Off,
            FallbackSink::Stdout => {
                return Ok(Self::with_writer(cfg, telemetry, tokio::io::stdout()));
            }
            FallbackSink::CloudWatch if cfg!(feature = "cloudwatch") => {
                return Err(FallbackError::NoRegion);
            }
            FallbackSink::CloudWatch => return Err(FallbackError::NoCloudWatch),
        };
        Ok(Self {
            sink,
            formatter: Formatter::new(cfg),
            telemetry,
            scratch: Vec::new(),
        })
    }

    /// Like [`Fallback::new`] with AWS settings given (tests point `aws` at an emulator).
    ///
    /// # Errors
    /// A [`FallbackError`] naming the setting to fix.
    #[cfg(feature = "cloudwatch")]
    pub fn with_aws(
        cfg: &FallbackConfig,
        telemetry: Arc<Telemetry>,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, FallbackError> {
        if cfg.sink != FallbackSink::CloudWatch {
            return Self::without_aws(cfg, telemetry);
        }
        let group = cfg.log_group.clone().ok_or(FallbackError::NoLogGroup)?;
        if !cloudwatch::valid_group(&group) {
            return Err(FallbackError::LogGroupName(group));
        }
        let stream = cfg
            .log_stream
            .clone()
            .unwrap_or_else(cloudwatch::default_stream_name);
        if !cloudwatch::valid_stream(&stream) {
            return Err(FallbackError::LogStreamName(stream));
        }
        if aws.region().is_none() {
            return Err(FallbackError::NoRegion);
        }
        let conf = aws_sdk_cloudwatchlogs::config::Builder::from(aws)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            )
            .build();
        let client = aws_sdk_cloudwatchlogs::Client::from_conf(conf);
        tracing::info!(%group, %stream, "fallback writes to CloudWatch Logs");
        Ok(Self {
            sink: Sink::CloudWatch(Box::new(CloudWatchSink {
                dest: Destination::new(client, group, stream, cfg.format == FallbackFormat::Emf),
                buffer: Buffer::new(BUFFER_MAX_BYTES),
                backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
            })),
            formatter: Formatter::new(cfg),
            telemetry,
            scratch: Vec::new(),
        })
    }

    /// A fallback that writes records, one per line, to `writer` (stdout in the product; any writer in
    /// tests). The record format comes from `cfg`; its mode is not consulted.
    pub fn with_writer(
        cfg: &FallbackConfig,
        telemetry: Arc<Telemetry>,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Self {
        let boxed: Box<dyn AsyncWrite + Send + Unpin> = Box::new(writer);
        Self {
            sink: Sink::Stdout(StdoutSink {
                out: BufWriter::with_capacity(64 * 1024, boxed),
                unflushed: Unflushed::default(),
            }),
            formatter: Formatter::new(cfg),
            telemetry,
            scratch: Vec::new(),
        }
    }

    /// Bound the CloudWatch buffer to `bytes` instead of [`BUFFER_MAX_BYTES`].
    #[cfg(feature = "cloudwatch")]
    pub fn with_buffer_max_bytes(mut self, bytes: usize) -> Self {
        if let Sink::CloudWatch(cw) = &mut self.sink {
            cw.buffer.set_max_bytes(bytes);
        }
        self
    }

    /// Which sink this fallback writes to.
    pub fn sink(&self) -> FallbackSink {
        match self.sink {
            Sink::Off => FallbackSink::Off,
            Sink::Stdout(_) => FallbackSink::Stdout,
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(_) => FallbackSink::CloudWatch,
        }
    }

    /// The CloudWatch log group and stream, when that is the sink.
    pub fn destination(&self) -> Option<(&str, &str)> {
        match &self.sink {
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(cw) => Some((&cw.dest.group, &cw.dest.stream)),
            Sink::Off | Sink::Stdout(_) => None,
        }
    }

    /// Bytes of records waiting for CloudWatch (0 for the other sinks).
    pub fn buffered_bytes(&self) -> usize {
        match &self.sink {
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(cw) => cw.buffer.bytes(),
            Sink::Off | Sink::Stdout(_) => 0,
        }
    }

    /// True when a full PutLogEvents batch is waiting and [`Fallback::flush`] should run now.
    pub fn wants_flush(&self) -> bool {
        match &self.sink {
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(cw) => cw.buffer.batch_ready(),
            Sink::Off | Sink::Stdout(_) => false,
        }
    }

    /// Write the records of payloads the forwarder gave up on (decoded back into series, sketches,
    /// events and service checks; each payload's samples are shared among its items).
    /// `points.fell_back` grows when the records are written ([`Fallback::flush`]).
    pub async fn write_payloads(&mut self, payloads: Vec<Payload>) {
        for p in payloads {
            if matches!(self.sink, Sink::Off) {
                self.telemetry
                    .points
                    .drop_points(PointDrop::FallbackOff, p.samples);
                continue;
            }
            match decode(&p) {
                Ok(flush) => self.write_flush(&flush).await,
                Err(e) => {
                    tracing::error!(error = %Chain(&e), kind = p.kind.as_str(), "cannot decode a payload for the fallback; dropping it");
                    self.telemetry
                        .points
                        .drop_points(PointDrop::FallbackRejected, p.samples);
                }
            }
        }
    }

    /// Write a flush's records (local mode, and the decoded payloads of the forwarder).
    /// `points.fell_back` grows when the records are written ([`Fallback::flush`]).
    pub async fn write_flush(&mut self, flush: &Flush) {
        let mut records = std::mem::take(&mut self.scratch);
        records.clear();
        let over = self.formatter.write_flush(flush, &mut records);
        self.telemetry
            .points
            .drop_points(PointDrop::TooLarge, over.samples);
        self.telemetry
            .points
            .drop_points(PointDrop::NonFinite, over.non_finite);
        self.write_records(&mut records).await;
        self.scratch = records;
    }

    async fn write_records(&mut self, records: &mut Vec<Record>) {
        let t = &self.telemetry;
        match &mut self.sink {
            Sink::Off => {
                let samples = records.drain(..).map(|r| r.samples).sum();
                t.points.drop_points(PointDrop::FallbackOff, samples);
            }
            Sink::Stdout(s) => {
                for r in records.drain(..) {
                    let res = match s.out.write_all(r.line.as_bytes()).await {
                        Ok(()) => s.out.write_all(b"\n").await,
                        Err(e) => Err(e),
                    };
                    match res {
                        Ok(()) => {
                            s.unflushed.records += 1;
                            s.unflushed.bytes += r.line.len() as u64 + 1;
                            s.unflushed.samples += r.samples;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot write fallback records to stdout");
                            t.points.drop_points(PointDrop::FallbackRejected, r.samples);
                        }
                    }
                }
            }
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(cw) => {
                let now = now_ms();
                for r in records.drain(..) {
                    if cw.buffer.would_overflow(r.line.len()) && cw.backoff.not_before().is_none() {
                        // Make room by sending rather than dropping while CloudWatch answers; once a
                        // call fails (backoff running) the oldest records give way instead.
                        flush_cloudwatch(cw, t, Instant::now() + PERIODIC_FLUSH_BUDGET, false)
                            .await;
                    }
                    let dropped = cw.buffer.push(Pending::new(r.ts, r.line, r.samples, now));
                    t.points.drop_points(PointDrop::FallbackOverflow, dropped);
                }
            }
        }
    }

    /// Push buffered records out before `deadline`: flush stdout, or send CloudWatch batches (retrying
    /// with backoff while the deadline allows). What is left stays buffered for the next call.
    #[cfg_attr(not(feature = "cloudwatch"), allow(unused_variables))]
    pub async fn flush(&mut self, deadline: Instant) {
        let t = Arc::clone(&self.telemetry);
        match &mut self.sink {
            Sink::Off => {}
            Sink::Stdout(s) => {
                let u = std::mem::take(&mut s.unflushed);
                match s.out.flush().await {
                    Ok(()) => {
                        t.points.fell_back.fetch_add(u.samples, Relaxed);
                        t.forward.fallback_records.fetch_add(u.records, Relaxed);
                        t.forward.fallback_bytes.fetch_add(u.bytes, Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot flush fallback records to stdout");
                        t.points.drop_points(PointDrop::FallbackRejected, u.samples);
                    }
                }
            }
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(cw) => flush_cloudwatch(cw, &t, deadline, true).await,
        }
    }
}

/// Send batches until the buffer is empty or `deadline`; with `wait`, sleep out backoffs that end
/// before the deadline, without it return at the first backoff.
#[cfg(feature = "cloudwatch")]
async fn flush_cloudwatch(cw: &mut CloudWatchSink, t: &Telemetry, deadline: Instant, wait: bool) {
    let mut created = false;
    while !cw.buffer.is_empty() {
        if let Some(at) = cw.backoff.not_before() {
            if at >= deadline || !wait {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
        if Instant::now() >= deadline {
            return;
        }
        let batch = cw.buffer.next_batch();
        let result = tokio::time::timeout_at(deadline, cw.dest.put(&batch)).await;
        match result {
            Ok(Ok(rejected)) => {
                cw.backoff.succeed();
                let (mut ok, mut bad, mut records, mut bytes) = (0, 0, 0, 0);
                for (i, p) in batch.iter().enumerate() {
                    if rejected.contains(i) {
                        bad += p.samples;
                    } else {
                        ok += p.samples;
                        records += 1;
                        bytes += p.line.len() as u64;
                    }
                }
                if bad > 0 {
                    tracing::warn!(
                        ?rejected,
                        "CloudWatch Logs rejected fallback events (too old, too new or expired)"
                    );
                }
                t.points.fell_back.fetch_add(ok, Relaxed);
                t.points.drop_points(PointDrop::FallbackRejected, bad);
                t.forward.fallback_records.fetch_add(records, Relaxed);
                t.forward.fallback_bytes.fetch_add(bytes, Relaxed);
            }
            Ok(Err(CallError::NotFound)) if !created => {
                created = true;
                let dropped = cw.buffer.put_back(batch);
                t.points.drop_points(PointDrop::FallbackOverflow, dropped);
                if let Err(CallError::Retry(e) | CallError::Refused(e)) = cw.dest.create().await {
                    tracing::warn!(error = %e, "cannot create the fallback log group or stream");
                    cw.backoff.fail(Instant::now());
                }
            }
            Ok(Err(CallError::Refused(e))) => {
                tracing::error!(error = %e, events = batch.len(), "CloudWatch Logs refused a fallback batch; dropping it");
                let samples = batch.iter().map(|p| p.samples).sum();
                t.points.drop_points(PointDrop::FallbackRejected, samples);
            }
            Ok(Err(e)) => {
                let msg = match e {
                    CallError::Retry(m) | CallError::Refused(m) => m,
                    CallError::NotFound => "log group or stream not found".to_owned(),
                };
                tracing::warn!(error = %msg, "PutLogEvents failed; will retry");
                let dropped = cw.buffer.put_back(batch);
                t.points.drop_points(PointDrop::FallbackOverflow, dropped);
                cw.backoff.fail(Instant::now());
            }
            Err(_elapsed) => {
                let dropped = cw.buffer.put_back(batch);
                t.points.drop_points(PointDrop::FallbackOverflow, dropped);
                return;
            }
        }
    }
}

/// Run the fallback as a task: write payloads as they arrive on `rx`, push records out every
/// [`FLUSH_EVERY`] or as soon as a full CloudWatch batch waits, and when `rx` closes (every sender
/// dropped) flush everything within [`FINAL_FLUSH_BUDGET`] and return.
pub fn spawn(mut fb: Fallback, mut rx: mpsc::Receiver<Payload>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(64);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, 64) => {
                    if n == 0 {
                        break;
                    }
                    for p in batch.drain(..) {
                        fb.write_payloads(vec![p]).await;
                        if fb.wants_flush() {
                            fb.flush(Instant::now() + PERIODIC_FLUSH_BUDGET).await;
                        }
                    }
                }
                _ = tick.tick() => fb.flush(Instant::now() + PERIODIC_FLUSH_BUDGET).await,
            }
        }
        fb.flush(Instant::now() + FINAL_FLUSH_BUDGET).await;
    })
}

impl Drop for Fallback {
    fn drop(&mut self) {
        let held = match &mut self.sink {
            Sink::Off => 0,
            Sink::Stdout(s) => std::mem::take(&mut s.unflushed).samples,
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(cw) => cw.buffer.clear(),
        };
        if held > 0 {
            self.telemetry
                .points
                .drop_points(PointDrop::ShutdownDeadline, held);
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FallbackFormat;

    fn cfg(sink: FallbackSink, group: Option<&str>) -> FallbackConfig {
        FallbackConfig {
            sink,
            log_group: group.map(str::to_owned),
            log_stream: None,
            format: FallbackFormat::Offpath,
            emf_dimensions: vec![],
            emf_namespace: "offpath".to_owned(),
        }
    }

    #[cfg(feature = "cloudwatch")]
    #[tokio::test]
    async fn bad_cloudwatch_settings_are_refused_with_the_key_to_fix() {
        let t = Arc::new(Telemetry::default());
        let aws = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let mut c = cfg(FallbackSink::CloudWatch, Some("bad name"));
        let e = Fallback::with_aws(&c, Arc::clone(&t), &aws).unwrap_err();
        assert!(e.to_string().contains("OFFPATH_FALLBACK_LOG_GROUP"));
        c.log_group = Some("good".into());
        c.log_stream = Some("a:b".into());
        let e = Fallback::with_aws(&c, Arc::clone(&t), &aws).unwrap_err();
        assert!(e.to_string().contains("OFFPATH_FALLBACK_LOG_STREAM"));
        c.log_stream = None;
        let no_region = aws_config::SdkConfig::builder().build();
        let e = Fallback::with_aws(&c, Arc::clone(&t), &no_region).unwrap_err();
        assert_eq!(e, FallbackError::NoRegion);
        c.log_group = None;
        let e = Fallback::with_aws(&c, t, &aws).unwrap_err();
        assert_eq!(e, FallbackError::NoLogGroup);
    }

    #[cfg(not(feature = "cloudwatch"))]
    #[tokio::test]
    async fn a_build_without_cloudwatch_refuses_a_cloudwatch_sink_and_names_the_keys() {
        let t = Arc::new(Telemetry::default());
        let e = Fallback::new(&cfg(FallbackSink::CloudWatch, Some("g")), Arc::clone(&t))
            .await
            .unwrap_err();
        assert_eq!(e, FallbackError::NoCloudWatch);
        let msg = e.to_string();
        assert!(msg.contains("OFFPATH_FALLBACK=cloudwatch"), "{msg}");
        assert!(msg.contains("OFFPATH_FALLBACK_LOG_GROUP"), "{msg}");
        assert!(msg.contains("`cloudwatch` feature"), "{msg}");
        let fb = Fallback::new(&cfg(FallbackSink::Stdout, Some("g")), t)
            .await
            .unwrap();
        assert_eq!(fb.sink(), FallbackSink::Stdout);
    }
}
