//! SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`): merges by token score, as
//! llama.cpp's `llm_tokenizer_spm_session`.
//!
//! The text (spaces already written as U+2581) starts as one symbol per UTF-8 character. Any
//! adjacent pair whose concatenation is a token is a candidate; the candidate whose token has
//! the highest score is merged first (leftmost on equal scores), until no candidate is left.
//! A final symbol that is not a token is written as its bytes' `<0xXX>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::bpe::NO_TOKEN;
use super::vocab::TokenTexts;

/// What SPM merging needs from the vocabulary.
pub(crate) struct SpmVocab<'a> {
    pub(crate) texts: &'a TokenTexts,
    /// `[n_vocab]` `tokenizer.ggml.scores`.
    pub(crate) scores: &'a [f32],
    /// `[256]` the `<0xXX>` token of each byte, [`NO_TOKEN`] if absent.
    pub(crate) byte_tokens: &'a [u32; 256],
    /// Written for a byte without a `<0xXX>` token (llama.cpp throws there).
    pub(crate) unk: Option<u32>,
}

/// A span of the text: a run of whole characters, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

/// A candidate merge: the symbols at `left` and `right` make a token of this `score`.
#[derive(Clone, Copy)]
struct Candidate {
    score: f32,
    left: u32,
    right: u32,
    /// Byte length of the merged span; a stale candidate no longer adds up to it.
    len: u32,
}

impl Ord for Candidate {
    /// Max-heap order: higher score first, then the lower (leftmost) index.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// Buffers reused for every fragment of one `encode` call.
#[derive(Default)]
pub(crate) struct SpmScratch {
    /// `[chars of the text]`
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Candidate>,
}

impl SpmScratch {
    /// Tokenizes `text` (already escaped) and appends the ids.
    pub(crate) fn encode(&mut self, text: &str, vocab: &SpmVocab<'_>, out: &mut Vec<u32>) {
        self.symbols.clear();
        self.queue.clear();
        let mut chars = text.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            let i = self.symbols.len() as u32;
            self.symbols.push(Symbol {
                start: start as u32,
                len: c.len_utf8() as u32,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if chars.peek().is_some() { i + 1 } else { NONE },
            });
        }
        for i in 1..self.symbols.len() as u32 {
            self.try_add(i - 1, i, text, vocab);
        }

        while let Some(c) = self.queue.pop() {
            let (l, r) = (
                self.symbols[c.left as usize],
                self.symbols[c.right as usize],
            );
            if l.len == 0 || r.len == 0 || l.len + r.len != c.len {
                continue;
            }
            let left = &mut self.symbols[c.left as usize];
            left.len += r.len;
            left.next = r.next;
            let left_prev = left.prev;
            self.symbols[c.right as usize].len = 0;
            if r.next != NONE {
                self.symbols[r.next as usize].prev = c.left;
            }
            self.try_add(left_prev, c.left, text, vocab);
            self.try_add(c.left, r.next, text, vocab);
        }

        let mut i = if self.symbols.is_empty() { NONE } else { 0 };
        while i != NONE {
            let s = self.symbols[i as usize];
            let span = &text.as_bytes()[s.start as usize..(s.start + s.len) as usize];
            match vocab.texts.id_of_bytes(span) {
                Some(id) => out.push(id),
                None => {
                    for &b in span {
                        match vocab.byte_tokens[b as usize] {
                            NO_TOKEN => out.extend(vocab.unk),
                            id => out.push(id),
                        }
                    }
                }
            }
            i = s.next;
        }
    }

    fn try_add(&mut self, left: u32, right: u32, text: &str, vocab: &SpmVocab<'_>) {
        if left == NONE || right == NONE {
            return;
        }
        let (l, r) = (self.symbols[left as usize], self.symbols[right as usize]);
        let span = &text.as_bytes()[l.start as usize..(r.start + r.len) as usize];
        if let Some(id) = vocab.texts.id_of_bytes(span) {
            self.queue.push(Candidate {
                score: vocab.scores.get(id as usize).copied().unwrap_or(0.0),
                left,
                right,
                len: l.len + r.len,
            });
        }
    }
}
