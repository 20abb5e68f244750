//! When to flush inside Lambda (`DD_SERVERLESS_FLUSH_STRATEGY`): pure state, time passed in.
//!
//! The process is frozen between invocations, so no timer can be trusted to fire: every flush is
//! decided at an event the extension is awake for — the start of an invocation (`INVOKE`), the
//! runtime's `platform.runtimeDone`, or a timer *during* an invocation.
//!
//! | strategy | at `INVOKE` (non-blocking, overlaps the handler) | during the invocation | after `runtimeDone` (before `event/next`) |
//! | --- | --- | --- | --- |
//! | `end` | – | – | flush, within the budget |
//! | `end,<ms>` | – | flush every `<ms>` (long invocations) | flush, within the budget |
//! | `periodically,<ms>` | flush if `<ms>` have passed since the last flush; finished before `event/next` | – | – |
//! | `continuously,<ms>` | like `periodically`, but the flush may still run while the extension waits for the next event | – | – |
//! | `adaptive` (default) | busy: like `periodically,20000` | – | quiet: like `end` |
//!
//! **Adaptive thresholds.** A function is *busy* when its last [`BUSY_INVOCATIONS`] (20) invocations,
//! the current one included, all started within [`BUSY_WINDOW`] (120 s) — on average one at least every
//! 6 s. Busy functions take the flush off the post-runtime path: a non-blocking flush at the start of an
//! invocation, at most every [`ADAPTIVE_INTERVAL`] (20 s); data waits at most that long plus the gap to
//! the next invocation. Quiet functions (fewer than 20 invocations seen, or a slower rate) flush at the
//! end of each invocation, after the response has been sent, so a sandbox that is never invoked again
//! has nothing left behind but what the `SHUTDOWN` flush delivers anyway.
//!
//! **Without the Telemetry API** (no `runtimeDone`), an end-of-invocation flush becomes a flush at the
//! next `INVOKE`, finished before `event/next`; `SHUTDOWN` flushes the rest.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use offpath::config::FlushStrategy;

/// Invocations looked back over to decide whether a function is busy.
pub const BUSY_INVOCATIONS: usize = 20;
/// A function is busy when its last [`BUSY_INVOCATIONS`] invocations started within this window.
pub const BUSY_WINDOW: Duration = Duration::from_secs(120);
/// Flush interval of busy functions under `adaptive`.
pub const ADAPTIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Time kept free before the invocation deadline: a flush never makes the function time out.
pub const INVOCATION_MARGIN: Duration = Duration::from_millis(20);
/// Time kept free before the `SHUTDOWN` deadline (Lambda kills the process at the deadline).
pub const SHUTDOWN_MARGIN: Duration = Duration::from_millis(500);
/// Longest final flush at `SHUTDOWN` (external extensions get 2 s, the runtime a part of it).
pub const MAX_FINAL_FLUSH: Duration = Duration::from_millis(1500);

/// What to do for one invocation, decided when its `INVOKE` arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InvokePlan {
    /// Start a non-blocking flush now; it overlaps the handler.
    pub flush_at_start: bool,
    /// Wait for this invocation's `runtimeDone`, then flush within the budget before `event/next`.
    pub flush_at_end: bool,
    /// While waiting for `runtimeDone`, also flush this often (long invocations).
    pub flush_every: Option<Duration>,
    /// Finish an in-flight flush before calling `event/next` (false only for `continuously`).
    pub settle_before_next: bool,
}

/// The flush policy: a strategy plus what it remembers (recent invocation starts, the last flush).
#[derive(Debug, Clone)]
pub struct FlushPolicy {
    strategy: FlushStrategy,
    /// Start times of the last [`BUSY_INVOCATIONS`] invocations, oldest first.
    recent: VecDeque<Instant>,
    last_flush: Option<Instant>,
}

impl FlushPolicy {
    /// A policy with no history.
    pub fn new(strategy: FlushStrategy) -> Self {
        Self {
            strategy,
            recent: VecDeque::with_capacity(BUSY_INVOCATIONS),
            last_flush: None,
        }
    }

    /// The configured strategy.
    pub fn strategy(&self) -> FlushStrategy {
        self.strategy
    }

    /// Record that a flush started at `now`.
    pub fn flushed(&mut self, now: Instant) {
        self.last_flush = Some(now);
    }

    /// Whether the last [`BUSY_INVOCATIONS`] recorded invocations started within [`BUSY_WINDOW`].
    pub fn is_busy(&self) -> bool {
        match (self.recent.front(), self.recent.back()) {
            (Some(first), Some(last)) if self.recent.len() == BUSY_INVOCATIONS => {
                last.saturating_duration_since(*first) < BUSY_WINDOW
            }
            _ => false,
        }
    }

    /// Decide at an `INVOKE` received at `now`. `telemetry` says whether `runtimeDone` events arrive.
    pub fn on_invoke(&mut self, now: Instant, telemetry: bool) -> InvokePlan {
        if self.recent.len() == BUSY_INVOCATIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(now);

        let due = |every: Duration| {
            self.last_flush
                .is_none_or(|last| now.saturating_duration_since(last) >= every)
        };
        let at_end = |every: Option<Duration>| {
            if telemetry {
                InvokePlan {
                    flush_at_end: true,
                    flush_every: every,
                    settle_before_next: true,
                    ..InvokePlan::default()
                }
            } else {
                // No runtimeDone: flush what the previous invocation left, before event/next.
                InvokePlan {
                    flush_at_start: true,
                    settle_before_next: true,
                    ..InvokePlan::default()
                }
            }
        };
        let at_start = |every: Duration, settle: bool| InvokePlan {
            flush_at_start: due(every),
            settle_before_next: settle,
            ..InvokePlan::default()
        };
        match self.strategy {
            FlushStrategy::End => at_end(None),
            FlushStrategy::EndPeriodically(every) => at_end(Some(every)),
            FlushStrategy::Periodically(every) => at_start(every, true),
            FlushStrategy::Continuously(every) => at_start(every, false),
            FlushStrategy::Adaptive if self.is_busy() => at_start(ADAPTIVE_INTERVAL, true),
            FlushStrategy::Adaptive => at_end(None),
        }
    }
}

/// The deadline of a flush during an invocation: `budget` from `now`, but never closer than
/// [`INVOCATION_MARGIN`] to the invocation's deadline. `None` when no time is left.
pub fn invocation_flush_deadline(
    now: Instant,
    budget: Duration,
    invocation_deadline: Option<Instant>,
) -> Option<Instant> {
    let mut deadline = now + budget;
    if let Some(limit) = invocation_deadline {
        deadline = deadline.min(limit.checked_sub(INVOCATION_MARGIN)?);
    }
    (deadline > now).then_some(deadline)
}

/// The deadline of the final flush at `SHUTDOWN`: [`SHUTDOWN_MARGIN`] before Lambda's deadline, at most
/// [`MAX_FINAL_FLUSH`] from `now`, never before `now`.
pub fn shutdown_flush_deadline(now: Instant, shutdown_deadline: Option<Instant>) -> Instant {
    let cap = now + MAX_FINAL_FLUSH;
    match shutdown_deadline {
        None => cap,
        Some(d) => d
            .checked_sub(SHUTDOWN_MARGIN)
            .unwrap_or(now)
            .clamp(now, cap),
    }
}

/// Convert an epoch-milliseconds deadline (`deadlineMs`) to an [`Instant`], given the wall clock
/// (`now_epoch_ms`) and the monotonic clock (`now`) read at the same moment. `None` for a zero or
/// missing deadline.
pub fn deadline_instant(deadline_ms: u64, now_epoch_ms: u64, now: Instant) -> Option<Instant> {
    if deadline_ms == 0 {
        return None;
    }
    Some(now + Duration::from_millis(deadline_ms.saturating_sub(now_epoch_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn strategies_parse_from_their_documented_forms() {
        let cases: &[(&str, FlushStrategy)] = &[
            ("adaptive", FlushStrategy::Adaptive),
            ("", FlushStrategy::Adaptive),
            ("  ADAPTIVE ", FlushStrategy::Adaptive),
            ("end", FlushStrategy::End),
            ("End", FlushStrategy::End),
            ("end,5000", FlushStrategy::EndPeriodically(ms(5000))),
            ("periodically,60000", FlushStrategy::Periodically(ms(60000))),
            ("periodically, 100", FlushStrategy::Periodically(ms(100))),
            ("continuously,1000", FlushStrategy::Continuously(ms(1000))),
        ];
        for (text, want) in cases {
            assert_eq!(FlushStrategy::parse(text).unwrap(), *want, "{text:?}");
        }
    }

    #[test]
    fn invalid_strategies_are_errors_naming_the_key() {
        for text in [
            "sometimes",
            "end,",
            "end,abc",
            "end,0",
            "end,-5",
            "periodically",
            "continuously",
            "periodically,1,2",
            "adaptive,100",
        ] {
            let e = FlushStrategy::parse(text).unwrap_err();
            assert_eq!(e.key, "DD_SERVERLESS_FLUSH_STRATEGY", "{text:?}");
            assert!(e.to_string().contains("DD_SERVERLESS_FLUSH_STRATEGY"));
            assert_eq!(e.value, text);
        }
    }

    const END: InvokePlan = InvokePlan {
        flush_at_start: false,
        flush_at_end: true,
        flush_every: None,
        settle_before_next: true,
    };
    const START: InvokePlan = InvokePlan {
        flush_at_start: true,
        flush_at_end: false,
        flush_every: None,
        settle_before_next: true,
    };
    const NOTHING: InvokePlan = InvokePlan {
        flush_at_start: false,
        flush_at_end: false,
        flush_every: None,
        settle_before_next: true,
    };

    /// Invocations at the given offsets (ms), flushing whenever the plan says so; the plans in order.
    fn plans(strategy: FlushStrategy, telemetry: bool, at_ms: &[u64]) -> Vec<InvokePlan> {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(strategy);
        at_ms
            .iter()
            .map(|&t| {
                let now = t0 + ms(t);
                let plan = p.on_invoke(now, telemetry);
                if plan.flush_at_start || plan.flush_at_end {
                    p.flushed(now);
                }
                plan
            })
            .collect()
    }

    #[test]
    fn each_strategy_plans_invocations_as_documented() {
        let cont = |start| InvokePlan {
            flush_at_start: start,
            settle_before_next: false,
            ..NOTHING
        };
        let end_every = InvokePlan {
            flush_every: Some(ms(500)),
            ..END
        };
        let cases: Vec<(FlushStrategy, bool, Vec<u64>, Vec<InvokePlan>)> = vec![
            (FlushStrategy::End, true, vec![0, 10, 20], vec![END; 3]),
            (FlushStrategy::End, false, vec![0, 10], vec![START; 2]),
            (
                FlushStrategy::EndPeriodically(ms(500)),
                true,
                vec![0, 1],
                vec![end_every; 2],
            ),
            (
                FlushStrategy::EndPeriodically(ms(500)),
                false,
                vec![0],
                vec![START],
            ),
            (
                FlushStrategy::Periodically(ms(1000)),
                true,
                vec![0, 400, 999, 1000, 1500, 2100],
                vec![START, NOTHING, NOTHING, START, NOTHING, START],
            ),
            (
                FlushStrategy::Periodically(ms(1000)),
                false,
                vec![0, 400],
                vec![START, NOTHING],
            ),
            (
                FlushStrategy::Continuously(ms(1000)),
                true,
                vec![0, 400, 1000],
                vec![cont(true), cont(false), cont(true)],
            ),
            (FlushStrategy::Adaptive, true, vec![0, 60_000], vec![END; 2]),
            (FlushStrategy::Adaptive, false, vec![0], vec![START]),
        ];
        for (strategy, telemetry, at, want) in cases {
            assert_eq!(
                plans(strategy, telemetry, &at),
                want,
                "{strategy:?} telemetry={telemetry} at={at:?}"
            );
        }
    }

    #[test]
    fn adaptive_flushes_at_the_end_until_twenty_invocations_fall_within_two_minutes() {
        // One invocation per second: the 20th is within 19 s of the first, so it switches.
        let at: Vec<u64> = (0..25).map(|i| i * 1000).collect();
        let got = plans(FlushStrategy::Adaptive, true, &at);
        assert!(got[..19].iter().all(|p| *p == END), "{got:?}");
        // 20th invocation (19 s): busy; last flush at 18 s, so not due yet.
        assert_eq!(got[19], NOTHING);
        // Due again 20 s after the last flush (18 s): the invocation at 38 s would; none until then.
        assert!(got[20..].iter().all(|p| *p == NOTHING));
    }

    #[test]
    fn adaptive_busy_functions_flush_at_start_every_twenty_seconds() {
        let at: Vec<u64> = (0..60).map(|i| i * 1000).collect();
        let got = plans(FlushStrategy::Adaptive, true, &at);
        let starts: Vec<usize> = got
            .iter()
            .enumerate()
            .filter(|(_, p)| p.flush_at_start)
            .map(|(i, _)| i)
            .collect();
        // Last end flush at 18 s; then starts at 38 s and 58 s.
        assert_eq!(starts, [38, 58]);
        assert!(got[19..].iter().all(|p| !p.flush_at_end));
    }

    #[test]
    fn adaptive_returns_to_end_when_invocations_slow_down() {
        // 20 quick invocations, then one 200 s later: the window spans more than 120 s again.
        let mut at: Vec<u64> = (0..20).map(|i| i * 1000).collect();
        at.push(219_000);
        let got = plans(FlushStrategy::Adaptive, true, &at);
        assert_eq!(*got.last().unwrap(), END);
    }

    #[test]
    fn slow_functions_never_become_busy() {
        // One invocation every 7 s: 20 invocations span 133 s > 120 s.
        let at: Vec<u64> = (0..40).map(|i| i * 7000).collect();
        assert!(
            plans(FlushStrategy::Adaptive, true, &at)
                .iter()
                .all(|p| *p == END)
        );
    }

    #[test]
    fn invocation_flushes_stop_short_of_the_invocation_deadline() {
        let now = Instant::now();
        let cases: &[(u64, Option<u64>, Option<u64>)] = &[
            // (budget ms, invocation deadline ms from now, flush deadline ms from now)
            (200, None, Some(200)),
            (200, Some(10_000), Some(200)),
            (200, Some(120), Some(100)),
            (200, Some(20), None),
            (200, Some(5), None),
            (0, None, None),
        ];
        for &(budget, inv, want) in cases {
            let got = invocation_flush_deadline(now, ms(budget), inv.map(|d| now + ms(d)));
            assert_eq!(got, want.map(|d| now + ms(d)), "{budget} {inv:?}");
        }
    }

    #[test]
    fn the_final_flush_keeps_a_margin_before_the_shutdown_deadline() {
        let now = Instant::now();
        let cases: &[(Option<u64>, u64)] = &[
            (None, 1500),
            (Some(2000), 1500),
            (Some(1200), 700),
            (Some(300), 0),
            (Some(60_000), 1500),
        ];
        for &(deadline, want) in cases {
            let got = shutdown_flush_deadline(now, deadline.map(|d| now + ms(d)));
            assert_eq!(got, now + ms(want), "{deadline:?}");
        }
    }

    #[test]
    fn epoch_deadlines_become_instants_relative_to_the_clock_read_with_them() {
        let now = Instant::now();
        assert_eq!(deadline_instant(0, 1000, now), None);
        assert_eq!(deadline_instant(3500, 1000, now), Some(now + ms(2500)));
        assert_eq!(deadline_instant(500, 1000, now), Some(now));
    }
}
