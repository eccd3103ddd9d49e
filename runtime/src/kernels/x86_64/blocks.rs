//! The weight table's block formats (Q5_0, Q5_1, the K-quants, IQ4_NL, IQ4_XS) with AVX2, and with
//! AVX-512 VNNI's integer products (`vpdpbusd`, `vpdpwssd`: the same integers, so the same bits).
//!
//! The spec is [`crate::weights::quants::dot`]: per row and token, group after group of 32
//! weights, `acc = fma(d·dx, Σ sc·q·x, acc)` and `mins = fma(dm·dx, Σ m·x, mins)`, then
//! `acc − mins`. The integer sums are exact whatever the order, so the SIMD version only has to
//! keep the float steps: four rows are worked on together, their integer sums reduced side by side
//! into the four lanes of one vector (`reduce4`), and each lane takes the same fused multiply-add
//! as that row's scalar chain. The result is the spec's, bit for bit, for every row and token.
//!
//! Each format is one [`Unpack`] row: how group `g` of a row reads as 32 signed quants in a
//! register with its scales. A format without a row here would go through the table's scalar
//! unpacker ([`Scalar`]) and still get the vector products (Q2_K and Q3_K did until 2026-12-06,
//! about ten times slower than a row: 576 × 1536 from memory, one token, 577 and 522 µs).

mod decode;
mod decode_avx2;
mod decode_k;
mod strips;
mod strips_avx2;

use crate::kernels::{block_extent, row_group, OutRows, QActs};
use crate::weights::quants::{
    q3k_scales, scales_mins_k4, Acts, BlockScales as Head, Group, IQ4_GRID, QK_K,
};
use crate::weights::{BlockType, GgmlType, QK};
use core::arch::x86_64::*;
use decode::Rows4;
use half::f16;

/// One group of one row, ready for the integer product.
#[derive(Clone, Copy)]
struct G {
    /// The 32 quants, signed, in element order.
    q: __m256i,
    /// The scale of each half as i16 lanes (8 × half 0, then 8 × half 1, as `maddubs` pairs).
    sc: __m256i,
    /// The minimum of each half, likewise (zero for formats without one).
    m: __m256i,
    /// Scale of the quants, as f16 bits (every format's is an f16).
    d: u16,
    /// Scale of the minimums, as f16 bits (negated for Q5_1, whose minimum is added).
    dm: u16,
}

impl G {
    /// All zero (the fill of unpack buffers before their first group).
    ///
    /// # Safety
    /// AVX2 must be enabled (this is inlined into [`gemm`] and [`gemm_k`]).
    #[inline(always)]
    unsafe fn zero() -> G {
        G {
            q: _mm256_setzero_si256(),
            sc: _mm256_setzero_si256(),
            m: _mm256_setzero_si256(),
            d: 0,
            dm: 0,
        }
    }
}

/// How one format's groups unpack.
trait Unpack {
    /// Whether groups have minimums (otherwise `m` and `dm` are never read).
    const MINS: bool;
    /// Whether every quant is in 0..128 (the product then skips the sign trick: `maddubs`
    /// takes the quants as its unsigned operand, pairs staying below 2·127·127).
    const UNSIGNED: bool = false;
    /// Whether quants span −128..127 (Q8_0): −128 has no negation in i8, so the product takes
    /// |q| as its unsigned operand and moves q's sign onto the activations (never −128).
    const WIDE: bool = false;
    /// Whether the group's integer scale is 1 in both halves (the formats of one float scale a
    /// block of 32: Q5_0, Q5_1, IQ4_NL): the product then sums the group's 32 products without
    /// `sc`, and a minimum, if any, comes from the activation block's sum ([`Unpack::SUMS`]).
    const ONE_SCALE: bool = false;
    /// Whether the minimum multiplies the activation block's sum `s` (Q8_1: Q5_1) rather than
    /// the integer sum of its quants.
    const SUMS: bool = false;
    /// Groups per block: what [`Unpack::head`] decodes is shared by this many groups.
    const GPB: usize = 1;
    /// Whether each group has one minimum for its 32 quants, `head.m[j]` (Q4_K, Q5_K). With the
    /// activations' sums of 32 ([`QActs::sums`]) a block's minimum term is then one product of
    /// the eight minimums with the eight sums ([`block_mins`]), not one per group.
    const BLOCK_MINS: bool = false;
    /// What the groups of block `bi` share (scales decoded once per block), or nothing.
    ///
    /// # Safety
    /// AVX2 and F16C must be enabled; `row` holds block `bi`.
    #[inline(always)]
    unsafe fn head(_row: &[u8], _bi: usize) -> Head {
        Head::NONE
    }
    /// Group `g` of `row` (whole blocks of this format; `g` is in range), `head` being its
    /// block's.
    ///
    /// # Safety
    /// AVX2 and F16C must be enabled; `row` holds group `g`.
    unsafe fn group(kind: &BlockType, row: &[u8], head: &Head, g: usize) -> G;
    /// Whether decode (one token) takes sixteen rows a pass ([`decode`]) with AVX-512: true for
    /// the one-scale formats but Q8_0, whose 34-byte groups make strips of 9.8 KB for rows of
    /// 576 (see [`NEAR`]); its decode takes the eight-row passes of [`decode_avx2`] instead
    /// (2026-12-06, 1536 × 576 from memory: 35 µs against 48 with four rows a pass; SmolLM2's
    /// 49152 × 576 output head 1.06–1.25 ms against 1.55–1.64). Batches of 2 to
    /// [`decode::MAX_TOKENS`] tokens take sixteen rows for every one-scale format.
    const DECODE16: bool = Self::ONE_SCALE && Self::GPB == 1;
    /// Whether a batch's tile ([`decode`]) sums every token's integer products of a group
    /// before any token's float steps, taking each transposed word of the group to every token
    /// in turn (the words then die early: fewer registers live), rather than each token's sums
    /// as its steps come. True for the formats whose next heads stay in registers
    /// ([`Unpack::HEADS`]: the 5-bit ones), which otherwise spill. Measured (2026-12-06, from
    /// memory, 4 tokens, alternating runs): Q5_0 1536 × 576 44 µs against 55–63, 576 × 1536 42
    /// against 54–80; Q5_1 45 against 68–69 and 44–46 against 63–68; 3 tokens Q5_0 38 against
    /// 62, 8 tokens Q5_1 93 against 130. For the others it was no better (Q4_1 45 against
    /// 37–40, Q4_0 37 against 42–44 on 1536 × 576 but 42–44 against 38 on 576 × 1536).
    const SUMS_FIRST: bool = Self::HEADS;
    /// Whether the decode loads a group's tails with 32-byte reads that bring the next
    /// group's heads (scale words) along, instead of gathering the scale words: true where
    /// the quants end the block in one 16-byte run. Q8_0 (batches only) gathers, and its
    /// `quad` loads both halves itself: that measured closest to the all-gather kernel before
    /// (49152 × 576, 2 tokens 1.80 ms against 1.99 with the tails, 1.69 before).
    const NEXT_HEADS: bool = !Self::WIDE;
    /// Whether [`Unpack::quad`] reads its `head` argument (the decode then keeps the heads of
    /// the group ahead, four registers; they come with the tails, so this needs `NEXT_HEADS`).
    const HEADS: bool = false;
    /// What [`Unpack::quad`] adds to every quant to make it an unsigned byte.
    const OFFSET: u8 = if Self::UNSIGNED { 0 } else { 128 };
    /// Whether decode (one token) and batches of up to `decode_avx2::MAX_TOKENS` take eight
    /// rows a pass with AVX2 ([`decode_avx2`]): the
    /// one-scale formats whose quants plus [`Unpack::OFFSET`] stay below 32 (Q4_0, Q4_1, Q5_0,
    /// Q5_1), as their 16-bit sums allow.
    const DECODE8: bool = Self::ONE_SCALE && Self::GPB == 1 && (Self::QMAX <= 31 || Self::PAIR8);
    /// Whether this format gives its own [`Unpack::pair`] of signed quants (Q8_0, IQ4_NL, whose
    /// quants span ±128): the eight-row decode then multiplies with the sign trick, each
    /// product widened at once.
    const PAIR8: bool = false;
    /// Whether [`Unpack::pair`] reads `before` (the 16 bytes before the tail: Q8_0's first
    /// half).
    const BEFORE: bool = false;
    /// Group `g` of two rows for the AVX2 decode ([`decode_avx2`]): the quants as unsigned bytes
    /// `q + OFFSET` (signed quants with [`Unpack::PAIR8`]), row 2k in the low 128-bit lane and
    /// 2k + 1 in the high one, elements 0..16 in the first register and 16..32 in the second.
    /// `head`, `before` and `tail` hold the first 16 bytes of each row's group, the 16 before
    /// its last 16 (read only with [`Unpack::BEFORE`]) and its last 16, in the same lanes. This
    /// default reads the 4-bit formats' nibbles from the tail; the 5-bit ones add their fifth
    /// bits from the head.
    ///
    /// # Safety
    /// AVX2 must be enabled.
    #[inline(always)]
    unsafe fn pair(_head: __m256i, _before: __m256i, tail: __m256i) -> (__m256i, __m256i) {
        // SAFETY: the caller's features.
        unsafe { decode_avx2::nibbles2(tail) }
    }
    /// The largest quant plus [`Unpack::OFFSET`]: 15 for the 4-bit formats, 31 for the 5-bit
    /// ones, and 255 where that is not known to be smaller. The AVX2 strips sum this many
    /// `maddubs` products in 16 bits where their bound allows ([`strips_avx2`]).
    const QMAX: u8 = 255;
    /// Group `g` of four rows for the AVX-512 decode ([`decode`]): the quants as unsigned bytes
    /// `q + OFFSET`, row i in 128-bit lane i, elements 0..16 in the first register and 16..32
    /// in the second. `head` and `tail` hold the first and the last 16 bytes of each row's
    /// group (row i in lane i; the decode loads a group's tails together with the next group's
    /// heads): the tails are the quants of the 4- and 5-bit formats, the second half of Q8_0's;
    /// the heads start with the scale words (and the 5-bit formats' fifth bits). This default
    /// goes through [`Unpack::group`] (with the default `OFFSET`) and ignores both; a format
    /// that sets its own `OFFSET` gives its own `quad`.
    ///
    /// # Safety
    /// AVX2, F16C and AVX-512 F/BW must be enabled; each row holds group `g`.
    #[inline(always)]
    unsafe fn quad(
        kind: &BlockType,
        rows: Rows4,
        g: usize,
        head: __m512i,
        tail: __m512i,
    ) -> (__m512i, __m512i) {
        let _ = (head, tail);
        // (No closures: they would not take the enclosing target features.)
        macro_rules! unsigned {
            ($i:expr) => {{
                let row = rows.row($i);
                // SAFETY: the caller's features; the row holds group g.
                let gr = unsafe { Self::group(kind, row, &Self::head(row, g / Self::GPB), g) };
                if Self::UNSIGNED {
                    gr.q
                } else {
                    _mm256_xor_si256(gr.q, _mm256_set1_epi8(-128))
                }
            }};
        }
        let us = [unsigned!(0), unsigned!(1), unsigned!(2), unsigned!(3)];
        let lo = _mm512_castsi128_si512(_mm256_castsi256_si128(us[0]));
        let lo = _mm512_inserti32x4::<1>(lo, _mm256_castsi256_si128(us[1]));
        let lo = _mm512_inserti32x4::<2>(lo, _mm256_castsi256_si128(us[2]));
        let lo = _mm512_inserti32x4::<3>(lo, _mm256_castsi256_si128(us[3]));
        let hi = _mm512_castsi128_si512(_mm256_extracti128_si256::<1>(us[0]));
        let hi = _mm512_inserti32x4::<1>(hi, _mm256_extracti128_si256::<1>(us[1]));
        let hi = _mm512_inserti32x4::<2>(hi, _mm256_extracti128_si256::<1>(us[2]));
        let hi = _mm512_inserti32x4::<3>(hi, _mm256_extracti128_si256::<1>(us[3]));
        (lo, hi)
    }
}

/// Nibbles of four rows' 16 bytes (row i in 128-bit lane i): low ones (elements 0..16) and
/// high ones (16..32).
///
/// # Safety
/// AVX-512 F/BW must be enabled (this is inlined into [`decode::gemm`]).
#[inline(always)]
unsafe fn nibbles4(v: __m512i) -> (__m512i, __m512i) {
    let m4 = _mm512_set1_epi8(0x0f);
    (
        _mm512_and_si512(v, m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4),
    )
}

/// Adds 16 to the bytes of four rows' nibbles where their fifth bit is set: the 32 bits at
/// byte `QH` of each row's `head` (row i in 128-bit lane i), bits 0..16 for the low register,
/// 16..32 for the high one. Each byte picks its bit's byte of `qh` by a shuffle and tests the
/// bit, so the masks come out of four vector instructions.
///
/// # Safety
/// AVX-512 F/BW must be enabled (this is inlined into [`decode::gemm`]).
#[inline(always)]
unsafe fn fifth4<const QH: i8>(head: __m512i, (lo, hi): (__m512i, __m512i)) -> (__m512i, __m512i) {
    const { assert!(QH >= 0 && QH <= 12) };
    let (b0, b1, b2, b3) = (QH, QH + 1, QH + 2, QH + 3);
    // Byte j of the low register reads qh's byte j / 8; of the high one byte 2 + j / 8.
    let sel_lo = _mm512_broadcast_i32x4(_mm_setr_epi8(
        b0, b0, b0, b0, b0, b0, b0, b0, b1, b1, b1, b1, b1, b1, b1, b1,
    ));
    let sel_hi = _mm512_broadcast_i32x4(_mm_setr_epi8(
        b2, b2, b2, b2, b2, b2, b2, b2, b3, b3, b3, b3, b3, b3, b3, b3,
    ));
    // ... and tests bit j % 8 of it.
    let bit = _mm512_set1_epi64(0x8040_2010_0804_0201u64 as i64);
    let kl = _mm512_test_epi8_mask(_mm512_shuffle_epi8(head, sel_lo), bit);
    let kh = _mm512_test_epi8_mask(_mm512_shuffle_epi8(head, sel_hi), bit);
    let sixteen = _mm512_set1_epi8(16);
    (
        _mm512_mask_add_epi8(lo, kl, lo, sixteen),
        _mm512_mask_add_epi8(hi, kh, hi, sixteen),
    )
}

/// 32 bytes from `p[off..]` (checked).
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn load32(p: &[u8], off: usize) -> __m256i {
    let s = &p[off..off + 32];
    // SAFETY: 32 bytes in bounds (the slice above).
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Nibbles of 16 bytes at `p[off..]`: low ones are elements 0..16, high ones 16..32.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn nibbles16(p: &[u8], off: usize) -> __m256i {
    let s = &p[off..off + 16];
    // SAFETY: 16 bytes in bounds (the slice above).
    let v = unsafe { _mm_loadu_si128(s.as_ptr().cast()) };
    let m4 = _mm_set1_epi8(0x0f);
    _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(v, 4), m4),
        _mm_and_si128(v, m4),
    )
}

/// Byte i is 0x10 where bit i of `bits` is set (the fifth bits of Q5_0 / Q5_1).
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn fifth_bits(bits: u32) -> __m256i {
    _mm256_and_si256(fifth_set(bits), _mm256_set1_epi8(0x10))
}

/// Byte i is 0xff where bit i of `bits` is set.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn fifth_set(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, spread), mask), mask)
}

/// i16 lanes: 8 × `a` (half 0), then 8 × `b` (half 1).
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn halves16(a: i32, b: i32) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(b as i16), _mm_set1_epi16(a as i16))
}

fn u32_at(p: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([p[off], p[off + 1], p[off + 2], p[off + 3]])
}

/// The f16 bits at `p[off..]` (checked).
fn f16_at(p: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([p[off], p[off + 1]])
}

/// A group of a one-scale format ([`Unpack::ONE_SCALE`]): its quants, and the f16 bits of its
/// scale and minimum scale; no integer scales or minimums.
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn one_scale_group(q: __m256i, d: u16, dm: u16) -> G {
    G {
        q,
        sc: _mm256_setzero_si256(),
        m: _mm256_setzero_si256(),
        d,
        dm,
    }
}

/// Any format through its scalar unpacker (the table's `unpack`).
struct Scalar;
impl Unpack for Scalar {
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn group(kind: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let mut one = [Group {
            q: [0; 32],
            sc: [0; 2],
            d: 0.0,
            m: [0; 2],
            dm: 0.0,
        }];
        (kind.unpack)(row, g, &mut one);
        let gr = &one[0];
        G {
            // SAFETY: 32 bytes.
            q: unsafe { _mm256_loadu_si256(gr.q.as_ptr().cast()) },
            sc: halves16(gr.sc[0], gr.sc[1]),
            m: halves16(gr.m[0], gr.m[1]),
            // Every table format's d and dm are f16 values (or one negated): exact.
            d: f16::from_f32(gr.d).to_bits(),
            dm: f16::from_f32(gr.dm).to_bits(),
        }
    }
}

struct Q4_0;
impl Unpack for Q4_0 {
    const QMAX: u8 = 15;
    const ONE_SCALE: bool = true;
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[18 * g..18 * g + 18];
        one_scale_group(
            _mm256_sub_epi8(nibbles16(b, 2), _mm256_set1_epi8(8)),
            f16_at(b, 0),
            0,
        )
    }
    const OFFSET: u8 = 8;
    #[inline(always)]
    unsafe fn quad(
        _: &BlockType,
        _: Rows4,
        _: usize,
        _: __m512i,
        tail: __m512i,
    ) -> (__m512i, __m512i) {
        // SAFETY: the caller's features.
        unsafe { nibbles4(tail) }
    }
}

struct Q4_1;
impl Unpack for Q4_1 {
    const QMAX: u8 = 15;
    const ONE_SCALE: bool = true;
    const SUMS: bool = true;
    const MINS: bool = true;
    const UNSIGNED: bool = true;
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[20 * g..20 * g + 20];
        one_scale_group(nibbles16(b, 4), f16_at(b, 0), f16_at(b, 2) ^ 0x8000)
    }
    #[inline(always)]
    unsafe fn quad(
        _: &BlockType,
        _: Rows4,
        _: usize,
        _: __m512i,
        tail: __m512i,
    ) -> (__m512i, __m512i) {
        // SAFETY: the caller's features.
        unsafe { nibbles4(tail) }
    }
}

struct Q8_0;
impl Unpack for Q8_0 {
    const PAIR8: bool = true;
    const BEFORE: bool = true;
    #[inline(always)]
    unsafe fn pair(_: __m256i, before: __m256i, tail: __m256i) -> (__m256i, __m256i) {
        (before, tail)
    }
    const DECODE16: bool = false;
    const ONE_SCALE: bool = true;
    const MINS: bool = false;
    const WIDE: bool = true;
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[34 * g..34 * g + 34];
        one_scale_group(load32(b, 2), f16_at(b, 0), 0)
    }
    #[inline(always)]
    unsafe fn quad(
        _: &BlockType,
        rows: Rows4,
        g: usize,
        _: __m512i,
        _: __m512i,
    ) -> (__m512i, __m512i) {
        let flip = _mm512_set1_epi8(-128);
        // SAFETY: the caller's features, and group g (so these bytes) is in every row.
        unsafe {
            (
                _mm512_xor_si512(decode::lanes4(rows, 34 * g + 2), flip),
                _mm512_xor_si512(decode::lanes4(rows, 34 * g + 18), flip),
            )
        }
    }
}

struct Q5_0;
impl Unpack for Q5_0 {
    #[inline(always)]
    unsafe fn pair(head: __m256i, _: __m256i, tail: __m256i) -> (__m256i, __m256i) {
        // SAFETY: the caller's features.
        unsafe { decode_avx2::fifth2::<2>(head, decode_avx2::nibbles2(tail)) }
    }
    const QMAX: u8 = 31;
    const ONE_SCALE: bool = true;
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[22 * g..22 * g + 22];
        // q − 16 directly: the nibble where the fifth bit is set, the nibble − 16 (high nibble
        // 0xf0 in two's complement) where it is not.
        let clear = _mm256_andnot_si256(fifth_set(u32_at(b, 2)), _mm256_set1_epi8(-16));
        one_scale_group(_mm256_or_si256(nibbles16(b, 6), clear), f16_at(b, 0), 0)
    }
    const OFFSET: u8 = 16;
    const HEADS: bool = true;
    #[inline(always)]
    unsafe fn quad(
        _: &BlockType,
        _: Rows4,
        _: usize,
        head: __m512i,
        tail: __m512i,
    ) -> (__m512i, __m512i) {
        // SAFETY: the caller's features.
        unsafe { fifth4::<2>(head, nibbles4(tail)) }
    }
}

struct Q5_1;
impl Unpack for Q5_1 {
    #[inline(always)]
    unsafe fn pair(head: __m256i, _: __m256i, tail: __m256i) -> (__m256i, __m256i) {
        // SAFETY: the caller's features.
        unsafe { decode_avx2::fifth2::<4>(head, decode_avx2::nibbles2(tail)) }
    }
    const QMAX: u8 = 31;
    const HEADS: bool = true;
    const ONE_SCALE: bool = true;
    const SUMS: bool = true;
    const MINS: bool = true;
    const UNSIGNED: bool = true;
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[24 * g..24 * g + 24];
        one_scale_group(
            _mm256_or_si256(nibbles16(b, 8), fifth_bits(u32_at(b, 4))),
            f16_at(b, 0),
            f16_at(b, 2) ^ 0x8000,
        )
    }
    #[inline(always)]
    unsafe fn quad(
        _: &BlockType,
        _: Rows4,
        _: usize,
        head: __m512i,
        tail: __m512i,
    ) -> (__m512i, __m512i) {
        // SAFETY: the caller's features.
        unsafe { fifth4::<4>(head, nibbles4(tail)) }
    }
}

/// IQ4 indices → grid values.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn iq4(idx: __m256i) -> __m256i {
    let grid = _mm_loadu_si128(IQ4_GRID.as_ptr().cast());
    _mm256_shuffle_epi8(_mm256_set_m128i(grid, grid), idx)
}

struct Iq4Nl;
impl Unpack for Iq4Nl {
    const PAIR8: bool = true;
    #[inline(always)]
    unsafe fn pair(_: __m256i, _: __m256i, tail: __m256i) -> (__m256i, __m256i) {
        // SAFETY: 16 bytes.
        let grid = unsafe { _mm_loadu_si128(IQ4_GRID.as_ptr().cast()) };
        let grid = _mm256_broadcastsi128_si256(grid);
        // SAFETY: the caller's features.
        let (lo, hi) = unsafe { decode_avx2::nibbles2(tail) };
        (_mm256_shuffle_epi8(grid, lo), _mm256_shuffle_epi8(grid, hi))
    }
    const ONE_SCALE: bool = true;
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], _: &Head, g: usize) -> G {
        let b = &row[18 * g..18 * g + 18];
        one_scale_group(iq4(nibbles16(b, 2)), f16_at(b, 0), 0)
    }
    #[inline(always)]
    unsafe fn quad(
        _: &BlockType,
        _: Rows4,
        _: usize,
        _: __m512i,
        tail: __m512i,
    ) -> (__m512i, __m512i) {
        // The grid's values + 128 (−127..113 → 1..241: unsigned bytes).
        let grid = _mm_xor_si128(
            // SAFETY: 16 bytes.
            unsafe { _mm_loadu_si128(IQ4_GRID.as_ptr().cast()) },
            _mm_set1_epi8(-128),
        );
        let grid = _mm512_broadcast_i32x4(grid);
        // SAFETY: the caller's features.
        let (lo, hi) = unsafe { nibbles4(tail) };
        (_mm512_shuffle_epi8(grid, lo), _mm512_shuffle_epi8(grid, hi))
    }
}

struct Iq4Xs;
impl Unpack for Iq4Xs {
    const MINS: bool = false;
    const GPB: usize = 8;
    #[inline(always)]
    unsafe fn head(row: &[u8], bi: usize) -> Head {
        Head::iq4xs(&row[136 * bi..136 * bi + 136])
    }
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, ib) = (g / 8, g % 8);
        let b = &row[136 * bi..136 * bi + 136];
        G {
            q: iq4(nibbles16(b, 8 + 16 * ib)),
            sc: _mm256_set1_epi16(h.sc[ib] as i16),
            m: _mm256_setzero_si256(),
            d: h.d,
            dm: 0,
        }
    }
}

/// Nibbles of group `g` of a K-quant block's 128 bytes at `b[off..]`: the low (even g) or high
/// (odd g) nibbles of the 32-byte run g/2.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn k4_nibbles(b: &[u8], off: usize, g: usize) -> __m256i {
    let run = load32(b, off + 32 * (g / 2));
    let shifted = _mm256_srl_epi16(run, _mm_cvtsi32_si128(4 * (g % 2) as i32));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// The scales of the Q4_K / Q5_K block `b` (its bytes: d, dmin, then the 12 bytes of scales),
/// as [`Head::k4`] gives them: the 6-bit scales and minimums come out of word operations
/// ([`scales_mins_k4`]) and are widened to the i32 arrays by two byte extensions, not one group
/// at a time.
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn k4_head(b: &[u8]) -> Head {
    let (sc, m) = scales_mins_k4(&b[4..16]);
    let mut h = Head {
        d: u16::from_le_bytes([b[0], b[1]]),
        dm: u16::from_le_bytes([b[2], b[3]]),
        ..Head::NONE
    };
    // (No closure: it would not take the enclosing target features.)
    let (sc, m) = (
        _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(sc as i64)),
        _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m as i64)),
    );
    // SAFETY: each array is eight i32, 32 bytes.
    unsafe {
        _mm256_storeu_si256(h.sc.as_mut_ptr().cast(), sc);
        _mm256_storeu_si256(h.m.as_mut_ptr().cast(), m);
    }
    h
}

struct Q4K;
impl Unpack for Q4K {
    const MINS: bool = true;
    const UNSIGNED: bool = true;
    const GPB: usize = 8;
    const BLOCK_MINS: bool = true;
    #[inline(always)]
    unsafe fn head(row: &[u8], bi: usize) -> Head {
        k4_head(&row[144 * bi..144 * bi + 144])
    }
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[144 * bi..144 * bi + 144];
        G {
            q: k4_nibbles(b, 16, j),
            sc: _mm256_set1_epi16(h.sc[j] as i16),
            m: _mm256_set1_epi16(h.m[j] as i16),
            d: h.d,
            dm: h.dm,
        }
    }
}

struct Q5K;
impl Unpack for Q5K {
    const MINS: bool = true;
    const UNSIGNED: bool = true;
    const GPB: usize = 8;
    const BLOCK_MINS: bool = true;
    #[inline(always)]
    unsafe fn head(row: &[u8], bi: usize) -> Head {
        Head::k4(&row[176 * bi..176 * bi + 176])
    }
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[176 * bi..176 * bi + 176];
        let bit = _mm256_set1_epi8((1u8 << j) as i8);
        let high = _mm256_cmpeq_epi8(_mm256_and_si256(load32(b, 16), bit), bit);
        let q = _mm256_or_si256(
            k4_nibbles(b, 48, j),
            _mm256_and_si256(high, _mm256_set1_epi8(0x10)),
        );
        G {
            q,
            sc: _mm256_set1_epi16(h.sc[j] as i16),
            m: _mm256_set1_epi16(h.m[j] as i16),
            d: h.d,
            dm: h.dm,
        }
    }
}

/// i16 lanes: scale 2j (8 ×, half 0) then scale 2j + 1 (8 ×, half 1) of a block's sixteen
/// scales `all` (i16, in order): dword j (the pair) to every lane by one permute, then each
/// half's by one byte shuffle (j is a constant once the kernels' group loop is unrolled).
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn pair_halves(all: __m256i, j: usize) -> __m256i {
    let pair = _mm256_permutevar8x32_epi32(all, _mm256_set1_epi32(j as i32));
    let halves = _mm256_setr_epi8(
        0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
        2, 3,
    );
    _mm256_shuffle_epi8(pair, halves)
}

struct Q6K;
impl Unpack for Q6K {
    const MINS: bool = false;
    const GPB: usize = 8;
    #[inline(always)]
    unsafe fn head(row: &[u8], bi: usize) -> Head {
        Head::q6k(&row[210 * bi..210 * bi + 210])
    }
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[210 * bi..210 * bi + 210];
        // 128-element halves; run r (of 4) of a half takes the low (r < 2) or high nibbles of
        // ql[32·(r % 2)..] and bits 2r of qh.
        let (half, r) = (j / 4, j % 4);
        let ql = load32(b, 64 * half + 32 * (r % 2));
        let qh = load32(b, 128 + 32 * half);
        let low = _mm256_and_si256(
            _mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (r / 2) as i32)),
            _mm256_set1_epi8(0x0f),
        );
        let high = _mm256_and_si256(
            _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * r as i32)),
            _mm256_set1_epi8(3),
        );
        let q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
        // The group's two scales (i8 at bytes 192 + 2j and 193 + 2j) from the block's sixteen
        // widened to i16 (one load the unrolled groups share).
        // SAFETY: bytes 192..208 of the block.
        let all = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(b[192..208].as_ptr().cast()) });
        G {
            q: _mm256_sub_epi8(q, _mm256_set1_epi8(32)),
            // SAFETY: the caller's features.
            sc: unsafe { pair_halves(all, j) },
            m: _mm256_setzero_si256(),
            d: h.d,
            dm: 0,
        }
    }
}

/// Bits `2r..2r + 2` of each of the 32 bytes at `off` of `b` (r < 4): one plane of 2-bit
/// quants (Q2_K, Q3_K).
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn plane2(b: &[u8], off: usize, r: usize) -> __m256i {
    let v = load32(b, off);
    _mm256_and_si256(
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * r as i32)),
        _mm256_set1_epi8(3),
    )
}

struct Q2K;
impl Unpack for Q2K {
    const MINS: bool = true;
    const UNSIGNED: bool = true;
    const GPB: usize = 8;
    #[inline(always)]
    unsafe fn head(row: &[u8], bi: usize) -> Head {
        let b = &row[84 * bi..84 * bi + 84];
        Head {
            d: u16::from_le_bytes([b[80], b[81]]),
            dm: u16::from_le_bytes([b[82], b[83]]),
            ..Head::NONE
        }
    }
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[84 * bi..84 * bi + 84];
        // Group j: plane j % 4 of the quant bytes 16 + 32·(j / 4)..; each half's scale (low
        // nibble) and minimum (high nibble) at bytes 2j and 2j + 1, from the block's sixteen
        // widened to i16 (one load the unrolled groups share).
        // SAFETY: bytes 0..16 of the block.
        let s = unsafe { _mm_loadu_si128(b.as_ptr().cast()) };
        let low = _mm_and_si128(s, _mm_set1_epi8(0x0f));
        let high = _mm_and_si128(_mm_srli_epi16::<4>(s), _mm_set1_epi8(0x0f));
        // SAFETY (each): the caller's features; the 32 bytes are in the block.
        G {
            q: unsafe { plane2(b, 16 + 32 * (j / 4), j % 4) },
            sc: unsafe { pair_halves(_mm256_cvtepu8_epi16(low), j) },
            m: unsafe { pair_halves(_mm256_cvtepu8_epi16(high), j) },
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
    unsafe fn head(row: &[u8], bi: usize) -> Head {
        let b = &row[110 * bi..110 * bi + 110];
        let mut h = Head {
            d: u16::from_le_bytes([b[108], b[109]]),
            ..Head::NONE
        };
        // The sixteen scales, centred, widened to i16 and kept as `sc`'s eight dwords (dword
        // j: group j's pair), for [`pair_halves`].
        let s = q3k_scales(b[96..108].try_into().expect("12 bytes"));
        // SAFETY: 16 bytes read, `sc` is eight i32 (32 bytes) written.
        unsafe {
            let v = _mm_sub_epi8(_mm_loadu_si128(s.as_ptr().cast()), _mm_set1_epi8(32));
            _mm256_storeu_si256(h.sc.as_mut_ptr().cast(), _mm256_cvtepi8_epi16(v));
        }
        h
    }
    #[inline(always)]
    unsafe fn group(_: &BlockType, row: &[u8], h: &Head, g: usize) -> G {
        let (bi, j) = (g / 8, g % 8);
        let b = &row[110 * bi..110 * bi + 110];
        // Group j: plane j % 4 of the low bits at 32 + 32·(j / 4)..; bit j of each of the 32
        // mask bytes set means no −4: q = low + (set ? 4 : 0) − 4, in −4..4.
        // SAFETY: the caller's features; the 32 bytes are in the block.
        let low = unsafe { plane2(b, 32 + 32 * (j / 4), j % 4) };
        let bit = _mm256_set1_epi8((1u8 << j) as i8);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(load32(b, 0), bit), bit);
        let four = _mm256_set1_epi8(4);
        let q = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_and_si256(set, four)), four);
        // SAFETY: `sc` is eight i32, 32 bytes; the caller's features.
        let sc = unsafe { pair_halves(_mm256_loadu_si256(h.sc.as_ptr().cast()), j) };
        G {
            q,
            sc,
            m: _mm256_setzero_si256(),
            d: h.d,
            dm: 0,
        }
    }
}

/// The four rows' sums of 8 i32 lanes each, as the four lanes of one vector (exact).
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn reduce4(p: [__m256i; 4]) -> __m128i {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1))
}

/// The largest pass (rows read side by side, in bytes) whose successor the decode kernels
/// prefetch into the L1; a larger one's goes to the L2 (`prefetch_window`). A pass of long rows
/// and its prefetched successor crowd the L1 out of what the pass still reads: measured
/// (2026-12-06, AMD EPYC with AVX-512, 576 × 1536 from memory, one token), the 8-row Q8_0
/// pass (13 KB) 78 µs with the L1 hint against 36 with the L2 one, the 16-row Q4_0 and Q5_0
/// strips (14 and 17 KB) 40 and 50 µs against 27 and 28; below it the L1 hint is the faster
/// (1536 × 576, the 16-row Q4_0 strip of 5 KB: 28 µs against 36).
const NEAR: usize = 8 << 10;

/// Prefetches the `lines` cache lines from `at` into the L1, or with `far` into the L2 (the
/// decode kernels' windows, see [`NEAR`]). A prefetch is a hint that never faults: `at` may
/// point anywhere.
///
/// # Safety
/// SSE must be enabled (this is inlined into the decode kernels, which enable more).
#[inline(always)]
unsafe fn prefetch_window(at: *const u8, lines: usize, far: bool) {
    if far {
        for i in 0..lines {
            // SAFETY: a prefetch is a hint: it never faults; SSE is the caller's.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(64 * i).cast()) };
        }
    } else {
        for i in 0..lines {
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64 * i).cast()) };
        }
    }
}

/// Prefetches the first `bytes` of `w` (or all of it) into the L1 at once: a decode kernel's
/// first pass and the lead its window then runs ahead of. Products of a few passes (a thread's
/// chunk of a small matrix) would otherwise start cold, their rows being more streams than the
/// hardware prefetcher follows.
#[inline(always)]
fn prefetch_start(w: &[u8], bytes: usize) {
    for line in w[..bytes.min(w.len())].chunks(64) {
        // SAFETY: a prefetch of an address inside the weights (a hint: it never faults); SSE is
        // the baseline of x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
}

/// Rows worked on together.
const R: usize = 4;
/// Groups unpacked at a time (per row).
const CHUNK: usize = 8;
/// How far ahead decode prefetches, in rows.
const PREFETCH_ROWS: usize = 8;
/// Tokens per pass over a chunk of rows.
const TOKENS: usize = 64;

/// The float scales of four rows' groups as the lanes of vectors (made once per group of
/// rows, then used by every token).
#[derive(Clone, Copy)]
struct Lanes {
    d: __m128,
    dm: __m128,
    /// The lanes whose `dm` is ±0 (all ones there).
    dm_zero: __m128,
    /// Whether any lane's `dm` is ±0.
    any_dm_zero: bool,
}

impl Lanes {
    /// # Safety
    /// F16C is enabled (this is inlined into [`gemm`]).
    #[inline(always)]
    unsafe fn of(gq: &[G; R]) -> Lanes {
        macro_rules! f16x4 {
            ($f:ident) => {
                _mm_cvtph_ps(_mm_setr_epi16(
                    gq[0].$f as i16,
                    gq[1].$f as i16,
                    gq[2].$f as i16,
                    gq[3].$f as i16,
                    0,
                    0,
                    0,
                    0,
                ))
            };
        }
        let dm = f16x4!(dm);
        let dm_zero = _mm_cmpeq_ps(dm, _mm_setzero_ps());
        Lanes {
            d: f16x4!(d),
            dm,
            dm_zero,
            any_dm_zero: _mm_movemask_ps(dm_zero) != 0,
        }
    }

    /// `next` in the lanes whose `dm` is not 0, `old` in the others: the spec skips the minimum
    /// terms of groups whose `dm` is 0. Only quads that have such a row take the select, which
    /// the compiler made a masked store (`vmaskmovps`, slow on AMD Zen 3) when `old` is read
    /// from where the result goes. (This went in with the K formats' minimums from the sums;
    /// its own share of that change's gain was not measured apart.)
    ///
    /// # Safety
    /// SSE4.1 is enabled (this is inlined into [`gemm`]).
    #[inline(always)]
    unsafe fn keep_zero_dm(&self, next: __m128, old: __m128) -> __m128 {
        if self.any_dm_zero {
            _mm_blendv_ps(next, old, self.dm_zero)
        } else {
            next
        }
    }
}

/// One group of four rows times one activation block (`x`, scale `dx`, sum `sx`): each row's
/// lane of `acc` and `mins` takes that row's step of the spec.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<F: Unpack, const V: bool>(
    gq: &[G; R],
    l: &Lanes,
    x: __m256i,
    dx: f32,
    sx: f32,
    xsum: Option<i32>,
    acc: &mut __m128,
    mins: &mut __m128,
) {
    let dx = _mm_set1_ps(dx);
    // With VNNI and the activation block's integer sum, a signed one-scale group's quants go
    // in as unsigned bytes q + 128 (one xor instead of two sign operations) and 128·Σx comes
    // back out of the exact sum.
    let offset = V && F::ONE_SCALE && !F::UNSIGNED && xsum.is_some();
    let ax = _mm256_sign_epi8(x, x);
    // (Written out rather than through closures: closures do not inherit the target features
    // and were not inlined.)
    macro_rules! product {
        ($j:expr) => {{
            if F::ONE_SCALE {
                one_scale::<F, V>(gq[$j].q, x, ax, offset)
            } else {
                let (u, sx) = if F::UNSIGNED {
                    (gq[$j].q, x)
                } else {
                    (ax, _mm256_sign_epi8(gq[$j].q, x))
                };
                _mm256_madd_epi16(_mm256_maddubs_epi16(u, sx), gq[$j].sc)
            }
        }};
    }
    const {
        assert!(
            !(F::ONE_SCALE && F::MINS && !F::SUMS),
            "one-scale minimums come from s"
        )
    };
    let mut isum = reduce4([product!(0), product!(1), product!(2), product!(3)]);
    if offset {
        let off = _mm_slli_epi32::<7>(_mm_set1_epi32(xsum.unwrap_or(0)));
        isum = _mm_sub_epi32(isum, off);
    }
    let isum = _mm_cvtepi32_ps(isum);
    *acc = _mm_fmadd_ps(_mm_mul_ps(l.d, dx), isum, *acc);
    if F::MINS {
        let next = if F::SUMS {
            _mm_fmadd_ps(l.dm, _mm_set1_ps(sx), *mins)
        } else {
            let xs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), x);
            let pm = [
                _mm256_madd_epi16(xs, gq[0].m),
                _mm256_madd_epi16(xs, gq[1].m),
                _mm256_madd_epi16(xs, gq[2].m),
                _mm256_madd_epi16(xs, gq[3].m),
            ];
            _mm_fmadd_ps(_mm_mul_ps(l.dm, dx), _mm_cvtepi32_ps(reduce4(pm)), *mins)
        };
        *mins = l.keep_zero_dm(next, *mins);
    }
}

/// The 8 i32 lanes of a one-scale group's products `q·x` (`ax` = |x|), four to a lane: with VNNI
/// (`V`) one `vpdpbusd` (the same integers as `maddubs` + `madd`); with `offset`, the quants go in
/// as q + 128 and the caller takes 128·Σx back out.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled, and with `V` AVX-512 VNNI (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn one_scale<F: Unpack, const V: bool>(
    q: __m256i,
    x: __m256i,
    ax: __m256i,
    offset: bool,
) -> __m256i {
    let (u, sx) = if F::UNSIGNED {
        (q, x)
    } else if V && offset {
        (_mm256_xor_si256(q, _mm256_set1_epi8(-128)), x)
    } else if F::WIDE {
        (_mm256_abs_epi8(q), _mm256_sign_epi8(x, q))
    } else {
        (ax, _mm256_sign_epi8(q, x))
    };
    if V {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, sx)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, sx), _mm256_set1_epi16(1))
    }
}

/// Activation block `g` (of all tokens' blocks) as a vector.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn act(a: &QActs<'_>, g: usize) -> __m256i {
    let xq = &a.qs[g * QK..g * QK + QK];
    // SAFETY: 32 bytes in bounds (the slice above).
    unsafe { _mm256_loadu_si256(xq.as_ptr().cast()) }
}

/// Writes the four lanes of `acc − mins` (those of real rows) as rows `r0..` of token `t`.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm`]).
#[inline(always)]
unsafe fn store(
    out: &mut OutRows<'_>,
    t: usize,
    r0: usize,
    rows: usize,
    acc: __m128,
    mins: __m128,
) {
    let mut v = [0f32; R];
    _mm_storeu_ps(v.as_mut_ptr(), _mm_sub_ps(acc, mins));
    for (j, &x) in v.iter().enumerate().take(rows - r0) {
        out.set(t, r0 + j, x);
    }
}

/// The product of rows of the format `F` with every token of `a` (see the module); `V`: with
/// AVX-512 VNNI's integer products.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C, and with `V` AVX-512 VNNI (this is inlined into
/// functions that enable them).
#[inline(always)]
unsafe fn gemm<F: Unpack, const V: bool>(
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

    // With AVX-512, decode and small batches of the small one-scale formats take sixteen rows
    // a pass ([`decode`]), the rest of the rows the kernels below.
    let sixteen = if toks == 1 {
        F::DECODE16
    } else {
        F::ONE_SCALE && F::GPB == 1 && toks <= decode::MAX_TOKENS
    };
    let done = if V && sixteen && a.sums.len() >= toks * nb {
        // SAFETY: with V, the caller enabled AVX-512 VNNI (and F/BW/VL).
        unsafe { decode::gemm::<F>(kind, w, row_bytes, a, out, (nb, rows, toks)) }
    } else if F::DECODE8 && toks <= decode_avx2::MAX_TOKENS && a.sums.len() >= toks * nb {
        // (With V, only Q8_0's decode comes here: see `DECODE16`.)
        // SAFETY: the caller enabled AVX2, FMA and F16C (and with V more).
        unsafe { decode_avx2::gemm::<F>(kind, w, row_bytes, a, out, (nb, rows, toks)) }
    } else {
        0
    };
    if toks == 1 {
        // Decode: groups straight from the rows into the products; the quad PREFETCH_ROWS
        // ahead (rows are contiguous) is prefetched a share per CHUNK groups, so that misses
        // stay spread out.
        let n_chunks = nb.div_ceil(CHUNK);
        // The rows before the first prefetched quad, at once: a thread's chunk of a small
        // matrix would otherwise start cold.
        let cold = (done + PREFETCH_ROWS).min(rows) * row_bytes;
        for line in w[done * row_bytes..cold].chunks(64) {
            // A prefetch of an address inside `w` (it never faults).
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
        }
        for r0 in (done..rows).step_by(R) {
            let q = quad(r0);
            let ahead = if r0 + PREFETCH_ROWS < rows {
                let end = (r0 + PREFETCH_ROWS + R).min(rows) * row_bytes;
                &w[(r0 + PREFETCH_ROWS) * row_bytes..end]
            } else {
                &w[..0]
            };
            let (mut acc, mut mins) = (_mm_setzero_ps(), _mm_setzero_ps());
            for bi in 0..nb / F::GPB {
                let heads = [
                    F::head(q[0], bi),
                    F::head(q[1], bi),
                    F::head(q[2], bi),
                    F::head(q[3], bi),
                ];
                for j in 0..F::GPB {
                    let g = bi * F::GPB + j;
                    if g % CHUNK == 0 {
                        let ci = g / CHUNK;
                        let part = ahead.len() * ci / n_chunks..ahead.len() * (ci + 1) / n_chunks;
                        for line in ahead[part].chunks(64) {
                            // A prefetch of an address inside `w` (it never faults).
                            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
                        }
                    }
                    let gq = [
                        F::group(kind, q[0], &heads[0], g),
                        F::group(kind, q[1], &heads[1], g),
                        F::group(kind, q[2], &heads[2], g),
                        F::group(kind, q[3], &heads[3], g),
                    ];
                    let l = Lanes::of(&gq);
                    let xsum = a.sums.get(g).copied();
                    step::<F, V>(
                        &gq,
                        &l,
                        act(a, g),
                        a.d[g],
                        a.s[g],
                        xsum,
                        &mut acc,
                        &mut mins,
                    );
                }
            }
            store(out, 0, r0, rows, acc, mins);
        }
        return;
    }

    // (Batches the 16-row path took are below the strips' MIN_TOKENS.)
    if V && F::ONE_SCALE && F::GPB == 1 && toks >= strips::MIN_TOKENS && a.sums.len() >= toks * nb {
        // SAFETY: with V, the caller enabled AVX-512 VNNI (and F/BW/VL).
        return unsafe { strips::gemm::<F>(kind, w, row_bytes, a, out, (nb, rows, toks)) };
    }
    // (Batches the eight-row path took, done > 0, go on below with its last rows.)
    let avx2_strips =
        !V && done == 0 && F::ONE_SCALE && F::GPB == 1 && toks >= strips_avx2::MIN_TOKENS;
    if avx2_strips && a.sums.len() >= toks * nb {
        // SAFETY: the caller enabled AVX2, FMA and F16C.
        return unsafe { strips_avx2::gemm::<F>(kind, w, row_bytes, a, out, (nb, rows, toks)) };
    }
    // Prefill: CHUNK groups of a quad unpacked once, then used by up to TOKENS tokens.
    // SAFETY: the caller's features.
    let zero = unsafe { G::zero() };
    let mut gs = [[zero; R]; CHUNK];
    let mut ls = [Lanes::of(&gs[0]); CHUNK];
    for r0 in (done..rows).step_by(R) {
        let q = quad(r0);
        for t0 in (0..toks).step_by(TOKENS) {
            let tn = (toks - t0).min(TOKENS);
            let mut acc = [_mm_setzero_ps(); TOKENS];
            let mut mins = [_mm_setzero_ps(); TOKENS];
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
                    ls[i] = Lanes::of(gq);
                }
                for t in 0..tn {
                    let tok = t0 + t;
                    for (i, gq) in gs[..gn].iter().enumerate() {
                        let g = tok * nb + g0 + i;
                        let (dx, sx) = (a.d[g], a.s[g]);
                        let xsum = a.sums.get(g).copied();
                        let (acc, mins) = (&mut acc[t], &mut mins[t]);
                        step::<F, V>(gq, &ls[i], act(a, g), dx, sx, xsum, acc, mins);
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

/// One group of four rows (`gq`) times 32 Q8_K activation quants (`xv`): each row's integer
/// products added to its i32 lanes `p` (scales applied), and unless `BM` (the minimums come
/// from [`block_mins`]) its minimum terms to `pm`.
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm_k`]).
#[inline(always)]
unsafe fn group_k<F: Unpack, const V: bool, const BM: bool>(
    gq: &[G; R],
    xv: __m256i,
    p: &mut [__m256i; R],
    pm: &mut [__m256i; R],
) {
    let ax = _mm256_sign_epi8(xv, xv);
    let xs = if F::MINS && !BM {
        _mm256_maddubs_epi16(_mm256_set1_epi8(1), xv)
    } else {
        _mm256_setzero_si256()
    };
    for j in 0..R {
        let s16 = if F::UNSIGNED {
            _mm256_maddubs_epi16(gq[j].q, xv)
        } else {
            _mm256_maddubs_epi16(ax, _mm256_sign_epi8(gq[j].q, xv))
        };
        // With VNNI, `vpdpwssd` fuses the scale's `madd` and the sum (the same integers).
        if V {
            p[j] = _mm256_dpwssd_epi32(p[j], s16, gq[j].sc);
            if F::MINS && !BM {
                pm[j] = _mm256_dpwssd_epi32(pm[j], xs, gq[j].m);
            }
        } else {
            p[j] = _mm256_add_epi32(p[j], _mm256_madd_epi16(s16, gq[j].sc));
            if F::MINS && !BM {
                pm[j] = _mm256_add_epi32(pm[j], _mm256_madd_epi16(xs, gq[j].m));
            }
        }
    }
}

/// The minimums of block `bi` of four rows (their `heads`) laid out for [`block_mins`]: rows 0
/// and 1 in the first vector, 2 and 3 in the second, as i16; in each, 128-bit lane 0 holds both
/// rows' minimums of groups 0..4 and lane 1 those of groups 4..8 (the order `packs` leaves).
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm_k`]).
#[inline(always)]
unsafe fn mins_k(heads: &[Head; R]) -> [__m256i; 2] {
    // SAFETY: `m` is eight i32, 32 bytes.
    let m = |h: &Head| unsafe { _mm256_loadu_si256(h.m.as_ptr().cast()) };
    // Minimums are 6-bit: `packs` keeps them.
    [
        _mm256_packs_epi32(m(&heads[0]), m(&heads[1])),
        _mm256_packs_epi32(m(&heads[2]), m(&heads[3])),
    ]
}

/// A block's `Σ m·x` for four rows (lane i: row i; exact): the rows' minimums `ms`
/// ([`mins_k`]) times the token's eight sums of 32 quants `s` (each at most 32·128 in size,
/// so i16 holds them).
///
/// # Safety
/// AVX2 must be enabled (this is inlined into [`gemm_k`]).
#[inline(always)]
unsafe fn block_mins(ms: &[__m256i; 2], s: &[i32]) -> __m128i {
    let s = &s[..GPB_K];
    // SAFETY: eight i32 (the slice above).
    let v = unsafe { _mm256_loadu_si256(s.as_ptr().cast()) };
    // Lane 0: sums 0..4 twice, lane 1: sums 4..8 twice, as `ms` pairs them.
    let s16 = _mm256_packs_epi32(v, v);
    // Per lane, two i32 of each row: [row a, row a, row b, row b].
    let (a, b) = (_mm256_madd_epi16(ms[0], s16), _mm256_madd_epi16(ms[1], s16));
    // Per lane [row 0, row 1, row 2, row 3]: groups 0..4 in lane 0, 4..8 in lane 1.
    let h = _mm256_hadd_epi32(a, b);
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1))
}

/// The end of a block of 256 for four rows: their exact sums `isum` (`Σ sc·q·x`) and `imin`
/// (`Σ m·x`), row i in lane i, and each row's lane of `acc` and `mins` takes the spec's fused
/// multiply-add with the activation block's scale `dx`
/// ([`crate::weights::quants::block_step_k`]).
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm_k`]).
#[inline(always)]
unsafe fn finish_k<F: Unpack>(
    isum: __m128i,
    imin: __m128i,
    l: &Lanes,
    dx: f32,
    acc: &mut __m128,
    mins: &mut __m128,
) {
    let dx = _mm_set1_ps(dx);
    *acc = _mm_fmadd_ps(_mm_mul_ps(l.d, dx), _mm_cvtepi32_ps(isum), *acc);
    if F::MINS {
        let next = _mm_fmadd_ps(_mm_mul_ps(l.dm, dx), _mm_cvtepi32_ps(imin), *mins);
        *mins = l.keep_zero_dm(next, *mins);
    }
}

/// 32 activation quants from `x[off..]` (checked).
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm_k`]).
#[inline(always)]
unsafe fn x32(x: &[i8], off: usize) -> __m256i {
    let s = &x[off..off + 32];
    // SAFETY: 32 bytes in bounds (the slice above).
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Block `bi` of four rows (`q`) unpacked into `gs` (scales decoded once a row), with the rows'
/// float scales and their minimums for [`block_mins`] (zero unless `F::BLOCK_MINS`). (A
/// function, not a closure: closures do not take the caller's target features.)
///
/// # Safety
/// AVX2, FMA and F16C must be enabled (this is inlined into [`gemm_k`]).
#[inline(always)]
unsafe fn unpack_block<F: Unpack>(
    kind: &BlockType,
    q: &[&[u8]; R],
    bi: usize,
    gs: &mut [[G; R]; GPB_K],
) -> (Lanes, [__m256i; 2]) {
    let heads = [
        F::head(q[0], bi),
        F::head(q[1], bi),
        F::head(q[2], bi),
        F::head(q[3], bi),
    ];
    for (i, gq) in gs.iter_mut().enumerate() {
        let g = bi * GPB_K + i;
        *gq = [
            F::group(kind, q[0], &heads[0], g),
            F::group(kind, q[1], &heads[1], g),
            F::group(kind, q[2], &heads[2], g),
            F::group(kind, q[3], &heads[3], g),
        ];
    }
    let ms = if F::BLOCK_MINS {
        mins_k(&heads)
    } else {
        [_mm256_setzero_si256(); 2]
    };
    (Lanes::of(&gs[0]), ms)
}

/// Tokens a tile of the small-batch K-format path takes together.
const K_TILE: usize = 4;
/// Batches up to this size take that path ([`quads_k`]); larger ones unpack each block once
/// into memory for up to [`TOKENS`] tokens. Measured (576 × 1536, AVX2, 2026-12-05, since the
/// minimums come from the activations' sums): Q4_K 8 tokens 200 µs against 233 the other way,
/// 12 level (308, 307), 16 394 against 384, 24 584 against 496; Q6_K 8 tokens 283 against 321,
/// 12 426 against 400, 16 562 against 454, 24 837 against 587.
const K_SMALL: usize = 8;

/// Tokens `t0..t0 + N` times every row of the 256-element format `F` (`nb` blocks a row): four
/// rows at a time, each group unpacked from the rows once and multiplied by the N tokens'
/// activations in registers; with `t0 = 0` (the pass that reads the rows from memory) the quad
/// [`PREFETCH_ROWS`] ahead is prefetched a share per block. Each token's lanes take the spec's
/// steps ([`group_k`], [`finish_k`]), as in a product of that token alone. `BM`: a block's
/// minimum terms come from the activations' sums ([`block_mins`]), not group by group.
///
/// # Safety
/// As [`gemm`]; `a` holds the tokens' blocks and `out` their rows (checked by
/// [`block_extent`]), and with `BM` their sums of 32.
#[inline(always)]
unsafe fn quads_k<F: Unpack, const V: bool, const BM: bool, const N: usize>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, rows, t0, done): (usize, usize, usize, usize),
) {
    let zero = _mm256_setzero_si256();
    for r0 in (done..rows).step_by(R) {
        let q = row_group::<R>(w, row_bytes, rows, r0);
        // The window: `step` bytes a block from the start of the rows PREFETCH_ROWS ahead (a
        // whole number of lines, so it runs up to nb lines past their end: prefetches are
        // hints that never fault), no division inside the block loop.
        let (ahead, step) = if t0 == 0 && r0 + PREFETCH_ROWS < rows {
            let len = ((r0 + PREFETCH_ROWS + R).min(rows) - r0 - PREFETCH_ROWS) * row_bytes;
            let at = w.as_ptr().wrapping_add((r0 + PREFETCH_ROWS) * row_bytes);
            (at, len.div_ceil(nb).next_multiple_of(64))
        } else {
            (w.as_ptr(), 0)
        };
        let (mut acc, mut mins) = ([_mm_setzero_ps(); N], [_mm_setzero_ps(); N]);
        for bi in 0..nb {
            let at = ahead.wrapping_add(step * bi);
            for i in (0..step).step_by(64) {
                // A prefetch (a hint: it never faults).
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(i).cast());
            }
            // Groups straight from the rows into the products (not through memory).
            let heads = [
                F::head(q[0], bi),
                F::head(q[1], bi),
                F::head(q[2], bi),
                F::head(q[3], bi),
            ];
            // Each token's 256 quants of block bi, unchecked: token t0 + t < toks and bi < nb,
            // and `block_extent` checked that qs holds toks·nb blocks of QK_K.
            let mut x = [a.qs.as_ptr(); N];
            for (t, x) in x.iter_mut().enumerate() {
                *x = x.wrapping_add(((t0 + t) * nb + bi) * QK_K);
            }
            let (mut p, mut pm) = ([[zero; R]; N], [[zero; R]; N]);
            let mut l = None;
            for i in 0..GPB_K {
                let g = bi * GPB_K + i;
                let gq = [
                    F::group(kind, q[0], &heads[0], g),
                    F::group(kind, q[1], &heads[1], g),
                    F::group(kind, q[2], &heads[2], g),
                    F::group(kind, q[3], &heads[3], g),
                ];
                if i == 0 {
                    l = Some(Lanes::of(&gq));
                }
                for t in 0..N {
                    // SAFETY: quants 32i..32i + 32 of the token's block (see `x`).
                    let xv = unsafe { _mm256_loadu_si256(x[t].add(32 * i).cast()) };
                    group_k::<F, V, BM>(&gq, xv, &mut p[t], &mut pm[t]);
                }
            }
            let ms = if BM { mins_k(&heads) } else { [zero; 2] };
            if let Some(l) = l {
                for t in 0..N {
                    let i = (t0 + t) * nb + bi;
                    let imin = if BM {
                        block_mins(&ms, &a.sums[i * GPB_K..])
                    } else {
                        reduce4(pm[t])
                    };
                    finish_k::<F>(reduce4(p[t]), imin, &l, a.d[i], &mut acc[t], &mut mins[t]);
                }
            }
        }
        for t in 0..N {
            store(out, t0 + t, r0, rows, acc[t], mins[t]);
        }
    }
}

/// The product of rows of a 256-element format `F` with Q8_K activations (`a`: `nb` blocks of
/// 256 a token): [`crate::weights::quants::dot`]'s Q8_K order, four rows at a time; `V`: with
/// AVX-512 VNNI's integer products. Formats with [`Unpack::BLOCK_MINS`] take their minimum
/// terms from the activations' sums of 32 when `a` has them ([`QActs::sums`]).
///
/// # Safety
/// As [`gemm`].
#[inline(always)]
unsafe fn gemm_k<F: Unpack, const V: bool>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    let Some(ext) = block_extent(kind, w, row_bytes, a, out) else {
        return;
    };
    // SAFETY: the caller's features; the extents are checked above.
    unsafe { gemm_k_from::<F, V>(kind, w, row_bytes, a, out, ext, 0) }
}

/// [`gemm_k`] of a format with a sixteen-row reading `S` ([`decode_k`]): with AVX-512 VNNI,
/// batches of [`decode_k::KStrip::MIN_TOKENS`] tokens or more take sixteen rows a pass, the
/// rest of the rows (and smaller batches, and decode) [`gemm_k`]'s way.
///
/// # Safety
/// As [`gemm`].
#[inline(always)]
unsafe fn gemm_k16<F: Unpack, S: decode_k::KStrip, const V: bool>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    let Some(ext @ (nb, _, toks)) = block_extent(kind, w, row_bytes, a, out) else {
        return;
    };
    let enough = toks >= S::MIN_TOKENS;
    let done = if V && enough && a.sums.len() >= toks * nb * GPB_K {
        // SAFETY: with V, the caller enabled AVX-512 VNNI (and F/BW/VL); extents checked.
        unsafe { decode_k::gemm::<S>(w, row_bytes, a, out, ext) }
    } else {
        0
    };
    // SAFETY: the caller's features; the extents are checked above.
    unsafe { gemm_k_from::<F, V>(kind, w, row_bytes, a, out, ext, done) }
}

/// [`gemm_k`] on its extent `(nb, rows, toks)` from row `done` on (the rows before it done by
/// [`decode_k`], for batches).
///
/// # Safety
/// As [`quads_k`].
#[inline(always)]
unsafe fn gemm_k_from<F: Unpack, const V: bool>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    ext: (usize, usize, usize),
    done: usize,
) {
    // SAFETY (both): the caller's features and extents, and the sums' (checked here).
    unsafe {
        if F::BLOCK_MINS && a.has_sums() {
            gemm_k_with::<F, V, true>(kind, w, row_bytes, a, out, ext, done)
        } else {
            gemm_k_with::<F, V, false>(kind, w, row_bytes, a, out, ext, done)
        }
    }
}

/// [`gemm_k`] on its extent `(nb, rows, toks)` from row `done`; `BM` as in [`quads_k`].
///
/// # Safety
/// As [`quads_k`].
#[inline(always)]
unsafe fn gemm_k_with<F: Unpack, const V: bool, const BM: bool>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
    (nb, rows, toks): (usize, usize, usize),
    done: usize,
) {
    // Decode and small batches: each group of four rows straight from the rows into the
    // products of a tile of up to K_TILE tokens (unpacked once per tile).
    if toks <= K_SMALL {
        let mut t0 = 0;
        while t0 < toks {
            let e = (nb, rows, t0, done);
            // SAFETY (each): the caller's.
            unsafe {
                match toks - t0 {
                    1 => quads_k::<F, V, BM, 1>(kind, w, row_bytes, a, out, e),
                    2 => quads_k::<F, V, BM, 2>(kind, w, row_bytes, a, out, e),
                    3 => quads_k::<F, V, BM, 3>(kind, w, row_bytes, a, out, e),
                    _ => quads_k::<F, V, BM, K_TILE>(kind, w, row_bytes, a, out, e),
                }
            }
            t0 += K_TILE;
        }
        return;
    }

    // Prefill: a block of the quad unpacked once, then used by up to TOKENS tokens.
    let quad = |r0: usize| row_group::<R>(w, row_bytes, rows, r0);
    // SAFETY: the caller's features.
    let zero = unsafe { G::zero() };
    let mut gs = [[zero; R]; GPB_K];
    for r0 in (done..rows).step_by(R) {
        let q = quad(r0);
        for t0 in (0..toks).step_by(TOKENS) {
            let tn = (toks - t0).min(TOKENS);
            let mut acc = [_mm_setzero_ps(); TOKENS];
            let mut mins = [_mm_setzero_ps(); TOKENS];
            for bi in 0..nb {
                let (l, ms) = unpack_block::<F>(kind, &q, bi, &mut gs);
                let mut t = 0;
                while t + K_PAIR <= tn {
                    let at = (t0 + t, bi, nb);
                    let (acc, mins) = (&mut acc[t..t + K_PAIR], &mut mins[t..t + K_PAIR]);
                    // SAFETY: the caller's features and extents; tokens t0 + t.. are in `a`.
                    unsafe { tokens_k::<F, V, BM, K_PAIR>(&gs, &l, &ms, a, at, acc, mins) };
                    t += K_PAIR;
                }
                while t < tn {
                    let at = (t0 + t, bi, nb);
                    let (acc, mins) = (&mut acc[t..t + 1], &mut mins[t..t + 1]);
                    // SAFETY: as above.
                    unsafe { tokens_k::<F, V, BM, 1>(&gs, &l, &ms, a, at, acc, mins) };
                    t += 1;
                }
            }
            for t in 0..tn {
                store(out, t0 + t, r0, rows, acc[t], mins[t]);
            }
        }
    }
}

/// Tokens the prefill of the K formats takes through a block together ([`tokens_k`]).
const K_PAIR: usize = 2;

/// Block `bi` of four rows, unpacked (`gs`, with its scales `l` and minimums `ms`), times
/// tokens `t..t + N` (`at = (t, bi, nb)`): their chains `acc`, `mins` (N each) take the block's
/// steps. The tokens share each group's loads, and their dependency chains overlap.
///
/// # Safety
/// As [`quads_k`]; `a` holds the tokens.
#[inline(always)]
unsafe fn tokens_k<F: Unpack, const V: bool, const BM: bool, const N: usize>(
    gs: &[[G; R]; GPB_K],
    l: &Lanes,
    ms: &[__m256i; 2],
    a: &QActs<'_>,
    (t, bi, nb): (usize, usize, usize),
    acc: &mut [__m128],
    mins: &mut [__m128],
) {
    let x: [&[i8]; N] = core::array::from_fn(|u| {
        let i = (t + u) * nb + bi;
        &a.qs[i * QK_K..(i + 1) * QK_K]
    });
    let zero = _mm256_setzero_si256();
    let (mut p, mut pm) = ([[zero; R]; N], [[zero; R]; N]);
    for (g, gq) in gs.iter().enumerate() {
        for u in 0..N {
            group_k::<F, V, BM>(gq, x32(x[u], 32 * g), &mut p[u], &mut pm[u]);
        }
    }
    for u in 0..N {
        let i = (t + u) * nb + bi;
        let imin = if BM {
            block_mins(ms, &a.sums[i * GPB_K..])
        } else {
            reduce4(pm[u])
        };
        finish_k::<F>(reduce4(p[u]), imin, l, a.d[i], &mut acc[u], &mut mins[u]);
    }
}

/// The format's [`Unpack`] row, or its scalar unpacker.
///
/// # Safety
/// As [`gemm`].
#[inline(always)]
unsafe fn dispatch<const V: bool>(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    // SAFETY: the caller's features are those `gemm` and `gemm_k` need.
    unsafe {
        match kind.ty {
            GgmlType::Q4_0 => gemm::<Q4_0, V>(kind, w, row_bytes, a, out),
            GgmlType::Q4_1 => gemm::<Q4_1, V>(kind, w, row_bytes, a, out),
            GgmlType::Q8_0 => gemm::<Q8_0, V>(kind, w, row_bytes, a, out),
            GgmlType::Q5_0 => gemm::<Q5_0, V>(kind, w, row_bytes, a, out),
            GgmlType::Q5_1 => gemm::<Q5_1, V>(kind, w, row_bytes, a, out),
            GgmlType::IQ4_NL => gemm::<Iq4Nl, V>(kind, w, row_bytes, a, out),
            GgmlType::Q2_K => gemm_k::<Q2K, V>(kind, w, row_bytes, a, out),
            GgmlType::Q3_K => gemm_k::<Q3K, V>(kind, w, row_bytes, a, out),
            GgmlType::Q4_K => gemm_k16::<Q4K, decode_k::Q4K, V>(kind, w, row_bytes, a, out),
            GgmlType::Q5_K => gemm_k16::<Q5K, decode_k::Q5K, V>(kind, w, row_bytes, a, out),
            GgmlType::Q6_K => gemm_k16::<Q6K, decode_k::Q6K, V>(kind, w, row_bytes, a, out),
            GgmlType::IQ4_XS => gemm_k::<Iq4Xs, V>(kind, w, row_bytes, a, out),
            _ if kind.acts == Acts::Q8K => gemm_k::<Scalar, V>(kind, w, row_bytes, a, out),
            _ => gemm::<Scalar, V>(kind, w, row_bytes, a, out),
        }
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dispatch_avx2(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    // SAFETY: the features are enabled here.
    unsafe { dispatch::<false>(kind, w, row_bytes, a, out) }
}

/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-512 VNNI (with VL).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dispatch_vnni(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    // SAFETY: the features are enabled here.
    unsafe { dispatch::<true>(kind, w, row_bytes, a, out) }
}

/// [`crate::kernels::gemm_blocks`] with AVX2.
pub fn gemm_blocks(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    if !super::avx2_supported() {
        return crate::kernels::gemm_blocks(kind, w, row_bytes, a, out);
    }
    // SAFETY: AVX2, FMA and F16C checked above.
    unsafe { dispatch_avx2(kind, w, row_bytes, a, out) }
}

/// [`crate::kernels::gemm_blocks`] with AVX-512 VNNI's integer products (bit-identical to
/// [`gemm_blocks`]: the same integers, the same float steps).
pub fn gemm_blocks_vnni(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    if !super::avx512_vnni_supported() {
        return gemm_blocks(kind, w, row_bytes, a, out);
    }
    // SAFETY: the features checked above.
    unsafe { dispatch_vnni(kind, w, row_bytes, a, out) }
}
