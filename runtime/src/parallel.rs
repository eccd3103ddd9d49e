//! Running one piece of work on several threads.
//!
//! The forward pass splits each matrix product by rows and the attention by heads. It calls
//! through [`Parallel`], so the core stays free of threads: [`Serial`] runs everything on the
//! caller's thread (no_std, or `-t 1`), and with `std` a [`ThreadPool`] keeps its workers alive
//! for the whole session (no thread is spawned per token or per product) and wakes them with a
//! spin-then-sleep handshake that costs about a microsecond per region.

/// Something that runs `f(i, n)` for every `i` in `0..n` (n = [`Parallel::threads`]), in
/// parallel, and returns when all are done.
pub trait Parallel: Sync {
    /// Number of threads (including the caller's).
    fn threads(&self) -> usize;
    /// Runs `f(i, n)` on each thread and waits for all of them.
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync));
}

/// Runs everything on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Parallel for Serial {
    fn threads(&self) -> usize {
        1
    }
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        f(0, 1)
    }
}

/// The part `[start, end)` of `0..len` that thread `i` of `n` takes, in whole multiples of
/// `align` (the last part takes the remainder).
pub fn split(len: usize, i: usize, n: usize, align: usize) -> (usize, usize) {
    let units = len.div_ceil(align);
    let (start, end) = (units * i / n, units * (i + 1) / n);
    ((start * align).min(len), (end * align).min(len))
}

#[cfg(feature = "std")]
pub use pool::ThreadPool;

#[cfg(feature = "std")]
mod pool {
    use super::Parallel;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::JoinHandle;

    /// A type-erased pointer to the current job. Only read between a job's publication and the
    /// moment its `run` returns, while the closure it points to is alive on the caller's stack.
    #[derive(Clone, Copy)]
    struct JobPtr(*const (dyn Fn(usize, usize) + Sync));
    // SAFETY: the pointee is `Sync`, and it is only dereferenced while `run` keeps it alive.
    unsafe impl Send for JobPtr {}

    struct Shared {
        /// Incremented to publish a job.
        generation: AtomicUsize,
        /// Workers still running the current job.
        pending: AtomicUsize,
        stop: AtomicBool,
        job: Mutex<Option<JobPtr>>,
        wake: Condvar,
        n: usize,
    }

    /// A fixed set of worker threads, alive as long as the pool.
    pub struct ThreadPool {
        shared: Arc<Shared>,
        workers: Vec<JoinHandle<()>>,
        /// Serialises callers of `run` (the pool runs one job at a time).
        running: Mutex<()>,
    }

    /// Spins before sleeping: the forward pass publishes jobs microseconds apart.
    const SPINS: usize = 1 << 16;

    impl ThreadPool {
        /// A pool of `n` threads in all (the caller counts as one; `n - 1` workers are started).
        pub fn new(n: usize) -> std::io::Result<Self> {
            let n = n.max(1);
            let shared = Arc::new(Shared {
                generation: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                stop: AtomicBool::new(false),
                job: Mutex::new(None),
                wake: Condvar::new(),
                n,
            });
            let mut workers = Vec::with_capacity(n - 1);
            for i in 1..n {
                let s = Arc::clone(&shared);
                workers.push(
                    std::thread::Builder::new()
                        .name(format!("ember-worker-{i}"))
                        .spawn(move || worker(&s, i))?,
                );
            }
            Ok(ThreadPool {
                shared,
                workers,
                running: Mutex::new(()),
            })
        }
    }

    fn worker(s: &Shared, i: usize) {
        let mut seen = 0usize;
        loop {
            // Wait for a new generation: spin first, then sleep on the condition variable.
            let mut spins = 0;
            loop {
                if s.stop.load(Ordering::Acquire) {
                    return;
                }
                let g = s.generation.load(Ordering::Acquire);
                if g != seen {
                    seen = g;
                    break;
                }
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    let guard = s.job.lock().unwrap_or_else(|e| e.into_inner());
                    if s.generation.load(Ordering::Acquire) == seen
                        && !s.stop.load(Ordering::Acquire)
                    {
                        let _unused = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
            let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(JobPtr(f)) = job {
                // SAFETY: `run` published this pointer and waits for `pending` to reach zero
                // before returning, so the closure outlives this call.
                let f = unsafe { &*f };
                f(i, s.n);
            }
            s.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    impl Parallel for ThreadPool {
        fn threads(&self) -> usize {
            self.shared.n
        }

        fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
            let s = &*self.shared;
            if s.n == 1 {
                return f(0, 1);
            }
            let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY (lifetime erasure): the pointer is cleared below before `run` returns, and
            // workers only use it between the generation bump and their `pending` decrement,
            // which this function waits for.
            let ptr: *const (dyn Fn(usize, usize) + Sync + '_) = f;
            let ptr: *const (dyn Fn(usize, usize) + Sync + 'static) =
                unsafe { std::mem::transmute(ptr) };
            s.pending.store(s.n - 1, Ordering::Release);
            {
                let mut job = s.job.lock().unwrap_or_else(|e| e.into_inner());
                *job = Some(JobPtr(ptr));
                s.generation.fetch_add(1, Ordering::AcqRel);
                s.wake.notify_all();
            }
            f(0, s.n);
            while s.pending.load(Ordering::Acquire) != 0 {
                std::hint::spin_loop();
            }
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    impl Drop for ThreadPool {
        fn drop(&mut self) {
            self.shared.stop.store(true, Ordering::Release);
            {
                let _g = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
                self.shared.wake.notify_all();
            }
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_thread_runs_each_job_once() {
            for n in 1..=4 {
                let pool = ThreadPool::new(n).unwrap();
                for round in 0..200 {
                    let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                    pool.run(&|i, nn| {
                        assert_eq!(nn, n);
                        hits[i].fetch_add(round + 1, Ordering::Relaxed);
                    });
                    for h in &hits {
                        assert_eq!(h.load(Ordering::Relaxed), round + 1);
                    }
                }
            }
        }

        #[test]
        fn split_covers_the_range_in_aligned_parts() {
            for len in [0, 1, 5, 64, 576, 1536, 49152, 49153] {
                for n in 1..=5 {
                    let mut next = 0;
                    for i in 0..n {
                        let (a, b) = super::super::split(len, i, n, 4);
                        assert_eq!(a, next);
                        assert!(a % 4 == 0 || a == len);
                        next = b;
                    }
                    assert_eq!(next, len);
                }
            }
        }
    }
}
