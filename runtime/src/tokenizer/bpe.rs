//! Byte-level BPE merging inside one pre-tokenized word: the ranked merges of
//! `tokenizer.ggml.merges` applied lowest rank first, as llama.cpp's `llm_tokenizer_bpe_session`.
//!
//! A word starts as one symbol per UTF-8 byte (the token of that byte's GPT-2 code point);
//! the adjacent pair with the lowest merge rank is merged (leftmost first on equal ranks, which
//! only happens for the same pair at two places) until no adjacent pair has a merge. Symbols
//! are token ids throughout: every merge is resolved to ids at load, and a merge whose parts or
//! result are not tokens is refused then.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use super::vocab::TokenTexts;
use super::TokenizerError;

/// Marks "no token" in id tables (a byte whose token the vocabulary lacks).
pub(crate) const NO_TOKEN: u32 = u32::MAX;

/// The merges, as `(left id, right id) → (rank, merged id)`, sorted by key for binary search.
#[derive(Default)]
pub(crate) struct MergeTable {
    /// `[n_merges]` `left << 32 | right`, ascending.
    keys: Vec<u64>,
    /// `[n_merges]` `(rank, merged id)` of the same index.
    values: Vec<(u32, u32)>,
}

impl MergeTable {
    /// Resolves the `"left right"` merge strings against the vocabulary. Rank = index; a pair
    /// listed twice keeps its first rank (as llama.cpp's `bpe_ranks.emplace`).
    pub(crate) fn new<S: AsRef<str>>(
        merges: &[S],
        texts: &TokenTexts,
    ) -> Result<MergeTable, TokenizerError> {
        // A hash index of the texts for the three lookups per merge (binary searches over
        // string compares were a fifth of a model's load time).
        let index: HashMap<&str, u32> = (0..texts.len() as u32)
            .map(|id| (texts.text(id), id))
            .collect();
        let id = |s: &str| index.get(s).copied();
        let mut joined = String::new();
        let mut entries: Vec<(u64, u32, u32)> = Vec::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let m = m.as_ref();
            let unknown = |token: &str| TokenizerError::UnknownMergeToken {
                index: rank,
                merge: m.to_string(),
                token: token.to_string(),
            };
            // The separator is the first space after the first byte, as llama.cpp splits.
            let split = m
                .bytes()
                .skip(1)
                .position(|b| b == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| TokenizerError::MalformedMerge {
                    index: rank,
                    merge: m.to_string(),
                })?;
            let (left, right) = (&m[..split], &m[split + 1..]);
            let l = id(left).ok_or_else(|| unknown(left))?;
            let r = id(right).ok_or_else(|| unknown(right))?;
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let merged = id(&joined).ok_or_else(|| unknown(&joined))?;
            entries.push(((u64::from(l) << 32) | u64::from(r), rank as u32, merged));
        }
        // Stable sort: of a duplicated pair the lower rank comes first and is kept.
        entries.sort_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        Ok(MergeTable {
            keys: entries.iter().map(|e| e.0).collect(),
            values: entries.iter().map(|e| (e.1, e.2)).collect(),
        })
    }

    /// `(rank, merged id)` of the pair, if the vocabulary merges it.
    pub(crate) fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        if left == NO_TOKEN || right == NO_TOKEN {
            return None;
        }
        let key = (u64::from(left) << 32) | u64::from(right);
        self.keys.binary_search(&key).ok().map(|i| self.values[i])
    }

    /// Number of distinct merges.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Bytes this table holds on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        8 * self.keys.capacity() + 8 * self.values.capacity()
    }
}

/// One symbol of the word being merged: a token id in a doubly linked list over the bytes.
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

const NONE: u32 = u32::MAX;

/// A candidate merge of the symbol at `left` with the one after it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Candidate {
    rank: u32,
    left: u32,
    left_id: u32,
    right_id: u32,
    merged: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.rank, self.left).cmp(&(other.rank, other.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Buffers reused for every word of one `encode` call.
#[derive(Default)]
pub(crate) struct BpeScratch {
    /// `[word bytes]`
    symbols: Vec<Symbol>,
    /// Min-heap of candidate merges (stale entries are skipped when popped).
    queue: BinaryHeap<Reverse<Candidate>>,
}

impl BpeScratch {
    /// Merges `word` (raw UTF-8 bytes of one pre-tokenized word) and appends its token ids.
    /// `byte_tokens[b]` is the token of byte `b`'s GPT-2 code point; a byte without one is
    /// dropped, as llama.cpp drops it.
    pub(crate) fn merge_word(
        &mut self,
        word: &[u8],
        byte_tokens: &[u32; 256],
        merges: &MergeTable,
        out: &mut Vec<u32>,
    ) {
        let n = word.len();
        self.symbols.clear();
        self.queue.clear();
        for (i, &b) in word.iter().enumerate() {
            self.symbols.push(Symbol {
                id: byte_tokens[b as usize],
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i + 1 == n { NONE } else { i as u32 + 1 },
                alive: true,
            });
        }
        for i in 1..n {
            self.push_candidate(i as u32 - 1, merges);
        }

        while let Some(Reverse(c)) = self.queue.pop() {
            let left = self.symbols[c.left as usize];
            if !left.alive || left.id != c.left_id || left.next == NONE {
                continue;
            }
            let right = self.symbols[left.next as usize];
            if right.id != c.right_id {
                continue;
            }
            // Merge the right symbol into the left one and unlink it.
            let r = left.next;
            self.symbols[r as usize].alive = false;
            let l = &mut self.symbols[c.left as usize];
            l.id = c.merged;
            l.next = right.next;
            if right.next != NONE {
                self.symbols[right.next as usize].prev = c.left;
            }
            if left.prev != NONE {
                self.push_candidate(left.prev, merges);
            }
            self.push_candidate(c.left, merges);
        }

        let mut i = if n == 0 { NONE } else { 0 };
        while i != NONE {
            let s = self.symbols[i as usize];
            if s.id != NO_TOKEN {
                out.push(s.id);
            }
            i = s.next;
        }
    }

    fn push_candidate(&mut self, left: u32, merges: &MergeTable) {
        let l = self.symbols[left as usize];
        if l.next == NONE {
            return;
        }
        let right_id = self.symbols[l.next as usize].id;
        if let Some((rank, merged)) = merges.get(l.id, right_id) {
            self.queue.push(Reverse(Candidate {
                rank,
                left,
                left_id: l.id,
                right_id,
                merged,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A vocabulary over the bytes 'a'..='d' with merges that overlap and chain.
    fn toy() -> (TokenTexts, MergeTable, [u32; 256]) {
        let tokens = [
            "a", "b", "c", "d", "ab", "bc", "cd", "abc", "bcd", "aa", "aaa", "dd", "abcd",
        ];
        let merges = [
            "b c", "a b", "c d", "a bc", "a a", "ab cd", "aa a", "d d", "bc d",
        ];
        let texts = TokenTexts::new(&tokens).expect("distinct");
        let table = MergeTable::new(&merges, &texts).expect("valid merges");
        let mut bytes = [NO_TOKEN; 256];
        for (i, b) in b"abcd".iter().enumerate() {
            bytes[*b as usize] = i as u32;
        }
        (texts, table, bytes)
    }

    /// The specification: repeatedly merge the leftmost adjacent pair of lowest rank.
    fn naive(word: &[u8], table: &MergeTable, bytes: &[u32; 256]) -> Vec<u32> {
        let mut syms: Vec<u32> = word.iter().map(|&b| bytes[b as usize]).collect();
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some((rank, merged)) = table.get(syms[i], syms[i + 1]) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            syms[i] = merged;
            syms.remove(i + 1);
        }
        syms.retain(|&s| s != NO_TOKEN);
        syms
    }

    #[test]
    fn merges_follow_rank_order() {
        let (texts, table, bytes) = toy();
        let mut scratch = BpeScratch::default();
        let mut out = Vec::new();
        scratch.merge_word(b"abcd", &bytes, &table, &mut out);
        // "b c" (rank 0) first, then "a bc" (3) beats "bc d" (8): abc + d.
        let got: Vec<&str> = out.iter().map(|&id| texts.text(id)).collect();
        assert_eq!(got, ["abc", "d"]);
        out.clear();
        scratch.merge_word(b"aaaa", &bytes, &table, &mut out);
        let got: Vec<&str> = out.iter().map(|&id| texts.text(id)).collect();
        assert_eq!(got, ["aa", "aa"]);
    }

    #[test]
    fn unknown_merge_token_is_an_error() {
        let texts = TokenTexts::new(&["a", "b"]).expect("distinct");
        match MergeTable::new(&["a b"], &texts) {
            Err(TokenizerError::UnknownMergeToken { index, token, .. }) => {
                assert_eq!((index, token.as_str()), (0, "ab"))
            }
            _ => panic!("merge to a missing token accepted"),
        }
        assert!(matches!(
            MergeTable::new(&["ab"], &texts),
            Err(TokenizerError::MalformedMerge { index: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn heap_merge_equals_naive(word in proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(b'd'), Just(b'x')], 0..40)) {
            let (_, table, bytes) = toy();
            let mut scratch = BpeScratch::default();
            let mut out = Vec::new();
            scratch.merge_word(&word, &bytes, &table, &mut out);
            prop_assert_eq!(out, naive(&word, &table, &bytes));
        }
    }
}
