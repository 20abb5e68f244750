//! The size bound of a storage directory, as data: which files it holds, oldest first, and which
//! ones must leave when a new one does not fit. Pure: no I/O.

use std::collections::BTreeMap;

/// A stored file's sequence number: files are written in increasing order, so the smallest is the
/// oldest.
pub type Seq = u64;

/// The files of one storage directory with their sizes, bounded in bytes
/// (`DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES`).
#[derive(Debug)]
pub struct Bound {
    files: BTreeMap<Seq, u64>,
    bytes: u64,
    max_bytes: u64,
}

impl Bound {
    /// An empty directory that may hold `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            files: BTreeMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Files held.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether a file of `len` bytes can be held at all (it is not larger than the whole bound).
    pub fn fits(&self, len: u64) -> bool {
        len <= self.max_bytes
    }

    /// Add file `seq` of `len` bytes; returns the files that must leave to stay within the bound,
    /// oldest first. Never returns `seq` itself when it [`fits`](Bound::fits); the caller checks that
    /// first and does not write a file that cannot fit.
    #[must_use]
    pub fn insert(&mut self, seq: Seq, len: u64) -> Vec<Seq> {
        if let Some(old) = self.files.insert(seq, len) {
            self.bytes -= old;
        }
        self.bytes += len;
        let mut evicted = Vec::new();
        while self.bytes > self.max_bytes {
            let Some((&oldest, &size)) = self.files.iter().next() else {
                break;
            };
            if oldest == seq && self.files.len() == 1 {
                break;
            }
            let victim = if oldest == seq {
                // Keep the newest; the next oldest goes.
                match self.files.iter().nth(1) {
                    Some((&s, &sz)) => (s, sz),
                    None => break,
                }
            } else {
                (oldest, size)
            };
            self.files.remove(&victim.0);
            self.bytes -= victim.1;
            evicted.push(victim.0);
        }
        evicted
    }

    /// Forget file `seq` (settled); returns whether it was held.
    pub fn remove(&mut self, seq: Seq) -> bool {
        match self.files.remove(&seq) {
            Some(len) => {
                self.bytes -= len;
                true
            }
            None => false,
        }
    }

    /// Whether file `seq` is held.
    #[cfg(test)]
    pub fn contains(&self, seq: Seq) -> bool {
        self.files.contains_key(&seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_files_leave_first_when_a_new_one_does_not_fit() {
        let mut b = Bound::new(100);
        assert!(b.insert(1, 40).is_empty());
        assert!(b.insert(2, 40).is_empty());
        assert_eq!(b.bytes(), 80);
        assert_eq!(b.insert(3, 50), [1]);
        assert_eq!(b.bytes(), 90);
        assert_eq!(b.insert(4, 100), [2, 3]);
        assert_eq!((b.len(), b.bytes()), (1, 100));
        assert!(b.contains(4));
    }

    #[test]
    fn recovered_files_inserted_out_of_order_still_leave_oldest_first() {
        let mut b = Bound::new(100);
        assert!(b.insert(7, 30).is_empty());
        assert!(b.insert(3, 30).is_empty());
        assert!(b.insert(5, 30).is_empty());
        // 9 is the newest; 3 then 5 are the oldest.
        assert_eq!(b.insert(9, 60), [3, 5]);
        // Re-inserting an older file that overflows keeps it and evicts the next oldest.
        let mut b = Bound::new(50);
        assert!(b.insert(8, 30).is_empty());
        assert_eq!(b.insert(2, 30), [8]);
        assert!(b.contains(2));
    }

    #[test]
    fn a_file_larger_than_the_bound_does_not_fit() {
        let b = Bound::new(10);
        assert!(b.fits(10));
        assert!(!b.fits(11));
    }

    #[test]
    fn removing_a_settled_file_frees_its_bytes_once() {
        let mut b = Bound::new(100);
        assert!(b.insert(1, 60).is_empty());
        assert!(b.remove(1));
        assert!(!b.remove(1));
        assert_eq!(b.bytes(), 0);
        assert!(b.insert(2, 100).is_empty());
    }
}
