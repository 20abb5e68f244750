//! The Datadog Agent's DDSketch (`pkg/quantile`): the key mapping, bin layout and summary statistics that
//! the sketches intake expects (`docs/protocols.md`, "Datadog's agent DDSketch").
//!
//! Written for offpath after the Agent's Go code and Saluki's `ddsketch-agent` (both Apache-2.0, Datadog):
//! γ = 1 + 2/128, bias 1338, keys rounded half to even, bins kept as a sorted list of `(key: i16, n: u16)`
//! where a count above 65535 continues in another bin with the same key, at most 4096 bins (the lowest are
//! collapsed into the lowest bin kept).

use crate::model::DogSketch;

/// Relative accuracy ε of the sketch (1/128).
pub const EPS: f64 = 1.0 / 128.0;
/// γ = 1 + 2ε: each bin is γ times wider than the previous one.
pub const GAMMA: f64 = 1.0 + 2.0 * EPS;
/// ln γ, `log1p(2ε)`.
const LN_GAMMA: f64 = 0.015_504_186_535_965_254;
/// Key bias: `1 - floor(ln(1e-9) / ln γ)`, so the key of 1e-9 is 1.
pub const BIAS: i32 = 1338;
/// The smallest magnitude with a nonzero key, γ^(1 - bias); smaller values map to key 0.
pub const NORM_MIN: f64 = 9.941_854_089_121_45e-10;
/// The largest key (the Agent's `+Inf` key; finite values above ~4.1e211 land here too).
pub const MAX_KEY: i16 = i16::MAX;
/// The most bins a sketch keeps; beyond it the lowest bins are collapsed.
pub const BIN_LIMIT: usize = 4096;
/// The largest count one bin holds; larger counts continue in another bin with the same key.
const MAX_BIN_COUNT: u16 = u16::MAX;
/// The largest weight one insert takes (a sample rate below 1/2³² counts as 1/2³²), so one sample can never
/// create more than 65,538 bins.
const MAX_WEIGHT: f64 = u32::MAX as f64;

/// The bin key of a value: `round_half_even(ln|v| / ln γ) + bias` clamped to `1..=32767`, negated for
/// negative values; 0 for |v| < [`NORM_MIN`] (and for NaN, which is never inserted).
pub fn key(v: f64) -> i16 {
    if v < 0.0 {
        return -key(-v);
    }
    if v.is_nan() || v < NORM_MIN {
        return 0;
    }
    let k = (v.ln() / LN_GAMMA).round_ties_even() + f64::from(BIAS);
    // In range after the clamp; `as` saturates for infinities.
    k.clamp(1.0, f64::from(MAX_KEY)) as i16
}

/// The value a key stands for: γ^(k - bias), the centre of the bin (keys are rounded to nearest).
pub fn key_value(k: i16) -> f64 {
    match k {
        0 => 0.0,
        k if k < 0 => -key_value(-k),
        k => (f64::from(i32::from(k) - BIAS) * LN_GAMMA).exp(),
    }
}

/// One sketch bin: a key and how many values fell into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bin {
    k: i16,
    n: u16,
}

/// An agent DDSketch with its summary statistics (`cnt`, `min`, `max`, `sum`, `avg`).
///
/// Insertion is exact about the summary and within ε = 1/128 relative error about the quantiles. Memory is
/// 4 bytes per bin, at most [`BIN_LIMIT`] bins (plus repeated keys for counts above 65535).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSketch {
    /// Sorted by key; within one key every bin but the last is full.
    bins: Vec<Bin>,
    cnt: i64,
    min: f64,
    max: f64,
    sum: f64,
    avg: f64,
}

impl Default for AgentSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentSketch {
    /// An empty sketch.
    pub const fn new() -> Self {
        Self {
            bins: Vec::new(),
            cnt: 0,
            min: 0.0,
            max: 0.0,
            sum: 0.0,
            avg: 0.0,
        }
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.cnt == 0
    }

    /// Number of values inserted, weighted by sample rate.
    pub fn count(&self) -> i64 {
        self.cnt
    }

    /// Smallest value inserted (0 when empty).
    pub fn min(&self) -> f64 {
        self.min
    }

    /// Largest value inserted (0 when empty).
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Sum of the values inserted, weighted by sample rate.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Average of the values inserted, updated incrementally like the Agent.
    pub fn avg(&self) -> f64 {
        self.avg
    }

    /// Number of bins (a key whose count exceeds 65535 uses several).
    pub fn bin_count(&self) -> usize {
        self.bins.len()
    }

    /// The bins as `(key, count)`, ascending by key.
    pub fn bins(&self) -> impl Iterator<Item = (i16, u16)> + '_ {
        self.bins.iter().map(|b| (b.k, b.n))
    }

    /// Forget everything, keeping the allocation.
    pub fn clear(&mut self) {
        self.bins.clear();
        self.cnt = 0;
        self.min = 0.0;
        self.max = 0.0;
        self.sum = 0.0;
        self.avg = 0.0;
    }

    /// Insert one value (the caller drops NaN and ±Inf, as the Agent does).
    pub fn insert(&mut self, v: f64) {
        if self.cnt == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.cnt += 1;
        self.sum += v;
        self.avg += (v - self.avg) / self.cnt as f64;
        self.add_to_bins(key(v), 1);
    }

    /// Insert a value sent with a sample rate, like the Agent's `quantile.Agent.Insert(v, rate)`: a rate outside
    /// `(0, 1]` counts as 1; otherwise `n = 1/rate` weighs the sum, and `trunc(n)` the count and the bin.
    pub fn insert_with_rate(&mut self, v: f64, rate: f64) {
        if !(rate > 0.0 && rate <= 1.0) || rate == 1.0 {
            self.insert(v);
            return;
        }
        let n = (1.0 / rate).min(MAX_WEIGHT);
        let whole = n.trunc();
        self.merge_summary(whole as i64, n * v, v, v, v);
        // `whole` is in 1..=u32::MAX.
        self.add_to_bins(key(v), whole as u64);
    }

    /// Insert a value `n` times.
    pub fn insert_n(&mut self, v: f64, n: u32) {
        if n == 0 {
            return;
        }
        self.merge_summary(i64::from(n), f64::from(n) * v, v, v, v);
        self.add_to_bins(key(v), u64::from(n));
    }

    /// Merge another sketch into this one: counts add up per key, the summary combines like the Agent's.
    pub fn merge(&mut self, other: &AgentSketch) {
        if other.is_empty() {
            return;
        }
        self.merge_summary(other.cnt, other.sum, other.min, other.max, other.avg);
        let mut merged = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut a, mut b) = (self.bins.as_slice(), other.bins.as_slice());
        loop {
            let k = match (a.first(), b.first()) {
                (None, None) => break,
                (Some(x), None) => x.k,
                (None, Some(y)) => y.k,
                (Some(x), Some(y)) => x.k.min(y.k),
            };
            let mut n = 0u64;
            for side in [&mut a, &mut b] {
                let run = side.iter().take_while(|bin| bin.k == k).count();
                n += side[..run].iter().map(|bin| u64::from(bin.n)).sum::<u64>();
                *side = &side[run..];
            }
            push_bins(&mut merged, k, n);
        }
        self.bins = merged;
        self.trim();
    }

    /// The value at quantile `q` (0 ≤ q ≤ 1): the Agent's rank `round_half_even(q·(cnt-1))`, answered with the
    /// centre of the bin holding that rank, clamped to `[min, max]`; within ε = 1/128 relative error of the exact
    /// quantile for values of magnitude ≥ [`NORM_MIN`]. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.is_empty() {
            return None;
        }
        if q <= 0.0 {
            return Some(self.min);
        }
        if q >= 1.0 {
            return Some(self.max);
        }
        let rank = (q * (self.bin_total() - 1) as f64).round_ties_even();
        Some(self.value_at_rank(rank as u64))
    }

    /// The value of the bin where the running count first exceeds `rank` (0-based), clamped to `[min, max]`.
    pub(crate) fn value_at_rank(&self, rank: u64) -> f64 {
        let mut seen = 0u64;
        for b in &self.bins {
            seen += u64::from(b.n);
            if seen > rank {
                return key_value(b.k).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Sum of the bin counts (equal to `count()` unless a weight was clamped).
    fn bin_total(&self) -> u64 {
        self.bins.iter().map(|b| u64::from(b.n)).sum()
    }

    /// The sketch as shipped in a `Dogsketch`, stamped with its bucket start.
    pub fn to_dogsketch(&self, ts: i64) -> DogSketch {
        DogSketch {
            ts,
            cnt: self.cnt,
            min: self.min,
            max: self.max,
            sum: self.sum,
            avg: self.avg,
            k: self.bins.iter().map(|b| i32::from(b.k)).collect(),
            n: self.bins.iter().map(|b| u32::from(b.n)).collect(),
        }
    }

    /// Combine a summary into ours, like the Agent's `summary.Merge`.
    fn merge_summary(&mut self, cnt: i64, sum: f64, min: f64, max: f64, avg: f64) {
        if self.cnt == 0 {
            (self.cnt, self.sum, self.min, self.max, self.avg) = (cnt, sum, min, max, avg);
            return;
        }
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        self.cnt += cnt;
        self.sum += sum;
        self.avg += (avg - self.avg) * cnt as f64 / self.cnt as f64;
    }

    /// Add `n` to key `k`: fill the key's last bin, then append bins after it.
    fn add_to_bins(&mut self, k: i16, mut n: u64) {
        let end = self.bins.partition_point(|b| b.k <= k);
        if end > 0 && self.bins[end - 1].k == k {
            let last = &mut self.bins[end - 1];
            let room = u64::from(MAX_BIN_COUNT - last.n);
            let add = room.min(n);
            // `add` ≤ room ≤ u16::MAX - last.n.
            last.n += add as u16;
            n -= add;
        }
        if n == 0 {
            return;
        }
        let mut extra = Vec::new();
        push_bins(&mut extra, k, n);
        self.bins.splice(end..end, extra);
        self.trim();
    }

    /// Keep at most [`BIN_LIMIT`] bins by folding the lowest ones into the lowest bin kept.
    fn trim(&mut self) {
        if self.bins.len() <= BIN_LIMIT {
            return;
        }
        let cut = self.bins.len() - BIN_LIMIT;
        let keep_k = self.bins[cut].k;
        let run_end = cut
            + self.bins[cut..]
                .iter()
                .take_while(|b| b.k == keep_k)
                .count();
        let n: u64 = self.bins[..run_end].iter().map(|b| u64::from(b.n)).sum();
        let mut folded = Vec::new();
        push_bins(&mut folded, keep_k, n);
        self.bins.splice(..run_end, folded);
    }
}

/// Append bins for key `k` holding `n` in total: full bins first, the remainder last.
fn push_bins(bins: &mut Vec<Bin>, k: i16, n: u64) {
    let full = n / u64::from(MAX_BIN_COUNT);
    let rest = n % u64::from(MAX_BIN_COUNT);
    for _ in 0..full {
        bins.push(Bin {
            k,
            n: MAX_BIN_COUNT,
        });
    }
    if rest > 0 {
        // `rest` < u16::MAX.
        bins.push(Bin { k, n: rest as u16 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constants_follow_from_epsilon_and_the_minimum() {
        assert_eq!(LN_GAMMA, (2.0 * EPS).ln_1p());
        assert_eq!(BIAS, 1 - (1e-9f64.ln() / LN_GAMMA).floor() as i32);
        assert_eq!(NORM_MIN, GAMMA.powf(f64::from(1 - BIAS)));
    }

    #[test]
    fn keys_match_the_protocols_table() {
        let table: &[(f64, i16)] = &[
            (1e-10, 0),
            (1e-9, 1),
            (1e-6, 447),
            (0.001, 892),
            (0.5, 1293),
            (1.0, 1338),
            (1.5, 1364),
            (2.0, 1383),
            (10.0, 1487),
            (100.0, 1635),
            (1000.0, 1784),
            (1e6, 2229),
            (1e9, 2675),
            (-1.0, -1338),
            (-10.0, -1487),
            (0.0, 0),
            (-1e-10, 0),
            (1e300, MAX_KEY),
            (-1e300, -MAX_KEY),
        ];
        for &(v, k) in table {
            assert_eq!(key(v), k, "key({v})");
        }
    }

    #[test]
    fn every_key_maps_back_to_itself() {
        for k in 1..MAX_KEY - 1 {
            let v = key_value(k);
            if v.is_finite() && v > 0.0 {
                assert_eq!(key(v), k);
                assert_eq!(key(-v), -k);
            }
        }
    }

    #[test]
    fn summary_statistics_are_exact() {
        let mut s = AgentSketch::new();
        for v in [3.0, -1.0, 10.0] {
            s.insert(v);
        }
        assert_eq!(
            (s.count(), s.min(), s.max(), s.sum()),
            (3, -1.0, 10.0, 12.0)
        );
        assert_eq!(s.avg(), 4.0);
        let d = s.to_dogsketch(1_700_000_000);
        assert_eq!(d.k, vec![-1338, key(3.0) as i32, 1487]);
        assert_eq!(d.n, vec![1, 1, 1]);
        assert_eq!(d.ts, 1_700_000_000);
    }

    #[test]
    fn a_sample_rate_weighs_the_sum_by_its_inverse_and_the_count_by_its_truncation() {
        let mut s = AgentSketch::new();
        s.insert_with_rate(2.0, 0.3); // n = 3.33…: count 3, sum 6.66…
        assert_eq!(s.count(), 3);
        assert!((s.sum() - 2.0 / 0.3).abs() < 1e-12);
        assert_eq!(s.bins().collect::<Vec<_>>(), vec![(1383, 3)]);
        let mut t = AgentSketch::new();
        for rate in [0.0, -1.0, 1.5, f64::NAN] {
            t.insert_with_rate(1.0, rate);
        }
        assert_eq!(t.count(), 4, "invalid rates count as 1");
    }

    #[test]
    fn counts_above_u16_continue_in_bins_with_the_same_key() {
        let mut s = AgentSketch::new();
        s.insert_n(1.0, 70_000);
        s.insert_n(1.0, 65_535);
        s.insert(2.0);
        assert_eq!(
            s.bins().collect::<Vec<_>>(),
            vec![(1338, 65_535), (1338, 65_535), (1338, 4_465), (1383, 1)]
        );
        assert_eq!(s.count(), 135_536);
    }

    #[test]
    fn more_than_4096_bins_collapse_the_lowest_into_the_lowest_kept() {
        let mut s = AgentSketch::new();
        for k in 1..=5000i16 {
            s.insert(key_value(k));
        }
        assert_eq!(s.bin_count(), BIN_LIMIT);
        let first = s.bins().next();
        assert_eq!(first, Some((5000 - 4096 + 1, 5000 - 4096 + 1)));
        assert_eq!(s.count(), 5000);
        assert_eq!(s.bins().map(|(_, n)| u64::from(n)).sum::<u64>(), 5000);
    }

    #[test]
    fn quantiles_of_an_empty_sketch_are_none_and_the_ends_are_min_and_max() {
        let mut s = AgentSketch::new();
        assert_eq!(s.quantile(0.5), None);
        for v in [5.0, 1.0, 3.0] {
            s.insert(v);
        }
        assert_eq!(s.quantile(0.0), Some(1.0));
        assert_eq!(s.quantile(1.0), Some(5.0));
        let median = s.quantile(0.5).unwrap_or_default();
        assert!((median - 3.0).abs() <= 3.0 / 128.0, "{median}");
    }

    fn values() -> impl Strategy<Value = Vec<f64>> {
        let magnitude = prop_oneof![1e-6..1e-3f64, 1e-3..1.0f64, 1.0..1e3f64, 1e3..1e12f64];
        let signed = (magnitude, any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m });
        proptest::collection::vec(signed, 1..400)
    }

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        let rank = (q * (sorted.len() - 1) as f64).round_ties_even() as usize;
        sorted[rank]
    }

    #[track_caller]
    fn assert_close(estimate: f64, exact: f64) {
        let err = (estimate - exact).abs() / exact.abs();
        assert!(err <= EPS, "estimate {estimate} exact {exact} error {err}");
    }

    proptest! {
        #[test]
        fn quantiles_are_within_one_128th_of_the_exact_value(vs in values(), q in 0.0..=1.0f64) {
            let mut s = AgentSketch::new();
            for &v in &vs {
                s.insert(v);
            }
            let mut sorted = vs.clone();
            sorted.sort_by(f64::total_cmp);
            assert_close(s.quantile(q).unwrap_or(f64::NAN), exact_quantile(&sorted, q));
        }

        #[test]
        fn merging_equals_inserting_everything_into_one_sketch(a in values(), b in values(), q in 0.0..=1.0f64) {
            let (mut sa, mut sb, mut all) = (AgentSketch::new(), AgentSketch::new(), AgentSketch::new());
            for &v in &a { sa.insert(v); all.insert(v); }
            for &v in &b { sb.insert(v); all.insert(v); }
            sa.merge(&sb);
            prop_assert_eq!(&sa.bins, &all.bins);
            prop_assert_eq!(sa.count(), all.count());
            prop_assert_eq!((sa.min(), sa.max()), (all.min(), all.max()));
            prop_assert!((sa.sum() - all.sum()).abs() <= 1e-9 * all.sum().abs().max(1.0));
            let mut sorted: Vec<f64> = a.iter().chain(&b).copied().collect();
            sorted.sort_by(f64::total_cmp);
            assert_close(sa.quantile(q).unwrap_or(f64::NAN), exact_quantile(&sorted, q));
        }
    }
}
