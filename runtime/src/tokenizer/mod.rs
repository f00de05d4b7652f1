//! Tokenizer: text → token ids ([`Tokenizer::encode`]) and token id → bytes
//! ([`Tokenizer::piece`]), built from a GGUF vocabulary and matching llama.cpp id for id.
//!
//! Two vocabulary kinds, as `tokenizer.ggml.model` names them:
//! - `gpt2`: byte-level BPE. Text is cut into words by the pre-tokenizer `tokenizer.ggml.pre`
//!   names ([`pretokenize`]), each word's UTF-8 bytes become GPT-2 alphabet symbols, and the
//!   ranked merges of `tokenizer.ggml.merges` join them ([`bpe`]).
//! - `llama`: SentencePiece-style BPE. Spaces become U+2581 (with one added in front of the
//!   text when `add_space_prefix`), adjacent symbols join by token score, and what no token
//!   covers falls back to `<0xXX>` byte tokens ([`spm`]).
//!
//! Before either runs, special-token texts are cut out of the input ([`special`]): control and
//! unknown tokens only when the caller asks to parse special tokens, user-defined ones always.
//!
//! Decoding is a table lookup: every token's bytes are computed once at load into one arena, so
//! [`Tokenizer::piece`] allocates nothing. Assembling UTF-8 across pieces is `text_stream`'s job,
//! not this module's.
//!
//! Where this differs from llama.cpp on purpose:
//! - an unknown `tokenizer.ggml.pre` falls back to `gpt2` with a warning (llama.cpp refuses the
//!   file); a missing one means `default`, as in llama.cpp;
//! - a BPE vocabulary without `bos`/`eos` keys has no BOS/EOS (llama.cpp defaults both to id 11);
//! - a special-token id outside the vocabulary is an error (llama.cpp warns and ignores it);
//! - SPM: a byte without a `<0xXX>` token becomes the unknown token (llama.cpp throws);
//! - token pieces containing code points outside the GPT-2 alphabet keep their UTF-8 bytes
//!   (llama.cpp writes `[UNK_BYTE_0x..]`);
//! - the per-model `lstrip`/`rstrip` attributes llama.cpp sets by model name (Phi-3, Jina) are
//!   not applied, nor are FIM token heuristics.

mod bpe;
mod byte_unicode;
mod char_class;
mod pretokenize;
mod special;
mod spm;
mod vocab;

#[cfg(test)]
mod tests;

pub use pretokenize::PreTokenizer;
pub use vocab::TokenType;

use bpe::{BpeScratch, MergeTable, NO_TOKEN};
use pretokenize::SplitScratch;
use special::Fragment;
use spm::{SpmScratch, SpmVocab};
use vocab::TokenTexts;

/// Longest input `encode` accepts (1 GiB).
const MAX_INPUT_BYTES: usize = (u32::MAX / 4) as usize;

/// The escaped space of SentencePiece vocabularies, U+2581 LOWER ONE EIGHTH BLOCK.
const SPM_SPACE: char = '\u{2581}';

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_EOT: &str = "tokenizer.ggml.eot_token_id";
const KEY_EOM: &str = "tokenizer.ggml.eom_token_id";
const KEY_UNK: &str = "tokenizer.ggml.unknown_token_id";
const KEY_PAD: &str = "tokenizer.ggml.padding_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

/// Why a vocabulary could not be loaded or a text not encoded. Each names the metadata key.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Reading a tokenizer key from the GGUF file failed (wrong type, out of range).
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A key the tokenizer needs is absent.
    #[error("tokenizer: missing key '{key}'")]
    MissingKey { key: &'static str },
    /// `tokenizer.ggml.model` names a tokenizer kind edgellm does not implement.
    #[error("tokenizer: 'tokenizer.ggml.model' = {value:?} is not supported (expected \"gpt2\" or \"llama\")")]
    UnsupportedModel { value: String },
    /// A per-token array does not have one entry per token.
    #[error("tokenizer: '{key}' has {found} entries but 'tokenizer.ggml.tokens' has {expected}")]
    LengthMismatch {
        key: &'static str,
        expected: usize,
        found: usize,
    },
    /// A special-token id key names no token.
    #[error("tokenizer: '{key}' = {id} is outside the vocabulary of {n_vocab} tokens")]
    IdOutOfRange {
        key: &'static str,
        id: u32,
        n_vocab: usize,
    },
    /// A merge names a token (or merges into a text) the vocabulary lacks.
    #[error("tokenizer: 'tokenizer.ggml.merges'[{index}] = {merge:?} needs {token:?}, which is not a token")]
    UnknownMergeToken {
        index: usize,
        merge: String,
        token: String,
    },
    /// A merge is not `"left right"`.
    #[error("tokenizer: 'tokenizer.ggml.merges'[{index}] = {merge:?} is not two tokens separated by a space")]
    MalformedMerge { index: usize, merge: String },
    /// A token typed as a byte is not written `<0xXX>`.
    #[error("tokenizer: 'tokenizer.ggml.tokens'[{id}] = {text:?} has type byte but is not <0xXX>")]
    MalformedByteToken { id: u32, text: String },
    /// Two ids share one text.
    #[error("tokenizer: 'tokenizer.ggml.tokens' has {text:?} twice, at ids {first} and {second}")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    /// The vocabulary asks for BOS/EOS to be added but has no such token.
    #[error("tokenizer: '{add_key}' is true but '{id_key}' names no token")]
    MissingSpecial {
        add_key: &'static str,
        id_key: &'static str,
    },
    /// `tokenizer.ggml.tokens` is empty.
    #[error("tokenizer: 'tokenizer.ggml.tokens' is empty")]
    EmptyVocab,
    /// A table or input is beyond the 32-bit offsets the tokenizer uses.
    #[error(
        "tokenizer: {what} of size {size} exceeds what the tokenizer's 32-bit offsets address"
    )]
    TooLarge { what: &'static str, size: usize },
}

/// The kind of vocabulary, and for BPE its pre-tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
    Bpe { pre: PreTokenizer },
    /// SentencePiece-style BPE by score (`tokenizer.ggml.model = "llama"`).
    Spm,
}

/// A vocabulary as plain data: what [`Tokenizer::from_gguf`] reads from the file's
/// `tokenizer.ggml.*` keys (`None` = key absent), or what a test writes by hand.
#[derive(Clone, Debug, Default)]
pub struct VocabSpec {
    /// `tokenizer.ggml.model`: `"gpt2"` or `"llama"`.
    pub model: String,
    /// `tokenizer.ggml.pre` (BPE only).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, index = id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (all normal when absent).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.scores` (SPM merge priorities; all 0 when absent).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.merges`, `"left right"`, rank = index (BPE only).
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`
    pub eos: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`
    pub eom: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`
    pub unk: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`
    pub add_space_prefix: Option<bool>,
}

/// Pre-tokenizer names for which llama.cpp skips merging a word that is a token as a whole,
/// and adds BOS unless the file says otherwise.
const LLAMA3_NAMES: &[&str] = &["llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"];

/// A loaded vocabulary: encodes text, and gives each token's bytes.
pub struct Tokenizer {
    kind: TokenizerKind,
    texts: TokenTexts,
    /// `[n_vocab]`
    types: Vec<TokenType>,
    /// `[n_vocab]` SPM merge scores; empty for BPE.
    scores: Vec<f32>,
    /// BPE merges; empty for SPM.
    merges: MergeTable,
    /// `[256]` token of each byte value (BPE: its GPT-2 code point; SPM: `<0xXX>`), or
    /// `NO_TOKEN`.
    byte_tokens: [u32; 256],
    /// Every token's bytes back to back (control tokens: their raw text).
    piece_arena: Vec<u8>,
    /// `[n_vocab + 1]` start of each token's bytes in `piece_arena`, then the arena length.
    piece_offsets: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first: matched in the input.
    special_order: Vec<u32>,
    /// End-of-generation ids, ascending.
    eog: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Llama-3 style: a word that is a token as a whole is not merged.
    ignore_merges: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("n_vocab", &self.n_vocab())
            .field("n_merges", &self.merges.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads the vocabulary from a GGUF file's `tokenizer.ggml.*` keys.
    pub fn from_gguf(g: &crate::gguf::Gguf<'_>) -> Result<Tokenizer, TokenizerError> {
        let model = g
            .get_str(KEY_MODEL)?
            .ok_or(TokenizerError::MissingKey { key: KEY_MODEL })?;
        let tokens = g
            .get_array(KEY_TOKENS)?
            .ok_or(TokenizerError::MissingKey { key: KEY_TOKENS })?
            .strings()?
            .map(str::to_owned)
            .collect();
        let token_types = match g.get_array(KEY_TOKEN_TYPE)? {
            Some(a) => Some(a.to_i32_vec()?),
            None => None,
        };
        let scores = match g.get_array(KEY_SCORES)? {
            // llama.cpp accepts f32 or i32 scores.
            Some(a) => Some(match a.to_f32_vec() {
                Ok(v) => v,
                Err(e) => a
                    .to_i32_vec()
                    .map_err(|_| e)?
                    .into_iter()
                    .map(|s| s as f32)
                    .collect(),
            }),
            None => None,
        };
        let merges = match g.get_array(KEY_MERGES)? {
            Some(a) => a.strings()?.map(str::to_owned).collect(),
            None if model == "gpt2" => return Err(TokenizerError::MissingKey { key: KEY_MERGES }),
            None => Vec::new(),
        };
        Tokenizer::from_vocab(VocabSpec {
            model: model.to_string(),
            pre: g.get_str(KEY_PRE)?.map(str::to_owned),
            tokens,
            token_types,
            scores,
            merges,
            bos: g.get_u32(KEY_BOS)?,
            eos: g.get_u32(KEY_EOS)?,
            eot: g.get_u32(KEY_EOT)?,
            eom: g.get_u32(KEY_EOM)?,
            unk: g.get_u32(KEY_UNK)?,
            pad: g.get_u32(KEY_PAD)?,
            add_bos: g.get_bool(KEY_ADD_BOS)?,
            add_eos: g.get_bool(KEY_ADD_EOS)?,
            add_space_prefix: g.get_bool(KEY_ADD_SPACE_PREFIX)?,
        })
    }

    /// Builds the tokenizer from plain data (the keys' values, `None` where absent).
    pub fn from_vocab(spec: VocabSpec) -> Result<Tokenizer, TokenizerError> {
        let VocabSpec {
            model,
            pre,
            mut tokens,
            token_types,
            scores,
            merges,
            ..
        } = spec;
        let n_vocab = tokens.len();
        if n_vocab == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n_vocab >= NO_TOKEN as usize {
            return Err(TokenizerError::TooLarge {
                what: "vocabulary",
                size: n_vocab,
            });
        }

        let kind = match model.as_str() {
            "gpt2" => TokenizerKind::Bpe {
                pre: bpe_pre_tokenizer(pre.as_deref()),
            },
            "llama" => TokenizerKind::Spm,
            _ => return Err(TokenizerError::UnsupportedModel { value: model }),
        };
        let is_spm = kind == TokenizerKind::Spm;
        let llama3_like = !is_spm && pre.as_deref().is_some_and(|p| LLAMA3_NAMES.contains(&p));

        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                log::warn!(
                    "tokenizer: empty token at id {i}, renamed [EMPTY_{i}] as llama.cpp does"
                );
                *t = format!("[EMPTY_{i}]");
            }
        }
        let texts = TokenTexts::new(&tokens)?;
        drop(tokens);

        let mut types = match token_types {
            Some(v) if v.len() != n_vocab => {
                return Err(TokenizerError::LengthMismatch {
                    key: KEY_TOKEN_TYPE,
                    expected: n_vocab,
                    found: v.len(),
                })
            }
            Some(v) => v.into_iter().map(TokenType::from_id).collect(),
            None => vec![TokenType::Normal; n_vocab],
        };
        let scores = match scores {
            Some(v) if v.len() != n_vocab => {
                return Err(TokenizerError::LengthMismatch {
                    key: KEY_SCORES,
                    expected: n_vocab,
                    found: v.len(),
                })
            }
            Some(v) if is_spm => v,
            None if is_spm => vec![0.0; n_vocab],
            _ => Vec::new(),
        };

        // Special ids: the file's value must exist; llama.cpp's SPM defaults apply otherwise.
        let check = |key: &'static str, given: Option<u32>, default: Option<u32>| match given {
            Some(id) if id as usize >= n_vocab => {
                Err(TokenizerError::IdOutOfRange { key, id, n_vocab })
            }
            Some(id) => Ok(Some(id)),
            None => Ok(default.filter(|&d| (d as usize) < n_vocab)),
        };
        let spm_default = |id: u32| is_spm.then_some(id);
        let bos = check(KEY_BOS, spec.bos, spm_default(1))?;
        let eos = check(KEY_EOS, spec.eos, spm_default(2))?;
        let unk = check(KEY_UNK, spec.unk, spm_default(0))?;
        let pad = check(KEY_PAD, spec.pad, None)?;
        let mut eot = check(KEY_EOT, spec.eot, None)?;
        let mut eom = check(KEY_EOM, spec.eom, None)?;

        let add_bos = spec.add_bos.unwrap_or(is_spm || llama3_like);
        let add_eos = spec.add_eos.unwrap_or(false);
        let add_space_prefix = spec.add_space_prefix.unwrap_or(is_spm);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecial {
                add_key: KEY_ADD_BOS,
                id_key: KEY_BOS,
            });
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecial {
                add_key: KEY_ADD_EOS,
                id_key: KEY_EOS,
            });
        }

        // llama.cpp finds end-of-turn/-message/-generation tokens by text, and makes sure such
        // tokens are control tokens. Of several EOT candidates the lowest id is taken (llama.cpp
        // takes the first in hash-map order; for SmolLM2 both give <|endoftext|>).
        let mark_control = |id: u32, types: &mut [TokenType]| {
            if types[id as usize] != TokenType::Control {
                log::warn!(
                    "tokenizer: token {id} {:?} looks like a control token but is typed {:?}; \
                     treating it as control like llama.cpp",
                    texts.text(id),
                    types[id as usize]
                );
                types[id as usize] = TokenType::Control;
            }
        };
        if eot.is_none() {
            eot = special::EOT_TEXTS.iter().filter_map(|t| texts.id(t)).min();
            if let Some(id) = eot {
                mark_control(id, &mut types);
            }
        }
        if eom.is_none() {
            eom = texts.id(special::EOM_TEXT);
            if let Some(id) = eom {
                mark_control(id, &mut types);
            }
        }
        let mut eog: Vec<u32> = special::EOG_TEXTS
            .iter()
            .filter_map(|t| texts.id(t))
            .collect();
        for &id in &eog {
            mark_control(id, &mut types);
        }
        eog.extend(eos.iter().chain(eot.iter()).chain(eom.iter()));
        eog.sort_unstable();
        eog.dedup();

        let mut byte_tokens = [NO_TOKEN; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let b = b as u8;
            let id = if is_spm {
                texts
                    .id(&format!("<0x{b:02X}>"))
                    .or_else(|| b.is_ascii().then(|| texts.id(&(b as char).to_string()))?)
            } else {
                texts.id(byte_unicode::byte_to_char(b).encode_utf8(&mut [0; 4]))
            };
            *slot = id.unwrap_or(NO_TOKEN);
        }

        let merges = if is_spm {
            MergeTable::default()
        } else {
            MergeTable::new(&merges, &texts)?
        };

        let (piece_arena, piece_offsets) = build_pieces(&texts, &types, is_spm)?;

        let mut special_order: Vec<u32> = (0..n_vocab as u32)
            .filter(|&id| {
                matches!(
                    types[id as usize],
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                )
            })
            .collect();
        special_order.sort_by(|&a, &b| {
            texts
                .text(b)
                .len()
                .cmp(&texts.text(a).len())
                .then(a.cmp(&b))
        });

        let tok = Tokenizer {
            kind,
            texts,
            types,
            scores,
            merges,
            byte_tokens,
            piece_arena,
            piece_offsets,
            special_order,
            eog,
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            ignore_merges: llama3_like,
        };
        log::info!(
            "tokenizer: {:?}, {} tokens, {} merges, {} special, bos {:?}, eos {:?}, eog {:?}, add_bos {}, {} KiB",
            tok.kind,
            tok.n_vocab(),
            tok.merges.len(),
            tok.special_order.len(),
            tok.bos,
            tok.eos,
            tok.eog,
            tok.add_bos,
            tok.heap_bytes() / 1024
        );
        Ok(tok)
    }

    /// Token ids of `text`. `add_special` adds BOS/EOS where the vocabulary asks for them
    /// (`add_bos_token`, `add_eos_token`); `parse_special` turns control-token texts in the input
    /// (`<|im_start|>`) into their ids instead of tokenizing them as text. Never panics.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        // Offsets are u32, and SPM escaping can triple the text (a space becomes 3 bytes).
        if text.len() > MAX_INPUT_BYTES {
            return Err(TokenizerError::TooLarge {
                what: "input text",
                size: text.len(),
            });
        }
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let mut fragments = Vec::new();
        let specials = self
            .special_order
            .iter()
            .filter(|&&id| parse_special || self.types[id as usize] == TokenType::UserDefined)
            .map(|&id| (id, self.texts.text(id)));
        special::partition(text, specials, &mut fragments);

        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match self.kind {
            TokenizerKind::Spm => self.encode_spm(text, &fragments, &mut out),
            TokenizerKind::Bpe { pre } => self.encode_bpe(text, pre, &fragments, &mut out),
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    fn encode_bpe(
        &self,
        text: &str,
        pre: PreTokenizer,
        fragments: &[Fragment],
        out: &mut Vec<u32>,
    ) {
        let mut split = SplitScratch::default();
        let mut bpe = BpeScratch::default();
        let mut whole_word = String::new();
        for f in fragments {
            let r = match f {
                Fragment::Token(id) => {
                    out.push(*id);
                    continue;
                }
                Fragment::Text(r) => r.clone(),
            };
            let fragment = &text[r];
            for w in split.split(pre, fragment) {
                let word = &fragment.as_bytes()[w];
                if self.ignore_merges {
                    whole_word.clear();
                    whole_word.extend(word.iter().map(|&b| byte_unicode::byte_to_char(b)));
                    if let Some(id) = self.texts.id(&whole_word) {
                        out.push(id);
                        continue;
                    }
                }
                bpe.merge_word(word, &self.byte_tokens, &self.merges, out);
            }
        }
    }

    fn encode_spm(&self, text: &str, fragments: &[Fragment], out: &mut Vec<u32>) {
        let vocab = SpmVocab {
            texts: &self.texts,
            scores: &self.scores,
            byte_tokens: &self.byte_tokens,
            unk: self.unk,
        };
        let mut scratch = SpmScratch::default();
        let mut escaped = String::new();
        // As llama.cpp: the space prefix goes before the first text and after every special
        // token.
        let mut after_special = true;
        for f in fragments {
            match f {
                Fragment::Token(id) => {
                    out.push(*id);
                    after_special = true;
                }
                Fragment::Text(r) => {
                    escaped.clear();
                    if self.add_space_prefix && after_special {
                        escaped.push(SPM_SPACE);
                    }
                    escaped.extend(text[r.clone()].chars().map(|c| {
                        if c == ' ' {
                            SPM_SPACE
                        } else {
                            c
                        }
                    }));
                    scratch.encode(&escaped, &vocab, out);
                    after_special = false;
                }
            }
        }
    }

    /// The bytes `id` stands for in generated text: nothing for control and unknown tokens (and
    /// unused ones, and ids outside the vocabulary). A lookup; allocates nothing.
    pub fn piece(&self, id: u32) -> &[u8] {
        match self.types.get(id as usize) {
            Some(TokenType::Control | TokenType::Unknown) | None => &[],
            Some(_) => self.piece_special(id),
        }
    }

    /// Like [`Self::piece`], but control and unknown tokens give their raw text
    /// (`<|im_end|>`), as llama.cpp's `token_to_piece(..., special = true)`.
    pub fn piece_special(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i + 1 >= self.piece_offsets.len() {
            return &[];
        }
        &self.piece_arena[self.piece_offsets[i] as usize..self.piece_offsets[i + 1] as usize]
    }

    /// The text of `ids`, invalid UTF-8 replaced by U+FFFD; control tokens give nothing.
    ///
    /// SPM vocabularies with `add_space_prefix`: the space the encoder put in front of the text
    /// is removed from the first token after any leading BOS, so `decode(encode(s))` gives `s`
    /// back. llama.cpp's `llama_detokenize` removes it only when the sequence does not start
    /// with BOS; streaming callers (which print `piece` by piece after a prompt) keep every
    /// space, as llama.cpp's generation examples do. BPE: pieces are concatenated unchanged
    /// (llama.cpp's optional `clean_spaces` pass is not applied).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        let mut strip_space = self.kind == TokenizerKind::Spm && self.add_space_prefix;
        for &id in ids {
            let mut p = self.piece(id);
            if strip_space {
                if Some(id) == self.bos {
                    continue;
                }
                strip_space = false;
                p = p.strip_prefix(b" ").unwrap_or(p);
            }
            bytes.extend_from_slice(p);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }

    /// The id whose token text is exactly `text` (as stored: `Ġhello`, `▁hello`, `<|im_end|>`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.texts.id(text)
    }

    /// The token's text as stored in the vocabulary (empty for ids outside it).
    pub fn token_text(&self, id: u32) -> &str {
        self.texts.text(id)
    }

    /// The token's type (`Undefined` for ids outside the vocabulary).
    pub fn token_type(&self, id: u32) -> TokenType {
        self.types
            .get(id as usize)
            .copied()
            .unwrap_or(TokenType::Undefined)
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn token (from the file, else found by text like llama.cpp).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// End-of-message token (Llama 3.1 `<|eom_id|>`).
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }

    /// Unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// Padding token.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// SPM: whether a space is put in front of the text (and after each special token).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Whether generating `id` ends generation: eos, eot, eom, and tokens llama.cpp recognises
    /// by text (`<|im_end|>`, `<|endoftext|>`, `<end_of_turn>`, `<|eot_id|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` is a control token (rendered as nothing by [`Self::piece`]).
    pub fn is_control(&self, id: u32) -> bool {
        self.token_type(id) == TokenType::Control
    }

    /// The vocabulary kind.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Bytes of heap the tokenizer's tables take.
    pub fn heap_bytes(&self) -> usize {
        self.texts.heap_bytes()
            + self.types.capacity() * std::mem::size_of::<TokenType>()
            + self.scores.capacity() * 4
            + self.merges.heap_bytes()
            + self.piece_arena.capacity()
            + self.piece_offsets.capacity() * 4
            + self.special_order.capacity() * 4
            + self.eog.capacity() * 4
    }
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value.
fn bpe_pre_tokenizer(pre: Option<&str>) -> PreTokenizer {
    match pre {
        None => {
            log::warn!("tokenizer: no '{KEY_PRE}' in a BPE vocabulary, using 'default' like llama.cpp; tokenization may differ from the model's training");
            PreTokenizer::Default
        }
        Some(name) => PreTokenizer::from_name(name).unwrap_or_else(|| {
            log::warn!(
                "tokenizer: unknown '{KEY_PRE}' = {name:?}, falling back to the gpt2 pre-tokenizer"
            );
            PreTokenizer::Gpt2
        }),
    }
}

/// Every token's bytes, as llama.cpp's `token_to_piece(id, special = true)` gives them.
fn build_pieces(
    texts: &TokenTexts,
    types: &[TokenType],
    is_spm: bool,
) -> Result<(Vec<u8>, Vec<u32>), TokenizerError> {
    let n = texts.len();
    let mut arena = Vec::new();
    let mut offsets = Vec::with_capacity(n + 1);
    for id in 0..n as u32 {
        offsets.push(arena.len() as u32);
        let text = texts.text(id);
        match types[id as usize] {
            TokenType::Normal if is_spm => {
                for c in text.chars() {
                    let c = if c == SPM_SPACE { ' ' } else { c };
                    arena.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
            }
            TokenType::Normal => {
                for c in text.chars() {
                    match byte_unicode::char_to_byte(c) {
                        Some(b) => arena.push(b),
                        None => arena.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
            }
            TokenType::Byte => arena.push(parse_byte_token(text).ok_or_else(|| {
                TokenizerError::MalformedByteToken {
                    id,
                    text: text.to_string(),
                }
            })?),
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => {
                arena.extend_from_slice(text.as_bytes())
            }
            TokenType::Unused | TokenType::Undefined => {}
        }
        if arena.len() > u32::MAX as usize {
            return Err(TokenizerError::TooLarge {
                what: "token pieces",
                size: arena.len(),
            });
        }
    }
    offsets.push(arena.len() as u32);
    arena.shrink_to_fit();
    Ok((arena, offsets))
}

/// The byte of a `<0xXX>` token.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
