//! offpath's own counters as `offpath.*` series, shipped with every flush (`OFFPATH_SELF_TELEMETRY`).
//!
//! Counters go out as `COUNT` series holding the increase since the previous flush (the interval is
//! the time between the two flushes); gauges hold the current value. Series tagged with a `reason`
//! are only sent for reasons that moved, so a healthy agent sends a short, fixed set of series.
//! Self-telemetry series carry `samples = 0`: they are not DogStatsD points and do not enter the
//! `received = delivered + fell_back + dropped` ledger.
//!
//! | metric | type | tags | meaning |
//! | --- | --- | --- | --- |
//! | `offpath.packets_received` | count | `listener` | packets (datagrams, stream frames) read from a listener |
//! | `offpath.bytes_received` | count | `listener` | bytes read from a listener |
//! | `offpath.packets_dropped` | count | `listener`, `reason` | packets dropped before parsing: `queue_full` (parser queue full), `truncated` (datagram larger than `DD_DOGSTATSD_BUFFER_SIZE`), `oversize_frame` (stream frame too large) |
//! | `offpath.lines_parsed` | count | `kind` | lines accepted by the parser: `metric`, `event`, `service_check` |
//! | `offpath.parse_errors` | count | `reason` | lines rejected by the parser, by reason (`bad_format`, `bad_value`, `unknown_type`, …) |
//! | `offpath.points_received` | count | | metric values (each packed value), events and service checks accepted |
//! | `offpath.points_delivered` | count | | points in payloads the Datadog intake accepted |
//! | `offpath.points_fell_back` | count | | points written to the fallback (CloudWatch Logs or stdout) |
//! | `offpath.points_dropped` | count | `reason` | points dropped: `non_finite`, `context_limit`, `timestamp_unsupported`, `client_telemetry`, `intake_rejected`, `too_large`, `retry_queue_overflow`, `fallback_overflow`, `fallback_rejected`, `shutdown_deadline`, `aggregate_limit`, `fallback_off`, `histogram_no_output`, `own_metric`, `own_queue_full`, `filtered` |
//! | `offpath.payloads_delivered` | count | | payloads the intake accepted |
//! | `offpath.retries` | count | | intake requests retried |
//! | `offpath.fallback_records` | count | | records written to the fallback sink |
//! | `offpath.fallback_bytes` | count | | bytes written to the fallback sink |
//! | `offpath.retry_queue_bytes` | gauge | | bytes waiting in the retry queue |
//! | `offpath.breaker_open` | gauge | | circuit breaker: 0 closed, 1 open, 0.5 half-open (probing) |
//! | `offpath.contexts` | gauge | | live aggregation contexts (when the flush driver knows them) |
//! | `offpath.uptime` | gauge | | seconds since offpath started |

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use crate::dogstatsd::ParseError;
use crate::model::{Series, SeriesKind};
use crate::telemetry::{PacketDrop, PointDrop, Telemetry};

/// Produces the `offpath.*` series; keeps each counter's value at the previous flush. Owned by the
/// flush driver. Its memory is bounded by the fixed set of counters times the listeners.
#[derive(Debug, Clone)]
pub struct SelfMetrics {
    /// Host set on every series (`DD_HOSTNAME`).
    host: String,
    /// Global tags added to every series.
    tags: Vec<String>,
    /// Counter values at the previous call, by (metric, extra tags).
    previous: HashMap<(&'static str, Vec<String>), u64>,
    /// Unix seconds of the previous call.
    previous_ts: Option<i64>,
}

impl SelfMetrics {
    /// A collector for `host` with the global `tags` (`DD_TAGS`, `env:`, …).
    pub fn new(host: impl Into<String>, tags: Vec<String>) -> Self {
        Self {
            host: host.into(),
            tags,
            previous: HashMap::new(),
            previous_ts: None,
        }
    }

    /// Put `host` on the series from now on (the sidecar's hostname, once resolved).
    pub fn set_host(&mut self, host: &str) {
        if self.host != host {
            host.clone_into(&mut self.host);
        }
    }

    /// The series for a flush at `now` (unix seconds): counters as the increase since the previous
    /// call (since the start on the first call), gauges as current values. `contexts` is the live
    /// context count when known.
    ///
    /// At most one point per series and second: the intake keeps only the last point of a series at
    /// one timestamp, so a second call within the second of the previous one returns nothing and its
    /// increases ride with the next call. The last call of the process uses [`SelfMetrics::collect_last`].
    pub fn collect(&mut self, t: &Telemetry, now: i64, contexts: Option<u64>) -> Vec<Series> {
        if self.previous_ts.is_some_and(|p| now <= p) {
            return Vec::new();
        }
        self.collect_at(t, now, contexts)
    }

    /// Like [`SelfMetrics::collect`] for the last flush of the process (shutdown): nothing comes after
    /// it to carry the increases, so when the previous call was in the same second its points are
    /// stamped one second later instead of being held back.
    pub fn collect_last(&mut self, t: &Telemetry, now: i64, contexts: Option<u64>) -> Vec<Series> {
        let ts = self
            .previous_ts
            .map_or(now, |p| now.max(p.saturating_add(1)));
        self.collect_at(t, ts, contexts)
    }

    fn collect_at(&mut self, t: &Telemetry, now: i64, contexts: Option<u64>) -> Vec<Series> {
        let interval = self
            .previous_ts
            .map_or_else(
                || t.started.elapsed().as_secs(),
                |p| u64::try_from(now.saturating_sub(p)).unwrap_or(0),
            )
            .clamp(1, u64::from(u32::MAX));
        self.previous_ts = Some(now);
        let mut out = Batch {
            metrics: self,
            now,
            interval: u32::try_from(interval).unwrap_or(u32::MAX),
            series: Vec::with_capacity(24),
        };

        if let Ok(listeners) = t.listeners.lock() {
            for l in listeners.iter() {
                let listener = format!("listener:{}", tag_value(&l.name));
                out.count(
                    "offpath.packets_received",
                    &[&listener],
                    l.packets.load(Relaxed),
                    true,
                );
                out.count(
                    "offpath.bytes_received",
                    &[&listener],
                    l.bytes.load(Relaxed),
                    true,
                );
                for r in PacketDrop::ALL {
                    let reason = format!("reason:{}", r.as_str());
                    out.count(
                        "offpath.packets_dropped",
                        &[&listener, &reason],
                        l.dropped[r as usize].load(Relaxed),
                        false,
                    );
                }
            }
        }

        let p = &t.parse;
        for (kind, counter) in [
            ("kind:metric", &p.metrics),
            ("kind:event", &p.events),
            ("kind:service_check", &p.service_checks),
        ] {
            out.count("offpath.lines_parsed", &[kind], counter.load(Relaxed), true);
        }
        for r in ParseError::ALL {
            let reason = format!("reason:{}", r.as_str());
            out.count(
                "offpath.parse_errors",
                &[&reason],
                p.errors[r.index()].load(Relaxed),
                false,
            );
        }

        let pts = &t.points;
        out.count(
            "offpath.points_received",
            &[],
            pts.received.load(Relaxed),
            true,
        );
        out.count(
            "offpath.points_delivered",
            &[],
            pts.delivered.load(Relaxed),
            true,
        );
        out.count(
            "offpath.points_fell_back",
            &[],
            pts.fell_back.load(Relaxed),
            true,
        );
        for r in PointDrop::ALL {
            let reason = format!("reason:{}", r.as_str());
            out.count(
                "offpath.points_dropped",
                &[&reason],
                pts.dropped[r as usize].load(Relaxed),
                false,
            );
        }

        let f = &t.forward;
        out.count(
            "offpath.payloads_delivered",
            &[],
            f.payloads_delivered.load(Relaxed),
            true,
        );
        out.count("offpath.retries", &[], f.retries.load(Relaxed), true);
        out.count(
            "offpath.fallback_records",
            &[],
            f.fallback_records.load(Relaxed),
            true,
        );
        out.count(
            "offpath.fallback_bytes",
            &[],
            f.fallback_bytes.load(Relaxed),
            true,
        );

        out.gauge(
            "offpath.retry_queue_bytes",
            f.retry_queue_bytes.load(Relaxed) as f64,
        );
        let breaker = match f.breaker.load(Relaxed) {
            0 => 0.0,
            2 => 0.5,
            _ => 1.0,
        };
        out.gauge("offpath.breaker_open", breaker);
        if let Some(n) = contexts {
            out.gauge("offpath.contexts", n as f64);
        }
        out.gauge("offpath.uptime", t.started.elapsed().as_secs() as f64);
        out.series
    }
}

/// One call's output under construction.
struct Batch<'a> {
    metrics: &'a mut SelfMetrics,
    now: i64,
    interval: u32,
    series: Vec<Series>,
}

impl Batch<'_> {
    fn tags(&self, extra: &[&str]) -> Vec<String> {
        let mut tags = self.metrics.tags.clone();
        tags.extend(extra.iter().map(|t| (*t).to_owned()));
        tags.sort_unstable();
        tags.dedup();
        tags
    }

    /// A counter's increase since the previous call; sent when `always` or when it moved.
    fn count(&mut self, name: &'static str, extra: &[&str], value: u64, always: bool) {
        let key = (name, extra.iter().map(|t| (*t).to_owned()).collect());
        let before = self.metrics.previous.insert(key, value).unwrap_or(0);
        // A counter never goes down; if it did (a listener re-registered), count from zero.
        let delta = value.checked_sub(before).unwrap_or(value);
        if delta == 0 && !always {
            return;
        }
        self.series.push(Series {
            name: name.to_owned(),
            tags: self.tags(extra),
            host: self.metrics.host.clone(),
            kind: SeriesKind::Count,
            interval: self.interval,
            points: vec![(self.now, delta as f64)],
            samples: 0,
        });
    }

    fn gauge(&mut self, name: &str, value: f64) {
        self.series.push(Series {
            name: name.to_owned(),
            tags: self.tags(&[]),
            host: self.metrics.host.clone(),
            kind: SeriesKind::Gauge,
            interval: 0,
            points: vec![(self.now, value)],
            samples: 0,
        });
    }
}

/// A listener name as a tag value: lower case, spaces and other separators as `_`.
fn tag_value(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || "_-./:".contains(c) => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(series: &'a [Series], name: &str, tag: Option<&str>) -> Option<&'a Series> {
        series
            .iter()
            .find(|s| s.name == name && tag.is_none_or(|t| s.tags.iter().any(|x| x == t)))
    }

    #[track_caller]
    fn value(series: &[Series], name: &str, tag: Option<&str>) -> f64 {
        find(series, name, tag)
            .unwrap_or_else(|| panic!("{name} {tag:?} missing"))
            .points[0]
            .1
    }

    #[test]
    fn counters_are_sent_as_increases_since_the_previous_flush() {
        let t = Telemetry::default();
        let udp = t.register_listener("udp 127.0.0.1:8125");
        let mut m = SelfMetrics::new("web-1", vec!["env:prod".into()]);
        udp.packets.store(10, Relaxed);
        t.points.received.store(100, Relaxed);
        let first = m.collect(&t, 1000, Some(3));
        assert_eq!(
            value(
                &first,
                "offpath.packets_received",
                Some("listener:udp_127.0.0.1:8125")
            ),
            10.0
        );
        assert_eq!(value(&first, "offpath.points_received", None), 100.0);
        udp.packets.store(25, Relaxed);
        t.points.received.store(160, Relaxed);
        let second = m.collect(&t, 1015, None);
        assert_eq!(value(&second, "offpath.packets_received", None), 15.0);
        let received = find(&second, "offpath.points_received", None).unwrap();
        assert_eq!(received.points, [(1015, 60.0)]);
        assert_eq!(received.kind, SeriesKind::Count);
        assert_eq!(received.interval, 15);
        assert_eq!(received.host, "web-1");
        assert_eq!(received.tags, ["env:prod"]);
        assert_eq!(received.samples, 0);
        assert_eq!(value(&first, "offpath.contexts", None), 3.0);
        assert!(find(&second, "offpath.contexts", None).is_none());
    }

    #[test]
    fn a_second_call_in_the_same_second_waits_and_the_last_one_moves_one_second_on() {
        let t = Telemetry::default();
        let mut m = SelfMetrics::new("", vec![]);
        t.points.received.store(1, Relaxed);
        assert_eq!(
            value(&m.collect(&t, 1000, None), "offpath.points_received", None),
            1.0
        );
        t.points.received.store(3, Relaxed);
        assert!(m.collect(&t, 1000, None).is_empty(), "held back, not lost");
        let next = m.collect(&t, 1001, None);
        let received = find(&next, "offpath.points_received", None).unwrap();
        assert_eq!(received.points, [(1001, 2.0)]);
        t.points.received.store(7, Relaxed);
        let last = m.collect_last(&t, 1001, None);
        let received = find(&last, "offpath.points_received", None).unwrap();
        assert_eq!((received.points[0], received.interval), ((1002, 4.0), 1));
        let mut fresh = SelfMetrics::new("", vec![]);
        assert_eq!(
            find(
                &fresh.collect_last(&t, 2000, None),
                "offpath.points_received",
                None
            )
            .unwrap()
            .points,
            [(2000, 7.0)]
        );
    }

    #[test]
    fn reason_series_are_sent_only_when_they_moved() {
        let t = Telemetry::default();
        let mut m = SelfMetrics::new("", vec![]);
        let quiet = m.collect(&t, 1000, None);
        assert!(find(&quiet, "offpath.points_dropped", None).is_none());
        assert!(find(&quiet, "offpath.parse_errors", None).is_none());
        assert_eq!(value(&quiet, "offpath.points_received", None), 0.0);

        t.points.drop_points(PointDrop::ContextLimit, 4);
        t.parse.error(ParseError::UnknownType);
        let moved = m.collect(&t, 1010, None);
        let dropped = find(&moved, "offpath.points_dropped", None).unwrap();
        assert_eq!(dropped.tags, ["reason:context_limit"]);
        assert_eq!(dropped.points[0].1, 4.0);
        assert_eq!(
            value(&moved, "offpath.parse_errors", Some("reason:unknown_type")),
            1.0
        );
        let again = m.collect(&t, 1020, None);
        assert!(find(&again, "offpath.points_dropped", None).is_none());
    }

    #[test]
    fn gauges_carry_current_values_and_tags_are_sorted() {
        let t = Telemetry::default();
        t.forward.retry_queue_bytes.store(2048, Relaxed);
        t.forward.breaker.store(2, Relaxed);
        let mut m = SelfMetrics::new("h", vec!["z:1".into(), "a:1".into(), "a:1".into()]);
        let s = m.collect(&t, 1000, None);
        let q = find(&s, "offpath.retry_queue_bytes", None).unwrap();
        assert_eq!(
            (q.kind, q.interval, q.points[0].1),
            (SeriesKind::Gauge, 0, 2048.0)
        );
        assert_eq!(q.tags, ["a:1", "z:1"]);
        assert_eq!(value(&s, "offpath.breaker_open", None), 0.5);
        assert!(s.iter().all(|x| x.name.starts_with("offpath.")));
    }

    #[test]
    fn listener_names_become_tag_values() {
        assert_eq!(
            tag_value("unixgram /run/offpath/dsd.socket"),
            "unixgram_/run/offpath/dsd.socket"
        );
        assert_eq!(tag_value("UDP [::1]:8125"), "udp__::1_:8125");
    }
}
