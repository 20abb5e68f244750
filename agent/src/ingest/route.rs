//! Which aggregate worker a line goes to: by metric name, so every context lives in exactly one worker.

use std::hash::Hasher;

use memchr::memchr;
use rustc_hash::FxHasher;

/// The shard (`0..shards`) of one DogStatsD line (without its `\n`).
///
/// A metric line goes by the hash of its name (the bytes before the first `:`), so all the lines of one
/// context, whatever their value, type, tags or tag order, reach the same shard, which aggregates them
/// exactly as a single aggregator would. Event (`_e{`) and service-check (`_sc`) lines, told apart by the
/// same prefixes as the parser, all go to shard 0, which keeps their order and their bound. Lines that
/// will not parse go wherever their bytes send them; they are counted there.
pub fn shard_of(line: &[u8], shards: usize) -> usize {
    if shards <= 1 || (line.first() == Some(&b'_') && is_event_or_check(line)) {
        return 0;
    }
    let name = memchr(b':', line)
        .and_then(|i| line.get(..i))
        .unwrap_or(line);
    let mut h = FxHasher::default();
    h.write(name);
    // Mix every bit into the high half, then map it onto 0..shards without a division.
    let mixed = mix(h.finish());
    ((u128::from(mixed) * shards as u128) >> 64) as usize
}

fn is_event_or_check(line: &[u8]) -> bool {
    line.starts_with(b"_e{") || line.starts_with(b"_sc")
}

/// The splitmix64 finalizer: every input bit affects every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_takes_everything() {
        for line in [&b"a:1|c"[..], b"_e{1,1}:a|b", b"", b"garbage"] {
            assert_eq!(shard_of(line, 1), 0);
            assert_eq!(shard_of(line, 0), 0);
        }
    }

    #[test]
    fn lines_of_one_name_go_to_one_shard_whatever_follows_the_name() {
        for shards in 2..=5 {
            let s = shard_of(b"http.requests:1|c", shards);
            assert!(s < shards);
            for other in [
                &b"http.requests:2|g|#b,a"[..],
                b"http.requests:1:2:3|d|@0.5|#a,b,host:x",
                b"http.requests:member|s",
                b"http.requests:1|c\r",
                b"http.requests:",
            ] {
                assert_eq!(
                    shard_of(other, shards),
                    s,
                    "{}",
                    String::from_utf8_lossy(other)
                );
            }
        }
    }

    #[test]
    fn events_and_service_checks_go_to_the_first_shard() {
        for line in [
            &b"_e{5,4}:title|text"[..],
            b"_e{0,0}:|",
            b"_sc|db|0",
            b"_sc.not.a.metric:1|c",
        ] {
            assert_eq!(shard_of(line, 4), 0);
        }
    }

    #[test]
    fn names_spread_over_the_shards() {
        let shards = 4;
        let mut per = [0usize; 4];
        for i in 0..4000 {
            per[shard_of(format!("app.metric{i}:1|c").as_bytes(), shards)] += 1;
        }
        for n in per {
            assert!((800..1200).contains(&n), "{per:?}");
        }
    }
}
