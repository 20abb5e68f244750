//! The Unix stream framing as pure state: bytes in, whole frames out. No I/O, no allocation after
//! [`FrameDecoder::new`].
//!
//! Framing (as the Agent, `docs/protocols.md`, "Transports and framing"): each frame is a `u32` little-endian payload length, then
//! the payload. A length over the maximum (`DD_DOGSTATSD_BUFFER_SIZE`) is an error that ends the stream:
//! a client that sends one is broken or not speaking this protocol, and nothing after it can be trusted
//! to start on a frame boundary.

use std::fmt;

/// Bytes of a frame header (the payload length, `u32` little-endian).
pub const FRAME_HEADER: usize = 4;

/// Why a stream cannot be decoded any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A header announced a payload longer than the maximum.
    #[error(
        "Unix stream frame of {len} bytes is larger than DD_DOGSTATSD_BUFFER_SIZE ({max} bytes)"
    )]
    Oversize {
        /// The announced payload length.
        len: usize,
        /// The maximum payload length.
        max: usize,
    },
}

/// Splits one connection's byte stream into frames.
///
/// Its buffer holds one header plus one largest frame, so once the whole frames before it have been
/// taken ([`FrameDecoder::next_frame`] returned `None`), any frame still arriving fits. Fill it either
/// in place, reading straight from a socket into [`FrameDecoder::spare`] and reporting the count with
/// [`FrameDecoder::filled`], or by copying with [`FrameDecoder::push`].
pub struct FrameDecoder {
    buf: Box<[u8]>,
    /// Bytes not yet taken are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Set by the first oversize header; the stream is over.
    error: Option<FrameError>,
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("frame_max", &self.frame_max())
            .field("buffered", &self.buffered())
            .field("error", &self.error)
            .finish()
    }
}

impl FrameDecoder {
    /// A decoder of frames of at most `frame_max` payload bytes.
    pub fn new(frame_max: usize) -> Self {
        Self {
            buf: vec![0u8; frame_max + FRAME_HEADER].into_boxed_slice(),
            start: 0,
            end: 0,
            error: None,
        }
    }

    /// The largest payload accepted.
    pub fn frame_max(&self) -> usize {
        self.buf.len() - FRAME_HEADER
    }

    /// Bytes received and not yet taken as a frame (a partial frame, or whole frames not taken yet).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The free space to write the next bytes of the stream into (then call [`FrameDecoder::filled`]).
    /// Empty only after an error, or while whole frames wait to be taken and fill the buffer.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.error.is_some() {
            return &mut [];
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// `n` bytes were written at the start of [`FrameDecoder::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copy as much of `bytes` as fits; returns how many were taken. Take the whole frames out
    /// ([`FrameDecoder::next_frame`]) to make room for the rest.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = spare.len().min(bytes.len());
        if let (Some(dst), Some(src)) = (spare.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.filled(n);
        n
    }

    /// The next whole frame's payload (possibly empty); `None` until more bytes arrive. After an
    /// oversize header it returns that error every time: the stream cannot be decoded any further.
    pub fn next_frame(&mut self) -> Option<Result<&[u8], FrameError>> {
        if let Some(e) = self.error {
            return Some(Err(e));
        }
        let avail = self.buf.get(self.start..self.end)?;
        let header = avail.first_chunk::<FRAME_HEADER>()?;
        let len = u32::from_le_bytes(*header) as usize;
        let max = self.frame_max();
        if len > max {
            let e = FrameError::Oversize { len, max };
            self.error = Some(e);
            return Some(Err(e));
        }
        let frame = self.start + FRAME_HEADER..self.start + FRAME_HEADER + len;
        if frame.end > self.end {
            return None;
        }
        self.start = frame.end;
        self.buf.get(frame).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    /// Feed `stream` in pieces cut at `cuts`, taking frames after every piece; the payloads and the
    /// error, if any.
    fn decode(
        frame_max: usize,
        stream: &[u8],
        cuts: &[usize],
    ) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut d = FrameDecoder::new(frame_max);
        let mut out = Vec::new();
        let mut bounds = cuts.to_vec();
        bounds.push(stream.len());
        let mut at = 0;
        for end in bounds {
            let mut piece = &stream[at..end];
            at = end;
            loop {
                let n = d.push(piece);
                piece = &piece[n..];
                loop {
                    match d.next_frame() {
                        None => break,
                        Some(Ok(p)) => out.push(p.to_vec()),
                        Some(Err(e)) => return (out, Some(e)),
                    }
                }
                if piece.is_empty() {
                    break;
                }
                assert!(n > 0 || !d.spare().is_empty(), "no progress");
            }
        }
        (out, None)
    }

    #[test]
    fn a_stream_split_at_every_byte_boundary_yields_the_same_frames() {
        let payloads: [&[u8]; 4] = [b"a:1|c", b"", b"b:2|g\nc:3|ms", b"12345678"];
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        let want: Vec<Vec<u8>> = payloads.iter().map(|p| p.to_vec()).collect();
        assert_eq!(decode(16, &stream, &[]), (want.clone(), None));
        for cut in 0..=stream.len() {
            assert_eq!(
                decode(16, &stream, &[cut]),
                (want.clone(), None),
                "cut at {cut}"
            );
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            decode(16, &stream, &every),
            (want, None),
            "one byte at a time"
        );
    }

    #[test]
    fn zero_length_frames_are_frames_with_an_empty_payload() {
        let stream: Vec<u8> = [frame(b""), frame(b""), frame(b"x")].concat();
        let (frames, err) = decode(4, &stream, &[2, 5]);
        assert_eq!(frames, [b"".to_vec(), b"".to_vec(), b"x".to_vec()]);
        assert_eq!(err, None);
    }

    #[test]
    fn a_frame_of_exactly_the_maximum_fits_after_a_partial_one_and_one_byte_more_is_an_error() {
        let max = 16;
        let big = vec![b'x'; max];
        // A small frame then a maximum frame arriving one byte at a time: the buffer compacts.
        let stream = [frame(b"ab"), frame(&big)].concat();
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            decode(max, &stream, &every),
            (vec![b"ab".to_vec(), big], None)
        );

        let over = [frame(b"ok"), frame(&[b'y'; 17]), frame(b"never")].concat();
        let (frames, err) = decode(max, &over, &[3]);
        assert_eq!(frames, [b"ok".to_vec()]);
        assert_eq!(err, Some(FrameError::Oversize { len: 17, max }));
    }

    #[test]
    fn an_oversize_header_is_reported_before_its_payload_arrives_and_ends_the_stream() {
        let mut d = FrameDecoder::new(8);
        assert_eq!(d.push(&u32::MAX.to_le_bytes()), 4);
        let e = FrameError::Oversize {
            len: u32::MAX as usize,
            max: 8,
        };
        assert_eq!(d.next_frame(), Some(Err(e)));
        assert_eq!(d.next_frame(), Some(Err(e)), "it stays failed");
        assert!(d.spare().is_empty());
        assert_eq!(d.push(b"more"), 0);
        assert!(e.to_string().contains("DD_DOGSTATSD_BUFFER_SIZE"));
    }

    #[test]
    fn a_partial_frame_waits_for_its_rest() {
        let mut d = FrameDecoder::new(8);
        let f = frame(b"abc");
        assert_eq!(d.push(&f[..5]), 5);
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.buffered(), 5);
        // Reading in place, as the listener does.
        let spare = d.spare();
        spare[..2].copy_from_slice(&f[5..]);
        d.filled(2);
        assert_eq!(d.next_frame(), Some(Ok(&b"abc"[..])));
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.buffered(), 0);
        assert_eq!(
            d.spare().len(),
            8 + FRAME_HEADER,
            "an empty buffer is all spare"
        );
    }

    #[test]
    fn whole_frames_filling_the_buffer_leave_no_spare_room_until_taken() {
        let mut d = FrameDecoder::new(4);
        let stream = [frame(b""), frame(b"abcd")].concat();
        assert_eq!(
            d.push(&stream),
            8,
            "a header plus the largest frame fit, no more"
        );
        assert!(d.spare().is_empty());
        assert_eq!(d.next_frame(), Some(Ok(&b""[..])));
        assert_eq!(d.push(&stream[8..]), 4);
        assert_eq!(d.next_frame(), Some(Ok(&b"abcd"[..])));
        assert_eq!(d.next_frame(), None);
    }
}
