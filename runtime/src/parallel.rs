//! Running one piece of work on several threads.
//!
//! The forward pass cuts each matrix product into chunks of rows and the attention into
//! (token, head) items, and hands them to a [`Parallel`], so the core stays free of threads:
//! [`Serial`] runs everything on the caller's thread (no_std, or `-t 1`), and with `std` a
//! [`ThreadPool`] keeps its workers alive for the whole session (no thread is spawned per token
//! or per product).
//!
//! Items are taken from a shared counter, not dealt out in advance: a thread the OS deschedules
//! (a busy machine, a Pi running other services) delays only the item it holds, the others take
//! the rest, and a worker that wakes after the last item was taken does not join at all, so the
//! caller never waits for it. Which thread computes an item never changes its bits.
//!
//! A worker descheduled in the middle of an item still holds it, and the caller waits for it:
//! with another process on every core, each product of a forward pass can wait a scheduler
//! time slice. So the pool watches for that: when a call's last item ends well after the
//! caller's own (by more than the caller's whole share and `STALL`), the next calls run on
//! the caller alone, [`SOLO`] of them at first, twice as many after each further stall (up to
//! [`MAX_SOLO`]) until [`CLEAN`] calls in a row pass without one. On a busy machine `-t 2` then
//! runs about as `-t 1` does instead of slower, and on a quiet one nothing changes.
//!
//! A panic in an item, on any thread, ends the call with that panic on the caller's thread,
//! after every thread has left the job (so nothing runs the closure once the call has
//! returned); the pool keeps all its workers and stays usable.

/// Something that runs `f(item, slot)` for every item in `0..items` on up to `slots` threads and
/// returns when all are done. `slot` (`< slots.min(threads())`) is unique to one thread during
/// the call (for per-thread scratch); the items a slot gets are not fixed.
pub trait Parallel: Sync {
    /// Number of threads (including the caller's).
    fn threads(&self) -> usize;
    /// Runs every item, each exactly once, on at most `slots` threads at a time, and waits.
    fn for_each(&self, items: usize, slots: usize, f: &(dyn Fn(usize, usize) + Sync));
}

/// Runs everything on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Parallel for Serial {
    fn threads(&self) -> usize {
        1
    }
    fn for_each(&self, items: usize, _slots: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        for i in 0..items {
            f(i, 0);
        }
    }
}

/// How much later than the caller's own items a worker's last item may end, beyond the
/// caller's own time in the call, before the pool counts a stall (see the module).
#[cfg(feature = "std")]
pub const STALL: std::time::Duration = std::time::Duration::from_micros(200);
/// Calls a [`ThreadPool`] runs on the caller alone after a first stall.
pub const SOLO: u32 = 64;
/// The most calls it runs alone after a stall.
pub const MAX_SOLO: u32 = 4096;
/// Calls without a stall, in a row, after which a stall counts as a first one again (about a
/// decoded token of a small model).
pub const CLEAN: u32 = 256;

/// Rows per chunk when `rows` are shared by `threads`: about two chunks per thread (taken as
/// threads come free, so a stalled thread holds a quarter of a product with two threads), a
/// multiple of `align`, at least `align` and at most 256. One thread takes chunks as large as
/// that allows. Each call of a kernel starts its prefetch cold, so fewer, larger chunks decode
/// faster, also on a busy machine (SmolLM2 Q4_0, alternating rounds, 2026-12-04: one thread
/// 138–142 tokens/s against 130–134 with eight chunks; two threads 169–195 against 150–192 with
/// eight a thread, and beside a CPU-bound process 107–131 against 87–112, where one thread
/// gives 111–138).
pub fn chunk_rows(rows: usize, threads: usize, align: usize) -> usize {
    let per = if threads <= 1 {
        rows
    } else {
        rows / (2 * threads)
    };
    (per.min(256) / align * align).max(align)
}

/// Threads to use when none are asked for: the physical cores (distinct (package, core id) pairs
/// in /proc/cpuinfo; a second hyper-thread of a core adds little to memory-bound decoding), else
/// the logical CPUs. Every front end (CLI, C ABI) takes this default.
#[cfg(feature = "std")]
pub fn default_threads() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::BTreeSet::new();
    let (mut pkg, mut core) = (None, None);
    for line in info.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (pkg.take(), core.take()) {
                cores.insert((p, c));
            }
            continue;
        }
        let mut kv = line.splitn(2, ':');
        let (k, v) = (
            kv.next().unwrap_or("").trim(),
            kv.next().unwrap_or("").trim(),
        );
        match k {
            "physical id" => pkg = Some(v.to_string()),
            "core id" => core = Some(v.to_string()),
            _ => {}
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

#[cfg(feature = "std")]
pub use pool::ThreadPool;

#[cfg(feature = "std")]
mod pool {
    use super::{Parallel, CLEAN, MAX_SOLO, SOLO, STALL};
    use std::cell::UnsafeCell;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::JoinHandle;

    /// The current job: a type-erased pointer to the caller's closure and its extent.
    #[derive(Clone, Copy)]
    struct Job {
        f: *const (dyn Fn(usize, usize) + Sync),
        items: usize,
        slots: usize,
    }

    /// `gate`'s flag: the job takes new workers. The other bits count the workers inside.
    const OPEN: usize = 1 << (usize::BITS - 1);

    struct Shared {
        /// Incremented to publish a job.
        generation: AtomicUsize,
        /// [`OPEN`] while workers may join the current job, plus the number inside it.
        gate: AtomicUsize,
        /// The next item to take.
        next: AtomicUsize,
        /// Written only by `for_each` while no worker is inside (`gate` = 0), read only by
        /// workers inside (they joined through `gate`, whose release/acquire orders the write).
        job: UnsafeCell<Job>,
        stop: AtomicBool,
        /// Workers asleep on `wake` (or about to be).
        sleepers: AtomicUsize,
        lock: Mutex<()>,
        wake: Condvar,
        n: usize,
        /// The first panic a worker caught in the current job, re-raised by `for_each`.
        panic: Mutex<Option<Box<dyn std::any::Any + Send + 'static>>>,
        /// Set with `panic` (so a job without one never takes the lock).
        panicked: AtomicBool,
        /// The caller of `for_each` is asleep on `done` (or about to be), waiting for workers
        /// still inside the closed job.
        waiting: AtomicBool,
        /// Where that caller sleeps; the last worker out wakes it.
        done: Condvar,
    }

    // SAFETY: every field is Sync except `job`, whose accesses the gate protocol keeps apart
    // (see the field); the closure it points to is `Sync`.
    unsafe impl Sync for Shared {}
    // SAFETY: as above; the pointer in `job` is only dereferenced during the `for_each` call
    // that stored it.
    unsafe impl Send for Shared {}

    /// A fixed set of worker threads, alive as long as the pool.
    pub struct ThreadPool {
        shared: Arc<Shared>,
        workers: Vec<JoinHandle<()>>,
        /// Serialises callers of `for_each` (the pool runs one job at a time), and keeps what
        /// the pool learnt of stalls.
        running: Mutex<Adapt>,
    }

    /// The caller-alone state (see the module).
    #[derive(Debug)]
    struct Adapt {
        /// Calls still to run on the caller alone.
        solo: u32,
        /// How many to run alone after the next stall.
        next: u32,
        /// Calls in a row without a stall.
        clean: u32,
    }

    impl Adapt {
        const NEW: Adapt = Adapt {
            solo: 0,
            next: SOLO,
            clean: 0,
        };
    }

    /// Busy-wait rounds before yielding: the forward pass publishes jobs microseconds apart.
    const SPINS: usize = 1 << 11;
    /// `yield_now` rounds before an idle worker sleeps.
    const YIELDS: usize = 1 << 8;

    impl ThreadPool {
        /// A pool of `n` threads in all (the caller counts as one; `n - 1` workers are started).
        pub fn new(n: usize) -> std::io::Result<Self> {
            let n = n.max(1);
            let shared = Arc::new(Shared {
                generation: AtomicUsize::new(0),
                gate: AtomicUsize::new(0),
                next: AtomicUsize::new(0),
                job: UnsafeCell::new(Job {
                    f: &|_, _| {},
                    items: 0,
                    slots: 0,
                }),
                stop: AtomicBool::new(false),
                sleepers: AtomicUsize::new(0),
                lock: Mutex::new(()),
                wake: Condvar::new(),
                n,
                panic: Mutex::new(None),
                panicked: AtomicBool::new(false),
                waiting: AtomicBool::new(false),
                done: Condvar::new(),
            });
            let mut workers = Vec::with_capacity(n - 1);
            for i in 1..n {
                let s = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name(format!("ember-worker-{i}"))
                    .spawn(move || worker(&s, i));
                match spawned {
                    Ok(h) => workers.push(h),
                    Err(e) => {
                        // The workers started so far are stopped by the pool's drop.
                        drop(ThreadPool {
                            shared,
                            workers,
                            running: Mutex::new(Adapt::NEW),
                        });
                        return Err(e);
                    }
                }
            }
            Ok(ThreadPool {
                shared,
                workers,
                running: Mutex::new(Adapt::NEW),
            })
        }
    }

    /// Takes items of `job` until none is left.
    fn take_items(s: &Shared, job: &Job, slot: usize) {
        // SAFETY: the caller is inside the job (the caller of `for_each`, or a worker that joined
        // through the gate), so the closure is alive.
        let f = unsafe { &*job.f };
        loop {
            let item = s.next.fetch_add(1, Ordering::Relaxed);
            if item >= job.items {
                return;
            }
            f(item, slot);
        }
    }

    /// Leaves the job when dropped, also when the closure panics (so `for_each` never waits
    /// for a worker that is gone); the last worker out of a closed job wakes its caller if it
    /// sleeps.
    struct Inside<'a>(&'a Shared);
    impl Drop for Inside<'_> {
        fn drop(&mut self) {
            let s = self.0;
            if s.gate.fetch_sub(1, Ordering::SeqCst) == 1 && s.waiting.load(Ordering::SeqCst) {
                let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.done.notify_all();
            }
        }
    }

    /// Joins the open job, if any: true when inside.
    fn enter(s: &Shared) -> bool {
        let mut g = s.gate.load(Ordering::Acquire);
        while g & OPEN != 0 {
            match s
                .gate
                .compare_exchange_weak(g, g + 1, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => g = now,
            }
        }
        false
    }

    fn worker(s: &Shared, i: usize) {
        let mut seen = 0usize;
        loop {
            // Wait for a new generation: spin, then yield, then sleep.
            let mut round = 0;
            loop {
                if s.stop.load(Ordering::Acquire) {
                    return;
                }
                let g = s.generation.load(Ordering::Acquire);
                if g != seen {
                    seen = g;
                    break;
                }
                round += 1;
                if round < SPINS {
                    std::hint::spin_loop();
                } else if round < SPINS + YIELDS {
                    std::thread::yield_now();
                } else {
                    let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                    s.sleepers.fetch_add(1, Ordering::SeqCst);
                    if s.generation.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::SeqCst)
                    {
                        drop(s.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
                    }
                    s.sleepers.fetch_sub(1, Ordering::SeqCst);
                    round = 0;
                }
            }
            // A worker that comes late finds the gate closed and waits for the next job (it may
            // also join a later job than the one it saw published: it reads the job inside).
            if enter(s) {
                let _inside = Inside(s);
                // SAFETY: inside the job, `job` is not written (see the field).
                let job = unsafe { *s.job.get() };
                if i < job.slots {
                    // A panicking item is the caller's to re-raise; this worker stays.
                    let run = std::panic::AssertUnwindSafe(|| take_items(s, &job, i));
                    if let Err(p) = std::panic::catch_unwind(run) {
                        let mut slot = s.panic.lock().unwrap_or_else(|e| e.into_inner());
                        slot.get_or_insert(p);
                        s.panicked.store(true, Ordering::Release);
                    }
                }
            }
        }
    }

    /// Closes the job and waits for the workers inside, when dropped (also on a panic in the
    /// caller's items, so no worker keeps a pointer to a closure that is gone). It spins a
    /// while, then sleeps until the last worker leaves: a worker that is still inside after the
    /// spin has most likely been descheduled by another process, and a sleeping caller frees its
    /// core, where the scheduler can then run that worker at once (spinning or yielding kept the
    /// core busy, and the worker waited for its own core).
    struct Close<'a>(&'a Shared);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            let s = self.0;
            s.gate.fetch_and(!OPEN, Ordering::AcqRel);
            let mut round = 0usize;
            while s.gate.load(Ordering::Acquire) != 0 {
                if round < SPINS {
                    round += 1;
                    std::hint::spin_loop();
                    continue;
                }
                let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.waiting.store(true, Ordering::SeqCst);
                // Either the last worker sees `waiting` (and wakes this caller under the lock,
                // which the caller holds until it sleeps), or this load sees the gate at 0.
                if s.gate.load(Ordering::SeqCst) != 0 {
                    // (A timeout as well: a bound on any wait, should a wake-up be missed.)
                    let wait = std::time::Duration::from_millis(1);
                    drop(s.done.wait_timeout(guard, wait));
                } else {
                    drop(guard);
                }
                s.waiting.store(false, Ordering::SeqCst);
            }
        }
    }

    impl Parallel for ThreadPool {
        fn threads(&self) -> usize {
            self.shared.n
        }

        fn for_each(&self, items: usize, slots: usize, f: &(dyn Fn(usize, usize) + Sync)) {
            let s = &*self.shared;
            if s.n == 1 || slots <= 1 || items <= 1 {
                for i in 0..items {
                    f(i, 0);
                }
                return;
            }
            let mut adapt = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if adapt.solo > 0 {
                adapt.solo -= 1;
                for i in 0..items {
                    f(i, 0);
                }
                return;
            }
            let ptr: *const (dyn Fn(usize, usize) + Sync + '_) = f;
            // SAFETY (lifetime erasure only): workers dereference the pointer only inside this
            // job, and `Close` below waits for every worker inside before this call returns.
            let ptr: *const (dyn Fn(usize, usize) + Sync + 'static) =
                unsafe { std::mem::transmute(ptr) };
            let job = Job {
                f: ptr,
                items,
                slots,
            };
            // SAFETY: no worker is inside (the previous call waited for gate = 0, and the gate
            // is closed), so nothing reads `job` now.
            unsafe { *s.job.get() = job };
            s.next.store(0, Ordering::Relaxed);
            if s.panicked.swap(false, Ordering::AcqRel) {
                // Left by a job whose caller panicked itself.
                *s.panic.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            let t0 = std::time::Instant::now();
            let own;
            {
                s.gate.store(OPEN, Ordering::Release);
                let _close = Close(s);
                s.generation.fetch_add(1, Ordering::SeqCst);
                if s.sleepers.load(Ordering::SeqCst) != 0 {
                    let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                    s.wake.notify_all();
                }
                take_items(s, &job, 0);
                own = t0.elapsed();
            }
            // Every worker has left the job (`Close`). A stall: the caller waited for a worker
            // longer than its own share took, and by more than STALL.
            if t0.elapsed() > own * 2 + STALL {
                adapt.solo = adapt.next;
                adapt.next = adapt.next.saturating_mul(2).min(MAX_SOLO);
                adapt.clean = 0;
            } else {
                adapt.clean = adapt.clean.saturating_add(1);
                if adapt.clean >= CLEAN {
                    adapt.next = SOLO;
                }
            }
            drop(adapt);
            // Re-raise the first panic a worker caught.
            if s.panicked.swap(false, Ordering::AcqRel) {
                let caught = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(p) = caught {
                    std::panic::resume_unwind(p);
                }
            }
        }
    }

    impl Drop for ThreadPool {
        fn drop(&mut self) {
            self.shared.stop.store(true, Ordering::SeqCst);
            {
                let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
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
        fn every_item_runs_once_on_a_slot_of_its_own() {
            for n in 1..=4 {
                let pool = ThreadPool::new(n).unwrap();
                for round in 0..300 {
                    let items = round % 37;
                    let slots = 1 + round % 5;
                    let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                    let busy: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
                    pool.for_each(items, slots, &|item, slot| {
                        assert!(slot < slots.min(n));
                        assert!(!busy[slot].swap(true, Ordering::SeqCst), "slot shared");
                        hits[item].fetch_add(1, Ordering::Relaxed);
                        busy[slot].store(false, Ordering::SeqCst);
                    });
                    for h in &hits {
                        assert_eq!(h.load(Ordering::Relaxed), 1);
                    }
                }
            }
        }

        #[test]
        fn a_slow_worker_loses_no_item() {
            // The worker's first items sleep; the caller takes the others meanwhile.
            let pool = ThreadPool::new(2).unwrap();
            let hits: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
            pool.for_each(64, 2, &|item, slot| {
                if slot == 1 && item < 2 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                hits[item].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }

        #[test]
        fn after_a_stalled_worker_the_caller_runs_alone_then_tries_again() {
            let pool = ThreadPool::new(2).unwrap();
            // The worker's first item sleeps 100 ms; the caller's items wait (up to 10 s) for
            // the worker to have joined, then take far less.
            let joined = AtomicBool::new(false);
            pool.for_each(64, 2, &|_, slot| {
                if slot == 1 && !joined.swap(true, Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                let t0 = std::time::Instant::now();
                while !joined.load(Ordering::SeqCst)
                    && t0.elapsed() < std::time::Duration::from_secs(10)
                {
                    std::thread::yield_now();
                }
            });
            assert_eq!(pool.running.lock().unwrap().solo, SOLO, "a stall");
            // The next SOLO calls run every item on the caller.
            for _ in 0..SOLO {
                let on_worker = AtomicUsize::new(0);
                pool.for_each(64, 2, &|_, slot| {
                    if slot != 0 {
                        on_worker.fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert_eq!(on_worker.load(Ordering::Relaxed), 0);
            }
            {
                let adapt = pool.running.lock().unwrap();
                assert_eq!(
                    (adapt.solo, adapt.next),
                    (0, 2 * SOLO),
                    "done alone, backoff kept"
                );
            }
            // Then the workers take part again; CLEAN calls in a row without a stall reset the
            // backoff (on a loaded machine a call may stall again, so it runs until then).
            on_every_slot(&pool, &|_| {});
            let mut calls = 0;
            while pool.running.lock().unwrap().clean < CLEAN && calls < 100_000 {
                pool.for_each(2, 2, &|_, _| {});
                calls += 1;
            }
            let adapt = pool.running.lock().unwrap();
            assert!(adapt.clean >= CLEAN, "{calls} calls");
            assert_eq!(adapt.next, SOLO);
        }

        /// Runs a job whose items wait (up to 10 s) until every slot has joined, so each
        /// thread of the pool takes part; `f(slot)` then runs on each.
        fn on_every_slot(pool: &ThreadPool, f: &(dyn Fn(usize) + Sync)) {
            // (Not after a stall, when calls run on the caller alone: these items wait for
            // each other.)
            pool.running.lock().unwrap_or_else(|e| e.into_inner()).solo = 0;
            let n = pool.threads();
            let joined: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
            pool.for_each(64 * n, n, &|_, slot| {
                joined[slot].store(true, Ordering::SeqCst);
                let t0 = std::time::Instant::now();
                while !joined.iter().all(|j| j.load(Ordering::SeqCst))
                    && t0.elapsed() < std::time::Duration::from_secs(10)
                {
                    std::thread::yield_now();
                }
                f(slot);
            });
            assert!(
                joined.iter().all(|j| j.load(Ordering::SeqCst)),
                "a worker never joined"
            );
        }

        #[test]
        fn a_panic_on_any_thread_reaches_the_caller_and_the_pool_stays_whole() {
            for n in 2..=4 {
                let pool = ThreadPool::new(n).unwrap();
                for bad in 0..n {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        on_every_slot(&pool, &|slot| {
                            if slot == bad {
                                panic!("item on slot {slot}");
                            }
                        });
                    }));
                    let p = r.expect_err("the panic must reach the caller");
                    let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
                    assert_eq!(msg, format!("item on slot {bad}"), "{n} threads");
                    // Every worker is still there, and the next job runs normally.
                    let ran: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                    on_every_slot(&pool, &|slot| {
                        ran[slot].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(ran.iter().all(|r| r.load(Ordering::Relaxed) > 0));
                }
            }
        }

        #[test]
        fn chunk_rows_are_aligned_and_bounded() {
            for rows in [0, 1, 16, 192, 576, 1536, 49152] {
                for t in 1..=8 {
                    let c = super::super::chunk_rows(rows, t, 16);
                    assert!(c.is_multiple_of(16) && (16..=256).contains(&c));
                }
            }
        }
    }
}
