//! Ring invariants: every token attends to exactly the sinks and its window, in position order,
//! whatever the batch sizes; the ring never grows; rewinding is refused once tokens are gone.

use super::*;
use std::vec;
use std::vec::Vec;

fn config(n_ctx_train: usize) -> KvShape {
    KvShape {
        n_layer: 2,
        n_head_kv: 1,
        head_dim: 32,
        max_ctx: n_ctx_train,
        window: 0,
        windowed: LayerSet::EMPTY,
    }
}

/// Positions a token at `p` must see: the sinks, then the window of `cap − sinks` up to p; with
/// a sliding window, only those of the last `window` positions.
fn expected(p: usize, cap: usize, sinks: usize, window: Option<usize>) -> Vec<usize> {
    let lo = sinks.max((p + 1).saturating_sub(cap - sinks));
    let w0 = window.map_or(0, |w| (p + 1).saturating_sub(w));
    (0..sinks.min(p + 1))
        .chain(lo.max(sinks.min(p + 1))..=p)
        .filter(|&q| q >= w0)
        .collect()
}

/// Positions seen by batch token `i` of `layer`, read back from f32 rows holding their position.
fn seen(kv: &KvCache<'_>, layer: usize, i: usize, window: Option<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    kv.for_each_run(layer, 0, i, window, &mut |k, v, n| {
        let (Rows::F32(k), Rows::F32(v)) = (k, v) else {
            panic!("f32 cache")
        };
        assert_eq!((k.len(), v.len()), (n * 32, n * 32));
        for j in 0..n {
            assert_eq!(k[j * 32], v[j * 32] - 0.5);
            out.push(k[j * 32] as usize);
        }
    });
    out
}

struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

#[test]
fn every_token_sees_the_sinks_and_its_window_in_position_order() {
    let c = config(4096);
    let mut rng = Lcg(7);
    for &(cap, sinks, batch) in &[
        (8, 0, 3),
        (8, 2, 6),
        (16, 4, 5),
        (5, 4, 1),
        (33, 3, 30),
        (12, 11, 4),
    ] {
        let kc = KvConfig {
            capacity: cap,
            sinks,
            ty: KvType::F32,
        };
        let mut mem = vec![0u8; KvCache::bytes_needed(&c, &kc, batch)];
        let mut arena = Arena::new(&mut mem);
        let mut kv = KvCache::new(&mut arena, &c, &kc, batch).unwrap();
        assert!(kv.max_batch() <= cap - sinks);
        let mut pos = 0;
        while pos < 6 * cap {
            let n = 1 + rng.below(kv.max_batch());
            for i in 0..n {
                let p = (pos + i) as f32;
                kv.stage(i, &[p; 32], &[p + 0.5; 32]);
            }
            for l in 0..2 {
                for i in 0..n {
                    assert_eq!(
                        seen(&kv, l, i, None),
                        expected(pos + i, cap, sinks, None),
                        "cap {cap} sinks {sinks} p {}",
                        pos + i
                    );
                }
                kv.commit(l, n);
            }
            kv.advance(n);
            pos += n;
            assert_eq!(kv.n_pos(), pos);
            assert_eq!(kv.len(), pos.min(cap));
            for q in 0..pos {
                let held = q < sinks || q + (cap - sinks) >= pos;
                assert_eq!(kv.holds(q), held);
            }
        }
    }
}

#[test]
fn rewinding_works_until_the_ring_overwrites_a_token() {
    let c = config(4096);
    let kc = KvConfig {
        capacity: 8,
        sinks: 2,
        ty: KvType::F16,
    };
    let mut mem = vec![0u8; KvCache::bytes_needed(&c, &kc, 4)];
    let mut arena = Arena::new(&mut mem);
    let mut kv = KvCache::new(&mut arena, &c, &kc, 4).unwrap();
    kv.advance(8);
    assert!(kv.truncate(3).is_ok());
    assert_eq!(kv.n_pos(), 3);
    kv.advance(6);
    assert!(kv.has_wrapped());
    assert!(kv.truncate(5).is_err());
    assert!(kv.truncate(9).is_ok());
    assert_eq!(kv.n_pos(), 9);
    kv.clear();
    assert!(kv.is_empty());
}

#[test]
fn each_precision_stores_rows_faithfully() {
    let c = config(4096);
    let row: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) / 7.0).collect();
    for ty in KvType::ALL {
        let kc = KvConfig {
            capacity: 4,
            sinks: 1,
            ty,
        };
        let mut mem = vec![0u8; KvCache::bytes_needed(&c, &kc, 2)];
        let mut arena = Arena::new(&mut mem);
        let mut kv = KvCache::new(&mut arena, &c, &kc, 2).unwrap();
        kv.stage(0, &row, &row);
        kv.commit(0, 1);
        kv.advance(1);
        let mut back = vec![0.0f32; 32];
        kv.for_each_run(0, 0, 0, None, &mut |k, _, n| {
            if n == 1 && back.iter().all(|&x| x == 0.0) {
                match k {
                    Rows::F16(r) => back.iter_mut().zip(r).for_each(|(b, x)| *b = x.to_f32()),
                    Rows::F32(r) => back.copy_from_slice(r),
                    Rows::Q8_0(r) => crate::weights::blocks::dequantize_q8_0(r, &mut back),
                }
            }
        });
        let tol = match ty {
            KvType::F32 => 0.0,
            KvType::F16 => 1e-3,
            KvType::Q8_0 => 2.3 / 127.0,
        };
        for (a, b) in row.iter().zip(&back) {
            assert!((a - b).abs() <= tol, "{}: {a} vs {b}", ty.name());
        }
        assert_eq!(KvType::from_name(ty.name()), Some(ty));
    }
}

#[test]
fn bad_shapes_are_refused_before_allocating() {
    let c = config(64);
    let mut mem = vec![0u8; 1 << 16];
    for (cap, sinks) in [(0, 0), (65, 0), (8, 8), (8, 9)] {
        let kc = KvConfig {
            capacity: cap,
            sinks,
            ty: KvType::F16,
        };
        let mut arena = Arena::new(&mut mem);
        assert!(KvCache::new(&mut arena, &c, &kc, 4).is_err());
        assert_eq!(arena.used(), 0);
    }
    let mut small = [0u8; 100];
    let mut arena = Arena::new(&mut small);
    let kc = KvConfig {
        capacity: 64,
        sinks: 4,
        ty: KvType::F16,
    };
    assert!(matches!(
        KvCache::new(&mut arena, &c, &kc, 4),
        Err(Error::Capacity { .. })
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Any capacity, sinks and sequence of batch sizes: every token sees exactly the sinks and
    /// its window, in position order; the ring holds what it should; its length never grows
    /// past the capacity; rewinding works exactly until the ring has overwritten a token.
    #[test]
    fn ring_invariants_hold_for_any_batch_sequence(
        cap in 2usize..48,
        sinks_frac in 0.0f64..0.9,
        batches in proptest::collection::vec(1usize..64, 1..40),
        ty in proptest::sample::select(vec![KvType::F32]),
        window in proptest::option::of(1usize..40),
    ) {
        // Layer 1 is a sliding-window layer: with its own ring of `window` cells when the window
        // is smaller than the context.
        let mut c = config(4096);
        if let Some(w) = window {
            c.window = w;
            c.windowed.insert(1);
        }
        let sinks = ((cap as f64 * sinks_frac) as usize).min(cap - 1);
        let kc = KvConfig { capacity: cap, sinks, ty };
        let max_batch = 16;
        let mut mem = vec![0u8; KvCache::bytes_needed(&c, &kc, max_batch)];
        let mut arena = Arena::new(&mut mem);
        let mut kv = KvCache::new(&mut arena, &c, &kc, max_batch).unwrap();
        // The window's own ring is smaller, and the plan counts it.
        let own = window.is_some_and(|w| w < cap);
        proptest::prop_assert_eq!(kv.layer_bytes(1) < kv.layer_bytes(0), own);
        let shared = KvCache::bytes_needed(&config(4096), &kc, max_batch);
        proptest::prop_assert_eq!(KvCache::bytes_needed(&c, &kc, max_batch) < shared, own);
        let mut pos = 0;
        for b in batches {
            let n = 1 + (b - 1) % kv.max_batch();
            for i in 0..n {
                let p = (pos + i) as f32;
                kv.stage(i, &[p; 32], &[p + 0.5; 32]);
            }
            for l in 0..2 {
                for i in 0..n {
                    let w = if l == 1 { window } else { None };
                    let p = pos + i;
                    let want = match w {
                        // Its own ring: exactly the window, whatever the context's ring evicted.
                        Some(w) if w < cap => ((p + 1).saturating_sub(w)..=p).collect(),
                        _ => expected(p, cap, sinks, w),
                    };
                    proptest::prop_assert_eq!(seen(&kv, l, i, w), want);
                }
                kv.commit(l, n);
            }
            kv.advance(n);
            pos += n;
            proptest::prop_assert_eq!(kv.len(), pos.min(cap));
            for q in pos.saturating_sub(3 * cap)..pos {
                proptest::prop_assert_eq!(kv.holds(q), q < sinks || q + (cap - sinks) >= pos);
            }
        }
        let own_wrapped = window.is_some_and(|w| w < cap && pos > w);
        proptest::prop_assert_eq!(kv.truncate(pos / 2).is_ok(), pos <= cap && !own_wrapped);
    }
}
