//! The Unix stream framing (u32 little-endian length, then the payload) over arbitrary byte streams fed
//! in arbitrary pieces, through `offpath::ingest::FrameDecoder`, the pure decoder the listener reads
//! into.
//!
//! Checked against a reference decoder: every whole frame before the first oversize one comes out, in
//! order, byte for byte (empty ones included); an oversize one is reported with its length and ends the
//! stream; a partial trailing frame stays buffered; the decoder always makes progress and never panics.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use offpath::ingest::{FRAME_HEADER, FrameDecoder, FrameError};

/// `DD_DOGSTATSD_BUFFER_SIZE` of the decoder under test: small, so that length prefixes over it are
/// easy for the fuzzer to produce.
const FRAME_MAX: usize = 512;

#[derive(Debug, Arbitrary)]
struct Input {
    /// The byte stream, as it arrives: one piece per read.
    pieces: Vec<Vec<u8>>,
    /// Write into `spare()` as the listener's `read` does, instead of `push`.
    in_place: bool,
}

/// What a correct decoder makes of `stream`.
struct Expected<'a> {
    frames: Vec<&'a [u8]>,
    /// The length announced by the first oversize header, if any.
    oversize: Option<usize>,
    /// Bytes of the partial frame at the end (no oversize header).
    trailing: usize,
}

fn reference(stream: &[u8]) -> Expected<'_> {
    let mut frames = Vec::new();
    let mut rest = stream;
    while let Some((header, after)) = rest.split_first_chunk::<FRAME_HEADER>() {
        let len = u32::from_le_bytes(*header) as usize;
        if len > FRAME_MAX {
            return Expected {
                frames,
                oversize: Some(len),
                trailing: 0,
            };
        }
        let Some(payload) = after.get(..len) else {
            break;
        };
        frames.push(payload);
        rest = &after[len..];
    }
    Expected {
        frames,
        oversize: None,
        trailing: rest.len(),
    }
}

/// Copy as much of `bytes` as fits into the decoder's free space; returns how many.
fn fill_in_place(d: &mut FrameDecoder, bytes: &[u8]) -> usize {
    let spare = d.spare();
    let n = spare.len().min(bytes.len());
    spare[..n].copy_from_slice(&bytes[..n]);
    d.filled(n);
    n
}

fuzz_target!(|input: Input| {
    let stream: Vec<u8> = input.pieces.concat();
    let want = reference(&stream);
    let mut d = FrameDecoder::new(FRAME_MAX);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut error = None;
    'feed: for piece in &input.pieces {
        let mut piece = piece.as_slice();
        loop {
            let n = if input.in_place {
                fill_in_place(&mut d, piece)
            } else {
                d.push(piece)
            };
            piece = &piece[n..];
            let mut took = false;
            while let Some(next) = d.next_frame() {
                match next {
                    Ok(p) => {
                        assert!(p.len() <= FRAME_MAX);
                        got.push(p.to_vec());
                        took = true;
                    }
                    Err(e) => {
                        error = Some(e);
                        break 'feed;
                    }
                }
            }
            if piece.is_empty() {
                break;
            }
            assert!(n > 0 || took, "no progress with {} bytes left", piece.len());
        }
    }
    let want_frames: Vec<Vec<u8>> = want.frames.iter().map(|f| f.to_vec()).collect();
    assert_eq!(got, want_frames, "frames differ from the reference");
    match (error, want.oversize) {
        (None, None) => assert_eq!(d.buffered(), want.trailing, "the partial frame is kept"),
        (Some(FrameError::Oversize { len, max }), Some(want_len)) => {
            assert_eq!((len, max), (want_len, FRAME_MAX));
            assert!(d.spare().is_empty(), "nothing is read after the error");
        }
        (got, want) => panic!("error {got:?}, expected an oversize frame of {want:?} bytes"),
    }
});
