//! The on-disk format of one stored payload (docs/protocols.md, "On-disk retry storage"): a fixed
//! 40-byte header, then the payload body exactly as it is sent (zstd-compressed). Pure: bytes in,
//! bytes out.
//!
//! ```text
//! offset size field
//!      0    4 magic "OPRQ"
//!      4    1 version (1)
//!      5    1 kind: 1 series, 2 sketches, 3 events, 4 service checks
//!      6    2 zero
//!      8    8 samples (u64 LE): what the payload counts in the ledger
//!     16    8 items (u64 LE)
//!     24    8 raw_len (u64 LE): uncompressed body length
//!     32    4 body_len (u32 LE)
//!     36    4 CRC-32C (Castagnoli, u32 LE) of bytes 0..36 followed by the body
//!     40    … body (body_len bytes); the file ends there
//! ```

use bytes::Bytes;

use crate::encode::{Payload, PayloadKind};
use crate::forward::DestinationId;

/// The first four bytes of every stored payload.
pub const MAGIC: [u8; 4] = *b"OPRQ";
/// The format version written; a file with another version is skipped as corrupt.
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 40;

/// Why a stored file cannot be read back. Such a file is counted and skipped, never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its header or its announced body: a write cut short (torn).
    #[error("torn: {len} bytes, {expected} expected")]
    Torn {
        /// Bytes in the file.
        len: usize,
        /// Bytes the header announces (or the header length).
        expected: usize,
    },
    /// Longer than the header announces.
    #[error("{extra} bytes after the body")]
    Trailing {
        /// Bytes past the announced body.
        extra: usize,
    },
    /// Not a stored payload (wrong magic).
    #[error("not an offpath retry file (bad magic)")]
    Magic,
    /// Written by a format version this build does not read.
    #[error("unknown format version {0}")]
    Version(u8),
    /// An unknown payload kind.
    #[error("unknown payload kind {0}")]
    Kind(u8),
    /// The checksum does not match: the bytes changed after they were written.
    #[error("checksum mismatch")]
    Checksum,
}

const fn kind_code(kind: PayloadKind) -> u8 {
    match kind {
        PayloadKind::Series => 1,
        PayloadKind::Sketches => 2,
        PayloadKind::Events => 3,
        PayloadKind::ServiceChecks => 4,
    }
}

const fn kind_of(code: u8) -> Option<PayloadKind> {
    match code {
        1 => Some(PayloadKind::Series),
        2 => Some(PayloadKind::Sketches),
        3 => Some(PayloadKind::Events),
        4 => Some(PayloadKind::ServiceChecks),
        _ => None,
    }
}

/// Bytes a payload takes on disk (what counts against `DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES`).
pub fn stored_len(p: &Payload) -> u64 {
    (HEADER_LEN + p.body.len()) as u64
}

/// The header of `p`, checksum included; the file is this header followed by `p.body`.
///
/// A body longer than `u32::MAX` cannot occur (intake limits are a few MB); it would be written with
/// a wrong length and read back as torn, never as another payload.
pub fn header(p: &Payload) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = kind_code(p.kind);
    h[8..16].copy_from_slice(&p.samples.to_le_bytes());
    h[16..24].copy_from_slice(&(p.items as u64).to_le_bytes());
    h[24..32].copy_from_slice(&(p.raw_len as u64).to_le_bytes());
    let body_len = u32::try_from(p.body.len()).unwrap_or(u32::MAX);
    h[32..36].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32c_update(crc32c_update(!0, &h[..36]), &p.body);
    h[36..40].copy_from_slice(&(!crc).to_le_bytes());
    h
}

/// The whole file of `p` (header and body), for tests and callers that write one buffer.
pub fn encode(p: &Payload) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + p.body.len());
    out.extend_from_slice(&header(p));
    out.extend_from_slice(&p.body);
    out
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Read a stored file back into the payload it holds (the body shares `file`'s memory).
///
/// # Errors
/// A [`DecodeError`] for a torn, foreign, newer or corrupt file.
pub fn decode(file: Bytes) -> Result<Payload, DecodeError> {
    if file.len() < HEADER_LEN {
        return Err(DecodeError::Torn {
            len: file.len(),
            expected: HEADER_LEN,
        });
    }
    if file[0..4] != MAGIC {
        return Err(DecodeError::Magic);
    }
    if file[4] != VERSION {
        return Err(DecodeError::Version(file[4]));
    }
    let body_len = u32_at(&file, 32) as usize;
    let expected = HEADER_LEN + body_len;
    if file.len() < expected {
        return Err(DecodeError::Torn {
            len: file.len(),
            expected,
        });
    }
    if file.len() > expected {
        return Err(DecodeError::Trailing {
            extra: file.len() - expected,
        });
    }
    let crc = !crc32c_update(crc32c_update(!0, &file[..36]), &file[HEADER_LEN..]);
    if crc != u32_at(&file, 36) {
        return Err(DecodeError::Checksum);
    }
    let kind = kind_of(file[5]).ok_or(DecodeError::Kind(file[5]))?;
    Ok(Payload {
        kind,
        samples: u64_at(&file, 8),
        items: usize::try_from(u64_at(&file, 16)).unwrap_or(usize::MAX),
        raw_len: usize::try_from(u64_at(&file, 24)).unwrap_or(usize::MAX),
        body: file.slice(HEADER_LEN..),
        // A store is one destination's directory: the forwarder that reads it tags what it sends.
        destination: DestinationId::MAIN,
    })
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) lookup table, built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Continue a CRC-32C over `data` (start with `!0`, finish with `!`).
fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC-32C of `data`.
#[cfg(test)]
fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(kind: PayloadKind, body: &[u8]) -> Payload {
        Payload {
            kind,
            body: Bytes::copy_from_slice(body),
            raw_len: body.len() * 3,
            items: 7,
            samples: 1234,
            destination: DestinationId::MAIN,
        }
    }

    #[track_caller]
    fn assert_same(a: &Payload, b: &Payload) {
        assert_eq!(
            (a.kind, &a.body, a.raw_len, a.items, a.samples),
            (b.kind, &b.body, b.raw_len, b.items, b.samples)
        );
    }

    #[test]
    fn the_checksum_is_crc32c() {
        // The check value of CRC-32C (RFC 3720 appendix B.4 lists the algorithm).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn every_kind_survives_a_round_trip() {
        for kind in [
            PayloadKind::Series,
            PayloadKind::Sketches,
            PayloadKind::Events,
            PayloadKind::ServiceChecks,
        ] {
            let p = payload(kind, b"\x28\xb5\x2f\xfd some zstd bytes");
            let file = encode(&p);
            assert_eq!(file.len() as u64, stored_len(&p));
            assert_same(&decode(Bytes::from(file)).unwrap(), &p);
        }
    }

    #[test]
    fn an_empty_body_survives_a_round_trip() {
        let p = payload(PayloadKind::Events, b"");
        assert_same(&decode(Bytes::from(encode(&p))).unwrap(), &p);
    }

    #[test]
    fn a_file_cut_anywhere_is_torn() {
        let file = encode(&payload(PayloadKind::Series, b"0123456789"));
        for len in 0..file.len() {
            let err = decode(Bytes::copy_from_slice(&file[..len])).unwrap_err();
            assert!(
                matches!(err, DecodeError::Torn { .. }),
                "cut at {len}: {err:?}"
            );
        }
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let file = encode(&payload(PayloadKind::Sketches, b"0123456789"));
        for byte in 0..file.len() {
            for bit in 0..8 {
                let mut bad = file.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(Bytes::from(bad)).is_err(),
                    "bit {bit} of byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn foreign_newer_and_padded_files_are_told_apart() {
        let file = encode(&payload(PayloadKind::Series, b"abc"));
        let mut foreign = file.clone();
        foreign[0] = b'X';
        assert_eq!(decode(Bytes::from(foreign)).err(), Some(DecodeError::Magic));
        let mut newer = file.clone();
        newer[4] = 2;
        assert_eq!(
            decode(Bytes::from(newer)).err(),
            Some(DecodeError::Version(2))
        );
        let mut padded = file.clone();
        padded.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode(Bytes::from(padded)).err(),
            Some(DecodeError::Trailing { extra: 2 })
        );
        // A kind this build does not know, with a valid checksum (a newer writer's kind).
        let mut unknown = file;
        unknown[5] = 9;
        let crc = crc32c_update(crc32c_update(!0, &unknown[..36]), b"abc");
        unknown[36..40].copy_from_slice(&(!crc).to_le_bytes());
        assert_eq!(
            decode(Bytes::from(unknown)).err(),
            Some(DecodeError::Kind(9))
        );
    }
}
