//! The aggregator: parsed DogStatsD in, closed buckets out as series, sketches, events and service checks.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::bucket::{
    BUCKET_SECS, Bucket, HistogramShape, Identity, TIMESTAMPED_POINT_LIMIT, Value, bucket_start,
    emit,
};
use super::context::{Class, Context, Contexts, LineKey, TagBuf};
use crate::config::{AggregateConfig, MetricMapping};
use crate::dogstatsd::{
    self, Message, MetricKind, MetricSample, MetricValue, PackedValues, ParseError, Tags,
};
use crate::model::{self, Flush};
use crate::telemetry::{PointDrop, Telemetry};

/// A context that received nothing for this long after its last bucket closed is forgotten (the Agent's
/// `dogstatsd_context_expiry_seconds` default).
const CONTEXT_EXPIRY_SECS: i64 = 20;

/// Events plus service checks held for one flush; more are dropped and counted.
const PENDING_EVENTS_LIMIT: usize = 10_000;

/// DogStatsD clients' own telemetry, dropped in Lambda mapping.
const CLIENT_TELEMETRY_PREFIX: &str = "datadog.dogstatsd.client.";

/// Names the namespace does not prefix (the Agent's default `statsd_metric_namespace_blacklist`).
const NAMESPACE_EXEMPT: [&str; 21] = [
    "datadog.agent",
    "datadog.dogstatsd",
    "datadog.process",
    "datadog.trace_agent",
    "datadog.tracer",
    "activemq",
    "activemq_58",
    "airflow",
    "cassandra",
    "confluent",
    "hazelcast",
    "hive",
    "ignite",
    "jboss",
    "jvm",
    "kafka",
    "presto",
    "sidekiq",
    "solr",
    "tomcat",
    "runtime",
];

/// Tags the Agent turns into metadata and removes (`enrich.go`); offpath has no use for the metadata.
const METADATA_TAG_PREFIXES: [&str; 3] = [
    "dd.internal.entity_id:",
    "dd.internal.card:",
    "dd.internal.jmx_check_name:",
];

/// Counters for one packet (or one message), added to the shared telemetry once.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    dropped: [u64; PointDrop::ALL.len()],
    metric_lines: u64,
    event_lines: u64,
    service_check_lines: u64,
    parse_errors: [u64; ParseError::ALL.len()],
}

impl Tally {
    fn drop_points(&mut self, reason: PointDrop, n: u64) {
        self.dropped[reason as usize] += n;
    }

    fn commit(&self, t: &Telemetry) {
        let add = |c: &std::sync::atomic::AtomicU64, n: u64| {
            if n > 0 {
                c.fetch_add(n, Relaxed);
            }
        };
        add(&t.points.received, self.received);
        for (c, &n) in t.points.dropped.iter().zip(&self.dropped) {
            add(c, n);
        }
        add(&t.parse.metrics, self.metric_lines);
        add(&t.parse.events, self.event_lines);
        add(&t.parse.service_checks, self.service_check_lines);
        for (c, &n) in t.parse.errors.iter().zip(&self.parse_errors) {
            add(c, n);
        }
    }
}

/// Aggregates DogStatsD into 10 s buckets per context with the Datadog Agent's semantics (DESIGN.md §2).
///
/// Memory is bounded: at most `context_limit` live contexts (new ones beyond are dropped and counted), contexts
/// expire 20 s after their last bucket closed, a set remembers at most 16,384 members per bucket, a histogram
/// keeps 1,024 exact samples per bucket and then folds into a 4,096-bin sketch, and at most 10,000 events and
/// service checks wait for a flush.
#[derive(Debug)]
pub struct Aggregator {
    /// Prefix with its trailing `.`, or empty.
    namespace: String,
    /// Sorted and de-duplicated; kept out of the contexts and merged in at flush.
    global_tags: Vec<String>,
    hostname: String,
    mapping: MetricMapping,
    shape: HistogramShape,
    contexts: Contexts,
    events: Vec<model::Event>,
    service_checks: Vec<model::ServiceCheck>,
    telemetry: Arc<Telemetry>,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(cfg: &AggregateConfig, telemetry: Arc<Telemetry>) -> Self {
        let mut global_tags: Vec<String> =
            cfg.tags.iter().filter(|t| !t.is_empty()).cloned().collect();
        global_tags.sort_unstable();
        global_tags.dedup();
        Self {
            namespace: cfg.namespace.clone(),
            global_tags,
            hostname: cfg.hostname.clone(),
            mapping: cfg.mapping,
            shape: HistogramShape::new(&cfg.histogram_aggregates, &cfg.histogram_percentiles),
            contexts: Contexts::new(cfg.context_limit.get()),
            events: Vec::new(),
            service_checks: Vec::new(),
            telemetry,
        }
    }

    /// Insert one parsed message received at `now` (unix seconds), counting received and dropped points.
    pub fn insert(&mut self, msg: &Message<'_>, now: i64) {
        let mut tally = Tally::default();
        self.insert_counted(msg, now, &mut tally);
        tally.commit(&self.telemetry);
    }

    /// Number of live contexts.
    pub fn context_count(&self) -> usize {
        self.contexts.len()
    }

    /// Emit every bucket closed at `now` (`start + 10 <= now`), or every bucket when `final_flush`, plus all
    /// timestamped points, events and service checks; forget contexts idle for 20 s.
    pub fn flush(&mut self, now: i64, final_flush: bool) -> Flush {
        let mut flush = Flush {
            events: std::mem::take(&mut self.events),
            service_checks: std::mem::take(&mut self.service_checks),
            ..Flush::default()
        };
        let (globals, hostname, shape) = (&self.global_tags, &self.hostname, &self.shape);
        self.contexts.retain(|ctx| {
            let closed = ctx
                .buckets
                .iter()
                .take_while(|b| final_flush || b.ts.saturating_add(BUCKET_SECS) <= now)
                .count();
            if closed > 0 {
                let id = identity(ctx, globals, hostname);
                emit(
                    ctx.class,
                    id,
                    ctx.buckets.drain(..closed),
                    shape,
                    &mut flush.series,
                    &mut flush.sketches,
                );
            }
            !ctx.buckets.is_empty()
                || ctx.last_bucket + BUCKET_SECS + CONTEXT_EXPIRY_SECS > now && !final_flush
        });
        flush
    }

    /// Heap bytes the aggregator holds for its contexts' identities and tables (buckets not included); for
    /// benchmarks and the status page.
    pub fn context_bytes(&self) -> usize {
        self.contexts.overhead_bytes() + self.contexts.iter().map(Context::text_len).sum::<usize>()
    }

    fn insert_counted(&mut self, msg: &Message<'_>, now: i64, tally: &mut Tally) {
        match msg {
            Message::Metric(m) => self.insert_metric(m, now, tally),
            Message::Event(e) => self.insert_event(e, now, tally),
            Message::ServiceCheck(sc) => self.insert_service_check(sc, now, tally),
        }
    }

    fn insert_metric(&mut self, m: &MetricSample<'_>, now: i64, tally: &mut Tally) {
        let n = value_count(&m.value);
        tally.received += n;
        let lambda = self.mapping == MetricMapping::LambdaDistribution;
        if lambda && m.name.starts_with(CLIENT_TELEMETRY_PREFIX) {
            tally.drop_points(PointDrop::ClientTelemetry, n);
            return;
        }
        let class = match (m.timestamp.is_some(), m.kind) {
            (true, MetricKind::Count) => Class::TimestampedCount,
            (true, MetricKind::Gauge) => Class::TimestampedGauge,
            (true, _) => {
                tally.drop_points(PointDrop::TimestampUnsupported, n);
                return;
            }
            (false, MetricKind::Gauge) => Class::Gauge,
            (false, MetricKind::Set) => Class::Set,
            (false, MetricKind::Count) if !lambda => Class::Count,
            (false, MetricKind::Histogram | MetricKind::Timer) if !lambda => Class::Histogram,
            (false, _) => Class::Distribution,
        };
        let finite = if class == Class::Set {
            n
        } else {
            numbers(&m.value).filter(|v| v.is_finite()).count() as u64
        };
        if finite < n {
            tally.drop_points(PointDrop::NonFinite, n - finite);
        }
        if finite == 0 {
            return;
        }
        let key = self.line_key(class, m.name, tags(&m.tags));
        let now_bucket = bucket_start(now);
        let Ok(ctx) = self
            .contexts
            .get_or_insert(&key, &self.namespace, now_bucket)
        else {
            tally.drop_points(PointDrop::ContextLimit, finite);
            return;
        };
        ctx.last_bucket = ctx.last_bucket.max(now_bucket);
        let timestamped = matches!(class, Class::TimestampedCount | Class::TimestampedGauge);
        let bucket = bucket_mut(ctx, if timestamped { i64::MIN } else { now_bucket });
        match &mut bucket.value {
            Value::Set(members) => {
                let added = match m.value {
                    MetricValue::Set(member) => members.insert(member),
                    MetricValue::Single(v) => members.insert(&v.to_string()),
                    MetricValue::Packed(p) => members.insert(p.raw),
                };
                if added {
                    bucket.samples += 1;
                } else {
                    tally.drop_points(PointDrop::AggregateLimit, 1);
                }
            }
            Value::Points(points) => {
                let ts = m.timestamp.unwrap_or(now);
                for v in numbers(&m.value).filter(|v| v.is_finite()) {
                    if points.0.len() < TIMESTAMPED_POINT_LIMIT {
                        points.0.push((ts, v));
                        bucket.samples += 1;
                    } else {
                        tally.drop_points(PointDrop::AggregateLimit, 1);
                    }
                }
            }
            value => {
                for v in numbers(&m.value).filter(|v| v.is_finite()) {
                    value.add(v, m.sample_rate);
                }
                bucket.samples += finite;
            }
        }
    }

    fn insert_event(&mut self, e: &dogstatsd::Event<'_>, now: i64, tally: &mut Tally) {
        tally.received += 1;
        if self.events.len() + self.service_checks.len() >= PENDING_EVENTS_LIMIT {
            tally.drop_points(PointDrop::AggregateLimit, 1);
            return;
        }
        let (host, tags) = self.owned_tags(&e.tags, e.hostname);
        self.events.push(model::Event {
            title: e.title.clone().into_owned(),
            text: e.text.clone().into_owned(),
            ts: e.timestamp.unwrap_or(now),
            priority: e.priority,
            alert_type: e.alert_type,
            aggregation_key: e.aggregation_key.unwrap_or_default().to_owned(),
            source_type_name: e.source_type_name.unwrap_or_default().to_owned(),
            host,
            tags,
        });
    }

    fn insert_service_check(
        &mut self,
        sc: &dogstatsd::ServiceCheck<'_>,
        now: i64,
        tally: &mut Tally,
    ) {
        tally.received += 1;
        if self.events.len() + self.service_checks.len() >= PENDING_EVENTS_LIMIT {
            tally.drop_points(PointDrop::AggregateLimit, 1);
            return;
        }
        let (host, tags) = self.owned_tags(&sc.tags, sc.hostname);
        self.service_checks.push(model::ServiceCheck {
            check: sc.name.to_owned(),
            status: sc.status,
            ts: sc.timestamp.unwrap_or(now),
            message: sc
                .message
                .as_ref()
                .map(|m| m.clone().into_owned())
                .unwrap_or_default(),
            host,
            tags,
        });
    }

    /// The context key of a metric line: special tags out, tags sorted and de-duplicated, global tags out (they
    /// are the same for every context and come back at flush).
    fn line_key<'a>(
        &self,
        class: Class,
        name: &'a str,
        tags: impl Iterator<Item = &'a str>,
    ) -> LineKey<'a> {
        let mut buf = TagBuf::new();
        let mut host = None;
        for t in tags {
            match special_tag(t) {
                Special::Host(h) => host = Some(h),
                Special::Metadata => {}
                Special::No => buf.push(t),
            }
        }
        buf.sort_unstable();
        buf.dedup();
        if !self.global_tags.is_empty() {
            let globals = &self.global_tags;
            buf.retain(|t| globals.binary_search_by(|g| g.as_str().cmp(t)).is_err());
        }
        LineKey {
            class,
            prefixed: !self.namespace.is_empty()
                && !NAMESPACE_EXEMPT.iter().any(|p| name.starts_with(p)),
            name,
            host: host.filter(|h| *h != self.hostname),
            tags: buf,
        }
    }

    /// Host and tags of an event or service check: `h:` wins over a `host:` tag, which wins over the configured
    /// host; global tags added; sorted and de-duplicated.
    fn owned_tags(&self, tags: &Tags<'_>, hostname: Option<&str>) -> (String, Vec<String>) {
        let key = self.line_key(Class::Gauge, "", self::tags(tags));
        let host = hostname
            .or(key.host)
            .unwrap_or(self.hostname.as_str())
            .to_owned();
        let mut out: Vec<String> = key.tags.iter().map(|t| (*t).to_owned()).collect();
        out.extend(self.global_tags.iter().cloned());
        out.sort_unstable();
        (host, out)
    }
}

/// A context's name, host and tags (its own merged with the global ones) as shipped.
fn identity(ctx: &Context, globals: &[String], hostname: &str) -> Identity {
    let mut tags = Vec::with_capacity(globals.len() + 8);
    let mut own = ctx.tags().peekable();
    let mut global = globals.iter().map(String::as_str).peekable();
    loop {
        let next = match (own.peek(), global.peek()) {
            (Some(a), Some(b)) if a <= b => own.next(),
            (Some(_), Some(_)) | (None, Some(_)) => global.next(),
            (Some(_), None) => own.next(),
            (None, None) => break,
        };
        if let Some(t) = next {
            tags.push(t.to_owned());
        }
    }
    Identity {
        name: ctx.name().to_owned(),
        tags,
        host: ctx.host().unwrap_or(hostname).to_owned(),
    }
}

/// The context's bucket starting at `ts`, created in order when missing.
fn bucket_mut(ctx: &mut Context, ts: i64) -> &mut Bucket {
    let class = ctx.class;
    let buckets = &mut ctx.buckets;
    let at = buckets.iter().rposition(|b| b.ts <= ts);
    let i = match at {
        Some(i) if buckets[i].ts == ts => i,
        other => {
            let i = other.map_or(0, |i| i + 1);
            buckets.insert(
                i,
                Bucket {
                    ts,
                    samples: 0,
                    value: Value::new(class),
                },
            );
            i
        }
    };
    &mut buckets[i]
}

enum Special<'a> {
    Host(&'a str),
    Metadata,
    No,
}

fn special_tag(t: &str) -> Special<'_> {
    if let Some(h) = t.strip_prefix("host:") {
        Special::Host(h)
    } else if t.starts_with("dd.internal.")
        && METADATA_TAG_PREFIXES.iter().any(|p| t.starts_with(p))
    {
        Special::Metadata
    } else {
        Special::No
    }
}

/// How many values a line carries (a set member counts 1).
fn value_count(v: &MetricValue<'_>) -> u64 {
    match v {
        MetricValue::Single(_) | MetricValue::Set(_) => 1,
        MetricValue::Packed(p) => packed(*p).count() as u64,
    }
}

/// The numbers of a line (none for a set member).
fn numbers<'a>(v: &MetricValue<'a>) -> impl Iterator<Item = f64> + 'a {
    let (single, packed) = match *v {
        MetricValue::Single(x) => (Some(x), None),
        MetricValue::Packed(p) => (None, Some(packed(p))),
        MetricValue::Set(_) => (None, None),
    };
    single.into_iter().chain(packed.into_iter().flatten())
}

fn tags<'a>(t: &Tags<'a>) -> impl Iterator<Item = &'a str> + 'a {
    t.raw.split(',').filter(|t| !t.is_empty())
}

fn packed<'a>(p: PackedValues<'a>) -> impl Iterator<Item = f64> + 'a {
    p.raw
        .split(':')
        .filter(|v| !v.is_empty())
        .filter_map(|v| v.parse().ok())
}
