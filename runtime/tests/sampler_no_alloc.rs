//! Per-token paths allocate nothing: `Sampler::sample`/`accept` with every stage on, and
//! `TextStream::push` with stop strings, checked by a counting global allocator.

use edgellm_runtime::alloc_count::{thread_allocations_during, CountingAllocator};

use edgellm_runtime::sampler::{Sampler, SamplerConfig};
use edgellm_runtime::text_stream::{StreamStep, TextStream};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    thread_allocations_during(f) as usize
}

const N_VOCAB: usize = 49152;

#[test]
fn counter_sees_allocations() {
    let n = allocations_during(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(n, 1);
}

#[test]
fn sample_and_accept_do_not_allocate() {
    // Logits with a realistic shape: a few large values and a long tail.
    let mut logits = vec![0.0f32; N_VOCAB];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut configs = vec![
        SamplerConfig {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            frequency_penalty: 0.3,
            presence_penalty: 0.2,
            seed: 7,
        },
        // top-k off: top-p sorts the whole vocabulary (in place).
        SamplerConfig {
            top_k: 0,
            ..SamplerConfig::default()
        },
        // min-p on an unsorted set.
        SamplerConfig {
            top_k: 0,
            top_p: 1.0,
            ..SamplerConfig::default()
        },
        SamplerConfig::greedy(),
    ];
    for cfg in configs.drain(..) {
        let mut sampler = Sampler::new(cfg, N_VOCAB).unwrap();
        for t in 0..100u32 {
            sampler.accept(t * 7);
        }
        let allocs = allocations_during(|| {
            for step in 0..1000 {
                for l in logits.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *l = (x >> 40) as f32 / (1u64 << 24) as f32 * 8.0;
                }
                logits[step % N_VOCAB] += 20.0;
                let t = sampler.sample(&logits);
                assert!((t as usize) < N_VOCAB);
                sampler.accept(t);
            }
        });
        assert_eq!(allocs, 0, "sampler allocated {allocs} times in 1000 steps");
    }
}

#[test]
fn text_stream_push_does_not_allocate() {
    let mut stream = TextStream::new();
    stream
        .set_stops(&["<|im_end|>".to_string(), "\n\nUser:".to_string()])
        .unwrap();
    // Pieces as a byte-level BPE produces them: split characters, near-miss stop prefixes.
    let euro = "€".as_bytes();
    let pieces: [&[u8]; 9] = [
        b"Hello",
        b" <|im",
        b"_start|>",
        &euro[..1],
        &euro[1..],
        b"\n\n",
        b"Use",
        b"\xF0\x9F",
        b"\x98\x80 ok",
    ];
    let mut emitted = 0usize;
    let allocs = allocations_during(|| {
        for _ in 0..1000 {
            for p in pieces {
                let step = stream.push(p, &mut |s| emitted += s.len());
                assert_eq!(step, StreamStep::Continue);
            }
        }
        stream.finish(&mut |s| emitted += s.len());
    });
    assert_eq!(allocs, 0, "TextStream allocated {allocs} times");
    let per_round: usize = "Hello <|im_start|>€\n\nUse😀 ok".len();
    assert_eq!(emitted, 1000 * per_round);
}
