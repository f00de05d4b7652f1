//! `matmul` over batches (the tiled gemm path where the kernel path has one, the per-row path
//! otherwise) against the scalar specification: for every kernel path this CPU (or QEMU)
//! supports and every int weight type, random weights and activations in odd shapes (rows not a
//! multiple of the tile, rows longer than a repack chunk, batches of 1 to 130 tokens), with 1
//! and 3 threads. Every output must match the scalar row dot of the scalar-quantized activation
//! row within 1e-5 of Σ|terms| (int sums are exact; only the order of float additions differs).

use edgellm_runtime::kernels::matmul::{act_buffer_bytes, matmul, WeightMatrix};
use edgellm_runtime::kernels::scalar;
use edgellm_runtime::kernels::threadpool::ThreadPool;
use edgellm_runtime::kernels::{KernelPath, Kernels};
use edgellm_runtime::quant::{
    self, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K,
    BlockQ8_0, BlockQ8_1, QK_K,
};
use edgellm_runtime::GgmlType;
use half::f16;

/// xorshift64*: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// A weight scale: mostly ordinary, sometimes zero or tiny.
    fn scale(&mut self) -> f16 {
        match self.next() % 16 {
            0 => f16::ZERO,
            1 => f16::from_bits(1 + (self.next() % 0x3ff) as u16),
            _ => f16::from_f32(self.unit() * 2.0),
        }
    }
}

/// `rows` rows of `cols` random weights of type `ty`, as the bytes of their blocks.
fn random_weights(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let nblocks = rows * cols / ty.block_size();
    let mut bytes = Vec::new();
    for _ in 0..nblocks {
        match ty {
            GgmlType::Q4_0 => {
                let d = rng.scale().to_bits().to_le_bytes();
                bytes.extend_from_slice(&d);
                bytes.extend((0..16).map(|_| rng.byte()));
            }
            GgmlType::Q4_1 => {
                let d = rng.scale().to_bits().to_le_bytes();
                let m = rng.scale().to_bits().to_le_bytes();
                bytes.extend_from_slice(&d);
                bytes.extend_from_slice(&m);
                bytes.extend((0..16).map(|_| rng.byte()));
            }
            GgmlType::Q8_0 => {
                let d = rng.scale().to_bits().to_le_bytes();
                bytes.extend_from_slice(&d);
                // any byte, -128 included
                bytes.extend((0..32).map(|_| rng.byte()));
            }
            GgmlType::Q5_0 => {
                let d = rng.scale().to_bits().to_le_bytes();
                bytes.extend_from_slice(&d);
                bytes.extend((0..4 + 16).map(|_| rng.byte()));
            }
            GgmlType::Q5_1 => {
                let d = rng.scale().to_bits().to_le_bytes();
                let m = rng.scale().to_bits().to_le_bytes();
                bytes.extend_from_slice(&d);
                bytes.extend_from_slice(&m);
                bytes.extend((0..4 + 16).map(|_| rng.byte()));
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let d = rng.scale().to_bits().to_le_bytes();
                let dmin = rng.scale().to_bits().to_le_bytes();
                bytes.extend_from_slice(&d);
                bytes.extend_from_slice(&dmin);
                let qh = if ty == GgmlType::Q5_K { 32 } else { 0 };
                bytes.extend((0..12 + qh + 128).map(|_| rng.byte()));
            }
            GgmlType::Q6_K => {
                // ql, qh, scales (any i8, -128 included), then d
                bytes.extend((0..128 + 64 + 16).map(|_| rng.byte()));
                bytes.extend_from_slice(&rng.scale().to_bits().to_le_bytes());
            }
            other => panic!("no random weights for {other}"),
        }
    }
    bytes
}

/// Activations: mostly in [-3, 3], with an occasional large value per row (so some blocks
/// quantize to ±127 and others to small quants) and all-zero blocks.
fn random_activations(rng: &mut Rng, n: usize, cols: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n * cols).map(|_| rng.unit() * 3.0).collect();
    for row in x.chunks_mut(cols) {
        let i = (rng.next() as usize) % cols;
        row[i] = rng.unit() * 200.0;
        if rng.next().is_multiple_of(4) {
            let b = (rng.next() as usize) % (cols / 32);
            row[b * 32..(b + 1) * 32].fill(0.0);
        }
        if rng.next().is_multiple_of(8) {
            // a row of small values: Q8_K's quants of ±127 everywhere (largest bsums)
            row.fill(1e-3);
        }
    }
    x
}

/// Σ over blocks of the absolute value of every term the dot adds: the scale of the rounding
/// error a different summation order may make.
fn abs_terms(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let f = |h: f16| f64::from(h.to_f32());
    match ty {
        GgmlType::Q4_0 => {
            let (w, a) = (blocks::<BlockQ4_0>(w), blocks::<BlockQ8_0>(a));
            w.iter()
                .zip(a)
                .map(|(x, y)| {
                    let s: i64 = (0..16)
                        .map(|j| {
                            let lo = i64::from(x.qs[j] & 15) - 8;
                            let hi = i64::from(x.qs[j] >> 4) - 8;
                            (lo * i64::from(y.qs[j])).abs() + (hi * i64::from(y.qs[j + 16])).abs()
                        })
                        .sum();
                    (f(x.d) * f(y.d)).abs() * s as f64
                })
                .sum()
        }
        GgmlType::Q4_1 => {
            let (w, a) = (blocks::<BlockQ4_1>(w), blocks::<BlockQ8_1>(a));
            w.iter()
                .zip(a)
                .map(|(x, y)| {
                    let s: i64 = (0..16)
                        .map(|j| {
                            i64::from(x.qs[j] & 15) * i64::from(y.qs[j]).abs()
                                + i64::from(x.qs[j] >> 4) * i64::from(y.qs[j + 16]).abs()
                        })
                        .sum();
                    (f(x.d) * f(y.d)).abs() * s as f64 + (f(x.m) * f(y.s)).abs()
                })
                .sum()
        }
        GgmlType::Q8_0 => {
            let (w, a) = (blocks::<BlockQ8_0>(w), blocks::<BlockQ8_0>(a));
            w.iter()
                .zip(a)
                .map(|(x, y)| {
                    let s: i64 = (0..32)
                        .map(|j| (i64::from(x.qs[j]) * i64::from(y.qs[j])).abs())
                        .sum();
                    (f(x.d) * f(y.d)).abs() * s as f64
                })
                .sum()
        }
        GgmlType::Q5_0 => {
            let (w, a) = (blocks::<BlockQ5_0>(w), blocks::<BlockQ8_0>(a));
            w.iter()
                .zip(a)
                .map(|(x, y)| {
                    let s: i64 = q5_levels(x.qs, x.qh)
                        .iter()
                        .zip(&y.qs)
                        .map(|(&q, &v)| ((q - 16) * i64::from(v)).abs())
                        .sum();
                    (f(x.d) * f(y.d)).abs() * s as f64
                })
                .sum()
        }
        GgmlType::Q5_1 => {
            let (w, a) = (blocks::<BlockQ5_1>(w), blocks::<BlockQ8_1>(a));
            w.iter()
                .zip(a)
                .map(|(x, y)| {
                    let s: i64 = q5_levels(x.qs, x.qh)
                        .iter()
                        .zip(&y.qs)
                        .map(|(&q, &v)| (q * i64::from(v)).abs())
                        .sum();
                    (f(x.d) * f(y.d)).abs() * s as f64 + (f(x.m) * f(y.s)).abs()
                })
                .sum()
        }
        // The K-quants' int sums are split differently by each kernel (per sub-block, per
        // lane): the bound is Σ|w|·|y| over the dequantized values, with Q4_K/Q5_K's scaled
        // levels and mins counted apart (zeroing the other's scale).
        GgmlType::Q6_K => {
            let w = blocks::<BlockQ6K>(w);
            abs_dot(&dequant(w, quant::dequantize_row_q6_k), a)
        }
        GgmlType::Q4_K => {
            let w = blocks::<BlockQ4K>(w);
            let scaled: Vec<_> = w
                .iter()
                .map(|x| BlockQ4K {
                    dmin: f16::ZERO,
                    ..*x
                })
                .collect();
            let mins: Vec<_> = w.iter().map(|x| BlockQ4K { d: f16::ZERO, ..*x }).collect();
            abs_dot(&dequant(&scaled, quant::dequantize_row_q4_k), a)
                + abs_dot(&dequant(&mins, quant::dequantize_row_q4_k), a)
        }
        GgmlType::Q5_K => {
            let w = blocks::<BlockQ5K>(w);
            let scaled: Vec<_> = w
                .iter()
                .map(|x| BlockQ5K {
                    dmin: f16::ZERO,
                    ..*x
                })
                .collect();
            let mins: Vec<_> = w.iter().map(|x| BlockQ5K { d: f16::ZERO, ..*x }).collect();
            abs_dot(&dequant(&scaled, quant::dequantize_row_q5_k), a)
                + abs_dot(&dequant(&mins, quant::dequantize_row_q5_k), a)
        }
        other => panic!("no terms for {other}"),
    }
}

/// K-quant weight blocks as f32 values.
fn dequant<B>(w: &[B], f: fn(&[B], &mut [f32])) -> Vec<f32> {
    let mut out = vec![0.0; w.len() * QK_K];
    f(w, &mut out);
    out
}

/// Σ |w_i|·|y_i| with `a` the bytes of a Q8_K activation row.
fn abs_dot(w: &[f32], a: &[u8]) -> f64 {
    let mut y = vec![0.0; w.len()];
    quant::dequantize_row_q8_k(blocks::<BlockQ8K>(a), &mut y);
    w.iter()
        .zip(&y)
        .map(|(&w, &y)| f64::from(w).abs() * f64::from(y).abs())
        .sum()
}

/// The 32 five-bit levels of a Q5 block (the scalar kernels' reading of `qs` and `qh`).
fn q5_levels(qs: [u8; 16], qh: [u8; 4]) -> [i64; 32] {
    let qh = u32::from_le_bytes(qh);
    std::array::from_fn(|j| {
        let nibble = if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 };
        i64::from(nibble) | i64::from((qh >> j) & 1) << 4
    })
}

fn blocks<B: quant::Block>(bytes: &[u8]) -> &[B] {
    quant::blocks::<B>(bytes).expect("test rows are whole, aligned blocks")
}

/// The scalar row dot of weight row bytes `w` with activation row bytes `a`.
fn scalar_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    match ty {
        GgmlType::Q4_0 => scalar::vec_dot_q4_0_q8_0(blocks(w), blocks(a)),
        GgmlType::Q4_1 => scalar::vec_dot_q4_1_q8_1(blocks(w), blocks(a)),
        GgmlType::Q8_0 => scalar::vec_dot_q8_0_q8_0(blocks(w), blocks(a)),
        GgmlType::Q5_0 => scalar::vec_dot_q5_0_q8_0(blocks(w), blocks(a)),
        GgmlType::Q5_1 => scalar::vec_dot_q5_1_q8_1(blocks(w), blocks(a)),
        GgmlType::Q4_K => scalar::vec_dot_q4_k_q8_k(blocks(w), blocks(a)),
        GgmlType::Q5_K => scalar::vec_dot_q5_k_q8_k(blocks(w), blocks(a)),
        GgmlType::Q6_K => scalar::vec_dot_q6_k_q8_k(blocks(w), blocks(a)),
        other => panic!("no scalar dot for {other}"),
    }
}

/// Every table this CPU can run, scalar first.
fn all_kernels() -> Vec<Kernels> {
    KernelPath::ALL
        .into_iter()
        .filter(|p| p.is_supported() && p.is_implemented())
        .map(|p| Kernels::new(p).unwrap_or_else(|e| panic!("{p} is supported but: {e}")))
        .collect()
}

/// `len` zero bytes starting at a 16-byte aligned address (blocks are cast from them, as from
/// a mapped file's aligned tensors).
struct AlignedBytes {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBytes {
    fn new(len: usize) -> AlignedBytes {
        let buf = vec![0u8; len + 16];
        let off = buf.as_ptr().align_offset(16);
        AlignedBytes { buf, off, len }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

fn check(ty: GgmlType, rows: usize, cols: usize, nbs: &[usize], seed: u64) {
    let mut rng = Rng(seed | 1);
    let wbytes = random_weights(&mut rng, ty, rows, cols);
    // Weight rows cast to blocks: keep them aligned as a mapped file's tensors are.
    let mut wstore = AlignedBytes::new(wbytes.len());
    let wdst = wstore.bytes_mut();
    wdst.copy_from_slice(&wbytes);
    let wdata: &[u8] = wdst;
    let w = WeightMatrix {
        ty,
        cols,
        rows,
        data: wdata,
    };
    let rb = w.row_bytes();
    let arb = Kernels::act_row_bytes(ty, cols).expect("int type");
    let act_ty = Kernels::act_type(ty).expect("int type");
    let scalar = Kernels::scalar();
    let max_nb = nbs.iter().copied().max().unwrap_or(1);
    let x_all = random_activations(&mut rng, max_nb, cols);

    // The reference: scalar-quantized activations, scalar row dots.
    let mut qstore = AlignedBytes::new(max_nb * arb);
    let qref = qstore.bytes_mut();
    for t in 0..max_nb {
        scalar.quantize_act(
            act_ty,
            &x_all[t * cols..(t + 1) * cols],
            &mut qref[t * arb..(t + 1) * arb],
        );
    }
    let qref: &[u8] = qref;

    for kernels in all_kernels() {
        for threads in [1, 3] {
            let pool = ThreadPool::new(threads).expect("thread pool");
            for &nb in nbs {
                let x = &x_all[..nb * cols];
                let need = act_buffer_bytes(ty, cols, nb).expect("int type");
                let mut astore = AlignedBytes::new(need);
                let act = astore.bytes_mut();
                let mut out = vec![f32::NAN; nb * rows];
                matmul(&pool, &kernels, &w, x, nb, act, &mut out).expect("matmul");
                for t in 0..nb {
                    let a = &qref[t * arb..(t + 1) * arb];
                    for r in 0..rows {
                        let wr = &wdata[r * rb..(r + 1) * rb];
                        let want = scalar_dot(ty, wr, a);
                        let got = out[t * rows + r];
                        let tol = 1e-5 * abs_terms(ty, wr, a) + 1e-30;
                        let err = f64::from((got - want).abs());
                        assert!(
                            err <= tol,
                            "{} {ty} rows {rows} cols {cols} nb {nb} threads {threads}: \
                             out[t {t}][r {r}] = {got}, scalar {want}, |diff| {err:e} > {tol:e}",
                            kernels.path()
                        );
                    }
                }
            }
        }
    }
}

const BATCHES: [usize; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 64, 129, 130];

#[test]
fn gemm_q4_0_matches_scalar() {
    check(GgmlType::Q4_0, 37, 96, &BATCHES, 1);
    check(GgmlType::Q4_0, 8, 32, &BATCHES, 2);
    check(GgmlType::Q4_0, 13, 32 * 70, &[1, 5, 66], 3);
}

#[test]
fn gemm_q4_1_matches_scalar() {
    check(GgmlType::Q4_1, 37, 96, &BATCHES, 4);
    check(GgmlType::Q4_1, 1, 64, &BATCHES, 5);
    check(GgmlType::Q4_1, 13, 32 * 70, &[1, 5, 66], 6);
}

#[test]
fn gemm_q8_0_matches_scalar() {
    check(GgmlType::Q8_0, 37, 96, &BATCHES, 7);
    check(GgmlType::Q8_0, 16, 576, &BATCHES, 8);
    check(GgmlType::Q8_0, 13, 32 * 70, &[1, 5, 66], 9);
}

#[test]
fn gemm_q5_0_matches_scalar() {
    check(GgmlType::Q5_0, 37, 96, &BATCHES, 10);
    check(GgmlType::Q5_0, 16, 576, &BATCHES, 11);
    check(GgmlType::Q5_0, 13, 32 * 70, &[1, 5, 66], 12);
}

#[test]
fn gemm_q5_1_matches_scalar() {
    check(GgmlType::Q5_1, 37, 96, &BATCHES, 13);
    check(GgmlType::Q5_1, 1, 64, &BATCHES, 14);
    check(GgmlType::Q5_1, 13, 32 * 70, &[1, 5, 66], 15);
}

#[test]
fn gemm_q4_k_matches_scalar() {
    check(GgmlType::Q4_K, 37, 256, &BATCHES, 16);
    check(GgmlType::Q4_K, 16, 1536, &BATCHES, 17);
    check(GgmlType::Q4_K, 13, 256 * 10, &[1, 5, 66], 18);
}

#[test]
fn gemm_q5_k_matches_scalar() {
    check(GgmlType::Q5_K, 37, 256, &BATCHES, 19);
    check(GgmlType::Q5_K, 13, 256 * 10, &[1, 5, 66], 20);
}

#[test]
fn gemm_q6_k_matches_scalar() {
    check(GgmlType::Q6_K, 37, 512, &BATCHES, 21);
    check(GgmlType::Q6_K, 16, 1536, &BATCHES, 22);
    check(GgmlType::Q6_K, 13, 256 * 10, &[1, 5, 66], 23);
}
