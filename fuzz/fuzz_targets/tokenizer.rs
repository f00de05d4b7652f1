//! Fuzz target: the real SmolLM2 tokenizer (byte-level BPE) and the streaming detokenizer on
//! arbitrary input. Encoding never panics; without special-token parsing, decoding gives the
//! text back exactly, unless the text holds a byte the vocabulary has no token for (SmolLM2
//! lacks 21 of the 256 byte tokens, e.g. 0x04 and 0x06: those bytes are dropped, as llama.cpp
//! drops them; the fuzzer found this); any id sequence streams through `TextStream` as valid
//! UTF-8 (the String type checks it) with stop strings never leaking.
//!
//! The model comes from $EDGELLM_MODEL or the default path (`make model`).
#![no_main]

use std::sync::LazyLock;

use edgellm_runtime::gguf::Gguf;
use edgellm_runtime::mmap::MappedFile;
use edgellm_runtime::text_stream::TextStream;
use edgellm_runtime::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

static TOKENIZER: LazyLock<Tokenizer> = LazyLock::new(|| {
    let path = std::env::var_os("EDGELLM_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let map = MappedFile::open(&path).expect("model file (make model)");
    let g = Gguf::parse(map.bytes()).expect("model parses");
    Tokenizer::from_gguf(&g).expect("tokenizer loads")
});

/// Bytes whose GPT-2 byte-level character is not in the vocabulary.
static MISSING_BYTES: LazyLock<[bool; 256]> = LazyLock::new(|| {
    // GPT-2's byte-to-character map: printable Latin-1 bytes map to themselves, the other 68
    // to U+0100 onwards, in byte order.
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut missing = [false; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        let text = char::from_u32(c).unwrap().to_string();
        missing[b as usize] = TOKENIZER.token_id(&text).is_none();
    }
    missing
});

fuzz_target!(|data: &[u8]| {
    let tok = &*TOKENIZER;
    if data.is_empty() {
        return;
    }
    let (mode, rest) = (data[0], &data[1..]);
    if let Ok(text) = std::str::from_utf8(rest) {
        let parse_special = mode & 1 == 1;
        let add_special = mode & 2 == 2;
        let ids = tok
            .encode(text, add_special, parse_special)
            .expect("encode accepts any text below the size limit");
        assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
        if !parse_special && !text.bytes().any(|b| MISSING_BYTES[b as usize]) {
            // Byte-level BPE is lossless on plain text.
            assert_eq!(tok.decode(&ids), text, "round trip of {text:?} via {ids:?}");
        }
    }
    // Arbitrary ids (two bytes each) through the streaming detokenizer with a stop string.
    let mut stream = TextStream::new();
    stream.set_stops(&["<stop>".to_string()]).unwrap();
    let mut out = String::new();
    for pair in rest.chunks_exact(2) {
        let id = u16::from_le_bytes([pair[0], pair[1]]) as u32 % tok.n_vocab() as u32;
        let step = stream.push(tok.piece(id), &mut |s: &str| out.push_str(s));
        if step == edgellm_runtime::text_stream::StreamStep::Stop {
            break;
        }
    }
    stream.finish(&mut |s: &str| out.push_str(s));
    assert!(!out.contains("<stop>"), "stop string leaked: {out:?}");
});
