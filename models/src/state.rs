//! `State`: everything a forward pass writes (the KV cache and every activation buffer),
//! allocated once for a chosen context, batch and thread count. `StateLayout` computes the
//! sizes; both the allocation and `edgellm plan` use it, so the plan is what is allocated.

use edgellm_runtime::kernels::Kernels;
use edgellm_runtime::ops::AttnScratch;
use edgellm_runtime::GgmlType;

use crate::error::ModelError;
use crate::hparams::HParams;
use crate::kv_cache::{KvCache, KvShape, KvType, SlidingLayers};
use crate::weights::Weights;

/// What a `State` is sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateOptions {
    /// Context length (positions the KV cache holds).
    pub n_ctx: usize,
    /// Tokens evaluated per forward batch (prompt processing).
    pub n_batch: usize,
    pub kv_type: KvType,
    /// Keep logits for every token of a batch (perplexity), not only the last.
    pub all_logits: bool,
    /// Threads that run attention (each gets its own scratch).
    pub n_threads: usize,
    /// Give sliding-window layers a cache of the whole context too (llama.cpp's
    /// `--swa-full`), instead of a sliding buffer of about `window + n_batch` positions.
    pub swa_full: bool,
    /// The length a one-token attention's weighted sum of values is padded to, as llama.cpp
    /// pads its KV cache: 256 (its builds since mid-2025; 32 before). Only the order of that
    /// sum's additions depends on it (the last bits of the result), which the scalar kernels
    /// follow to reproduce llama.cpp's logits exactly.
    pub kv_pad: usize,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            n_ctx: 2048,
            n_batch: 64,
            kv_type: KvType::F16,
            all_logits: false,
            n_threads: 1,
            swa_full: false,
            kv_pad: 256,
        }
    }
}

/// Element counts of every buffer of a `State`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLayout {
    /// Positions each layer's cache holds.
    pub kv_shape: KvShape,
    pub kv_bytes: usize,
    /// `[n_batch][n_embd]` each: residual stream, normed input, attention/FFN output.
    pub embd: usize,
    /// `[n_batch][q_dim]`: queries and attention output.
    pub q: usize,
    /// `[n_batch][kv_dim]`: new keys and values.
    pub kv: usize,
    /// `[n_batch][n_ff]`: FFN gate and up.
    pub ff: usize,
    /// Quantized activations for the widest matmul input, `[n_batch][act_row_bytes]`.
    pub act_bytes: usize,
    /// Bytes of the per-thread attention scratch (`AttnScratch`: scores, rounded query and
    /// probabilities), all threads together.
    pub att_scratch_bytes: usize,
    /// `[n_batch][n_rot / 2]` (cos, sin) pairs.
    pub rope: usize,
    /// `[n_batch][n_rot / 2]` (cos, sin) pairs of the sliding-window layers' RoPE base (0
    /// without sliding-window layers).
    pub rope_swa: usize,
    /// `[logit_rows][n_vocab]`.
    pub logits: usize,
    /// Token ids held in the cache, `[n_ctx]`.
    pub tokens: usize,
}

/// What a [`StateLayout`] depends on: a model's dimensions and its widest activation-quant row.
/// [`StateLayout::new`] takes them from a loaded model; a model card supplies them for plans
/// made before the file is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateShape {
    pub n_layer: usize,
    pub n_embd: usize,
    /// `n_head * head_dim`.
    pub q_dim: usize,
    /// `n_head_kv * head_dim`.
    pub kv_dim: usize,
    pub n_ff: usize,
    pub head_dim: usize,
    /// Dimensions RoPE rotates per head.
    pub n_rot: usize,
    /// The layers that attend through a sliding window (with their own RoPE base), if any.
    pub swa: Option<SlidingLayers>,
    pub n_vocab: usize,
    /// Bytes of the widest quantized activation row any matmul takes.
    pub act_row_bytes: usize,
}

impl StateLayout {
    pub fn new(hp: &HParams, w: &Weights, opts: &StateOptions) -> Result<StateLayout, ModelError> {
        let mut act_row_bytes = 0;
        for m in w.matrices() {
            act_row_bytes = act_row_bytes.max(Kernels::act_row_bytes(m.ty, m.cols)?);
        }
        StateLayout::for_shape(
            &StateShape {
                n_layer: hp.n_layer,
                n_embd: hp.n_embd,
                q_dim: hp.q_dim(),
                kv_dim: hp.kv_dim(),
                n_ff: hp.n_ff,
                head_dim: hp.head_dim,
                n_rot: hp.rope.n_dims,
                swa: hp.swa.as_ref().map(|s| SlidingLayers {
                    window: s.window,
                    pattern: s.pattern,
                }),
                n_vocab: hp.n_vocab,
                act_row_bytes,
            },
            opts,
        )
    }

    /// The layout for a model of `shape` with `opts`.
    pub fn for_shape(shape: &StateShape, opts: &StateOptions) -> Result<StateLayout, ModelError> {
        if opts.n_ctx == 0 || opts.n_batch == 0 {
            return Err(ModelError::Option(format!(
                "context ({}) and batch ({}) must be positive",
                opts.n_ctx, opts.n_batch
            )));
        }
        let nb = opts.n_batch.min(opts.n_ctx);
        let logit_rows = if opts.all_logits { nb } else { 1 };
        let rope = nb * (shape.n_rot / 2);
        let kv_shape = KvShape::new(
            shape.n_layer,
            opts.n_ctx,
            shape.kv_dim,
            shape.swa,
            nb,
            opts.swa_full,
        );
        Ok(StateLayout {
            kv_shape,
            kv_bytes: kv_shape.bytes(opts.kv_type),
            embd: nb * shape.n_embd,
            q: nb * shape.q_dim,
            kv: nb * shape.kv_dim,
            ff: nb * shape.n_ff,
            act_bytes: edgellm_runtime::kernels::matmul::act_scratch_bytes(shape.act_row_bytes, nb),
            att_scratch_bytes: opts.n_threads.max(1)
                * AttnScratch::bytes_for(opts.n_ctx, shape.head_dim, opts.kv_type.bytes()),
            rope,
            rope_swa: if shape.swa.is_some() { rope } else { 0 },
            logits: logit_rows * shape.n_vocab,
            tokens: opts.n_ctx,
        })
    }

    /// Bytes of everything but the KV cache.
    pub fn scratch_bytes(&self) -> usize {
        4 * (3 * self.embd
            + 2 * self.q
            + 2 * self.kv
            + 2 * self.ff
            + 2 * self.rope
            + 2 * self.rope_swa
            + self.logits
            + self.tokens)
            + self.act_bytes
            + self.att_scratch_bytes
    }
}

pub struct State {
    pub(crate) opts: StateOptions,
    pub(crate) layout: StateLayout,
    pub(crate) kv: KvCache,
    /// Token ids at positions `0..n_past`.
    pub(crate) tokens: Vec<u32>,
    pub(crate) x: Vec<f32>,
    pub(crate) xb: Vec<f32>,
    pub(crate) xb2: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) att: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) hb: Vec<f32>,
    pub(crate) hb2: Vec<f32>,
    pub(crate) act: Vec<u8>,
    /// One per thread.
    pub(crate) att_scratch: Vec<AttnScratch>,
    pub(crate) rope_cs: Vec<(f32, f32)>,
    pub(crate) rope_cs_swa: Vec<(f32, f32)>,
    pub(crate) logits: Vec<f32>,
    /// Rows of `logits` the last forward filled.
    pub(crate) logit_rows: usize,
}

impl State {
    pub fn new(hp: &HParams, w: &Weights, opts: StateOptions) -> Result<State, ModelError> {
        let layout = StateLayout::new(hp, w, &opts)?;
        // The cache's rule for which layers are local is the one attention follows.
        for il in 0..hp.n_layer {
            assert_eq!(
                layout.kv_shape.is_local(il),
                hp.layer_window(il).is_some(),
                "layer {il}"
            );
        }
        Ok(State {
            opts,
            layout,
            kv: KvCache::new(layout.kv_shape, opts.kv_type),
            tokens: Vec::with_capacity(layout.tokens),
            x: vec![0.0; layout.embd],
            xb: vec![0.0; layout.embd],
            xb2: vec![0.0; layout.embd],
            q: vec![0.0; layout.q],
            att: vec![0.0; layout.q],
            k: vec![0.0; layout.kv],
            v: vec![0.0; layout.kv],
            hb: vec![0.0; layout.ff],
            hb2: vec![0.0; layout.ff],
            act: vec![0; layout.act_bytes],
            att_scratch: vec![
                AttnScratch::new(opts.n_ctx, hp.head_dim, kv_elem_type(opts.kv_type));
                opts.n_threads.max(1)
            ],
            rope_cs: vec![(0.0, 0.0); layout.rope],
            rope_cs_swa: vec![(0.0, 0.0); layout.rope_swa],
            logits: vec![0.0; layout.logits],
            logit_rows: 0,
        })
    }

    pub fn options(&self) -> &StateOptions {
        &self.opts
    }

    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }

    /// The KV cache (read-only: tests and tools inspect it).
    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Positions filled in the cache.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    pub fn n_ctx(&self) -> usize {
        self.opts.n_ctx
    }

    /// The token ids in the cache, in position order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets every position (the next forward starts at position 0).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.kv.clear();
        self.logit_rows = 0;
    }

    /// Forgets positions from `n` on, keeping a shared prefix for reuse, and returns how many
    /// positions were kept: `n.min(n_past)`, or 0 when a sliding-window layer no longer holds
    /// the window before `n` (it slid past it; the prefix must then be evaluated again, as
    /// llama.cpp's server does "due to lack of cache data (likely due to SWA)").
    pub fn truncate(&mut self, n: usize) -> usize {
        let n = n.min(self.n_past());
        if self.kv.holds_prefix(n) {
            self.tokens.truncate(n);
            self.logit_rows = 0;
            n
        } else {
            self.reset();
            0
        }
    }

    /// Prefix reuse: keeps the positions this state shares with `prompt`, but never the
    /// prompt's last two tokens; returns how many positions were kept (0 when the
    /// sliding-window layers no longer hold that prefix's last window, see
    /// [`State::truncate`]). `prompt` must not be empty. The last token must be evaluated
    /// again for fresh logits, and evaluating two keeps it in a batch: a batch computes for
    /// each token exactly what a fresh evaluation of the whole prompt computes for it, while a
    /// token alone goes through the one-token kernels, whose float sums are ordered
    /// differently (and near-ties could then flip between a cached and a fresh request).
    pub fn keep_prompt_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(2));
        self.truncate(common)
    }

    /// Makes this state hold `src`'s first `n` positions (their tokens and K/V entries), as if
    /// it had evaluated them itself; its logits are left stale until the next forward. Copies
    /// only those positions (those a sliding-window layer holds) and allocates nothing
    /// (`tokens` has room for the whole context).
    ///
    /// # Panics
    /// If `n > src.n_past()`, the two states' caches differ in shape or element type, or
    /// `src`'s sliding-window layers no longer hold the window before `n`.
    pub fn copy_prefix_from(&mut self, src: &State, n: usize) {
        assert!(
            n <= src.n_past(),
            "State::copy_prefix_from: {n} > src.n_past()"
        );
        self.kv.copy_prefix_from(&src.kv, n);
        self.tokens.clear();
        self.tokens.extend_from_slice(&src.tokens[..n]);
        self.logit_rows = 0;
    }

    /// Logits of the last token evaluated (`[n_vocab]`).
    pub fn logits(&self) -> &[f32] {
        let n = self.logits.len() / self.logits_capacity_rows().max(1);
        let r = self.logit_rows.max(1) - 1;
        &self.logits[r * n..(r + 1) * n]
    }

    /// Mutable logits of the last token (samplers that edit in place).
    pub fn logits_mut(&mut self) -> &mut [f32] {
        let n = self.logits.len() / self.logits_capacity_rows().max(1);
        let r = self.logit_rows.max(1) - 1;
        &mut self.logits[r * n..(r + 1) * n]
    }

    fn logits_capacity_rows(&self) -> usize {
        if self.opts.all_logits {
            self.opts.n_batch.min(self.opts.n_ctx)
        } else {
            1
        }
    }

    /// Heap bytes this state holds (KV cache + scratch).
    pub fn heap_bytes(&self) -> usize {
        self.kv.bytes() + self.layout.scratch_bytes()
    }
}

/// The ggml type of the cache's elements.
fn kv_elem_type(t: KvType) -> GgmlType {
    match t {
        KvType::F16 => GgmlType::F16,
        KvType::F32 => GgmlType::F32,
    }
}
