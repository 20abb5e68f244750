//! Contexts: the identity of a series (type class, name, host, tags), stored once, found by one hash per line.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use smallvec::SmallVec;

use super::bucket::Bucket;

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

/// Tags of one line live here while the key is built; lines with more tags spill to the heap.
pub(super) type TagBuf<'a> = SmallVec<[&'a str; 16]>;

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
    /// Sorted, de-duplicated, without special tags and without the global tags (added back at flush).
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
        for t in &self.tags {
            h.write(t.as_bytes());
            h.write_u8(0xfe);
        }
        h.finish()
    }

    /// Total length of the tags joined by `,`.
    fn tags_len(&self) -> usize {
        self.tags.iter().map(|t| t.len()).sum::<usize>() + self.tags.len().saturating_sub(1)
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
    /// Buckets holding data, oldest first.
    pub buckets: SmallVec<[Bucket; 2]>,
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
        for (i, t) in key.tags.iter().enumerate() {
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
            buckets: SmallVec::new(),
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

    /// The context's own tags (not the global ones), sorted.
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

    /// Bytes this context holds on the heap for its identity.
    pub fn text_len(&self) -> usize {
        self.text.len()
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
        if self.text.len().saturating_sub(tags_start) != key.tags_len() {
            return false;
        }
        self.tags().eq(key.tags.iter().copied())
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX - 1)
}

/// Why a context could not be found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ContextLimitReached;

/// The live contexts: a slab of contexts and a hash table of `(hash, slab index)`.
#[derive(Debug)]
pub(super) struct Contexts {
    table: HashTable<(u64, u32)>,
    slots: Vec<Option<Context>>,
    free: Vec<u32>,
    limit: usize,
}

impl Contexts {
    pub fn new(limit: usize) -> Self {
        Self {
            table: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
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
        let slots = &self.slots;
        let found = self.table.find(hash, |&(h, id)| {
            h == hash
                && slots
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| c.matches(key, namespace))
        });
        let id = match found {
            Some(&(_, id)) => id,
            None => {
                if self.table.len() >= self.limit {
                    return Err(ContextLimitReached);
                }
                let ctx = Context::new(key, namespace, hash, now_bucket);
                let id = match self.free.pop() {
                    Some(id) => {
                        self.slots[id as usize] = Some(ctx);
                        id
                    }
                    None => {
                        // The limit keeps the slab far below u32::MAX entries.
                        let id = len32(self.slots.len());
                        self.slots.push(Some(ctx));
                        id
                    }
                };
                self.table.insert_unique(hash, (hash, id), |&(h, _)| h);
                id
            }
        };
        self.slots
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or(ContextLimitReached)
    }

    /// Visit every live context; remove those for which `keep` answers false.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Context) -> bool) {
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let Some(ctx) = slot else { continue };
            if keep(ctx) {
                continue;
            }
            let hash = ctx.hash;
            let id = len32(id);
            if let Ok(entry) = self.table.find_entry(hash, |&(_, i)| i == id) {
                entry.remove();
            }
            *slot = None;
            self.free.push(id);
        }
        // Give memory back after a burst of contexts has expired.
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        let live = self.slots.len();
        self.free.retain(|&id| (id as usize) < live);
        if live < self.slots.capacity() / 4 {
            self.slots.shrink_to(live * 2);
            self.free.shrink_to(live);
            self.table.shrink_to(self.table.len() * 2, |&(h, _)| h);
        }
    }

    /// Heap bytes held by the table and slab themselves (not counting what contexts own).
    pub fn overhead_bytes(&self) -> usize {
        self.table.allocation_size()
            + self.slots.capacity() * std::mem::size_of::<Option<Context>>()
            + self.free.capacity() * 4
    }

    /// Iterate the live contexts.
    pub fn iter(&self) -> impl Iterator<Item = &Context> {
        self.slots.iter().filter_map(Option::as_ref)
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
            tags: tags.iter().copied().collect(),
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
        assert_eq!(c.tags().collect::<Vec<_>>(), ["a:1", "b:2"]);
        assert_eq!(c.text_len(), "app.reqweb1a:1,b:2".len());
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
        contexts.slots.push(Some(ctx_b));
        contexts.table.insert_unique(ha, (ha, 0), |&(h, _)| h);
        let got = contexts
            .get_or_insert(&a, "", 0)
            .map(|c| c.name().to_owned());
        assert_eq!(got.as_deref(), Ok("a"));
        assert_eq!(contexts.len(), 2);
    }
}
