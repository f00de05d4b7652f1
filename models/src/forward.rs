//! The decoder forward pass of the llama family: embed, then per layer pre-norm attention with
//! RoPE and grouped-query heads over the KV cache, pre-norm gated FFN, residuals; final norm
//! and the output projection. Prompts are evaluated in batches (every matmul reads each
//! weight row once for the whole batch); decoding is a batch of one. Nothing here allocates.
//!
//! The architectures' differences are switches read from `HParams` and the bound weights, not
//! separate passes: Gemma 3 adds the embedding scale, QK-norm, post-attention and post-FFN
//! norms, GeGLU, sliding-window layers with their own RoPE base, and (when the file asks)
//! final logit soft-capping.

use edgellm_runtime::kernels::matmul::{matmul, matmul_gated, matmul_many, Projection};
use edgellm_runtime::ops::{self, AttnScratch, KvElem, LayerCache};

use crate::arch::FfnAct;
use crate::error::ModelError;
use crate::model::Model;
use crate::state::State;
use crate::tensor_dump::dump;

/// Which logits a forward call produces.
pub enum LogitsWanted<'f> {
    /// Only the last token's, into `State::logits()`.
    Last,
    /// Every token's, handed to the callback as `(index in tokens, logits)`.
    All(&'f mut dyn FnMut(usize, &[f32])),
}

impl Model {
    /// Evaluates `tokens` at positions `state.n_past()..`, appending them to the cache.
    pub fn forward(
        &self,
        state: &mut State,
        tokens: &[u32],
        mut want: LogitsWanted<'_>,
    ) -> Result<(), ModelError> {
        let needed = state.n_past() + tokens.len();
        if needed > state.n_ctx() {
            return Err(ModelError::ContextFull {
                needed,
                n_ctx: state.n_ctx(),
            });
        }
        if let LogitsWanted::All(_) = want {
            if !state.opts.all_logits {
                return Err(ModelError::Option(
                    "this state keeps only the last logits; create it with all_logits".into(),
                ));
            }
        }
        for &t in tokens {
            if t as usize >= self.hparams.n_vocab {
                return Err(ModelError::BadToken {
                    id: t,
                    n_vocab: self.hparams.n_vocab,
                });
            }
        }
        let nb_max = state.opts.n_batch.min(state.opts.n_ctx);
        let mut done = 0;
        while done < tokens.len() {
            let chunk = &tokens[done..(done + nb_max).min(tokens.len())];
            let last_chunk = done + chunk.len() == tokens.len();
            match &mut want {
                LogitsWanted::Last => {
                    self.forward_batch(
                        state,
                        chunk,
                        if last_chunk {
                            OutRows::Last
                        } else {
                            OutRows::None
                        },
                    )?;
                }
                LogitsWanted::All(f) => {
                    self.forward_batch(state, chunk, OutRows::All)?;
                    let n = self.hparams.n_vocab;
                    for i in 0..chunk.len() {
                        f(done + i, &state.logits[i * n..(i + 1) * n]);
                    }
                }
            }
            done += chunk.len();
        }
        Ok(())
    }

    fn forward_batch(
        &self,
        s: &mut State,
        tokens: &[u32],
        out_rows: OutRows,
    ) -> Result<(), ModelError> {
        let hp = &self.hparams;
        let map = self.map.bytes();
        let w = &self.weights;
        let pool = &self.pool;
        let kern = &self.kernels;
        let nb = tokens.len();
        let d = hp.n_embd;
        let hd = hp.head_dim;
        let q_dim = hp.q_dim();
        let kv_dim = hp.kv_dim();
        let pos0 = s.n_past();
        let n_half = hp.rope.n_dims / 2;
        let freq_factors = w.rope_freqs.as_ref().map(|b| b.f32s(map));

        // Embeddings.
        for (t, &tok) in tokens.iter().enumerate() {
            let row = w.token_embd.row(map, tok as usize);
            edgellm_runtime::quant::dequantize_row(
                w.token_embd.ty,
                row,
                &mut s.x[t * d..(t + 1) * d],
            )
            .map_err(|e| ModelError::Option(e.to_string()))?;
        }
        if let Some(scale) = hp.embd_scale {
            for v in &mut s.x[..nb * d] {
                *v *= scale;
            }
        }
        // RoPE rotations of this batch's positions.
        for t in 0..nb {
            ops::rope_cache(
                &hp.rope,
                (pos0 + t) as f32,
                freq_factors,
                &mut s.rope_cs[t * n_half..(t + 1) * n_half],
            );
            if let Some(swa) = &hp.swa {
                ops::rope_cache(
                    &swa.rope,
                    (pos0 + t) as f32,
                    freq_factors,
                    &mut s.rope_cs_swa[t * n_half..(t + 1) * n_half],
                );
            }
        }
        let scale = hp.attn_scale;
        let group = hp.n_head / hp.n_head_kv;
        // Sliding-window layers slide their buffers now if this batch would run past them.
        s.kv.make_room(pos0, nb);

        for (il, l) in w.layers.iter().enumerate() {
            // Attention.
            let attn_norm = l.attn_norm.f32s(map);
            for t in 0..nb {
                ops::rms_norm(
                    &mut s.xb[t * d..(t + 1) * d],
                    &s.x[t * d..(t + 1) * d],
                    Some(attn_norm),
                    hp.rms_eps,
                );
            }
            dump("attn_norm", Some(il), &s.xb[..nb * d], d);
            matmul_many(
                pool,
                kern,
                &mut [
                    Projection {
                        w: l.wq.matrix(map),
                        out: &mut s.q,
                    },
                    Projection {
                        w: l.wk.matrix(map),
                        out: &mut s.k,
                    },
                    Projection {
                        w: l.wv.matrix(map),
                        out: &mut s.v,
                    },
                ],
                &s.xb,
                nb,
                &mut s.act,
            )?;
            for (bias, buf, width) in [
                (&l.bq, &mut s.q, q_dim),
                (&l.bk, &mut s.k, kv_dim),
                (&l.bv, &mut s.v, kv_dim),
            ] {
                if let Some(b) = bias {
                    let b = b.f32s(map);
                    for row in buf[..nb * width].chunks_exact_mut(width) {
                        for (x, bb) in row.iter_mut().zip(b) {
                            *x += bb;
                        }
                    }
                }
            }
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                let (qn, kn) = (qn.f32s(map), kn.f32s(map));
                for head in s.q[..nb * q_dim].chunks_exact_mut(hd) {
                    ops::rms_norm_in_place(head, qn, hp.rms_eps);
                }
                for head in s.k[..nb * kv_dim].chunks_exact_mut(hd) {
                    ops::rms_norm_in_place(head, kn, hp.rms_eps);
                }
            }
            let window = hp.layer_window(il);
            let cs_all = if window.is_some() {
                &s.rope_cs_swa
            } else {
                &s.rope_cs
            };
            for t in 0..nb {
                let cs = &cs_all[t * n_half..(t + 1) * n_half];
                for h in 0..hp.n_head {
                    let o = t * q_dim + h * hd;
                    ops::rope_apply(hp.rope.style, hp.rope.n_dims, &mut s.q[o..o + hd], cs);
                }
                for h in 0..hp.n_head_kv {
                    let o = t * kv_dim + h * hd;
                    ops::rope_apply(hp.rope.style, hp.rope.n_dims, &mut s.k[o..o + hd], cs);
                }
                s.kv.store_row(
                    il,
                    pos0 + t,
                    &s.k[t * kv_dim..(t + 1) * kv_dim],
                    &s.v[t * kv_dim..(t + 1) * kv_dim],
                );
            }
            dump("Qcur", Some(il), &s.q[..nb * q_dim], q_dim);
            dump("Kcur", Some(il), &s.k[..nb * kv_dim], kv_dim);
            dump("Vcur", Some(il), &s.v[..nb * kv_dim], kv_dim);
            let q = &s.q;
            let n_head = hp.n_head;
            let slot_base = s.kv.slot_base(il);
            let kv_pad = s.opts.kv_pad;
            let att = &mut s.att[..nb * q_dim];
            if let Some(cache) = s.kv.layer_f16(il) {
                attend(
                    pool,
                    att,
                    &mut s.att_scratch,
                    q,
                    &cache,
                    kern,
                    hd,
                    n_head,
                    group,
                    pos0,
                    window,
                    slot_base,
                    scale,
                    kv_pad,
                );
            } else if let Some(cache) = s.kv.layer_f32(il) {
                attend(
                    pool,
                    att,
                    &mut s.att_scratch,
                    q,
                    &cache,
                    kern,
                    hd,
                    n_head,
                    group,
                    pos0,
                    window,
                    slot_base,
                    scale,
                    kv_pad,
                );
            }
            dump("kqv_out", Some(il), &s.att[..nb * q_dim], q_dim);
            matmul(
                pool,
                kern,
                &l.wo.matrix(map),
                &s.att,
                nb,
                &mut s.act,
                &mut s.xb2,
            )?;
            if let Some(pn) = &l.post_attn_norm {
                let pn = pn.f32s(map);
                for row in s.xb2[..nb * d].chunks_exact_mut(d) {
                    ops::rms_norm_in_place(row, pn, hp.rms_eps);
                }
            }
            for (x, a) in s.x[..nb * d].iter_mut().zip(&s.xb2[..nb * d]) {
                *x += a;
            }

            dump("attn_out", Some(il), &s.xb2[..nb * d], d);
            // The last layer's feed-forward runs only for the rows whose logits are wanted,
            // as llama.cpp's graph does (it sums a one-token product in another order than a
            // batch's, so this is also what keeps the logits equal to its own).
            let nb = if il + 1 == w.layers.len() {
                match out_rows {
                    OutRows::None => break,
                    OutRows::Last => {
                        s.x.copy_within((nb - 1) * d..nb * d, 0);
                        1
                    }
                    OutRows::All => nb,
                }
            } else {
                nb
            };
            dump("ffn_inp", Some(il), &s.x[..nb * d], d);
            // Feed-forward.
            let ffn_norm = l.ffn_norm.f32s(map);
            for t in 0..nb {
                ops::rms_norm(
                    &mut s.xb[t * d..(t + 1) * d],
                    &s.x[t * d..(t + 1) * d],
                    Some(ffn_norm),
                    hp.rms_eps,
                );
            }
            matmul_gated(
                pool,
                kern,
                &l.w_gate.matrix(map),
                &l.w_up.matrix(map),
                &s.xb,
                nb,
                &mut s.act,
                &mut s.hb,
                &mut s.hb2,
                match hp.ffn_act {
                    FfnAct::Silu => kern.swiglu(),
                    FfnAct::GeluTanh => ops::geglu,
                },
            )?;
            dump("ffn_norm", Some(il), &s.xb[..nb * d], d);
            dump("ffn_act", Some(il), &s.hb[..nb * hp.n_ff], hp.n_ff);
            matmul(
                pool,
                kern,
                &l.w_down.matrix(map),
                &s.hb,
                nb,
                &mut s.act,
                &mut s.xb2,
            )?;
            if let Some(pn) = &l.post_ffn_norm {
                let pn = pn.f32s(map);
                for row in s.xb2[..nb * d].chunks_exact_mut(d) {
                    ops::rms_norm_in_place(row, pn, hp.rms_eps);
                }
            }
            for (x, a) in s.x[..nb * d].iter_mut().zip(&s.xb2[..nb * d]) {
                *x += a;
            }
            dump("ffn_out", Some(il), &s.xb2[..nb * d], d);
            dump("l_out", Some(il), &s.x[..nb * d], d);
        }
        s.tokens.extend_from_slice(tokens);

        // Output.
        let (first, rows) = match out_rows {
            OutRows::None => {
                s.logit_rows = 0;
                return Ok(());
            }
            // The last layer left the last token's row first.
            OutRows::Last => (0, 1),
            OutRows::All => (0, nb),
        };
        let out_norm = w.output_norm.f32s(map);
        for i in 0..rows {
            let t = first + i;
            ops::rms_norm(
                &mut s.xb[i * d..(i + 1) * d],
                &s.x[t * d..(t + 1) * d],
                Some(out_norm),
                hp.rms_eps,
            );
        }
        dump("result_norm", None, &s.xb[..rows * d], d);
        matmul(
            pool,
            kern,
            &w.output.matrix(map),
            &s.xb,
            rows,
            &mut s.act,
            &mut s.logits,
        )?;
        if let Some(cap) = hp.final_logit_softcap {
            ops::softcap(&mut s.logits[..rows * hp.n_vocab], cap);
        }
        dump(
            "result_output",
            None,
            &s.logits[..rows * hp.n_vocab],
            hp.n_vocab,
        );
        s.logit_rows = rows;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum OutRows {
    None,
    Last,
    All,
}

/// Attention for every (token, query head) of the batch, in parallel: token `t` sees cached
/// positions `0..=pos0 + t`, or only the last `window` of them on a sliding-window layer.
/// The cache holds position `p` in slot `p - slot_base` (a sliding buffer's base; 0 else).
///
/// The query heads of a GQA group read the same cache rows, so one `ops::attention` call takes
/// several of them ([`heads_per_call`]); the pool splits the calls over its threads.
fn attend<T: KvElem>(
    pool: &edgellm_runtime::kernels::threadpool::ThreadPool,
    att: &mut [f32],
    scratch: &mut [AttnScratch],
    q: &[f32],
    cache: &LayerCache<'_, T>,
    kern: &edgellm_runtime::kernels::Kernels,
    hd: usize,
    n_head: usize,
    group: usize,
    pos0: usize,
    window: Option<usize>,
    slot_base: usize,
    scale: f32,
    kv_pad: usize,
) {
    let nb = att.len() / (n_head * hd);
    let per_call = heads_per_call(nb * n_head, group, pool.n_threads());
    let calls_per_token = n_head / per_call;
    pool.for_each_row(att, per_call * hd, scratch, 1, &|row, out, scratch| {
        let t = row / calls_per_token;
        let h0 = (row % calls_per_token) * per_call;
        let qh = &q[(t * n_head + h0) * hd..(t * n_head + h0 + per_call) * hd];
        let end = pos0 + t + 1;
        let start = window.map_or(0, |w| end.saturating_sub(w));
        ops::attention(
            qh,
            hd,
            cache,
            h0 / group,
            start - slot_base..end - slot_base,
            scale,
            if nb >= 2 { None } else { Some(kv_pad) },
            kern,
            &mut scratch[0],
            out,
        );
    });
}

/// Query heads per `ops::attention` call: a divisor of the GQA `group` (so a call's heads share
/// their KV head), at most `ops::ATTN_MAX_HEADS`, chosen to minimize the busiest thread's work
/// over `n_heads` heads in all: `ceil(calls / threads)` calls of `per_call` heads, a head in a
/// call of `c` costing about `HEAD_COST[c]` of a lone one (measured by the runtime's
/// `bench_attention`: the cache rows are converted once per call). A prompt batch takes whole
/// groups; one decoded token may split a group so both threads get work.
fn heads_per_call(n_heads: usize, group: usize, threads: usize) -> usize {
    const HEAD_COST: [f64; ops::ATTN_MAX_HEADS + 1] = [1.0, 1.0, 0.9, 0.88, 0.9];
    (1..=group.min(ops::ATTN_MAX_HEADS))
        .filter(|c| group.is_multiple_of(*c))
        .min_by(|&a, &b| {
            let cost = |c: usize| (n_heads / c).div_ceil(threads) as f64 * c as f64 * HEAD_COST[c];
            cost(a).total_cmp(&cost(b))
        })
        .unwrap_or(1)
}
