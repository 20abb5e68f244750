//! A sketch bucket as the values it stands for, for the formats that cannot carry a sketch (`forwarder`
//! and `emf`): each bin's value (the agent DDSketch mapping) repeated by its count, capped.

use crate::model::DogSketch;

/// Most values a sketch bucket expands into in the `forwarder` and `emf` formats.
pub const EXPANDED_VALUES_MAX: u64 = 1000;

/// agent DDSketch γ = 1 + 2/128, as `ln γ`.
pub(super) const LN_GAMMA: f64 = 0.015_504_186_535_965_254;

/// agent DDSketch key bias.
pub(super) const BIAS: i32 = 1338;

/// The value of an agent DDSketch bin key: γ^(k−1338), mirrored for negative keys, 0 for key 0.
pub fn bin_value(k: i32) -> f64 {
    match k {
        0 => 0.0,
        k if k > 0 => (f64::from(k - BIAS) * LN_GAMMA).exp(),
        k => -(f64::from(-k - BIAS) * LN_GAMMA).exp(),
    }
}

/// The values a sketch bucket stands for, ascending: each bin's value repeated by its count, at most
/// `cap` values (allotted to bins by largest remainder above that), the first and last replaced by the
/// exact `min` and `max`.
pub fn sketch_values(d: &DogSketch, cap: u64) -> Vec<f64> {
    let total: u64 = d.n.iter().map(|&n| u64::from(n)).sum();
    let counts: Vec<u64> = if total <= cap {
        d.n.iter().map(|&n| u64::from(n)).collect()
    } else {
        let mut c: Vec<u64> = d.n.iter().map(|&n| u64::from(n) * cap / total).collect();
        let mut rest: Vec<(u64, usize)> =
            d.n.iter()
                .enumerate()
                .map(|(i, &n)| (u64::from(n) * cap % total, i))
                .collect();
        rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let missing = cap - c.iter().sum::<u64>();
        for &(_, i) in rest.iter().take(missing as usize) {
            c[i] += 1;
        }
        c
    };
    let mut values = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
    for (&k, &c) in d.k.iter().zip(&counts) {
        let v = bin_value(k);
        values.extend(std::iter::repeat_n(v, c as usize));
    }
    if let Some(first) = values.first_mut()
        && d.min.is_finite()
    {
        *first = d.min;
    }
    if let Some(last) = values.last_mut()
        && d.max.is_finite()
    {
        *last = d.max;
    }
    values
}
