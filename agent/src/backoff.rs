//! Jittered exponential backoff, the one formula every retry in offpath waits by: the forwarder
//! between attempts and between probes of an open breaker, the API key secret between failed reads,
//! the CloudWatch Logs sink between failed calls.
//!
//! Pure: the caller passes the attempt number and a jitter value (uniform in `[0, 1)`), so the table
//! of delays is testable.

use std::time::Duration;

/// Jittered exponential backoff ("equal jitter": half the exponential delay, plus up to as much again
/// at random), capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0 = first retry); `jitter` is uniform in `[0, 1)`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = exp / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_to_max_with_equal_jitter() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let table = [
            (0, 0.0, 50),
            (0, 0.999_999, 99),
            (1, 0.0, 100),
            (2, 0.5, 300),
            (3, 0.0, 400),
            (4, 0.0, 500),
            (40, 1.0, 1_000),
        ];
        for (attempt, jitter, ms) in table {
            assert_eq!(
                b.delay(attempt, jitter).as_millis(),
                ms,
                "attempt {attempt} jitter {jitter}"
            );
        }
    }
}
