//! `ThreadPool`: persistent workers created once at load. `run` hands every worker the same job
//! (a closure told its worker index and the worker count), the caller works as worker 0, and
//! returns when all are done. Dispatch and join allocate nothing. Idle workers spin briefly
//! (the gap between two matmuls of one token is microseconds) and then park on a condvar, so an
//! idle service burns no core.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How many times an idle worker (or the waiting caller) polls before parking.
const SPIN_ITERS: u32 = 1 << 14;

type Job = dyn Fn(usize, usize) + Sync;

/// A per-row job of [`ThreadPool::for_each_row`]: `(row index, row, this worker's scratch)`.
pub type RowJob<'a, T, S> = dyn Fn(usize, &mut [T], &mut [S]) + Sync + 'a;

struct Shared {
    /// The current job, lifetime-erased; valid while `pending > 0` for this generation.
    job: Mutex<Option<JobPtr>>,
    generation: AtomicU64,
    pending: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    work_lock: Mutex<()>,
    work_cv: Condvar,
    /// Workers parked (or about to park) on `work_cv`: a dispatch notifies only if some are,
    /// so a busy pool makes no futex call.
    sleepers: AtomicUsize,
    done_lock: Mutex<()>,
    done_cv: Condvar,
    /// Whether the caller parked (or is about to park) on `done_cv`.
    caller_parked: AtomicBool,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointer is only dereferenced by workers while `run` (which owns the referent on its
// stack and requires `Sync`) is blocked waiting for them.
unsafe impl Send for JobPtr {}

/// A fixed set of worker threads for data-parallel kernels.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
}

impl ThreadPool {
    /// A pool of `n_threads` (the caller counts as one, so `n_threads - 1` threads are spawned).
    pub fn new(n_threads: usize) -> std::io::Result<ThreadPool> {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            work_lock: Mutex::new(()),
            work_cv: Condvar::new(),
            sleepers: AtomicUsize::new(0),
            done_lock: Mutex::new(()),
            done_cv: Condvar::new(),
            caller_parked: AtomicBool::new(false),
        });
        let mut workers = Vec::with_capacity(n_threads - 1);
        for index in 1..n_threads {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("edgellm-worker-{index}"))
                .spawn(move || worker_loop(&shared, index, n_threads))?;
            workers.push(handle);
        }
        Ok(ThreadPool {
            shared,
            workers,
            n_threads,
        })
    }

    /// Number of threads that run each job (including the caller).
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Runs `job(worker_index, n_threads)` on every worker and on the calling thread, and
    /// returns when all calls have returned. Panics if a worker's call panicked.
    pub fn run(&self, job: &(dyn Fn(usize, usize) + Sync)) {
        if self.n_threads == 1 {
            job(0, 1);
            return;
        }
        let shared = &*self.shared;
        // SAFETY (lifetime erasure): `job` outlives every use of this pointer because this
        // function does not return before `pending` reaches zero, i.e. before every worker has
        // finished calling it, and workers read the pointer only for the generation set here.
        let erased: *const Job = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize, usize) + Sync + '_), *const Job>(job)
        };
        *lock(&shared.job) = Some(JobPtr(erased));
        shared.pending.store(self.n_threads - 1, Ordering::SeqCst);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        // A worker counts itself in `sleepers` before its last look at `generation` (both
        // SeqCst, under `work_lock`): either it saw the new generation, or we see it here and
        // notify after it has started waiting (it holds the lock until then).
        if shared.sleepers.load(Ordering::SeqCst) != 0 {
            let _guard = lock(&shared.work_lock);
            shared.work_cv.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0, self.n_threads)));
        // Wait for the workers even if our part panicked: they still hold the pointer.
        let mut spins = 0;
        while shared.pending.load(Ordering::Acquire) != 0 {
            if spins < SPIN_ITERS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let guard = lock(&shared.done_lock);
                // A read-modify-write, not a store: with a store, QEMU's aarch64-on-x86
                // translation lets the flag sit in the host's store buffer past the load of
                // `pending` below (it maps `stlr` + `ldar` to a plain store and load, where
                // Arm orders them), the worker's last decrement then reads the flag unset and
                // never notifies, and both sides park for good (seen under make test). RMWs
                // are full barriers there, as on every real target.
                shared.caller_parked.swap(true, Ordering::SeqCst);
                if shared.pending.load(Ordering::SeqCst) != 0 {
                    let _unused = shared.done_cv.wait(guard);
                }
                shared.caller_parked.store(false, Ordering::SeqCst);
            }
        }
        *lock(&shared.job) = None;
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        if shared.panicked.swap(false, Ordering::SeqCst) {
            panic!("a thread-pool worker panicked");
        }
    }
}

impl ThreadPool {
    /// Splits `out` into rows of `row_len` and calls `f(row_index, row, scratch)` for every
    /// row, in parallel; each worker gets its own `scratch_per_thread` values of `scratch`
    /// (which must hold `n_threads * scratch_per_thread`). Rows go to workers in contiguous
    /// ranges. Allocates nothing.
    pub fn for_each_row<T: Send, S: Send>(
        &self,
        out: &mut [T],
        row_len: usize,
        scratch: &mut [S],
        scratch_per_thread: usize,
        f: &RowJob<'_, T, S>,
    ) {
        let n_rows = out.len().checked_div(row_len).unwrap_or(0);
        assert!(scratch.len() >= self.n_threads * scratch_per_thread);
        let rows = RawParts {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        };
        let scr = RawParts {
            ptr: scratch.as_mut_ptr(),
            len: scratch.len(),
        };
        let rows = &rows;
        let scr = &scr;
        self.run(&|index, n_threads| {
            let (r0, r1) = split_range(n_rows, index, n_threads, 1);
            let s0 = index * scratch_per_thread;
            assert!(s0 + scratch_per_thread <= scr.len && r1 * row_len <= rows.len);
            // SAFETY: worker `index` alone owns scratch `[s0, s0 + scratch_per_thread)` and
            // rows `[r0, r1)`: the ranges of different workers are disjoint, both are in bounds
            // (asserted), and the caller's `&mut` borrows are held until `run` returns.
            let my_scratch =
                unsafe { std::slice::from_raw_parts_mut(scr.ptr.add(s0), scratch_per_thread) };
            for r in r0..r1 {
                // SAFETY: as above; row `r` lies in this worker's range.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(rows.ptr.add(r * row_len), row_len) };
                f(r, row, my_scratch);
            }
        });
    }
}

/// A `&mut [T]` split among workers by disjoint index ranges.
struct RawParts<T> {
    ptr: *mut T,
    len: usize,
}
// SAFETY: only used by `for_each_row`, whose workers touch disjoint ranges of `T: Send` values.
unsafe impl<T: Send> Sync for RawParts<T> {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn worker_loop(shared: &Shared, index: usize, n_threads: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin, then park.
        let mut spins = 0;
        loop {
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            let generation = shared.generation.load(Ordering::Acquire);
            if generation != seen {
                seen = generation;
                break;
            }
            if spins < SPIN_ITERS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let guard = lock(&shared.work_lock);
                shared.sleepers.fetch_add(1, Ordering::SeqCst);
                if shared.generation.load(Ordering::SeqCst) == seen
                    && !shared.shutdown.load(Ordering::Acquire)
                {
                    let _unused = shared.work_cv.wait(guard);
                }
                shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let job = *lock(&shared.job);
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` published this pointer for the current generation and is blocked
            // until `pending` reaches zero, so the closure is alive for this call.
            let f = unsafe { &*ptr };
            if catch_unwind(AssertUnwindSafe(|| f(index, n_threads))).is_err() {
                shared.panicked.store(true, Ordering::SeqCst);
            }
        }
        // As with `sleepers`: the caller sets `caller_parked` before its last look at
        // `pending`, so one of the two sees the other.
        if shared.pending.fetch_sub(1, Ordering::SeqCst) == 1
            && shared.caller_parked.load(Ordering::SeqCst)
        {
            let _guard = lock(&shared.done_lock);
            shared.done_cv.notify_all();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = lock(&self.shared.work_lock);
            self.shared.work_cv.notify_all();
        }
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// The half-open range `[start, end)` of `n` items that worker `index` of `n_threads` owns,
/// in chunks that are multiples of `align` (except the last).
pub fn split_range(n: usize, index: usize, n_threads: usize, align: usize) -> (usize, usize) {
    let align = align.max(1);
    let units = n.div_ceil(align);
    let per = units / n_threads;
    let extra = units % n_threads;
    let start_u = index * per + index.min(extra);
    let end_u = start_u + per + usize::from(index < extra);
    ((start_u * align).min(n), (end_u * align).min(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_runs_once_per_job() {
        let pool = ThreadPool::new(4).unwrap();
        for _ in 0..1000 {
            let hits = [
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            ];
            pool.run(&|i, n| {
                assert_eq!(n, 4);
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            for h in &hits {
                assert_eq!(h.load(Ordering::SeqCst), 1);
            }
        }
    }

    #[test]
    fn parks_and_wakes_after_idle() {
        let pool = ThreadPool::new(3).unwrap();
        let total = AtomicUsize::new(0);
        pool.run(&|_, _| {
            total.fetch_add(1, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        pool.run(&|_, _| {
            total.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(total.load(Ordering::SeqCst), 6);
    }

    /// Dispatches where the caller parks while the worker is finishing: the handshake of
    /// `caller_parked` and `pending` must never lose the wake-up (it did under QEMU when the flag
    /// was set by a plain store). A watchdog turns a hang into a failure.
    #[test]
    fn caller_parked_at_the_workers_last_decrement_is_woken() {
        let done = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                while !done.load(Ordering::SeqCst) {
                    if start.elapsed() > std::time::Duration::from_secs(30) {
                        eprintln!("thread pool hung: a parked caller was never woken");
                        std::process::abort();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
        };
        let pool = ThreadPool::new(2).unwrap();
        for round in 0..20_000u32 {
            // The worker's part lasts about as long as the caller's spinning, varied per round,
            // so its final decrement lands around the moment the caller parks.
            pool.run(&|i, _| {
                if i == 1 {
                    let mut x = round;
                    for _ in 0..(SPIN_ITERS + (round % 64) * 256) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                }
            });
        }
        done.store(true, Ordering::SeqCst);
        watchdog.join().unwrap();
    }

    #[test]
    fn worker_panic_is_reported_and_pool_survives() {
        let pool = ThreadPool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i, _| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let total = AtomicUsize::new(0);
        pool.run(&|_, _| {
            total.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(total.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn split_range_covers_everything() {
        for n in [0, 1, 5, 64, 100, 577] {
            for nt in 1..6 {
                for align in [1, 4, 32] {
                    let mut next = 0;
                    for i in 0..nt {
                        let (s, e) = split_range(n, i, nt, align);
                        assert_eq!(s, next);
                        assert!(e >= s);
                        next = e;
                    }
                    assert_eq!(next, n);
                }
            }
        }
    }
}

#[cfg(test)]
mod dispatch_bench {
    use super::*;

    /// Round trip of an empty job (dispatch, every worker runs it, join): the fixed cost each
    /// matrix product of a decode step pays. A benchmark, not a test:
    /// `cargo test --release -p edgellm-runtime --lib bench_dispatch -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_dispatch_round_trip() {
        for threads in [2, 4] {
            let pool = ThreadPool::new(threads).unwrap();
            for _ in 0..3 {
                let n = 200_000;
                let t = std::time::Instant::now();
                for _ in 0..n {
                    pool.run(&|_, _| {});
                }
                let dt = t.elapsed().as_secs_f64() / n as f64;
                eprintln!("{threads} threads: {:.2} us per empty dispatch", dt * 1e6);
            }
        }
    }
}
