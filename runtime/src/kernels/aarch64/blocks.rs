//! The weight table's block formats (Q5_0, Q5_1, the K-quants, IQ4_NL, IQ4_XS) with NEON, with
//! and without SDOT: the same plan as the x86 version (`x86_64/blocks.rs`). The spec is
//! [`crate::weights::quants::dot`]; the integer sums are exact in any order, so four rows are
//! worked on together, their sums reduced side by side into the four lanes of one vector, and
//! each lane takes that row's fused multiply-adds: every result is the spec's, bit for bit.
//!
//! A format without a row here would go through the table's scalar unpacker ([`Scalar`]) and
//! still get the vector products (Q2_K and Q3_K did until 2026-12-06).

use crate::kernels::{block_extent, row_group, OutRows, QActs};
use crate::weights::quants::{q3k_scales, Acts, BlockScales as Head, Group, IQ4_GRID, QK_K};
use crate::weights::{BlockType, GgmlType, QK};
use core::arch::aarch64::*;

/// One group of one row, ready for the integer product.
#[derive(Clone, Copy)]
struct G {
    /// The 32 quants, signed: elements 0..16, then 16..32.
    q: [int8x16_t; 2],
    /// Integer scales of the halves (unless [`Unpack::ONE_SCALE`]).
    sc: [i32; 2],
    /// Integer minimums of the halves (unless [`Unpack::ONE_SCALE`]).
    m: [i32; 2],
    /// Scale of the quants, as f16 bits (every format's is an f16).
    d: u16,
    /// Scale of the minimums, as f16 bits (negated for Q5_1, whose minimum is added).
    dm: u16,
}

/// How one format's groups unpack (see the x86 version for the constants' meaning).
trait Unpack {
    const MINS: bool;
    /// The group's integer scale is 1 in both halves (Q5_0, Q5_1, IQ4_NL; `sc` unused), and a
    /// minimum, if any, comes from the activation block's sum ([`Unpack::SUMS`]).
    const ONE_SCALE: bool = false;
    /// The minimum multiplies the activation block's sum `s` (Q8_1: Q5_1).
    const SUMS: bool = false;
    /// Groups per block.
    const GPB: usize = 1;
    /// Each group has one minimum for its 32 quants, `head.m[j]` (Q4_K, Q5_K): with the
    /// activations' sums of 32 ([`QActs::sums`]) a block's minimum terms come from them.
    const BLOCK_MINS: bool = false;
    /// A kernel that takes a row's block straight from the row (decode with the activations'
    /// sums then runs it, [`direct_k`], rather than unpacking groups into memory).
    const DIRECT_K: Option<RowK> = None;
    /// The ggml type number, naming this format's llvm-mca markers (`tools/mca-arm.py`).
    #[cfg_attr(not(ember_mca), allow(dead_code))]
    const MCA_ID: u32 = 0;
    /// What the groups of block `bi` share.
    fn head(_row: &[u8], _bi: usize) -> Head {
        Head::NONE
    }
    /// Group `g` of `row`, `head` being its block's.
    fn group(kind: &BlockType, row: &[u8], head: &Head, g: usize) -> G;
}

/// The 4-lane integer dot product of 16 signed bytes (4 products a lane).
trait Dot {
    /// # Safety
    /// The CPU must have the instructions the implementation uses.
    unsafe fn dot(a: int8x16_t, b: int8x16_t) -> int32x4_t;
    /// `acc` plus the lanes of `a0·b0` and of `a1·b1`.
    ///
    /// # Safety
    /// As [`Dot::dot`].
    #[inline(always)]
    unsafe fn dot2(
        acc: int32x4_t,
        a0: int8x16_t,
        b0: int8x16_t,
        a1: int8x16_t,
        b1: int8x16_t,
    ) -> int32x4_t {
        // SAFETY: the caller's.
        unsafe { vaddq_s32(acc, vaddq_s32(Self::dot(a0, b0), Self::dot(a1, b1))) }
    }
}

/// Plain NEON (the lanes of the Q4/Q8 tiles, `neon::plain`).
struct Plain;
impl Dot for Plain {
    #[inline(always)]
    unsafe fn dot(a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: plain NEON is baseline on aarch64.
        unsafe { super::neon::plain::lanes(a, b) }
    }
}

/// SDOT (the dot-product extension; the lanes of `neon::sdot`).
struct Sdot;
impl Dot for Sdot {
    #[inline(always)]
    unsafe fn dot(a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: the caller checked the dot-product extension.
        unsafe { super::neon::sdot::lanes(a, b) }
    }
    #[inline(always)]
    unsafe fn dot2(
        acc: int32x4_t,
        a0: int8x16_t,
        b0: int8x16_t,
        a1: int8x16_t,
        b1: int8x16_t,
    ) -> int32x4_t {
        let mut r = acc;
        // SAFETY: the caller checked the dot-product extension; registers only.
        unsafe {
            core::arch::asm!(
                ".arch_extension dotprod",
                "sdot {r:v}.4s, {a0:v}.16b, {b0:v}.16b",
                "sdot {r:v}.4s, {a1:v}.16b, {b1:v}.16b",
                r = inout(vreg) r,
                a0 = in(vreg) a0,
                b0 = in(vreg) b0,
                a1 = in(vreg) a1,
                b1 = in(vreg) b1,
                options(pure, nomem, nostack)
            );
        }
        r
    }
}

fn f16_at(p: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([p[off], p[off + 1]])
}

fn u8x16(p: &[u8], off: usize) -> uint8x16_t {
    let s = &p[off..off + 16];
    // SAFETY: 16 bytes in bounds (the slice above); NEON is baseline on aarch64.
    unsafe { vld1q_u8(s.as_ptr()) }
}

/// Low nibbles (elements 0..16) and high nibbles (16..32) of 16 bytes.
fn nibbles(p: &[u8], off: usize) -> [uint8x16_t; 2] {
    let v = u8x16(p, off);
    // SAFETY: NEON is baseline on aarch64.
    unsafe { [vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v)] }
}

/// Byte i is 0x10 where bit i of the two bytes `lo`, `hi` is set.
fn fifth_bits(lo: u8, hi: u8) -> uint8x16_t {
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: NEON is baseline on aarch64; BITS is 16 bytes.
    unsafe {
        let v = vcombine_u8(vdup_n_u8(lo), vdup_n_u8(hi));
        vandq_u8(vtstq_u8(v, vld1q_u8(BITS.as_ptr())), vdupq_n_u8(0x10))
    }
}

fn signed(q: [uint8x16_t; 2], offset: u8) -> [int8x16_t; 2] {
    // SAFETY: NEON is baseline on aarch64.
    unsafe {
        let o = vdupq_n_u8(offset);
        [
            vreinterpretq_s8_u8(vsubq_u8(q[0], o)),
            vreinterpretq_s8_u8(vsubq_u8(q[1], o)),
        ]
    }
}

fn iq4(idx: [uint8x16_t; 2]) -> [int8x16_t; 2] {
    // SAFETY: NEON is baseline on aarch64; the grid is 16 bytes.
    unsafe {
        let grid = vld1q_s8(IQ4_GRID.as_ptr());
        [vqtbl1q_s8(grid, idx[0]), vqtbl1q_s8(grid, idx[1])]
    }
}

/// A group whose halves take no integer scale or minimum ([`Unpack::ONE_SCALE`]).
const fn plain_group(q: [int8x16_t; 2], d: u16, dm: u16) -> G {
    G {
        q,
        sc: [0; 2],
        m: [0; 2],
        d,
        dm,
    }
}

/// A group of a 256-element format whose halves share one integer scale and minimum.
const fn k_group(q: [int8x16_t; 2], d: u16, dm: u16, sc: i32, m: i32) -> G {
    G {
        q,
        sc: [sc; 2],
        m: [m; 2],
        d,
        dm,
    }
}

struct Scalar;
impl Unpack for Scalar {
    const MINS: bool = true;
    #[inline(always)]
    fn group(kind: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let mut one = [Group {
            q: [0; 32],
            sc: [0; 2],
            d: 0.0,
            m: [0; 2],
            dm: 0.0,
        }];
        (kind.unpack)(row, g, &mut one);
        let gr = &one[0];
        // SAFETY: 32 bytes; NEON is baseline on aarch64.
        let q = unsafe { [vld1q_s8(gr.q.as_ptr()), vld1q_s8(gr.q[16..].as_ptr())] };
        G {
            q,
            sc: gr.sc,
            m: gr.m,
            // Every table format's d and dm are f16 values (or one negated): exact.
            d: half::f16::from_f32(gr.d).to_bits(),
            dm: half::f16::from_f32(gr.dm).to_bits(),
        }
    }
}

struct Q4_0;
impl Unpack for Q4_0 {
    const MCA_ID: u32 = 2;
    const MINS: bool = false;
    const ONE_SCALE: bool = true;
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[18 * g..18 * g + 18];
        plain_group(signed(nibbles(b, 2), 8), f16_at(b, 0), 0)
    }
}

struct Q4_1;
impl Unpack for Q4_1 {
    const MCA_ID: u32 = 3;
    const MINS: bool = true;
    const ONE_SCALE: bool = true;
    const SUMS: bool = true;
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[20 * g..20 * g + 20];
        plain_group(
            signed(nibbles(b, 4), 0),
            f16_at(b, 0),
            f16_at(b, 2) ^ 0x8000,
        )
    }
}

struct Q8_0;
impl Unpack for Q8_0 {
    const MCA_ID: u32 = 8;
    const MINS: bool = false;
    const ONE_SCALE: bool = true;
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[34 * g + 2..34 * g + 34];
        // SAFETY: 32 bytes (the slice above); NEON is baseline on aarch64.
        let q = unsafe {
            [
                vld1q_s8(b.as_ptr().cast()),
                vld1q_s8(b[16..].as_ptr().cast()),
            ]
        };
        plain_group(q, f16_at(row, 34 * g), 0)
    }
}

struct Q5_0;
impl Unpack for Q5_0 {
    const MINS: bool = false;
    const ONE_SCALE: bool = true;
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[22 * g..22 * g + 22];
        let [lo, hi] = nibbles(b, 6);
        // SAFETY: NEON is baseline on aarch64.
        let q = unsafe {
            [
                vorrq_u8(lo, fifth_bits(b[2], b[3])),
                vorrq_u8(hi, fifth_bits(b[4], b[5])),
            ]
        };
        plain_group(signed(q, 16), f16_at(b, 0), 0)
    }
}

struct Q5_1;
impl Unpack for Q5_1 {
    const MINS: bool = true;
    const ONE_SCALE: bool = true;
    const SUMS: bool = true;
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[24 * g..24 * g + 24];
        let [lo, hi] = nibbles(b, 8);
        // SAFETY: NEON is baseline on aarch64.
        let q = unsafe {
            [
                vorrq_u8(lo, fifth_bits(b[4], b[5])),
                vorrq_u8(hi, fifth_bits(b[6], b[7])),
            ]
        };
        plain_group(signed(q, 0), f16_at(b, 0), f16_at(b, 2) ^ 0x8000)
    }
}

struct Iq4Nl;
impl Unpack for Iq4Nl {
    const MINS: bool = false;
    const ONE_SCALE: bool = true;
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[18 * g..18 * g + 18];
        plain_group(iq4(nibbles(b, 2)), f16_at(b, 0), 0)
    }
}

struct Iq4Xs;
impl Unpack for Iq4Xs {
    const MCA_ID: u32 = 23;
    const MINS: bool = false;
    const GPB: usize = 8;
    #[inline(always)]
    fn head(row: &[u8], bi: usize) -> Head {
        Head::iq4xs(&row[136 * bi..136 * bi + 136])
    }
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, ib) = (g / 8, g % 8);
        let b = &row[136 * bi..136 * bi + 136];
        k_group(iq4(nibbles(b, 8 + 16 * ib)), h.d, 0, h.sc[ib], 0)
    }
}

/// `v >> shift` on each byte (shift < 8).
fn shr(v: uint8x16_t, shift: usize) -> uint8x16_t {
    // SAFETY: NEON is baseline on aarch64.
    unsafe { vshlq_u8(v, vdupq_n_s8(-(shift as i8))) }
}

/// Nibbles of group `j` of a K-quant block's 128 bytes at `b[off..]`: the low (even j) or high
/// (odd j) nibbles of the 32-byte run j/2.
fn k4_nibbles(b: &[u8], off: usize, j: usize) -> [uint8x16_t; 2] {
    let at = off + 32 * (j / 2);
    let s = 4 * (j % 2);
    // SAFETY: NEON is baseline on aarch64.
    unsafe {
        let m = vdupq_n_u8(0x0f);
        [
            vandq_u8(shr(u8x16(b, at), s), m),
            vandq_u8(shr(u8x16(b, at + 16), s), m),
        ]
    }
}

struct Q4K;
impl Unpack for Q4K {
    const MCA_ID: u32 = 12;
    const MINS: bool = true;
    const GPB: usize = 8;
    const BLOCK_MINS: bool = true;
    const DIRECT_K: Option<RowK> = Some(RowK::Q4K);
    #[inline(always)]
    fn head(row: &[u8], bi: usize) -> Head {
        Head::k4(&row[144 * bi..144 * bi + 144])
    }
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[144 * bi..144 * bi + 144];
        k_group(signed(k4_nibbles(b, 16, j), 0), h.d, h.dm, h.sc[j], h.m[j])
    }
}

struct Q5K;
impl Unpack for Q5K {
    const MCA_ID: u32 = 13;
    const MINS: bool = true;
    const GPB: usize = 8;
    const BLOCK_MINS: bool = true;
    const DIRECT_K: Option<RowK> = Some(RowK::Q5K);
    #[inline(always)]
    fn head(row: &[u8], bi: usize) -> Head {
        Head::k4(&row[176 * bi..176 * bi + 176])
    }
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[176 * bi..176 * bi + 176];
        let [lo, hi] = k4_nibbles(b, 48, j);
        // SAFETY: NEON is baseline on aarch64.
        let q = unsafe {
            let bit = vdupq_n_u8(1 << j);
            let five = vdupq_n_u8(0x10);
            [
                vorrq_u8(lo, vandq_u8(vtstq_u8(u8x16(b, 16), bit), five)),
                vorrq_u8(hi, vandq_u8(vtstq_u8(u8x16(b, 32), bit), five)),
            ]
        };
        k_group(signed(q, 0), h.d, h.dm, h.sc[j], h.m[j])
    }
}

struct Q6K;
impl Unpack for Q6K {
    const MCA_ID: u32 = 14;
    const MINS: bool = false;
    const GPB: usize = 8;
    const DIRECT_K: Option<RowK> = Some(RowK::Q6K);
    #[inline(always)]
    fn head(row: &[u8], bi: usize) -> Head {
        Head::q6k(&row[210 * bi..210 * bi + 210])
    }
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[210 * bi..210 * bi + 210];
        // 128-element halves; run r (of 4) of a half takes the low (r < 2) or high nibbles of
        // ql[32·(r % 2)..] and bits 2r of qh.
        let (half, r) = (j / 4, j % 4);
        let (ql, qh) = (64 * half + 32 * (r % 2), 128 + 32 * half);
        // SAFETY: NEON is baseline on aarch64.
        let q = unsafe {
            let (m4, m2) = (vdupq_n_u8(0x0f), vdupq_n_u8(3));
            let one = |k: usize| {
                let low = vandq_u8(shr(u8x16(b, ql + 16 * k), 4 * (r / 2)), m4);
                let high = vandq_u8(shr(u8x16(b, qh + 16 * k), 2 * r), m2);
                vorrq_u8(low, vshlq_n_u8::<4>(high))
            };
            [one(0), one(1)]
        };
        let sc = [b[192 + 2 * j] as i8 as i32, b[192 + 2 * j + 1] as i8 as i32];
        G {
            q: signed(q, 32),
            sc,
            m: [0; 2],
            d: h.d,
            dm: 0,
        }
    }
}

/// Bits `2r..2r + 2` of each of the 32 bytes at `off` of `b` (r < 4): one plane of 2-bit
/// quants (Q2_K, Q3_K).
fn plane2(b: &[u8], off: usize, r: usize) -> [uint8x16_t; 2] {
    // SAFETY: NEON is baseline on aarch64.
    unsafe {
        let m = vdupq_n_u8(3);
        [
            vandq_u8(shr(u8x16(b, off), 2 * r), m),
            vandq_u8(shr(u8x16(b, off + 16), 2 * r), m),
        ]
    }
}

struct Q2K;
impl Unpack for Q2K {
    const MINS: bool = true;
    const GPB: usize = 8;
    #[inline(always)]
    fn head(row: &[u8], bi: usize) -> Head {
        let b = &row[84 * bi..84 * bi + 84];
        Head {
            d: f16_at(b, 80),
            dm: f16_at(b, 82),
            ..Head::NONE
        }
    }
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[84 * bi..84 * bi + 84];
        // Group j: plane j % 4 of the quant bytes 16 + 32·(j / 4)..; each half's scale (low
        // nibble) and minimum (high nibble) at bytes 2j and 2j + 1.
        let (s0, s1) = (b[2 * j] as i32, b[2 * j + 1] as i32);
        G {
            q: signed(plane2(b, 16 + 32 * (j / 4), j % 4), 0),
            sc: [s0 & 15, s1 & 15],
            m: [s0 >> 4, s1 >> 4],
            d: h.d,
            dm: h.dm,
        }
    }
}

struct Q3K;
impl Unpack for Q3K {
    const MINS: bool = false;
    const GPB: usize = 8;
    #[inline(always)]
    fn head(row: &[u8], bi: usize) -> Head {
        let b = &row[110 * bi..110 * bi + 110];
        // The sixteen scales, centred, once a block: group j's pair in `sc[j]` and `m[j]`
        // (Q3_K has no minimums; `m` holds each pair's second scale).
        let s = q3k_scales(b[96..108].try_into().expect("12 bytes"));
        Head {
            d: f16_at(b, 108),
            dm: 0,
            sc: core::array::from_fn(|j| i32::from(s[2 * j]) - 32),
            m: core::array::from_fn(|j| i32::from(s[2 * j + 1]) - 32),
        }
    }
    #[inline(always)]
    fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[110 * bi..110 * bi + 110];
        // Group j: plane j % 4 of the low bits at 32 + 32·(j / 4)..; bit j of each of the 32
        // mask bytes set means no −4: q = low + (set ? 4 : 0) − 4, in −4..4.
        let low = plane2(b, 32 + 32 * (j / 4), j % 4);
        // SAFETY: NEON is baseline on aarch64.
        let q = unsafe {
            let (bit, four) = (vdupq_n_u8(1 << j), vdupq_n_u8(4));
            let one = |k: usize| {
                let set = vtstq_u8(u8x16(b, 16 * k), bit);
                vorrq_u8(low[k], vandq_u8(set, four))
            };
            [one(0), one(1)]
        };
        G {
            q: signed(q, 4),
            sc: [h.sc[j], h.m[j]],
            m: [0; 2],
            d: h.d,
            dm: 0,
        }
    }
}

/// The four rows' sums of 4 lanes each, as the four lanes of one vector (exact).
#[inline(always)]
fn reduce4(p: [int32x4_t; 4]) -> int32x4_t {
    // SAFETY: NEON is baseline on aarch64.
    unsafe { vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3])) }
}

/// Rows worked on together.
const R: usize = 4;
/// Groups unpacked at a time (per row) for prefill.
const CHUNK: usize = 8;
/// Tokens per pass over a chunk of rows.
const TOKENS: usize = 64;

/// One group of four rows times one activation block (`x`, scale `dx`, sum `sx`).
///
/// # Safety
/// The CPU must have what `D` uses.
#[inline(always)]
unsafe fn step<F: Unpack, D: Dot>(
    gq: &[G; R],
    x: [int8x16_t; 2],
    dx: f32,
    sx: f32,
    acc: &mut float32x4_t,
    mins: &mut float32x4_t,
) {
    // SAFETY: NEON is baseline; `D` is the caller's to check.
    unsafe {
        let half_sums = |j: usize| [D::dot(gq[j].q[0], x[0]), D::dot(gq[j].q[1], x[1])];
        let row = |j: usize| {
            let [h0, h1] = half_sums(j);
            if F::ONE_SCALE {
                vaddq_s32(h0, h1)
            } else {
                vmlaq_n_s32(vmulq_n_s32(h0, gq[j].sc[0]), h1, gq[j].sc[1])
            }
        };
        const {
            assert!(
                !(F::ONE_SCALE && F::MINS && !F::SUMS),
                "one-scale minimums come from s"
            )
        };
        let isum = vcvtq_f32_s32(reduce4([row(0), row(1), row(2), row(3)]));
        let f16x4 = |v: [u16; R]| super::neon::cvt_f16x4(vld1_u16(v.as_ptr()));
        let d4 = f16x4([gq[0].d, gq[1].d, gq[2].d, gq[3].d]);
        *acc = vfmaq_f32(*acc, vmulq_n_f32(d4, dx), isum);
        if F::MINS {
            let dm4 = f16x4([gq[0].dm, gq[1].dm, gq[2].dm, gq[3].dm]);
            let next = if F::SUMS {
                vfmaq_n_f32(*mins, dm4, sx)
            } else {
                let (sx0, sx1) = (vaddlvq_s8(x[0]) as i32, vaddlvq_s8(x[1]) as i32);
                let m = |j: usize| (gq[j].m[0] * sx0 + gq[j].m[1] * sx1) as f32;
                let imin = vld1q_f32([m(0), m(1), m(2), m(3)].as_ptr());
                vfmaq_f32(*mins, vmulq_n_f32(dm4, dx), imin)
            };
            // The spec skips groups whose dm is 0.
            *mins = vbslq_f32(vceqzq_f32(dm4), *mins, next);
        }
    }
}

fn act(a: &QActs<'_>, g: usize) -> [int8x16_t; 2] {
    let x = &a.qs[g * QK..g * QK + QK];
    // SAFETY: 32 bytes in bounds (the slice above); NEON is baseline on aarch64.
    unsafe { [vld1q_s8(x.as_ptr()), vld1q_s8(x[16..].as_ptr())] }
}

fn store(
    out: &mut OutRows<'_>,
    t: usize,
    r0: usize,
    rows: usize,
    acc: float32x4_t,
    mins: float32x4_t,
) {
    let mut v = [0f32; R];
    // SAFETY: 4 floats; NEON is baseline on aarch64.
    unsafe { vst1q_f32(v.as_mut_ptr(), vsubq_f32(acc, mins)) };
    for (j, &x) in v.iter().enumerate().take(rows - r0) {
        out.set(t, r0 + j, x);
    }
}

/// The product of rows of the format `F` with every token of `a`.
///
/// # Safety
/// The CPU must have what `D` uses.
#[inline(always)]
unsafe fn gemm<F: Unpack, D: Dot>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    let Some((nb, rows, toks)) = block_extent(kind, w, row_bytes, a, out) else {
        return;
    };
    assert!(nb.is_multiple_of(F::GPB));
    let quad = |r0: usize| row_group::<R>(w, row_bytes, rows, r0);
    // SAFETY: NEON is baseline; `D` is the caller's to check.
    let zero = unsafe { vdupq_n_f32(0.0) };
    if toks == 1 {
        for r0 in (0..rows).step_by(R) {
            let q = quad(r0);
            let (mut acc, mut mins) = (zero, zero);
            for bi in 0..nb / F::GPB {
                let heads = [
                    F::head(q[0], bi),
                    F::head(q[1], bi),
                    F::head(q[2], bi),
                    F::head(q[3], bi),
                ];
                for j in 0..F::GPB {
                    let g = bi * F::GPB + j;
                    mca_mark!("BEGIN", F::MCA_ID);
                    let gq = [
                        F::group(kind, q[0], &heads[0], g),
                        F::group(kind, q[1], &heads[1], g),
                        F::group(kind, q[2], &heads[2], g),
                        F::group(kind, q[3], &heads[3], g),
                    ];
                    // SAFETY: as above.
                    unsafe { step::<F, D>(&gq, act(a, g), a.d[g], a.s[g], &mut acc, &mut mins) };
                    mca_mark!("END", F::MCA_ID);
                }
            }
            store(out, 0, r0, rows, acc, mins);
        }
        return;
    }
    // SAFETY: NEON is baseline on aarch64.
    let zq = unsafe { vdupq_n_s8(0) };
    let empty = plain_group([zq, zq], 0, 0);
    let mut gs = [[empty; R]; CHUNK];
    for r0 in (0..rows).step_by(R) {
        let q = quad(r0);
        for t0 in (0..toks).step_by(TOKENS) {
            let tn = (toks - t0).min(TOKENS);
            let mut acc = [zero; TOKENS];
            let mut mins = [zero; TOKENS];
            for g0 in (0..nb).step_by(CHUNK) {
                let gn = (nb - g0).min(CHUNK);
                for (i, gq) in gs[..gn].iter_mut().enumerate() {
                    let g = g0 + i;
                    let bi = g / F::GPB;
                    *gq = [
                        F::group(kind, q[0], &F::head(q[0], bi), g),
                        F::group(kind, q[1], &F::head(q[1], bi), g),
                        F::group(kind, q[2], &F::head(q[2], bi), g),
                        F::group(kind, q[3], &F::head(q[3], bi), g),
                    ];
                }
                for t in 0..tn {
                    let tok = t0 + t;
                    for (i, gq) in gs[..gn].iter().enumerate() {
                        let g = tok * nb + g0 + i;
                        let (dx, sx) = (a.d[g], a.s[g]);
                        // SAFETY: as above.
                        unsafe { step::<F, D>(gq, act(a, g), dx, sx, &mut acc[t], &mut mins[t]) };
                    }
                }
            }
            for t in 0..tn {
                store(out, t0 + t, r0, rows, acc[t], mins[t]);
            }
        }
    }
}

/// Groups in a block of 256 (the Q8_K formats).
const GPB_K: usize = 8;

/// Each row's eight group minimums of a block (two vectors a row), for [`block_k`] with the
/// activations' sums; zero unless `F::BLOCK_MINS`.
type Mins = [[int32x4_t; 2]; R];

/// One block of 256 of four rows (`gs`, their eight groups each) times one Q8_K activation block
/// (`x`, 256 quants; scale `dx`): integer sums kept across the block, reduced once, and each
/// row's lane takes the spec's two fused multiply-adds
/// ([`crate::weights::quants::block_step_k`]). With `BM` the minimum terms are the rows'
/// minimums `ms` times the block's eight sums of 32 quants `sums`, not taken group by group.
///
/// # Safety
/// The CPU must have what `D` uses.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_k<F: Unpack, D: Dot, const BM: bool>(
    gs: &[[G; R]; GPB_K],
    x: &[i8],
    dx: f32,
    ms: &Mins,
    sums: &[i32],
    acc: &mut float32x4_t,
    mins: &mut float32x4_t,
) {
    let x = &x[..QK_K];
    // SAFETY: NEON is baseline; `D` is the caller's to check; loads of 16 bytes inside `x`, of
    // four i32 inside `sums`.
    unsafe {
        let mut p = [vdupq_n_s32(0); R];
        let mut imin = [0i32; R];
        for (g, gq) in gs.iter().enumerate() {
            let xv = [
                vld1q_s8(x[32 * g..].as_ptr()),
                vld1q_s8(x[32 * g + 16..].as_ptr()),
            ];
            for j in 0..R {
                let h0 = D::dot(gq[j].q[0], xv[0]);
                let h1 = D::dot(gq[j].q[1], xv[1]);
                p[j] = vmlaq_n_s32(vmlaq_n_s32(p[j], h0, gq[j].sc[0]), h1, gq[j].sc[1]);
            }
            if F::MINS && !BM {
                let (sx0, sx1) = (vaddlvq_s8(xv[0]) as i32, vaddlvq_s8(xv[1]) as i32);
                for j in 0..R {
                    imin[j] += gq[j].m[0] * sx0 + gq[j].m[1] * sx1;
                }
            }
        }
        let f16x4 = |v: [u16; R]| super::neon::cvt_f16x4(vld1_u16(v.as_ptr()));
        let g0 = &gs[0];
        let d4 = f16x4([g0[0].d, g0[1].d, g0[2].d, g0[3].d]);
        let isum = vcvtq_f32_s32(reduce4(p));
        *acc = vfmaq_f32(*acc, vmulq_n_f32(d4, dx), isum);
        if F::MINS {
            let dm4 = f16x4([g0[0].dm, g0[1].dm, g0[2].dm, g0[3].dm]);
            let imin = if BM {
                let sums = &sums[..GPB_K];
                let s = [vld1q_s32(sums.as_ptr()), vld1q_s32(sums[4..].as_ptr())];
                let row = |j: usize| vmlaq_s32(vmulq_s32(ms[j][0], s[0]), ms[j][1], s[1]);
                reduce4([row(0), row(1), row(2), row(3)])
            } else {
                vld1q_s32(imin.as_ptr())
            };
            let imin = vcvtq_f32_s32(imin);
            let next = vfmaq_f32(*mins, vmulq_n_f32(dm4, dx), imin);
            // The spec skips blocks whose dm is 0.
            *mins = vbslq_f32(vceqzq_f32(dm4), *mins, next);
        }
    }
}

/// One row's Q4_K block `b` (144 bytes), or with `FIFTH` Q5_K's (176: the fifth bits of each
/// quant in the 32 bytes after the scales), times 256 activation quants `xv` with their eight
/// sums of 32 `s`: the exact `Σ sc·q·x` and `Σ m·x` spread over four lanes each. Each run of
/// 32 bytes gives two groups (low and high nibbles, group g's fifth bits being bit g of each
/// byte of the fifth-bit run) of four lanes; pairwise adds make one lane a group, and the scales
/// multiply the eight group sums in two vector products (the minimums the activations' sums
/// likewise).
///
/// # Safety
/// The CPU must have what `D` uses.
#[inline(always)]
unsafe fn k4_row<D: Dot, const FIFTH: bool>(
    b: &[u8],
    xv: &[int8x16_t; 16],
    s: &[int32x4_t; 2],
) -> (int32x4_t, int32x4_t) {
    let (bytes, quants) = if FIFTH { (176, 48) } else { (144, 16) };
    let b = &b[..bytes];
    let (sc, m) = crate::weights::quants::scales_mins_k4(&b[4..16]);
    // SAFETY: NEON is baseline and `D` the caller's to check; loads of 16 bytes inside `b`.
    unsafe {
        let zero = vdupq_n_s32(0);
        let low = vdupq_n_u8(0x0f);
        let five = vdupq_n_u8(0x10);
        let fifth = if FIFTH {
            [vld1q_u8(b[16..].as_ptr()), vld1q_u8(b[32..].as_ptr())]
        } else {
            [vdupq_n_u8(0); 2]
        };
        // Group g's 16 quants `e` (0, 1) from their nibbles `v`.
        let quant = |v: uint8x16_t, g: usize, e: usize| {
            let v = if FIFTH {
                let bit = vandq_u8(vtstq_u8(fifth[e], vdupq_n_u8(1 << g)), five);
                vorrq_u8(v, bit)
            } else {
                v
            };
            vreinterpretq_s8_u8(v)
        };
        let mut g = [zero; GPB_K];
        // Run r of the four, written out for each (as a loop it stayed one with Q5_K).
        macro_rules! run {
            ($($r:literal)*) => {$({
                let run = &b[quants + 32 * $r..quants + 32 * $r + 32];
                let (v0, v1) = (vld1q_u8(run.as_ptr()), vld1q_u8(run[16..].as_ptr()));
                let (l0, l1) = (vandq_u8(v0, low), vandq_u8(v1, low));
                let (h0, h1) = (vshrq_n_u8::<4>(v0), vshrq_n_u8::<4>(v1));
                let (ge, go) = (2 * $r, 2 * $r + 1);
                let (xe, xo) = (4 * $r, 4 * $r + 2);
                g[ge] = D::dot2(zero, quant(l0, ge, 0), xv[xe], quant(l1, ge, 1), xv[xe + 1]);
                g[go] = D::dot2(zero, quant(h0, go, 0), xv[xo], quant(h1, go, 1), xv[xo + 1]);
            })*};
        }
        run!(0 1 2 3);
        let s03 = vpaddq_s32(vpaddq_s32(g[0], g[1]), vpaddq_s32(g[2], g[3]));
        let s47 = vpaddq_s32(vpaddq_s32(g[4], g[5]), vpaddq_s32(g[6], g[7]));
        // Eight bytes widened to two i32 vectors.
        let widen = |v: u64| {
            let h = vmovl_u8(vcreate_u8(v));
            [
                vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(h))),
                vreinterpretq_s32_u32(vmovl_high_u16(h)),
            ]
        };
        let ([sc0, sc1], [m0, m1]) = (widen(sc), widen(m));
        (
            vmlaq_s32(vmulq_s32(s03, sc0), s47, sc1),
            vmlaq_s32(vmulq_s32(m0, s[0]), m1, s[1]),
        )
    }
}

/// One row's Q6_K block `b` (210 bytes) times 256 activation quants `xv`: the exact
/// `Σ sc·q·x` spread over four lanes. Each 16 quants are 4 bits of `ql` with 2 of `qh` inserted
/// above them (`sli`), less 32, and have their own scale: sixteen products, pairwise adds to
/// one lane each, and four vector products with the widened scales.
///
/// # Safety
/// The CPU must have what `D` uses.
#[inline(always)]
unsafe fn q6k_row<D: Dot>(b: &[u8], xv: &[int8x16_t; 16]) -> int32x4_t {
    let b = &b[..210];
    // SAFETY: NEON is baseline and `D` the caller's to check; loads of 16 bytes inside `b`.
    unsafe {
        let zero = vdupq_n_s32(0);
        let (three, bias) = (vdupq_n_u8(3), vdupq_n_s8(32));
        // Bits 2r..2r + 2 of each byte of `v`, as the low two.
        let pair = |v: uint8x16_t, r: usize| match r {
            0 => vandq_u8(v, three),
            1 => vandq_u8(vshrq_n_u8::<2>(v), three),
            2 => vandq_u8(vshrq_n_u8::<4>(v), three),
            _ => vshrq_n_u8::<6>(v),
        };
        let mut h = [zero; 16];
        // Sixteen quants `e` (0, 1) of run `r` of half `half` (group 4·half + r), written out
        // for each: as loops, they stayed loops with SDOT.
        macro_rules! sixteens {
            ($half:literal: $(($r:literal, $e:literal))*) => {{
                let ql: [uint8x16_t; 4] =
                    core::array::from_fn(|i| vld1q_u8(b[64 * $half + 16 * i..].as_ptr()));
                let qh: [uint8x16_t; 2] =
                    core::array::from_fn(|i| vld1q_u8(b[128 + 32 * $half + 16 * i..].as_ptr()));
                $({
                    let l = ql[2 * ($r % 2) + $e];
                    // `sli` keeps the destination's low nibble: the high one needs a shift.
                    let nib = if $r < 2 { l } else { vshrq_n_u8::<4>(l) };
                    let q = vsliq_n_u8::<4>(nib, pair(qh[$e], $r));
                    let q = vsubq_s8(vreinterpretq_s8_u8(q), bias);
                    let i = 2 * (4 * $half + $r) + $e;
                    h[i] = D::dot(q, xv[i]);
                })*
            }};
        }
        sixteens!(0: (0, 0) (0, 1) (1, 0) (1, 1) (2, 0) (2, 1) (3, 0) (3, 1));
        sixteens!(1: (0, 0) (0, 1) (1, 0) (1, 1) (2, 0) (2, 1) (3, 0) (3, 1));
        let quad = |i: usize| {
            vpaddq_s32(
                vpaddq_s32(h[4 * i], h[4 * i + 1]),
                vpaddq_s32(h[4 * i + 2], h[4 * i + 3]),
            )
        };
        let sc = vreinterpretq_s8_u8(vld1q_u8(b[192..].as_ptr()));
        let (lo, hi) = (vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc));
        let sc = [
            vmovl_s16(vget_low_s16(lo)),
            vmovl_high_s16(lo),
            vmovl_s16(vget_low_s16(hi)),
            vmovl_high_s16(hi),
        ];
        let p = vmlaq_s32(vmulq_s32(quad(0), sc[0]), quad(1), sc[1]);
        vmlaq_s32(vmlaq_s32(p, quad(2), sc[2]), quad(3), sc[3])
    }
}

/// The formats whose rows' blocks have a kernel of their own ([`Unpack::DIRECT_K`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowK {
    /// [`k4_row`].
    Q4K,
    /// [`k4_row`] with fifth bits.
    Q5K,
    /// [`q6k_row`] (no minimums).
    Q6K,
}

impl RowK {
    /// Bytes of a block.
    const fn bytes(self) -> usize {
        match self {
            RowK::Q4K => 144,
            RowK::Q5K => 176,
            RowK::Q6K => 210,
        }
    }

    /// Where the block's f16 scale `d` is.
    const fn d_at(self) -> usize {
        match self {
            RowK::Q4K | RowK::Q5K => 0,
            RowK::Q6K => 208,
        }
    }

    /// The row's block `b` times the activations `xv` (sums of 32 `s`): `Σ sc·q·x` and
    /// `Σ m·x`, each spread over four lanes.
    ///
    /// # Safety
    /// The CPU must have what `D` uses.
    #[inline(always)]
    unsafe fn row<D: Dot>(
        self,
        b: &[u8],
        xv: &[int8x16_t; 16],
        s: &[int32x4_t; 2],
    ) -> (int32x4_t, int32x4_t) {
        // SAFETY: the caller's.
        unsafe {
            match self {
                RowK::Q4K => k4_row::<D, false>(b, xv, s),
                RowK::Q5K => k4_row::<D, true>(b, xv, s),
                RowK::Q6K => (q6k_row::<D>(b, xv), vdupq_n_s32(0)),
            }
        }
    }
}

/// Four rows' block `bi` of a format with a [`RowK`] kernel times one Q8_K activation block
/// (`x`, 256 quants, scale `dx`, its eight sums of 32 `sums`), straight from the rows: the
/// spec's integer sums ([`crate::weights::quants::block_sums_k`]) and its two fused
/// multiply-adds a row, as [`block_k`] takes them.
///
/// # Safety
/// The CPU must have what `D` uses; each row holds block `bi`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn direct_k<D: Dot, const MINS: bool>(
    kind: RowK,
    q: &[&[u8]; R],
    bi: usize,
    x: &[i8],
    sums: &[i32],
    dx: f32,
    acc: &mut float32x4_t,
    mins: &mut float32x4_t,
) {
    let x = &x[..QK_K];
    let bytes = kind.bytes();
    let b = |j: usize| &q[j][bytes * bi..bytes * (bi + 1)];
    // SAFETY: NEON is baseline and `D` the caller's to check; loads of 16 bytes (or four i32)
    // inside the slices bounded above.
    unsafe {
        let xv: [int8x16_t; 16] = core::array::from_fn(|i| vld1q_s8(x[16 * i..].as_ptr()));
        let s = if MINS {
            let sums = &sums[..GPB_K];
            [vld1q_s32(sums.as_ptr()), vld1q_s32(sums[4..].as_ptr())]
        } else {
            [vdupq_n_s32(0); 2]
        };
        // The four rows written out (a loop over them stayed a loop without SDOT).
        let r0 = kind.row::<D>(b(0), &xv, &s);
        let r1 = kind.row::<D>(b(1), &xv, &s);
        let r2 = kind.row::<D>(b(2), &xv, &s);
        let r3 = kind.row::<D>(b(3), &xv, &s);
        // The rows' f16 words at `off` as four floats. (A macro: a closure here was called,
        // not inlined, and the vector registers spilled around the calls.)
        macro_rules! f16x4 {
            ($off:expr) => {{
                let off = $off;
                let v = [
                    f16_at(b(0), off),
                    f16_at(b(1), off),
                    f16_at(b(2), off),
                    f16_at(b(3), off),
                ];
                super::neon::cvt_f16x4(vld1_u16(v.as_ptr()))
            }};
        }
        let d4 = f16x4!(kind.d_at());
        let isum = reduce4([r0.0, r1.0, r2.0, r3.0]);
        *acc = vfmaq_f32(*acc, vmulq_n_f32(d4, dx), vcvtq_f32_s32(isum));
        if MINS {
            let dm4 = f16x4!(2);
            let imin = reduce4([r0.1, r1.1, r2.1, r3.1]);
            let next = vfmaq_f32(*mins, vmulq_n_f32(dm4, dx), vcvtq_f32_s32(imin));
            // The spec skips blocks whose dm is 0.
            *mins = vbslq_f32(vceqzq_f32(dm4), *mins, next);
        }
    }
}

/// Block `bi` of four rows (`q`) unpacked into `gs`, scales decoded once a row; returns the
/// rows' minimums for [`block_k`] (zero unless `F::BLOCK_MINS`). (A function inlined into its
/// callers, not a closure: the closure was called, not inlined.)
#[inline(always)]
fn unpack_k<F: Unpack>(
    kind: &BlockType,
    q: &[&[u8]; R],
    bi: usize,
    gs: &mut [[G; R]; GPB_K],
) -> Mins {
    let heads: [Head; R] = core::array::from_fn(|j| F::head(q[j], bi));
    for (i, gq) in gs.iter_mut().enumerate() {
        let g = bi * GPB_K + i;
        *gq = core::array::from_fn(|j| F::group(kind, q[j], &heads[j], g));
    }
    // SAFETY: NEON is baseline on aarch64; four i32 inside each row's eight minimums.
    core::array::from_fn(|j| unsafe {
        if F::BLOCK_MINS {
            let m = &heads[j].m;
            [vld1q_s32(m.as_ptr()), vld1q_s32(m[4..].as_ptr())]
        } else {
            [vdupq_n_s32(0); 2]
        }
    })
}

/// The product of rows of a 256-element format `F` with Q8_K activations (`a`: `nb` blocks of
/// 256 a token), four rows at a time; formats with [`Unpack::BLOCK_MINS`] take their minimum
/// terms from the activations' sums of 32 when `a` has them.
///
/// # Safety
/// The CPU must have what `D` uses.
#[inline(always)]
unsafe fn gemm_k<F: Unpack, D: Dot>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    let Some(ext) = block_extent(kind, w, row_bytes, a, out) else {
        return;
    };
    // SAFETY (both): passed on from the caller; the extents are checked above, and the sums'.
    unsafe {
        if F::BLOCK_MINS && a.has_sums() {
            gemm_k_with::<F, D, true>(kind, w, row_bytes, a, out, ext)
        } else {
            gemm_k_with::<F, D, false>(kind, w, row_bytes, a, out, ext)
        }
    }
}

/// [`gemm_k`] on its extent `(nb, rows, toks)`; `BM` as in [`block_k`].
///
/// # Safety
/// The CPU must have what `D` uses; with `BM`, `a` has its sums.
#[inline(always)]
unsafe fn gemm_k_with<F: Unpack, D: Dot, const BM: bool>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, rows, toks): (usize, usize, usize),
) {
    let sums = |i: usize| if BM { &a.sums[i * GPB_K..] } else { &[][..] };
    let quad = |r0: usize| row_group::<R>(w, row_bytes, rows, r0);
    // SAFETY: NEON is baseline on aarch64.
    let (zero, zq) = unsafe { (vdupq_n_f32(0.0), vdupq_n_s8(0)) };
    let mut gs = [[plain_group([zq, zq], 0, 0); R]; GPB_K];
    if toks == 1 {
        for r0 in (0..rows).step_by(R) {
            let q = quad(r0);
            let (mut acc, mut mins) = (zero, zero);
            for bi in 0..nb {
                let x = &a.qs[bi * QK_K..(bi + 1) * QK_K];
                let (dx, s) = (a.d[bi], sums(bi));
                // llvm-mca measures the path the model takes (with the sums where they are read).
                let measured = BM == F::BLOCK_MINS;
                if measured {
                    mca_mark!("BEGIN", F::MCA_ID);
                }
                if let (Some(k), true) = (F::DIRECT_K, BM == F::MINS) {
                    // SAFETY: passed on from the caller; the quad holds block bi.
                    unsafe { direct_k::<D, BM>(k, &q, bi, x, s, dx, &mut acc, &mut mins) };
                } else {
                    let ms = unpack_k::<F>(kind, &q, bi, &mut gs);
                    // SAFETY: passed on from the caller.
                    unsafe { block_k::<F, D, BM>(&gs, x, dx, &ms, s, &mut acc, &mut mins) };
                }
                if measured {
                    mca_mark!("END", F::MCA_ID);
                }
            }
            store(out, 0, r0, rows, acc, mins);
        }
        return;
    }
    for r0 in (0..rows).step_by(R) {
        let q = quad(r0);
        for t0 in (0..toks).step_by(TOKENS) {
            let tn = (toks - t0).min(TOKENS);
            let mut acc = [zero; TOKENS];
            let mut mins = [zero; TOKENS];
            for bi in 0..nb {
                let ms = unpack_k::<F>(kind, &q, bi, &mut gs);
                for t in 0..tn {
                    let i = (t0 + t) * nb + bi;
                    let x = &a.qs[i * QK_K..(i + 1) * QK_K];
                    let (dx, s, acc, mins) = (a.d[i], sums(i), &mut acc[t], &mut mins[t]);
                    // SAFETY: passed on from the caller.
                    unsafe { block_k::<F, D, BM>(&gs, x, dx, &ms, s, acc, mins) };
                }
            }
            for t in 0..tn {
                store(out, t0 + t, r0, rows, acc[t], mins[t]);
            }
        }
    }
}

/// # Safety
/// The CPU must have what `D` uses.
unsafe fn dispatch<D: Dot>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    // SAFETY: passed on from the caller.
    unsafe {
        match kind.ty {
            GgmlType::Q4_0 => gemm::<Q4_0, D>(kind, w, row_bytes, a, out),
            GgmlType::Q4_1 => gemm::<Q4_1, D>(kind, w, row_bytes, a, out),
            GgmlType::Q8_0 => gemm::<Q8_0, D>(kind, w, row_bytes, a, out),
            GgmlType::Q5_0 => gemm::<Q5_0, D>(kind, w, row_bytes, a, out),
            GgmlType::Q5_1 => gemm::<Q5_1, D>(kind, w, row_bytes, a, out),
            GgmlType::IQ4_NL => gemm::<Iq4Nl, D>(kind, w, row_bytes, a, out),
            GgmlType::Q2_K => gemm_k::<Q2K, D>(kind, w, row_bytes, a, out),
            GgmlType::Q3_K => gemm_k::<Q3K, D>(kind, w, row_bytes, a, out),
            GgmlType::Q4_K => gemm_k::<Q4K, D>(kind, w, row_bytes, a, out),
            GgmlType::Q5_K => gemm_k::<Q5K, D>(kind, w, row_bytes, a, out),
            GgmlType::Q6_K => gemm_k::<Q6K, D>(kind, w, row_bytes, a, out),
            GgmlType::IQ4_XS => gemm_k::<Iq4Xs, D>(kind, w, row_bytes, a, out),
            _ if kind.acts == Acts::Q8K => gemm_k::<Scalar, D>(kind, w, row_bytes, a, out),
            _ => gemm::<Scalar, D>(kind, w, row_bytes, a, out),
        }
    }
}

/// [`crate::kernels::gemm_blocks`] with NEON.
pub fn gemm_blocks(kind: &BlockType, w: &[u8], rb: usize, a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: plain NEON is baseline on aarch64.
    unsafe { dispatch::<Plain>(kind, w, rb, a, out) }
}

/// [`crate::kernels::gemm_blocks`] with NEON and SDOT.
pub fn gemm_blocks_sdot(
    kind: &BlockType,
    w: &[u8],
    rb: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    if !super::dotprod_supported() {
        return gemm_blocks(kind, w, rb, a, out);
    }
    // SAFETY: the dot-product extension checked above.
    unsafe { dispatch::<Sdot>(kind, w, rb, a, out) }
}
