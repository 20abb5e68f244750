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
//!   buffer bounded by `BUFFER_MAX_BYTES` and are dropped, oldest first, only when it overflows
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
pub mod destination;
pub mod records;
pub mod replay;
mod stdout;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
#[cfg(feature = "cloudwatch")]
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

#[cfg(feature = "cloudwatch")]
use aws_sdk_cloudwatchlogs::config::retry::RetryConfig;
#[cfg(feature = "cloudwatch")]
use aws_sdk_cloudwatchlogs::config::timeout::TimeoutConfig;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{FallbackConfig, FallbackFormat, FallbackSink};
use crate::control::status::Stall;
use crate::encode::{Payload, decode};
use crate::errors::Chain;
use crate::forward::{Deadline, DestinationId};
use crate::model::Flush;
use crate::telemetry::{PointDrop, Tally, Telemetry};
#[cfg(feature = "cloudwatch")]
use cloudwatch::{BUFFER_MAX_BYTES, Buffer, CallBackoff, CallError, Destination, Pending};
use records::{Formatter, Record};
pub use stdout::BUFFER_MAX_BYTES as STDOUT_BUFFER_MAX_BYTES;
use stdout::StdoutSink;

/// How often the [`spawn`]ed task pushes buffered records out.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Time a periodic flush of the [`spawn`]ed task may take (including backoff waits).
pub(crate) const PERIODIC_FLUSH_BUDGET: Duration = Duration::from_secs(5);
/// Time the [`spawn`]ed task gives its last flush once its channel closes, unless
/// [`FallbackTask::finish`] gave it a deadline.
pub(crate) const FINAL_FLUSH_BUDGET: Duration = Duration::from_secs(10);

/// How every `offpath` record begins (the version first); an additional destination's records carry
/// their `"dest"` member right after it.
const RECORD_HEAD: &str = "{\"offpath\":1,";

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
    /// The stdout writer thread could not be started.
    #[error("cannot start the stdout writer thread of the fallback: {0}")]
    Thread(String),
    /// A CloudWatch sink was asked of a build without the `cloudwatch` feature.
    #[error(
        "OFFPATH_FALLBACK=cloudwatch (or OFFPATH_FALLBACK_LOG_GROUP) is set, but this build of offpath has no \
         CloudWatch Logs sink (built without the `cloudwatch` feature, like the Lambda layer): use \
         OFFPATH_FALLBACK=stdout"
    )]
    NoCloudWatch,
}

#[cfg(feature = "cloudwatch")]
#[derive(Debug)]
struct CloudWatchSink {
    dest: Destination,
    buffer: Buffer,
    backoff: CallBackoff,
    /// Samples of the batch whose PutLogEvents call is under way (0 between calls): taken out of the
    /// buffer, so a fallback dropped mid-call (its task aborted at the shutdown deadline) counts them.
    in_flight: Tally,
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
    /// The shutdown deadline once known: no wait of the sink goes past it.
    stop_by: Option<Instant>,
    /// The `"dest"` member of each destination's records (JSON, by [`DestinationId`]), when there are
    /// additional destinations ([`Fallback::set_destinations`]).
    dest_fields: Vec<String>,
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
            FallbackSink::Stdout => return Self::with_writer(cfg, telemetry, stdout_writer()),
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
            dest_fields: Vec::new(),
            stop_by: None,
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
                backoff: CallBackoff::new(Duration::from_millis(100), Duration::from_secs(30)),
                in_flight: Tally::default(),
            })),
            formatter: Formatter::new(cfg),
            telemetry,
            scratch: Vec::new(),
            dest_fields: Vec::new(),
            stop_by: None,
        })
    }

    /// A fallback that writes records, one per line, to `writer` (stdout in the product; any writer in
    /// tests) on a thread of its own, so a writer that blocks holds up nothing else (see
    /// `fallback/stdout.rs`). The record format comes from `cfg`; its mode is not consulted.
    ///
    /// # Errors
    /// [`FallbackError::Thread`] when the writer thread cannot be started.
    pub fn with_writer(
        cfg: &FallbackConfig,
        telemetry: Arc<Telemetry>,
        writer: impl std::io::Write + Send + 'static,
    ) -> Result<Self, FallbackError> {
        let sink = StdoutSink::start(Box::new(writer), Arc::clone(&telemetry))
            .map_err(|e| FallbackError::Thread(e.to_string()))?;
        Ok(Self {
            sink: Sink::Stdout(sink),
            formatter: Formatter::new(cfg),
            telemetry,
            scratch: Vec::new(),
            dest_fields: Vec::new(),
            stop_by: None,
        })
    }

    /// What `/health` watches for this sink: the stdout writer's waits (`None` for the other sinks).
    pub fn stall(&self) -> Option<Arc<Stall>> {
        match &self.sink {
            Sink::Stdout(s) => Some(s.stall()),
            Sink::Off => None,
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(_) => None,
        }
    }

    /// From now on no wait of the sink goes past `deadline` (the shutdown deadline).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.stop_by = Some(deadline);
    }

    /// `now + budget`, or the shutdown deadline when that comes first.
    fn within(&self, budget: Duration) -> Instant {
        let at = Instant::now() + budget;
        self.stop_by.map_or(at, |d| d.min(at))
    }

    /// Bound the CloudWatch buffer to `bytes` instead of `BUFFER_MAX_BYTES`.
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
    ///
    /// **Why the model → protobuf → model round trip.** The forwarder holds only encoded payloads: its
    /// retry queue is capped in compressed bytes, and keeping each flush's model beside its payloads
    /// would hold many times their size (10,000 series: 1.85 MB of protobuf before zstd, 82 KB after;
    /// the model is larger still) for the common case, where the intake takes them. So what it gives
    /// up on is decoded here, only on this path (Datadog unreachable or refusing the key), and only
    /// then costs CPU. The decode is exact (`encode::decode` is the inverse of the encoder, checked
    /// by the encoder's round-trip tests), so the records are what the flush itself would have given.
    pub async fn write_payloads(&mut self, payloads: Vec<Payload>) {
        for p in payloads {
            if matches!(self.sink, Sink::Off) {
                self.telemetry
                    .drop_for(p.destination, PointDrop::FallbackOff, p.samples);
                continue;
            }
            if !p.destination.is_main() && self.formatter.format() != FallbackFormat::Offpath {
                self.telemetry
                    .drop_for(p.destination, PointDrop::FallbackOff, p.samples);
                continue;
            }
            match decode(&p) {
                Ok(flush) => self.write_flush_for(&flush, p.destination).await,
                Err(e) => {
                    tracing::error!(error = %Chain(&e), kind = p.kind.as_str(), "cannot decode a payload for the fallback; dropping it");
                    self.telemetry
                        .drop_for(p.destination, PointDrop::FallbackRejected, p.samples);
                }
            }
        }
    }

    /// Dual shipping: the destinations payloads may come from, in id order. The `offpath` records of
    /// an additional destination's copy name it (`"dest":"<endpoint>#<key end>"`, right after
    /// `"offpath":1`), so that `offpath replay` re-sends them to it alone; records are cut smaller by
    /// the member's size to stay within the record limit. The `forwarder` and `emf` formats cannot name
    /// a destination: an additional destination's copy is not written in them (each copy would count
    /// again), and is counted as `fallback_off` in its ledger.
    pub fn set_destinations(&mut self, names: &[String]) {
        self.dest_fields = names
            .iter()
            .map(|n| {
                let name = serde_json::to_string(n).unwrap_or_else(|_| "\"\"".to_owned());
                format!("\"dest\":{name},")
            })
            .collect();
        let longest = self.dest_fields.iter().map(String::len).max().unwrap_or(0);
        if self.dest_fields.len() > 1 {
            self.formatter = self
                .formatter
                .clone()
                .with_max_bytes(records::MAX_RECORD_BYTES - longest);
        }
    }

    /// Write a flush's records (local mode, and the decoded payloads of the forwarder).
    /// `points.fell_back` grows when the records are written ([`Fallback::flush`]).
    pub async fn write_flush(&mut self, flush: &Flush) {
        self.write_flush_for(flush, DestinationId::MAIN).await;
    }

    /// [`Fallback::write_flush`] of `dest`'s copy: its records say which destination missed them, and
    /// are counted in that destination's ledger.
    async fn write_flush_for(&mut self, flush: &Flush, dest: DestinationId) {
        let mut records = std::mem::take(&mut self.scratch);
        records.clear();
        let over = self.formatter.write_flush(flush, &mut records);
        if let Some(field) = self
            .dest_fields
            .get(dest.index())
            .filter(|_| !dest.is_main())
        {
            for r in &mut records {
                if let Some(rest) = r.line.strip_prefix(RECORD_HEAD) {
                    r.line = format!("{RECORD_HEAD}{field}{rest}");
                }
            }
        }
        let t = &self.telemetry;
        t.drop_for(dest, PointDrop::TooLarge, over.samples);
        t.drop_for(dest, PointDrop::NonFinite, over.non_finite);
        self.write_records(&mut records, dest).await;
        self.scratch = records;
    }

    async fn write_records(&mut self, records: &mut Vec<Record>, dest: DestinationId) {
        let t = &self.telemetry;
        match &mut self.sink {
            Sink::Off => {
                let samples = records.drain(..).map(|r| r.samples).sum();
                t.drop_for(dest, PointDrop::FallbackOff, samples);
            }
            Sink::Stdout(s) => s.push_for(records, dest),
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(cw) => {
                let now = now_ms();
                let stop_by = self.stop_by;
                for r in records.drain(..) {
                    if cw.buffer.would_overflow(r.line.len()) && cw.backoff.not_before().is_none() {
                        // Make room by sending rather than dropping while CloudWatch answers; once a
                        // call fails (backoff running) the oldest records give way instead.
                        let at = Instant::now() + PERIODIC_FLUSH_BUDGET;
                        let budget = stop_by.map_or(at, |d| d.min(at));
                        flush_cloudwatch(cw, t, budget, false).await;
                    }
                    let p = Pending::new(r.ts, r.line, r.samples, now).for_dest(dest);
                    let dropped = cw.buffer.push(p);
                    t.drop_tally(PointDrop::FallbackOverflow, &dropped);
                }
            }
        }
    }

    /// Push buffered records out before `deadline` (an `Instant`, or a movable [`Deadline`]): wait for
    /// the stdout writer, or send CloudWatch batches (retrying with backoff while the deadline allows).
    /// What is left stays buffered for the next call; nothing waits past the shutdown deadline
    /// ([`Fallback::set_deadline`]).
    pub async fn flush(&mut self, deadline: impl Into<Deadline>) {
        let deadline = match (deadline.into(), self.stop_by) {
            (d, Some(stop_by)) if stop_by < d.at() => Deadline::from(stop_by),
            (d, _) => d,
        };
        #[cfg(feature = "cloudwatch")]
        let t = Arc::clone(&self.telemetry);
        match &mut self.sink {
            Sink::Off => {}
            Sink::Stdout(s) => s.flush(&deadline).await,
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(cw) => flush_cloudwatch(cw, &t, deadline.at(), true).await,
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
        cw.in_flight = cloudwatch::tally(&batch);
        let result = tokio::time::timeout_at(deadline, cw.dest.put(&batch)).await;
        cw.in_flight = Tally::default();
        match result {
            Ok(Ok(rejected)) => {
                cw.backoff.succeed();
                let (mut ok, mut bad) = (Tally::default(), Tally::default());
                let (mut records, mut bytes) = (0, 0);
                for (i, p) in batch.iter().enumerate() {
                    if rejected.contains(i) {
                        bad.add(p.dest, p.samples);
                    } else {
                        ok.add(p.dest, p.samples);
                        records += 1;
                        bytes += p.line.len() as u64;
                    }
                }
                if bad.total() > 0 {
                    tracing::warn!(
                        ?rejected,
                        "CloudWatch Logs rejected fallback events (too old, too new or expired)"
                    );
                }
                t.fell_back(&ok);
                t.drop_tally(PointDrop::FallbackRejected, &bad);
                t.forward.fallback_records.fetch_add(records, Relaxed);
                t.forward.fallback_bytes.fetch_add(bytes, Relaxed);
            }
            Ok(Err(CallError::NotFound)) if !created => {
                created = true;
                let dropped = cw.buffer.put_back(batch);
                t.drop_tally(PointDrop::FallbackOverflow, &dropped);
                if let Err(CallError::Retry(e) | CallError::Refused(e)) = cw.dest.create().await {
                    tracing::warn!(error = %e, "cannot create the fallback log group or stream");
                    cw.backoff.fail(Instant::now());
                }
            }
            Ok(Err(CallError::Refused(e))) => {
                tracing::error!(error = %e, events = batch.len(), "CloudWatch Logs refused a fallback batch; dropping it");
                t.drop_tally(PointDrop::FallbackRejected, &cloudwatch::tally(&batch));
            }
            Ok(Err(e)) => {
                let msg = match e {
                    CallError::Retry(m) | CallError::Refused(m) => m,
                    CallError::NotFound => "log group or stream not found".to_owned(),
                };
                tracing::warn!(error = %msg, "PutLogEvents failed; will retry");
                let dropped = cw.buffer.put_back(batch);
                t.drop_tally(PointDrop::FallbackOverflow, &dropped);
                cw.backoff.fail(Instant::now());
            }
            Err(_elapsed) => {
                let dropped = cw.buffer.put_back(batch);
                t.drop_tally(PointDrop::FallbackOverflow, &dropped);
                return;
            }
        }
    }
}

/// The fallback running as a task ([`spawn`]). Awaiting it waits for the task to end (every sender of
/// its channel dropped, then a last flush); [`FallbackTask::finish`] bounds that by a deadline.
#[derive(Debug)]
pub struct FallbackTask {
    handle: JoinHandle<()>,
    /// Hands the task the shutdown deadline.
    stop_by: Option<oneshot::Sender<Instant>>,
}

impl FallbackTask {
    /// Let the task finish by `deadline`: it writes what is still in its channel and pushes its records
    /// out, waiting no later than `deadline`; if it is still running then, it is aborted. Either way,
    /// what its sink has not written is counted as `shutdown_deadline` when this returns. Call it once
    /// every sender of the channel is dropped.
    pub async fn finish(mut self, deadline: Instant) {
        if let Some(tx) = self.stop_by.take() {
            let _ = tx.send(deadline);
        }
        if tokio::time::timeout_at(deadline, &mut self.handle)
            .await
            .is_err()
        {
            tracing::warn!("the fallback did not finish before the shutdown deadline");
            self.handle.abort();
            // The aborted task drops its `Fallback`, which counts what it still held.
            let _ = (&mut self.handle).await;
        }
    }
}

impl Future for FallbackTask {
    type Output = Result<(), JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle).poll(cx)
    }
}

/// Run the fallback as a task: write payloads as they arrive on `rx`, push records out every
/// `FLUSH_EVERY` or as soon as a full CloudWatch batch waits, and when `rx` closes (every sender
/// dropped) flush everything within `FINAL_FLUSH_BUDGET` (or by the deadline that
/// [`FallbackTask::finish`] gives) and return.
pub fn spawn(fb: Fallback, rx: mpsc::Receiver<Payload>) -> FallbackTask {
    let (stop_tx, mut stop_rx) = oneshot::channel::<Instant>();
    let mut inbox = Inbox {
        fb,
        rx,
        batch: Vec::with_capacity(64),
    };
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut told = false;
        loop {
            let Inbox { fb, rx, batch } = &mut inbox;
            tokio::select! {
                n = rx.recv_many(batch, 64) => {
                    if n == 0 {
                        break;
                    }
                    // One at a time, so an abort finds the rest still in `batch` (and counts it).
                    while !batch.is_empty() {
                        let p = batch.remove(0);
                        fb.write_payloads(vec![p]).await;
                        if fb.wants_flush() {
                            fb.flush(fb.within(PERIODIC_FLUSH_BUDGET)).await;
                        }
                    }
                }
                _ = tick.tick() => fb.flush(fb.within(PERIODIC_FLUSH_BUDGET)).await,
                stop_by = &mut stop_rx, if !told => {
                    told = true;
                    if let Ok(at) = stop_by {
                        fb.set_deadline(at);
                    }
                }
            }
        }
        let fb = &mut inbox.fb;
        fb.flush(fb.within(FINAL_FLUSH_BUDGET)).await;
    });
    FallbackTask {
        handle,
        stop_by: Some(stop_tx),
    }
}

/// What the [`spawn`]ed task owns. If the task is aborted (the shutdown deadline), the payloads still in
/// its channel or its current batch are counted as `shutdown_deadline` here, and the fallback counts
/// what its sink holds.
struct Inbox {
    fb: Fallback,
    rx: mpsc::Receiver<Payload>,
    batch: Vec<Payload>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.rx.close();
        let mut lost = Tally::default();
        for p in self.batch.drain(..) {
            lost.add(p.destination, p.samples);
        }
        while let Ok(p) = self.rx.try_recv() {
            lost.add(p.destination, p.samples);
        }
        self.fb
            .telemetry
            .drop_tally(PointDrop::ShutdownDeadline, &lost);
    }
}

/// Where the stdout sink writes: a duplicate of descriptor 1, written without Rust's `Stdout` lock and
/// buffer (a write blocked on a full pipe then holds nothing the process needs at exit); `Stdout` itself
/// when descriptor 1 cannot be duplicated.
fn stdout_writer() -> Box<dyn std::io::Write + Send> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stdout()),
    }
}

impl Drop for Fallback {
    fn drop(&mut self) {
        let held = match &mut self.sink {
            // The stdout writer counts what it still holds when it drops.
            Sink::Off | Sink::Stdout(_) => Tally::default(),
            #[cfg(feature = "cloudwatch")]
            Sink::CloudWatch(cw) => {
                let mut held = cw.buffer.clear();
                held.merge(&std::mem::take(&mut cw.in_flight));
                held
            }
        };
        self.telemetry
            .drop_tally(PointDrop::ShutdownDeadline, &held);
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
