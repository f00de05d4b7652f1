//! The `bytes ─TextStream─▶ text` arrow: turns the byte pieces of generated tokens into
//! user-visible text, as it streams.
//!
//! Owns two small bounded buffers and nothing else; it knows nothing of tokens or transports.
//!
//! - **UTF-8 carry.** A piece may end inside a multi-byte character (byte-level BPE splits
//!   them); those bytes are held (at most 3) until the character completes. Invalid bytes
//!   become U+FFFD, one per maximal invalid subsequence exactly as `String::from_utf8_lossy`
//!   does on the whole output, so raw invalid bytes never reach a client.
//! - **Stop strings.** Matched on the decoded text across piece boundaries. Text that could
//!   still be the start of a stop string is held back; when a stop string completes, the text
//!   before it is emitted, the stop string never is, and [`TextStream::push`] returns
//!   [`StreamStep::Stop`]. With several stop strings, the one that completes first wins (on
//!   equal ends, the longest), which is what a streaming reader can decide without waiting.
//!
//! [`TextStream::set_stops`] (once per request) may allocate; [`TextStream::push`] never does.
//! The hold-back window is a fixed array sized for the longest allowed stop string.

use thiserror::Error;

/// Most stop strings per request.
pub const MAX_STOPS: usize = 8;
/// Longest stop string, in bytes.
pub const MAX_STOP_LEN: usize = 256;
/// Window: what can be held back (< MAX_STOP_LEN bytes) plus room for new characters, so that
/// long pieces are processed in a few passes rather than one character at a time.
const WINDOW_CAP: usize = MAX_STOP_LEN + 128;

/// Errors of stop-string configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextStreamError {
    #[error("stop strings: {count} given: at most {MAX_STOPS} allowed")]
    TooManyStops { count: usize },
    #[error("stop string {index} ({len} bytes): must be between 1 and {MAX_STOP_LEN} bytes")]
    BadStopLength { index: usize, len: usize },
}

/// What [`TextStream::push`] tells the generation loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStep {
    Continue,
    /// A stop string completed: stop generating. Later pushes emit nothing until `reset`.
    Stop,
}

/// Streaming UTF-8 decoder with stop-string hold-back. See the module doc.
#[derive(Debug, Clone)]
pub struct TextStream {
    // Incomplete but so-far valid UTF-8 sequence at the end of the last piece: [0..4) bytes.
    carry: [u8; 4],
    carry_len: usize,
    stops: Vec<String>,
    // Valid UTF-8 text not yet emitted: [WINDOW_CAP] bytes, `window_len` used. Between pushes
    // it holds only the longest suffix of the text that is a proper prefix of a stop string.
    window: [u8; WINDOW_CAP],
    window_len: usize,
    stopped: bool,
}

impl Default for TextStream {
    fn default() -> Self {
        Self::new()
    }
}

impl TextStream {
    /// A stream with no stop strings.
    pub fn new() -> Self {
        TextStream {
            carry: [0; 4],
            carry_len: 0,
            stops: Vec::new(),
            window: [0; WINDOW_CAP],
            window_len: 0,
            stopped: false,
        }
    }

    /// Sets the stop strings for the next request and resets the stream. At most
    /// [`MAX_STOPS`], each 1..=[`MAX_STOP_LEN`] bytes. On error the previous set is kept.
    pub fn set_stops(&mut self, stops: &[String]) -> Result<(), TextStreamError> {
        if stops.len() > MAX_STOPS {
            return Err(TextStreamError::TooManyStops { count: stops.len() });
        }
        if let Some((index, s)) = stops
            .iter()
            .enumerate()
            .find(|(_, s)| s.is_empty() || s.len() > MAX_STOP_LEN)
        {
            return Err(TextStreamError::BadStopLength {
                index,
                len: s.len(),
            });
        }
        self.stops.clear();
        self.stops.extend(stops.iter().cloned());
        self.reset();
        Ok(())
    }

    /// Forgets held bytes and the stopped state; keeps the stop strings.
    pub fn reset(&mut self) {
        self.carry_len = 0;
        self.window_len = 0;
        self.stopped = false;
    }

    /// Feeds one token's bytes; calls `emit` with zero or more text fragments that are final.
    pub fn push(&mut self, piece: &[u8], emit: &mut dyn FnMut(&str)) -> StreamStep {
        if self.stopped {
            return StreamStep::Stop;
        }
        let mut rest = piece;

        // Complete (or reject) the character carried over from the previous piece.
        while self.carry_len > 0 {
            let Some((&b, tail)) = rest.split_first() else {
                return StreamStep::Continue;
            };
            if !utf8_continuation_ok(self.carry[0], self.carry_len, b) {
                // The carried prefix is a maximal invalid subsequence; `b` starts afresh.
                self.carry_len = 0;
                if self.text("\u{FFFD}", emit) == StreamStep::Stop {
                    return StreamStep::Stop;
                }
                break;
            }
            self.carry[self.carry_len] = b;
            self.carry_len += 1;
            rest = tail;
            if Some(self.carry_len) == utf8_sequence_len(self.carry[0]) {
                let mut buf = [0u8; 4];
                let n = self.carry_len;
                buf[..n].copy_from_slice(&self.carry[..n]);
                self.carry_len = 0;
                let step = match std::str::from_utf8(&buf[..n]) {
                    Ok(ch) => self.text(ch, emit),
                    Err(_) => self.text("\u{FFFD}", emit),
                };
                if step == StreamStep::Stop {
                    return StreamStep::Stop;
                }
            }
        }

        let mut chunks = rest.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            if self.text(chunk.valid(), emit) == StreamStep::Stop {
                return StreamStep::Stop;
            }
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            if chunks.peek().is_none() && is_incomplete_utf8_prefix(invalid) {
                // The piece ends inside a character: keep its first bytes for the next piece.
                self.carry[..invalid.len()].copy_from_slice(invalid);
                self.carry_len = invalid.len();
            } else if self.text("\u{FFFD}", emit) == StreamStep::Stop {
                return StreamStep::Stop;
            }
        }
        StreamStep::Continue
    }

    /// End of generation: an incomplete trailing character becomes U+FFFD and all held text
    /// is emitted (no stop string can complete any more, unless that U+FFFD completes one).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&str)) -> StreamStep {
        if self.stopped {
            return StreamStep::Stop;
        }
        if self.carry_len > 0 {
            self.carry_len = 0;
            if self.text("\u{FFFD}", emit) == StreamStep::Stop {
                return StreamStep::Stop;
            }
        }
        self.emit_window(self.window_len, emit);
        self.window_len = 0;
        StreamStep::Continue
    }

    /// Appends decoded text, checking stop strings after every character.
    fn text(&mut self, s: &str, emit: &mut dyn FnMut(&str)) -> StreamStep {
        if s.is_empty() {
            return StreamStep::Continue;
        }
        if self.stops.is_empty() {
            emit(s);
            return StreamStep::Continue;
        }
        for ch in s.chars() {
            let mut buf = [0u8; 4];
            let bytes = ch.encode_utf8(&mut buf).as_bytes();
            if self.window_len + bytes.len() > WINDOW_CAP {
                self.release_safe_prefix(emit);
            }
            let end = self.window_len + bytes.len();
            self.window[self.window_len..end].copy_from_slice(bytes);
            self.window_len = end;
            if let Some(stop_len) = self.completed_stop() {
                self.emit_window(end - stop_len, emit);
                self.window_len = 0;
                self.stopped = true;
                return StreamStep::Stop;
            }
        }
        self.release_safe_prefix(emit);
        StreamStep::Continue
    }

    /// Length of the longest stop string the window ends with, if any.
    fn completed_stop(&self) -> Option<usize> {
        let w = &self.window[..self.window_len];
        self.stops
            .iter()
            .filter(|s| w.ends_with(s.as_bytes()))
            .map(|s| s.len())
            .max()
    }

    /// Emits everything except the longest suffix that is a proper prefix of a stop string,
    /// and moves that suffix to the front of the window.
    fn release_safe_prefix(&mut self, emit: &mut dyn FnMut(&str)) {
        let len = self.window_len;
        let w = &self.window[..len];
        let max_hold = self
            .stops
            .iter()
            .map(|s| s.len() - 1)
            .max()
            .unwrap_or(0)
            .min(len);
        let hold = (1..=max_hold)
            .rev()
            .find(|&k| {
                let suffix = &w[len - k..];
                self.stops.iter().any(|s| s.as_bytes().starts_with(suffix))
            })
            .unwrap_or(0);
        // A held suffix starts like a stop string, i.e. on a character boundary.
        self.emit_window(len - hold, emit);
        self.window.copy_within(len - hold..len, 0);
        self.window_len = hold;
    }

    fn emit_window(&self, end: usize, emit: &mut dyn FnMut(&str)) {
        if end == 0 {
            return;
        }
        match std::str::from_utf8(&self.window[..end]) {
            Ok(s) => emit(s),
            // Unreachable: the window only receives whole characters and is cut only at the
            // start of a stop-string match. Degrade to a replacement, never to raw bytes.
            Err(_) => emit("\u{FFFD}"),
        }
    }
}

/// Length of the UTF-8 sequence a lead byte starts, or `None` if it cannot start one.
fn utf8_sequence_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7F => Some(1),
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

/// Whether `b` may follow a valid prefix of `len` bytes starting with `lead` (RFC 3629: the
/// second byte's range excludes overlongs, surrogates and code points above U+10FFFF).
fn utf8_continuation_ok(lead: u8, len: usize, b: u8) -> bool {
    if len == 1 {
        let range = match lead {
            0xE0 => 0xA0..=0xBF,
            0xED => 0x80..=0x9F,
            0xF0 => 0x90..=0xBF,
            0xF4 => 0x80..=0x8F,
            _ => 0x80..=0xBF,
        };
        range.contains(&b)
    } else {
        (0x80..=0xBF).contains(&b)
    }
}

/// Whether `bytes` is a valid UTF-8 sequence cut short (1 to 3 bytes, more could follow).
fn is_incomplete_utf8_prefix(bytes: &[u8]) -> bool {
    let Some(&lead) = bytes.first() else {
        return false;
    };
    let Some(need) = utf8_sequence_len(lead) else {
        return false;
    };
    bytes.len() < need
        && bytes
            .iter()
            .enumerate()
            .skip(1)
            .all(|(i, &b)| utf8_continuation_ok(lead, i, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(stream: &mut TextStream, pieces: &[&[u8]]) -> (String, bool) {
        let mut out = String::new();
        let mut stopped = false;
        for p in pieces {
            if stream.push(p, &mut |s| out.push_str(s)) == StreamStep::Stop {
                stopped = true;
                break;
            }
        }
        if !stopped {
            stopped = stream.finish(&mut |s| out.push_str(s)) == StreamStep::Stop;
        }
        (out, stopped)
    }

    /// Reference: the lossy text truncated before the stop occurrence that ends first (on
    /// equal ends, the longest), found by checking every prefix naively.
    fn reference(bytes: &[u8], stops: &[String]) -> (String, bool) {
        let text = String::from_utf8_lossy(bytes).into_owned();
        for end in 0..=text.len() {
            if !text.is_char_boundary(end) {
                continue;
            }
            let best = stops
                .iter()
                .filter(|s| text[..end].ends_with(s.as_str()))
                .map(|s| s.len())
                .max();
            if let Some(len) = best {
                return (text[..end - len].to_string(), true);
            }
        }
        (text, false)
    }

    fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for c in cuts {
            pieces.push(&bytes[start..c]);
            start = c;
        }
        pieces.push(&bytes[start..]);
        pieces
    }

    /// Bytes biased towards multi-byte UTF-8, broken sequences and stop-string letters.
    fn byte_soup() -> impl Strategy<Value = Vec<u8>> {
        let atom = prop_oneof![
            3 => prop::sample::select(b"ab<|>\n".to_vec()).prop_map(|b| vec![b]),
            1 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            1 => prop::sample::select(vec!["é", "€", "😀", "<|im_end|>"])
                .prop_map(|s| s.as_bytes().to_vec()),
            1 => any::<u8>().prop_map(|b| vec![b]),
            3 => prop::sample::select(vec![
                0xE2u8, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0xED, 0xA0, 0xC0, 0xC2, 0xE0, 0x80, 0xBF,
                0xF4, 0x90, 0x8F, 0xF5, 0xFF,
            ])
                .prop_map(|b| vec![b]),
        ];
        prop::collection::vec(atom, 0..40).prop_map(|v| v.concat())
    }

    fn stop_set() -> impl Strategy<Value = Vec<String>> {
        let stop = prop_oneof![
            Just("<|im_end|>".to_string()),
            Just("ab".to_string()),
            Just("b<".to_string()),
            Just("aab".to_string()),
            Just("€a".to_string()),
            Just("\u{FFFD}b".to_string()),
            "[ab<|>\n]{1,4}",
        ];
        prop::collection::vec(stop, 1..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_stops_equals_lossy_decode(
            bytes in byte_soup(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut s = TextStream::new();
            let (out, stopped) = run(&mut s, &split(&bytes, &cuts));
            prop_assert!(!stopped);
            prop_assert_eq!(out, String::from_utf8_lossy(&bytes).into_owned());
        }

        #[test]
        fn stops_truncate_before_first_completed_stop(
            bytes in byte_soup(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
            stops in stop_set(),
        ) {
            let mut s = TextStream::new();
            s.set_stops(&stops).unwrap();
            let got = run(&mut s, &split(&bytes, &cuts));
            prop_assert_eq!(got, reference(&bytes, &stops));
        }
    }

    #[test]
    fn multibyte_character_split_across_pieces_is_held() {
        let euro = "€".as_bytes(); // E2 82 AC
        let mut s = TextStream::new();
        let mut out = Vec::new();
        s.push(&[b'x', euro[0]], &mut |t| out.push(t.to_string()));
        assert_eq!(out, ["x"]);
        s.push(&euro[1..2], &mut |t| out.push(t.to_string()));
        assert_eq!(out, ["x"]);
        s.push(&euro[2..], &mut |t| out.push(t.to_string()));
        assert_eq!(out, ["x", "€"]);
        // An interrupted sequence: one U+FFFD for the prefix, then the byte that broke it.
        s.push(&euro[..2], &mut |t| out.push(t.to_string()));
        s.push(b"y", &mut |t| out.push(t.to_string()));
        assert_eq!(out.concat(), "x€\u{FFFD}y");
        // finish() turns an incomplete tail into U+FFFD.
        s.push(&euro[..1], &mut |t| out.push(t.to_string()));
        s.finish(&mut |t| out.push(t.to_string()));
        assert_eq!(out.concat(), "x€\u{FFFD}y\u{FFFD}");
    }

    #[test]
    fn stop_string_across_pieces_is_never_emitted() {
        let mut s = TextStream::new();
        s.set_stops(&["<|im_end|>".to_string()]).unwrap();
        let mut out = String::new();
        let mut emit = |t: &str| out.push_str(t);
        assert_eq!(s.push(b"Hello <|im", &mut emit), StreamStep::Continue);
        assert_eq!(s.push(b"_en", &mut emit), StreamStep::Continue);
        assert_eq!(s.push(b"d|> tail", &mut emit), StreamStep::Stop);
        assert_eq!(s.push(b"more", &mut emit), StreamStep::Stop);
        assert_eq!(out, "Hello ");
        // A false start is released once it can no longer match.
        s.reset();
        let mut out = String::new();
        let mut emit = |t: &str| out.push_str(t);
        s.push(b"a <|i", &mut emit);
        s.push(b"x", &mut emit);
        assert_eq!(s.finish(&mut emit), StreamStep::Continue);
        assert_eq!(out, "a <|ix");
    }

    #[test]
    fn long_pieces_pass_through_the_fixed_window() {
        let mut s = TextStream::new();
        s.set_stops(&["STOP".to_string()]).unwrap();
        let text = "é".repeat(1000) + "STOP" + "ignored";
        let (out, stopped) = run(&mut s, &[text.as_bytes()]);
        assert!(stopped);
        assert_eq!(out, "é".repeat(1000));
    }

    #[test]
    fn set_stops_limits() {
        let mut s = TextStream::new();
        let nine: Vec<String> = (0..9).map(|i| format!("s{i}")).collect();
        assert_eq!(
            s.set_stops(&nine),
            Err(TextStreamError::TooManyStops { count: 9 })
        );
        assert_eq!(
            s.set_stops(&["ok".into(), String::new()]),
            Err(TextStreamError::BadStopLength { index: 1, len: 0 })
        );
        let long = "x".repeat(MAX_STOP_LEN + 1);
        assert!(s.set_stops(&[long]).is_err());
        assert!(s.set_stops(&["x".repeat(MAX_STOP_LEN)]).is_ok());
    }
}
