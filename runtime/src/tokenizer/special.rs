//! Special tokens: cutting their texts out of the input before BPE/SPM runs (llama.cpp's
//! `tokenizer_st_partition`), and recognising end-of-generation tokens by text where the file
//! names none (llama.cpp's heuristics in `llama_vocab::load`).

use std::ops::Range;

/// A part of the input: text still to tokenize, or a special token already matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// Splits `text` at every occurrence of the special tokens `specials` yields as `(id, text)`.
///
/// Like llama.cpp, one token at a time (the caller orders them longest text first): each token
/// is searched left to right in every text fragment still unmatched, and each occurrence splits
/// it. So a longer token wins over a shorter one it overlaps, wherever they start.
pub(crate) fn partition<'t>(
    text: &str,
    specials: impl Iterator<Item = (u32, &'t str)>,
    out: &mut Vec<Fragment>,
) {
    out.clear();
    if text.is_empty() {
        return;
    }
    out.push(Fragment::Text(0..text.len()));
    let mut next = Vec::new();
    for (id, tok) in specials {
        // Fragments are slices of `text`: if it lacks the token, so does every fragment.
        if tok.is_empty() || !text.contains(tok) {
            continue;
        }
        next.clear();
        for f in out.iter() {
            let r = match f {
                Fragment::Text(r) => r.clone(),
                Fragment::Token(_) => {
                    next.push(f.clone());
                    continue;
                }
            };
            let mut start = r.start;
            while let Some(found) = text[start..r.end].find(tok) {
                let at = start + found;
                if at > start {
                    next.push(Fragment::Text(start..at));
                }
                next.push(Fragment::Token(id));
                start = at + tok.len();
            }
            if start < r.end {
                next.push(Fragment::Text(start..r.end));
            }
        }
        std::mem::swap(out, &mut next);
    }
}

/// Texts llama.cpp takes as the end-of-turn token when `tokenizer.ggml.eot_token_id` is absent.
pub(crate) const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
];

/// Text llama.cpp takes as the end-of-message token when `tokenizer.ggml.eom_token_id` is absent.
pub(crate) const EOM_TEXT: &str = "<|eom_id|>";

/// Texts that end generation whatever the ids in the file say (with eos, eot and eom).
pub(crate) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str, specials: &[(u32, &str)]) -> Vec<Fragment> {
        let mut out = Vec::new();
        partition(text, specials.iter().copied(), &mut out);
        out
    }

    #[test]
    fn splits_around_every_occurrence() {
        use Fragment::*;
        let s = "<a>x<a><a>yz<a>";
        assert_eq!(
            parts(s, &[(7, "<a>")]),
            [
                Token(7),
                Text(3..4),
                Token(7),
                Token(7),
                Text(10..12),
                Token(7)
            ]
        );
        assert_eq!(parts("plain", &[(7, "<a>")]), [Text(0..5)]);
        assert_eq!(parts("", &[(7, "<a>")]), []);
    }

    #[test]
    fn earlier_token_in_order_wins_overlaps() {
        use Fragment::*;
        // "bcd" comes first (longer), so "ab" cannot match across it.
        assert_eq!(
            parts("abcd", &[(1, "bcd"), (2, "ab")]),
            [Text(0..1), Token(1)]
        );
    }
}
