//! The vocabulary's token texts and types as the file stores them, with the reverse lookup
//! text → id. One `String` holds every text back to back; the lookup is the ids sorted by text
//! (binary search), so the whole table is three flat allocations made once at load.

use super::TokenizerError;

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// 0, or any value outside 1..=6: rendered as nothing.
    Undefined,
    /// 1: an ordinary piece of text.
    Normal,
    /// 2: the unknown token (`<unk>`); matched in text only with special parsing.
    Unknown,
    /// 3: a control token (`<|im_end|>`, `<s>`): matched in text only with special parsing,
    /// rendered as nothing unless asked for its raw text.
    Control,
    /// 4: a user-defined token: always matched in text before tokenizing, rendered as its text.
    UserDefined,
    /// 5: an unused slot: never produced, rendered as nothing.
    Unused,
    /// 6: a byte fallback token `<0xXX>`: rendered as that byte.
    Byte,
}

impl TokenType {
    /// The type for a `tokenizer.ggml.token_type` value.
    pub fn from_id(v: i32) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// Token texts by id, and ids by text.
pub(crate) struct TokenTexts {
    /// Every token text back to back.
    arena: String,
    /// `[n_vocab + 1]` start of each text in `arena`, then its length.
    offsets: Vec<u32>,
    /// `[n_vocab]` ids ordered by their text's bytes.
    by_text: Vec<u32>,
}

impl TokenTexts {
    /// Stores `texts` (index = id). Fails on a text that two ids share.
    pub(crate) fn new<S: AsRef<str>>(texts: &[S]) -> Result<TokenTexts, TokenizerError> {
        let total: usize = texts.iter().map(|t| t.as_ref().len()).sum();
        if total > u32::MAX as usize || texts.len() > u32::MAX as usize {
            return Err(TokenizerError::TooLarge {
                what: "token texts",
                size: total.max(texts.len()),
            });
        }
        let mut arena = String::with_capacity(total);
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        for t in texts {
            offsets.push(arena.len() as u32);
            arena.push_str(t.as_ref());
        }
        offsets.push(arena.len() as u32);
        let mut me = TokenTexts {
            arena,
            offsets,
            by_text: (0..texts.len() as u32).collect(),
        };
        let mut by_text = std::mem::take(&mut me.by_text);
        by_text.sort_unstable_by(|&a, &b| me.text(a).cmp(me.text(b)).then(a.cmp(&b)));
        for w in by_text.windows(2) {
            if me.text(w[0]) == me.text(w[1]) {
                return Err(TokenizerError::DuplicateToken {
                    text: me.text(w[0]).to_string(),
                    first: w[0],
                    second: w[1],
                });
            }
        }
        me.by_text = by_text;
        Ok(me)
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The text of `id`, empty for ids outside the vocabulary.
    pub(crate) fn text(&self, id: u32) -> &str {
        let i = id as usize;
        if i + 1 >= self.offsets.len() {
            return "";
        }
        &self.arena[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The id whose text is exactly `s`.
    pub(crate) fn id(&self, s: &str) -> Option<u32> {
        self.id_of_bytes(s.as_bytes())
    }

    /// The id whose text is exactly `s` (a byte slice: callers look up spans of a buffer).
    pub(crate) fn id_of_bytes(&self, s: &[u8]) -> Option<u32> {
        self.by_text
            .binary_search_by(|&id| self.text(id).as_bytes().cmp(s))
            .ok()
            .map(|i| self.by_text[i])
    }

    /// Bytes this table holds on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity() + 4 * (self.offsets.capacity() + self.by_text.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_both_ways() {
        let t = TokenTexts::new(&["b", "a", "ab", "▁x", "a b"]).map_err(|e| e.to_string());
        let t = t.expect("distinct texts");
        assert_eq!(t.len(), 5);
        for (id, s) in ["b", "a", "ab", "▁x", "a b"].iter().enumerate() {
            assert_eq!(t.text(id as u32), *s);
            assert_eq!(t.id(s), Some(id as u32));
        }
        assert_eq!(t.id("c"), None);
        assert_eq!(t.id(""), None);
        assert_eq!(t.text(99), "");
    }

    #[test]
    fn duplicate_text_is_an_error() {
        match TokenTexts::new(&["x", "y", "x"]) {
            Err(TokenizerError::DuplicateToken { first, second, .. }) => {
                assert_eq!((first, second), (0, 2))
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("duplicate accepted"),
        }
    }
}
