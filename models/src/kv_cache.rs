//! `KvCache`: the keys and values of every layer, allocated once at load for the chosen context
//! length and element type, and the llama.cpp-style context shift that frees room when it fills.
//!
//! A global layer holds every position of the context. A sliding-window layer (Gemma 3's local
//! layers) attends only to the last `window` positions, so it holds fewer (unless the state
//! asks for `swa_full`, llama.cpp's `--swa-full`): a *sliding linear buffer* of `slots`
//! positions, the contiguous range `[base, n_past)` with slot = position - base. Attention still
//! reads one contiguous range in position order, so every result is bit for bit what a full
//! cache gives. When a batch would run past the last slot, the buffer slides first: its last
//! `window - 1 + SWA_REUSE_MARGIN` positions move to the front (`copy_within`, no allocation)
//! and `base` rises. All local layers share one `base`.
//!
//! The invariant every operation keeps: a local layer holds at least the `window - 1`
//! positions before `n_past` (the next query's window) unless `base == 0` (it holds them all).

use edgellm_runtime::ops::{rope_apply, rope_cache, KvElem, LayerCache, RopeParams};
use half::f16;

/// Positions a sliding buffer keeps beyond the next query's window when it slides, so a request
/// that shares all but its last few tokens with the cached one can still reuse the cache.
pub const SWA_REUSE_MARGIN: usize = 64;

/// Least amortization margin of a sliding buffer: slots beyond what a slide keeps and a batch,
/// so a slide (which moves `window - 1 + SWA_REUSE_MARGIN` positions) comes at most once every
/// that many decoded tokens.
const SWA_MIN_AMORTIZATION: usize = 256;

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

/// Which layers attend through a sliding window, as the cache sizes them (the same rule as
/// `HParams`' `SlidingWindow`, without the RoPE: model cards carry it too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingLayers {
    /// Positions a local layer's query sees, itself included.
    pub window: usize,
    /// Layer `il` is local unless `il % pattern == pattern - 1`.
    pub pattern: usize,
}

impl SlidingLayers {
    pub fn is_local(&self, il: usize) -> bool {
        il % self.pattern < self.pattern - 1
    }

    /// Positions a local layer keeps when it slides: the `window - 1` the next query sees
    /// besides itself, and the reuse margin.
    pub fn kept_on_slide(&self) -> usize {
        self.window.saturating_sub(1) + SWA_REUSE_MARGIN
    }

    /// Slots of a local layer's buffer for batches of up to `n_batch` tokens: what a slide
    /// keeps, a batch, and the amortization margin (`max(window, 256)`); at most `n_ctx`, where
    /// the buffer is a full cache that never slides.
    pub fn slots(&self, n_ctx: usize, n_batch: usize) -> usize {
        n_ctx.min(self.kept_on_slide() + n_batch + self.window.max(SWA_MIN_AMORTIZATION))
    }
}

/// How many positions each layer of a cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvShape {
    pub n_layer: usize,
    /// Positions a global layer holds.
    pub n_ctx: usize,
    /// Width of one position's K (or V) row: `n_head_kv * head_dim`.
    pub kv_dim: usize,
    /// The sliding-window layers, if any.
    pub swa: Option<SlidingLayers>,
    /// Positions a local layer holds (`n_ctx` without local layers, or with `swa_full`).
    pub local_slots: usize,
}

impl KvShape {
    /// Every layer holds the whole context.
    pub fn full(n_layer: usize, n_ctx: usize, kv_dim: usize) -> KvShape {
        KvShape {
            n_layer,
            n_ctx,
            kv_dim,
            swa: None,
            local_slots: n_ctx,
        }
    }

    /// `swa`'s local layers hold a sliding buffer sized for batches of up to `n_batch` tokens,
    /// or the whole context when `swa_full`.
    pub fn new(
        n_layer: usize,
        n_ctx: usize,
        kv_dim: usize,
        swa: Option<SlidingLayers>,
        n_batch: usize,
        swa_full: bool,
    ) -> KvShape {
        let local_slots = match swa {
            Some(s) if !swa_full && (0..n_layer).any(|il| s.is_local(il)) => {
                s.slots(n_ctx, n_batch.min(n_ctx))
            }
            _ => n_ctx,
        };
        KvShape {
            n_layer,
            n_ctx,
            kv_dim,
            swa,
            local_slots,
        }
    }

    pub fn is_local(&self, il: usize) -> bool {
        self.swa.is_some_and(|s| s.is_local(il))
    }

    /// Positions layer `il` holds.
    pub fn layer_slots(&self, il: usize) -> usize {
        if self.is_local(il) {
            self.local_slots
        } else {
            self.n_ctx
        }
    }

    /// How many layers are local.
    pub fn n_local(&self) -> usize {
        (0..self.n_layer).filter(|&il| self.is_local(il)).count()
    }

    /// Whether the local layers hold fewer positions than the context (and so slide).
    pub fn slides(&self) -> bool {
        self.n_local() > 0 && self.local_slots < self.n_ctx
    }

    /// Elements of K (or of V) over all layers.
    fn elements(&self) -> usize {
        (0..self.n_layer)
            .map(|il| self.layer_slots(il))
            .sum::<usize>()
            * self.kv_dim
    }

    /// Bytes a cache of this shape takes (K and V).
    pub fn bytes(&self, ty: KvType) -> usize {
        2 * self.elements() * ty.bytes()
    }
}

/// The largest context `n <= max_ctx` whose KV bytes (`kv_bytes_at(n)`, non-decreasing in `n`)
/// fit in `room`, or 0. What "lower --ctx to at most N" hints must compute when sliding-window
/// layers make the cache grow slower than the context (a division by bytes per token would
/// undercount what fits).
pub fn largest_context_within(
    max_ctx: usize,
    room: u64,
    kv_bytes_at: impl Fn(usize) -> u64,
) -> usize {
    let (mut lo, mut hi) = (0usize, max_ctx);
    // invariant: `lo` fits (0 always does), everything above `hi` does not
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if kv_bytes_at(mid) <= room {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// `k` is `[layer][slots(layer)][kv_dim]`; `v` is stored transposed,
/// `[layer][kv_dim][slots(layer)]`, so the probability-weighted sum over positions is a row dot
/// (as llama.cpp stores it).
pub enum KvStore {
    F16 { k: Vec<f16>, v: Vec<f16> },
    F32 { k: Vec<f32>, v: Vec<f32> },
}

pub struct KvCache {
    store: KvStore,
    shape: KvShape,
    /// `[n_layer]`: the first element of each layer in `k` (and in `v`).
    offsets: Vec<usize>,
    /// First position the local layers hold (slot 0); 0 until a slide.
    base: usize,
}

impl KvCache {
    /// Bytes of a cache in which every layer holds the whole context (a model without
    /// sliding-window layers; see [`KvShape::bytes`] for the others).
    pub fn bytes_for(n_layer: usize, n_ctx: usize, kv_dim: usize, ty: KvType) -> usize {
        KvShape::full(n_layer, n_ctx, kv_dim).bytes(ty)
    }

    pub fn new(shape: KvShape, ty: KvType) -> KvCache {
        let n = shape.elements();
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
        let offsets = (0..shape.n_layer)
            .scan(0, |at, il| {
                let off = *at;
                *at += shape.layer_slots(il) * shape.kv_dim;
                Some(off)
            })
            .collect();
        KvCache {
            store,
            shape,
            offsets,
            base: 0,
        }
    }

    pub fn shape(&self) -> &KvShape {
        &self.shape
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
        self.shape.bytes(self.kv_type())
    }

    /// The position held in slot 0 of layer `il` (the local layers' `base`; 0 for a global
    /// layer). Slot = position - this.
    pub fn slot_base(&self, il: usize) -> usize {
        if self.shape.is_local(il) {
            self.base
        } else {
            0
        }
    }

    /// Whether positions `0..n` (of the `n_past >= n` filled) can be kept: every local layer
    /// still holds the `window - 1` positions before `n` (or all of them).
    pub fn holds_prefix(&self, n: usize) -> bool {
        match self.shape.swa {
            Some(s) if self.base > 0 => self.base + s.window.saturating_sub(1) <= n,
            _ => true,
        }
    }

    /// Forgets every position (the next batch starts at position 0).
    pub fn clear(&mut self) {
        self.base = 0;
    }

    /// Makes room for a batch at positions `[pos0, pos0 + nb)` (`pos0`: positions filled):
    /// when it would run past the local layers' last slot, they slide first, keeping their
    /// last [`SlidingLayers::kept_on_slide`] positions. Allocates nothing.
    ///
    /// # Panics
    /// If the batch does not fit even after a slide (larger than the cache was sized for).
    pub fn make_room(&mut self, pos0: usize, nb: usize) {
        let Some(swa) = self.shape.swa else { return };
        let slots = self.shape.local_slots;
        assert!(pos0 >= self.base, "position {pos0} before the cache's base");
        if pos0 + nb - self.base <= slots {
            return;
        }
        let keep = (pos0 - self.base).min(swa.kept_on_slide());
        assert!(
            keep + nb <= slots,
            "a batch of {nb} does not fit a sliding-window cache of {slots} positions"
        );
        let kv_dim = self.shape.kv_dim;
        let slide = Slide {
            slots,
            kv_dim,
            from: pos0 - keep - self.base,
            keep,
        };
        for il in (0..self.shape.n_layer).filter(|&il| swa.is_local(il)) {
            let layer = self.offsets[il]..self.offsets[il] + slots * kv_dim;
            match &mut self.store {
                KvStore::F16 { k, v } => slide.layer(&mut k[layer.clone()], &mut v[layer]),
                KvStore::F32 { k, v } => slide.layer(&mut k[layer.clone()], &mut v[layer]),
            }
        }
        self.base = pos0 - keep;
    }

    /// Writes the K and V rows of `layer` at position `pos` (held: `pos >= slot_base(layer)`,
    /// after [`KvCache::make_room`]).
    pub fn store_row(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let slots = self.shape.layer_slots(layer);
        let slot = pos - self.slot_base(layer);
        let at = self.offsets[layer] + slot * self.shape.kv_dim;
        let v_at = self.offsets[layer] + slot;
        match &mut self.store {
            KvStore::F16 { k: kc, v: vc } => store(kc, vc, at, v_at, slots, k, v),
            KvStore::F32 { k: kc, v: vc } => store(kc, vc, at, v_at, slots, k, v),
        }
    }

    /// The cache of `layer` as attention reads it (its `n_ctx` is the layer's slots; slot =
    /// position - [`KvCache::slot_base`]).
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
        let slots = self.shape.layer_slots(layer);
        let at = self.offsets[layer];
        let n = slots * self.shape.kv_dim;
        LayerCache {
            k: &k[at..at + n],
            v_t: &v[at..at + n],
            kv_dim: self.shape.kv_dim,
            n_ctx: slots,
        }
    }

    /// Makes positions `0..n` of every layer equal to `src`'s (as far as this cache holds
    /// them: a local layer takes the last of them its slots hold, never fewer than its window
    /// needs) and takes `src`'s base; later positions are left as they are. Beam search uses it
    /// to give a beam its parent's history without touching the unused tail of the context.
    /// The two caches may differ in their local slots (states sized for different batches).
    ///
    /// # Panics
    /// If the caches differ in layers, context, width, sliding layers or element type, if
    /// `n > n_ctx`, or if `src` no longer holds the window before `n`.
    pub fn copy_prefix_from(&mut self, src: &KvCache, n: usize) {
        let (a, b) = (&self.shape, &src.shape);
        assert!(
            a.n_layer == b.n_layer
                && a.n_ctx == b.n_ctx
                && a.kv_dim == b.kv_dim
                && a.swa == b.swa
                && n <= a.n_ctx,
            "KvCache::copy_prefix_from: caches of different shapes"
        );
        assert!(
            src.holds_prefix(n),
            "KvCache::copy_prefix_from: the source no longer holds the window before {n}"
        );
        let base = src.base.max(n.saturating_sub(self.shape.local_slots));
        let kv_dim = self.shape.kv_dim;
        for il in 0..self.shape.n_layer {
            let (lb, src_lb) = if self.shape.is_local(il) {
                (base, src.base)
            } else {
                (0, 0)
            };
            let dst = Span {
                at: self.offsets[il],
                slots: self.shape.layer_slots(il),
                first: 0,
            };
            let from = Span {
                at: src.offsets[il],
                slots: src.shape.layer_slots(il),
                first: lb - src_lb,
            };
            let count = n - lb;
            match (&mut self.store, &src.store) {
                (KvStore::F16 { k, v }, KvStore::F16 { k: sk, v: sv }) => {
                    copy_span(k, v, dst, sk, sv, from, count, kv_dim)
                }
                (KvStore::F32 { k, v }, KvStore::F32 { k: sk, v: sv }) => {
                    copy_span(k, v, dst, sk, sv, from, count, kv_dim)
                }
                _ => panic!("KvCache::copy_prefix_from: caches of different element types"),
            }
        }
        self.base = base;
    }

    /// The most positions [`KvCache::shift`] may discard after the first `n_keep` of `n_past`
    /// such that every local layer still holds the next query's window afterwards. Discarding
    /// `d` leaves a local layer holding positions `[new_base, n_past - d)`, where `new_base` is
    /// `base` if `base <= n_keep`, else `max(base - d, n_keep)`; that is enough when
    /// `new_base == 0` or `n_past - d - new_base >= window - 1`:
    /// - `base == 0`: any `d`;
    /// - `0 < base <= n_keep`: `d <= n_past - base - (window - 1)`;
    /// - `base > n_keep == 0`: any `d` (the held range just moves down, or reaches 0);
    /// - `base > n_keep > 0`: `d <= n_past - n_keep - (window - 1)` (the held count before,
    ///   `n_past - base`, is already at least `window - 1`).
    pub fn max_discard(&self, n_keep: usize, n_past: usize) -> usize {
        let all = n_past.saturating_sub(n_keep);
        let Some(swa) = self.shape.swa else {
            return all;
        };
        let w1 = swa.window.saturating_sub(1);
        if self.base == 0 || n_keep == 0 {
            all
        } else if self.base <= n_keep {
            all.min((n_past - self.base).saturating_sub(w1))
        } else {
            all.saturating_sub(w1)
        }
    }

    /// Drops positions `[n_keep, n_keep + n_discard)`, moving the later ones (as far as each
    /// layer holds them) down and re-rotating their keys by `-n_discard` positions with each
    /// layer's RoPE (`layer_rope(il)`: sliding-window layers have their own base).
    ///
    /// # Panics
    /// If `n_discard` is more than [`KvCache::max_discard`] allows.
    pub fn shift(
        &mut self,
        n_keep: usize,
        n_discard: usize,
        n_past: usize,
        layer_rope: &dyn Fn(usize) -> RopeParams,
        freq_factors: Option<&[f32]>,
        head_dim: usize,
    ) {
        assert!(
            n_discard <= self.max_discard(n_keep, n_past),
            "KvCache::shift: discarding {n_discard} after {n_keep} of {n_past} would drop part of a local window"
        );
        let d = n_discard;
        let new_base = if self.base <= n_keep {
            self.base
        } else {
            self.base.saturating_sub(d).max(n_keep)
        };
        let kv_dim = self.shape.kv_dim;
        let n_half = layer_rope(0).n_dims / 2;
        let mut cs = vec![(0.0f32, 0.0f32); n_half];
        for il in 0..self.shape.n_layer {
            let rope = layer_rope(il);
            // A rotation by a negative position undoes that many positions of rotation.
            rope_cache(&rope, -(d as f32), freq_factors, &mut cs);
            let (lb, new_lb) = if self.shape.is_local(il) {
                (self.base, new_base)
            } else {
                (0, 0)
            };
            // The first position that moves (held, and after the discarded range).
            let first = lb.max(n_keep + d);
            let mv = Move {
                slots: self.shape.layer_slots(il),
                kv_dim,
                from: first - lb,
                to: first - d - new_lb,
                count: n_past.saturating_sub(first),
            };
            let layer = self.offsets[il]..self.offsets[il] + mv.slots * kv_dim;
            match &mut self.store {
                KvStore::F16 { k, v } => shift_layer(
                    &mut k[layer.clone()],
                    &mut v[layer],
                    mv,
                    &rope,
                    &cs,
                    head_dim,
                ),
                KvStore::F32 { k, v } => shift_layer(
                    &mut k[layer.clone()],
                    &mut v[layer],
                    mv,
                    &rope,
                    &cs,
                    head_dim,
                ),
            }
        }
        self.base = new_base;
    }
}

fn store<T: KvElem>(
    kc: &mut [T],
    vc: &mut [T],
    at: usize,
    v_at: usize,
    slots: usize,
    k: &[f32],
    v: &[f32],
) {
    T::from_f32s(k, &mut kc[at..at + k.len()]);
    // V is stored transposed: convert through a stack tile, then scatter by column.
    const TILE: usize = 64;
    let mut tile = [T::from_f32(0.0); TILE];
    for (ci, chunk) in v.chunks(TILE).enumerate() {
        let t = &mut tile[..chunk.len()];
        T::from_f32s(chunk, t);
        for (j, &e) in t.iter().enumerate() {
            vc[v_at + (ci * TILE + j) * slots] = e;
        }
    }
}

/// A slide of a local layer's buffer: positions at slots `from..from + keep` move to slots
/// `0..keep` (K rows and the entries of every transposed V row of `slots`).
#[derive(Clone, Copy)]
struct Slide {
    slots: usize,
    kv_dim: usize,
    from: usize,
    keep: usize,
}

impl Slide {
    fn layer<T: Copy>(self, k: &mut [T], v: &mut [T]) {
        let (from, keep, kv_dim) = (self.from, self.keep, self.kv_dim);
        k.copy_within(from * kv_dim..(from + keep) * kv_dim, 0);
        for row in v.chunks_exact_mut(self.slots) {
            row.copy_within(from..from + keep, 0);
        }
    }
}

/// One layer of a cache: its first element in the K and V vectors, its slots, and the slot a
/// copy starts at.
#[derive(Clone, Copy)]
struct Span {
    at: usize,
    slots: usize,
    first: usize,
}

/// Copies `count` positions from `src`'s span (from its slot `first`) to `dst`'s: K rows and
/// the entries of every transposed V row.
fn copy_span<T: Copy>(
    k: &mut [T],
    v: &mut [T],
    dst: Span,
    sk: &[T],
    sv: &[T],
    src: Span,
    count: usize,
    kv_dim: usize,
) {
    let (d, s) = (dst.at + dst.first * kv_dim, src.at + src.first * kv_dim);
    k[d..d + count * kv_dim].copy_from_slice(&sk[s..s + count * kv_dim]);
    for c in 0..kv_dim {
        let d = dst.at + c * dst.slots + dst.first;
        let s = src.at + c * src.slots + src.first;
        v[d..d + count].copy_from_slice(&sv[s..s + count]);
    }
}

/// What a shift does to one layer: `count` positions move from slot `from` to slot `to`.
#[derive(Clone, Copy)]
struct Move {
    slots: usize,
    kv_dim: usize,
    from: usize,
    to: usize,
    count: usize,
}

/// [`KvCache::shift`] of one layer's keys `[slots][kv_dim]` and transposed values
/// `[kv_dim][slots]`: the moved keys are re-rotated with `cs`.
fn shift_layer<T: KvElem>(
    k: &mut [T],
    v: &mut [T],
    mv: Move,
    rope: &RopeParams,
    cs: &[(f32, f32)],
    head_dim: usize,
) {
    let Move {
        slots,
        kv_dim,
        from,
        to,
        count,
    } = mv;
    let mut head = vec![0.0f32; head_dim];
    // Values: each transposed row moves its positions down.
    for row in v.chunks_exact_mut(slots) {
        row.copy_within(from..from + count, to);
    }
    k.copy_within(from * kv_dim..(from + count) * kv_dim, to * kv_dim);
    for row in k[to * kv_dim..(to + count) * kv_dim].chunks_exact_mut(head_dim) {
        for (o, s) in head.iter_mut().zip(row.iter()) {
            *o = s.to_f32();
        }
        rope_apply(rope.style, rope.n_dims, &mut head, cs);
        for (o, s) in row.iter_mut().zip(&head) {
            *o = T::from_f32(*s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellm_runtime::ops::RopeStyle;

    const W: usize = 40;
    const NB: usize = 8;
    const N_CTX: usize = 1000;

    /// The context a room fits, for Gemma-3-270M's shape (15 sliding layers, 3 global): the
    /// largest whose cache fits. Bytes per token at the full context would suggest more than
    /// fits, the sliding layers' buffers being a fixed cost rather than a per-token one.
    #[test]
    fn largest_context_within_a_room_counts_sliding_layers() {
        let swa = Some(SlidingLayers {
            window: 512,
            pattern: 6,
        });
        let bytes = |n: usize| KvShape::new(18, n, 256, swa, 64, false).bytes(KvType::F16) as u64;
        for room in [0u64, 1 << 20, 20 << 20, 40 << 20, 100 << 20, 1 << 40] {
            let n = largest_context_within(32768, room, bytes);
            assert!(n == 0 || bytes(n) <= room, "room {room}: {n}");
            assert!(n == 32768 || bytes(n + 1) > room, "room {room}: {n}");
        }
        let room = 40u64 << 20;
        let per_token = (room / (bytes(32768) / 32768)) as usize;
        assert!(
            bytes(per_token) > room,
            "the per-token figure {per_token} would fit"
        );
        assert_eq!(largest_context_within(32768, room, bytes), 7898);
        assert_eq!(largest_context_within(10, 0, |_| 1), 0);
    }

    /// Layers 0 and 2 local, 1 and 3 global (pattern 2); one KV head of width 2.
    fn small(swa_full: bool) -> KvCache {
        let swa = SlidingLayers {
            window: W,
            pattern: 2,
        };
        KvCache::new(
            KvShape::new(4, N_CTX, 2, Some(swa), NB, swa_full),
            KvType::F32,
        )
    }

    /// What position `p` stores: V `[p, p + 0.5]` (K likewise; the shift re-rotates K).
    fn row(p: usize) -> [f32; 2] {
        [p as f32, p as f32 + 0.5]
    }

    /// Evaluates positions `from..to` in batches of `NB`, as the forward pass does: room for
    /// the batch, then its rows in every layer. Returns how many slides happened.
    fn fill(kv: &mut KvCache, from: usize, to: usize) -> usize {
        let mut slides = 0;
        let mut pos0 = from;
        while pos0 < to {
            let nb = NB.min(to - pos0);
            let base = kv.base;
            kv.make_room(pos0, nb);
            slides += usize::from(kv.base != base);
            for il in 0..4 {
                for p in pos0..pos0 + nb {
                    kv.store_row(il, p, &row(p), &row(p));
                }
            }
            pos0 += nb;
        }
        slides
    }

    /// The position layer `il` holds in `slot` (from its transposed V rows).
    fn v_at(kv: &KvCache, il: usize, slot: usize) -> f32 {
        let c = kv.layer_f32(il).unwrap();
        assert_eq!(c.v_t[c.n_ctx + slot], c.v_t[slot] + 0.5, "slot {slot}");
        c.v_t[slot]
    }

    /// Every local layer holds positions `[base, n_past)` in order, at least the last window's,
    /// and every global layer holds `0..n_past`; `at(p)` is what position `p` should hold.
    fn check_held(kv: &KvCache, n_past: usize, at: &dyn Fn(usize) -> usize) {
        assert!(
            kv.base == 0 || n_past - kv.base >= W - 1,
            "base {} at {n_past}",
            kv.base
        );
        for il in 0..4 {
            let b = kv.slot_base(il);
            assert_eq!(b, if il % 2 == 0 { kv.base } else { 0 });
            for p in b..n_past {
                assert_eq!(
                    v_at(kv, il, p - b),
                    at(p) as f32,
                    "layer {il}, position {p}"
                );
            }
        }
    }

    #[test]
    fn gemma_sizes() {
        let swa = SlidingLayers {
            window: 512,
            pattern: 6,
        };
        // 511 + 64 kept, a batch of 64, 512 of margin.
        assert_eq!(swa.slots(32768, 64), 1151);
        assert_eq!(swa.slots(1024, 64), 1024);
        let shape = KvShape::new(18, 32768, 256, Some(swa), 64, false);
        assert_eq!(shape.n_local(), 15);
        assert!(shape.slides());
        assert_eq!(
            shape.bytes(KvType::F16),
            2 * (15 * 1151 + 3 * 32768) * 256 * 2
        );
        let full = KvShape::new(18, 32768, 256, Some(swa), 64, true);
        assert!(!full.slides());
        assert_eq!(
            full.bytes(KvType::F16),
            KvCache::bytes_for(18, 32768, 256, KvType::F16)
        );
        // A batch as long as the context: nothing to slide.
        assert!(!KvShape::new(18, 1024, 256, Some(swa), 1024, false).slides());
    }

    #[test]
    fn slides_keep_the_window_and_positions_in_order() {
        let mut kv = small(false);
        let slots = kv.shape.local_slots;
        assert_eq!(slots, W - 1 + SWA_REUSE_MARGIN + NB + 256);
        assert_eq!(kv.bytes(), 2 * (2 * slots + 2 * N_CTX) * 2 * 4);
        let mut slides = 0;
        let mut n_past = 0;
        // Uneven steps, decode-like single positions among them.
        for step in [5, 8, 1, 1, 300, 1, 3, 200, 1, 1, 1, 450, 7, 1] {
            let before = kv.base;
            slides += fill(&mut kv, n_past, n_past + step);
            n_past += step;
            assert!(kv.base >= before);
            assert!(n_past - kv.base <= slots);
            check_held(&kv, n_past, &|p| p);
        }
        assert_eq!(n_past, 980);
        assert!(slides >= 2, "{slides} slides");
        // A slide keeps the window and the reuse margin, no more.
        assert!(kv.base > 0 && n_past - kv.base >= W - 1 + SWA_REUSE_MARGIN);

        let mut full = small(true);
        assert_eq!(fill(&mut full, 0, n_past), 0);
        assert_eq!(full.base, 0);
        check_held(&full, n_past, &|p| p);
    }

    #[test]
    fn a_prefix_is_usable_while_its_window_is_held() {
        let mut kv = small(false);
        fill(&mut kv, 0, 400);
        let base = kv.base;
        assert!(base > 0);
        assert!(kv.holds_prefix(400));
        assert!(kv.holds_prefix(base + W - 1));
        assert!(!kv.holds_prefix(base + W - 2));
        assert!(!kv.holds_prefix(10));
        kv.clear();
        assert!(kv.holds_prefix(10));
        assert!(small(true).holds_prefix(1));
    }

    #[test]
    fn copy_prefix_takes_the_held_positions_into_any_slot_count() {
        let mut src = small(false);
        fill(&mut src, 0, 700);
        assert!(src.base > 0);
        // Fewer slots (a state sized for batches of one): the last positions it can hold.
        let swa = src.shape.swa;
        let mut narrow = KvCache::new(KvShape::new(4, N_CTX, 2, swa, 1, false), KvType::F32);
        assert!(narrow.shape.local_slots < src.shape.local_slots);
        for n in [700, 690, src.base + W - 1] {
            narrow.copy_prefix_from(&src, n);
            assert!(narrow.base >= src.base && n - narrow.base <= narrow.shape.local_slots);
            check_held(&narrow, n, &|p| p);
            // And it goes on from there.
            fill(&mut narrow, n, n + 20);
            check_held(&narrow, n + 20, &|p| p);
        }
        // A full-context destination takes the source's base.
        let mut full = small(true);
        full.copy_prefix_from(&src, 700);
        assert_eq!(full.base, src.base);
        check_held(&full, 700, &|p| p);
        // And back.
        let mut back = small(false);
        back.copy_prefix_from(&narrow, narrow.base + W);
        check_held(&back, narrow.base + W, &|p| p);
    }

    /// Which positions a local layer holds after dropping `[n_keep, n_keep + d)` from
    /// `[base, n_past)`, computed on the set of positions, not the slots.
    fn held_after(base: usize, n_past: usize, n_keep: usize, d: usize) -> Vec<usize> {
        (base..n_past)
            .filter(|&p| p < n_keep || p >= n_keep + d)
            .map(|p| if p < n_keep { p } else { p - d })
            .collect()
    }

    /// The proof of [`KvCache::max_discard`]: for every discard it allows, every local layer
    /// holds the next query's window afterwards (as the set simulation says and as the slots
    /// hold), and for one more it would not.
    #[test]
    fn max_discard_is_exactly_what_keeps_the_window() {
        let rope = RopeParams {
            style: RopeStyle::Neox,
            n_dims: 2,
            freq_base: 10000.0,
            freq_scale: 1.0,
        };
        let mut capped = 0;
        for n_past in [60, 400, 700] {
            let mut probe = small(false);
            fill(&mut probe, 0, n_past);
            let base = probe.base;
            let mut keeps = vec![0, 1, 10, n_past - W, n_past - W + 1, n_past - 2, n_past];
            if base > 0 {
                keeps.extend([base - 1, base, base + 1, base + 50]);
            }
            for n_keep in keeps {
                let max = probe.max_discard(n_keep, n_past);
                capped += usize::from(max < n_past - n_keep);
                for d in 0..=n_past - n_keep {
                    let held = held_after(base, n_past, n_keep, d);
                    let n = n_past - d;
                    // Contiguous up to `n`, and the next query's window in it.
                    let in_order = held.iter().rev().zip((0..n).rev()).all(|(a, b)| *a == b);
                    let window_held = n - held.len() <= n.saturating_sub(W - 1);
                    assert_eq!(
                        d <= max,
                        in_order && window_held,
                        "base {base}, n_past {n_past}, n_keep {n_keep}, d {d}, max {max}"
                    );
                    if d > max || !(d == max || d % 37 == 0) {
                        continue;
                    }
                    let mut kv = small(false);
                    fill(&mut kv, 0, n_past);
                    kv.shift(n_keep, d, n_past, &|_| rope, None, 2);
                    assert_eq!(kv.base, held.first().copied().unwrap_or(n.min(kv.base)));
                    let at = |p: usize| if p < n_keep { p } else { p + d };
                    check_held(&kv, n, &at);
                }
            }
        }
        assert!(capped > 0);
    }
}
