//! Tokenizer tests on small synthetic vocabularies: SPM against a naive reference
//! implementation of SentencePiece's score-ordered merging, BPE special-token handling, and
//! the load-time validation errors. (The real SmolLM2 vocabulary is tested against llama.cpp's
//! recorded ids in `tests/tokenizer_smollm2.rs`.)

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const SPM_PIECES: &[(&str, f32)] = &[
    ("▁", -1.0),
    ("a", -2.0),
    ("b", -2.0),
    ("c", -3.0),
    ("é", -3.0),
    ("▁a", -1.5),
    ("▁b", -1.5),
    ("ab", -1.5),
    ("bc", -1.0),
    ("ca", -1.0),
    ("▁ab", -0.5),
    ("abc", -0.8),
    ("▁abc", -0.2),
    ("▁▁", -4.0),
    ("▁é", -2.5),
    ("éé", -2.5),
    ("cab", -0.1),
];

/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then [`SPM_PIECES`].
fn spm_spec() -> VocabSpec {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in SPM_PIECES {
        tokens.push(t.to_string());
        types.push(1);
        scores.push(*s);
    }
    VocabSpec {
        model: "llama".into(),
        tokens,
        token_types: Some(types),
        scores: Some(scores),
        ..VocabSpec::default()
    }
}

/// SentencePiece BPE by the book: repeatedly merge the adjacent pair whose concatenation is
/// the highest-scored token (the leftmost of equals), then spell leftovers as byte tokens.
fn naive_spm(spec: &VocabSpec, text: &str, add_bos: bool) -> Vec<u32> {
    let ids: HashMap<&str, u32> = spec
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let scores = spec.scores.as_ref().expect("spm scores");
    let mut out = Vec::new();
    if add_bos {
        out.push(1);
    }
    // llama.cpp tokenizes no fragment at all for an empty text (no lone space prefix).
    if text.is_empty() {
        return out;
    }
    let escaped = format!("▁{}", text.replace(' ', "▁"));
    let mut syms: Vec<String> = escaped.chars().map(String::from).collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 0..syms.len().saturating_sub(1) {
            let cat = format!("{}{}", syms[i], syms[i + 1]);
            if let Some(&id) = ids.get(cat.as_str()) {
                let s = scores[id as usize];
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    for s in syms {
        match ids.get(s.as_str()) {
            Some(&id) => out.push(id),
            None => out.extend(s.bytes().map(|b| ids[format!("<0x{b:02X}>").as_str()])),
        }
    }
    out
}

fn spm() -> Tokenizer {
    Tokenizer::from_vocab(spm_spec()).expect("valid spm vocab")
}

fn texts_of(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&id| tok.token_text(id).to_string())
        .collect()
}

#[test]
fn spm_defaults_follow_llama_cpp() {
    let tok = spm();
    assert_eq!(tok.kind(), TokenizerKind::Spm);
    assert_eq!(
        (tok.bos(), tok.eos(), tok.unk()),
        (Some(1), Some(2), Some(0))
    );
    assert!(tok.add_bos() && tok.add_space_prefix() && !tok.add_eos());
    assert!(tok.is_eog(2) && !tok.is_eog(1));
}

#[test]
fn spm_merges_by_score() {
    let tok = spm();
    let ids = tok.encode("abc cab", true, false).expect("encode");
    // "▁abc" (-0.2) is one token; in "▁cab", "cab" (-0.1) beats "▁" + "c" (not a token).
    assert_eq!(texts_of(&tok, &ids), ["<s>", "▁abc", "▁", "cab"]);
    assert_eq!(ids, naive_spm(&spm_spec(), "abc cab", true));
}

#[test]
fn spm_byte_fallback() {
    let tok = spm();
    let ids = tok.encode("x大", false, false).expect("encode");
    assert_eq!(
        texts_of(&tok, &ids),
        ["▁", "<0x78>", "<0xE5>", "<0xA4>", "<0xA7>"]
    );
    assert_eq!(tok.decode(&ids), "x大");
    assert_eq!(tok.piece(ids[2]), &[0xe5]);
}

#[test]
fn spm_special_tokens_and_space_prefix() {
    let tok = spm();
    // With special parsing "</s>" is the EOS id, and the text after it gets a space prefix
    // again; without, it is spelled out.
    let ids = tok.encode("a</s>b", false, true).expect("encode");
    assert_eq!(texts_of(&tok, &ids), ["▁a", "</s>", "▁b"]);
    let ids = tok.encode("a</s>", false, false).expect("encode");
    assert!(!ids.contains(&2));
    assert_eq!(tok.decode(&ids), "a</s>");
    assert_eq!(tok.piece(2), b"");
    assert_eq!(tok.piece_special(2), b"</s>");
    assert_eq!(tok.encode("", true, false).expect("encode"), [1]);
    assert_eq!(
        tok.encode("", false, false).expect("encode"),
        Vec::<u32>::new()
    );
}

proptest! {
    #[test]
    fn spm_equals_naive_reference(s in "[abcé x大]{0,24}") {
        let spec = spm_spec();
        let tok = Tokenizer::from_vocab(spec.clone()).expect("valid");
        let ids = tok.encode(&s, true, false).expect("encode");
        prop_assert_eq!(&ids, &naive_spm(&spec, &s, true));
        prop_assert_eq!(tok.decode(&ids), s);
    }
}

/// A byte-level vocabulary: the 256 GPT-2 byte symbols, a few merges, ChatML control tokens
/// and one user-defined token.
fn bpe_spec() -> VocabSpec {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let mut types = vec![3, 3, 3];
    for b in 0..=255u8 {
        tokens.push(byte_unicode::byte_to_char(b).to_string());
        types.push(1);
    }
    for t in ["he", "ll", "hell", "hello", "Ġw", "Ġwo", "<tool>"] {
        tokens.push(t.into());
        types.push(if t == "<tool>" { 4 } else { 1 });
    }
    VocabSpec {
        model: "gpt2".into(),
        pre: Some("gpt2".into()),
        tokens,
        token_types: Some(types),
        merges: ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"]
            .map(String::from)
            .to_vec(),
        eos: Some(2),
        ..VocabSpec::default()
    }
}

#[test]
fn bpe_specials_and_pieces() {
    let tok = Tokenizer::from_vocab(bpe_spec()).expect("valid bpe vocab");
    assert_eq!(
        tok.kind(),
        TokenizerKind::Bpe {
            pre: PreTokenizer::Gpt2
        }
    );
    assert!(!tok.add_bos());
    let ids = tok
        .encode("<|im_start|>hello wo<tool><|im_end|>", true, true)
        .expect("encode");
    assert_eq!(
        texts_of(&tok, &ids),
        ["<|im_start|>", "hello", "Ġwo", "<tool>", "<|im_end|>"]
    );
    // Without special parsing control tokens are text, user-defined ones still match.
    let ids = tok
        .encode("<|im_end|><tool>", false, false)
        .expect("encode");
    assert!(!ids.contains(&2));
    assert_eq!(ids.last(), tok.token_id("<tool>").as_ref());
    assert_eq!(tok.decode(&ids), "<|im_end|><tool>");
    // Pieces: GPT-2 symbols decode to bytes, control tokens are hidden unless asked.
    assert_eq!(tok.piece(tok.token_id("Ġwo").expect("token")), b" wo");
    assert_eq!(tok.piece(2), b"");
    assert_eq!(tok.piece_special(2), b"<|im_end|>");
    assert_eq!(tok.piece(u32::MAX), b"");
    // EOG: eos plus ChatML texts; EOT found by text (lowest id).
    assert_eq!(tok.eog_ids(), [0, 2]);
    assert_eq!(tok.eot(), Some(0));
    assert!(tok.is_control(1) && !tok.is_control(3));
    assert!(tok.heap_bytes() > 0);
}

#[test]
fn unknown_pre_falls_back_to_gpt2() {
    let mut spec = bpe_spec();
    spec.pre = Some("no-such-pre".into());
    let tok = Tokenizer::from_vocab(spec).expect("valid");
    assert_eq!(
        tok.kind(),
        TokenizerKind::Bpe {
            pre: PreTokenizer::Gpt2
        }
    );
}

#[test]
fn invalid_vocabularies_are_typed_errors() {
    let mut spec = bpe_spec();
    spec.token_types.as_mut().expect("types").pop();
    assert!(matches!(
        Tokenizer::from_vocab(spec),
        Err(TokenizerError::LengthMismatch {
            key: KEY_TOKEN_TYPE,
            ..
        })
    ));

    let mut spec = bpe_spec();
    spec.bos = Some(10_000);
    let err = Tokenizer::from_vocab(spec).expect_err("bos out of range");
    assert!(matches!(
        err,
        TokenizerError::IdOutOfRange {
            key: KEY_BOS,
            id: 10_000,
            ..
        }
    ));
    assert!(err.to_string().contains("tokenizer.ggml.bos_token_id"));

    let mut spec = bpe_spec();
    spec.merges.push("he zz".into());
    assert!(matches!(
        Tokenizer::from_vocab(spec),
        Err(TokenizerError::UnknownMergeToken { index: 6, .. })
    ));

    let mut spec = bpe_spec();
    spec.add_bos = Some(true);
    assert!(matches!(
        Tokenizer::from_vocab(spec),
        Err(TokenizerError::MissingSpecial {
            add_key: KEY_ADD_BOS,
            ..
        })
    ));

    let mut spec = bpe_spec();
    spec.model = "t5".into();
    assert!(matches!(
        Tokenizer::from_vocab(spec),
        Err(TokenizerError::UnsupportedModel { .. })
    ));

    let mut spec = spm_spec();
    spec.tokens[10] = "<0xZZ>".into();
    assert!(matches!(
        Tokenizer::from_vocab(spec),
        Err(TokenizerError::MalformedByteToken { id: 10, .. })
    ));

    assert!(matches!(
        Tokenizer::from_vocab(VocabSpec {
            model: "gpt2".into(),
            ..VocabSpec::default()
        }),
        Err(TokenizerError::EmptyVocab)
    ));
}
