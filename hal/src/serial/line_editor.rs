//! `LineEditor`: turns the bytes a serial terminal sends into edits of one input line (typed
//! characters to echo, erasures, finished lines, Ctrl-C) — pure, no I/O, so every rule about
//! what a line is can be tested byte by byte.
//!
//! The line lives in a fixed buffer (heapless, [`MAX_LINE_BYTES`]) with a runtime limit from the
//! board config. CR, LF and CRLF end a line (CRLF once); backspace (0x08) and DEL (0x7f) erase
//! the last whole UTF-8 character; Ctrl-C (0x03) throws the line away. A line that outgrows the
//! limit stops growing (nothing more is echoed) and is reported as overlong when it ends, so the
//! next line starts clean. Bytes that are not UTF-8 are dropped and counted, never stored or
//! echoed; a multi-byte character is echoed once, when its last byte arrives. Terminal escape
//! sequences (arrow keys) and other control bytes are ignored.

use heapless::Vec as FixedVec;

/// The largest line buffer a board config may ask for (`serial.line_buffer` is 64..=65536).
pub const MAX_LINE_BYTES: usize = 65536;
/// The smallest line buffer a board config may ask for.
pub const MIN_LINE_BYTES: usize = 64;

const CTRL_C: u8 = 0x03;
const BACKSPACE: u8 = 0x08;
const TAB: u8 = 0x09;
const LF: u8 = 0x0a;
const CR: u8 = 0x0d;
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;

/// What the terminal shows to erase one character: back, blank, back.
pub const ERASE_ECHO: &[u8] = b"\x08 \x08";

/// One thing a byte did to the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// A character was added; echo these bytes (one complete UTF-8 character).
    Echo(FixedVec<u8, 4>),
    /// The last character was erased; echo [`ERASE_ECHO`].
    Erase,
    /// The line ended (without its terminator). `dropped` counts the non-UTF-8 bytes that were
    /// left out of it.
    Line { text: String, dropped: usize },
    /// The line ended but was longer than the limit; it is discarded.
    Overlong { limit: usize },
    /// Ctrl-C: the line (whatever was typed) is discarded.
    Interrupt,
    /// This many bytes were not UTF-8 and were dropped.
    Invalid(usize),
}

/// Up to two edits per byte: a byte that breaks a pending multi-byte character drops the
/// pending bytes and then counts on its own.
pub type Edits = FixedVec<Edit, 2>;

/// Where the editor is in a terminal escape sequence (`ESC [ ... final`, `ESC O x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// Inside `ESC [` parameters, until a final byte 0x40..=0x7e.
    Csi,
    /// After `ESC O`: one more byte ends it.
    Ss3,
}

pub struct LineEditor {
    /// The line so far: always complete UTF-8, at most `limit` bytes.
    line: FixedVec<u8, MAX_LINE_BYTES>,
    limit: usize,
    /// The leading bytes of a multi-byte character still arriving.
    pending: FixedVec<u8, 4>,
    /// The line went past `limit`: keep swallowing until it ends.
    overlong: bool,
    /// Non-UTF-8 bytes dropped from this line.
    dropped: usize,
    /// The last byte was a CR: a LF right after it belongs to the same line end.
    after_cr: bool,
    escape: Escape,
}

impl LineEditor {
    /// An editor whose lines hold at most `limit` bytes (clamped to
    /// [`MIN_LINE_BYTES`]..=[`MAX_LINE_BYTES`]).
    pub fn new(limit: usize) -> LineEditor {
        LineEditor {
            line: FixedVec::new(),
            limit: limit.clamp(MIN_LINE_BYTES, MAX_LINE_BYTES),
            pending: FixedVec::new(),
            overlong: false,
            dropped: 0,
            after_cr: false,
            escape: Escape::None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The line typed so far (to show it again after a notice).
    pub fn line(&self) -> &str {
        // Only whole characters are ever pushed.
        std::str::from_utf8(&self.line).unwrap_or_default()
    }

    /// Forgets the line and any half-typed character or escape sequence.
    pub fn clear(&mut self) {
        self.line.clear();
        self.pending.clear();
        self.overlong = false;
        self.dropped = 0;
        self.escape = Escape::None;
    }

    /// Takes one byte from the terminal.
    pub fn feed(&mut self, byte: u8) -> Edits {
        let mut edits = Edits::new();
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        if self.escape != Escape::None {
            self.escape = match (self.escape, byte) {
                (_, CTRL_C | CR | LF) => Escape::None, // handled below as usual
                (Escape::Start, b'[') => Escape::Csi,
                (Escape::Start, b'O') => Escape::Ss3,
                (Escape::Csi, 0x20..=0x3f) => Escape::Csi,
                _ => Escape::None,
            };
            if !matches!(byte, CTRL_C | CR | LF) {
                return edits;
            }
        }
        if self.pending.is_empty() && byte < 0x80 {
            self.ascii(byte, after_cr, &mut edits);
            return edits;
        }
        // Part of a multi-byte character (or not UTF-8 at all).
        if self.pending.push(byte).is_err() {
            // Cannot happen (a 4-byte prefix is always complete or invalid); treat as invalid.
            self.drop_invalid(self.pending.len() + 1, &mut edits);
            self.pending.clear();
            return edits;
        }
        match std::str::from_utf8(&self.pending) {
            Ok(_) => {
                let ch = std::mem::take(&mut self.pending);
                self.add(&ch, &mut edits);
            }
            Err(e) if e.error_len().is_none() => {} // a valid prefix: wait for more
            Err(_) => {
                let n = self.pending.len();
                self.pending.clear();
                if n == 1 {
                    self.drop_invalid(1, &mut edits);
                } else {
                    // The earlier bytes were a broken character; this byte starts afresh.
                    self.drop_invalid(n - 1, &mut edits);
                    for e in self.feed(byte) {
                        let _ = edits.push(e);
                    }
                }
            }
        }
        edits
    }

    fn ascii(&mut self, byte: u8, after_cr: bool, edits: &mut Edits) {
        match byte {
            CR => {
                self.after_cr = true;
                self.end_line(edits);
            }
            LF if after_cr => {}
            LF => self.end_line(edits),
            CTRL_C => {
                self.clear();
                let _ = edits.push(Edit::Interrupt);
            }
            BACKSPACE | DEL if !self.overlong && self.erase_last() => {
                let _ = edits.push(Edit::Erase);
            }
            BACKSPACE | DEL => {}
            ESC => self.escape = Escape::Start,
            TAB | 0x20..=0x7e => self.add(&[byte], edits),
            _ => {} // other control bytes mean nothing to a line
        }
    }

    /// Appends one complete character, or marks the line overlong when it does not fit.
    fn add(&mut self, ch: &[u8], edits: &mut Edits) {
        if self.overlong || self.line.len() + ch.len() > self.limit {
            self.overlong = true;
            return;
        }
        // Fits: `limit` <= the capacity.
        let _ = self.line.extend_from_slice(ch);
        let mut echo = FixedVec::new();
        let _ = echo.extend_from_slice(ch);
        let _ = edits.push(Edit::Echo(echo));
    }

    /// Removes the last character; false when the line is empty.
    fn erase_last(&mut self) -> bool {
        if self.line.is_empty() {
            return false;
        }
        while let Some(b) = self.line.pop() {
            if b & 0xc0 != 0x80 {
                break; // the lead byte (or an ASCII byte): the character is gone
            }
        }
        true
    }

    fn drop_invalid(&mut self, n: usize, edits: &mut Edits) {
        self.dropped += n;
        let _ = edits.push(Edit::Invalid(n));
    }

    fn end_line(&mut self, edits: &mut Edits) {
        // A character cut short by the line end is not UTF-8.
        if !self.pending.is_empty() {
            let n = self.pending.len();
            self.pending.clear();
            self.drop_invalid(n, edits);
        }
        let edit = if self.overlong {
            Edit::Overlong { limit: self.limit }
        } else {
            Edit::Line {
                text: self.line().to_string(),
                dropped: self.dropped,
            }
        };
        self.clear();
        let _ = edits.push(edit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `bytes`, returning every edit and the echoed bytes (as a terminal shows them).
    fn feed_all(ed: &mut LineEditor, bytes: &[u8]) -> (Vec<Edit>, Vec<u8>) {
        let mut edits = Vec::new();
        let mut echo = Vec::new();
        for &b in bytes {
            for e in ed.feed(b) {
                match &e {
                    Edit::Echo(bytes) => echo.extend_from_slice(bytes),
                    Edit::Erase => echo.extend_from_slice(ERASE_ECHO),
                    _ => {}
                }
                edits.push(e);
            }
        }
        (edits, echo)
    }

    fn lines(edits: &[Edit]) -> Vec<String> {
        edits
            .iter()
            .filter_map(|e| match e {
                Edit::Line { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn cr_lf_and_crlf_each_end_one_line() {
        let mut ed = LineEditor::new(64);
        let (edits, echo) = feed_all(&mut ed, b"one\rtwo\nthree\r\nfour\r\n\r\n");
        assert_eq!(lines(&edits), ["one", "two", "three", "four", ""]);
        assert_eq!(echo, b"onetwothreefour");
    }

    #[test]
    fn crlf_split_across_feeds_counts_once_but_lf_cr_is_two_ends() {
        let mut ed = LineEditor::new(64);
        let (a, _) = feed_all(&mut ed, b"hi\r");
        let (b, _) = feed_all(&mut ed, b"\nyo\n\r");
        assert_eq!(lines(&a), ["hi"]);
        assert_eq!(lines(&b), ["yo", ""]);
    }

    #[test]
    fn backspace_and_delete_erase_whole_multibyte_characters() {
        let mut ed = LineEditor::new(64);
        // "aé€😀" then four erasures (DEL, BS, DEL, BS) leaves "", then "b".
        let mut input = "aé€😀".as_bytes().to_vec();
        input.extend_from_slice(&[DEL, BACKSPACE]);
        let (edits, _) = feed_all(&mut ed, &input);
        assert_eq!(ed.line(), "aé");
        assert_eq!(edits.iter().filter(|e| **e == Edit::Erase).count(), 2);
        let (_, echo) = feed_all(&mut ed, &[DEL, BACKSPACE, BACKSPACE, b'b', CR]);
        // Two erasures echo; the third finds the line empty and echoes nothing.
        assert_eq!(echo, [ERASE_ECHO, ERASE_ECHO, b"b"].concat());
        assert_eq!(ed.line(), "");
    }

    #[test]
    fn multibyte_character_typed_in_pieces_is_echoed_once_complete() {
        let mut ed = LineEditor::new(64);
        let euro = "€".as_bytes();
        assert!(ed.feed(euro[0]).is_empty());
        assert!(ed.feed(euro[1]).is_empty());
        let edits = ed.feed(euro[2]);
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0], Edit::Echo(FixedVec::from_slice(euro).unwrap()));
        assert_eq!(ed.line(), "€");
    }

    #[test]
    fn overlong_line_is_rejected_once_and_the_next_line_works() {
        let mut ed = LineEditor::new(64);
        let long = vec![b'x'; 100];
        let (edits, echo) = feed_all(&mut ed, &long);
        // The first 64 are echoed, the rest swallowed.
        assert_eq!(echo.len(), 64);
        assert!(edits.iter().all(|e| matches!(e, Edit::Echo(_))));
        let (edits, _) = feed_all(&mut ed, b"\r\nshort\r\n");
        assert_eq!(
            edits.first(),
            Some(&Edit::Overlong { limit: 64 }),
            "{edits:?}"
        );
        assert_eq!(lines(&edits), ["short"]);
        // Exactly the limit is fine.
        let (edits, _) = feed_all(&mut ed, &[vec![b'y'; 64], b"\r".to_vec()].concat());
        assert_eq!(lines(&edits), ["y".repeat(64)]);
    }

    #[test]
    fn multibyte_character_that_would_cross_the_limit_makes_the_line_overlong() {
        let mut ed = LineEditor::new(64);
        let mut input = vec![b'x'; 63];
        input.extend_from_slice("é\r".as_bytes());
        let (edits, _) = feed_all(&mut ed, &input);
        assert_eq!(edits.last(), Some(&Edit::Overlong { limit: 64 }));
    }

    #[test]
    fn invalid_utf8_is_dropped_with_a_count_and_never_echoed() {
        let mut ed = LineEditor::new(64);
        // A stray continuation byte, 0xff, a lead byte cut off by 'b', an overlong encoding
        // of '/', and a surrogate.
        let input = b"a\x80\xffb\xc3b\xc0\xafc\xed\xa0\x80d\r";
        let (edits, echo) = feed_all(&mut ed, input);
        assert_eq!(echo, b"abbcd");
        assert_eq!(
            edits.last(),
            Some(&Edit::Line {
                text: "abbcd".into(),
                dropped: 8
            })
        );
        let invalid: usize = edits
            .iter()
            .map(|e| if let Edit::Invalid(n) = e { *n } else { 0 })
            .sum();
        assert_eq!(invalid, 8);
    }

    #[test]
    fn a_character_cut_off_by_the_line_end_is_dropped() {
        let mut ed = LineEditor::new(64);
        let (edits, _) = feed_all(&mut ed, b"ok\xe2\x82\r");
        assert_eq!(
            edits,
            [
                Edit::Echo(FixedVec::from_slice(b"o").unwrap()),
                Edit::Echo(FixedVec::from_slice(b"k").unwrap()),
                Edit::Invalid(2),
                Edit::Line {
                    text: "ok".into(),
                    dropped: 2
                },
            ]
        );
    }

    #[test]
    fn ctrl_c_discards_the_line_even_an_overlong_one() {
        let mut ed = LineEditor::new(64);
        let (edits, _) = feed_all(&mut ed, b"abc\x03def\r");
        assert!(edits.contains(&Edit::Interrupt));
        assert_eq!(lines(&edits), ["def"]);
        let (edits, _) = feed_all(&mut ed, &[vec![b'z'; 200], b"\x03ok\r".to_vec()].concat());
        assert_eq!(lines(&edits), ["ok"]);
        assert!(!edits.iter().any(|e| matches!(e, Edit::Overlong { .. })));
    }

    #[test]
    fn arrow_keys_and_other_controls_do_not_reach_the_line() {
        let mut ed = LineEditor::new(64);
        let (edits, echo) = feed_all(&mut ed, b"a\x1b[A\x1b[1;5Cb\x1bOHc\x07\x00\td\r");
        assert_eq!(lines(&edits), ["abc\td"]);
        assert_eq!(echo, b"abc\td");
    }

    #[test]
    fn limit_is_clamped_to_the_config_range() {
        assert_eq!(LineEditor::new(1).limit(), MIN_LINE_BYTES);
        assert_eq!(LineEditor::new(1 << 20).limit(), MAX_LINE_BYTES);
        assert_eq!(LineEditor::new(1000).limit(), 1000);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_never_echo_invalid_utf8_and_stay_in_the_limit(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            limit in 64usize..200,
        ) {
            let mut ed = LineEditor::new(limit);
            for &b in &bytes {
                for e in ed.feed(b) {
                    match e {
                        Edit::Echo(ch) => {
                            let s = std::str::from_utf8(&ch);
                            prop_assert!(s.is_ok(), "echoed non-UTF-8 {:?}", ch);
                            prop_assert_eq!(s.unwrap().chars().count(), 1);
                        }
                        Edit::Line { text, .. } => prop_assert!(text.len() <= limit),
                        _ => {}
                    }
                }
                prop_assert!(ed.line().len() <= limit);
                prop_assert!(std::str::from_utf8(&ed.line).is_ok());
            }
        }

        #[test]
        fn valid_text_comes_back_as_typed(text in "[^\\r\\n\\x00-\\x1f\\x7f]{0,60}") {
            let mut ed = LineEditor::new(256);
            let (edits, echo) = feed_all(&mut ed, format!("{text}\r\n").as_bytes());
            prop_assert_eq!(lines(&edits), vec![text.clone()]);
            prop_assert_eq!(echo, text.as_bytes().to_vec());
        }
    }
}
