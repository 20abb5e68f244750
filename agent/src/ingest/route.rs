//! Which aggregate worker a line goes to: by metric name and tag set, so one hot name's contexts spread
//! over every worker while each context still lives in exactly one.

use std::hash::Hasher;

use memchr::{memchr, memchr_iter, memrchr_iter};
use rustc_hash::FxHasher;

/// Tags a context key leaves out or keeps elsewhere, so routing must ignore them: `host:` (the host is a
/// separate part of the key, and the configured host is no host at all) and the Agent's metadata tags
/// (`dd.internal.entity_id:` and friends; every `dd.internal.` tag is ignored here, a superset).
const IGNORED_PREFIXES: [&[u8]; 2] = [b"host:", b"dd.internal."];

/// Distinct tags a line is routed by, at most; a line with more goes by its smallest and largest tag hash.
const SET_MAX: usize = 16;

/// How lines are spread over the aggregate workers.
///
/// A metric line goes by a hash of its name (the bytes before the first `:`) and of its tag set: the
/// wrapping sum of its distinct tag hashes (the smallest and the largest only beyond 16 distinct tags),
/// which no tag order and no repeated tag changes; one pass over the tags, no sort. Tags the
/// context key drops are left out too (the global tags, `host:`, metadata tags), so every line of one
/// context, whatever its value, type, tag order, repeats or special tags, reaches the same shard, which
/// aggregates it exactly as a single aggregator would; and the contexts of one hot name (one name, many tag
/// sets) spread over all the shards. Event (`_e{`) and service-check (`_sc`) lines, told apart by the same
/// prefixes as the parser, all go to shard 0, which keeps their order and their bound. Lines that will not
/// parse go wherever their bytes send them; they are counted there.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// Hashes of the global tags (`DD_TAGS`), sorted.
    global_hashes: Vec<u64>,
}

impl Route {
    /// Routing for aggregators whose global tags are `global_tags`.
    pub fn new(global_tags: &[String]) -> Route {
        let mut global_hashes: Vec<u64> =
            global_tags.iter().map(|t| tag_hash(t.as_bytes())).collect();
        global_hashes.sort_unstable();
        global_hashes.dedup();
        Route { global_hashes }
    }

    /// The shard (`0..shards`) of one DogStatsD line (without its `\n`).
    pub fn shard(&self, line: &[u8], shards: usize) -> usize {
        if shards <= 1 || (line.first() == Some(&b'_') && is_event_or_check(line)) {
            return 0;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr(b':', line) else {
            return self.pick(line, b"", shards);
        };
        let (name, rest) = line.split_at(colon);
        self.pick(name, tags_field(rest), shards)
    }

    /// The shard of a metric named `name` with `tags` (separated by `,`, as after a line's `#`): the
    /// shard of every line of that context.
    pub fn shard_of_parts(&self, name: &[u8], tags: &[u8], shards: usize) -> usize {
        if shards <= 1 {
            return 0;
        }
        self.pick(name, tags, shards)
    }

    fn pick(&self, name: &[u8], tags: &[u8], shards: usize) -> usize {
        // The distinct tag hashes, while there are at most `SET_MAX`; beyond, the smallest and the
        // largest only. Either way combined by a function of the tag set alone: a wrapping sum of the
        // distinct hashes (no order), or the pair.
        let mut set = [0u64; SET_MAX];
        let mut len = 0;
        let mut overflow = false;
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        let mut start = 0;
        for end in memchr_iter(b',', tags).chain(std::iter::once(tags.len())) {
            let tag = tags.get(start..end).unwrap_or_default();
            start = end + 1;
            if tag.is_empty() || is_ignored(tag) {
                continue;
            }
            let th = tag_hash(tag);
            if !self.global_hashes.is_empty() && self.global_hashes.binary_search(&th).is_ok() {
                continue;
            }
            lo = lo.min(th);
            hi = hi.max(th);
            if overflow || set[..len].contains(&th) {
                continue;
            }
            match set.get_mut(len) {
                Some(slot) => {
                    *slot = th;
                    len += 1;
                }
                None => overflow = true,
            }
        }
        let mut h = FxHasher::default();
        h.write(name);
        if overflow {
            h.write_u64(lo);
            h.write_u64(hi);
        } else {
            let sum = set[..len]
                .iter()
                .fold(0u64, |acc, &th| acc.wrapping_add(th));
            h.write_u64(sum);
        }
        h.write_usize(len);
        // Mix every bit into the high half, then map it onto 0..shards without a division.
        let mixed = mix(h.finish());
        ((u128::from(mixed) * shards as u128) >> 64) as usize
    }
}

/// The shard of a line for aggregators without global tags ([`Route::shard`]).
pub fn shard_of(line: &[u8], shards: usize) -> usize {
    Route::default().shard(line, shards)
}

fn tag_hash(tag: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(tag);
    h.finish()
}

/// The tags of a metric line's part from its first `:` on: the text after `#` of the last `|`-field that
/// starts with `#` (the parser keeps the last one), or nothing.
fn tags_field(rest: &[u8]) -> &[u8] {
    let mut end = rest.len();
    for pipe in memrchr_iter(b'|', rest) {
        if rest.get(pipe + 1) == Some(&b'#') {
            return rest.get(pipe + 2..end).unwrap_or(b"");
        }
        end = pipe;
    }
    b""
}

/// Whether the context key leaves `tag` out ([`IGNORED_PREFIXES`]); most tags fail the first byte.
fn is_ignored(tag: &[u8]) -> bool {
    matches!(tag.first(), Some(b'h' | b'd')) && IGNORED_PREFIXES.iter().any(|p| tag.starts_with(p))
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
    fn lines_of_one_context_go_to_one_shard_whatever_else_they_carry() {
        let route = Route::new(&["env:prod".to_owned(), "team:a".to_owned()]);
        for shards in 2..=5 {
            let s = route.shard(b"http.requests:1|c|#a,b", shards);
            assert!(s < shards);
            for other in [
                &b"http.requests:2|g|#b,a"[..],
                b"http.requests:1:2:3|d|@0.5|#a,b,host:x|T12",
                b"http.requests:member|s|#b,,a,b,a",
                b"http.requests:1|c|#a,b\r",
                b"http.requests:1|c|#a,env:prod,b,team:a,dd.internal.card:low",
                b"http.requests:1|c|#zz|#b,a|c:container",
                b"http.requests:1|c|#a,host:box,b",
            ] {
                assert_eq!(
                    route.shard(other, shards),
                    s,
                    "{}",
                    String::from_utf8_lossy(other)
                );
            }
            assert_eq!(route.shard_of_parts(b"http.requests", b"b,a", shards), s);
            // More than 16 distinct tags: by the smallest and largest, still whatever the order and repeats.
            let many: Vec<String> = (0..40).map(|i| format!("k{i}:v")).collect();
            let fwd = format!("wide:1|c|#{}", many.join(","));
            let mut back = many.clone();
            back.reverse();
            back.extend(many.iter().take(5).cloned());
            let back = format!("wide:1|c|#env:prod,{}", back.join(","));
            assert_eq!(
                route.shard(fwd.as_bytes(), shards),
                route.shard(back.as_bytes(), shards)
            );
            // No tags: the name alone decides, whatever fields follow.
            let bare = route.shard(b"m:1|c", shards);
            for other in [
                &b"m:2|g|@0.5"[..],
                b"m:1|c|#host:h,env:prod",
                b"m:",
                b"m:1|c|#",
            ] {
                assert_eq!(route.shard(other, shards), bare);
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

    #[test]
    fn the_tag_sets_of_one_hot_name_spread_over_the_shards() {
        let shards = 4;
        let mut per = [0usize; 4];
        for endpoint in 0..1000 {
            for status in [200, 201, 204, 301, 400, 401, 403, 404, 500, 503] {
                let line = format!(
                    "request.duration:1|d|#endpoint:/api/e{endpoint},status:{status},env:prod"
                );
                per[shard_of(line.as_bytes(), shards)] += 1;
            }
        }
        for n in per {
            assert!((2000..3000).contains(&n), "{per:?}");
        }
    }
}
