//! Contexts: the identity of a series (type class, name, host, tags), stored once, found by one hash per line.

use std::hash::Hasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rustc_hash::FxHasher;
use smallvec::SmallVec;

use super::bucket::{BUCKET_SECS, Bucket};

/// What a context aggregates; part of its identity, so `x:1|c` and `x:1|g` never share state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// `c` in Agent mapping: RATE.
    Count,
    /// `g`: GAUGE, last value.
    Gauge,
    /// `s`: GAUGE, distinct members.
    Set,
    /// `h`, `ms` in Agent mapping: aggregates and percentiles.
    Histogram,
    /// `d` (and `c`, `h`, `ms` in Lambda mapping): an agent DDSketch per bucket.
    Distribution,
    /// `c` with `T`: points forwarded with their own timestamps as RATE value/10.
    TimestampedCount,
    /// `g` with `T`: points forwarded with their own timestamps as GAUGE.
    TimestampedGauge,
}

/// Tags of one line with their hashes, while the key is built; lines with more tags spill to the heap.
pub(super) type TagBuf<'a> = SmallVec<[(u64, &'a str); 16]>;

/// The hash of one tag. Tags of a key are kept in the order of these hashes (ties by text): sorting and
/// de-duplicating then compares integers, not strings, and the order is as canonical as sorting by text.
pub(super) fn tag_hash(tag: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(tag.as_bytes());
    h.finish()
}

/// Put tags in canonical order and drop duplicates.
pub(super) fn canonicalize(tags: &mut TagBuf<'_>) {
    tags.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    tags.dedup();
}

/// The key of one metric line, borrowed from the packet: built, hashed and compared without allocating.
#[derive(Debug)]
pub(super) struct LineKey<'a> {
    pub class: Class,
    /// Whether the configured namespace prefixes `name`.
    pub prefixed: bool,
    /// The name as sent.
    pub name: &'a str,
    /// `Some` when a `host:` tag names a host other than the configured one.
    pub host: Option<&'a str>,
    /// In canonical order ([`canonicalize`]), without special tags and without the global tags (added back at
    /// flush).
    pub tags: TagBuf<'a>,
}

impl LineKey<'_> {
    /// The one hash of this line's key.
    pub fn hash(&self) -> u64 {
        let mut h = FxHasher::default();
        h.write_u8(self.class as u8);
        h.write_u8(u8::from(self.prefixed));
        h.write(self.name.as_bytes());
        // 0xff never occurs in UTF-8: it separates the fields.
        h.write_u8(0xff);
        if let Some(host) = self.host {
            h.write(host.as_bytes());
            h.write_u8(0xff);
        }
        for &(th, _) in &self.tags {
            h.write_u64(th);
        }
        h.finish()
    }

    /// Total length of the tags joined by `,`.
    fn tags_len(&self) -> usize {
        self.tags.iter().map(|(_, t)| t.len()).sum::<usize>() + self.tags.len().saturating_sub(1)
    }
}

/// Marks a context whose host is the configured one (its host is not stored).
const DEFAULT_HOST: u32 = u32::MAX;

/// One live context: its identity stored in one buffer, and its open and closed buckets.
#[derive(Debug)]
pub(super) struct Context {
    /// Name (namespace applied), then the host when it is not the default, then the tags joined by `,`
    /// (tags never contain `,`: the parser splits on it).
    text: Box<str>,
    name_len: u32,
    host_len: u32,
    pub class: Class,
    pub hash: u64,
    /// Start of the newest bucket that received a sample; contexts expire from it.
    pub last_bucket: i64,
    /// The newest bucket holding data (the one samples go to).
    current: Option<Bucket>,
    /// Older buckets still holding data, oldest first (usually empty: one closed bucket waits here between its
    /// end and the next flush).
    older: Vec<Bucket>,
}

impl Context {
    /// Store a line's key.
    fn new(key: &LineKey<'_>, namespace: &str, hash: u64, now_bucket: i64) -> Self {
        let prefix = if key.prefixed { namespace } else { "" };
        let host = key.host.unwrap_or("");
        let mut text =
            String::with_capacity(prefix.len() + key.name.len() + host.len() + key.tags_len());
        text.push_str(prefix);
        text.push_str(key.name);
        text.push_str(host);
        for (i, (_, t)) in key.tags.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(t);
        }
        Self {
            text: text.into_boxed_str(),
            name_len: len32(prefix.len() + key.name.len()),
            host_len: key.host.map_or(DEFAULT_HOST, |h| len32(h.len())),
            class: key.class,
            hash,
            last_bucket: now_bucket,
            current: None,
            older: Vec::new(),
        }
    }

    /// The metric name, namespace applied.
    pub fn name(&self) -> &str {
        self.text.get(..self.name_len as usize).unwrap_or("")
    }

    /// The host, `None` for the configured one.
    pub fn host(&self) -> Option<&str> {
        (self.host_len != DEFAULT_HOST).then(|| {
            let start = self.name_len as usize;
            self.text
                .get(start..start + self.host_len as usize)
                .unwrap_or("")
        })
    }

    /// The context's own tags (not the global ones), in canonical (hash) order.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        let start = self.name_len as usize
            + if self.host_len == DEFAULT_HOST {
                0
            } else {
                self.host_len as usize
            };
        let joined = self.text.get(start..).unwrap_or("");
        joined.split(',').filter(move |_| !joined.is_empty())
    }

    /// The bucket starting at `ts`, created when missing.
    pub fn bucket_mut(&mut self, ts: i64) -> &mut Bucket {
        let class = self.class;
        let new = || Bucket::new(ts, class);
        match &mut self.current {
            // Written this way (not with a guard binding) so the borrow ends on the other paths.
            Some(cur) if cur.ts == ts => {}
            Some(cur) if cur.ts < ts => {
                let old = std::mem::replace(cur, new());
                self.older.push(old);
            }
            Some(_) => {
                // The clock went back: an older bucket, kept in order.
                let at = self.older.partition_point(|b| b.ts < ts);
                if self.older.get(at).is_none_or(|b| b.ts != ts) {
                    self.older.insert(at, new());
                }
                return &mut self.older[at];
            }
            None => self.current = Some(new()),
        }
        self.current.get_or_insert_with(new)
    }

    /// True when no bucket holds data.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.older.is_empty()
    }

    /// Take the buckets closed at `now` (all of them when `all`), oldest first.
    pub fn take_closed(&mut self, now: i64, all: bool) -> impl Iterator<Item = Bucket> + '_ {
        let closed = |b: &Bucket| all || b.ts.saturating_add(BUCKET_SECS) <= now;
        let n = self.older.iter().take_while(|b| closed(b)).count();
        let current = if n == self.older.len() && self.current.as_ref().is_some_and(closed) {
            self.current.take()
        } else {
            None
        };
        self.older.drain(..n).chain(current)
    }

    /// Whether any bucket is closed at `now`.
    pub fn has_closed(&self, now: i64, all: bool) -> bool {
        let closed = |b: &Bucket| all || b.ts.saturating_add(BUCKET_SECS) <= now;
        self.older.first().is_some_and(closed) || self.current.as_ref().is_some_and(closed)
    }

    /// Free the list of older buckets once it is empty (it is needed for a few seconds every 10 s).
    pub fn release_older(&mut self) {
        if self.older.is_empty() {
            self.older = Vec::new();
        }
    }

    fn matches(&self, key: &LineKey<'_>, namespace: &str) -> bool {
        if self.class != key.class {
            return false;
        }
        let name = self.name();
        let name_ok = if key.prefixed {
            name.len() == namespace.len() + key.name.len()
                && name.starts_with(namespace)
                && name.ends_with(key.name)
        } else {
            name == key.name
        };
        if !name_ok || self.host() != key.host {
            return false;
        }
        let tags_start = self.name_len as usize + self.host().map_or(0, str::len);
        let Some(mut rest) = self.text.get(tags_start..) else {
            return false;
        };
        if rest.len() != key.tags_len() {
            return false;
        }
        // Same total length: compare tag by tag without searching for separators.
        for (i, (_, t)) in key.tags.iter().enumerate() {
            if i > 0 {
                match rest.strip_prefix(',') {
                    Some(r) => rest = r,
                    None => return false,
                }
            }
            match rest.strip_prefix(t) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX - 1)
}

/// Why a context could not be found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ContextLimitReached;

/// The live contexts, stored in the hash table itself: one probe reaches a context's key and its current
/// bucket.
#[derive(Debug)]
pub(super) struct Contexts {
    table: HashTable<Context>,
    limit: usize,
}

impl Contexts {
    pub fn new(limit: usize) -> Self {
        Self {
            table: HashTable::new(),
            limit,
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// The context of a line, created when new and under the limit.
    pub fn get_or_insert(
        &mut self,
        key: &LineKey<'_>,
        namespace: &str,
        now_bucket: i64,
    ) -> Result<&mut Context, ContextLimitReached> {
        let hash = key.hash();
        let full = self.table.len() >= self.limit;
        match self.table.entry(
            hash,
            |c| c.hash == hash && c.matches(key, namespace),
            |c| c.hash,
        ) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(_) if full => Err(ContextLimitReached),
            Entry::Vacant(e) => Ok(e
                .insert(Context::new(key, namespace, hash, now_bucket))
                .into_mut()),
        }
    }

    /// Visit every live context; remove those for which `keep` answers false.
    pub fn retain(&mut self, keep: impl FnMut(&mut Context) -> bool) {
        self.table.retain(keep);
        // Give memory back after a burst of contexts has expired.
        if self.table.len() < self.table.capacity() / 4 {
            self.table.shrink_to(self.table.len() * 2, |c| c.hash);
        }
    }

    /// Heap bytes held for the contexts: the table, each identity and each list of older buckets.
    pub fn heap_bytes(&self) -> usize {
        self.table.allocation_size()
            + self
                .table
                .iter()
                .map(|c| c.text.len() + c.older.capacity() * std::mem::size_of::<Bucket>())
                .sum::<usize>()
    }

    /// Iterate the live contexts.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Context> {
        self.table.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(name: &'a str, host: Option<&'a str>, tags: &[&'a str]) -> LineKey<'a> {
        LineKey {
            class: Class::Count,
            prefixed: false,
            name,
            host,
            tags: {
                let mut buf: TagBuf<'a> = tags.iter().map(|t| (tag_hash(t), *t)).collect();
                canonicalize(&mut buf);
                buf
            },
        }
    }

    #[test]
    fn a_context_stores_its_identity_once_and_reads_it_back() {
        let k = LineKey {
            prefixed: true,
            ..key("req", Some("web1"), &["a:1", "b:2"])
        };
        let c = Context::new(&k, "app.", k.hash(), 0);
        assert_eq!(c.name(), "app.req");
        assert_eq!(c.host(), Some("web1"));
        let mut tags: Vec<&str> = c.tags().collect();
        tags.sort_unstable();
        assert_eq!(tags, ["a:1", "b:2"]);
        assert_eq!(c.text.len(), "app.reqweb1a:1,b:2".len());
        let other = LineKey {
            prefixed: true,
            ..key("req", Some("web1"), &["a:1", "b:3"])
        };
        assert!(!c.matches(&other, "app."));
        assert!(c.matches(&k, "app."));
        let none = key("req", None, &[]);
        let c = Context::new(&none, "", none.hash(), 0);
        assert_eq!(c.host(), None);
        assert_eq!(c.tags().count(), 0);
    }

    #[test]
    fn keys_that_differ_anywhere_are_different_contexts() {
        let base = key("m", None, &["a", "b"]);
        let mut contexts = Contexts::new(100);
        let variants = [
            key("m", None, &["a", "b"]),
            key("n", None, &["a", "b"]),
            key("m", Some(""), &["a", "b"]),
            key("m", Some("h"), &["a", "b"]),
            key("m", None, &["a"]),
            key("m", None, &["a,b"]),
            key("m", None, &["ab"]),
            key("m", None, &[]),
            LineKey {
                class: Class::Gauge,
                ..key("m", None, &["a", "b"])
            },
            LineKey {
                prefixed: true,
                ..key("m", None, &["a", "b"])
            },
        ];
        for k in &variants {
            assert!(contexts.get_or_insert(k, "ns.", 0).is_ok());
        }
        assert_eq!(contexts.len(), variants.len());
        // The base is the first variant again.
        assert!(contexts.get_or_insert(&base, "ns.", 0).is_ok());
        assert_eq!(contexts.len(), variants.len());
    }

    #[test]
    fn the_limit_refuses_new_contexts_but_serves_existing_ones() {
        let mut contexts = Contexts::new(2);
        let (a, b, c) = (
            key("a", None, &[]),
            key("b", None, &[]),
            key("c", None, &[]),
        );
        assert!(contexts.get_or_insert(&a, "", 0).is_ok());
        assert!(contexts.get_or_insert(&b, "", 0).is_ok());
        assert_eq!(
            contexts.get_or_insert(&c, "", 0).err(),
            Some(ContextLimitReached)
        );
        assert!(contexts.get_or_insert(&a, "", 0).is_ok());
        contexts.retain(|ctx| ctx.name() != "a");
        assert_eq!(contexts.len(), 1);
        assert!(contexts.get_or_insert(&c, "", 0).is_ok());
        assert_eq!(contexts.iter().count(), 2);
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_the_stored_key() {
        let mut contexts = Contexts::new(10);
        let (a, b) = (key("a", None, &[]), key("b", None, &[]));
        let ha = a.hash();
        // Force both into the table under one hash.
        let ctx_b = Context::new(&b, "", ha, 0);
        contexts.table.insert_unique(ha, ctx_b, |c| c.hash);
        let got = contexts
            .get_or_insert(&a, "", 0)
            .map(|c| c.name().to_owned());
        assert_eq!(got.as_deref(), Ok("a"));
        assert_eq!(contexts.len(), 2);
    }
}
