//! AVX2 + FMA + F16C kernels.

use super::gemm;
use crate::kernels::attend::Softmax;
use crate::kernels::{Isa, Kernels, OutRows, QActs};
use crate::weights::quants::QK_K;
use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, QK};
use core::arch::x86_64::*;
use half::f16;

/// The AVX2 table, if this CPU has AVX2, FMA and F16C.
pub fn kernels() -> Option<Kernels> {
    if !super::avx2_supported() {
        return None;
    }
    Some(Kernels {
        isa: Isa::Avx2,
        numerics: crate::kernels::Numerics::Ember,
        quantize,
        quantize_q8k,
        gemm_q4_0,
        gemm_q4_1,
        gemm_q8_0,
        gemm_blocks: super::blocks::gemm_blocks,
        dot_f32,
        dot_f16_f32,
        axpy_f32,
        rope,
        rope_neox,
        softmax: softmax_chunk,
        scores_f16,
        update_f16: update_f16::<false>,
        update_f16_f32: update_f16_f32::<false>,
        swiglu,
        geglu,
        tanh,
        exp_ggml,
        fma_rows,
        mad_q8_0,
        f16_f32,
    })
}

fn f16_f32(x: &[f16], out: &mut [f32]) {
    // SAFETY: F16C and AVX checked by `kernels()`.
    unsafe { f16_f32_impl(x, out) }
}

/// [`scalar::f16_f32`](crate::kernels::scalar::f16_f32), eight values at a time (the loop
/// inside the target features, so the loads and stores are inlined).
///
/// # Safety
/// AVX and F16C.
#[target_feature(enable = "avx,f16c")]
unsafe fn f16_f32_impl(x: &[f16], out: &mut [f32]) {
    let n = x.len().min(out.len());
    let v = n - n % 8;
    for (o, x) in out[..v].chunks_exact_mut(8).zip(x[..v].chunks_exact(8)) {
        // SAFETY: 8 values in bounds of each chunk.
        unsafe {
            let h = _mm_loadu_si128(x.as_ptr().cast());
            _mm256_storeu_ps(o.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    crate::kernels::scalar::f16_f32(&x[v..n], &mut out[v..n]);
}

fn exp_ggml(x: &mut [f32]) {
    // SAFETY: AVX2+FMA checked by `kernels()`.
    unsafe { exp_ggml_impl(x) }
}

/// `exp_ggml` with its loop inside the target features.
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_ggml_impl(x: &mut [f32]) {
    let n = x.len() - x.len() % 8;
    for c in x[..n].chunks_exact_mut(8) {
        // SAFETY: 8 floats in bounds.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), exp_ggml8(_mm256_loadu_ps(c.as_ptr()))) };
    }
    crate::kernels::scalar::exp_ggml_inplace(&mut x[n..]);
}

fn swiglu(gate: &mut [f32], up: &[f32]) {
    // SAFETY: AVX2+FMA checked by `kernels()`.
    unsafe { swiglu_impl(gate, up) }
}

fn geglu(gate: &mut [f32], up: &[f32]) {
    // SAFETY: AVX2 checked by `kernels()`.
    unsafe { geglu_impl(gate, up) }
}

fn tanh(x: &mut [f32]) {
    // SAFETY: AVX2 checked by `kernels()`.
    unsafe { tanh_impl(x) }
}

/// `tanh` with its loop inside the target features.
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
unsafe fn tanh_impl(x: &mut [f32]) {
    let n = x.len() - x.len() % 8;
    for c in x[..n].chunks_exact_mut(8) {
        // SAFETY: 8 floats in bounds.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), tanh8(_mm256_loadu_ps(c.as_ptr()))) };
    }
    crate::kernels::scalar::tanh_inplace(&mut x[n..]);
}

// The safe wrappers below are only placed in a table by `kernels()` after the CPU check.

fn quantize(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    // SAFETY: AVX2+FMA+F16C checked by `kernels()`.
    unsafe { quantize_impl(x, qs, d, s) }
}

/// `quantize` with its loop inside the target features (so the block kernel and the f16
/// roundings inline: called for every block of every activation row, on the caller's thread
/// alone).
///
/// # Safety
/// AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_impl(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    let nb = (x.len() / QK).min(d.len()).min(s.len()).min(qs.len() / QK);
    for b in 0..nb {
        // SAFETY: block b's 32 floats and 32 bytes are in bounds.
        let (dd, sum) =
            unsafe { quantize_block(x.as_ptr().add(b * QK), qs.as_mut_ptr().add(b * QK)) };
        d[b] = f16f(f32h(dd));
        s[b] = f16f(f32h(dd * sum as f32));
    }
}

fn quantize_q8k(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    // SAFETY: AVX2 checked by `kernels()`.
    unsafe { quantize_q8k_impl(x, qs, d) }
}

/// [`quants::quantize_q8k`](crate::weights::quants::quantize_q8k), eight values a step: the
/// largest magnitude by vector maxima (NaN never wins, as in the spec), the spec's `max` as the
/// first value of that magnitude, then the spec's steps on each value (the product, NaN to 0,
/// the clamp, rounding to nearest even) and its scalar scale.
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
unsafe fn quantize_q8k_impl(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    const V: usize = QK_K / 8;
    for ((xb, qb), d) in x
        .chunks_exact(QK_K)
        .zip(qs.chunks_exact_mut(QK_K))
        .zip(d.iter_mut())
    {
        // SAFETY (all): the block's 256 floats and 256 bytes are in bounds; AVX2 is the
        // caller's.
        unsafe {
            let p = xb.as_ptr();
            let sign = _mm256_set1_ps(-0.0);
            let mut m = _mm256_setzero_ps();
            for i in 0..V {
                // max_ps returns its second operand when the first is NaN.
                m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * i))), m);
            }
            let amax = hmax_ps(m);
            if amax == 0.0 {
                qb.fill(0);
                *d = 0.0;
                continue;
            }
            let target = _mm256_set1_ps(amax);
            let mut max = amax;
            for i in 0..V {
                let v = _mm256_loadu_ps(p.add(8 * i));
                let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(
                    _mm256_andnot_ps(sign, v),
                    target,
                ));
                if hit != 0 {
                    max = xb[8 * i + hit.trailing_zeros() as usize];
                    break;
                }
            }
            let iscale = -127.0 / max;
            let vs = _mm256_set1_ps(iscale);
            let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
            let q = qb.as_mut_ptr();
            for i in 0..V / 4 {
                let mut iv = [_mm256_setzero_si256(); 4];
                for (j, ivj) in iv.iter_mut().enumerate() {
                    let y = _mm256_mul_ps(vs, _mm256_loadu_ps(p.add(32 * i + 8 * j)));
                    // NaN lanes to 0 (the spec's), then its clamp and rounding.
                    let y = _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_ORD_Q>(y, y));
                    let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
                    *ivj = _mm256_cvtps_epi32(_mm256_round_ps::<
                        { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                    >(y));
                }
                // 32 × i32 within ±127 → 32 × i8, the packs' lane interleaving undone.
                let p01 = _mm256_packs_epi32(iv[0], iv[1]);
                let p23 = _mm256_packs_epi32(iv[2], iv[3]);
                let b = _mm256_permutevar8x32_epi32(
                    _mm256_packs_epi16(p01, p23),
                    _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
                );
                _mm256_storeu_si256(q.add(32 * i).cast(), b);
            }
            *d = 1.0 / iscale;
        }
    }
}

fn gemm_q4_0(w: &[BlockQ4_0], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: AVX2+FMA+F16C checked by `kernels()`.
    unsafe { crate::kernels::tiles::drive(&gemm::avx2::Q4_0, w, a, out) }
}

fn gemm_q4_1(w: &[BlockQ4_1], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: as above.
    unsafe { crate::kernels::tiles::drive(&gemm::avx2::Q4_1, w, a, out) }
}

fn gemm_q8_0(w: &[BlockQ8_0], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: as above.
    unsafe { crate::kernels::tiles::drive(&gemm::avx2::Q8_0, w, a, out) }
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: AVX2+FMA checked by `kernels()`.
    unsafe { dot_f32_impl(a, b) }
}

fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    // SAFETY: AVX2+FMA+F16C checked by `kernels()`.
    unsafe { dot_f16_f32_impl(a, b) }
}

/// [`scalar::rope`](crate::kernels::scalar::rope) with the FMA instruction (the spec's
/// `mul_add` is a library call in a build without FMA enabled).
fn rope(x: &mut [f32], cs: &[f32]) {
    /// # Safety
    /// AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn with_fma(x: &mut [f32], cs: &[f32]) {
        crate::kernels::scalar::rope(x, cs)
    }
    // SAFETY: AVX2+FMA checked by `kernels()`.
    unsafe { with_fma(x, cs) }
}

/// [`scalar::rope_neox`](crate::kernels::scalar::rope_neox) with the FMA instruction.
fn rope_neox(x: &mut [f32], cs: &[f32]) {
    /// # Safety
    /// AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn with_fma(x: &mut [f32], cs: &[f32]) {
        crate::kernels::scalar::rope_neox(x, cs)
    }
    // SAFETY: AVX2+FMA checked by `kernels()`.
    unsafe { with_fma(x, cs) }
}

/// [`scalar::softmax_chunk`](crate::kernels::scalar::softmax_chunk): the running max as a prefix
/// max over 8 keys at a time, the exponentials 4 at a time in f64 (the spec's operations, its
/// table by a gather), the sum of weights key by key with the FMA instruction.
fn softmax_chunk(x: &mut [f32], grows: &mut [bool], scale: f32, st: &mut Softmax) {
    // SAFETY: AVX2+FMA checked by `kernels()`.
    unsafe { softmax_chunk_impl(x, grows, scale, st) }
}

/// Lanes 0..K of `v` moved up by K (lane i + K gets lane i), lanes below K set to `fill`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn shift_up<const K: i32, const MASK: i32>(v: __m256, fill: __m256) -> __m256 {
    let idx = _mm256_setr_epi32(0, 1 - K, 2 - K, 3 - K, 4 - K, 5 - K, 6 - K, 7 - K);
    let moved = _mm256_permutevar8x32_ps(v, _mm256_max_epi32(idx, _mm256_setzero_si256()));
    _mm256_blend_ps::<MASK>(moved, fill)
}

/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_chunk_impl(x: &mut [f32], grows: &mut [bool], scale: f32, st: &mut Softmax) {
    use crate::kernels::scalar::{
        exp_softmax, exp_softmax_consts, softmax_factors, softmax_sum, EXP_SOFTMAX_HI,
        EXP_SOFTMAX_LO, EXP_SOFTMAX_T,
    };
    let n = x.len().min(grows.len());
    let (x, grows) = (&mut x[..n], &mut grows[..n]);
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let vscale = _mm256_set1_ps(scale);
    let mut run = st.max;
    let mut j = 0;
    while j + 8 <= n {
        let s = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(j)), vscale);
        // A NaN score never becomes the max: −∞ in the scan. `max_ps` returns its second
        // operand on ties, so the earlier key's value is kept, as the spec's strict `>` keeps it.
        let mut p = _mm256_blendv_ps(ninf, s, _mm256_cmp_ps::<_CMP_ORD_Q>(s, s));
        p = _mm256_max_ps(p, shift_up::<1, 0b1>(p, ninf));
        p = _mm256_max_ps(p, shift_up::<2, 0b11>(p, ninf));
        p = _mm256_max_ps(p, shift_up::<4, 0b1111>(p, ninf));
        let r = _mm256_set1_ps(run);
        p = _mm256_max_ps(p, r);
        // The max before each key: the running max, then the prefix max one key back.
        let before = shift_up::<1, 0b1>(p, r);
        let g = _mm256_cmp_ps::<_CMP_GT_OQ>(s, before);
        let f = _mm256_blendv_ps(_mm256_sub_ps(s, before), _mm256_sub_ps(before, s), g);
        _mm256_storeu_ps(x.as_mut_ptr().add(j), f);
        // The 8 masks as bytes 0 or 1.
        let g1 = _mm256_and_si256(_mm256_castps_si256(g), _mm256_set1_epi32(1));
        let g16 = _mm_packs_epi32(
            _mm256_castsi256_si128(g1),
            _mm256_extracti128_si256::<1>(g1),
        );
        // SAFETY (of the store): grows[j..j + 8] is in bounds, and 0 and 1 are valid `bool`s.
        _mm_storel_epi64(
            grows.as_mut_ptr().add(j) as *mut __m128i,
            _mm_packs_epi16(g16, g16),
        );
        run = _mm256_cvtss_f32(_mm256_permutevar8x32_ps(p, _mm256_set1_epi32(7)));
        j += 8;
    }
    let run = softmax_factors(&mut x[j..], &mut grows[j..], scale, run);
    // e^x of 4 lanes in f64, operation for operation as `exp_softmax`.
    let [inv_ln2_n, c0, c1, c2, shift] = exp_softmax_consts().map(|c| _mm256_set1_pd(c));
    let (hi, lo) = (
        _mm_set1_ps(f32::from_bits(EXP_SOFTMAX_HI)),
        _mm_set1_ps(f32::from_bits(EXP_SOFTMAX_LO)),
    );
    let mut j = 0;
    while j + 4 <= n {
        let xs = _mm_loadu_ps(x.as_ptr().add(j));
        let z = _mm256_mul_pd(inv_ln2_n, _mm256_cvtps_pd(xs));
        let kd = _mm256_add_pd(z, shift);
        let ki = _mm256_castpd_si256(kd);
        let r = _mm256_sub_pd(z, _mm256_sub_pd(kd, shift));
        let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
        let t = _mm256_i64gather_epi64::<8>(EXP_SOFTMAX_T.as_ptr() as *const i64, idx);
        let sc = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
        let y = _mm256_add_pd(
            _mm256_mul_pd(_mm256_add_pd(_mm256_mul_pd(c0, r), c1), _mm256_mul_pd(r, r)),
            _mm256_add_pd(_mm256_mul_pd(c2, r), _mm256_set1_pd(1.0)),
        );
        let e = _mm256_cvtpd_ps(_mm256_mul_pd(y, sc));
        // The spec's early returns: NaN as it is, ∞ above the range, 0 below it.
        let e = _mm_blendv_ps(e, _mm_set1_ps(f32::INFINITY), _mm_cmpgt_ps(xs, hi));
        let e = _mm_blendv_ps(e, _mm_setzero_ps(), _mm_cmplt_ps(xs, lo));
        let e = _mm_blendv_ps(e, xs, _mm_cmpunord_ps(xs, xs));
        _mm_storeu_ps(x.as_mut_ptr().add(j), e);
        j += 4;
    }
    for f in x[j..].iter_mut() {
        *f = exp_softmax(*f);
    }
    // (Inlined here, the spec's fused multiply-adds are the FMA instruction.)
    st.sum = softmax_sum(x, grows, st.sum);
    st.max = run;
}

/// [`scalar::scores_f16`](crate::kernels::scalar::scores_f16): for heads of whole groups of 64,
/// eight keys at a time with their eight horizontal sums done together; else key by key.
fn scores_f16(keys: &[f16], q: &[f32], out: &mut [f32]) {
    let hd = q.len();
    let n = out.len();
    let keys = &keys[..n * hd];
    if hd == 0 || !hd.is_multiple_of(64) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = dot_f16_f32(&keys[j * hd..(j + 1) * hd], q);
        }
        return;
    }
    // SAFETY: AVX2+FMA+F16C checked by `kernels()`; `keys` holds n rows of hd values (sliced
    // above), `q` hd values, `out` n.
    unsafe { scores_f16_impl(keys.as_ptr(), q.as_ptr(), hd, out) }
}

/// [`scalar::update_f16`](crate::kernels::scalar::update_f16) into an f16 running sum: for heads
/// of whole groups of 8, the running sum is held in registers, up to 64 values at a time, across
/// the chunk's keys; else key by key. `EVEX`: compiled with AVX-512 VL's 32 vector registers
/// ([`update_blocks_evex`]; the AVX-512 set's, whose CPUs have them).
pub(super) fn update_f16<const EVEX: bool>(
    acc: &mut [f16],
    values: &[f16],
    grows: &[bool],
    w: &[f32],
) {
    let (hd, m) = (acc.len(), grows.len().min(w.len()));
    let values = &values[..m * hd];
    if hd % 8 != 0 {
        // SAFETY (of both calls): AVX2+FMA+F16C checked by `kernels()`.
        crate::kernels::attend::per_key(
            acc,
            0,
            grows,
            w,
            |acc, a| unsafe { scale_f16_impl(acc, a) },
            |acc, j, a| unsafe { mad_f16_impl(acc, &values[j * hd..(j + 1) * hd], a) },
        );
        return;
    }
    let acc = acc.as_mut_ptr() as *mut u8;
    // SAFETY: AVX2+FMA+F16C checked by `kernels()` (and AVX-512 F/VL by the AVX-512 set's, the
    // only one that takes `EVEX`); `acc` holds hd f16 values and `values` m rows of hd (sliced
    // above), hd a multiple of 8.
    unsafe {
        if EVEX {
            update_blocks_evex::<true>(acc, values.as_ptr(), hd, &grows[..m], w)
        } else {
            update_blocks::<true>(acc, values.as_ptr(), hd, &grows[..m], w)
        }
    }
}

/// The same into an f32 running sum (ember's numerics): the f16 kernel's loop without its
/// roundings.
pub(super) fn update_f16_f32<const EVEX: bool>(
    acc: &mut [f32],
    values: &[f16],
    grows: &[bool],
    w: &[f32],
) {
    let (hd, m) = (acc.len(), grows.len().min(w.len()));
    let values = &values[..m * hd];
    if hd % 8 != 0 {
        return crate::kernels::scalar::update_f16(acc, values, &grows[..m], w);
    }
    let acc = acc.as_mut_ptr() as *mut u8;
    // SAFETY: as in `update_f16`, with `acc` holding hd f32 values.
    unsafe {
        if EVEX {
            update_blocks_evex::<false>(acc, values.as_ptr(), hd, &grows[..m], w)
        } else {
            update_blocks::<false>(acc, values.as_ptr(), hd, &grows[..m], w)
        }
    }
}

/// `update_f16` (`F16`) or `update_f16_f32` over the whole head ([`update_head`]) with AVX2's 16
/// vector registers.
///
/// # Safety
/// AVX2, FMA and F16C; as [`update_head`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn update_blocks<const F16: bool>(
    acc: *mut u8,
    v: *const f16,
    hd: usize,
    grows: &[bool],
    w: &[f32],
) {
    // SAFETY: the caller's.
    unsafe { update_head::<F16, false>(acc, v, hd, grows, w) }
}

/// [`update_blocks`] with AVX-512 VL's 32 (the same instructions, EVEX-encoded where they use
/// registers 16–31): the f32 sum's 64 columns no longer spill one register to the stack on every
/// key (measured 2026-12-06, criterion `attention_head_ctx512`, 512 keys of 64: 3.6–3.9 µs
/// against 4.8–5.0).
///
/// # Safety
/// AVX2, FMA, F16C, AVX-512 F and VL; as [`update_head`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
unsafe fn update_blocks_evex<const F16: bool>(
    acc: *mut u8,
    v: *const f16,
    hd: usize,
    grows: &[bool],
    w: &[f32],
) {
    // SAFETY: the caller's.
    unsafe { update_head::<F16, true>(acc, v, hd, grows, w) }
}

/// The whole head, 64 columns at a time, then 32, then 8 ([`update_cols`]). With 16 registers
/// (`!EVEX`) the f32 sum takes 32 at a time: LLVM hoists the eight conversions of a key's 64
/// values above its additions, and eight sums, eight values and the weight are one register
/// too many (32 at a time: 4.0–4.4 µs against 4.8–5.0 in the measurement above); the f16 sum's
/// roundings keep its 64 in registers.
///
/// # Safety
/// Inlined into a function with AVX2, FMA and F16C enabled (and AVX-512 F/VL with `EVEX`); `hd`
/// a multiple of 8; `acc` must point to `hd` writable running-sum values (f16 if `F16`, else
/// f32) and `v` to `grows.len()` rows of `hd` values; `w` at least as long as `grows`.
#[inline(always)]
unsafe fn update_head<const F16: bool, const EVEX: bool>(
    acc: *mut u8,
    v: *const f16,
    hd: usize,
    grows: &[bool],
    w: &[f32],
) {
    let size = if F16 { 2 } else { 4 };
    let mut c = 0;
    // SAFETY (of each call): columns c..c + 8R of the head (the caller's pointers).
    unsafe {
        while (F16 || EVEX) && c + 64 <= hd {
            update_cols::<8, F16>(acc.add(c * size), v.add(c), hd, grows, w);
            c += 64;
        }
        while c + 32 <= hd {
            update_cols::<4, F16>(acc.add(c * size), v.add(c), hd, grows, w);
            c += 32;
        }
        while c < hd {
            update_cols::<1, F16>(acc.add(c * size), v.add(c), hd, grows, w);
            c += 8;
        }
    }
}

/// f32 → nearest f16 → f32, 8 lanes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn round16(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}

/// The running sum's 8·R columns at `acc` (values at `v`, rows `hd` apart), key by key with those
/// columns in registers. With `F16`, the sum is f16 and every step rounds to f16 as
/// `scale_f16_impl` and `mad_f16_impl` do; else it is f32 and each step is one product or one
/// fused multiply-add, as the spec's.
///
/// # Safety
/// Inlined into a function with AVX2, FMA and F16C enabled; `acc` must point to 8·R writable
/// values (f16 if `F16`, else f32) and `v` to `grows.len()` rows of `hd` values, of which this
/// reads 8·R at the same offset; `w` must be at least as long as `grows`.
#[inline(always)]
unsafe fn update_cols<const R: usize, const F16: bool>(
    acc: *mut u8,
    v: *const f16,
    hd: usize,
    grows: &[bool],
    w: &[f32],
) {
    let mut a = [_mm256_setzero_ps(); R];
    for (r, a) in a.iter_mut().enumerate() {
        *a = if F16 {
            _mm256_cvtph_ps(_mm_loadu_si128(acc.add(16 * r) as *const __m128i))
        } else {
            _mm256_loadu_ps(acc.add(32 * r) as *const f32)
        };
    }
    for (j, (&g, &wj)) in grows.iter().zip(w).enumerate() {
        let mut wj = wj;
        if g {
            let s = _mm256_set1_ps(wj);
            for a in a.iter_mut() {
                *a = _mm256_mul_ps(*a, s);
                if F16 {
                    *a = round16(*a);
                }
            }
            wj = 1.0;
        }
        let vw = _mm256_set1_ps(wj);
        let row = v.add(j * hd);
        for (r, a) in a.iter_mut().enumerate() {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * r) as *const __m128i));
            *a = _mm256_fmadd_ps(x, vw, *a);
            if F16 {
                *a = round16(*a);
            }
        }
    }
    for (r, a) in a.iter().enumerate() {
        if F16 {
            let p = acc.add(16 * r) as *mut __m128i;
            _mm_storeu_si128(p, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(*a));
        } else {
            _mm256_storeu_ps(acc.add(32 * r) as *mut f32, *a);
        }
    }
}

fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    // SAFETY: as above.
    unsafe { axpy_f32_impl(y, a, x) }
}

fn mad_q8_0(y: &mut [f32], x: &[BlockQ8_0], a: f32) {
    // SAFETY: as above.
    unsafe { mad_q8_0_impl(y, x, a) }
}

/// y = fma(q·d, a, y) over whole blocks, 8 values at a time (q·d is exact, so this matches the
/// scalar spec).
///
/// # Safety
/// AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mad_q8_0_impl(y: &mut [f32], x: &[BlockQ8_0], a: f32) {
    let va = _mm256_set1_ps(a);
    for (yb, b) in y.chunks_exact_mut(QK).zip(x) {
        let vd = _mm256_set1_ps(f16f(b.d));
        for g in 0..QK / 8 {
            // SAFETY (of the raw accesses): 8 quants and 8 floats of this block, in bounds.
            let q = _mm_loadl_epi64(b.qs.as_ptr().add(8 * g) as *const __m128i);
            let xv = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), vd);
            let yp = yb.as_mut_ptr().add(8 * g);
            _mm256_storeu_ps(yp, _mm256_fmadd_ps(xv, va, _mm256_loadu_ps(yp)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks shared with the AVX-512 set.
// ---------------------------------------------------------------------------------------------

/// Horizontal sum of 8 floats.
///
/// # Safety
/// The CPU must support AVX2.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hsum_ps(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal max of 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// Quantizes 32 floats to 32 i8 as the scalar spec does (scale amax/127, ties to even, NaN as 0).
/// Returns the f32 scale and the sum of the quants.
///
/// # Safety
/// The CPU must support AVX2; `x` must point to 32 floats and `q` to 32 writable bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_block(x: *const f32, q: *mut i8) -> (f32, i32) {
    let sign = _mm256_set1_ps(-0.0);
    let v = [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ];
    // max_ps returns its second operand when the first is NaN, so NaN never becomes the max.
    let mut m = _mm256_setzero_ps();
    for &vi in &v {
        m = _mm256_max_ps(_mm256_andnot_ps(sign, vi), m);
    }
    let amax = hmax_ps(m);
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let mut iv = [_mm256_setzero_si256(); 4];
    for (i, &vi) in v.iter().enumerate() {
        let s = _mm256_mul_ps(vi, id);
        // Zero NaN lanes (NaN inputs, or inf * 0) as the scalar `as i8` does.
        let s = _mm256_and_ps(s, _mm256_cmp_ps(s, s, _CMP_ORD_Q));
        // Clamp as the spec does (127 / amax overflows for subnormal amax).
        let s = _mm256_min_ps(
            _mm256_max_ps(s, _mm256_set1_ps(-127.0)),
            _mm256_set1_ps(127.0),
        );
        let r = _mm256_round_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        iv[i] = _mm256_cvtps_epi32(r);
    }
    let sum = _mm256_add_epi32(
        _mm256_add_epi32(iv[0], iv[1]),
        _mm256_add_epi32(iv[2], iv[3]),
    );
    let s128 = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let s128 = _mm_hadd_epi32(s128, s128);
    let s128 = _mm_hadd_epi32(s128, s128);
    let total = _mm_cvtsi128_si32(s128);
    // Pack 32 × i32 → 32 × i8 (values are within ±127, so saturation never triggers), then undo
    // the lane interleaving of the pack instructions.
    let p01 = _mm256_packs_epi32(iv[0], iv[1]);
    let p23 = _mm256_packs_epi32(iv[2], iv[3]);
    let p = _mm256_packs_epi16(p01, p23);
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q as *mut __m256i, p);
    (d, total)
}

/// f16 → f32 with the F16C instruction (the `half` crate's portable conversion is far slower and
/// this runs four times per block).
#[inline]
#[target_feature(enable = "f16c")]
pub(crate) unsafe fn f16f(x: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x.to_bits() as i32)))
}

/// f32 → f16 (round to nearest even) with F16C.
#[inline]
#[target_feature(enable = "f16c")]
pub(crate) unsafe fn f32h(x: f32) -> f16 {
    f16::from_bits(
        _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) as u16,
    )
}

// ---------------------------------------------------------------------------------------------
// Dot products.
// ---------------------------------------------------------------------------------------------

/// Scalar fused multiply-add.
#[inline]
#[target_feature(enable = "fma")]
unsafe fn fmas(a: f32, b: f32, c: f32) -> f32 {
    _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)))
}

// The f32 dot follows the scalar spec: 16 lanes of FMA (lanes 0–7 and 8–15 in two registers),
// folded to 8 and `hsum8`, then the tail one element at a time (fused).

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8)), hi);
        i += 16;
    }
    let mut s = hsum_ps(_mm256_add_ps(lo, hi));
    while i < n {
        s = fmas(a[i], b[i], s);
        i += 1;
    }
    s
}

/// The f16 dot in [`scalar::vec_dot_f16_f32`](crate::kernels::scalar::vec_dot_f16_f32)'s
/// order: ggml's 4 banks of 16 lanes are 8 registers here (bank j's lanes 0–7 and 8–15).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_f32_impl(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let whole = n - n % 64;
    let mut sum = hsum_ps(f16_lanes(a.as_ptr(), b.as_ptr(), whole)) as f64;
    for i in whole..n {
        sum += (f16f(a[i]) * b[i]) as f64;
    }
    sum as f32
}

/// The 8 lanes [`dot_f16_f32_impl`] sums horizontally, for `n` (a multiple of 64) values at `a`
/// and `b`: the 4 banks of 16 lanes of fused multiply-adds, added as (b0 + b2) + (b1 + b3), then
/// lanes 0–7 + 8–15.
///
/// # Safety
/// AVX2, FMA and F16C; `a` and `b` must point to `n` values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_lanes(a: *const f16, b: *const f32, n: usize) -> __m256 {
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 64 <= n {
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_cvtph_ps(_mm_loadu_si128(a.add(i + 8 * r) as *const __m128i));
            *acc = _mm256_fmadd_ps(av, _mm256_loadu_ps(b.add(i + 8 * r)), *acc);
        }
        i += 64;
    }
    let lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    _mm256_add_ps(lo, hi)
}

/// `scores_f16` for `hd` a multiple of 64: each key's lanes as [`f16_lanes`], and the horizontal
/// sums of eight keys as [`hsum_ps`] computes each (halves added, then lanes 0 + 2 and 1 + 3,
/// then those two), done for the eight at once by shuffles.
///
/// # Safety
/// AVX2, FMA and F16C; `keys` must point to `out.len()` rows of `hd` values and `q` to `hd`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_f16_impl(keys: *const f16, q: *const f32, hd: usize, out: &mut [f32]) {
    let n = out.len();
    let mut j = 0;
    while j + 8 <= n {
        let mut v = [_mm256_setzero_ps(); 8];
        for (r, v) in v.iter_mut().enumerate() {
            *v = f16_lanes(keys.add((j + r) * hd), q, hd);
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(j), hsum_8x8(&v));
        j += 8;
    }
    while j < n {
        out[j] = hsum_ps(f16_lanes(keys.add(j * hd), q, hd));
        j += 1;
    }
}

/// [`hsum_ps`] of each of eight vectors, as one vector (lane k: vector k's sum), with the same
/// additions in the same operand order.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_8x8(v: &[__m256; 8]) -> __m256 {
    // Lane i of each 128-bit half: x_i + x_{i+4}, the low half key a's, the high half key b's.
    let halves = |a: __m256, b: __m256| {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    };
    let (t01, t23) = (halves(v[0], v[1]), halves(v[2], v[3]));
    let (t45, t67) = (halves(v[4], v[5]), halves(v[6], v[7]));
    // (s0 + s2, s1 + s3) of two keys' sums per half.
    let pairs = |t: __m256, u: __m256| {
        _mm256_add_ps(
            _mm256_shuffle_ps::<0b01_00_01_00>(t, u),
            _mm256_shuffle_ps::<0b11_10_11_10>(t, u),
        )
    };
    let (u0, u1) = (pairs(t01, t23), pairs(t45, t67));
    // Lanes: keys 0, 2, 4, 6 | 1, 3, 5, 7.
    let r = _mm256_add_ps(
        _mm256_shuffle_ps::<0b10_00_10_00>(u0, u1),
        _mm256_shuffle_ps::<0b11_01_11_01>(u0, u1),
    );
    _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

fn fma_rows(acc: &mut [f32], a: &[f32], b: &[f32], stride: usize) {
    let n = acc.len();
    if a.is_empty() || n == 0 {
        return;
    }
    assert!(stride >= n && b.len() >= (a.len() - 1) * stride + n);
    // SAFETY: AVX2+FMA checked by `kernels()`; every row i of b read below is b[i·stride..][..n],
    // in bounds by the assertion.
    unsafe { fma_rows_impl(acc, a, b, stride) }
}

/// [`scalar::fma_rows`](crate::kernels::scalar::fma_rows) with up to 64 accumulators held in
/// registers across all the rows: 64 columns at a time, then the rest of the whole registers in
/// one pass (a fixed count of registers each, so the loop over the rows tests none of them:
/// with a test per register, 64 × 64 took 233 ns against 173, 2026-12-05).
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_rows_impl(acc: &mut [f32], a: &[f32], b: &[f32], stride: usize) {
    let n = acc.len();
    let (ap, bp) = (acc.as_mut_ptr(), b.as_ptr());
    let mut j0 = 0;
    while j0 + 8 <= n {
        let (p, q) = (ap.add(j0), bp.add(j0));
        let w = ((n - j0) / 8).min(8);
        match w {
            1 => fma_cols::<1>(p, a, q, stride),
            2 => fma_cols::<2>(p, a, q, stride),
            3 => fma_cols::<3>(p, a, q, stride),
            4 => fma_cols::<4>(p, a, q, stride),
            5 => fma_cols::<5>(p, a, q, stride),
            6 => fma_cols::<6>(p, a, q, stride),
            7 => fma_cols::<7>(p, a, q, stride),
            _ => fma_cols::<8>(p, a, q, stride),
        }
        j0 += 8 * w;
    }
    // The last columns (fewer than a register's worth): the scalar spec on them.
    crate::kernels::scalar::fma_rows(&mut acc[j0..], a, &b[j0..], stride);
}

/// `fma_rows` for the 8·R columns at `acc`, rows of `b` at `b`, `stride` apart.
///
/// # Safety
/// AVX2 and FMA; `acc` must point to 8·R writable floats and `b` to `a.len()` rows of which
/// this reads 8·R at the same offset.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_cols<const R: usize>(acc: *mut f32, a: &[f32], b: *const f32, stride: usize) {
    let mut r = [_mm256_setzero_ps(); R];
    for (k, r) in r.iter_mut().enumerate() {
        *r = _mm256_loadu_ps(acc.add(8 * k));
    }
    for (i, &ai) in a.iter().enumerate() {
        let va = _mm256_set1_ps(ai);
        let row = b.add(i * stride);
        for (k, r) in r.iter_mut().enumerate() {
            *r = _mm256_fmadd_ps(va, _mm256_loadu_ps(row.add(8 * k)), *r);
        }
    }
    for (k, r) in r.iter().enumerate() {
        _mm256_storeu_ps(acc.add(8 * k), *r);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_f32_impl(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let yp = y.as_mut_ptr().add(i);
        let xv = _mm256_loadu_ps(x.as_ptr().add(i));
        _mm256_storeu_ps(yp, _mm256_fmadd_ps(va, xv, _mm256_loadu_ps(yp)));
        i += 8;
    }
    while i < n {
        y[i] = fmas(a, x[i], y[i]);
        i += 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mad_f16_impl(y: &mut [f16], x: &[f16], a: f32) {
    let n = y.len().min(x.len());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let yp = y.as_mut_ptr().add(i) as *mut __m128i;
        let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
        let yv = _mm256_cvtph_ps(_mm_loadu_si128(yp));
        let r = _mm256_fmadd_ps(xv, va, yv);
        _mm_storeu_si128(yp, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r));
        i += 8;
    }
    while i < n {
        y[i] = f32h(libm::fmaf(f16f(x[i]), a, f16f(y[i])));
        i += 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_f16_impl(y: &mut [f16], a: f32) {
    let n = y.len();
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let yp = y.as_mut_ptr().add(i) as *mut __m128i;
        let r = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(yp)), va);
        _mm_storeu_si128(yp, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r));
        i += 8;
    }
    while i < n {
        y[i] = f32h(f16f(y[i]) * a);
        i += 1;
    }
}

/// e^x for 8 lanes, operation for operation as
/// [`scalar::exp_ggml`](crate::kernels::scalar::exp_ggml) (ggml's AVX-512 `ggml_v_expf`; the
/// final ·2ⁿ, one instruction there, is two exact-then-rounding products here).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_ggml8(x: __m256) -> __m256 {
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let shift = _mm256_set1_ps(12_582_912.0);
    let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), shift);
    let n = _mm256_sub_ps(z, shift);
    let b = _mm256_fnmadd_ps(n, c(0x3f31_7200), x);
    let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), b);
    let u = _mm256_mul_ps(b, b);
    let hi = _mm256_fmadd_ps(
        _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
        u,
        _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
    );
    let j = _mm256_fmadd_ps(
        hi,
        u,
        _mm256_fmadd_ps(c(0x3f7f_fff6), b, _mm256_set1_ps(1.0)),
    );
    // ·2ⁿ as (·2^(n−n/2))·2^(n/2) for |n| ≤ 192 (both powers normal: the first product is
    // exact, the second rounds once, as `vscalefps` does); NaN n (NaN x) stays NaN through j.
    let big = _mm256_cmp_ps(
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), n),
        _mm256_set1_ps(192.0),
        _CMP_GT_OQ,
    );
    let nc = _mm256_min_ps(
        _mm256_max_ps(n, _mm256_set1_ps(-192.0)),
        _mm256_set1_ps(192.0),
    );
    let ni = _mm256_cvtps_epi32(nc);
    let n1 = _mm256_srai_epi32(ni, 1);
    let n2 = _mm256_sub_epi32(ni, n1);
    let pow2 = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(k, _mm256_set1_epi32(127)),
            23,
        ))
    };
    let res = _mm256_mul_ps(_mm256_mul_ps(j, pow2(n2)), pow2(n1));
    let nan = _mm256_cmp_ps(n, n, _CMP_UNORD_Q);
    let res = _mm256_blendv_ps(res, _mm256_set1_ps(f32::NAN), nan);
    let alt = _mm256_blendv_ps(
        _mm256_set1_ps(f32::INFINITY),
        _mm256_setzero_ps(),
        _mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ),
    );
    _mm256_blendv_ps(res, alt, big)
}

/// [`scalar::geglu`](crate::kernels::scalar::geglu), 8 lanes at a time: the same multiplications
/// and additions (none fused), the tanh as [`tanh8`].
///
/// # Safety
/// AVX2 (the loads and stores stay below the shorter slice's length).
#[target_feature(enable = "avx2")]
unsafe fn geglu_impl(gate: &mut [f32], up: &[f32]) {
    use crate::kernels::scalar::{GELU_A, GELU_SQRT_2_OVER_PI};
    let n = gate.len().min(up.len());
    let (one, half) = (_mm256_set1_ps(1.0), _mm256_set1_ps(0.5));
    let (c, a) = (_mm256_set1_ps(GELU_SQRT_2_OVER_PI), _mm256_set1_ps(GELU_A));
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_loadu_ps(gate.as_ptr().add(i));
        let u = _mm256_loadu_ps(up.as_ptr().add(i));
        // (c·x)·(1 + (a·x)·x), then (0.5·x)·(1 + tanh), then ·up: the spec's order.
        let cube = _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(a, x), x));
        let t = tanh8(_mm256_mul_ps(_mm256_mul_ps(c, x), cube));
        let g = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, t));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(g, u));
        i += 8;
    }
    crate::kernels::scalar::geglu(&mut gate[i..n], &up[i..n]);
}

/// The `libm` crate's `tanhf` (the spec's tanh) of 8 lanes, bit for bit (NaN payloads aside):
/// every lane takes every step and blends pick each lane's branch. The branches, by |z|:
/// over 10 (or NaN), `1 + 0/|z|`; over log(3)/2, `1 − 2/(t + 2)` with t = expm1f(2|z|); over
/// log(5/3)/2, `t/(t + 2)`; from the least normal up, `−t/(t + 2)` with t = expm1f(−2|z|);
/// below it, |z|; then z's sign. In `expm1f(y)` (|y| ≤ 20 here) the reduction by k·ln 2 is one
/// formula for every k (k = 1 and −1 subtract ±ln2_hi and ±ln2_lo as k·ln2_hi and k·ln2_lo do
/// exactly, and k = 0 leaves y and c = 0 as its skipped reduction does); k is 0 or −1 for the
/// negative arguments (|y| over ln 2 / 2), else 1 below 1.5·ln 2, else ⌊y/ln 2 + 0.5⌋; the
/// result is picked by k (0, −1, 1, 2..23, 23..) or is y below 2⁻²⁵.
///
/// # Safety
/// AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tanh8(z: __m256) -> __m256 {
    use crate::kernels::scalar::{
        EXPM1F_INV_LN2 as INV_LN2, EXPM1F_LN2_HI as LN2_HI, EXPM1F_LN2_LO as LN2_LO,
        EXPM1F_Q1 as Q1, EXPM1F_Q2 as Q2,
    };
    let f = _mm256_set1_ps;
    let sign = f(-0.0);
    let abs = _mm256_andnot_ps(sign, z);
    let w = _mm256_castps_si256(abs);
    // Bits of a non-negative float compare as integers (NaN's above every finite one).
    let above = |v: __m256i, c: u32| {
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(v, _mm256_set1_epi32(c as i32)))
    };
    let (huge, big, mid, normal) = (
        above(w, 0x4120_0000),
        above(w, 0x3f0c_9f54),
        above(w, 0x3e82_c578),
        above(w, 0x007f_ffff),
    );
    // expm1f's argument: −2|z| on the lanes of its third branch, else 2|z|.
    let small = _mm256_andnot_ps(mid, normal);
    let two = _mm256_add_ps(abs, abs);
    let y = _mm256_xor_ps(two, _mm256_and_ps(small, sign));
    let hy = _mm256_castps_si256(two);
    // k, as expm1f picks it.
    let kgen = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(f(INV_LN2), y), f(0.5)));
    let one_i = _mm256_set1_epi32(1);
    let kpos = _mm256_blendv_epi8(
        kgen,
        one_i,
        _mm256_castps_si256(_mm256_andnot_ps(
            above(hy, 0x3f85_1591),
            f(f32::from_bits(u32::MAX)),
        )),
    );
    let kneg = _mm256_and_si256(
        _mm256_castps_si256(above(hy, 0x3eb1_7218)),
        _mm256_set1_epi32(-1),
    );
    let k = _mm256_blendv_epi8(kpos, kneg, _mm256_castps_si256(small));
    let t = _mm256_cvtepi32_ps(k);
    let hi = _mm256_sub_ps(y, _mm256_mul_ps(t, f(LN2_HI)));
    let lo = _mm256_mul_ps(t, f(LN2_LO));
    let x = _mm256_sub_ps(hi, lo);
    let c = _mm256_sub_ps(_mm256_sub_ps(hi, x), lo);
    // The primary range.
    let hfx = _mm256_mul_ps(f(0.5), x);
    let hxs = _mm256_mul_ps(x, hfx);
    let r1 = _mm256_add_ps(
        f(1.0),
        _mm256_mul_ps(hxs, _mm256_add_ps(f(Q1), _mm256_mul_ps(hxs, f(Q2)))),
    );
    let t3 = _mm256_sub_ps(f(3.0), _mm256_mul_ps(r1, hfx));
    let e = _mm256_mul_ps(
        hxs,
        _mm256_div_ps(
            _mm256_sub_ps(r1, t3),
            _mm256_sub_ps(f(6.0), _mm256_mul_ps(x, t3)),
        ),
    );
    let k0 = _mm256_sub_ps(x, _mm256_sub_ps(_mm256_mul_ps(x, e), hxs));
    let e = _mm256_sub_ps(_mm256_sub_ps(_mm256_mul_ps(x, _mm256_sub_ps(e, c)), c), hxs);
    let km1 = _mm256_sub_ps(_mm256_mul_ps(f(0.5), _mm256_sub_ps(x, e)), f(0.5));
    let k1 = _mm256_blendv_ps(
        _mm256_add_ps(f(1.0), _mm256_mul_ps(f(2.0), _mm256_sub_ps(x, e))),
        _mm256_mul_ps(f(-2.0), _mm256_sub_ps(e, _mm256_add_ps(x, f(0.5)))),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, f(-0.25)),
    );
    let twopk = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        k,
        _mm256_set1_epi32(0x7f),
    )));
    let uf = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_sub_epi32(
        _mm256_set1_epi32(0x7f),
        k,
    )));
    let below23 = _mm256_mul_ps(
        _mm256_add_ps(_mm256_sub_ps(x, e), _mm256_sub_ps(f(1.0), uf)),
        twopk,
    );
    let from23 = _mm256_mul_ps(
        _mm256_add_ps(_mm256_sub_ps(x, _mm256_add_ps(e, uf)), f(1.0)),
        twopk,
    );
    let is = |v: i32| _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_set1_epi32(v)));
    let mut em1 = _mm256_blendv_ps(
        below23,
        from23,
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, _mm256_set1_epi32(22))),
    );
    em1 = _mm256_blendv_ps(em1, k1, is(1));
    em1 = _mm256_blendv_ps(em1, km1, is(-1));
    em1 = _mm256_blendv_ps(em1, k0, is(0));
    em1 = _mm256_blendv_ps(
        em1,
        y,
        _mm256_andnot_ps(above(hy, 0x32ff_ffff), f(f32::from_bits(u32::MAX))),
    );
    // tanhf's branches: one division for t/(t + 2) or 2/(t + 2).
    let num = _mm256_blendv_ps(em1, f(2.0), big);
    let q = _mm256_div_ps(num, _mm256_add_ps(em1, f(2.0)));
    let mut tt = _mm256_blendv_ps(q, _mm256_sub_ps(f(1.0), q), big);
    tt = _mm256_xor_ps(tt, _mm256_and_ps(small, sign));
    tt = _mm256_blendv_ps(
        tt,
        _mm256_add_ps(f(1.0), _mm256_div_ps(_mm256_setzero_ps(), abs)),
        huge,
    );
    tt = _mm256_blendv_ps(abs, tt, normal);
    _mm256_xor_ps(tt, _mm256_and_ps(z, sign))
}

#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_impl(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let u = _mm256_loadu_ps(up.as_ptr().add(i));
        let e = exp_ggml8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, u));
        i += 8;
    }
    crate::kernels::scalar::swiglu(&mut gate[i..n], &up[i..n]);
}
