//! `matmul`: weights × a batch of activation rows, split over the thread pool by output rows.
//! One activation quantization per call into a caller-owned buffer, then each worker walks its
//! rows with the weight row outermost so a row is read from memory once for the whole batch.

use super::threadpool::{split_range, ThreadPool};
use super::{KernelError, Kernels};
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

/// Output slice shared by workers that write disjoint elements.
pub(super) struct DisjointOut {
    ptr: *mut f32,
    len: usize,
}
// SAFETY: workers write disjoint indices (each owns a range of output rows), and the owner of
// the slice is blocked in `ThreadPool::run` until they are done.
unsafe impl Sync for DisjointOut {}

impl DisjointOut {
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
}

/// Bytes of the activation buffer `matmul` needs for `nb` rows of `cols` for weights of `ty`.
pub fn act_buffer_bytes(ty: GgmlType, cols: usize, nb: usize) -> Result<usize, KernelError> {
    Ok(Kernels::act_row_bytes(ty, cols)? * nb)
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
    let act_type = Kernels::act_type(w.ty)?;
    let arb = Kernels::act_row_bytes(w.ty, w.cols)?;
    let dot = kernels.row_dot(w.ty)?;
    let cols = w.cols;
    let rows = w.rows;
    debug_assert!(x.len() >= nb * cols && act.len() >= nb * arb && out.len() >= nb * rows);

    for (t, dst) in act.chunks_exact_mut(arb).take(nb).enumerate() {
        kernels.quantize_act(act_type, &x[t * cols..(t + 1) * cols], dst);
    }
    let act: &[u8] = act;
    let shared = DisjointOut {
        ptr: out.as_mut_ptr(),
        len: nb * rows,
    };
    let shared = &shared;
    #[cfg(target_arch = "x86_64")]
    if nb > 1 {
        if let Some(isa) = super::gemm::GemmIsa::for_path(kernels.path(), w.ty) {
            if super::gemm::gemm(pool, isa, w, act, arb, nb, shared) {
                return Ok(());
            }
        }
    }
    let rb = w.row_bytes();
    if rb == 0 || arb == 0 {
        return Err(KernelError::UnsupportedType(w.ty));
    }
    let dot2 = kernels.row_dot2(w.ty);
    pool.run(&|index, n_threads| {
        let (r0, r1) = split_range(rows, index, n_threads, 4);
        let slab = &w.data[r0 * rb..r1 * rb];
        // Pairs of rows through the two-row kernel where the path has one, then the rest one
        // by one; the weight rows outermost so they are read once for the whole batch.
        let mut r = r0;
        if let Some(dot2) = dot2 {
            for pair in slab.chunks_exact(2 * rb) {
                let (w0, w1) = pair.split_at(rb);
                for (t, a) in act.chunks_exact(arb).take(nb).enumerate() {
                    let [v0, v1] = dot2(w0, w1, a);
                    // SAFETY: rows `r` and `r + 1` belong to this worker alone, so these
                    // elements are written by no other thread.
                    unsafe {
                        shared.write(t * rows + r, v0);
                        shared.write(t * rows + r + 1, v1);
                    }
                }
                r += 2;
            }
        }
        for wrow in slab[(r - r0) * rb..].chunks_exact(rb) {
            for (t, a) in act.chunks_exact(arb).take(nb).enumerate() {
                let v = dot(wrow, a);
                // SAFETY: row `r` belongs to this worker alone, so `t * rows + r` is written by
                // no other thread.
                unsafe { shared.write(t * rows + r, v) };
            }
            r += 1;
        }
    });
    Ok(())
}
