//! The forwarder's side of the retry storage: which of the payloads it holds have a file, counted in
//! the telemetry. Write errors never stop a delivery: the payload stays in memory, counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::{Put, Recovered, Seq, Store, StoreError};
use crate::config::StorageConfig;
use crate::encode::Payload;
use crate::errors::Chain;
use crate::forward::DestinationId;
use crate::telemetry::Telemetry;

/// A payload's identity in memory: the address and length of its body. The forwarder never shares
/// a body between two payloads it holds (a split makes new bodies), and [`Durable`] keeps a reference
/// to every body it maps, so an address cannot be reused while mapped.
pub type BodyId = (usize, usize);

/// The identity of `p` (see [`BodyId`]).
pub fn body_id(p: &Payload) -> BodyId {
    (p.body.as_ptr() as usize, p.body.len())
}

/// A destination's retry storage as the forwarder uses it.
#[derive(Debug)]
pub struct Durable {
    store: Store,
    /// Payloads held in memory that have a file, and that file; the `Bytes` pins the body's address.
    files: HashMap<BodyId, (Seq, Bytes)>,
    /// The reverse of `files`, to find the payload of a file the size bound evicted.
    by_seq: HashMap<Seq, BodyId>,
    telemetry: Arc<Telemetry>,
    /// A write error is logged once until a write succeeds again (a full disk fails every write).
    logged_error: bool,
    /// The bytes and files this store last added to the process-wide gauges (`forward.storage_bytes`,
    /// `forward.storage_files` add up every destination's store).
    published: (u64, u64),
}

impl Durable {
    /// Open the storage of `destination` (the directory's name, see [`super::dir_name`]) and read back
    /// what a previous run left: the payloads to send again (each keeps its file until settled) and
    /// those over the size bound (for the fallback). Counts recovered points in `dest`'s ledger, and
    /// torn or corrupt files.
    ///
    /// # Errors
    /// The directory cannot be used, or another process holds it.
    pub fn open(
        cfg: &StorageConfig,
        destination: &str,
        dest: DestinationId,
        telemetry: Arc<Telemetry>,
    ) -> Result<(Self, Vec<Payload>, Vec<Payload>), StoreError> {
        let (store, rec) = Store::open(&cfg.path, destination, cfg.max_bytes)?;
        let Recovered {
            payloads,
            overflow,
            corrupt,
        } = rec;
        let mut me = Self {
            store,
            files: HashMap::new(),
            by_seq: HashMap::new(),
            telemetry,
            logged_error: false,
            published: (0, 0),
        };
        let t = &me.telemetry;
        let points: u64 = payloads.iter().map(|(_, p)| p.samples).sum::<u64>()
            + overflow.iter().map(|p| p.samples).sum::<u64>();
        t.recovered(dest, points);
        t.forward.storage_corrupt.fetch_add(corrupt, Relaxed);
        t.forward
            .storage_overflow
            .fetch_add(overflow.len() as u64, Relaxed);
        if !payloads.is_empty() || !overflow.is_empty() || corrupt > 0 {
            tracing::info!(
                dir = %me.store.dir().display(),
                payloads = payloads.len(),
                points,
                over_the_bound = overflow.len(),
                corrupt,
                "retry storage: sending again what a previous run left"
            );
        }
        let mut held = Vec::with_capacity(payloads.len());
        for (seq, p) in payloads {
            me.map(seq, &p);
            held.push(p);
        }
        me.publish();
        Ok((me, held, overflow))
    }

    fn map(&mut self, seq: Seq, p: &Payload) {
        let id = body_id(p);
        self.files.insert(id, (seq, p.body.clone()));
        self.by_seq.insert(seq, id);
    }

    /// Whether `p` has a file.
    pub fn has(&self, p: &Payload) -> bool {
        self.files.contains_key(&body_id(p))
    }

    /// Make sure `p` has a file before it waits for a retry (written at its first failure, kept
    /// across later ones). Returns the payloads whose files the size bound removed, oldest first:
    /// the caller takes them out of memory and gives them to the fallback. A payload larger than the
    /// whole bound, or one that cannot be written, stays in memory only (counted).
    #[must_use]
    pub fn keep(&mut self, p: &Payload) -> Vec<BodyId> {
        if self.has(p) {
            return Vec::new();
        }
        let evicted = match self.store.put(p) {
            Ok(Put::Stored { seq, evicted }) => {
                self.logged_error = false;
                self.telemetry.forward.storage_written.fetch_add(1, Relaxed);
                self.map(seq, p);
                evicted
            }
            Ok(Put::TooLarge) => {
                self.telemetry.forward.storage_errors.fetch_add(1, Relaxed);
                tracing::warn!(
                    bytes = p.body.len(),
                    "retry storage: a payload larger than DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES \
                     is kept in memory only"
                );
                Vec::new()
            }
            Err(e) => {
                self.telemetry.forward.storage_errors.fetch_add(1, Relaxed);
                if !std::mem::replace(&mut self.logged_error, true) {
                    tracing::error!(
                        error = %Chain(&e),
                        "retry storage: cannot write a payload; it is kept in memory only (logged \
                         once until a write succeeds)"
                    );
                }
                Vec::new()
            }
        };
        let ids = evicted
            .into_iter()
            .filter_map(|seq| self.by_seq.remove(&seq))
            .inspect(|id| {
                self.files.remove(id);
            })
            .collect();
        self.publish();
        ids
    }

    /// `p` is settled (delivered, dropped, or handed to the fallback): delete its file, if any.
    pub fn settled(&mut self, p: &Payload) {
        if let Some((seq, _)) = self.files.remove(&body_id(p)) {
            self.by_seq.remove(&seq);
            self.store.remove(seq);
            self.publish();
        }
    }

    /// Make what was written and deleted since the last call durable (once per delivery).
    pub fn sync(&mut self) {
        if let Err(e) = self.store.sync() {
            self.telemetry.forward.storage_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %Chain(&e), "retry storage: fsync failed");
        }
    }

    /// Bring the process-wide gauges up to date with this store (each store adds its own share).
    fn publish(&mut self) {
        let now = (self.store.bytes(), self.store.files() as u64);
        let (bytes, files) = std::mem::replace(&mut self.published, now);
        let f = &self.telemetry.forward;
        f.storage_bytes.fetch_add(now.0, Relaxed);
        f.storage_bytes.fetch_sub(bytes, Relaxed);
        f.storage_files.fetch_add(now.1, Relaxed);
        f.storage_files.fetch_sub(files, Relaxed);
    }
}
