//! Finding a line's context from its bytes as sent, before any tag is split, hashed or sorted.
//!
//! A context's canonical key (tags without the special and global ones, sorted, de-duplicated) costs a pass
//! over every tag, a hash per tag and a sort. Clients send the same context spelled the same way line after
//! line, so each spelling seen (type class, whether the point was produced in-process, the name and the tag
//! list exactly as sent) is remembered with the table slot of the context it resolved to: a line whose
//! spelling is known hashes its raw name and tags once and goes straight to its context's slot. A new
//! spelling (a new context, or a known one with its tags in another order) takes the canonical path and is
//! remembered.
//!
//! A spelling is known by a 128-bit hash under a seed drawn at start, not by its bytes: an entry is 32 bytes
//! and a hit reads no bytes but the line's own, one memory access fewer per line than keeping the bytes
//! (docs/architecture.md, "Contexts"). Two spellings of different contexts would have to agree on 128
//! seeded bits to meet; the Agent itself tells contexts apart by a 64-bit hash alone.
//!
//! Slots move when the context table grows or shrinks, and are reused after a context is forgotten: both
//! clear or prune the spellings ([`Contexts`]), and every hit also checks the identity of the context in
//! the slot, so a spelling never reaches a forgotten context's successor.

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_128_with_seed;

use super::context::{Class, Context, Contexts, LineKey, Refused};

/// How a line spells its context: everything its canonical key is computed from, as sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spelling<'a> {
    pub class: Class,
    /// Produced in-process ([`OwnPoint`](super::OwnPoint)): never prefixed by the namespace.
    pub own: bool,
    pub name: &'a str,
    /// The tag list as sent (the text after `#`).
    pub tags: &'a str,
}

impl Spelling<'_> {
    /// What a spelling is known by: XXH3's 128-bit hashes of its name (seeded by `seed` and the head) and of
    /// its tags (seeded by `!seed`), combined. Two one-shot hashes of whole slices cost less than one
    /// streamed over the three parts.
    #[inline(always)]
    fn hash(&self, seed: u64) -> u128 {
        let head = u64::from(self.class as u8) << 8 | u64::from(self.own);
        xxh3_128_with_seed(self.name.as_bytes(), seed ^ head)
            ^ xxh3_128_with_seed(self.tags.as_bytes(), !seed)
    }
}

/// How many metric lines of a packet are parsed ahead of the one being inserted when looking ahead
/// ([`Contexts::look_ahead`]).
pub(super) const LOOK_AHEAD: usize = 2;

/// A spelling hashed ahead of its line ([`Contexts::look_ahead`]): the hash, and where the spelling's
/// text was (addresses in the packet being inserted, so equal places mean equal bytes).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ahead {
    hash: u128,
    /// The slot and identity of its context, when the spelling was known then.
    found: Option<(usize, usize)>,
    head: [u8; 2],
    name: (usize, usize),
    tags: (usize, usize),
}

impl Ahead {
    fn of(s: &Spelling<'_>, hash: u128, found: Option<(usize, usize)>) -> Self {
        Self {
            hash,
            found,
            head: [s.class as u8, u8::from(s.own)],
            name: (s.name.as_ptr() as usize, s.name.len()),
            tags: (s.tags.as_ptr() as usize, s.tags.len()),
        }
    }

    fn is(&self, s: &Spelling<'_>) -> bool {
        let other = Self::of(s, self.hash, None);
        self.head == other.head && self.name == other.name && self.tags == other.tags
    }
}

/// Ask the processor to start loading the cache line at `r` (a hint: nothing waits for it).
#[inline]
fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults; `r` is a valid reference anyway.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(r).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// One remembered spelling: its hash and its context.
#[derive(Debug)]
struct Alias {
    hash: u128,
    /// The context's slot in the context table, and its identity there ([`Context::id`]).
    slot: usize,
    id: usize,
}

/// The spellings of live contexts.
#[derive(Debug)]
pub(super) struct Spellings {
    table: HashTable<Alias>,
    /// This process's seed: hashes cannot be predicted from outside it.
    seed: u64,
}

impl Default for Spellings {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            seed: rand::random(),
        }
    }
}

impl Spellings {
    fn find(&self, hash: u128) -> Option<(usize, usize)> {
        self.table
            .find(hash as u64, |a| a.hash == hash)
            .map(|a| (a.slot, a.id))
    }

    /// Start loading the entry `hash` most likely has, without reading it (which would wait): the first
    /// entry whose control byte matches (a wrong guess, 1 in 128 per probed entry, costs a load only).
    fn prefetch(&self, hash: u128) {
        if let Some(a) = self.table.find(hash as u64, |_| true) {
            prefetch(a);
        }
    }

    fn remember(&mut self, hash: u128, slot: usize, id: usize) {
        let alias = Alias { hash, slot, id };
        self.table
            .insert_unique(hash as u64, alias, |a| a.hash as u64);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Forget every spelling (the default host changed: `host:` tags may now mean another context).
    pub fn clear(&mut self) {
        self.table = HashTable::new();
    }

    /// Keep the spellings for which `live(slot, id)` holds.
    pub fn retain(&mut self, mut live: impl FnMut(usize, usize) -> bool) {
        self.table.retain(|a| live(a.slot, a.id));
        if self.table.len() < self.table.capacity() / 4 {
            self.table
                .shrink_to(self.table.len() * 2, |a| a.hash as u64);
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.table.allocation_size()
    }
}

/// Spellings remembered at most per live context (plus a constant): a client that shuffles its tags
/// cannot grow them without bound; past it they are forgotten and relearned.
const SPELLINGS_PER_CONTEXT: usize = 2;
const SPELLINGS_SLACK: usize = 1024;

impl Contexts {
    /// Take the next metric line's spelling (`None`: no more lines), [`LOOK_AHEAD`] lines before it is
    /// inserted, and start loading what the lines in between will need, so the waits of three lines for
    /// memory overlap instead of coming one after the other: the new line's spelling is hashed and its
    /// entry in the spelling table prefetched; the line after the next one, whose entry was prefetched one
    /// line ago, is looked up and its context prefetched. Each line's [`Contexts::resolve`] must come
    /// before the next call. The spellings must borrow the packet being inserted, and
    /// [`Contexts::forget_ahead`] must be called before that packet's buffer is released.
    pub fn look_ahead(&mut self, s: Option<&Spelling<'_>>) {
        self.ahead.rotate_left(1);
        let newest = s.map(|s| {
            let hash = s.hash(self.spellings.seed);
            self.spellings.prefetch(hash);
            Ahead::of(s, hash, None)
        });
        self.ahead[LOOK_AHEAD] = newest;
        if let Some(a) = &mut self.ahead[1] {
            a.found = self.spellings.find(a.hash);
            // Only the address: reading the context here would wait for it.
            if let Some(c) = a.found.and_then(|(slot, _)| self.table.get_bucket(slot)) {
                prefetch(c);
            }
        }
    }

    /// Forget the looked-ahead spellings (their packet is done).
    pub fn forget_ahead(&mut self) {
        self.ahead = [None; LOOK_AHEAD + 1];
    }

    /// The context of a line spelled `s`: by its spelling when known, else by its canonical key (`key`,
    /// given the namespace, is only called then), created when new and under the limit.
    pub fn resolve<'a>(
        &mut self,
        s: &Spelling<'a>,
        key: impl FnOnce(&str) -> LineKey<'a>,
        now_bucket: i64,
    ) -> Result<&mut Context, Refused> {
        let (hash, found) = match self.ahead[0].take() {
            // Looked up ahead; the slot is checked below like any other, since the table may have moved.
            Some(a) if a.is(s) => (a.hash, a.found),
            _ => (s.hash(self.spellings.seed), None),
        };
        let holds = |(slot, id): &(usize, usize)| {
            self.table.get_bucket(*slot).is_some_and(|c| c.id() == *id)
        };
        if let Some((slot, _)) = found
            .filter(holds)
            .or_else(|| self.spellings.find(hash).filter(holds))
        {
            // Just checked: the slot holds the context.
            return self.table.get_bucket_mut(slot).ok_or(Refused::TooLong);
        }
        let key = key(self.namespace());
        let capacity = self.table.capacity();
        let (slot, id) = self.find_or_insert(&key, now_bucket)?;
        if self.table.capacity() != capacity {
            // The table was rebuilt: every remembered slot moved.
            self.spellings.clear();
        }
        if id != 0 {
            if self.spellings.len() >= SPELLINGS_PER_CONTEXT * self.table.len() + SPELLINGS_SLACK {
                self.spellings.clear();
            }
            self.spellings.remember(hash, slot, id);
        }
        // `find_or_insert` just answered this slot.
        self.table.get_bucket_mut(slot).ok_or(Refused::TooLong)
    }
}

#[cfg(test)]
mod tests {
    use super::super::context::{TagBuf, canonicalize, tag_hash};
    use super::*;

    fn key<'a>(name: &'a str, tags: &'a str) -> LineKey<'a> {
        let mut buf: TagBuf<'a> = tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| (tag_hash(t), t))
            .collect();
        canonicalize(&mut buf);
        LineKey {
            class: Class::Count,
            prefixed: false,
            name,
            host: None,
            tags: buf,
        }
    }

    fn spelling<'a>(name: &'a str, tags: &'a str) -> Spelling<'a> {
        Spelling {
            class: Class::Count,
            own: false,
            name,
            tags,
        }
    }

    #[test]
    fn every_spelling_of_a_context_reaches_it_and_only_it() {
        let mut contexts = Contexts::new(String::new(), 100_000);
        // Enough contexts for the table to grow several times while spellings are remembered.
        let names: Vec<String> = (0..3000).map(|i| format!("m{}", i % 300)).collect();
        let tags: Vec<String> = (0..3000).map(|i| format!("a:{i},b:{}", i % 7)).collect();
        let swapped: Vec<String> = (0..3000)
            .map(|i| format!("b:{},a:{i},a:{i}", i % 7))
            .collect();
        for round in 0..3 {
            for i in 0..3000 {
                let t = if round == 1 { &swapped[i] } else { &tags[i] };
                let ctx = contexts
                    .resolve(&spelling(&names[i], t), |_| key(&names[i], t), 0)
                    .unwrap();
                assert_eq!(ctx.name(), names[i]);
                let mut got: Vec<&str> = ctx.tags().collect();
                got.sort_unstable();
                let mut want: Vec<&str> = tags[i].split(',').collect();
                want.sort_unstable();
                assert_eq!(got, want);
                ctx.bucket_mut(0).count(1);
            }
        }
        assert_eq!(contexts.len(), 3000);
        assert!(contexts.iter().all(|c| c.current_samples() == 3));
        // Forgotten contexts take their spellings along; new ones reuse the slots safely.
        contexts.retain(|c| c.name() != "m1");
        assert_eq!(contexts.len(), 2990);
        for i in (0..3000).filter(|i| i % 300 == 1) {
            let t = format!("other:{i}");
            let ctx = contexts
                .resolve(&spelling("fresh", &t), |_| key("fresh", &t), 0)
                .unwrap();
            assert_eq!(ctx.name(), "fresh");
            let ctx = contexts
                .resolve(
                    &spelling(&names[i], &tags[i]),
                    |_| key(&names[i], &tags[i]),
                    0,
                )
                .unwrap();
            assert_eq!(ctx.name(), names[i]);
            assert_eq!(ctx.current_samples(), 0);
        }
    }

    #[test]
    fn a_hash_looked_up_ahead_serves_only_its_own_line() {
        let mut contexts = Contexts::new(String::new(), 100);
        for name in ["x", "y"] {
            contexts
                .resolve(&spelling(name, "a:1"), |_| key(name, "a:1"), 0)
                .unwrap();
        }
        let (x, y) = (spelling("x", "a:1"), spelling("y", "a:1"));
        let ahead = |contexts: &mut Contexts, s: &Spelling<'_>| {
            contexts.look_ahead(Some(s));
            for _ in 0..LOOK_AHEAD {
                contexts.look_ahead(None);
            }
        };
        // x is looked up ahead, then another line comes in its place.
        ahead(&mut contexts, &x);
        let ctx = contexts.resolve(&y, |_| key("y", "a:1"), 0).unwrap();
        assert_eq!(ctx.name(), "y");
        // Its own line uses it.
        ahead(&mut contexts, &x);
        let ctx = contexts
            .resolve(&x, |_| panic!("found by the hash looked up ahead"), 0)
            .unwrap();
        assert_eq!(ctx.name(), "x");
        assert_eq!(contexts.len(), 2);
    }

    #[test]
    fn spellings_stay_bounded_when_tags_come_in_ever_new_orders() {
        let mut contexts = Contexts::new(String::new(), 100);
        let tags: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        for shift in 0..5000 {
            let mut order = tags.clone();
            order.rotate_left(shift % 20);
            if shift % 40 >= 20 {
                order.reverse();
            }
            let t = order.join(",");
            assert!(
                contexts
                    .resolve(&spelling("m", &t), |_| key("m", &t), 0)
                    .is_ok()
            );
        }
        assert_eq!(contexts.len(), 1);
        assert!(contexts.spellings.len() <= SPELLINGS_PER_CONTEXT + SPELLINGS_SLACK);
    }
}
