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
//! Threads beyond the CPUs the machine gives the pool only slow it down: with another process
//! busy on every core, the caller's thread (which runs the forward pass between the calls)
//! waits its turn for a CPU as often as the others and nothing progresses meanwhile, and a
//! product can wait a scheduler time slice for a worker descheduled in the middle of an item.
//! So the pool keeps a *limit* on the threads a call uses (the workers above it sleep, and
//! [`Parallel::active`] tells the forward pass how finely to cut its work) and chooses it by timing the forward passes themselves ([`Parallel::pass_done`]). A *trial* runs
//! decode-sized passes (up to [`TRIAL_TOKENS`]) at two adjacent limits, two passes at a time
//! (the first of each two not timed, while workers wake or go to sleep), until each limit has
//! [`TRIAL_PASSES`] timed; it keeps the fewer threads unless the more are faster by a sixteenth
//! (else they only take CPU from other work). The choice then holds [`HOLD`], twice as long
//! each time a trial confirms it (up to [`MAX_HOLD`]). Below every thread, each hold ends in a
//! trial of one thread more. At every thread, a trial starts only once the pool sees
//! contention: the caller's thread runnable but not running for over [`BUSY_PER_MILLE`] of two
//! [`WINDOW`]s in a row (Linux's `/proc/thread-self/schedstat`); where that cannot be read, a
//! stall (a call whose last item ends well after the caller's own, by more than the caller's
//! whole share and [`STALL`]).
//!
//! A trial whose end the machine already tells is not run. At most once a [`WINDOW`] (between
//! passes, and after calls on several threads) the pool reads the machine's runnable threads
//! (Linux's `/proc/loadavg`; the pool's threads at its limit run or spin, those above it
//! sleep). Where most of the last [`LOAD_READINGS`] say that the pool and the rest of the
//! machine overbook the CPUs, one window of waits is contention, and contention takes one
//! thread off at once; where they say that one thread more would find no CPU, a hold ends in a
//! hold twice as long instead of a trial, at most [`MAX_SKIPS`] times in a row (a container may
//! read its host's threads). On a busy machine `-t 2` thus runs as `-t 1` does instead of
//! slower, and a quiet one does not notice.
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
    /// The threads a call would use now, at most [`threads`](Parallel::threads) (a pool may
    /// use fewer on a busy machine): for cutting work into items. Per-thread scratch is sized
    /// by `threads`.
    fn active(&self) -> usize {
        self.threads()
    }
    /// Runs every item, each exactly once, on at most `slots` threads at a time, and waits.
    fn for_each(&self, items: usize, slots: usize, f: &(dyn Fn(usize, usize) + Sync));
    /// A forward pass of `tokens` tokens (0: a pass that failed) ended: a [`ThreadPool`] times
    /// the passes to choose how many threads to use. Nothing by default.
    fn pass_done(&self, _tokens: usize) {}
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
/// How long the pool watches the caller's waits for a CPU before it judges them (about two
/// decoded tokens of a small model).
#[cfg(feature = "std")]
pub const WINDOW: std::time::Duration = std::time::Duration::from_millis(16);
/// The share of a window, in thousandths, that the caller's thread may spend waiting for a CPU
/// (two windows in a row) before the pool tries fewer threads. Two threads decoding SmolLM2
/// (2026-12-05, two cores): on a quiet machine 97% of windows wait at most 13 ‰ (the most
/// seen: 109 ‰, never two in a row); beside one CPU-bound process, half wait over 75 ‰ and
/// 90% over 14 ‰.
pub const BUSY_PER_MILLE: u64 = 30;
/// Passes a trial times at each of its two limits (in turn, of the same token count).
pub const TRIAL_PASSES: u32 = 6;
/// The largest passes a trial times (decode steps and small batches): a pass of a long
/// prompt at the slower limit would cost more than the trial can win back.
pub const TRIAL_TOKENS: usize = 8;
/// How long a trial's choice holds at first.
#[cfg(feature = "std")]
pub const HOLD: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest a trial's choice holds (on a quiet machine, each trial costs
/// [`TRIAL_PASSES`] passes at one thread fewer; on a busy one that turns quiet, the pool may
/// run this long on fewer threads than it could).
#[cfg(feature = "std")]
pub const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(4);
/// Readings of the machine's runnable threads the pool weighs (the last ones, at most one a
/// [`WINDOW`], between passes outside trials).
pub const LOAD_READINGS: u32 = 4;
/// Trials of one thread more the readings may skip in a row (where they misread, as in a
/// container that sees the host's threads, the pool still tries more threads this often).
pub const MAX_SKIPS: u32 = 4;

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
pub use pool::{PassCounts, ThreadPool};

#[cfg(feature = "std")]
mod pool {
    use super::{
        Parallel, BUSY_PER_MILLE, HOLD, LOAD_READINGS, MAX_HOLD, MAX_SKIPS, STALL, TRIAL_PASSES,
        TRIAL_TOKENS, WINDOW,
    };
    use std::cell::UnsafeCell;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::JoinHandle;
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};

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
        /// Workers asleep on `wake` (or about to be), waiting for a job.
        sleepers: AtomicUsize,
        /// The threads calls use now (see the module): worker `i` sleeps on `wake` while
        /// `i >= limit`.
        limit: AtomicUsize,
        /// Workers asleep on `wake` (or about to be) above the limit.
        parked: AtomicUsize,
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

    /// Forward passes a [`ThreadPool`] has run (see [`ThreadPool::passes`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PassCounts {
        /// Passes done (failed ones are not counted).
        pub all: u64,
        /// Those begun on fewer threads than the pool has (the machine was busy, or a trial).
        pub fewer: u64,
    }

    /// A fixed set of worker threads, alive as long as the pool.
    pub struct ThreadPool {
        shared: Arc<Shared>,
        workers: Vec<JoinHandle<()>>,
        /// Serialises callers of `for_each` (the pool runs one job at a time), and keeps what
        /// the pool learnt of stalls.
        running: Mutex<Adapt>,
    }

    /// What the pool learns of the CPUs it gets (see the module): the threads calls use.
    #[derive(Debug)]
    struct Adapt {
        /// The pool's threads.
        n: usize,
        /// The CPUs the process may run on.
        cpus: usize,
        /// The last readings of the machine's runnable threads since the last choice.
        load: Load,
        /// Trials of one thread more skipped in a row because the machine had no CPU for it.
        skips: u32,
        /// Reads the machine's runnable threads ([`runnable_threads`]).
        runnable: fn() -> Option<usize>,
        /// The threads calls use outside a trial, `1..=n`.
        limit: usize,
        /// Until when the last trial's choice holds.
        until: Option<Instant>,
        /// How long the next choice holds.
        hold: Duration,
        /// Contention seen since the last trial (a reason to try fewer threads).
        suspect: bool,
        /// Windows in a row whose waits were over the share.
        busy: u32,
        /// The window being watched: its start, the caller's thread and that thread's time
        /// waiting for a CPU then (ns).
        window: Option<(Instant, ThreadId, u64)>,
        /// Whether the waits can be read here (else stalls alone are contention).
        readable: bool,
        /// When the current pass's first call started, and at how many threads.
        pass_start: Option<(Instant, usize)>,
        /// Passes done (not failed), and those of them begun below every thread.
        passes: PassCounts,
        trial: Option<Trial>,
    }

    /// The last [`LOAD_READINGS`] readings of the machine's runnable threads (the pool's own
    /// that run or wait for a CPU included), each as two bits: the pool at its limit plus the
    /// rest of the machine overbook the CPUs; one thread more would have a CPU.
    #[derive(Debug, Default)]
    struct Load {
        /// When the last reading was taken.
        at: Option<Instant>,
        /// Readings taken (up to [`LOAD_READINGS`] count).
        count: u32,
        /// The last readings' bits, the newest lowest.
        over: u8,
        room: u8,
    }

    impl Load {
        /// Takes a reading at `now` (at most one a [`WINDOW`]) of the machine's threads that
        /// `runnable` counts (the pool's at its limit among them: they run or spin between
        /// passes; those above it sleep), on `cpus` CPUs.
        fn read(&mut self, now: Instant, cpus: usize, runnable: fn() -> Option<usize>) {
            if self.at.is_some_and(|t| now.duration_since(t) < WINDOW) {
                return;
            }
            let Some(r) = runnable() else {
                return;
            };
            self.at = Some(now);
            self.count = (self.count + 1).min(LOAD_READINGS);
            self.over = (self.over << 1) | u8::from(r > cpus);
            self.room = (self.room << 1) | u8::from(r < cpus);
        }

        /// The last readings' bits of `bits` set, and how many readings there are.
        fn share(&self, bits: u8) -> (u32, u32) {
            let mask = (1u8 << self.count) - 1;
            ((bits & mask).count_ones(), self.count)
        }

        /// Most of the last readings (at least three) overbooked the CPUs.
        fn overbooked(&self) -> bool {
            let (set, of) = self.share(self.over);
            of >= 3 && set * 2 > of
        }

        /// Most of the last readings (at least three) left no CPU for one thread more.
        fn full(&self) -> bool {
            let (set, of) = self.share(self.room);
            of >= 3 && set * 2 < of
        }
    }

    /// Passes timed at two limits.
    #[derive(Debug)]
    struct Trial {
        /// The limits, more threads first.
        limits: [usize; 2],
        /// The token count of the passes timed (others are not).
        tokens: usize,
        /// The arm of the next pass.
        arm: usize,
        /// Whether the last pass ran on this arm too (the first pass after a change of
        /// limit is not timed: workers are waking or going to sleep).
        warm: bool,
        passes: [u32; 2],
        time: [Duration; 2],
        /// Passes seen, timed or not (a trial whose passes keep changing size gives up).
        seen: u32,
    }

    impl Adapt {
        /// `n` threads on `cpus` CPUs, the machine's runnable threads read by `runnable`.
        fn new(n: usize, cpus: usize, runnable: fn() -> Option<usize>) -> Self {
            Adapt {
                n,
                cpus,
                load: Load::default(),
                skips: 0,
                runnable,
                limit: n,
                until: None,
                hold: HOLD,
                suspect: false,
                busy: 0,
                window: None,
                readable: true,
                pass_start: None,
                passes: PassCounts { all: 0, fewer: 0 },
                trial: None,
            }
        }

        /// The threads a call at `now` may use (marking the start of a pass).
        fn threads(&mut self, now: Instant) -> usize {
            let limit = match &self.trial {
                Some(t) => t.limits[t.arm],
                None => self.limit,
            };
            self.pass_start.get_or_insert((now, limit));
            limit
        }

        /// After a call on more than one thread that ended at `now`: `stalled` if a worker
        /// held it up (see [`STALL`]); `wait` reads the caller's thread and its time waiting for
        /// a CPU so far (asked only when a window starts or ends).
        fn observe(
            &mut self,
            now: Instant,
            stalled: bool,
            wait: &mut dyn FnMut() -> Option<(ThreadId, u64)>,
        ) {
            if self.trial.is_some() {
                return;
            }
            self.load.read(now, self.cpus, self.runnable);
            if !self.readable {
                self.suspect |= stalled;
                return;
            }
            if self
                .window
                .is_some_and(|(t0, ..)| now.duration_since(t0) < WINDOW)
            {
                return;
            }
            let Some((id, ns)) = wait() else {
                self.readable = false;
                return;
            };
            if let Some((t0, was_id, was)) = self.window {
                if was_id == id {
                    let span = now.duration_since(t0).as_nanos();
                    let waited = u128::from(ns.saturating_sub(was));
                    // Two windows in a row (one alone is as often a quiet machine's hiccup),
                    // or one where the machine's runnable threads overbook its CPUs.
                    if waited * 1000 > span * u128::from(BUSY_PER_MILLE) {
                        self.busy += 1;
                        self.suspect |= self.busy >= 2 || self.load.overbooked();
                    } else {
                        self.busy = 0;
                    }
                }
            }
            self.window = Some((now, id, ns));
        }

        /// A pass of `tokens` tokens (0: failed) ended at `now`: timed for a trial, which may
        /// end or begin here.
        fn pass_done(&mut self, now: Instant, tokens: usize) {
            let started = self.pass_start.take();
            if tokens > 0 {
                self.passes.all += 1;
                self.passes.fewer += u64::from(started.is_some_and(|(_, at)| at < self.n));
            }
            let Some((start, _)) = started else {
                return;
            };
            if let Some(t) = &mut self.trial {
                t.seen += 1;
                if tokens == t.tokens {
                    if t.warm {
                        t.time[t.arm] += now.duration_since(start);
                        t.passes[t.arm] += 1;
                        t.arm ^= 1;
                    }
                    t.warm = !t.warm;
                }
                if t.passes.iter().all(|&p| p >= TRIAL_PASSES) {
                    // More threads must be faster by a sixteenth (else they only take CPU
                    // from the machine's other work).
                    let more = t.time[0].as_nanos() * 17 < t.time[1].as_nanos() * 16;
                    let won = t.limits[usize::from(!more)];
                    self.hold = if won == self.limit {
                        (self.hold * 2).min(MAX_HOLD)
                    } else {
                        HOLD
                    };
                    self.limit = won;
                    self.settle(now);
                } else if t.seen > 16 * TRIAL_PASSES {
                    self.settle(now);
                }
                return;
            }
            let due = self.until.is_none_or(|u| now >= u);
            if !due {
                // Contention during a hold is the hold's business.
                self.suspect = false;
                return;
            }
            // Choices are made after the passes a trial would time (a prompt's long passes
            // neither start one nor end at fewer threads).
            if tokens == 0 || tokens > TRIAL_TOKENS {
                return;
            }
            // Contention: one thread fewer against the limit; else, below every thread, one
            // more. Where the machine's runnable threads say how that trial would end (they
            // overbook the CPUs; there is no CPU for another), it is not run: the pool's own
            // threads running beside other work on every CPU only slow each other down.
            let hi = if self.suspect && self.limit > 1 {
                if self.load.overbooked() {
                    self.limit -= 1;
                    self.hold = HOLD;
                    self.settle(now);
                    return;
                }
                self.limit
            } else if self.limit < self.n {
                if self.load.full() && self.skips < MAX_SKIPS {
                    self.skips += 1;
                    self.hold = (self.hold * 2).min(MAX_HOLD);
                    self.settle(now);
                    return;
                }
                self.limit + 1
            } else {
                return;
            };
            self.skips = 0;
            self.trial = Some(Trial {
                limits: [hi, hi - 1],
                tokens,
                arm: 0,
                warm: false,
                passes: [0; 2],
                time: [Duration::ZERO; 2],
                seen: 0,
            });
        }

        /// [`Adapt::pass_done`], after a reading of the machine's runnable threads (outside
        /// trials: theirs are at two limits). Calls on more than one thread read them too
        /// ([`Adapt::observe`]), so a long first pass has readings by the time it sees
        /// contention.
        fn pass_ended(&mut self, now: Instant, tokens: usize) {
            // (A pool of one thread has no choice to make: nothing is read.)
            if self.trial.is_none() && self.n > 1 {
                self.load.read(now, self.cpus, self.runnable);
            }
            self.pass_done(now, tokens);
        }

        /// Ends a trial: its choice holds from `now`.
        fn settle(&mut self, now: Instant) {
            self.trial = None;
            self.load = Load::default();
            self.until = Some(now + self.hold);
            self.suspect = false;
            self.busy = 0;
            self.window = None;
        }
    }

    /// The calling thread's time waiting for a CPU while runnable, in ns (the second field of
    /// Linux's `/proc/thread-self/schedstat`), with its id; `None` where that cannot be read.
    /// No heap allocation.
    fn run_queue_wait() -> Option<(ThreadId, u64)> {
        let ns = proc_field("/proc/thread-self/schedstat", 1, |f| f.parse().ok())?;
        Some((std::thread::current().id(), ns))
    }

    /// Field `n` (whitespace-separated) of the small text file at `path`, read by `parse`;
    /// `None` where it cannot be read. No heap allocation.
    fn proc_field<T>(path: &str, n: usize, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).ok()?;
        let mut buf = [0u8; 128];
        let len = f.read(&mut buf).ok()?;
        let text = core::str::from_utf8(buf.get(..len)?).ok()?;
        parse(text.split_ascii_whitespace().nth(n)?)
    }

    /// The machine's runnable threads now (the fourth field of Linux's `/proc/loadavg`, before
    /// its `/`: every CPU's running and waiting threads, the reader's included); `None` where that
    /// cannot be read. No heap allocation.
    fn runnable_threads() -> Option<usize> {
        proc_field("/proc/loadavg", 3, |f| f.split('/').next()?.parse().ok())
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
                limit: AtomicUsize::new(n),
                parked: AtomicUsize::new(0),
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
                            running: Mutex::new(Adapt::new(n, n, runnable_threads)),
                        });
                        return Err(e);
                    }
                }
            }
            let cpus = std::thread::available_parallelism().map_or(n, |c| c.get());
            Ok(ThreadPool {
                shared,
                workers,
                running: Mutex::new(Adapt::new(n, cpus, runnable_threads)),
            })
        }
    }

    impl ThreadPool {
        /// The forward passes run so far, and how many of them began on fewer threads than
        /// the pool has (see the module): what a front end reports when a busy machine held
        /// it back.
        pub fn passes(&self) -> PassCounts {
            self.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .passes
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
                if i >= s.limit.load(Ordering::Relaxed) {
                    park(s, i);
                    continue;
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

    /// Sleeps while worker `i` is above the pool's limit (until `stop`).
    fn park(s: &Shared, i: usize) {
        let mut guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.parked.fetch_add(1, Ordering::SeqCst);
        // Either the caller that raises the limit sees `parked` (and wakes this worker under the
        // lock, which it holds until it sleeps), or this load sees the new limit.
        while i >= s.limit.load(Ordering::SeqCst) && !s.stop.load(Ordering::SeqCst) {
            guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        s.parked.fetch_sub(1, Ordering::SeqCst);
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

        fn active(&self) -> usize {
            self.shared.limit.load(Ordering::Relaxed)
        }

        fn pass_done(&self, tokens: usize) {
            let mut adapt = self.running.lock().unwrap_or_else(|e| e.into_inner());
            adapt.pass_ended(Instant::now(), tokens);
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
            let limit = adapt.threads(Instant::now());
            if s.limit.load(Ordering::Relaxed) != limit {
                s.limit.store(limit, Ordering::SeqCst);
                if s.parked.load(Ordering::SeqCst) != 0 {
                    let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                    s.wake.notify_all();
                }
            }
            let slots = slots.min(limit);
            if slots <= 1 {
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
            let end = Instant::now();
            let stalled = end.duration_since(t0) > own * 2 + STALL;
            adapt.observe(end, stalled, &mut run_queue_wait);
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

        thread_local! {
            /// What [`reading`] reads: the machine's runnable threads as a test sets them
            /// (none unless set).
            static READING: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
        }

        fn reading() -> Option<usize> {
            READING.with(|r| r.get())
        }

        fn ms(n: u64) -> Duration {
            Duration::from_millis(n)
        }

        /// Times one pass at `at` lasting `took`, at the limit the policy gives it; returns
        /// that limit.
        fn pass(a: &mut Adapt, at: Instant, took: Duration, tokens: usize) -> usize {
            let limit = a.threads(at);
            a.pass_done(at + took, tokens);
            limit
        }

        /// An Adapt of `n` threads that cannot read waits (stalls are its contention).
        fn stall_driven(n: usize, t: Instant) -> Adapt {
            let mut a = Adapt::new(n, n, reading);
            a.observe(t, false, &mut || None);
            assert!(!a.readable);
            a
        }

        /// Runs the trial under way to its end, each pass at `*at` taking `took(limit)`
        /// (`at` then moves past it); returns the limits the passes ran at.
        fn finish_trial(
            a: &mut Adapt,
            at: &mut Instant,
            took: &dyn Fn(usize) -> Duration,
        ) -> Vec<usize> {
            let tokens = a.trial.as_ref().expect("a trial").tokens;
            let mut ran = vec![];
            while a.trial.is_some() {
                let limit = a.threads(*at);
                *at += took(limit);
                a.pass_done(*at, tokens);
                ran.push(limit);
                assert!(ran.len() <= 4 * TRIAL_PASSES as usize, "{ran:?}");
            }
            ran
        }

        #[test]
        fn contention_starts_a_trial_whose_faster_limit_holds() {
            let t = Instant::now();
            let mut a = stall_driven(2, t);
            // Quiet: passes and calls without stalls never leave every thread.
            for i in 0..100 {
                a.observe(t + ms(i), false, &mut || None);
                assert_eq!(pass(&mut a, t + ms(i), ms(1), 1), 2);
            }
            assert!(a.trial.is_none());
            // A stall: the pass that saw it starts a trial, each limit two passes in a row
            // (the first of each pair untimed), more threads first.
            a.observe(t + ms(100), true, &mut || None);
            assert_eq!(pass(&mut a, t + ms(100), ms(1), 1), 2);
            let mut at = t + ms(200);
            // Two threads take 5 ms a pass, one 4 ms.
            let ran = finish_trial(&mut a, &mut at, &|l| ms(3 + l as u64));
            let pairs: Vec<usize> = [2, 2, 1, 1].repeat(TRIAL_PASSES as usize);
            assert_eq!(ran, pairs);
            assert_eq!((a.limit, a.hold), (1, HOLD), "a new choice holds HOLD");
            // Contention during the hold changes nothing.
            a.observe(at, true, &mut || None);
            assert_eq!(pass(&mut a, at, ms(4), 1), 1);
            assert!(a.trial.is_none() && !a.suspect);
            // After it, one thread more is tried; one thread wins again and holds twice as long.
            at += HOLD;
            assert_eq!(pass(&mut a, at, ms(4), 1), 1, "the pass that ends the hold");
            finish_trial(&mut a, &mut at, &|l| ms(2 + 2 * l as u64));
            assert_eq!((a.limit, a.hold), (1, 2 * HOLD));
            // Then two threads win: they hold HOLD, and no trial starts without contention.
            at += 2 * HOLD;
            pass(&mut a, at, ms(4), 1);
            finish_trial(&mut a, &mut at, &|l| ms(if l == 2 { 3 } else { 4 }));
            assert_eq!((a.limit, a.hold), (2, HOLD));
            at += MAX_HOLD;
            for _ in 0..100 {
                assert_eq!(pass(&mut a, at, ms(3), 1), 2);
            }
            assert!(a.trial.is_none());
        }

        #[test]
        fn passes_are_counted_with_those_below_every_thread() {
            let mut at = Instant::now();
            let mut a = stall_driven(2, at);
            let mut fewer = 0;
            for i in 0..200u64 {
                if i == 50 {
                    a.observe(at, true, &mut || None);
                }
                let l = a.threads(at);
                at += ms(if l == 2 { 5 } else { 4 });
                a.pass_done(at, 1);
                fewer += u64::from(l < 2);
                // A failed pass is not counted.
                a.threads(at);
                a.pass_done(at, 0);
            }
            assert!(fewer > 0);
            assert_eq!(a.passes, PassCounts { all: 200, fewer });
        }

        #[test]
        fn more_threads_must_be_faster_by_a_sixteenth() {
            for (more, fewer, kept) in [(100, 100, 1), (95, 100, 1), (93, 100, 2), (50, 100, 2)] {
                let mut at = Instant::now();
                let mut a = stall_driven(2, at);
                a.observe(at, true, &mut || None);
                pass(&mut a, at, ms(1), 1);
                let us = |l: usize| Duration::from_micros(if l == 2 { more } else { fewer });
                finish_trial(&mut a, &mut at, &us);
                assert_eq!(a.limit, kept, "{more} against {fewer} us");
            }
        }

        #[test]
        fn the_limit_moves_one_thread_at_a_time_and_holds_at_most_max_hold() {
            let mut at = Instant::now();
            let mut a = stall_driven(4, at);
            let mut limits = vec![];
            // Fewer threads always faster, contention always seen: 4 → 3 → 2 → 1, each through
            // a trial of two adjacent limits, the hold growing while a trial keeps the choice.
            for _ in 0..12 {
                // Every hold ends before the next pass.
                at += MAX_HOLD;
                a.observe(at, true, &mut || None);
                limits.push(pass(&mut a, at, ms(1), 2));
                let [hi, lo] = a.trial.as_ref().expect("a trial").limits;
                assert!(hi == lo + 1 && lo >= 1 && hi <= 4);
                let ran = finish_trial(&mut a, &mut at, &|l| ms(l as u64));
                assert!(ran.iter().all(|&l| l == hi || l == lo));
                limits.push(a.limit);
                assert!(a.hold <= MAX_HOLD);
            }
            assert!(
                limits.windows(2).all(|w| w[0].abs_diff(w[1]) <= 1),
                "{limits:?}"
            );
            assert_eq!(a.limit, 1, "{limits:?}");
            assert_eq!(a.hold, MAX_HOLD);
        }

        #[test]
        fn two_windows_in_a_row_of_waits_over_the_share_are_contention() {
            let t = Instant::now();
            let me = std::thread::current().id();
            let window = WINDOW.as_nanos() as u64;
            for (waits, busy) in [
                (&[0u64, 0, 0][..], false),
                (&[window / 40, window / 40, window / 40], false),
                (&[window / 5, 0, window / 5], false),
                (&[0, window / 5, window / 5], true),
            ] {
                let mut a = Adapt::new(2, 2, reading);
                let mut read = 0u64;
                a.observe(t, false, &mut || Some((me, read)));
                // A stall is not contention where waits are read.
                a.observe(t, true, &mut || panic!("read within the window"));
                for (i, w) in waits.iter().enumerate() {
                    let end = t + WINDOW * (i as u32 + 1);
                    a.observe(end - WINDOW / 2, false, &mut || {
                        panic!("read in the window")
                    });
                    read += w;
                    a.observe(end, false, &mut || Some((me, read)));
                }
                assert_eq!(a.suspect, busy, "{waits:?} ns waited");
                pass(&mut a, t + 4 * WINDOW, ms(1), 1);
                assert_eq!(a.trial.is_some(), busy);
            }
            // Another thread's reading is not compared with this one's.
            let mut a = Adapt::new(2, 2, reading);
            a.observe(t, false, &mut || Some((me, 0)));
            let other = std::thread::spawn(|| std::thread::current().id())
                .join()
                .unwrap();
            // (Each window ends on the other thread: none is compared.)
            for i in 1..5u32 {
                let id = if i % 2 == 1 { other } else { me };
                let ns = u64::MAX / 8 * u64::from(i);
                a.observe(t + WINDOW * i, false, &mut || Some((id, ns)));
            }
            assert!(!a.suspect);
        }

        /// One-token passes, one a window from `*at` (which moves on) for `span`, each ended
        /// with a reading of `runnable` threads; returns the limits they ran at.
        fn read_passes(
            a: &mut Adapt,
            at: &mut Instant,
            runnable: usize,
            span: Duration,
        ) -> Vec<usize> {
            let end = *at + span;
            let mut ran = vec![];
            while *at < end {
                let l = a.threads(*at);
                *at += WINDOW;
                READING.with(|r| r.set(Some(runnable)));
                a.pass_ended(*at, 1);
                READING.with(|r| r.set(None));
                ran.push(l);
            }
            ran
        }

        #[test]
        fn an_overbooked_machine_drops_a_thread_without_a_trial() {
            let mut at = Instant::now();
            let mut a = stall_driven(2, at);
            // Two threads and one more: three runnable on two CPUs.
            assert!(read_passes(&mut a, &mut at, 3, 4 * WINDOW)
                .iter()
                .all(|&l| l == 2));
            a.observe(at, true, &mut || None);
            assert_eq!(read_passes(&mut a, &mut at, 3, WINDOW), [2]);
            assert!(a.trial.is_none());
            assert_eq!((a.limit, a.hold), (1, HOLD));
            // One thread and the other work: two runnable, no CPU for a second thread. Each
            // hold ends without a trial and doubles, MAX_SKIPS times; then a trial runs.
            let mut hold = HOLD;
            for skip in 1..=MAX_SKIPS {
                let ran = read_passes(&mut a, &mut at, 2, hold + WINDOW);
                assert!(ran.iter().all(|&l| l == 1), "{ran:?}");
                hold = (hold * 2).min(MAX_HOLD);
                assert_eq!((a.limit, a.hold, a.skips), (1, hold, skip));
                assert!(a.trial.is_none());
            }
            read_passes(&mut a, &mut at, 2, hold + WINDOW);
            assert!(a.trial.is_some(), "a trial after MAX_SKIPS skips");
            finish_trial(&mut a, &mut at, &|l| ms(3 + l as u64));
            assert_eq!((a.limit, a.skips), (1, 0));
            // The other work ends: one runnable, room for another; the next hold ends in a
            // trial, which two threads win.
            let hold = a.hold;
            read_passes(&mut a, &mut at, 1, hold + WINDOW);
            assert!(a.trial.is_some());
            finish_trial(&mut a, &mut at, &|l| ms(6 - l as u64));
            assert_eq!(a.limit, 2);
        }

        #[test]
        fn calls_on_several_threads_read_the_machine_too() {
            // One long pass (a cold start's page faults, or a prompt), its calls on two threads
            // reading three runnable on two CPUs, contention seen in its last call: the next
            // decode-sized pass ends one thread lower, without a trial.
            let t = Instant::now();
            let mut a = stall_driven(2, t);
            assert_eq!(a.threads(t), 2);
            READING.with(|r| r.set(Some(3)));
            for i in 1..=3 {
                a.observe(t + WINDOW * i, i == 3, &mut || None);
            }
            READING.with(|r| r.set(None));
            assert_eq!(a.load.count, 3);
            // A prompt's pass changes nothing; the next decode step's does.
            a.pass_ended(t + WINDOW * 4, TRIAL_TOKENS + 1);
            assert_eq!(a.limit, 2);
            a.threads(t + WINDOW * 4);
            a.pass_ended(t + WINDOW * 5, 1);
            assert!(a.trial.is_none());
            assert_eq!(a.limit, 1);
        }

        #[test]
        fn one_window_of_waits_is_contention_on_an_overbooked_machine() {
            let t = Instant::now();
            let me = std::thread::current().id();
            let waited = WINDOW.as_nanos() as u64 / 5;
            for (runnable, busy) in [(3, true), (2, false)] {
                let mut a = Adapt::new(2, 2, reading);
                READING.with(|r| r.set(Some(runnable)));
                // A window without waits, then one with: three readings.
                a.observe(t, false, &mut || Some((me, 0)));
                a.observe(t + WINDOW, false, &mut || Some((me, 0)));
                a.observe(t + 2 * WINDOW, false, &mut || Some((me, waited)));
                READING.with(|r| r.set(None));
                assert_eq!(a.suspect, busy, "{runnable} runnable");
            }
        }

        #[test]
        fn readings_weigh_only_with_most_of_the_last_ones() {
            let mut at = Instant::now();
            // Contention with two threads on two CPUs and nothing else runnable in most of
            // the last readings: a trial decides, as without readings.
            let mut a = stall_driven(2, at);
            read_passes(&mut a, &mut at, 3, 2 * WINDOW);
            read_passes(&mut a, &mut at, 2, 3 * WINDOW);
            a.observe(at, true, &mut || None);
            read_passes(&mut a, &mut at, 2, WINDOW);
            assert!(a.trial.is_some());
            // Readings come at most one a window.
            let mut load = Load::default();
            for i in 0..10 {
                load.read(at + WINDOW / 10 * i, 2, || Some(3));
            }
            assert_eq!(load.count, 1);
            assert!(!load.overbooked(), "one reading is not enough");
            // One reading with room among the last four still leaves the machine full.
            let mut load = Load::default();
            for (i, r) in [1, 2, 2, 2].into_iter().enumerate() {
                READING.with(|c| c.set(Some(r)));
                load.read(at + WINDOW * i as u32, 2, reading);
            }
            assert!(load.full());
            load.read(at + WINDOW * 4, 2, || Some(1));
            assert!(load.full(), "the first reading has left the last four");
            load.read(at + WINDOW * 5, 2, || Some(1));
            assert!(!load.full(), "two of the last four with room");
            // Unreadable: no reading.
            let mut load = Load::default();
            READING.with(|c| c.set(None));
            load.read(at, 2, reading);
            assert_eq!(load.count, 0);
            assert!(!load.full() && !load.overbooked());
        }

        #[test]
        fn the_machines_runnable_threads_are_read_here() {
            // Where Linux's file is, the reading counts at least this thread; elsewhere there
            // is none.
            match runnable_threads() {
                Some(r) => assert!(r >= 1, "{r}"),
                None => assert!(
                    !std::path::Path::new("/proc/loadavg").exists(),
                    "/proc/loadavg unreadable"
                ),
            }
        }

        #[test]
        fn a_trial_times_passes_of_its_size_only_and_gives_up_on_others() {
            let t = Instant::now();
            // Passes over TRIAL_TOKENS never start one.
            let mut b = stall_driven(2, t);
            b.observe(t, true, &mut || None);
            pass(&mut b, t, ms(1), TRIAL_TOKENS + 1);
            assert!(b.trial.is_none());
            let mut a = stall_driven(2, t);
            a.observe(t, true, &mut || None);
            pass(&mut a, t, ms(1), 1);
            // Passes of 4 tokens (or failed ones) are not timed and do not move the trial.
            for _ in 0..3 {
                assert_eq!(pass(&mut a, t, ms(50), 4), 2);
                assert_eq!(pass(&mut a, t, ms(50), 0), 2);
            }
            let tr = a.trial.as_ref().unwrap();
            assert_eq!((tr.passes, tr.arm, tr.warm), ([0, 0], 0, false));
            // Too many of them: the trial ends with the limit it had.
            for _ in 0..16 * TRIAL_PASSES {
                pass(&mut a, t, ms(50), 4);
            }
            assert!(a.trial.is_none());
            assert_eq!(a.limit, 2);
        }

        #[test]
        fn workers_above_the_limit_sleep_and_come_back() {
            // The limit falls at once, or once the workers have fallen asleep waiting for a job.
            for idle in [0, 100] {
                workers_above_the_limit_after(ms(idle));
            }
        }

        fn workers_above_the_limit_after(idle: Duration) {
            let pool = ThreadPool::new(3).unwrap();
            std::thread::sleep(idle);
            pool.running.lock().unwrap().limit = 1;
            for _ in 0..50 {
                let on_worker = AtomicUsize::new(0);
                pool.for_each(64, 3, &|_, slot| {
                    if slot != 0 {
                        on_worker.fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert_eq!(on_worker.load(Ordering::Relaxed), 0);
            }
            // Items are cut for the threads in use.
            assert_eq!((pool.threads(), pool.active()), (3, 1));
            // Both workers sleep within 10 s: parked above the limit, or (one that was asleep
            // before the limit fell: no job has woken it since) waiting for a job.
            let asleep = || {
                pool.shared.parked.load(Ordering::SeqCst)
                    + pool.shared.sleepers.load(Ordering::SeqCst)
            };
            let t0 = Instant::now();
            while asleep() != 2 && t0.elapsed() < ms(10_000) {
                std::thread::sleep(ms(1));
            }
            assert_eq!(asleep(), 2);
            // At two threads, worker 1 comes back and worker 2 stays asleep.
            pool.running.lock().unwrap().limit = 2;
            let ran: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            on_slots(&pool, 2, &|slot| {
                ran[slot].fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(ran[2].load(Ordering::Relaxed), 0);
            assert_eq!(pool.active(), 2);
            // All three again.
            on_every_slot(&pool, &|_| {});
        }

        /// Runs a job whose items wait (up to 10 s) until every slot has joined, so each
        /// thread of the pool takes part; `f(slot)` then runs on each.
        fn on_every_slot(pool: &ThreadPool, f: &(dyn Fn(usize) + Sync)) {
            // (At every thread, and with no trial: these items wait for each other.)
            *pool.running.lock().unwrap_or_else(|e| e.into_inner()) =
                Adapt::new(pool.threads(), pool.threads(), reading);
            on_slots(pool, pool.threads(), f);
        }

        /// As [`on_every_slot`] for the first `n` slots, at the pool's current limit.
        fn on_slots(pool: &ThreadPool, n: usize, f: &(dyn Fn(usize) + Sync)) {
            let joined: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
            pool.for_each(64 * n, n, &|_, slot| {
                joined[slot].store(true, Ordering::SeqCst);
                let t0 = Instant::now();
                while !joined.iter().all(|j| j.load(Ordering::SeqCst))
                    && t0.elapsed() < Duration::from_secs(10)
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
