//! `matmul`: weights × a batch of activation rows, split over the thread pool by output rows.
//! One activation quantization per call into a caller-owned buffer, then each worker walks its
//! rows with the weight row outermost so a row is read from memory once for the whole batch.
//!
//! Products that read the same input share that quantization and one dispatch of the pool:
//! [`matmul_many`] (a layer's q, k and v projections) splits the rows of all its matrices
//! among the workers as if they were one matrix, and [`matmul_gated`] (the FFN's gate and up)
//! gives each worker the same rows of both and lets it apply the gated activation to them at
//! once. In decode, where a token's matmuls take microseconds, each dispatch saved is a wait
//! saved.

use super::threadpool::{split_range, ThreadPool};
use super::{KernelError, Kernels, MatrixRows, PreparedDots, RowDot, RowDot2};
use crate::ggml_type::GgmlType;

/// A row-major weight matrix borrowed from the map: `rows` rows of `cols` elements of `ty`.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub ty: GgmlType,
    pub cols: usize,
    pub rows: usize,
    /// `rows * row_bytes` bytes.
    pub data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols as u64).unwrap_or(0) as usize
    }

    /// Row `r` as bytes.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// One matrix of a [`matmul_many`] product and where its `nb * w.rows` results go.
pub struct Projection<'w, 'o> {
    pub w: WeightMatrix<'w>,
    pub out: &'o mut [f32],
}

/// The most matrices one [`matmul_many`] call takes.
pub const MAX_PROJECTIONS: usize = 4;

/// Output slice shared by workers that write disjoint elements.
pub(super) struct DisjointOut {
    ptr: *mut f32,
    len: usize,
}
// SAFETY: workers write disjoint indices (each owns a range of output rows), and the owner of
// the slice is blocked in `ThreadPool::run` until they are done.
unsafe impl Sync for DisjointOut {}

impl DisjointOut {
    fn new(out: &mut [f32]) -> DisjointOut {
        DisjointOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// # Safety
    /// No other thread may read or write index `i` during the job.
    #[inline(always)]
    pub(super) unsafe fn write(&self, i: usize, v: f32) {
        assert!(i < self.len);
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe { *self.ptr.add(i) = v }
    }

    /// Adds `v` to element `i`.
    ///
    /// # Safety
    /// No other thread may read or write index `i` during the job.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    pub(super) unsafe fn add(&self, i: usize, v: f32) {
        assert!(i < self.len);
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe { *self.ptr.add(i) += v }
    }

    /// Elements `start..start + len` as a slice.
    ///
    /// # Safety
    /// No other thread may read or write those elements while the slice lives.
    #[allow(clippy::mut_from_ref)] // the disjointness contract is what makes this sound
    #[inline(always)]
    unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len);
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Bytes of the activation buffer `matmul` needs for `nb` rows of `cols` for weights of `ty`.
pub fn act_buffer_bytes(ty: GgmlType, cols: usize, nb: usize) -> Result<usize, KernelError> {
    Ok(act_scratch_bytes(Kernels::act_row_bytes(ty, cols)?, nb))
}

/// Bytes of activation scratch for `nb` quantized rows of `act_row_bytes` each, with room for
/// a one-token row's prepared form ([`PreparedDots`]: at most twice the row, plus a group of
/// padding and an alignment of 64).
pub fn act_scratch_bytes(act_row_bytes: usize, nb: usize) -> usize {
    nb * act_row_bytes + 2 * act_row_bytes + 512
}

/// Batches at least this long quantize their activation rows on the pool.
const PARALLEL_QUANTIZE_ROWS: usize = 4;

/// Quantizes `nb` rows of `cols` of `x` into `act` for weights of type `ty`; returns the
/// quantized row length.
fn quantize_rows(
    pool: &ThreadPool,
    kernels: &Kernels,
    ty: GgmlType,
    cols: usize,
    x: &[f32],
    nb: usize,
    act: &mut [u8],
) -> Result<usize, KernelError> {
    let act_type = Kernels::act_type(ty)?;
    let arb = Kernels::act_row_bytes(ty, cols)?;
    if arb == 0 || x.len() < nb * cols || act.len() < nb * arb {
        return Err(KernelError::UnsupportedType(ty));
    }
    let act = &mut act[..nb * arb];
    if nb >= PARALLEL_QUANTIZE_ROWS && pool.n_threads() > 1 {
        pool.for_each_row::<u8, ()>(act, arb, &mut [], 0, &|t, dst, _| {
            kernels.quantize_act(act_type, &x[t * cols..(t + 1) * cols], dst);
        });
    } else {
        for (t, dst) in act.chunks_exact_mut(arb).enumerate() {
            kernels.quantize_act(act_type, &x[t * cols..(t + 1) * cols], dst);
        }
    }
    Ok(arb)
}

/// `out[t * w.rows + r] = Σ_k w[r][k] · x[t * w.cols + k]` for `t < nb`, `r < w.rows`.
///
/// `x` holds `nb` rows of `w.cols` f32; `act` is scratch of at least
/// [`act_buffer_bytes`]; `out` holds `nb * w.rows` f32.
pub fn matmul(
    pool: &ThreadPool,
    kernels: &Kernels,
    w: &WeightMatrix<'_>,
    x: &[f32],
    nb: usize,
    act: &mut [u8],
    out: &mut [f32],
) -> Result<(), KernelError> {
    matmul_many(pool, kernels, &mut [Projection { w: *w, out }], x, nb, act)
}

/// [`matmul`] of every projection's matrix with the same input `x`: the activations are
/// quantized once when the matrices' types pair with the same activation type (otherwise each
/// gets its own [`matmul`]), and a batch of one runs as one dispatch over all their rows.
/// The results equal separate [`matmul`] calls' bit for bit.
pub fn matmul_many(
    pool: &ThreadPool,
    kernels: &Kernels,
    projections: &mut [Projection<'_, '_>],
    x: &[f32],
    nb: usize,
    act: &mut [u8],
) -> Result<(), KernelError> {
    let Some(first) = projections.first() else {
        return Ok(());
    };
    let (ty0, cols) = (first.w.ty, first.w.cols);
    let act_type = Kernels::act_type(ty0)?;
    let mut shared = true;
    for p in projections.iter() {
        if p.w.cols != cols || p.out.len() < nb * p.w.rows {
            return Err(KernelError::Shape);
        }
        shared &= Kernels::act_type(p.w.ty)? == act_type;
    }
    if !shared || projections.len() > MAX_PROJECTIONS {
        for p in projections.iter_mut() {
            matmul_many(
                pool,
                kernels,
                &mut [Projection { w: p.w, out: p.out }],
                x,
                nb,
                act,
            )?;
        }
        return Ok(());
    }
    let arb = quantize_rows(pool, kernels, ty0, cols, x, nb, act)?;
    let (act, prepared) = prepare_act(kernels, projections.iter().map(|p| p.w.ty), act, arb, nb);
    let left = gemm_batches(pool, kernels, projections, act, arb, nb);
    let mut segs: [Option<Segment<'_>>; MAX_PROJECTIONS] = [None, None, None, None];
    let mut total = 0;
    for (seg, p) in segs.iter_mut().zip(&mut projections[..left]) {
        let s = Segment::new(kernels, &p.w, p.out, nb, prepared)?;
        total += p.w.rows;
        *seg = Some(s);
    }
    if total == 0 {
        return Ok(());
    }
    let segs = &segs;
    pool.run(&|index, n_threads| {
        // Each worker takes its share of every matrix, not of their concatenation: the
        // matrices' rows cost differently (a Q8_0 value matrix beside Q5_0 query and key
        // ones), and equal shares of each keep the workers' loads equal.
        for seg in segs.iter().flatten() {
            let (lo, hi) = split_range(seg.w.rows, index, n_threads, 4);
            if lo < hi {
                // SAFETY: the ranges `split_range` gives the workers are disjoint, so the
                // segment's rows `lo..hi` are written by no other thread.
                unsafe { seg.rows(lo, hi, act, arb, nb) };
            }
        }
    });
    Ok(())
}

/// `hg = glu(gate · x, up · x)` for a gated feed-forward: `glu(g, u)` overwrites `g` with the
/// activation of `g` times `u`, elementwise (`hu` receives `up · x`). One quantization of `x`;
/// a batch without a tile gemm runs as one dispatch in which each worker computes the same rows
/// of both matrices and applies `glu` to them.
#[allow(clippy::too_many_arguments)]
pub fn matmul_gated(
    pool: &ThreadPool,
    kernels: &Kernels,
    gate: &WeightMatrix<'_>,
    up: &WeightMatrix<'_>,
    x: &[f32],
    nb: usize,
    act: &mut [u8],
    hg: &mut [f32],
    hu: &mut [f32],
    glu: fn(&mut [f32], &[f32]),
) -> Result<(), KernelError> {
    let n = gate.rows;
    if up.rows != n || up.cols != gate.cols || hg.len() < nb * n || hu.len() < nb * n {
        return Err(KernelError::Shape);
    }
    let gemm_covers = |ty: GgmlType| {
        #[cfg(target_arch = "x86_64")]
        {
            nb > 1 && super::gemm::GemmIsa::for_path(kernels.path(), ty).is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = ty;
            false
        }
    };
    if Kernels::act_type(gate.ty)? != Kernels::act_type(up.ty)?
        || gemm_covers(gate.ty)
        || gemm_covers(up.ty)
    {
        matmul_many(
            pool,
            kernels,
            &mut [
                Projection { w: *gate, out: hg },
                Projection { w: *up, out: hu },
            ],
            x,
            nb,
            act,
        )?;
        let (hg, hu) = (&mut hg[..nb * n], &hu[..nb * n]);
        if nb >= PARALLEL_QUANTIZE_ROWS && pool.n_threads() > 1 {
            pool.for_each_row::<f32, ()>(hg, n, &mut [], 0, &|t, g, _| {
                glu(g, &hu[t * n..(t + 1) * n]);
            });
        } else {
            glu(hg, hu);
        }
        return Ok(());
    }
    let arb = quantize_rows(pool, kernels, gate.ty, gate.cols, x, nb, act)?;
    let (act, prepared) = prepare_act(kernels, [gate.ty, up.ty].into_iter(), act, arb, nb);
    let g = Segment::new(kernels, gate, hg, nb, prepared)?;
    let u = Segment::new(kernels, up, hu, nb, prepared)?;
    let (g, u) = (&g, &u);
    pool.run(&|index, n_threads| {
        let (r0, r1) = split_range(n, index, n_threads, 4);
        if r0 >= r1 {
            return;
        }
        // SAFETY: rows `r0..r1` of both outputs belong to this worker alone, for every token,
        // so no other thread reads or writes the elements touched or sliced here.
        unsafe {
            g.rows(r0, r1, act, arb, nb);
            u.rows(r0, r1, act, arb, nb);
            for t in 0..nb {
                glu(
                    g.out.slice_mut(t * n + r0, r1 - r0),
                    u.out.slice_mut(t * n + r0, r1 - r0),
                );
            }
        }
    });
    Ok(())
}

/// The prepared form of a one-token activation row ([`PreparedDots`]), for the matrices of
/// one weight type.
#[derive(Clone, Copy)]
struct PreparedAct<'a> {
    ty: GgmlType,
    row: &'a [u8],
    dots: PreparedDots,
}

/// For one token, when the path has [`PreparedDots`] for one of `types` (the first such type),
/// writes the prepared form of the quantized row after it in `act` (64-byte aligned) if `act`
/// has the room. Returns the quantized rows (`nb` of `arb` bytes) and the prepared row, which
/// the matrices of its type read in their place (alone or in a combined dispatch alike, so the
/// sums do not depend on what else is dispatched).
fn prepare_act<'a>(
    kernels: &Kernels,
    mut types: impl Iterator<Item = GgmlType>,
    act: &'a mut [u8],
    arb: usize,
    nb: usize,
) -> (&'a [u8], Option<PreparedAct<'a>>) {
    let prepared = types
        .find_map(|ty| kernels.prepared_dots(ty).map(|p| (ty, p)))
        .filter(|_| nb == 1);
    if let Some((ty, dots)) = prepared {
        let bytes = (dots.bytes)(arb);
        let start = arb + act[arb..].as_ptr().align_offset(64);
        if start + bytes <= act.len() {
            let (quantized, rest) = act.split_at_mut(start);
            let row = &mut rest[..bytes];
            (dots.prepare)(&quantized[..arb], row);
            return (&quantized[..arb], Some(PreparedAct { ty, row, dots }));
        }
    }
    (&act[..nb * arb], None)
}

/// Runs the x86 tile gemm on the projections it covers when `nb > 1`, moving the others to
/// the front of `projections`; returns how many are left for the row dots.
#[cfg(target_arch = "x86_64")]
fn gemm_batches(
    pool: &ThreadPool,
    kernels: &Kernels,
    projections: &mut [Projection<'_, '_>],
    act: &[u8],
    arb: usize,
    nb: usize,
) -> usize {
    if nb <= 1 {
        return projections.len();
    }
    let mut left = 0;
    for i in 0..projections.len() {
        let p = &mut projections[i];
        let done = super::gemm::GemmIsa::for_path(kernels.path(), p.w.ty).is_some_and(|isa| {
            super::gemm::gemm(pool, isa, &p.w, act, arb, nb, &DisjointOut::new(p.out))
        });
        if !done {
            projections.swap(left, i);
            left += 1;
        }
    }
    left
}

/// Without a tile gemm every projection goes to the row dots.
#[cfg(not(target_arch = "x86_64"))]
fn gemm_batches(
    _pool: &ThreadPool,
    _kernels: &Kernels,
    projections: &mut [Projection<'_, '_>],
    _act: &[u8],
    _arb: usize,
    _nb: usize,
) -> usize {
    projections.len()
}

/// One matrix of a combined dispatch.
struct Segment<'w> {
    w: WeightMatrix<'w>,
    out: DisjointOut,
    rb: usize,
    dot: RowDot,
    dot2: Option<RowDot2>,
    /// For the first tokens of the batch, where the path sums them differently
    /// ([`Kernels::row_dot_batch`]): the dot and how many tokens it takes.
    dot_batch: Option<(RowDot, usize)>,
    /// For one token, the prepared activation row and the kernel that runs the product's rows
    /// on it in place of `dot` and `dot2`.
    prepared_row: Option<(&'w [u8], MatrixRows)>,
    /// For one token without a prepared row, the kernel that runs the product's rows on the
    /// plain activation row in place of `dot` and `dot2`.
    matrix_rows: Option<MatrixRows>,
}

impl<'w> Segment<'w> {
    fn new(
        kernels: &Kernels,
        w: &WeightMatrix<'w>,
        out: &mut [f32],
        nb: usize,
        prepared: Option<PreparedAct<'w>>,
    ) -> Result<Segment<'w>, KernelError> {
        let rb = w.row_bytes();
        if rb == 0 || w.data.len() < w.rows * rb {
            return Err(KernelError::UnsupportedType(w.ty));
        }
        let prepared_row = prepared
            .filter(|p| p.ty == w.ty)
            .map(|p| (p.row, p.dots.rows));
        Ok(Segment {
            prepared_row,
            w: *w,
            out: DisjointOut::new(out),
            rb,
            dot: kernels.row_dot(w.ty)?,
            dot2: kernels.row_dot2(w.ty),
            dot_batch: kernels.row_dot_batch(w.ty, w.rows, nb),
            matrix_rows: kernels.matrix_rows(w.ty),
        })
    }

    /// Rows `r0..r1` of the product for all `nb` activation rows, the weight rows outermost so
    /// each is read once for the whole batch. Where the path has a two-row kernel, row `r0 + i`
    /// goes with row `mid + i` of the range's second half: two long sequential streams through
    /// memory, which the hardware prefetchers follow (adjacent pairs would make a new pair of
    /// short streams every two rows, and measured slower than one row at a time).
    ///
    /// # Safety
    /// No other thread may touch output rows `r0..r1` of this segment during the call.
    unsafe fn rows(&self, r0: usize, r1: usize, act: &[u8], arb: usize, nb: usize) {
        if nb == 1 {
            let rb = self.rb;
            if let Some((row, rows_dot)) = self.prepared_row {
                // SAFETY: output rows `r0..r1` belong to this call alone (the caller's contract).
                let out = unsafe { self.out.slice_mut(r0, r1 - r0) };
                return rows_dot(&self.w.data[r0 * rb..r1 * rb], rb, row, out);
            }
            if let Some(rows_dot) = self.matrix_rows {
                // SAFETY: as above.
                let out = unsafe { self.out.slice_mut(r0, r1 - r0) };
                return rows_dot(&self.w.data[r0 * rb..r1 * rb], rb, &act[..arb], out);
            }
            // SAFETY: the caller's contract.
            return unsafe { self.rows_one_token(r0, r1, &act[..arb]) };
        }
        let (rb, rows) = (self.rb, self.w.rows);
        let row = |r: usize| &self.w.data[r * rb..(r + 1) * rb];
        let mut next = r0;
        if let Some((batch_dot, n_batch_dot)) = self.dot_batch {
            for r in r0..r1 {
                let wrow = row(r);
                for (t, a) in act.chunks_exact(arb).take(nb).enumerate() {
                    let dot = if t < n_batch_dot { batch_dot } else { self.dot };
                    // SAFETY: row `r` is in `r0..r1` (the caller's contract).
                    unsafe { self.out.write(t * rows + r, dot(wrow, a)) };
                }
            }
            return;
        }
        if let Some(dot2) = self.dot2 {
            let half = (r1 - r0) / 2;
            for i in 0..half {
                let (ra, rb_) = (r0 + i, r0 + half + i);
                let (wa, wb) = (row(ra), row(rb_));
                for (t, a) in act.chunks_exact(arb).take(nb).enumerate() {
                    let [va, vb] = dot2(wa, wb, a);
                    // SAFETY: rows `ra` and `rb_` are in `r0..r1` (the caller's contract).
                    unsafe {
                        self.out.write(t * rows + ra, va);
                        self.out.write(t * rows + rb_, vb);
                    }
                }
            }
            next = r0 + 2 * half;
        }
        for r in next..r1 {
            let wrow = row(r);
            for (t, a) in act.chunks_exact(arb).take(nb).enumerate() {
                // SAFETY: row `r` is in `r0..r1` (the caller's contract).
                unsafe { self.out.write(t * rows + r, (self.dot)(wrow, a)) };
            }
        }
    }
}

impl Segment<'_> {
    /// [`Segment::rows`] for one activation row (a decode step): the output rows as one slice
    /// and the weight rows as two chunk iterators, so the loop around the kernel calls holds no
    /// index arithmetic or bounds checks.
    ///
    /// # Safety
    /// As [`Segment::rows`].
    unsafe fn rows_one_token(&self, r0: usize, r1: usize, act: &[u8]) {
        let rb = self.rb;
        let data = &self.w.data[r0 * rb..r1 * rb];
        // SAFETY: output rows `r0..r1` belong to this call alone (the caller's contract).
        let out = unsafe { self.out.slice_mut(r0, r1 - r0) };
        let mut done = 0;
        if let Some(dot2) = self.dot2 {
            let half = (r1 - r0) / 2;
            let (wa, wb) = data[..2 * half * rb].split_at(half * rb);
            let (oa, ob) = out[..2 * half].split_at_mut(half);
            let pairs = wa.chunks_exact(rb).zip(wb.chunks_exact(rb));
            for ((a, b), (va, vb)) in pairs.zip(oa.iter_mut().zip(ob)) {
                [*va, *vb] = dot2(a, b, act);
            }
            done = 2 * half;
        }
        for (w, v) in data[done * rb..].chunks_exact(rb).zip(&mut out[done..]) {
            *v = (self.dot)(w, act);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::KernelPath;
    use crate::quant;

    /// Deterministic values in [-1, 1) with an occasional large one.
    fn values(seed: u32, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
                if i % 97 == 0 {
                    v * 40.0
                } else {
                    v
                }
            })
            .collect()
    }

    fn weights(ty: GgmlType, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut bytes = vec![0u8; rows * rb];
        for (r, dst) in bytes.chunks_exact_mut(rb).enumerate() {
            quant::quantize_row(ty, &values(seed + r as u32, cols), dst).unwrap();
        }
        bytes
    }

    fn paths() -> Vec<Kernels> {
        KernelPath::ALL
            .into_iter()
            .filter(|p| p.is_supported() && p.is_implemented())
            .map(|p| Kernels::new(p).unwrap())
            .collect()
    }

    /// `matmul_many` and `matmul_gated` give exactly the bits of separate `matmul` calls, for
    /// shared and unshared activation types, batches of 1 (one dispatch) and more, 1-3 threads.
    #[test]
    fn fused_products_equal_separate_matmuls() {
        let cols = 96;
        let combos: [[(GgmlType, usize); 3]; 3] = [
            [
                (GgmlType::Q4_0, 40),
                (GgmlType::Q4_0, 13),
                (GgmlType::Q8_0, 13),
            ],
            [
                (GgmlType::Q4_1, 24),
                (GgmlType::Q4_1, 7),
                (GgmlType::Q4_1, 7),
            ],
            [
                (GgmlType::Q4_1, 16),
                (GgmlType::Q8_0, 9),
                (GgmlType::F32, 5),
            ],
        ];
        for kernels in paths() {
            for threads in 1..=3 {
                let pool = ThreadPool::new(threads).unwrap();
                for (ci, combo) in combos.iter().enumerate() {
                    let data: Vec<Vec<u8>> = combo
                        .iter()
                        .enumerate()
                        .map(|(i, &(ty, rows))| weights(ty, rows, cols, 1000 * i as u32 + 7))
                        .collect();
                    let ws: Vec<WeightMatrix<'_>> = combo
                        .iter()
                        .zip(&data)
                        .map(|(&(ty, rows), d)| WeightMatrix {
                            ty,
                            cols,
                            rows,
                            data: d,
                        })
                        .collect();
                    for nb in [1, 2, 5] {
                        let x = values(ci as u32 * 31 + nb as u32, nb * cols);
                        let mut act = vec![0u8; act_buffer_bytes(GgmlType::F32, cols, nb).unwrap()];
                        let want: Vec<Vec<f32>> = ws
                            .iter()
                            .map(|w| {
                                let mut out = vec![0.0; nb * w.rows];
                                matmul(&pool, &kernels, w, &x, nb, &mut act, &mut out).unwrap();
                                out
                            })
                            .collect();
                        let mut outs: Vec<Vec<f32>> =
                            ws.iter().map(|w| vec![f32::NAN; nb * w.rows]).collect();
                        let [o0, o1, o2] = &mut outs[..] else {
                            unreachable!()
                        };
                        let mut projections = [
                            Projection { w: ws[0], out: o0 },
                            Projection { w: ws[1], out: o1 },
                            Projection { w: ws[2], out: o2 },
                        ];
                        matmul_many(&pool, &kernels, &mut projections, &x, nb, &mut act).unwrap();
                        for (i, (got, want)) in outs.iter().zip(&want).enumerate() {
                            let (got, want): (Vec<u32>, Vec<u32>) = (
                                got.iter().map(|v| v.to_bits()).collect(),
                                want.iter().map(|v| v.to_bits()).collect(),
                            );
                            assert_eq!(
                                got,
                                want,
                                "{} t{threads} combo {ci} matrix {i} nb {nb}",
                                kernels.path()
                            );
                        }
                        // Gated: the second and third matrices when their shapes agree.
                        if ws[1].rows == ws[2].rows {
                            let n = ws[1].rows;
                            let (mut hg, mut hu) = (vec![f32::NAN; nb * n], vec![f32::NAN; nb * n]);
                            matmul_gated(
                                &pool,
                                &kernels,
                                &ws[1],
                                &ws[2],
                                &x,
                                nb,
                                &mut act,
                                &mut hg,
                                &mut hu,
                                crate::ops::swiglu,
                            )
                            .unwrap();
                            let mut g = want[1].clone();
                            crate::ops::swiglu(&mut g, &want[2]);
                            assert_eq!(
                                hg.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                "{} t{threads} gated combo {ci} nb {nb}",
                                kernels.path()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let pool = ThreadPool::new(1).unwrap();
        let kernels = Kernels::scalar();
        let d = weights(GgmlType::Q8_0, 4, 64, 1);
        let w = WeightMatrix {
            ty: GgmlType::Q8_0,
            cols: 64,
            rows: 4,
            data: &d,
        };
        let x = values(3, 64);
        let mut act = vec![0u8; 256];
        let mut short = vec![0.0; 3];
        assert!(matches!(
            matmul(&pool, &kernels, &w, &x, 1, &mut act, &mut short),
            Err(KernelError::Shape)
        ));
        let mut out = vec![0.0; 4];
        assert!(matmul(&pool, &kernels, &w, &x[..32], 1, &mut act, &mut out).is_err());
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// Weight bytes per second of one-token matmuls (decode's matrix-vector products), the
    /// figure to hold against the memory's read bandwidth: is a kernel bound by memory or by
    /// its instructions? A benchmark, not a test:
    /// `cargo test --release -p edgellm-runtime --lib bench_matvec -- --ignored --nocapture`,
    /// with `BENCH_TYPE` (q8_0 (default), q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k; `BENCH_COLS`
    /// must then be a multiple of 256), `BENCH_ROWS` (default 262144 rows of 640:
    /// Gemma-3-270M's output matrix, larger than any cache; 2048 fits in L2) and
    /// `BENCH_THREADS` (default 1).
    #[test]
    #[ignore]
    fn bench_matvec_weight_bandwidth() {
        let ty = match std::env::var("BENCH_TYPE").as_deref() {
            Ok("q4_0") => GgmlType::Q4_0,
            Ok("q5_0") => GgmlType::Q5_0,
            Ok("q5_1") => GgmlType::Q5_1,
            Ok("q4_1") => GgmlType::Q4_1,
            Ok("q4_k") => GgmlType::Q4_K,
            Ok("q5_k") => GgmlType::Q5_K,
            Ok("q6_k") => GgmlType::Q6_K,
            _ => GgmlType::Q8_0,
        };
        let rows: usize = std::env::var("BENCH_ROWS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(262_144);
        let cols: usize = std::env::var("BENCH_COLS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(640);
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut data = vec![0u8; rows * rb];
        let src: Vec<f32> = (0..cols)
            .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
            .collect();
        for dst in data.chunks_exact_mut(rb) {
            crate::quant::quantize_row(ty, &src, dst).unwrap();
        }
        let w = WeightMatrix {
            ty,
            cols,
            rows,
            data: &data,
        };
        let kern = Kernels::from_env().unwrap();
        let threads: usize = std::env::var("BENCH_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let pool = ThreadPool::new(threads).unwrap();
        let mut act = vec![0u8; act_buffer_bytes(ty, cols, 1).unwrap()];
        let mut out = vec![0f32; rows];
        // What one core reads of the same buffer with nothing else to do (the ceiling).
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let words: u64 = data
                .chunks_exact(64)
                .map(|c| u64::from_le_bytes(c[..8].try_into().unwrap()) ^ u64::from(c[63]))
                .fold(0, u64::wrapping_add);
            let dt = t.elapsed().as_secs_f64();
            std::hint::black_box(words);
            eprintln!(
                "read every cache line: {:.1} GB/s",
                data.len() as f64 / dt / 1e9
            );
        }
        for _ in 0..3 {
            let t = std::time::Instant::now();
            for _ in 0..(20 * 262_144 / rows) {
                matmul(&pool, &kern, &w, &src, 1, &mut act, &mut out).unwrap();
            }
            let dt = t.elapsed().as_secs_f64() / (20 * 262_144 / rows) as f64;
            eprintln!(
                "{ty:?} {threads}t: {:.2} ms, {:.1} GB/s",
                dt * 1e3,
                data.len() as f64 / dt / 1e9
            );
        }
    }
}
