//! Unicode classes of a code point as llama.cpp's pre-tokenizers see them: one general
//! category bit (`\p{L}`, `\p{N}`, ...) plus the White_Space property (`\s`).
//!
//! llama.cpp builds the same flags from UnicodeData.txt and PropList.txt (`unicode-data.cpp`);
//! here the categories come from the `unicode-general-category` tables and White_Space from
//! `char::is_whitespace` (which is that property). The tables may be a newer Unicode version
//! than the llama.cpp build's: only code points assigned in between can classify differently.

use unicode_general_category::{get_general_category, GeneralCategory as Gc};

/// Flags of one code point. Every code point inside the text has exactly one category bit, so
/// a value of zero means "outside the text" (the lookahead past a chunk's end).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CharClass(u16);

impl CharClass {
    /// Past the end of the chunk: no category at all.
    pub(crate) const OUTSIDE: CharClass = CharClass(0);

    const UNDEFINED: u16 = 1 << 0;
    const NUMBER: u16 = 1 << 1;
    const LETTER: u16 = 1 << 2;
    const SEPARATOR: u16 = 1 << 3;
    const MARK: u16 = 1 << 4;
    const PUNCTUATION: u16 = 1 << 5;
    const SYMBOL: u16 = 1 << 6;
    const CONTROL: u16 = 1 << 7;
    const WHITESPACE: u16 = 1 << 8;

    /// The class of `c`.
    pub(crate) fn of(c: char) -> CharClass {
        if c.is_ascii() {
            return ASCII_CLASSES[c as usize];
        }
        classify(c)
    }

    /// `\p{L}`.
    pub(crate) fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }

    /// `\p{N}`.
    pub(crate) fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }

    /// `\p{P}`.
    pub(crate) fn is_punctuation(self) -> bool {
        self.0 & Self::PUNCTUATION != 0
    }

    /// `\s` (the Unicode White_Space property).
    pub(crate) fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }

    /// A code point of the text (any category, including unassigned), not [`Self::OUTSIDE`].
    pub(crate) fn is_inside(self) -> bool {
        self.0 != 0
    }

    /// `[^\s\p{L}\p{N}]` for a code point of the text.
    pub(crate) fn is_other(self) -> bool {
        self.is_inside() && self.0 & (Self::WHITESPACE | Self::LETTER | Self::NUMBER) == 0
    }
}

fn classify(c: char) -> CharClass {
    let category = match get_general_category(c) {
        Gc::UppercaseLetter
        | Gc::LowercaseLetter
        | Gc::TitlecaseLetter
        | Gc::ModifierLetter
        | Gc::OtherLetter => CharClass::LETTER,
        Gc::DecimalNumber | Gc::LetterNumber | Gc::OtherNumber => CharClass::NUMBER,
        Gc::NonspacingMark | Gc::SpacingMark | Gc::EnclosingMark => CharClass::MARK,
        Gc::ConnectorPunctuation
        | Gc::DashPunctuation
        | Gc::OpenPunctuation
        | Gc::ClosePunctuation
        | Gc::InitialPunctuation
        | Gc::FinalPunctuation
        | Gc::OtherPunctuation => CharClass::PUNCTUATION,
        Gc::MathSymbol | Gc::CurrencySymbol | Gc::ModifierSymbol | Gc::OtherSymbol => {
            CharClass::SYMBOL
        }
        Gc::SpaceSeparator | Gc::LineSeparator | Gc::ParagraphSeparator => CharClass::SEPARATOR,
        Gc::Control | Gc::Format | Gc::Surrogate | Gc::PrivateUse => CharClass::CONTROL,
        // Unassigned, and any category a later version of the tables adds.
        _ => CharClass::UNDEFINED,
    };
    let ws = if c.is_whitespace() {
        CharClass::WHITESPACE
    } else {
        0
    };
    CharClass(category | ws)
}

/// ASCII is by far the most common input: classify it by table, not by the general tables.
static ASCII_CLASSES: [CharClass; 128] = {
    let mut t = [CharClass(0); 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        let category = if b.is_ascii_alphabetic() {
            CharClass::LETTER
        } else if b.is_ascii_digit() {
            CharClass::NUMBER
        } else if b == b' ' {
            CharClass::SEPARATOR
        } else if b < 0x20 || b == 0x7f {
            CharClass::CONTROL
        } else if matches!(
            b,
            b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'`' | b'|' | b'~'
        ) {
            CharClass::SYMBOL
        } else {
            CharClass::PUNCTUATION
        };
        // White_Space in ASCII: \t \n \v \f \r and space.
        let ws = if matches!(b, 0x09..=0x0d | b' ') {
            CharClass::WHITESPACE
        } else {
            0
        };
        t[i] = CharClass(category | ws);
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_table_agrees_with_general_tables() {
        for b in 0u8..128 {
            let c = b as char;
            assert_eq!(CharClass::of(c), classify(c), "code point {b:#04x}");
        }
    }

    #[test]
    fn classes_of_known_code_points() {
        assert!(CharClass::of('é').is_letter());
        assert!(CharClass::of('大').is_letter());
        assert!(CharClass::of('٣').is_number()); // ARABIC-INDIC DIGIT THREE
        assert!(CharClass::of('½').is_number());
        assert!(CharClass::of('\u{00a0}').is_whitespace());
        assert!(CharClass::of('\u{3000}').is_whitespace());
        assert!(!CharClass::of('\u{1c}').is_whitespace());
        assert!(CharClass::of('\u{0301}').is_other()); // combining acute: a mark
        assert!(CharClass::of('🤖').is_other());
        assert!(CharClass::of('。').is_punctuation());
        assert!(!CharClass::OUTSIDE.is_inside());
        assert!(!CharClass::OUTSIDE.is_other());
    }
}
