//! offpath's own counters in the Prometheus text exposition format, for `GET /metrics` on the status
//! address.
//!
//! Every `offpath.*` self-telemetry metric appears under the same name with `.` as `_`; counters hold
//! their total since start and end in `_total` (`offpath.points_dropped{reason}` is
//! `offpath_points_dropped_total{reason="…"}`), gauges keep their name. Unlike the self-telemetry
//! series, every reason is exported, zeros included, so a scraper sees a stable set of series. Label
//! values are escaped (`\`, `"`, newline) as the format asks.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::dogstatsd::ParseError;
use crate::telemetry::{PacketDrop, PointDrop, Telemetry};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Extra values only the running pipeline knows, for gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Live aggregation contexts, when known.
    pub contexts: Option<u64>,
}

/// The exposition of every counter and gauge of `t`.
pub fn render(t: &Telemetry, gauges: Gauges) -> String {
    let mut out = Exposition(String::with_capacity(8192));
    let listeners: Vec<_> = t
        .listeners
        .lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();

    out.family(
        "packets_received",
        "counter",
        "Packets read from a listener.",
    );
    for l in &listeners {
        out.sample(
            "packets_received",
            &[("listener", &l.name)],
            l.packets.load(Relaxed),
        );
    }
    out.family("bytes_received", "counter", "Bytes read from a listener.");
    for l in &listeners {
        out.sample(
            "bytes_received",
            &[("listener", &l.name)],
            l.bytes.load(Relaxed),
        );
    }
    out.family(
        "packets_dropped",
        "counter",
        "Packets dropped before parsing, by listener and reason.",
    );
    for l in &listeners {
        for r in PacketDrop::ALL {
            out.sample(
                "packets_dropped",
                &[("listener", &l.name), ("reason", r.as_str())],
                l.dropped[r as usize].load(Relaxed),
            );
        }
    }

    let p = &t.parse;
    out.family(
        "lines_parsed",
        "counter",
        "Lines accepted by the parser, by kind.",
    );
    for (kind, c) in [
        ("metric", &p.metrics),
        ("event", &p.events),
        ("service_check", &p.service_checks),
    ] {
        out.sample("lines_parsed", &[("kind", kind)], c.load(Relaxed));
    }
    out.family(
        "parse_errors",
        "counter",
        "Lines rejected by the parser, by reason.",
    );
    for r in ParseError::ALL {
        out.sample(
            "parse_errors",
            &[("reason", r.as_str())],
            p.errors[r.index()].load(Relaxed),
        );
    }

    let pts = &t.points;
    for (name, help, c) in [
        (
            "points_received",
            "Metric values, events and service checks accepted by the parser.",
            &pts.received,
        ),
        (
            "points_delivered",
            "Points in payloads the Datadog intake accepted.",
            &pts.delivered,
        ),
        (
            "points_fell_back",
            "Points written to the fallback (CloudWatch Logs or stdout).",
            &pts.fell_back,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &[], c.load(Relaxed));
    }
    out.family("points_dropped", "counter", "Points dropped, by reason.");
    for r in PointDrop::ALL {
        out.sample(
            "points_dropped",
            &[("reason", r.as_str())],
            pts.dropped[r as usize].load(Relaxed),
        );
    }

    let f = &t.forward;
    for (name, help, c) in [
        (
            "payloads_delivered",
            "Payloads the intake accepted.",
            &f.payloads_delivered,
        ),
        ("retries", "Intake requests retried.", &f.retries),
        (
            "fallback_records",
            "Records written to the fallback.",
            &f.fallback_records,
        ),
        (
            "fallback_bytes",
            "Bytes written to the fallback.",
            &f.fallback_bytes,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &[], c.load(Relaxed));
    }

    out.gauge(
        "retry_queue_bytes",
        "Bytes waiting in the retry queue.",
        f.retry_queue_bytes.load(Relaxed) as f64,
    );
    let breaker = match f.breaker.load(Relaxed) {
        0 => 0.0,
        2 => 0.5,
        _ => 1.0,
    };
    out.gauge(
        "breaker_open",
        "Intake circuit breaker: 0 closed, 1 open, 0.5 half-open.",
        breaker,
    );
    if let Some(n) = gauges.contexts {
        out.gauge("contexts", "Live aggregation contexts.", n as f64);
    }
    out.gauge(
        "uptime",
        "Seconds since offpath started.",
        t.started.elapsed().as_secs_f64().floor(),
    );
    out.0
}

/// The text under construction.
struct Exposition(String);

impl Exposition {
    /// `# HELP` and `# TYPE` of a family; counters get their `_total` suffix in [`Exposition::sample`].
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let suffix = if kind == "counter" { "_total" } else { "" };
        let _ = writeln!(self.0, "# HELP offpath_{name}{suffix} {help}");
        let _ = writeln!(self.0, "# TYPE offpath_{name}{suffix} {kind}");
    }

    /// One counter sample.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let _ = write!(self.0, "offpath_{name}_total");
        self.labels(labels);
        let _ = writeln!(self.0, " {value}");
    }

    /// A gauge family with its one sample.
    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        let _ = writeln!(self.0, "offpath_{name} {value}");
    }

    fn labels(&mut self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        self.0.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.0.push_str(k);
            self.0.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.0.push_str("\\\\"),
                    '"' => self.0.push_str("\\\""),
                    '\n' => self.0.push_str("\\n"),
                    c => self.0.push(c),
                }
            }
            self.0.push('"');
        }
        self.0.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_with_escaped_labels_and_every_reason() {
        let t = Telemetry::default();
        let l = t.register_listener("unixgram /run/a\"b\\c");
        l.packets.store(3, Relaxed);
        t.points.drop_points(PointDrop::ContextLimit, 7);
        t.parse.metrics.store(11, Relaxed);
        let text = render(&t, Gauges { contexts: Some(42) });
        assert!(text.contains(
            "offpath_packets_received_total{listener=\"unixgram /run/a\\\"b\\\\c\"} 3\n"
        ));
        assert!(text.contains("offpath_points_dropped_total{reason=\"context_limit\"} 7\n"));
        assert!(text.contains("offpath_points_dropped_total{reason=\"non_finite\"} 0\n"));
        assert!(text.contains("offpath_lines_parsed_total{kind=\"metric\"} 11\n"));
        assert!(text.contains("# TYPE offpath_points_received_total counter\n"));
        assert!(text.contains("# TYPE offpath_contexts gauge\noffpath_contexts 42\n"));
        assert!(text.contains("offpath_breaker_open 0\n"));
        // Every line is a comment or `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("offpath_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn every_self_telemetry_metric_is_exported_under_its_name() {
        let text = render(&Telemetry::default(), Gauges { contexts: Some(0) });
        let doc = include_str!("self_metrics.rs");
        let names: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `offpath."))
            .filter_map(|l| l.split_once('`').map(|(name, _)| name))
            .collect();
        assert!(names.len() >= 15, "{names:?}");
        for name in names {
            let counter = format!("offpath_{name}_total");
            let gauge = format!("# TYPE offpath_{name} gauge");
            assert!(
                text.contains(&format!("# TYPE {counter} counter")) || text.contains(&gauge),
                "offpath.{name} is not exported"
            );
        }
    }
}
