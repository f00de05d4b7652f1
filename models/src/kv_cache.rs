//! `KvCache`: the keys and values of every layer for every position of the context, allocated
//! once at load for the chosen context length and element type, and the llama.cpp-style
//! context shift that frees room when it fills.

use edgellm_runtime::ops::{rope_apply, rope_cache, KvElem, LayerCache, RopeParams};
use half::f16;

/// Element type of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

impl KvType {
    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
        }
    }

    pub fn from_name(s: &str) -> Option<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Some(KvType::F16),
            "f32" => Some(KvType::F32),
            _ => None,
        }
    }
}

/// `k` is `[n_layer][n_ctx][kv_dim]`; `v` is stored transposed, `[n_layer][kv_dim][n_ctx]`, so
/// the probability-weighted sum over positions is a row dot (as llama.cpp stores it).
pub enum KvStore {
    F16 { k: Vec<f16>, v: Vec<f16> },
    F32 { k: Vec<f32>, v: Vec<f32> },
}

pub struct KvCache {
    pub store: KvStore,
    pub n_layer: usize,
    pub n_ctx: usize,
    pub kv_dim: usize,
}

impl KvCache {
    /// Bytes a cache of this size takes.
    pub fn bytes_for(n_layer: usize, n_ctx: usize, kv_dim: usize, ty: KvType) -> usize {
        2 * n_layer * n_ctx * kv_dim * ty.bytes()
    }

    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize, ty: KvType) -> KvCache {
        let n = n_layer * n_ctx * kv_dim;
        let store = match ty {
            KvType::F16 => KvStore::F16 {
                k: vec![f16::ZERO; n],
                v: vec![f16::ZERO; n],
            },
            KvType::F32 => KvStore::F32 {
                k: vec![0.0; n],
                v: vec![0.0; n],
            },
        };
        KvCache {
            store,
            n_layer,
            n_ctx,
            kv_dim,
        }
    }

    pub fn kv_type(&self) -> KvType {
        match self.store {
            KvStore::F16 { .. } => KvType::F16,
            KvStore::F32 { .. } => KvType::F32,
        }
    }

    /// The ggml type of the elements (which row dot attention uses).
    pub fn kv_type_ggml(&self) -> edgellm_runtime::GgmlType {
        match self.store {
            KvStore::F16 { .. } => edgellm_runtime::GgmlType::F16,
            KvStore::F32 { .. } => edgellm_runtime::GgmlType::F32,
        }
    }

    pub fn bytes(&self) -> usize {
        KvCache::bytes_for(self.n_layer, self.n_ctx, self.kv_dim, self.kv_type())
    }

    /// Writes the K and V rows of `layer` at position `pos`.
    pub fn store_row(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let at = (layer * self.n_ctx + pos) * self.kv_dim;
        let v_at = layer * self.kv_dim * self.n_ctx + pos;
        let n_ctx = self.n_ctx;
        match &mut self.store {
            KvStore::F16 { k: kc, v: vc } => store(kc, vc, at, v_at, n_ctx, k, v),
            KvStore::F32 { k: kc, v: vc } => store(kc, vc, at, v_at, n_ctx, k, v),
        }
    }

    /// The cache of `layer` as attention reads it.
    pub fn layer_f16(&self, layer: usize) -> Option<LayerCache<'_, f16>> {
        match &self.store {
            KvStore::F16 { k, v } => Some(self.layer(k, v, layer)),
            KvStore::F32 { .. } => None,
        }
    }

    /// The cache of `layer` as attention reads it (F32 caches).
    pub fn layer_f32(&self, layer: usize) -> Option<LayerCache<'_, f32>> {
        match &self.store {
            KvStore::F32 { k, v } => Some(self.layer(k, v, layer)),
            KvStore::F16 { .. } => None,
        }
    }

    fn layer<'a, T: KvElem>(&self, k: &'a [T], v: &'a [T], layer: usize) -> LayerCache<'a, T> {
        let n = self.n_ctx * self.kv_dim;
        LayerCache {
            k: &k[layer * n..(layer + 1) * n],
            v_t: &v[layer * n..(layer + 1) * n],
            kv_dim: self.kv_dim,
            n_ctx: self.n_ctx,
        }
    }

    /// Makes positions `0..n` of every layer equal to `src`'s (K rows and the first `n` entries
    /// of every transposed V row); positions from `n` on are left as they are. Beam search uses
    /// it to give a beam its parent's history without touching the unused tail of the context.
    ///
    /// # Panics
    /// If the caches differ in shape or element type, or `n > n_ctx`.
    pub fn copy_prefix_from(&mut self, src: &KvCache, n: usize) {
        assert!(
            self.n_layer == src.n_layer
                && self.n_ctx == src.n_ctx
                && self.kv_dim == src.kv_dim
                && n <= self.n_ctx,
            "KvCache::copy_prefix_from: caches of different shapes"
        );
        let (n_layer, n_ctx, kv_dim) = (self.n_layer, self.n_ctx, self.kv_dim);
        match (&mut self.store, &src.store) {
            (KvStore::F16 { k, v }, KvStore::F16 { k: sk, v: sv }) => {
                copy_prefix(k, v, sk, sv, n_layer, n_ctx, kv_dim, n)
            }
            (KvStore::F32 { k, v }, KvStore::F32 { k: sk, v: sv }) => {
                copy_prefix(k, v, sk, sv, n_layer, n_ctx, kv_dim, n)
            }
            _ => panic!("KvCache::copy_prefix_from: caches of different element types"),
        }
    }

    /// Drops positions `[n_keep, n_keep + n_discard)`, moving the `n_past - n_keep - n_discard`
    /// later ones down and re-rotating their keys by `-n_discard` positions with each layer's
    /// RoPE (`layer_rope(il)`: sliding-window layers have their own base).
    pub fn shift(
        &mut self,
        n_keep: usize,
        n_discard: usize,
        n_past: usize,
        layer_rope: &dyn Fn(usize) -> RopeParams,
        freq_factors: Option<&[f32]>,
        head_dim: usize,
    ) {
        let (n_ctx, kv_dim, n_layer) = (self.n_ctx, self.kv_dim, self.n_layer);
        let n_half = layer_rope(0).n_dims / 2;
        let mut cs = vec![(0.0f32, 0.0f32); n_half];
        for l in 0..n_layer {
            let rope = layer_rope(l);
            // A rotation by a negative position undoes that many positions of rotation.
            rope_cache(&rope, -(n_discard as f32), freq_factors, &mut cs);
            let layer = l * n_ctx * kv_dim..(l + 1) * n_ctx * kv_dim;
            match &mut self.store {
                KvStore::F16 { k, v } => shift_layer(
                    &mut k[layer.clone()],
                    &mut v[layer],
                    n_ctx,
                    kv_dim,
                    n_keep,
                    n_discard,
                    n_past,
                    &rope,
                    &cs,
                    head_dim,
                ),
                KvStore::F32 { k, v } => shift_layer(
                    &mut k[layer.clone()],
                    &mut v[layer],
                    n_ctx,
                    kv_dim,
                    n_keep,
                    n_discard,
                    n_past,
                    &rope,
                    &cs,
                    head_dim,
                ),
            }
        }
    }
}

fn store<T: KvElem>(
    kc: &mut [T],
    vc: &mut [T],
    at: usize,
    v_at: usize,
    n_ctx: usize,
    k: &[f32],
    v: &[f32],
) {
    for (d, s) in kc[at..at + k.len()].iter_mut().zip(k) {
        *d = T::from_f32(*s);
    }
    for (c, s) in v.iter().enumerate() {
        vc[v_at + c * n_ctx] = T::from_f32(*s);
    }
}

/// `k` rows `[layer][0..n][kv_dim]` and `v_t` entries `[layer][kv_dim][0..n]` from `sk`/`sv`.
fn copy_prefix<T: Copy>(
    k: &mut [T],
    v: &mut [T],
    sk: &[T],
    sv: &[T],
    n_layer: usize,
    n_ctx: usize,
    kv_dim: usize,
    n: usize,
) {
    for l in 0..n_layer {
        let base = l * n_ctx * kv_dim;
        k[base..base + n * kv_dim].copy_from_slice(&sk[base..base + n * kv_dim]);
        for c in 0..kv_dim {
            let row = base + c * n_ctx;
            v[row..row + n].copy_from_slice(&sv[row..row + n]);
        }
    }
}

/// [`KvCache::shift`] of one layer's keys `[n_ctx][kv_dim]` and transposed values
/// `[kv_dim][n_ctx]`.
fn shift_layer<T: KvElem>(
    k: &mut [T],
    v: &mut [T],
    n_ctx: usize,
    kv_dim: usize,
    n_keep: usize,
    n_discard: usize,
    n_past: usize,
    rope: &RopeParams,
    cs: &[(f32, f32)],
    head_dim: usize,
) {
    let mut head = vec![0.0f32; head_dim];
    // Values: each transposed row moves its positions down.
    for c in 0..kv_dim {
        let row = c * n_ctx;
        v.copy_within(row + n_keep + n_discard..row + n_past, row + n_keep);
    }
    for p in n_keep + n_discard..n_past {
        let src = p * kv_dim;
        let dst = (p - n_discard) * kv_dim;
        k.copy_within(src..src + kv_dim, dst);
        for h in 0..kv_dim / head_dim {
            let row = &mut k[dst + h * head_dim..dst + (h + 1) * head_dim];
            for (o, s) in head.iter_mut().zip(row.iter()) {
                *o = s.to_f32();
            }
            rope_apply(rope.style, rope.n_dims, &mut head, cs);
            for (o, s) in row.iter_mut().zip(&head) {
                *o = T::from_f32(*s);
            }
        }
    }
}
