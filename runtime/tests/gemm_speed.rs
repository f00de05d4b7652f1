//! Timing of `matmul` over a prompt batch for SmolLM2-135M's layer shapes (ignored: run with
//! `cargo test --release -p edgellm-runtime --test gemm_speed -- --ignored --nocapture`).
//! Prints the best of several runs per weight type: the machine may be shared.

use std::time::Instant;

use edgellm_runtime::kernels::matmul::{act_buffer_bytes, matmul, WeightMatrix};
use edgellm_runtime::kernels::threadpool::ThreadPool;
use edgellm_runtime::kernels::Kernels;
use edgellm_runtime::quant;
use edgellm_runtime::GgmlType;

fn floats(seed: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed >> 12;
            *seed ^= *seed << 25;
            *seed ^= *seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[test]
#[ignore]
fn gemm_speed() {
    let types: Vec<GgmlType> = match std::env::var("GEMM_TYPES") {
        Ok(s) => s
            .split(',')
            .map(|t| GgmlType::from_name(t).expect("type name"))
            .collect(),
        Err(_) => vec![GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0],
    };
    let threads: usize = std::env::var("GEMM_THREADS").map_or(1, |s| s.parse().expect("n"));
    let nb: usize = std::env::var("GEMM_NB").map_or(128, |s| s.parse().expect("n"));
    let kernels = Kernels::detect();
    let pool = ThreadPool::new(threads).expect("pool");
    // (rows, cols, count) of one SmolLM2-135M layer: q, k, v, o, gate, up, down.
    let shapes = [(576, 576, 2), (192, 576, 2), (1536, 576, 2), (576, 1536, 1)];
    let mut seed = 0x1234_5678_9abc_def1u64;
    for ty in types {
        let mut mats = Vec::new();
        // K-quant rows need whole 256-element blocks: only the 1536-column matrix has them.
        let shapes: Vec<_> = shapes
            .iter()
            .copied()
            .filter(|&(_, cols, _)| cols % ty.block_size() == 0)
            .collect();
        for &(rows, cols, count) in &shapes {
            for _ in 0..count {
                let x = floats(&mut seed, rows * cols);
                let rb = ty.row_bytes(cols as u64).expect("row") as usize;
                let mut data = vec![0u8; rows * rb + 64];
                let off = data.as_ptr().align_offset(32);
                for r in 0..rows {
                    quant::quantize_row(
                        ty,
                        &x[r * cols..(r + 1) * cols],
                        &mut data[off + r * rb..off + (r + 1) * rb],
                    )
                    .expect("quantize");
                }
                mats.push((rows, cols, data, off));
            }
        }
        let x = floats(&mut seed, nb * 1536);
        let mut act = vec![0u8; act_buffer_bytes(ty, 1536, nb).expect("act") + 64];
        let mut out = vec![0f32; nb * 1536];
        let mut best = f64::INFINITY;
        for _ in 0..30 {
            let t = Instant::now();
            for (rows, cols, data, off) in &mats {
                let rb = ty.row_bytes(*cols as u64).expect("row") as usize;
                let w = WeightMatrix {
                    ty,
                    cols: *cols,
                    rows: *rows,
                    data: &data[*off..*off + rows * rb],
                };
                let aoff = act.as_ptr().align_offset(32);
                let need = act_buffer_bytes(ty, *cols, nb).expect("act");
                matmul(
                    &pool,
                    &kernels,
                    &w,
                    &x[..nb * cols],
                    nb,
                    &mut act[aoff..aoff + need],
                    &mut out,
                )
                .expect("matmul");
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let macs: usize = shapes.iter().map(|&(r, c, n)| r * c * n * nb).sum();
        println!(
            "{ty}: one layer × {nb} tokens, {threads} thread(s): {:.3} ms, {:.1} GMAC/s",
            best * 1e3,
            macs as f64 / best / 1e9
        );
    }
}
