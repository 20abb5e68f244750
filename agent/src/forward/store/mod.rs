//! On-disk retry storage (`DD_FORWARDER_STORAGE_PATH`, `DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES`): the
//! payloads waiting for a retry, one file each, so that a process killed during an outage (SIGKILL,
//! the OOM killer, a reboot) sends them at its next start.
//!
//! ```text
//! <DD_FORWARDER_STORAGE_PATH>/
//!   <destination>/            one directory per destination (intake), like the Agent's per domain
//!     lock                    flock(2)-ed by the process using the directory
//!     00000000000000a3.oprq   one payload (format.rs), named by its sequence number
//!     00000000000000a4.tmp    a write in progress; left over after a crash: torn, removed at start
//! ```
//!
//! - [`Store::put`] writes a payload to `<seq>.tmp` and renames it to `<seq>.oprq` at once, so a
//!   killed process leaves whole files behind (the page cache survives SIGKILL); [`Store::sync`]
//!   then fsyncs the files written and the directory, once per batch (one delivery), so they also
//!   survive a power loss. A file that a power loss tore anyway fails its checksum at the next start.
//! - [`Store::remove`] deletes a payload's file once its fate is settled (delivered, fell back,
//!   dropped).
//! - [`Store::open`] takes the directory's lock (a second process on the same directory gets
//!   [`StoreError::Locked`]), reads back what a previous run left, oldest first, and counts and
//!   deletes torn or corrupt files instead of failing.
//! - The directory's size is bounded (`bound.rs`): when a new file does not fit, the oldest files
//!   leave and their payloads go to the fallback.
//!
//! The layer is thin: the file format and the bound are pure and tested on their own.

mod bound;
mod durable;
pub mod format;

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use bound::Bound;
pub use bound::Seq;
pub use durable::{BodyId, Durable, body_id};
use format::{DecodeError, decode, header, stored_len};

use crate::encode::Payload;

/// Extension of a stored payload.
const EXT: &str = "oprq";
/// Extension of a write in progress.
const TMP_EXT: &str = "tmp";
/// The lock file of a destination directory.
const LOCK_FILE: &str = "lock";
/// A file larger than this is not read back (no payload comes near it: the intake takes a few MB).
const MAX_FILE: u64 = 64 << 20;

/// Errors opening or writing the storage directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created, opened or listed.
    #[error("cannot use {path} (check DD_FORWARDER_STORAGE_PATH)")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process holds the directory's lock.
    #[error(
        "{path} is in use by another offpath process ({holder}); give each instance its own \
         DD_FORWARDER_STORAGE_PATH"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// A payload could not be written (disk full, I/O error): it stays in memory only.
    #[error("cannot write {path} (check the free space under DD_FORWARDER_STORAGE_PATH)")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What a previous run left in the directory, read by [`Store::open`].
#[derive(Debug, Default)]
pub struct Recovered {
    /// Payloads to send again, oldest first, with their files (still on disk until settled).
    pub payloads: Vec<(Seq, Payload)>,
    /// Payloads whose files no longer fit the size bound (it was lowered): their files are gone;
    /// they go to the fallback.
    pub overflow: Vec<Payload>,
    /// Torn or corrupt files, deleted.
    pub corrupt: u64,
}

/// What [`Store::put`] did with a payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    /// Written as file `seq`; the files `evicted` (oldest first) left to make room: their payloads
    /// must go to the fallback.
    Stored {
        /// The new file.
        seq: Seq,
        /// Files removed to stay within the bound.
        evicted: Vec<Seq>,
    },
    /// Larger than the whole bound: not written.
    TooLarge,
}

/// One destination's storage directory, locked for this process; see the module documentation.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The directory itself, fsynced after files are added or removed.
    dir_handle: File,
    /// Holds the flock until the store is dropped.
    _lock: File,
    bound: Bound,
    next: Seq,
    /// Files written since the last [`Store::sync`].
    unsynced: Vec<File>,
    /// Whether entries were added or removed since the last [`Store::sync`].
    dir_dirty: bool,
}

/// The directory name of a destination: its URL without the scheme, reduced to `[A-Za-z0-9.-]`,
/// plus a hash of the whole URL so that two destinations never share a directory.
pub fn dir_name(destination: &str) -> String {
    let readable: String = destination
        .split_once("://")
        .map_or(destination, |(_, rest)| rest)
        .trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    // FNV-1a, 32 bits: stable across builds and platforms.
    let hash = destination.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{readable}-{hash:08x}")
}

fn file_seq(name: &str, ext: &str) -> Option<Seq> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 16 {
        return None;
    }
    Seq::from_str_radix(stem, 16).ok()
}

impl Store {
    /// Open (creating it, mode 0700) the directory of `destination` under `root`, lock it, and read
    /// back what a previous run left, keeping at most `max_bytes` on disk.
    ///
    /// # Errors
    /// [`StoreError::Dir`] when the directory cannot be created or listed, [`StoreError::Locked`]
    /// when another process uses it.
    pub fn open(
        root: &Path,
        destination: &str,
        max_bytes: u64,
    ) -> Result<(Self, Recovered), StoreError> {
        let dir = root.join(dir_name(destination));
        let dir_err = |source| StoreError::Dir {
            path: dir.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(dir_err)?;
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(dir_err)?;
        if !try_lock(&lock).map_err(dir_err)? {
            let holder = fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(StoreError::Locked {
                path: dir,
                holder: holder.trim().to_owned(),
            });
        }
        // Who holds it, for the error of a second process (best effort).
        let _ = lock.set_len(0);
        let _ = writeln!(lock, "pid {}", std::process::id());
        let dir_handle = File::open(&dir).map_err(dir_err)?;
        let mut store = Self {
            dir_handle,
            _lock: lock,
            bound: Bound::new(max_bytes),
            next: 0,
            unsynced: Vec::new(),
            dir_dirty: false,
            dir: dir.clone(),
        };
        let recovered = store.recover().map_err(dir_err)?;
        Ok((store, recovered))
    }

    /// The destination's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk (headers included).
    pub fn bytes(&self) -> u64 {
        self.bound.bytes()
    }

    /// Payload files on disk.
    pub fn files(&self) -> usize {
        self.bound.len()
    }

    fn path(&self, seq: Seq, ext: &str) -> PathBuf {
        self.dir.join(format!("{seq:016x}.{ext}"))
    }

    /// Read back the files of a previous run, oldest first; delete leftovers of interrupted writes
    /// and files that do not decode.
    fn recover(&mut self) -> io::Result<Recovered> {
        let mut out = Recovered::default();
        let mut seqs = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = file_seq(name, TMP_EXT) {
                // A write that never reached its rename: whatever it holds is incomplete.
                self.next = self.next.max(seq + 1);
                tracing::warn!(file = name, "retry storage: removing an interrupted write");
                out.corrupt += 1;
                self.unlink(&entry.path());
            } else if let Some(seq) = file_seq(name, EXT) {
                self.next = self.next.max(seq + 1);
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        for seq in seqs {
            let path = self.path(seq, EXT);
            match read_payload(&path) {
                Ok(p) => {
                    let evicted = self.bound.insert(seq, stored_len(&p));
                    out.payloads.push((seq, p));
                    for old in evicted {
                        self.unlink(&self.path(old, EXT));
                        if let Some(i) = out.payloads.iter().position(|(s, _)| *s == old) {
                            out.overflow.push(out.payloads.remove(i).1);
                        }
                    }
                }
                Err(reason) => {
                    tracing::warn!(
                        file = %path.display(),
                        %reason,
                        "retry storage: skipping a torn or corrupt file (deleted)"
                    );
                    out.corrupt += 1;
                    self.unlink(&path);
                }
            }
        }
        Ok(out)
    }

    /// Write `p` to a new file (write, then rename; fsynced at the next [`Store::sync`]). When the
    /// directory would exceed its bound, the oldest files are deleted and returned in
    /// [`Put::Stored::evicted`].
    ///
    /// # Errors
    /// [`StoreError::Write`] when the file cannot be written (nothing is left behind).
    pub fn put(&mut self, p: &Payload) -> Result<Put, StoreError> {
        let len = stored_len(p);
        if !self.bound.fits(len) {
            return Ok(Put::TooLarge);
        }
        let seq = self.next;
        self.next += 1;
        let tmp = self.path(seq, TMP_EXT);
        let file = self.path(seq, EXT);
        let written = write_new(&tmp, &header(p), &p.body).and_then(|f| {
            fs::rename(&tmp, &file)?;
            Ok(f)
        });
        match written {
            Ok(f) => {
                self.unsynced.push(f);
                self.dir_dirty = true;
            }
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::Write { path: file, source });
            }
        }
        let evicted = self.bound.insert(seq, len);
        for &old in &evicted {
            self.unlink(&self.path(old, EXT));
        }
        Ok(Put::Stored { seq, evicted })
    }

    /// Delete file `seq`: its payload is settled. Unknown (already evicted) files are ignored.
    pub fn remove(&mut self, seq: Seq) {
        if self.bound.remove(seq) {
            self.unlink(&self.path(seq, EXT));
        }
    }

    fn unlink(&mut self, path: &Path) {
        match fs::remove_file(path) {
            Ok(()) => self.dir_dirty = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "retry storage: cannot delete")
            }
        }
    }

    /// Make the files written and removed since the last call durable: fsync each new file, then
    /// the directory (once per batch).
    ///
    /// # Errors
    /// The first fsync error; the files stay and are fsynced by no later call (the payloads are
    /// still held in memory).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let mut result = Ok(());
        for f in self.unsynced.drain(..) {
            if let Err(source) = f.sync_data() {
                if result.is_ok() {
                    result = Err(StoreError::Write {
                        path: self.dir.clone(),
                        source,
                    });
                }
            }
        }
        if std::mem::take(&mut self.dir_dirty) {
            if let Err(source) = self.dir_handle.sync_all() {
                if result.is_ok() {
                    result = Err(StoreError::Write {
                        path: self.dir.clone(),
                        source,
                    });
                }
            }
        }
        result
    }
}

/// Take an exclusive `flock(2)` on `file` without waiting: `Ok(false)` when another open file
/// description (another process) holds it. The lock goes with the file's last descriptor.
fn try_lock(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor `file` owns and keeps open for the call; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Create `path` (it must not exist, mode 0600) holding `head` then `body`.
fn write_new(path: &Path, head: &[u8], body: &[u8]) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(head)?;
    f.write_all(body)?;
    Ok(f)
}

/// Why a file was not read back.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0} bytes, more than any payload")]
    TooLarge(u64),
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

fn read_payload(path: &Path) -> Result<Payload, ReadError> {
    let len = fs::metadata(path)?.len();
    if len > MAX_FILE {
        return Err(ReadError::TooLarge(len));
    }
    Ok(decode(Bytes::from(fs::read(path)?))?)
}

#[cfg(test)]
mod tests;
