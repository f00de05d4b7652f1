//! The SmolLM2 tokenizer (byte-level BPE, pre-tokenizer `smollm`) against llama.cpp's recorded
//! token ids in `shared/reference/` (`tokenize_smollm2.json`, the prompts of
//! `greedy_smollm2.json`) and its token count for the GPL-3 text.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use edgellm_runtime::gguf::Gguf;
use edgellm_runtime::mmap::MappedFile;
use edgellm_runtime::tokenizer::{PreTokenizer, Tokenizer, TokenizerKind};
use proptest::prelude::*;
use serde_json::Value;

/// `shared/reference/` beside the checkout.
const REFERENCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference");
const GPL3: &str = "/usr/share/common-licenses/GPL-3";
/// llama.cpp c392e50's token count for the GPL-3 text with this vocabulary.
const GPL3_TOKENS: usize = 7639;

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = edgellm_runtime::default_model_path();
        assert!(
            path.exists(),
            "model file {} is missing: run `make model` first",
            path.display()
        );
        let map = MappedFile::open(&path)
            .unwrap_or_else(|e| panic!("cannot map {}: {e}", path.display()));
        let gguf = Gguf::parse(map.bytes())
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
        Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("cannot load the tokenizer: {e}"))
    })
}

fn reference(name: &str) -> Value {
    let path = Path::new(REFERENCE_DIR).join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn ids(v: &Value, what: &str) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not an array"))
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .unwrap_or_else(|| panic!("{what} has a non-id element {x}"))
        })
        .collect()
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("reference entry lacks string field {key:?}: {v}"))
}

/// The raw text of `ids` with special tokens rendered, as llama.cpp prints them.
fn render_special(tok: &Tokenizer, ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| tok.piece_special(id))
        .copied()
        .collect();
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("pieces of {ids:?} are not UTF-8: {e}"))
}

#[test]
fn vocabulary_metadata_matches_llama_cpp() {
    let tok = tokenizer();
    assert_eq!(tok.n_vocab(), 49152);
    assert_eq!(
        tok.kind(),
        TokenizerKind::Bpe {
            pre: PreTokenizer::Smollm
        }
    );
    // llama.cpp's print_info: BOS 1, EOS 2, EOT 0, EOG {0, 2}; add_bos_token = false.
    assert_eq!(
        (tok.bos(), tok.eos(), tok.eot()),
        (Some(1), Some(2), Some(0))
    );
    assert!(!tok.add_bos());
    assert_eq!(tok.eog_ids(), [0, 2]);
    assert!(tok.is_eog(0) && tok.is_eog(2) && !tok.is_eog(1) && !tok.is_eog(198));
    assert!((0..17).all(|id| tok.is_control(id)) && !tok.is_control(17));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_id("Ċ"), Some(198));
    assert_eq!(tok.piece(2), b"");
    assert_eq!(tok.piece_special(2), b"<|im_end|>");
    assert_eq!(tok.piece(198), b"\n");
    // llama.cpp: "token to piece cache size = 0.3170 MB" (special pieces of all tokens).
    let total: usize = (0..49152).map(|id| tok.piece_special(id).len()).sum();
    assert_eq!(format!("{:.4}", total as f64 / 1024.0 / 1024.0), "0.3170");
    assert!(tok.heap_bytes() > total);
}

#[test]
fn reference_strings_tokenize_like_llama_cpp() {
    let tok = tokenizer();
    let entries = reference("tokenize_smollm2.json");
    let entries = entries
        .as_array()
        .expect("tokenize_smollm2.json is an array");
    assert_eq!(entries.len(), 12);
    for e in entries {
        let text = str_field(e, "text");
        let want = ids(&e["ids"], "ids");
        let got = tok.encode(text, true, true).expect("encode");
        assert_eq!(got, want, "ids of {text:?} (special tokens parsed)");
        assert_eq!(
            render_special(tok, &got),
            text,
            "special-rendered pieces of {text:?}"
        );

        if let Some(no_parse) = e.get("ids_no_parse_special") {
            let want = ids(no_parse, "ids_no_parse_special");
            let got = tok.encode(text, true, false).expect("encode");
            assert_eq!(got, want, "ids of {text:?} (special tokens as text)");
            assert_eq!(tok.decode(&got), text);
        }
        if !text.contains("<|") {
            assert_eq!(tok.decode(&got), text, "decode(encode({text:?}))");
        }
    }
}

#[test]
fn greedy_prompts_tokenize_like_llama_cpp() {
    let tok = tokenizer();
    let greedy = reference("greedy_smollm2.json");
    // The driver called llama_tokenize(add_special = true, parse_special = true); no BOS.
    assert_eq!(greedy["meta"]["add_bos"], Value::Bool(false));
    let mut checked = 0;
    for file in ["Q4_1", "Q8_0", "F32_dequantized_from_Q4_1"] {
        let runs = greedy[file]
            .as_array()
            .unwrap_or_else(|| panic!("greedy_smollm2.json has no {file} runs"));
        for run in runs {
            let prompt = str_field(run, "prompt");
            let want = ids(&run["prompt_ids"], "prompt_ids");
            assert_eq!(
                tok.encode(prompt, true, true).expect("encode"),
                want,
                "{prompt:?}"
            );
            // Generated text = the pieces of the generated ids, special tokens rendered.
            let generated = ids(&run["generated_ids"], "generated_ids");
            assert_eq!(
                render_special(tok, &generated),
                str_field(run, "generated_text"),
                "pieces of the {file} continuation of {prompt:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}

#[test]
fn gpl3_token_count_and_speed() {
    let tok = tokenizer();
    let text = std::fs::read_to_string(GPL3).unwrap_or_else(|e| panic!("cannot read {GPL3}: {e}"));
    // Warm up once (page cache, allocator), then time one encode.
    let ids = tok.encode(&text, true, false).expect("encode");
    assert_eq!(ids.len(), GPL3_TOKENS);
    let start = Instant::now();
    let again = tok.encode(&text, true, true).expect("encode");
    let took = start.elapsed();
    assert_eq!(again, ids, "the GPL-3 text has no special tokens to parse");
    assert!(
        took.as_secs_f64() < 0.5,
        "encoding {} bytes took {took:?}",
        text.len()
    );
    assert_eq!(tok.decode(&ids), text);
}

/// Strings biased towards what tokenizers get wrong: special-token fragments, digits,
/// whitespace runs, contractions, CJK, emoji, combining marks and controls.
fn tricky_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<|im_start|>".to_string()),
        Just("<|im_end|>".to_string()),
        Just("<|endoftext|>".to_string()),
        Just("<|im_".to_string()),
        Just("|>".to_string()),
        Just("'s".to_string()),
        Just("'LL".to_string()),
        Just("\r\n".to_string()),
        "[ \t\n]{1,4}",
        "[0-9]{1,5}",
        "[a-zA-Z]{1,8}",
        "[大语言模型éüñ́\u{0301}🤖🚀\u{00a0}\u{3000}\u{0000}\u{001f}\u{ffff}\u{10ffff}]{1,4}",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_inverts_encode_without_special_parsing(s in tricky_string()) {
        let tok = tokenizer();
        let ids = tok.encode(&s, false, false).expect("encode");
        prop_assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab() && !tok.is_control(id)));
        prop_assert_eq!(tok.decode(&ids), s);
    }

    #[test]
    fn special_parsing_renders_back_to_the_input(s in tricky_string()) {
        let tok = tokenizer();
        let ids = tok.encode(&s, true, true).expect("encode");
        prop_assert_eq!(render_special(tok, &ids), s);
    }
}

/// Found by the tokenizer fuzzer: SmolLM2's vocabulary has no token for 21 of the 256 byte-level
/// characters (0x04 and 0x06 among them). Such a byte is dropped, as llama.cpp's BPE tokenizer
/// drops a byte it cannot find; everything around it survives the round trip.
#[test]
fn bytes_without_a_token_are_dropped_like_llama_cpp() {
    let tok = tokenizer();
    let ids = tok.encode("pi\u{6}\0tal \u{4}ran", false, false).unwrap();
    assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
    assert_eq!(tok.decode(&ids), "pi\0tal ran");
    // A byte the vocabulary has is kept.
    let ids = tok.encode("pi\u{5}tal", false, false).unwrap();
    assert_eq!(tok.decode(&ids), "pi\u{5}tal");
}
