//! Contexts: the identity of a series (type class, name, host, tags), stored once, found by one hash per line.

use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rustc_hash::FxHasher;
use smallvec::SmallVec;

use super::bucket::{BUCKET_SECS, Bucket};
pub(super) use super::class::Class;
use super::raw::{Ahead, LOOK_AHEAD, Spellings};

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
    if tags.len() > 1 {
        tags.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        tags.dedup();
    }
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
        key_hash(
            self.class,
            self.prefixed,
            self.name,
            self.host,
            self.tags.iter().map(|&(h, _)| h),
        )
    }

    /// Total length of the tags joined by `,`.
    fn tags_len(&self) -> usize {
        self.tags.iter().map(|(_, t)| t.len()).sum::<usize>() + self.tags.len().saturating_sub(1)
    }
}

/// The hash of a context key, from a line or (when the table grows) from a stored context.
fn key_hash(
    class: Class,
    prefixed: bool,
    name: &str,
    host: Option<&str>,
    tag_hashes: impl Iterator<Item = u64>,
) -> u64 {
    let mut h = FxHasher::default();
    h.write_u8(class as u8);
    h.write_u8(u8::from(prefixed));
    h.write(name.as_bytes());
    // 0xff never occurs in UTF-8: it separates the fields.
    h.write_u8(0xff);
    if let Some(host) = host {
        h.write(host.as_bytes());
        h.write_u8(0xff);
    }
    for th in tag_hashes {
        h.write_u64(th);
    }
    h.finish()
}

/// Marks a context whose host is the configured one (its host is not stored).
const DEFAULT_HOST: u16 = u16::MAX;

/// One live context: its identity in one buffer, its newest bucket inline, older buckets (rarely any) behind a
/// pointer. 64 bytes, one cache line: the hash table stores contexts in place, so finding a line's context and
/// updating its bucket touch one line of the table plus the identity buffer.
#[derive(Debug)]
#[repr(align(64))]
pub(super) struct Context {
    /// Name (namespace applied), then the host when it is not the default, then the tags joined by `,` in
    /// canonical order (tags never contain `,`: the parser splits on it).
    text: Box<str>,
    name_len: u16,
    /// [`DEFAULT_HOST`] for the configured host.
    host_len: u16,
    pub class: Class,
    /// Whether the namespace was prepended to the name as sent (needed to recompute the hash).
    prefixed: bool,
    /// The newest bucket: where samples go. Once flushed it stays as an empty marker whose start tells how long
    /// the context has been idle.
    current: Bucket,
    /// Older buckets still holding data, oldest first: usually none, one between a bucket's end and the next
    /// flush.
    older: Option<Box<Older>>,
}

/// Buckets older than the current one, oldest first.
#[derive(Debug, Default)]
struct Older(Vec<Bucket>);

/// Why a line's context could not be found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The live context limit is reached.
    Limit,
    /// The name or the host is longer than 65,534 bytes (only possible with a read buffer above 64 KiB).
    TooLong,
}

impl Context {
    /// Store a line's key; the context starts idle in the bucket `now_bucket`.
    fn new(key: &LineKey<'_>, namespace: &str, now_bucket: i64) -> Result<Self, Refused> {
        let prefix = if key.prefixed { namespace } else { "" };
        let host = key.host.unwrap_or("");
        let name_len =
            u16::try_from(prefix.len() + key.name.len()).map_err(|_| Refused::TooLong)?;
        let host_len = match key.host {
            None => DEFAULT_HOST,
            Some(h) => u16::try_from(h.len())
                .ok()
                .filter(|&n| n != DEFAULT_HOST)
                .ok_or(Refused::TooLong)?,
        };
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
        Ok(Self {
            text: text.into_boxed_str(),
            name_len,
            host_len,
            class: key.class,
            prefixed: key.prefixed,
            current: Bucket::idle(now_bucket),
            older: None,
        })
    }

    /// What tells this context from every other live one wherever it moves in the table: the address of its
    /// identity buffer; 0 (no identity) for an empty one, which has no address of its own.
    pub fn id(&self) -> usize {
        if self.text.is_empty() {
            0
        } else {
            self.text.as_ptr() as usize
        }
    }

    /// Samples in the newest bucket.
    #[cfg(test)]
    pub fn current_samples(&self) -> u32 {
        self.current.samples
    }

    /// The metric name, namespace applied.
    pub fn name(&self) -> &str {
        self.text.get(..usize::from(self.name_len)).unwrap_or("")
    }

    /// The host, `None` for the configured one.
    pub fn host(&self) -> Option<&str> {
        (self.host_len != DEFAULT_HOST).then(|| {
            let start = usize::from(self.name_len);
            self.text
                .get(start..start + usize::from(self.host_len))
                .unwrap_or("")
        })
    }

    /// The context's own tags (not the global ones), in canonical (hash) order.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        let joined = self.text.get(self.tags_start()..).unwrap_or("");
        joined.split(',').filter(move |_| !joined.is_empty())
    }

    fn tags_start(&self) -> usize {
        usize::from(self.name_len) + self.host().map_or(0, str::len)
    }

    /// Whether this context is the one of a line's key.
    fn matches(&self, key: &LineKey<'_>, namespace: &str) -> bool {
        if self.class != key.class || self.prefixed != key.prefixed {
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
        let Some(mut rest) = self.text.get(self.tags_start()..) else {
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

    /// The hash the context was stored under, recomputed (when the table grows or shrinks).
    fn rehash(&self, namespace: &str) -> u64 {
        let name = self.name();
        let sent = if self.prefixed {
            name.get(namespace.len()..).unwrap_or(name)
        } else {
            name
        };
        key_hash(
            self.class,
            self.prefixed,
            sent,
            self.host(),
            self.tags().map(tag_hash),
        )
    }

    /// Start of the newest bucket that received data; the context expires from it.
    pub fn last_bucket(&self) -> i64 {
        self.current.ts
    }

    /// The bucket starting at `ts`, created when missing.
    pub fn bucket_mut(&mut self, ts: i64) -> &mut Bucket {
        let class = self.class;
        if ts > self.current.ts {
            let old = std::mem::replace(&mut self.current, Bucket::idle(ts));
            if old.has_data() {
                self.older.get_or_insert_with(Box::default).0.push(old);
            }
        }
        if ts == self.current.ts {
            self.current.start(class);
            return &mut self.current;
        }
        // The clock went back: an older bucket, kept in order.
        let older = &mut self.older.get_or_insert_with(Box::default).0;
        let at = older.partition_point(|b| b.ts < ts);
        if older.get(at).is_none_or(|b| b.ts != ts) {
            older.insert(at, Bucket::idle(ts));
        }
        let bucket = &mut older[at];
        bucket.start(class);
        bucket
    }

    /// True when no bucket holds data.
    pub fn is_empty(&self) -> bool {
        !self.current.has_data() && self.older.is_none()
    }

    /// Whether a bucket is due at `now`: closed (`start + 10 <= now`), or any at all when `all`; timestamped
    /// points are always due.
    fn due(&self, b: &Bucket, now: i64, all: bool) -> bool {
        all || matches!(
            self.class,
            Class::TimestampedCount | Class::TimestampedGauge
        ) || b.ts.saturating_add(BUCKET_SECS) <= now
    }

    /// Whether any bucket is due at `now`.
    pub fn has_due(&self, now: i64, all: bool) -> bool {
        self.older
            .as_ref()
            .and_then(|o| o.0.first())
            .is_some_and(|b| self.due(b, now, all))
            || (self.current.has_data() && self.due(&self.current, now, all))
    }

    /// Take the buckets due at `now`, oldest first.
    pub fn take_due(&mut self, now: i64, all: bool) -> Vec<Bucket> {
        let mut out = match self.older.take() {
            None => Vec::new(),
            Some(older) => {
                let mut all_older = older.0;
                let n = all_older
                    .iter()
                    .take_while(|b| self.due(b, now, all))
                    .count();
                if n < all_older.len() {
                    self.older = Some(Box::new(Older(all_older.split_off(n))));
                }
                all_older
            }
        };
        if self.older.is_none() && self.current.has_data() && self.due(&self.current, now, all) {
            out.push(self.current.take());
        }
        out
    }
}

/// The live context limit (`DD_AGGREGATE_CONTEXT_LIMIT`), shared by the aggregators of every worker so it
/// bounds their total. Touched only when a context is made or forgotten, never per line.
#[derive(Debug)]
pub(super) struct Budget {
    limit: usize,
    live: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            live: AtomicUsize::new(0),
        })
    }

    /// Reserve room for one more context; false at the limit.
    fn take(&self) -> bool {
        self.live
            .fetch_update(Relaxed, Relaxed, |n| (n < self.limit).then_some(n + 1))
            .is_ok()
    }

    /// Give back room for `n` forgotten contexts.
    fn give(&self, n: usize) {
        if n > 0 {
            self.live.fetch_sub(n, Relaxed);
        }
    }
}

/// The live contexts, stored in the hash table itself.
#[derive(Debug)]
pub(super) struct Contexts {
    pub(super) table: HashTable<Context>,
    /// How the live contexts were spelled ([`super::raw`]).
    pub(super) spellings: Spellings,
    /// The spelling hashes of the line being inserted and of the [`LOOK_AHEAD`] lines parsed after it,
    /// oldest first ([`Contexts::look_ahead`]).
    pub(super) ahead: [Option<Ahead>; LOOK_AHEAD + 1],
    /// The namespace (with its `.`), prepended to names that are not exempt.
    namespace: String,
    budget: Arc<Budget>,
}

impl Contexts {
    /// Contexts with a limit of their own.
    #[cfg(test)]
    pub fn new(namespace: String, limit: usize) -> Self {
        Self::sharing(namespace, Budget::new(limit))
    }

    /// Contexts counted against `budget`, which other [`Contexts`] may share.
    pub fn sharing(namespace: String, budget: Arc<Budget>) -> Self {
        Self {
            table: HashTable::new(),
            spellings: Spellings::default(),
            ahead: [None; LOOK_AHEAD + 1],
            namespace,
            budget,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// The context of a line, created when new and under the limit.
    #[cfg(test)]
    pub fn get_or_insert(
        &mut self,
        key: &LineKey<'_>,
        now_bucket: i64,
    ) -> Result<&mut Context, Refused> {
        let (slot, _) = self.find_or_insert(key, now_bucket)?;
        self.table.get_bucket_mut(slot).ok_or(Refused::TooLong)
    }

    /// The table slot and [`Context::id`] of a line's context, created when new and under the limit.
    pub(super) fn find_or_insert(
        &mut self,
        key: &LineKey<'_>,
        now_bucket: i64,
    ) -> Result<(usize, usize), Refused> {
        let hash = key.hash();
        let ns = self.namespace.as_str();
        let entry = match self
            .table
            .entry(hash, |c| c.matches(key, ns), |c| c.rehash(ns))
        {
            Entry::Occupied(e) => e,
            Entry::Vacant(_) if !self.budget.take() => return Err(Refused::Limit),
            Entry::Vacant(e) => match Context::new(key, ns, now_bucket) {
                Ok(ctx) => e.insert(ctx),
                Err(refused) => {
                    self.budget.give(1);
                    return Err(refused);
                }
            },
        };
        Ok((entry.bucket_index(), entry.get().id()))
    }

    /// Visit every live context; remove those for which `keep` answers false.
    pub fn retain(&mut self, keep: impl FnMut(&mut Context) -> bool) {
        let before = self.table.len();
        self.table.retain(keep);
        self.budget.give(before - self.table.len());
        // Give memory back after a burst of contexts has expired.
        if self.table.len() < self.table.capacity() / 4 {
            let ns = self.namespace.as_str();
            self.table.shrink_to(self.table.len() * 2, |c| c.rehash(ns));
            // Every slot moved.
            self.spellings.clear();
        } else if self.table.len() < before {
            let table = &self.table;
            self.spellings
                .retain(|slot, id| table.get_bucket(slot).is_some_and(|c| c.id() == id));
        }
    }

    /// Heap bytes held for the contexts: the table (contexts and their current buckets) and each identity.
    pub fn heap_bytes(&self) -> usize {
        self.table.allocation_size()
            + self.table.iter().map(|c| c.text.len()).sum::<usize>()
            + self.spellings.heap_bytes()
    }

    /// Iterate the live contexts.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Context> {
        self.table.iter()
    }
}

impl Drop for Contexts {
    fn drop(&mut self) {
        self.budget.give(self.table.len());
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
    fn a_context_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Context>(), 64);
    }

    #[test]
    fn a_context_stores_its_identity_once_and_reads_it_back() {
        let k = LineKey {
            prefixed: true,
            ..key("req", Some("web1"), &["a:1", "b:2"])
        };
        let c = Context::new(&k, "app.", 0).unwrap();
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
        assert_eq!(c.rehash("app."), k.hash());
        let none = key("req", None, &[]);
        let c = Context::new(&none, "", 0).unwrap();
        assert_eq!(c.host(), None);
        assert_eq!(c.tags().count(), 0);
        assert_eq!(c.rehash(""), none.hash());
    }

    #[test]
    fn names_and_hosts_longer_than_64_kib_are_refused() {
        let long = "x".repeat(70_000);
        assert_eq!(
            Context::new(&key(&long, None, &[]), "", 0).err(),
            Some(Refused::TooLong)
        );
        let k = key("m", Some(&long), &[]);
        assert_eq!(Context::new(&k, "", 0).err(), Some(Refused::TooLong));
    }

    #[test]
    fn keys_that_differ_anywhere_are_different_contexts() {
        let base = key("m", None, &["a", "b"]);
        let mut contexts = Contexts::new("ns.".to_owned(), 100);
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
            assert!(contexts.get_or_insert(k, 0).is_ok());
        }
        assert_eq!(contexts.len(), variants.len());
        // The base is the first variant again.
        assert!(contexts.get_or_insert(&base, 0).is_ok());
        assert_eq!(contexts.len(), variants.len());
    }

    #[test]
    fn contexts_are_found_again_after_the_table_grows() {
        let mut contexts = Contexts::new("ns.".to_owned(), 10_000);
        let names: Vec<String> = (0..3000).map(|i| format!("m{i}")).collect();
        let tags: Vec<String> = (0..3000).map(|i| format!("t:{i}")).collect();
        let keys: Vec<LineKey<'_>> = names
            .iter()
            .zip(&tags)
            .enumerate()
            .map(|(i, (n, t))| LineKey {
                prefixed: i % 2 == 0,
                ..key(n, (i % 3 == 0).then_some("h"), &[t, "z"])
            })
            .collect();
        for k in &keys {
            assert!(contexts.get_or_insert(k, 0).is_ok());
        }
        for k in &keys {
            assert!(contexts.get_or_insert(k, 0).is_ok());
        }
        assert_eq!(contexts.len(), keys.len());
    }

    #[test]
    fn the_limit_refuses_new_contexts_but_serves_existing_ones() {
        let mut contexts = Contexts::new(String::new(), 2);
        let (a, b, c) = (
            key("a", None, &[]),
            key("b", None, &[]),
            key("c", None, &[]),
        );
        assert!(contexts.get_or_insert(&a, 0).is_ok());
        assert!(contexts.get_or_insert(&b, 0).is_ok());
        assert_eq!(contexts.get_or_insert(&c, 0).err(), Some(Refused::Limit));
        assert!(contexts.get_or_insert(&a, 0).is_ok());
        contexts.retain(|ctx| ctx.name() != "a");
        assert_eq!(contexts.len(), 1);
        assert!(contexts.get_or_insert(&c, 0).is_ok());
        assert_eq!(contexts.iter().count(), 2);
    }

    #[test]
    fn contexts_sharing_a_budget_are_bounded_together_and_give_back_what_they_forget() {
        let budget = Budget::new(3);
        let mut left = Contexts::sharing(String::new(), Arc::clone(&budget));
        let mut right = Contexts::sharing(String::new(), Arc::clone(&budget));
        for name in ["a", "b"] {
            assert!(left.get_or_insert(&key(name, None, &[]), 0).is_ok());
        }
        assert!(right.get_or_insert(&key("c", None, &[]), 0).is_ok());
        assert_eq!(
            right.get_or_insert(&key("d", None, &[]), 0).err(),
            Some(Refused::Limit)
        );
        // Known contexts are still served at the limit.
        assert!(left.get_or_insert(&key("a", None, &[]), 0).is_ok());
        left.retain(|ctx| ctx.name() != "a");
        assert!(right.get_or_insert(&key("d", None, &[]), 0).is_ok());
        assert_eq!(
            right.get_or_insert(&key("e", None, &[]), 0).err(),
            Some(Refused::Limit)
        );
        drop(left);
        assert!(right.get_or_insert(&key("e", None, &[]), 0).is_ok());
        assert_eq!(budget.live.load(Relaxed), 3);
        // A refused key takes no room.
        let long = "x".repeat(70_000);
        drop(right);
        let mut c = Contexts::sharing(String::new(), Arc::clone(&budget));
        assert_eq!(
            c.get_or_insert(&key(&long, None, &[]), 0).err(),
            Some(Refused::TooLong)
        );
        assert_eq!(budget.live.load(Relaxed), 0);
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_the_stored_key() {
        let mut contexts = Contexts::new(String::new(), 10);
        let (a, b) = (key("a", None, &[]), key("b", None, &[]));
        let ha = a.hash();
        // Force both into the table under one hash.
        let ctx_b = Context::new(&b, "", 0).unwrap();
        contexts.table.insert_unique(ha, ctx_b, |c| c.rehash(""));
        assert!(contexts.budget.take());
        let got = contexts.get_or_insert(&a, 0).map(|c| c.name().to_owned());
        assert_eq!(got.as_deref(), Ok("a"));
        assert_eq!(contexts.len(), 2);
    }

    #[test]
    fn buckets_roll_over_and_come_out_oldest_first_when_due() {
        let mut c = Context::new(&key("m", None, &[]), "", 0).unwrap();
        for ts in [0, 10, 20, 10] {
            c.bucket_mut(ts).count(1);
        }
        let due = |c: &mut Context, now| -> Vec<(i64, u32)> {
            c.take_due(now, false)
                .iter()
                .map(|b| (b.ts, b.samples))
                .collect()
        };
        assert!(c.has_due(15, false));
        assert_eq!(due(&mut c, 15), [(0, 1)]);
        assert_eq!(due(&mut c, 29), [(10, 2)]);
        assert!(!c.has_due(29, false));
        assert_eq!(due(&mut c, 30), [(20, 1)]);
        assert!(c.is_empty());
        assert_eq!(c.last_bucket(), 20);
    }
}
