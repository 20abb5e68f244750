//! `offpath stats`: the cardinality view of a running offpath (`GET /status/contexts`): live contexts
//! against the limit, and per metric name its contexts, points per second and drops; as a table, as
//! JSON (`--json`), or refreshed in place like `top` (`--watch`).

use std::fmt::Write as _;
use std::time::Duration;

use offpath::errors::Chain;
use serde::Deserialize;

use super::args::{HealthArgs, StatsArgs};
use super::health::{ProbeError, get_ok, health_addr};

/// `/status/contexts` as read back (the server's [`ContextsView`], owned).
#[derive(Debug, Deserialize)]
struct View {
    limit: usize,
    live: usize,
    metrics: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct Row {
    name: String,
    contexts: u64,
    points_per_second: f64,
    dropped: u64,
}

/// `offpath stats`: print the view once, or every `--interval` seconds with `--watch`; the exit code
/// (0, or 1 when offpath does not answer).
pub async fn stats_command(args: &StatsArgs) -> i32 {
    let addr = match health_addr(&HealthArgs {
        addr: args.addr,
        config: args.config.clone(),
        timeout: args.timeout,
        wait: None,
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("offpath stats: {}", Chain(&e));
            return 1;
        }
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut shown = 0u64;
    loop {
        match fetch(addr, usize::from(args.top), timeout).await {
            Ok(body) if args.json => println!("{}", body.trim_end()),
            Ok(body) => match serde_json::from_str::<View>(&body) {
                Ok(view) => {
                    let table = render(&view);
                    if args.watch {
                        // Clear the screen and go home, as `top` redraws.
                        print!("\x1b[2J\x1b[H");
                        println!(
                            "offpath stats on {addr}, every {}s (Ctrl-C quits)\n",
                            args.interval
                        );
                    }
                    print!("{table}");
                }
                Err(e) => {
                    eprintln!("offpath stats: /status/contexts answered something else: {e}");
                    return 1;
                }
            },
            Err(e) => {
                eprintln!("offpath stats: {}", Chain(&e));
                if !args.watch {
                    return 1;
                }
            }
        }
        shown += 1;
        if !args.watch || args.count.is_some_and(|n| shown >= n) {
            return 0;
        }
        tokio::time::sleep(Duration::from_secs(args.interval.max(1))).await;
    }
}

/// `GET /status/contexts?top=N`: the body when the answer is 200.
async fn fetch(
    addr: std::net::SocketAddr,
    top: usize,
    timeout: Duration,
) -> Result<String, ProbeError> {
    get_ok(addr, "/status/contexts", &format!("?top={top}"), timeout).await
}

/// The table: a header line with the limit, then one line per name.
fn render(v: &View) -> String {
    let pct = |n: u64| {
        if v.limit == 0 {
            0.0
        } else {
            n as f64 * 100.0 / v.limit as f64
        }
    };
    let mut out = format!(
        "live contexts {} of {} ({:.1} % of DD_AGGREGATE_CONTEXT_LIMIT)\n\n",
        v.live,
        v.limit,
        pct(v.live as u64)
    );
    let width = v
        .metrics
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10}  {:>7}  {:>10}  {:>10}",
        "METRIC", "CONTEXTS", "LIMIT%", "POINTS/S", "DROPPED"
    );
    for r in &v.metrics {
        let _ = writeln!(
            out,
            "{:<width$}  {:>10}  {:>6.1}%  {:>10.1}  {:>10}",
            r.name,
            r.contexts,
            pct(r.contexts),
            r.points_per_second,
            r.dropped
        );
    }
    if v.metrics.is_empty() {
        out.push_str("(no metric yet: the view is published at each flush)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_the_limit_and_one_line_per_name_largest_first() {
        let view: View = serde_json::from_str(
            r#"{"limit": 1000, "live": 300, "metrics": [
                {"name": "app.requests", "contexts": 250, "points_per_second": 12.5, "dropped": 7},
                {"name": "app.x", "contexts": 50, "points_per_second": 0.0, "dropped": 0}]}"#,
        )
        .unwrap();
        let t = render(&view);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "live contexts 300 of 1000 (30.0 % of DD_AGGREGATE_CONTEXT_LIMIT)"
        );
        assert!(lines[2].starts_with("METRIC"), "{t}");
        assert!(
            lines[3].starts_with("app.requests") && lines[3].contains(" 25.0%"),
            "{t}"
        );
        assert!(
            lines[3].contains("12.5") && lines[3].trim_end().ends_with('7'),
            "{t}"
        );
        assert!(lines[4].starts_with("app.x"), "{t}");
    }
}
