//! The aggregator: parsed DogStatsD in, closed buckets out as series, sketches, events and service checks.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release};

use super::bucket::{
    BUCKET_SECS, HistogramShape, Identity, TIMESTAMPED_POINT_LIMIT, Value, bucket_start, emit,
};
use super::cardinality::NameStats;
use super::context::{
    Budget, Class, Context, Contexts, LineKey, Refused, TagBuf, canonicalize, tag_hash,
};
use super::raw::{LOOK_AHEAD, Spelling};
use crate::config::{AggregateConfig, MetricMapping};
use crate::dogstatsd::{
    self, Message, MetricKind, MetricSample, MetricValue, Origin, ParseError, Tags,
};
use crate::enrich::{Filter, Verdict};
use crate::host::HostInfo;
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
        // Drops first, then the points received with Release: a reader that loads `received` with
        // Acquire and then the drops sees every drop of the points it counts (`/status` does).
        for (c, &n) in t.points.dropped.iter().zip(&self.dropped) {
            add(c, n);
        }
        if self.received > 0 {
            t.points.received.fetch_add(self.received, Release);
        }
        add(&t.parse.metrics, self.metric_lines);
        add(&t.parse.events, self.event_lines);
        add(&t.parse.service_checks, self.service_check_lines);
        for (c, &n) in t.parse.errors.iter().zip(&self.parse_errors) {
            add(c, n);
        }
    }
}

/// Live contexts in one aggregator from which a packet's lines are inserted looking ahead
/// ([`Aggregator::insert_packet`]). Below it the table stays in the core's own cache and looking ahead only
/// adds work; measured on a 2 MiB-L2 core: no gain at 20,000 contexts, 1.5 times the lines at 35,000.
const LOOK_AHEAD_CONTEXTS: usize = 32_768;

/// Aggregates DogStatsD into 10 s buckets per context with the Datadog Agent's semantics (see
/// `docs/protocols.md`, "What the Agent ships per type").
///
/// Memory is bounded: at most `context_limit` live contexts (new ones beyond are dropped and counted), contexts
/// expire 20 s after their last bucket closed, a set remembers at most 16,384 members per bucket, a histogram
/// keeps 1,024 exact samples per bucket and then folds into a 4,096-bin sketch, and at most 10,000 events and
/// service checks wait for a flush.
#[derive(Debug)]
pub struct Aggregator {
    /// Sorted and de-duplicated; kept out of the contexts and merged in at flush.
    global_tags: Vec<String>,
    /// The global tags' hashes, sorted, to take them out of a line's tags quickly.
    global_hashes: Vec<u64>,
    /// The default host: read when a context is flushed, so a hostname resolved after start-up reaches
    /// the points received before.
    host: Arc<HostInfo>,
    mapping: MetricMapping,
    shape: HistogramShape,
    contexts: Contexts,
    events: Vec<model::Event>,
    service_checks: Vec<model::ServiceCheck>,
    telemetry: Arc<Telemetry>,
    /// [`AggregateConfig::own_names`].
    own_names: Vec<String>,
    /// The mapper and the blocklist (`AggregateConfig::filter`); `None` when neither is configured.
    filter: Option<Box<Filter>>,
    /// The default host the remembered spellings were resolved with ([`super::raw`]): a line's `host:` tag
    /// equal to it is no host, so when it changes the spellings are forgotten.
    spelled_host: String,
    /// Per-name counts for the cardinality view (`AggregateConfig::context_stats`).
    names: Option<Box<NameStats>>,
    /// [`LOOK_AHEAD_CONTEXTS`]; tests lower it to look ahead from the first line.
    look_ahead_from: usize,
}

/// A distribution value produced inside the process rather than received over DogStatsD (the Lambda
/// extension's enhanced metrics): aggregated, tagged, counted, delivered and fallen back like a received `d`
/// value.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnPoint {
    /// Metric name, used as is (no namespace).
    pub name: String,
    /// The value; a NaN or an infinity is dropped and counted like a received one.
    pub value: f64,
    /// Tags separated by commas, as in a DogStatsD line (`cold_start:true,init_type:on-demand`); the global tags
    /// are added at flush as to every metric.
    pub tags: String,
    /// When the value was measured (unix seconds): the 10 s bucket it goes in.
    pub ts: i64,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(cfg: &AggregateConfig, telemetry: Arc<Telemetry>) -> Self {
        Self::with_budget(cfg, telemetry, Budget::new(cfg.context_limit.get()))
    }

    /// `n` (at least one) empty aggregators for the shards of one stream: each takes the contexts routed to it
    /// ([`Aggregator::route`]), and together they hold at most `context_limit` live contexts (the limit is
    /// one shared count, touched only when a context is made or forgotten).
    pub fn sharded(cfg: &AggregateConfig, telemetry: &Arc<Telemetry>, n: usize) -> Vec<Self> {
        let budget = Budget::new(cfg.context_limit.get());
        (0..n.max(1))
            .map(|_| Self::with_budget(cfg, Arc::clone(telemetry), Arc::clone(&budget)))
            .collect()
    }

    fn with_budget(cfg: &AggregateConfig, telemetry: Arc<Telemetry>, budget: Arc<Budget>) -> Self {
        let mut global_tags: Vec<String> =
            cfg.tags.iter().filter(|t| !t.is_empty()).cloned().collect();
        global_tags.sort_unstable();
        global_tags.dedup();
        let mut global_hashes: Vec<u64> = global_tags.iter().map(|t| tag_hash(t)).collect();
        global_hashes.sort_unstable();
        let shape = HistogramShape::new(&cfg.histogram_aggregates, &cfg.histogram_percentiles);
        if shape.is_empty() && cfg.mapping == MetricMapping::Agent {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "DD_HISTOGRAM_AGGREGATES and DD_HISTOGRAM_PERCENTILES are both empty: histogram and \
                     timer values (h, ms) ship nothing and are dropped, counted as \
                     points.dropped.histogram_no_output; set either key to ship them"
                );
            });
        }
        let names = cfg
            .context_stats
            .then(|| Box::new(NameStats::new(&telemetry.contexts, cfg.context_limit.get())));
        Self {
            global_tags,
            global_hashes,
            host: HostInfo::fixed(&cfg.hostname),
            mapping: cfg.mapping,
            shape,
            contexts: Contexts::sharing(cfg.namespace.clone(), budget),
            events: Vec::new(),
            service_checks: Vec::new(),
            telemetry,
            own_names: cfg.own_names.clone(),
            filter: Filter::new(&cfg.filter, &cfg.namespace),
            spelled_host: cfg.hostname.clone(),
            names,
            look_ahead_from: LOOK_AHEAD_CONTEXTS,
        }
    }

    /// Look ahead from the first line on, whatever the number of contexts (to test that path).
    #[cfg(test)]
    pub(crate) fn look_ahead_always(&mut self) {
        self.look_ahead_from = 0;
    }

    /// Parse a packet and insert every line, counting lines per kind, rejected lines per reason, received and
    /// dropped points into the telemetry once for the whole packet.
    pub fn insert_packet(&mut self, packet: &[u8], now: i64) {
        self.watch_host();
        let mut tally = Tally::default();
        if self.contexts.len() < self.look_ahead_from {
            for line in dogstatsd::parse_packet(packet) {
                match line {
                    Ok(Message::Metric(m)) => {
                        tally.metric_lines += 1;
                        self.insert_metric(&m, now, false, &mut tally);
                    }
                    other => self.insert_other(other, now, &mut tally),
                }
            }
        } else {
            self.insert_looking_ahead(packet, now, &mut tally);
        }
        tally.commit(&self.telemetry);
    }

    /// [`Aggregator::insert_packet`] [`LOOK_AHEAD`] metric lines behind the parser: each line is parsed and
    /// its spelling hashed that many lines before it is inserted, so that what it will need is loading
    /// meanwhile ([`Contexts::look_ahead`], docs/architecture.md, "Contexts"). The lines wait their turn in
    /// a ring of slots. Events and service checks go straight in: they keep their order among themselves,
    /// metric lines among theirs, which is all the aggregation depends on.
    fn insert_looking_ahead(&mut self, packet: &[u8], now: i64, tally: &mut Tally) {
        const RING: usize = LOOK_AHEAD + 1;
        let mut slots: [Option<MetricSample<'_>>; RING] = Default::default();
        let mut parsed = 0;
        for line in dogstatsd::parse_packet(packet) {
            match line {
                Ok(Message::Metric(m)) => {
                    tally.metric_lines += 1;
                    let ahead = self.class_of(&m).ok().map(|class| Spelling {
                        class,
                        own: false,
                        name: m.name,
                        tags: m.tags.raw,
                    });
                    self.contexts.look_ahead(ahead.as_ref());
                    slots[parsed % RING] = Some(m);
                    parsed += 1;
                    // The line LOOK_AHEAD before this one, in the slot written next.
                    if parsed > LOOK_AHEAD
                        && let Some(due) = &slots[parsed % RING]
                    {
                        self.insert_metric(due, now, false, tally);
                    }
                }
                other => self.insert_other(other, now, tally),
            }
        }
        // The last lines, parsed but not yet inserted.
        for _ in 0..LOOK_AHEAD {
            self.contexts.look_ahead(None);
            parsed += 1;
            if parsed > LOOK_AHEAD
                && let Some(due) = &slots[parsed % RING]
            {
                self.insert_metric(due, now, false, tally);
            }
        }
        // What was looked ahead at points into this packet only.
        self.contexts.forget_ahead();
    }

    /// A line of a packet that is not a metric: an event, a service check or a parse error.
    fn insert_other(&mut self, line: Result<Message<'_>, ParseError>, now: i64, tally: &mut Tally) {
        match line {
            Ok(msg) => {
                match msg {
                    Message::Metric(_) => tally.metric_lines += 1,
                    Message::Event(_) => tally.event_lines += 1,
                    Message::ServiceCheck(_) => tally.service_check_lines += 1,
                }
                self.insert_counted(&msg, now, tally);
            }
            Err(e) => tally.parse_errors[e.index()] += 1,
        }
    }

    /// Insert one parsed message received at `now` (unix seconds), counting received and dropped points.
    pub fn insert(&mut self, msg: &Message<'_>, now: i64) {
        self.watch_host();
        let mut tally = Tally::default();
        self.insert_counted(msg, now, &mut tally);
        tally.commit(&self.telemetry);
    }

    /// Forget the remembered spellings when the default host changed since they were made.
    fn watch_host(&mut self) {
        let hostname = self.host.hostname();
        if self.spelled_host != hostname {
            hostname.clone_into(&mut self.spelled_host);
            self.contexts.spellings.clear();
        }
    }

    /// Take the default host from `host` (the sidecar's resolved hostname) instead of `DD_HOSTNAME`.
    pub fn set_host(&mut self, host: Arc<HostInfo>) {
        self.host = host;
    }

    /// How lines must be spread over aggregators made by [`Aggregator::sharded`] so that each context
    /// reaches exactly one (it knows the global tags, which contexts leave out).
    pub fn route(&self) -> crate::ingest::Route {
        crate::ingest::Route::new(&self.global_tags)
    }

    /// Number of live contexts.
    pub fn context_count(&self) -> usize {
        self.contexts.len()
    }

    /// Emit every bucket closed at `now` (`start + 10 <= now`), or every bucket when `final_flush`, plus all
    /// timestamped points, events and service checks; forget contexts idle for 20 s.
    ///
    /// A final flush before the end of the open bucket ships what it holds so far; samples arriving later in the
    /// same 10 s ship at a later flush with the same timestamp (sketches merge at the intake; a second RATE or
    /// GAUGE point for the same second replaces the first there).
    pub fn flush(&mut self, now: i64, final_flush: bool) -> Flush {
        let mut flush = Flush {
            events: std::mem::take(&mut self.events),
            service_checks: std::mem::take(&mut self.service_checks),
            ..Flush::default()
        };
        let (globals, hostname, shape) = (&self.global_tags, self.host.hostname(), &self.shape);
        let names = &mut self.names;
        self.contexts.retain(|ctx| {
            if ctx.has_due(now, final_flush) {
                let id = identity(ctx, globals, hostname);
                let due = ctx.take_due(now, final_flush);
                if let Some(n) = names.as_deref_mut() {
                    n.flushed(ctx.name(), due.iter().map(|b| u64::from(b.samples)).sum());
                }
                emit(
                    ctx.class,
                    id,
                    due.into_iter(),
                    shape,
                    &mut flush.series,
                    &mut flush.sketches,
                );
            }
            let keep =
                !ctx.is_empty() || ctx.last_bucket() + BUCKET_SECS + CONTEXT_EXPIRY_SECS > now;
            if !keep && let Some(n) = names.as_deref_mut() {
                n.removed(ctx.name());
            }
            keep
        });
        if let Some(n) = self.names.as_deref_mut() {
            n.publish(&self.telemetry.contexts, self.contexts.len(), now);
        }
        flush
    }

    /// Heap bytes held for the live contexts: the table, their identities and open buckets (not what sets,
    /// histograms and sketches hold); for benchmarks and the status page.
    pub fn context_bytes(&self) -> usize {
        self.contexts.heap_bytes()
    }

    /// Count points lost after a flush left the aggregator (its receiver was gone).
    pub(super) fn count_lost(&self, n: u64, reason: PointDrop) {
        self.telemetry.points.drop_points(reason, n);
    }

    fn insert_counted(&mut self, msg: &Message<'_>, now: i64, tally: &mut Tally) {
        match msg {
            Message::Metric(m) => self.insert_metric(m, now, false, tally),
            Message::Event(e) => self.insert_event(e, now, tally),
            Message::ServiceCheck(sc) => self.insert_service_check(sc, now, tally),
        }
    }

    /// Insert a distribution value produced inside the process ([`OwnPoint`]) into the bucket of its `ts`:
    /// counted in the ledger like a received `d` value, never prefixed with the namespace, never dropped as
    /// one of the `own_names`.
    pub fn insert_own(&mut self, point: &OwnPoint) {
        let sample = MetricSample {
            name: &point.name,
            kind: MetricKind::Distribution,
            value: MetricValue::Single(point.value),
            sample_rate: 1.0,
            tags: Tags { raw: &point.tags },
            timestamp: None,
            origin: Origin::default(),
        };
        self.watch_host();
        let mut tally = Tally::default();
        self.insert_metric(&sample, point.ts, true, &mut tally);
        tally.commit(&self.telemetry);
    }

    /// The class of a metric line's context, or why its points are dropped.
    fn class_of(&self, m: &MetricSample<'_>) -> Result<Class, PointDrop> {
        let lambda = self.mapping == MetricMapping::LambdaDistribution;
        Ok(match (m.timestamp.is_some(), m.kind) {
            (true, MetricKind::Count) => Class::TimestampedCount,
            (true, MetricKind::Gauge) => Class::TimestampedGauge,
            (true, _) => return Err(PointDrop::TimestampUnsupported),
            (false, MetricKind::Gauge) => Class::Gauge,
            (false, MetricKind::Set) => Class::Set,
            (false, MetricKind::Count) if !lambda => Class::Count,
            (false, MetricKind::Histogram | MetricKind::Timer) if !lambda => {
                if self.shape.is_empty() {
                    return Err(PointDrop::HistogramNoOutput);
                }
                Class::Histogram
            }
            (false, _) => Class::Distribution,
        })
    }

    /// Insert one metric line received (or, when `own`, produced) at `now`.
    fn insert_metric(&mut self, m: &MetricSample<'_>, now: i64, own: bool, tally: &mut Tally) {
        let n = match m.value {
            MetricValue::Single(_) | MetricValue::Set(_) => 1,
            MetricValue::Packed(p) => p.len() as u64,
        };
        tally.received += n;
        let lambda = self.mapping == MetricMapping::LambdaDistribution;
        if !own {
            if lambda && m.name.starts_with(CLIENT_TELEMETRY_PREFIX) {
                tally.drop_points(PointDrop::ClientTelemetry, n);
                return;
            }
            if self.own_names.iter().any(|own| own == m.name) {
                tally.drop_points(PointDrop::OwnMetric, n);
                return;
            }
        }
        // Mapping, then the namespace (in `line_key`), then the blocklist, as the Agent does.
        let verdict = match self.filter.as_deref_mut() {
            Some(f) if !own => {
                let ns = self.contexts.namespace();
                f.check(m.name, |name| namespaced(ns, name))
            }
            _ => Verdict::Keep,
        };
        let (name, mapped_tags): (&str, &[String]) = match verdict {
            Verdict::Keep => (m.name, &[]),
            Verdict::Mapped(slot) => self
                .filter
                .as_deref()
                .and_then(|f| f.mapped(slot))
                .unwrap_or((m.name, &[])),
            Verdict::Drop => {
                tally.drop_points(PointDrop::Filtered, n);
                return;
            }
        };
        let class = match self.class_of(m) {
            Ok(class) => class,
            Err(reason) => {
                tally.drop_points(reason, n);
                return;
            }
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
        // The spelling is the name as sent: the mapping is a function of it, so it names one context.
        let line_tags = tags(&m.tags).chain(mapped_tags.iter().map(String::as_str));
        let now_bucket = bucket_start(now);
        let before = self.contexts.len();
        let spelling = Spelling {
            class,
            own,
            name: m.name,
            tags: m.tags.raw,
        };
        let (globals, global_hashes, hostname) =
            (&self.global_tags, &self.global_hashes, self.host.hostname());
        let make_key = |namespace: &str| {
            let mut key = line_key(
                globals,
                global_hashes,
                namespace,
                hostname,
                class,
                name,
                line_tags,
            );
            key.prefixed &= !own;
            key
        };
        let ctx = match self.contexts.resolve(&spelling, make_key, now_bucket) {
            Ok(ctx) => ctx,
            Err(Refused::Limit) => {
                tally.drop_points(PointDrop::ContextLimit, finite);
                if let Some(names) = self.names.as_deref_mut() {
                    let prefix = name_prefix(self.contexts.namespace(), own, name);
                    names.dropped(prefix, name, finite, self.contexts.len());
                }
                return;
            }
            Err(Refused::TooLong) => {
                tally.drop_points(PointDrop::AggregateLimit, finite);
                return;
            }
        };
        let bucket = ctx.bucket_mut(now_bucket);
        let mut kept = 0u64;
        match &mut bucket.value {
            Value::Set(members) => {
                let added = match m.value {
                    MetricValue::Set(member) => members.insert(member),
                    MetricValue::Single(v) => members.insert(&v.to_string()),
                    MetricValue::Packed(p) => members.insert(p.raw),
                };
                kept = u64::from(added);
            }
            Value::Points(points) => {
                let ts = m.timestamp.unwrap_or(now);
                let room = TIMESTAMPED_POINT_LIMIT.saturating_sub(points.0.len());
                for v in numbers(&m.value).filter(|v| v.is_finite()).take(room) {
                    points.0.push((ts, v));
                    kept += 1;
                }
            }
            value => {
                // The parser already clamps; a hand-built message may not have.
                let rate = if m.sample_rate > 0.0 && m.sample_rate <= 1.0 {
                    m.sample_rate
                } else {
                    1.0
                };
                for v in numbers(&m.value).filter(|v| v.is_finite()) {
                    value.add(v, rate);
                }
                kept = finite;
            }
        }
        bucket.count(kept);
        if kept < finite {
            tally.drop_points(PointDrop::AggregateLimit, finite - kept);
        }
        // The cardinality view counts contexts as they are made (the table grew), not lines.
        if let Some(names) = self.names.as_deref_mut()
            && self.contexts.len() != before
        {
            names.added(name_prefix(self.contexts.namespace(), own, name), name);
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

    /// The context key of a metric line ([`line_key`]).
    fn line_key<'a>(
        &self,
        class: Class,
        name: &'a str,
        tags: impl Iterator<Item = &'a str>,
    ) -> LineKey<'a> {
        line_key(
            &self.global_tags,
            &self.global_hashes,
            self.contexts.namespace(),
            self.host.hostname(),
            class,
            name,
            tags,
        )
    }

    /// Host and tags of an event or service check: `h:` wins over a `host:` tag, which wins over the configured
    /// host; global tags added; sorted and de-duplicated.
    fn owned_tags(&self, tags: &Tags<'_>, hostname: Option<&str>) -> (String, Vec<String>) {
        let key = self.line_key(Class::Gauge, "", self::tags(tags));
        let host = hostname
            .or(key.host)
            .unwrap_or(self.host.hostname())
            .to_owned();
        let mut out: Vec<String> = key.tags.iter().map(|(_, t)| (*t).to_owned()).collect();
        out.extend(self.global_tags.iter().cloned());
        out.sort_unstable();
        (host, out)
    }
}

/// The namespace in front of a metric's name as shipped: empty for an in-process point
/// ([`OwnPoint`]) and for a name under an exempt prefix.
fn name_prefix<'a>(namespace: &'a str, own: bool, name: &str) -> &'a str {
    if !own && namespaced(namespace, name) {
        namespace
    } else {
        ""
    }
}

/// Whether `namespace` goes in front of `name`: there is one and the name is not under an exempt prefix.
fn namespaced(namespace: &str, name: &str) -> bool {
    !namespace.is_empty() && !NAMESPACE_EXEMPT.iter().any(|p| name.starts_with(p))
}

/// The context key of a metric line: special tags out, tags sorted and de-duplicated, global tags (sorted,
/// with their sorted hashes) out (they are the same for every context and come back at flush), a host equal
/// to `hostname` is no host.
fn line_key<'a>(
    globals: &[String],
    global_hashes: &[u64],
    namespace: &str,
    hostname: &str,
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
            Special::No => buf.push((tag_hash(t), t)),
        }
    }
    canonicalize(&mut buf);
    if !global_hashes.is_empty() {
        buf.retain(|(h, t)| {
            global_hashes.binary_search(h).is_err() || globals.iter().all(|g| g != t)
        });
    }
    LineKey {
        class,
        prefixed: namespaced(namespace, name),
        name,
        host: host.filter(|h| *h != hostname),
        tags: buf,
    }
}

/// A context's name, host and tags (its own and the global ones, sorted) as shipped.
fn identity(ctx: &Context, globals: &[String], hostname: &str) -> Identity {
    let mut tags: Vec<String> = ctx.tags().map(str::to_owned).collect();
    tags.extend(globals.iter().cloned());
    tags.sort_unstable();
    Identity {
        name: ctx.name().to_owned(),
        tags,
        host: ctx.host().unwrap_or(hostname).to_owned(),
    }
}

enum Special<'a> {
    Host(&'a str),
    Metadata,
    No,
}

fn special_tag(t: &str) -> Special<'_> {
    match t.as_bytes().first() {
        Some(b'h') => t.strip_prefix("host:").map_or(Special::No, Special::Host),
        Some(b'd') if METADATA_TAG_PREFIXES.iter().any(|p| t.starts_with(p)) => Special::Metadata,
        _ => Special::No,
    }
}

/// The numbers of a line (none for a set member).
fn numbers<'s>(v: &'s MetricValue<'_>) -> impl Iterator<Item = f64> + 's {
    let (single, packed) = match v {
        MetricValue::Single(x) => (Some(*x), None),
        MetricValue::Packed(p) => (None, Some(p.iter())),
        MetricValue::Set(_) => (None, None),
    };
    single.into_iter().chain(packed.into_iter().flatten())
}

fn tags<'s, 'a>(t: &'s Tags<'a>) -> impl Iterator<Item = &'a str> + 's {
    t.iter()
}
