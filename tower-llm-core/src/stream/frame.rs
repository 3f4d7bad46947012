//! Where one server-sent event ends in the raw bytes of a stream.
//!
//! [`SseDecoder`](crate::sse::SseDecoder) turns bytes into events but does not say which bytes
//! made each event. The guard needs exactly that, to forward the bytes of a valid event as they
//! came (no re-encoding, no copy when the event lies within one chunk) and to leave out the bytes
//! of a malformed one. [`Framer`] finds the blank line that ends each event (any mix of `\n`,
//! `\r\n` and `\r` line endings, split across chunks anywhere), and keeps the start of an event
//! that a chunk cut in two until its end arrives.

use bytes::{Bytes, BytesMut};
use memchr::memchr2;

/// A frame: the raw bytes of one event (or of comments and blank lines), up to and including the
/// blank line that ends it.
#[derive(Debug)]
pub(crate) enum RawFrame {
    /// The frame is the next `len` bytes of the current chunk (no copy).
    InChunk(usize),
    /// The frame began in an earlier chunk: its bytes, joined (one copy).
    Joined(Bytes),
}

/// The frame grew past the size limit before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameTooLarge;

/// Finds frame boundaries across chunks.
#[derive(Debug)]
pub(crate) struct Framer {
    /// The start of a frame whose end has not arrived yet.
    pending: BytesMut,
    /// The scan position is at the start of a line.
    at_line_start: bool,
    /// The last byte scanned was a `\r` ending a line: a `\n` right after it belongs to it.
    after_cr: bool,
    /// The last frame found lies in its chunk and is one line ended by a `\n`, then the blank
    /// `\n` line: no other line break in it (see [`one_line`](Self::one_line)).
    one_line: bool,
    max_frame: usize,
}

impl Framer {
    /// A framer that rejects a frame longer than `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> Self {
        Framer {
            pending: BytesMut::new(),
            at_line_start: true,
            after_cr: false,
            one_line: false,
            max_frame,
        }
    }

    /// Whether the frame [`next_frame`](Self::next_frame) returned last is one line ended by a
    /// `\n`, then the blank `\n` line that ends the frame, with no other `\n` or `\r` in it: the
    /// shape of nearly every event (`data: {…}\n\n`). Its line breaks were found while framing,
    /// so a reader of the frame need not look for them again.
    pub(crate) fn one_line(&self) -> bool {
        self.one_line
    }

    /// Whether the start of an unfinished frame is held.
    pub(crate) fn is_mid_frame(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forget any unfinished frame.
    pub(crate) fn clear(&mut self) {
        self.pending = BytesMut::new();
    }

    /// The next frame of `chunk[from..]`, which continues the stream where the last call left it.
    ///
    /// `Ok(None)`: the rest of the chunk is the start of a frame; it was kept (copied) and the
    /// caller must drop it from the chunk (`chunk.truncate(from)`). A [`RawFrame::Joined`] frame
    /// is only returned for `from == 0`; its `len` bytes of the chunk were used and must be dropped
    /// from the chunk by the caller (see the returned length).
    pub(crate) fn next_frame(
        &mut self,
        chunk: &Bytes,
        from: usize,
    ) -> Result<Option<(RawFrame, usize)>, FrameTooLarge> {
        let rest = chunk.get(from..).unwrap_or_default();
        match self.find_end(rest) {
            Some(len) => {
                if self.pending.is_empty() {
                    if len > self.max_frame {
                        return Err(FrameTooLarge);
                    }
                    return Ok(Some((RawFrame::InChunk(len), len)));
                }
                if self.pending.len().saturating_add(len) > self.max_frame {
                    return Err(FrameTooLarge);
                }
                self.pending
                    .extend_from_slice(rest.get(..len).unwrap_or_default());
                // `split` leaves `pending` empty with no capacity: the joined bytes own the buffer.
                let joined = self.pending.split().freeze();
                Ok(Some((RawFrame::Joined(joined), len)))
            }
            None => {
                if self.pending.len().saturating_add(rest.len()) > self.max_frame {
                    return Err(FrameTooLarge);
                }
                self.pending.extend_from_slice(rest);
                Ok(None)
            }
        }
    }

    /// The length of the prefix of `buf` that ends the current frame (through its blank line),
    /// or `None` when `buf` ends first. Updates the line state either way.
    fn find_end(&mut self, buf: &[u8]) -> Option<usize> {
        self.one_line = false;
        if buf.is_empty() {
            return None;
        }
        // A frame starting here, at a line start with nothing carried over, can be one line.
        let fresh = self.at_line_start && !self.after_cr && self.pending.is_empty();
        // The line breaks found in this call, and whether the first was a `\n`.
        let mut breaks = 0u32;
        let mut first_lf = false;
        let mut i = 0;
        if self.after_cr {
            self.after_cr = false;
            if buf.first() == Some(&b'\n') {
                // The second half of a `\r\n` split between chunks. When that `\r\n` ended a
                // frame, the `\n` is a frame of its own (it belongs to the one before, already
                // handed on), so leaving out the next frame never takes it along.
                if self.pending.is_empty() {
                    return Some(1);
                }
                i = 1;
            }
        }
        loop {
            if self.at_line_start {
                match buf.get(i) {
                    None => return None,
                    Some(b'\n') => {
                        self.one_line = fresh && breaks == 1 && first_lf;
                        return Some(i + 1);
                    }
                    Some(b'\r') => return Some(self.past_cr(buf, i)),
                    Some(_) => {}
                }
            }
            let tail = buf.get(i..).unwrap_or_default();
            match memchr2(b'\n', b'\r', tail) {
                None => {
                    self.at_line_start = false;
                    return None;
                }
                Some(pos) => {
                    let at = i + pos;
                    breaks += 1;
                    first_lf |= breaks == 1 && buf.get(at) == Some(&b'\n');
                    i = if buf.get(at) == Some(&b'\r') {
                        self.past_cr(buf, at)
                    } else {
                        at + 1
                    };
                    self.at_line_start = true;
                }
            }
        }
    }

    /// The index after the line ending that starts with the `\r` at `at`.
    fn past_cr(&mut self, buf: &[u8], at: usize) -> usize {
        match buf.get(at + 1) {
            Some(b'\n') => at + 2,
            Some(_) => at + 1,
            None => {
                self.after_cr = true;
                at + 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseDecoder;
    use proptest::prelude::*;

    /// Split `input` at `cuts`, frame it, and return the frames' bytes and what is left pending.
    fn frames(input: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, usize) {
        let (out, _, pending) = framed(input, cuts);
        (out, pending)
    }

    /// [`frames`], with whether the framer said each frame is [`one_line`](Framer::one_line).
    fn framed(input: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Vec<bool>, usize) {
        let mut framer = Framer::new(usize::MAX);
        let mut out = Vec::new();
        let mut one_line = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(0);
        bounds.push(input.len());
        bounds.sort_unstable();
        bounds.dedup();
        for pair in bounds.windows(2) {
            let mut chunk = Bytes::copy_from_slice(&input[pair[0]..pair[1]]);
            let mut from = 0;
            loop {
                match framer.next_frame(&chunk, from).unwrap() {
                    Some((RawFrame::InChunk(len), used)) => {
                        assert_eq!(len, used);
                        out.push(chunk[from..from + len].to_vec());
                        one_line.push(framer.one_line());
                        from += len;
                    }
                    Some((RawFrame::Joined(bytes), used)) => {
                        assert_eq!(from, 0);
                        out.push(bytes.to_vec());
                        one_line.push(framer.one_line());
                        let _ = chunk.split_to(used);
                    }
                    None => {
                        chunk.truncate(from);
                        break;
                    }
                }
            }
        }
        (out, one_line, framer.pending.len())
    }

    #[test]
    fn a_frame_of_one_data_line_is_seen_as_one_line() {
        let input = b"data: a\n\ndata: b\r\n\n: c\n\n\ndata: d\ndata: e\n\ndata: f\n\n";
        let (out, one_line, _) = framed(input, &[]);
        let want: [&[u8]; 6] = [
            b"data: a\n\n",
            b"data: b\r\n\n",
            b": c\n\n",
            b"\n",
            b"data: d\ndata: e\n\n",
            b"data: f\n\n",
        ];
        assert_eq!(out, want);
        assert_eq!(one_line, [true, false, true, false, false, true]);
        // Cut inside the second event: its frame is joined, and not said to be one line.
        let (out, one_line, _) = framed(b"data: a\n\ndata: b\n\n", &[12]);
        assert_eq!(out, [&b"data: a\n\n"[..], b"data: b\n\n"]);
        assert_eq!(one_line, [true, false]);
    }

    #[test]
    fn splits_at_blank_lines_with_every_line_ending() {
        let input = b"data: a\n\ndata: b\r\n\r\n: c\r\rdata: d\r\n\ndata: e\n\r\n";
        let (out, pending) = frames(input, &[]);
        let want: [&[u8]; 5] = [
            b"data: a\n\n",
            b"data: b\r\n\r\n",
            b": c\r\r",
            b"data: d\r\n\n",
            b"data: e\n\r\n",
        ];
        assert_eq!(out, want);
        assert_eq!(pending, 0);
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_ending() {
        // `\r` | `\n\n`: the `\n` completes the `\r\n`, the next `\n` is the blank line.
        let (out, _) = frames(b"data: a\r\n\ndata: b\n\n", &[8]);
        assert_eq!(out, [&b"data: a\r\n\n"[..], b"data: b\n\n"]);
    }

    #[test]
    fn the_end_of_a_split_crlf_blank_line_is_not_part_of_the_next_frame() {
        let (out, _) = frames(b"data: a\r\n\r\ndata: b\n\n", &[10]);
        assert_eq!(out, [&b"data: a\r\n\r"[..], b"\n", b"data: b\n\n"]);
    }

    #[test]
    fn oversized_frame_is_rejected() {
        let mut framer = Framer::new(8);
        let chunk = Bytes::from_static(b"data: 0123456789");
        assert_eq!(framer.next_frame(&chunk, 0).unwrap_err(), FrameTooLarge);
        let mut framer = Framer::new(8);
        let chunk = Bytes::from_static(b"data: 01");
        assert!(framer.next_frame(&chunk, 0).unwrap().is_none());
        let more = Bytes::from_static(b"23\n\n");
        assert_eq!(framer.next_frame(&more, 0).unwrap_err(), FrameTooLarge);
    }

    fn sse_text() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"data: {\"x\":1}"[..]),
            Just(&b"data:"[..]),
            Just(&b": comment"[..]),
            Just(&b"event: e"[..]),
            Just(&b"id: 7"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"\xEF\xBB\xBF"[..]),
            Just(&b"d\xC3\xA9"[..]),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        /// Frames cover the input exactly, wherever it is split, and decoding frame by frame gives
        /// the events of decoding the whole input at once.
        #[test]
        fn frames_agree_with_the_decoder(input in sse_text(), cuts in proptest::collection::vec(0usize..400, 0..6)) {
            let (out, pending) = frames(&input, &cuts);
            let joined: Vec<u8> = out.concat();
            prop_assert_eq!(&joined[..], &input[..input.len() - pending]);

            let mut whole = SseDecoder::new();
            let want: Vec<_> = whole.decode(Bytes::from(input.clone())).map(Result::unwrap).collect();
            let mut framed = SseDecoder::new();
            let mut got = Vec::new();
            for frame in out {
                let mut events = framed.decode(Bytes::from(frame));
                if let Some(event) = events.next() {
                    got.push(event.unwrap());
                }
                // A frame holds at most one event.
                prop_assert!(events.next().is_none());
            }
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        // Frames of two lines whose first ends in `\n` are a small share of the generated ones:
        // enough cases that a wrong flag on them is found.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// A frame said to be one line is exactly that: a line ended by `\n`, then `\n`, with
        /// no other line break (what lets the guard skip looking for one again).
        #[test]
        fn a_frame_said_to_be_one_line_is_one(input in sse_text(), cuts in proptest::collection::vec(0usize..400, 0..6)) {
            let (out, one_line, _) = framed(&input, &cuts);
            for (frame, one_line) in out.iter().zip(one_line) {
                if one_line {
                    let body = frame.strip_suffix(b"\n\n");
                    prop_assert!(body.is_some(), "{frame:?}");
                    prop_assert!(!body.unwrap_or_default().iter().any(|&b| b == b'\n' || b == b'\r'), "{frame:?}");
                }
            }
        }
    }
}
