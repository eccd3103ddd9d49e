//! Cancelling a prompt half-way (`Session::set_cancel`) on the real model: wherever the stop
//! lands (between any two layers of any batch), nothing of the stopped batch is kept, and the
//! session goes on exactly as one that never saw it; when the stopped batch had begun to
//! overwrite a full ring, the context is dropped instead, and the session still works.
//!
//! The stop is made deterministic by a [`Parallel`] that raises the flag after a given number of
//! parallel regions (each layer runs a few), so every layer boundary is tried.

use ember_runtime::arena::Arena;
use ember_runtime::kernels::Kernels;
use ember_runtime::kv::KvType;
use ember_runtime::model::Model;
use ember_runtime::parallel::{Parallel, Serial};
use ember_runtime::session::{Session, SessionConfig};
use ember_runtime::Error;
use ember_tests::with_model;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs regions on the caller's thread and sets `flag` once `after` regions have run.
struct CancelAfter<'a> {
    flag: &'a AtomicBool,
    after: AtomicUsize,
}

impl<'a> CancelAfter<'a> {
    /// Never raises `flag` until `after` is set.
    fn new(flag: &'a AtomicBool) -> Self {
        CancelAfter {
            flag,
            after: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Parallel for CancelAfter<'_> {
    fn threads(&self) -> usize {
        1
    }
    fn for_each(&self, items: usize, slots: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        Serial.for_each(items, slots, f);
        if self.after.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

fn config(ctx: usize) -> SessionConfig {
    SessionConfig {
        n_ctx: ctx,
        n_batch: 16,
        sinks: 4,
        kv_type: KvType::F16,
    }
}

/// Runs `f` on a new session of context `ctx` over `par`, watching `cancel` when given.
fn with_session<'m, R>(
    m: &'m Model<'m>,
    ctx: usize,
    par: &'m dyn Parallel,
    cancel: Option<&'m AtomicBool>,
    f: impl FnOnce(&mut Session<'m, '_>) -> R,
) -> R {
    let sc = config(ctx);
    let mut mem = vec![0u8; Session::bytes_needed(m, &sc)];
    let mut s = Session::new(m, &mut Arena::new(&mut mem), &sc).unwrap();
    s.set_parallel(par);
    if let Some(c) = cancel {
        s.set_cancel(c);
    }
    f(&mut s)
}

/// Logits after `a` then `c`, in a session that never saw anything else.
fn reference(m: &Model<'_>, ctx: usize, a: &[u32], c: &[u32]) -> Vec<f32> {
    with_session(m, ctx, &Serial, None, |s| {
        s.eval(a).unwrap();
        s.eval(c).unwrap();
        s.logits().unwrap().to_vec()
    })
}

fn tokens(m: &Model<'_>, text: &str) -> Vec<u32> {
    m.tokenizer
        .encode_to_vec(text.as_bytes(), true, false)
        .unwrap()
}

#[test]
fn a_prompt_stopped_between_any_two_layers_leaves_the_session_as_before() {
    with_model(Kernels::best(), |m| {
        let a = tokens(m, "The capital of France is Paris. The capital of Italy is");
        let b = tokens(
            m,
            " a long digression that will be cancelled half-way through, in its first batch or in its second one, at every layer",
        );
        assert!(b.len() > 16, "{} tokens", b.len());
        let c = tokens(m, " Rome, and the capital of Spain is");
        let ctx = 256; // no wrap: a + b + c fit
        let want = reference(m, ctx, &a, &c);
        // Regions per batch: a few per layer; try stops after 1, 2, ... regions of b's first
        // batch, and in its second batch.
        let per_batch = {
            let flag = AtomicBool::new(false);
            let counter = CancelAfter::new(&flag);
            with_session(m, ctx, &counter, None, |s| s.eval(&b[..16]).unwrap());
            usize::MAX - counter.after.load(Ordering::SeqCst)
        };
        assert!(
            per_batch > m.config.n_layer,
            "{per_batch} regions per batch"
        );
        let mut stops: Vec<usize> = (1..per_batch).step_by(3).collect();
        stops.push(per_batch + 5);
        for &after in &stops {
            let flag = AtomicBool::new(false);
            let par = CancelAfter::new(&flag);
            with_session(m, ctx, &par, Some(&flag), |s| {
                s.eval(&a).unwrap();
                let n = s.n_past();
                par.after.store(after, Ordering::SeqCst);
                assert_eq!(
                    s.eval(&b),
                    Err(Error::Cancelled),
                    "stop after {after} regions"
                );
                assert!(s.logits().is_none());
                // The first batch of b may have completed before the stop; rewind to a.
                s.truncate(n).unwrap();
                flag.store(false, Ordering::SeqCst);
                par.after.store(usize::MAX, Ordering::SeqCst);
                s.eval(&c).unwrap();
                assert_eq!(s.logits().unwrap(), &want[..], "stop after {after} regions");
            });
        }
    })
}

#[test]
fn a_stopped_batch_that_was_overwriting_a_full_ring_drops_the_context() {
    with_model(Kernels::best(), |m| {
        let ctx = 48;
        let long = tokens(
            m,
            &"The quick brown fox jumps over the lazy dog. ".repeat(6),
        );
        assert!(long.len() > ctx);
        let c = tokens(m, "Hello");
        let flag = AtomicBool::new(false);
        let par = CancelAfter::new(&flag);
        with_session(m, ctx, &par, Some(&flag), |s| {
            s.eval(&long[..ctx]).unwrap(); // the ring is full
            par.after.store(7, Ordering::SeqCst);
            assert_eq!(s.eval(&long[ctx..]), Err(Error::Cancelled));
            assert_eq!(
                s.n_past(),
                0,
                "the half-overwritten context must be dropped"
            );
            flag.store(false, Ordering::SeqCst);
            par.after.store(usize::MAX, Ordering::SeqCst);
            s.eval(&c).unwrap();
            assert_eq!(s.logits().unwrap(), &reference(m, ctx, &[], &c)[..]);
        })
    })
}

#[test]
fn a_flag_set_before_a_call_stops_it_at_once() {
    with_model(Kernels::best(), |m| {
        let flag = AtomicBool::new(true);
        with_session(m, 64, &Serial, Some(&flag), |s| {
            assert_eq!(s.eval(&tokens(m, "Hello there")), Err(Error::Cancelled));
            assert_eq!(s.n_past(), 0);
        })
    })
}
