//! BPE pre-tokenization: cutting a text fragment into the words that merges run inside,
//! exactly where llama.cpp's `unicode_regex_split` cuts for the same `tokenizer.ggml.pre`.
//!
//! llama.cpp applies a list of regexes in turn, each one splitting the pieces the previous one
//! left (a piece is never merged with its neighbour again, and lookaheads stop at a piece's
//! end). The GPT-2 and Llama-3 regexes run as hand-written scanners (`unicode.cpp`'s custom
//! splitters), the others through `std::regex` on a text where every non-ASCII code point is
//! collapsed to its category. This module writes each of those regexes as a scanner over code
//! points and their [`CharClass`]; the Qwen2 regex is the Llama-3 one with single digits.
//! It owns no vocabulary knowledge: it only returns byte ranges of the input.

use std::ops::Range;

use super::char_class::CharClass;

/// The pre-tokenizer a byte-level BPE vocabulary names in `tokenizer.ggml.pre`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `gpt2`, `gpt-2`, `phi-2`, `mpt`, `olmo`, `jais`: the GPT-2 regex
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// `smollm` (also `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`,
    /// `minerva-7b`): every `\p{N}` code point alone, then the GPT-2 regex.
    Smollm,
    /// `llama3`, `llama-v3`, `llama-bpe`, `falcon3`, `pixtral`, `dbrx`, `smaug-bpe`:
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    Llama3,
    /// `qwen2`, `deepseek-r1-qwen`, `stablelm2`, `megrez`: the Llama-3 regex with `\p{N}`
    /// (one digit per word) instead of `\p{N}{1,3}`.
    Qwen2,
    /// `default` (and a missing `pre`): `[\p{P}\$\+<=>\^~\|]+`, then GPT-2, then `\p{N}+`,
    /// then `[0-9][0-9][0-9]`.
    Default,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value, `None` for names not listed above.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        Some(match name {
            "gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" => PreTokenizer::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => PreTokenizer::Smollm,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => {
                PreTokenizer::Llama3
            }
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => PreTokenizer::Qwen2,
            "default" => PreTokenizer::Default,
            _ => return None,
        })
    }
}

/// Buffers one pre-tokenization reuses for every fragment of one `encode` call.
#[derive(Default)]
pub(crate) struct SplitScratch {
    /// `[n_chars]` code points of the fragment.
    chars: Vec<char>,
    /// `[n_chars]` their classes.
    classes: Vec<CharClass>,
    /// `[n_chars + 1]` byte offset of each code point, then the fragment length.
    byte_at: Vec<usize>,
    /// Pieces in code point indices; two buffers, each pass reads one and writes the other.
    pieces: Vec<Range<usize>>,
    next: Vec<Range<usize>>,
}

impl SplitScratch {
    /// Cuts `text` into words as `pre` does; returns byte ranges of `text`, in order, covering
    /// it exactly.
    pub(crate) fn split(
        &mut self,
        pre: PreTokenizer,
        text: &str,
    ) -> impl Iterator<Item = Range<usize>> + '_ {
        self.load(text);
        let n = self.chars.len();
        self.pieces.clear();
        if n > 0 {
            self.pieces.push(0..n);
        }
        match pre {
            PreTokenizer::Gpt2 => self.pass(gpt2),
            PreTokenizer::Smollm => {
                self.pass(|t, r, out| matches_and_gaps(t, r, out, match_one_number));
                self.pass(gpt2);
            }
            PreTokenizer::Llama3 => self.pass(|t, r, out| llama3(t, r, out, 3)),
            PreTokenizer::Qwen2 => self.pass(|t, r, out| llama3(t, r, out, 1)),
            PreTokenizer::Default => {
                self.pass(|t, r, out| matches_and_gaps(t, r, out, match_default_punctuation));
                self.pass(gpt2);
                self.pass(|t, r, out| matches_and_gaps(t, r, out, match_number_run));
                self.pass(|t, r, out| matches_and_gaps(t, r, out, match_ascii_digit_triple));
            }
        }
        let byte_at = &self.byte_at;
        self.pieces
            .iter()
            .map(move |r| byte_at[r.start]..byte_at[r.end])
    }

    fn load(&mut self, text: &str) {
        self.chars.clear();
        self.classes.clear();
        self.byte_at.clear();
        for (i, c) in text.char_indices() {
            self.chars.push(c);
            self.classes.push(CharClass::of(c));
            self.byte_at.push(i);
        }
        self.byte_at.push(text.len());
    }

    /// Runs one regex over every current piece.
    fn pass(&mut self, split_piece: impl Fn(&Text<'_>, Range<usize>, &mut Vec<Range<usize>>)) {
        self.next.clear();
        let text = Text {
            chars: &self.chars,
            classes: &self.classes,
        };
        for r in self.pieces.iter() {
            split_piece(&text, r.clone(), &mut self.next);
        }
        std::mem::swap(&mut self.pieces, &mut self.next);
    }
}

/// The code points of the fragment and their classes.
struct Text<'a> {
    chars: &'a [char],
    classes: &'a [CharClass],
}

/// One piece being scanned: lookups past its end see nothing, like llama.cpp's
/// `_get_cpt`/`_get_flags` (which return out-of-range markers there).
struct Piece<'a> {
    text: &'a Text<'a>,
    end: usize,
}

impl Piece<'_> {
    fn char_at(&self, pos: usize) -> Option<char> {
        (pos < self.end).then(|| self.text.chars[pos])
    }

    fn class_at(&self, pos: usize) -> CharClass {
        if pos < self.end {
            self.text.classes[pos]
        } else {
            CharClass::OUTSIDE
        }
    }

    fn is_cr_or_lf(&self, pos: usize) -> bool {
        matches!(self.char_at(pos), Some('\r' | '\n'))
    }
}

/// Length of `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (ASCII case-insensitive when `any_case`).
fn contraction_len(p: &Piece<'_>, pos: usize, any_case: bool) -> usize {
    if p.char_at(pos) != Some('\'') {
        return 0;
    }
    let fold = |c: Option<char>| c.map(|c| if any_case { c.to_ascii_lowercase() } else { c });
    let c1 = fold(p.char_at(pos + 1));
    match c1 {
        Some('s' | 't' | 'm' | 'd') => 2,
        Some(a @ ('r' | 'v' | 'l')) => {
            let want = if a == 'l' { 'l' } else { 'e' };
            if fold(p.char_at(pos + 2)) == Some(want) {
                3
            } else {
                0
            }
        }
        _ => 0,
    }
}

/// Length of a whitespace run at `pos` and the end of its last `\r`/`\n`, if any.
fn whitespace_run(p: &Piece<'_>, pos: usize) -> (usize, Option<usize>) {
    let mut n = 0;
    let mut last_newline_end = None;
    while p.class_at(pos + n).is_whitespace() {
        if p.is_cr_or_lf(pos + n) {
            last_newline_end = Some(pos + n + 1);
        }
        n += 1;
    }
    (n, last_newline_end)
}

/// The end of `\s+(?!\S)|\s+` for a run of `n >= 1` whitespace at `pos`: all of it at the end
/// of the piece, all but the last one (which then leads the next word) before a non-space.
fn whitespace_word_end(p: &Piece<'_>, pos: usize, n: usize) -> usize {
    if n > 1 && p.char_at(pos + n).is_some() {
        pos + n - 1
    } else {
        pos + n
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn gpt2(text: &Text<'_>, r: Range<usize>, out: &mut Vec<Range<usize>>) {
    let p = Piece { text, end: r.end };
    let mut pos = r.start;
    while pos < r.end {
        let c = text.chars[pos];
        let end = word_end_gpt2(&p, pos, c);
        out.push(pos..end);
        pos = end;
    }
}

fn word_end_gpt2(p: &Piece<'_>, pos: usize, c: char) -> usize {
    let n = contraction_len(p, pos, false);
    if n > 0 {
        return pos + n;
    }
    // An optional leading space belongs to the letter, number or symbol run after it.
    let lead = usize::from(c == ' ');
    let first = p.class_at(pos + lead);
    let run_while = |keep: fn(CharClass) -> bool| {
        let mut e = pos + lead;
        while keep(p.class_at(e)) {
            e += 1;
        }
        e
    };
    if first.is_letter() {
        return run_while(CharClass::is_letter);
    }
    if first.is_number() {
        return run_while(CharClass::is_number);
    }
    if first.is_other() {
        return run_while(CharClass::is_other);
    }
    let (n, _) = whitespace_run(p, pos);
    if n > 0 {
        return whitespace_word_end(p, pos, n);
    }
    pos + 1
}

/// The Llama-3 regex with `\p{N}{1,max_digits}`.
fn llama3(text: &Text<'_>, r: Range<usize>, out: &mut Vec<Range<usize>>, max_digits: usize) {
    let p = Piece { text, end: r.end };
    let mut pos = r.start;
    while pos < r.end {
        let c = text.chars[pos];
        let class = text.classes[pos];

        let n = contraction_len(&p, pos, true);
        if n > 0 {
            out.push(pos..pos + n);
            pos += n;
            continue;
        }

        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(c == '\r' || c == '\n' || class.is_number())
            && (class.is_letter() || p.class_at(pos + 1).is_letter())
        {
            let mut e = pos + 1;
            while p.class_at(e).is_letter() {
                e += 1;
            }
            out.push(pos..e);
            pos = e;
            continue;
        }

        // \p{N}{1,max_digits}
        if class.is_number() {
            let mut start = pos;
            while p.class_at(pos).is_number() {
                pos += 1;
                if pos - start >= max_digits {
                    out.push(start..pos);
                    start = pos;
                }
            }
            if pos > start {
                out.push(start..pos);
            }
            continue;
        }

        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'. llama.cpp tests the class of the code point *after* a
        // space but only that the space itself exists, so a space ending the piece is taken
        // alone here; the regex would take it alone too (as `\s+`).
        let lead = usize::from(c == ' ');
        let after = if lead == 1 {
            p.class_at(pos + 1)
        } else {
            class
        };
        if !(after.is_whitespace() || after.is_letter() || after.is_number()) {
            let mut e = pos + lead;
            while p.class_at(e).is_other() {
                e += 1;
            }
            while p.is_cr_or_lf(e) {
                e += 1;
            }
            out.push(pos..e);
            pos = e;
            continue;
        }

        // \s*[\r\n]+|\s+(?!\S)|\s+
        let (n, last_newline_end) = whitespace_run(&p, pos);
        let e = match last_newline_end {
            Some(e) => e,
            None if n > 0 => whitespace_word_end(&p, pos, n),
            None => pos + 1,
        };
        out.push(pos..e);
        pos = e;
    }
}

/// How a regex without lookarounds splits a piece (llama.cpp's `std::regex` path): each
/// leftmost match becomes a word, and so does each stretch between matches.
fn matches_and_gaps(
    text: &Text<'_>,
    r: Range<usize>,
    out: &mut Vec<Range<usize>>,
    match_at: fn(&Piece<'_>, usize) -> usize,
) {
    let p = Piece { text, end: r.end };
    let mut gap_start = r.start;
    let mut pos = r.start;
    while pos < r.end {
        let n = match_at(&p, pos);
        if n == 0 {
            pos += 1;
            continue;
        }
        if pos > gap_start {
            out.push(gap_start..pos);
        }
        out.push(pos..pos + n);
        pos += n;
        gap_start = pos;
    }
    if gap_start < r.end {
        out.push(gap_start..r.end);
    }
}

/// `\p{N}`
fn match_one_number(p: &Piece<'_>, pos: usize) -> usize {
    usize::from(p.class_at(pos).is_number())
}

/// `\p{N}+`
fn match_number_run(p: &Piece<'_>, pos: usize) -> usize {
    let mut e = pos;
    while p.class_at(e).is_number() {
        e += 1;
    }
    e - pos
}

/// `[0-9][0-9][0-9]`
fn match_ascii_digit_triple(p: &Piece<'_>, pos: usize) -> usize {
    let digit = |i| p.char_at(i).is_some_and(|c: char| c.is_ascii_digit());
    if digit(pos) && digit(pos + 1) && digit(pos + 2) {
        3
    } else {
        0
    }
}

/// `[\p{P}\$\+<=>\^~\|]+` as llama.cpp's collapsed regex sees it: non-ASCII punctuation, and in
/// ASCII every punctuation or symbol character except the backtick.
fn match_default_punctuation(p: &Piece<'_>, pos: usize) -> usize {
    let is_punct = |i: usize| match p.char_at(i) {
        Some(c) if c.is_ascii() => c.is_ascii_punctuation() && c != '`',
        Some(_) => p.class_at(i).is_punctuation(),
        None => false,
    };
    let mut e = pos;
    while is_punct(e) {
        e += 1;
    }
    e - pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, s: &str) -> Vec<String> {
        let mut scratch = SplitScratch::default();
        scratch.split(pre, s).map(|r| s[r].to_string()).collect()
    }

    // Expected splits follow from the regexes by hand (and from HF tokenizers' behaviour).
    #[test]
    fn gpt2_splits() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "Hello world's  end   "),
            ["Hello", " world", "'s", " ", " end", "   "]
        );
        assert_eq!(
            words(PreTokenizer::Gpt2, "a+=12 ok"),
            ["a", "+=", "12", " ok"]
        );
        assert_eq!(words(PreTokenizer::Gpt2, "x\n\ny"), ["x", "\n", "\n", "y"]);
        assert_eq!(words(PreTokenizer::Gpt2, "I'M"), ["I", "'", "M"]);
    }

    #[test]
    fn smollm_splits_every_digit() {
        assert_eq!(
            words(PreTokenizer::Smollm, "12345 + 678"),
            ["1", "2", "3", "4", "5", " +", " ", "6", "7", "8"]
        );
        // The digit split comes first, so whitespace before a digit ends its own piece.
        assert_eq!(words(PreTokenizer::Smollm, "a  1"), ["a", "  ", "1"]);
    }

    #[test]
    fn llama3_splits() {
        assert_eq!(
            words(PreTokenizer::Llama3, "I'M 1234567 fine!!\n\n  ok"),
            ["I", "'M", " ", "123", "456", "7", " fine", "!!\n\n", " ", " ok"]
        );
        assert_eq!(
            words(PreTokenizer::Llama3, "a \n\n b"),
            ["a", " \n\n", " b"]
        );
        assert_eq!(words(PreTokenizer::Llama3, ".abc"), [".abc"]);
        assert_eq!(words(PreTokenizer::Qwen2, "x123"), ["x", "1", "2", "3"]);
    }

    #[test]
    fn default_splits() {
        assert_eq!(
            words(PreTokenizer::Default, "a, 12345!"),
            ["a", ",", " ", "123", "45", "!"]
        );
    }

    #[test]
    fn pieces_cover_the_input() {
        let s = "héllo 大语言 🤖 \u{a0}x\r\n\t 9½ ' end";
        for pre in [
            PreTokenizer::Gpt2,
            PreTokenizer::Smollm,
            PreTokenizer::Llama3,
            PreTokenizer::Qwen2,
            PreTokenizer::Default,
        ] {
            assert_eq!(words(pre, s).concat(), s, "{pre:?}");
            assert!(words(pre, s).iter().all(|w| !w.is_empty()), "{pre:?}");
        }
    }

    /// Splits of the true regexes (Python's `regex` module, `\\s` restricted to White_Space as
    /// llama.cpp's `std::regex` and custom splitters see it), applied pass by pass per piece.
    const REGEX_REFERENCE: &[(PreTokenizer, &str, &[&str])] = &[
        (PreTokenizer::Gpt2, "l^ \rS", &["l", "^", " ", "\r", "S"]),
        (
            PreTokenizer::Gpt2,
            "etE<S\n\tV",
            &["etE", "<", "S", "\n", "\t", "V"],
        ),
        (
            PreTokenizer::Gpt2,
            "\r,-_\u{1c}\u{3000}\ns7\u{2028}",
            &["\r", ",-_\u{1c}", "\u{3000}", "\n", "s", "7", "\u{2028}"],
        ),
        (
            PreTokenizer::Gpt2,
            "9\u{1f916}v\rD?5\u{bd}dZ\u{85}\t\u{b}7",
            &[
                "9",
                "\u{1f916}",
                "v",
                "\r",
                "D",
                "?",
                "5\u{bd}",
                "dZ",
                "\u{85}\t",
                "\u{b}",
                "7",
            ],
        ),
        (
            PreTokenizer::Gpt2,
            "' |\u{a0}d9\u{b} Mr\u{2028}",
            &["'", " |", "\u{a0}", "d", "9", "\u{b}", " Mr", "\u{2028}"],
        ),
        (
            PreTokenizer::Gpt2,
            "\u{e9}4\u{b}6a\u{3000}\n\u{aa}s\u{378}",
            &[
                "\u{e9}", "4", "\u{b}", "6", "a", "\u{3000}", "\n", "\u{aa}s", "\u{378}",
            ],
        ),
        (
            PreTokenizer::Gpt2,
            "x  \n\n y 12345'Ve",
            &["x", "  \n\n", " y", " 12345", "'", "Ve"],
        ),
        (PreTokenizer::Llama3, "l^ \rS", &["l", "^", " \r", "S"]),
        (
            PreTokenizer::Llama3,
            "etE<S\n\tV",
            &["etE", "<S", "\n", "\tV"],
        ),
        (
            PreTokenizer::Llama3,
            "\r,-_\u{1c}\u{3000}\ns7\u{2028}",
            &["\r", ",-_\u{1c}", "\u{3000}\n", "s", "7", "\u{2028}"],
        ),
        (
            PreTokenizer::Llama3,
            "9\u{1f916}v\rD?5\u{bd}dZ\u{85}\t\u{b}7",
            &[
                "9",
                "\u{1f916}v",
                "\r",
                "D",
                "?",
                "5\u{bd}",
                "dZ",
                "\u{85}\t",
                "\u{b}",
                "7",
            ],
        ),
        (
            PreTokenizer::Llama3,
            "' |\u{a0}d9\u{b} Mr\u{2028}",
            &["'", " |", "\u{a0}d", "9", "\u{b}", " Mr", "\u{2028}"],
        ),
        (
            PreTokenizer::Llama3,
            "\u{e9}4\u{b}6a\u{3000}\n\u{aa}s\u{378}",
            &[
                "\u{e9}",
                "4",
                "\u{b}",
                "6",
                "a",
                "\u{3000}\n",
                "\u{aa}s",
                "\u{378}",
            ],
        ),
        (
            PreTokenizer::Llama3,
            "x  \n\n y 12345'Ve",
            &["x", "  \n\n", " y", " ", "123", "45", "'Ve"],
        ),
        (PreTokenizer::Qwen2, "l^ \rS", &["l", "^", " \r", "S"]),
        (
            PreTokenizer::Qwen2,
            "etE<S\n\tV",
            &["etE", "<S", "\n", "\tV"],
        ),
        (
            PreTokenizer::Qwen2,
            "\r,-_\u{1c}\u{3000}\ns7\u{2028}",
            &["\r", ",-_\u{1c}", "\u{3000}\n", "s", "7", "\u{2028}"],
        ),
        (
            PreTokenizer::Qwen2,
            "9\u{1f916}v\rD?5\u{bd}dZ\u{85}\t\u{b}7",
            &[
                "9",
                "\u{1f916}v",
                "\r",
                "D",
                "?",
                "5",
                "\u{bd}",
                "dZ",
                "\u{85}\t",
                "\u{b}",
                "7",
            ],
        ),
        (
            PreTokenizer::Qwen2,
            "' |\u{a0}d9\u{b} Mr\u{2028}",
            &["'", " |", "\u{a0}d", "9", "\u{b}", " Mr", "\u{2028}"],
        ),
        (
            PreTokenizer::Qwen2,
            "\u{e9}4\u{b}6a\u{3000}\n\u{aa}s\u{378}",
            &[
                "\u{e9}",
                "4",
                "\u{b}",
                "6",
                "a",
                "\u{3000}\n",
                "\u{aa}s",
                "\u{378}",
            ],
        ),
        (
            PreTokenizer::Qwen2,
            "x  \n\n y 12345'Ve",
            &["x", "  \n\n", " y", " ", "1", "2", "3", "4", "5", "'Ve"],
        ),
        (PreTokenizer::Smollm, "l^ \rS", &["l", "^", " ", "\r", "S"]),
        (
            PreTokenizer::Smollm,
            "etE<S\n\tV",
            &["etE", "<", "S", "\n", "\t", "V"],
        ),
        (
            PreTokenizer::Smollm,
            "\r,-_\u{1c}\u{3000}\ns7\u{2028}",
            &["\r", ",-_\u{1c}", "\u{3000}", "\n", "s", "7", "\u{2028}"],
        ),
        (
            PreTokenizer::Smollm,
            "9\u{1f916}v\rD?5\u{bd}dZ\u{85}\t\u{b}7",
            &[
                "9",
                "\u{1f916}",
                "v",
                "\r",
                "D",
                "?",
                "5",
                "\u{bd}",
                "dZ",
                "\u{85}\t\u{b}",
                "7",
            ],
        ),
        (
            PreTokenizer::Smollm,
            "' |\u{a0}d9\u{b} Mr\u{2028}",
            &["'", " |", "\u{a0}", "d", "9", "\u{b}", " Mr", "\u{2028}"],
        ),
        (
            PreTokenizer::Smollm,
            "\u{e9}4\u{b}6a\u{3000}\n\u{aa}s\u{378}",
            &[
                "\u{e9}", "4", "\u{b}", "6", "a", "\u{3000}", "\n", "\u{aa}s", "\u{378}",
            ],
        ),
        (
            PreTokenizer::Smollm,
            "x  \n\n y 12345'Ve",
            &["x", "  \n\n", " y", " ", "1", "2", "3", "4", "5", "'", "Ve"],
        ),
        (PreTokenizer::Default, "l^ \rS", &["l", "^", " ", "\r", "S"]),
        (
            PreTokenizer::Default,
            "etE<S\n\tV",
            &["etE", "<", "S", "\n", "\t", "V"],
        ),
        (
            PreTokenizer::Default,
            "\r,-_\u{1c}\u{3000}\ns7\u{2028}",
            &[
                "\r", ",-_", "\u{1c}", "\u{3000}", "\n", "s", "7", "\u{2028}",
            ],
        ),
        (
            PreTokenizer::Default,
            "9\u{1f916}v\rD?5\u{bd}dZ\u{85}\t\u{b}7",
            &[
                "9",
                "\u{1f916}",
                "v",
                "\r",
                "D",
                "?",
                "5\u{bd}",
                "dZ",
                "\u{85}\t",
                "\u{b}",
                "7",
            ],
        ),
        (
            PreTokenizer::Default,
            "' |\u{a0}d9\u{b} Mr\u{2028}",
            &[
                "'", " ", "|", "\u{a0}", "d", "9", "\u{b}", " Mr", "\u{2028}",
            ],
        ),
        (
            PreTokenizer::Default,
            "\u{e9}4\u{b}6a\u{3000}\n\u{aa}s\u{378}",
            &[
                "\u{e9}", "4", "\u{b}", "6", "a", "\u{3000}", "\n", "\u{aa}s", "\u{378}",
            ],
        ),
        (
            PreTokenizer::Default,
            "x  \n\n y 12345'Ve",
            &["x", "  \n\n", " y", " ", "123", "45", "'", "Ve"],
        ),
    ];

    #[test]
    fn splits_equal_the_regexes() {
        for (pre, s, want) in REGEX_REFERENCE {
            assert_eq!(words(*pre, s), *want, "{pre:?} {s:?}");
        }
    }
}
