//! The other quantized formats small GGUF files use: Q5_0, Q5_1, the K-quants (Q2_K … Q6_K) and
//! IQ4_NL / IQ4_XS. Their block layouts are byte for byte ggml's (`ggml-common.h`), their
//! dequantization is ggml's reference (`dequantize_row_*` in `ggml-quants.c`), checked against
//! the `gguf` Python package's independent implementation (`weights::tests`).
//!
//! For products each format also says how one group of 32 weights, the size of an activation
//! block, reads as integers: [`Group`]. The dot-product spec ([`dot`]) works on groups only, so a
//! format is one layout, one dequantizer and one `group` function.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block of Q5_0, Q5_1 and IQ4_NL.
pub const QK5: usize = 32;
/// Elements per block (super-block) of the K-quants and IQ4_XS.
pub const QK_K: usize = 256;
/// Elements per [`Group`]: one activation block.
pub const GROUP: usize = 32;

/// One group of 32 weights as integers: weight e is `d·sc[e/16]·q[e] − dm·m[e/16]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Group {
    /// Integer quants (already centred where the format centres them).
    pub q: [i8; GROUP],
    /// Integer scales of the two halves.
    pub sc: [i32; 2],
    /// Float scale of `sc·q`.
    pub d: f32,
    /// Integer minimums of the two halves (0 for formats without one).
    pub m: [i32; 2],
    /// Float scale of the minimums (0 for formats without one; negative for Q5_1, whose
    /// minimum is added).
    pub dm: f32,
}

/// The 8-bit form activations take for a product with a weight format (a column of the weight
/// table, as ggml's `vec_dot_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acts {
    /// Blocks of 32 quants with an f16-rounded scale ([`crate::kernels::QActs`] as
    /// `quantize_row` makes it): formats of 32-element blocks without a minimum.
    Q8_0,
    /// The same blocks with their sum `s` (the f16-rounded d·Σq), which the format's minimum
    /// multiplies (ggml's Q8_1): Q5_1.
    Q8_1,
    /// Blocks of 256 quants with an f32 scale, ggml's Q8_K ([`quantize_q8k`]): the formats of
    /// 256-element blocks, whose products then sum integers over the whole block.
    Q8K,
}

impl Acts {
    /// Elements per activation block.
    pub const fn block(self) -> usize {
        match self {
            Acts::Q8_0 | Acts::Q8_1 => GROUP,
            Acts::Q8K => QK_K,
        }
    }
}

/// A block format: its layout and how it reads as [`Group`]s.
pub trait QuantBlock: Pod {
    /// Elements per block.
    const N: usize;
    /// The activation blocks it is multiplied with: Q8_K for 256-element blocks, Q8_0 for the
    /// others unless they say Q8_1, as in ggml.
    const ACTS: Acts = if Self::N == QK_K {
        Acts::Q8K
    } else {
        Acts::Q8_0
    };
    /// Group `g` (`0..N/32`) of this block.
    fn group(&self, g: usize) -> Group;
    /// Dequantizes the block into `out` (N values) from its groups: `(d·sc)·q − dm·m`, which is
    /// ggml's reference arithmetic for every format here, operation for operation (for Q5_1,
    /// `x − (−m)` is `x + m` exactly; formats without a minimum subtract 0).
    fn dequantize(&self, out: &mut [f32]) {
        for (g, o) in out.chunks_exact_mut(GROUP).enumerate() {
            let gr = self.group(g);
            for (e, o) in o.iter_mut().enumerate() {
                let h = e / 16;
                *o = gr.d * gr.sc[h] as f32 * gr.q[e] as f32 - gr.dm * gr.m[h] as f32;
            }
        }
    }
}

/// 5-bit weights with a scale: value = d·(q − 16); low nibbles as Q4_0, the fifth bits in `qh`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits of the 32 quants (little-endian u32).
    pub qh: [u8; 4],
    /// Low nibbles: element j low, element j + 16 high.
    pub qs: [u8; QK5 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_0>() == 22);

/// 5-bit weights with a scale and a minimum: value = d·q + m.
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Fifth bits (little-endian u32).
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; QK5 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_1>() == 24);

/// `B2B[b]`: byte i is 0x10 when bit i of `b` is set (the fifth bits of 8 quants at once).
const B2B: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            if b & (1 << i) != 0 {
                t[b] |= 0x10 << (8 * i);
            }
            i += 1;
        }
        b += 1;
    }
    t
};

/// 5-bit quants of Q5_0/Q5_1, unsigned (0..32), in element order: nibbles and fifth bits eight
/// at a time in 64-bit words.
#[inline(always)]
fn q5(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    const LOW: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    let word = |i: usize| {
        u64::from_le_bytes([
            qs[i],
            qs[i + 1],
            qs[i + 2],
            qs[i + 3],
            qs[i + 4],
            qs[i + 5],
            qs[i + 6],
            qs[i + 7],
        ])
    };
    let (a, b) = (word(0), word(8));
    let words = [
        (a & LOW) | B2B[qh[0] as usize],
        (b & LOW) | B2B[qh[1] as usize],
        ((a >> 4) & LOW) | B2B[qh[2] as usize],
        ((b >> 4) & LOW) | B2B[qh[3] as usize],
    ];
    let mut q = [0u8; 32];
    for (o, w) in q.chunks_exact_mut(8).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    q
}

impl QuantBlock for BlockQ5_0 {
    const N: usize = QK5;
    #[inline(always)]
    fn group(&self, _g: usize) -> Group {
        let q = q5(self.qh, &self.qs);
        let mut c = [0i8; 32];
        for (c, q) in c.iter_mut().zip(q) {
            *c = q as i8 - 16;
        }
        Group {
            q: c,
            sc: [1, 1],
            d: self.d.to_f32(),
            m: [0, 0],
            dm: 0.0,
        }
    }
}

impl QuantBlock for BlockQ5_1 {
    const N: usize = QK5;
    const ACTS: Acts = Acts::Q8_1;
    #[inline(always)]
    fn group(&self, _g: usize) -> Group {
        Group {
            q: bytemuck::cast(q5(self.qh, &self.qs)),
            sc: [1, 1],
            d: self.d.to_f32(),
            m: [1, 1],
            dm: -self.m.to_f32(),
        }
    }
}

/// The nibbles of Q4_0 / Q4_1 in element order (element j low, j + 16 high), unsigned.
#[inline(always)]
fn q4(qs: &[u8; 16]) -> [u8; 32] {
    core::array::from_fn(|e| {
        if e < 16 {
            qs[e] & 0x0f
        } else {
            qs[e - 16] >> 4
        }
    })
}

// ggml's first formats, as rows of the table: their default product is this module's spec
// ([`dot`]); `Kernels::numerics` `Exact` keeps llama.cpp's order for them instead.

impl QuantBlock for crate::weights::BlockQ4_0 {
    const N: usize = crate::weights::QK;
    #[inline(always)]
    fn group(&self, _g: usize) -> Group {
        Group {
            q: q4(&self.qs).map(|q| q as i8 - 8),
            sc: [1, 1],
            d: self.d.to_f32(),
            m: [0, 0],
            dm: 0.0,
        }
    }
}

impl QuantBlock for crate::weights::BlockQ4_1 {
    const N: usize = crate::weights::QK;
    const ACTS: Acts = Acts::Q8_1;
    #[inline(always)]
    fn group(&self, _g: usize) -> Group {
        Group {
            q: q4(&self.qs).map(|q| q as i8),
            sc: [1, 1],
            d: self.d.to_f32(),
            m: [1, 1],
            dm: -self.m.to_f32(),
        }
    }
}

impl QuantBlock for crate::weights::BlockQ8_0 {
    const N: usize = crate::weights::QK;
    #[inline(always)]
    fn group(&self, _g: usize) -> Group {
        Group {
            q: self.qs,
            sc: [1, 1],
            d: self.d.to_f32(),
            m: [0, 0],
            dm: 0.0,
        }
    }
}

/// The non-linear 4-bit grid of IQ4_NL and IQ4_XS.
pub const IQ4_GRID: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// 4-bit indices into [`IQ4_GRID`] with a scale: `value = d·grid[q]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Nl {
    /// Scale.
    pub d: f16,
    /// Indices: element j low nibble, element j + 16 high.
    pub qs: [u8; QK5 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockIq4Nl>() == 18);

fn iq4(qs: &[u8]) -> [i8; 32] {
    core::array::from_fn(|e| {
        if e < 16 {
            IQ4_GRID[(qs[e] & 0x0f) as usize]
        } else {
            IQ4_GRID[(qs[e - 16] >> 4) as usize]
        }
    })
}

impl QuantBlock for BlockIq4Nl {
    const N: usize = QK5;
    #[inline(always)]
    fn group(&self, _g: usize) -> Group {
        Group {
            q: iq4(&self.qs),
            sc: [1, 1],
            d: self.d.to_f32(),
            m: [0, 0],
            dm: 0.0,
        }
    }
}

/// IQ4_NL indices in 256-element blocks with a 6-bit scale per 32: `value = d·(ls − 32)·grid[q]`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Xs {
    /// Super-scale.
    pub d: f16,
    /// High 2 bits of the 8 scales.
    pub scales_h: u16,
    /// Low 4 bits of the 8 scales.
    pub scales_l: [u8; QK_K / 64],
    /// Indices, 16 bytes per group of 32.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(core::mem::size_of::<BlockIq4Xs>() == 136);

impl BlockIq4Xs {
    fn scale(&self, ib: usize) -> i32 {
        iq4xs_scale(self.scales_h, &self.scales_l, ib)
    }
}

impl QuantBlock for BlockIq4Xs {
    const N: usize = QK_K;
    #[inline(always)]
    fn group(&self, g: usize) -> Group {
        let ls = self.scale(g);
        Group {
            q: iq4(&self.qs[16 * g..16 * g + 16]),
            sc: [ls, ls],
            d: self.d.to_f32(),
            m: [0, 0],
            dm: 0.0,
        }
    }
}

/// 2-bit K-quants: 16 groups of 16, each with a 4-bit scale and a 4-bit minimum:
/// value = d·(sc & 15)·q − dmin·(sc >> 4).
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    /// Scales (low nibble) and minimums (high nibble) of the 16 groups of 16.
    pub scales: [u8; QK_K / 16],
    /// Quants, four 2-bit values per byte.
    pub qs: [u8; QK_K / 4],
    /// Super-scale of the scales.
    pub d: f16,
    /// Super-scale of the minimums.
    pub dmin: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ2K>() == 84);

impl BlockQ2K {
    /// Quant of element e (0..256): 128-element halves, each four 32-byte planes by shift.
    fn quant(&self, e: usize) -> u8 {
        let (half, r) = (e / 128, e % 128);
        let (shift, l) = (2 * (r / 32), r % 32);
        (self.qs[32 * half + l] >> shift) & 3
    }
}

impl QuantBlock for BlockQ2K {
    const N: usize = QK_K;
    #[inline(always)]
    fn group(&self, g: usize) -> Group {
        let (s0, s1) = (self.scales[2 * g], self.scales[2 * g + 1]);
        Group {
            q: core::array::from_fn(|e| self.quant(32 * g + e) as i8),
            sc: [(s0 & 15) as i32, (s1 & 15) as i32],
            d: self.d.to_f32(),
            m: [(s0 >> 4) as i32, (s1 >> 4) as i32],
            dm: self.dmin.to_f32(),
        }
    }
}

/// The sixteen scales of a Q3_K block's 12 scale bytes, unpacked (each 0..64; the format
/// subtracts 32), in word operations (the spec every kernel shares): scale k's low 4 bits are
/// nibble k / 8 of byte k % 8, its top 2 bits are bits 2·(k / 4) of byte 8 + k % 4.
#[inline(always)]
pub fn q3k_scales(s: &[u8; 12]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (w0, w1, top) = (word(0), word(4), word(8));
    const LOW4: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    let w = [
        (w0 & LOW4) | (top & TOP2) << 4,
        (w1 & LOW4) | (top >> 2 & TOP2) << 4,
        (w0 >> 4 & LOW4) | (top >> 4 & TOP2) << 4,
        (w1 >> 4 & LOW4) | (top >> 6 & TOP2) << 4,
    ];
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(w) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// 3-bit K-quants: 2 low bits in `qs`, the high bit in `hmask` (set means no −4), 16 signed 6-bit
/// scales: value = d·(sc − 32)·q.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// High bits.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits.
    pub qs: [u8; QK_K / 4],
    /// 16 scales, 6 bits each, packed.
    pub scales: [u8; 12],
    /// Super-scale.
    pub d: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ3K>() == 110);

impl BlockQ3K {
    /// The 16 scales, unpacked (each 0..64; the format subtracts 32).
    fn scales(&self) -> [i32; 16] {
        q3k_scales(&self.scales).map(i32::from)
    }

    /// Quant of element e, centred (−4..4).
    fn quant(&self, e: usize) -> i8 {
        let (half, r) = (e / 128, e % 128);
        let (j, l) = (r / 32, r % 32);
        let low = (self.qs[32 * half + l] >> (2 * j)) & 3;
        let high = self.hmask[l] & (1 << (4 * half + j)) != 0;
        low as i8 - if high { 0 } else { 4 }
    }
}

impl QuantBlock for BlockQ3K {
    const N: usize = QK_K;
    #[inline(always)]
    fn group(&self, g: usize) -> Group {
        let sc = self.scales();
        Group {
            q: core::array::from_fn(|e| self.quant(32 * g + e)),
            sc: [sc[2 * g] - 32, sc[2 * g + 1] - 32],
            d: self.d.to_f32(),
            m: [0, 0],
            dm: 0.0,
        }
    }
}

/// The 6-bit scale of group `ib` (0..8) of an IQ4_XS block, centred (−32..32).
pub fn iq4xs_scale(scales_h: u16, scales_l: &[u8; 4], ib: usize) -> i32 {
    let lo = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
    let hi = ((scales_h >> (2 * ib)) & 3) as u8;
    (lo | hi << 4) as i32 - 32
}

/// What the eight groups of a 256-element block share, as floats: the SIMD kernels decode it
/// once per block (`kernels/*/blocks.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockScales {
    /// Scale of the quants, as f16 bits (the kernels convert four rows' at once).
    pub d: u16,
    /// Scale of the minimums, as f16 bits.
    pub dm: u16,
    /// Each group's integer scale.
    pub sc: [i32; 8],
    /// Each group's integer minimum.
    pub m: [i32; 8],
}

impl BlockScales {
    /// Nothing shared (formats of one group a block).
    pub const NONE: BlockScales = BlockScales {
        d: 0,
        dm: 0,
        sc: [0; 8],
        m: [0; 8],
    };

    /// Of the Q4_K / Q5_K block `b` (its bytes: d, dmin, then the 12 bytes of scales).
    #[inline(always)]
    pub fn k4(b: &[u8]) -> BlockScales {
        let mut s = BlockScales {
            d: u16::from_le_bytes([b[0], b[1]]),
            dm: u16::from_le_bytes([b[2], b[3]]),
            ..Self::NONE
        };
        let q: &[u8; 12] = b[4..16].try_into().expect("12 bytes");
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, q);
            s.sc[j] = sc as i32;
            s.m[j] = m as i32;
        }
        s
    }

    /// Of the IQ4_XS block `b` (its bytes: d, scales_h, scales_l).
    #[inline(always)]
    pub fn iq4xs(b: &[u8]) -> BlockScales {
        let mut s = BlockScales {
            d: u16::from_le_bytes([b[0], b[1]]),
            ..Self::NONE
        };
        let (high, low) = (
            u16::from_le_bytes([b[2], b[3]]),
            b[4..8].try_into().expect("4"),
        );
        for (ib, sc) in s.sc.iter_mut().enumerate() {
            *sc = iq4xs_scale(high, low, ib);
        }
        s
    }

    /// Of the Q6_K block `b` (its d, at byte 208).
    #[inline(always)]
    pub fn q6k(b: &[u8]) -> BlockScales {
        BlockScales {
            d: u16::from_le_bytes([b[208], b[209]]),
            ..Self::NONE
        }
    }
}

/// All eight 6-bit scales and minimums of a Q4_K/Q5_K block's 12 scale bytes at once, as the
/// bytes of two little-endian words: byte j of the first is group j's scale, of the second its
/// minimum ([`scale_min_k4`] for every j, in word operations for the SIMD kernels). `q` holds
/// the 12 bytes (more are ignored).
#[inline(always)]
pub fn scales_mins_k4(q: &[u8]) -> (u64, u64) {
    let q: &[u8; 12] = q[..12].try_into().expect("12 bytes");
    // (Not a closure: the kernels inline this into loops, and a closure was left a call there.)
    let [a, b, c, d, e, f, g, h, i, j, k, l] = *q;
    let (w0, w1, w2) = (
        u32::from_le_bytes([a, b, c, d]),
        u32::from_le_bytes([e, f, g, h]),
        u32::from_le_bytes([i, j, k, l]),
    );
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    // Groups 0..4: the low 6 bits of bytes 0..4 (scales) and 4..8 (minimums). Groups 4..8: a
    // nibble of bytes 8..12 (low: scale, high: minimum) below the top 2 bits of bytes 0..4 or
    // 4..8, each byte's bits moved within the byte.
    let sc = (w0 & LOW6) as u64 | (((w2 & LOW4) | (((w0 >> 6) & TOP2) << 4)) as u64) << 32;
    let m = (w1 & LOW6) as u64 | ((((w2 >> 4) & LOW4) | (((w1 >> 6) & TOP2) << 4)) as u64) << 32;
    (sc, m)
}

/// The 6-bit scale and minimum of group j (0..8) of a Q4_K/Q5_K block (ggml's
/// `get_scale_min_k4`).
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// 4-bit K-quants: 8 groups of 32 with 6-bit scales and minimums:
/// value = d·sc·q − dmin·m.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-scale of the scales.
    pub d: f16,
    /// Super-scale of the minimums.
    pub dmin: f16,
    /// 8 scales and 8 minimums, 6 bits each, packed.
    pub scales: [u8; 12],
    /// Quants: 64-element chunks, the first 32 in low nibbles, the next 32 in high nibbles.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4K>() == 144);

/// The low 4 bits of group g (0..8) of a Q4_K/Q5_K block: the low or high nibbles of one
/// 32-byte run.
#[inline(always)]
fn k4_group(qs: &[u8; 128], g: usize) -> [i8; 32] {
    let run = &qs[32 * (g / 2)..32 * (g / 2) + 32];
    let shift = 4 * (g % 2);
    let mut q = [0i8; 32];
    for (q, &b) in q.iter_mut().zip(run) {
        *q = ((b >> shift) & 0x0f) as i8;
    }
    q
}

impl QuantBlock for BlockQ4K {
    const N: usize = QK_K;
    #[inline(always)]
    fn group(&self, g: usize) -> Group {
        let (sc, m) = scale_min_k4(g, &self.scales);
        Group {
            q: k4_group(&self.qs, g),
            sc: [sc as i32; 2],
            d: self.d.to_f32(),
            m: [m as i32; 2],
            dm: self.dmin.to_f32(),
        }
    }
}

/// 5-bit K-quants: Q4_K plus a fifth bit per element in `qh`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-scale of the scales.
    pub d: f16,
    /// Super-scale of the minimums.
    pub dmin: f16,
    /// 8 scales and 8 minimums, 6 bits each, packed as in Q4_K.
    pub scales: [u8; 12],
    /// Fifth bits: bit g of byte l is element 32·g + l.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, laid out as Q4_K's.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5K>() == 176);

impl QuantBlock for BlockQ5K {
    const N: usize = QK_K;
    #[inline(always)]
    fn group(&self, g: usize) -> Group {
        let (sc, m) = scale_min_k4(g, &self.scales);
        let mut q = k4_group(&self.qs, g);
        for (q, &h) in q.iter_mut().zip(&self.qh) {
            *q |= (((h >> g) & 1) << 4) as i8;
        }
        Group {
            q,
            sc: [sc as i32; 2],
            d: self.d.to_f32(),
            m: [m as i32; 2],
            dm: self.dmin.to_f32(),
        }
    }
}

/// 6-bit K-quants: 16 groups of 16 with signed 8-bit scales: value = d·sc·(q − 32).
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits.
    pub qh: [u8; QK_K / 4],
    /// Scales of the 16 groups of 16.
    pub scales: [i8; QK_K / 16],
    /// Super-scale.
    pub d: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ6K>() == 210);

impl QuantBlock for BlockQ6K {
    const N: usize = QK_K;
    #[inline(always)]
    fn group(&self, g: usize) -> Group {
        // 128-element halves; within one, run j (of 32) takes the low (j < 2) or high nibbles
        // of ql[l] (j even) or ql[l + 32] (j odd), and bits 2j of qh[l].
        let (half, j) = (g / 4, g % 4);
        let ql = &self.ql[64 * half + 32 * (j % 2)..64 * half + 32 * (j % 2) + 32];
        let qh = &self.qh[32 * half..32 * half + 32];
        let (lshift, hshift) = (4 * (j / 2), 2 * j);
        let mut q = [0i8; 32];
        for ((q, &l), &h) in q.iter_mut().zip(ql).zip(qh) {
            *q = (((l >> lshift) & 0x0f) | ((h >> hshift) & 3) << 4) as i8 - 32;
        }
        Group {
            q,
            sc: [self.scales[2 * g] as i32, self.scales[2 * g + 1] as i32],
            d: self.d.to_f32(),
            m: [0, 0],
            dm: 0.0,
        }
    }
}

/// Unpacks groups `first..first + out.len()` of a row of `B` blocks into `out`.
#[inline]
pub fn unpack<B: QuantBlock>(row: &[B], first: usize, out: &mut [Group]) {
    let per = B::N / GROUP;
    for (i, o) in out.iter_mut().enumerate() {
        let g = first + i;
        *o = row[g / per].group(g % per);
    }
}

/// The integer sums of one group with 32 activation quants `x`: `Σ q·x` and `Σ x` over each
/// half (exact in i32; any SIMD version gives the same numbers).
#[inline(always)]
pub fn group_sums(q: &[i8; GROUP], x: &[i8]) -> ([i32; 2], [i32; 2]) {
    let (mut s, mut sx) = ([0i32; 2], [0i32; 2]);
    for (h, (q, x)) in q.chunks_exact(16).zip(x.chunks_exact(16)).enumerate() {
        for (&q, &x) in q.iter().zip(x) {
            s[h] += q as i32 * x as i32;
            sx[h] += x as i32;
        }
    }
    (s, sx)
}

/// One group's contribution to the two chains of [`dot`] (the spec's inner step) with an
/// activation block of scale `dx`; `sx` is its sum (Q8_1), which the minimum then multiplies.
#[inline(always)]
pub fn group_step(gr: &Group, x: &[i8], dx: f32, sx: Option<f32>, acc: &mut f32, mins: &mut f32) {
    let (s, xs) = group_sums(&gr.q, x);
    let isum = gr.sc[0] * s[0] + gr.sc[1] * s[1];
    *acc = crate::kernels::scalar::fma(gr.d * dx, isum as f32, *acc);
    if gr.dm != 0.0 {
        *mins = match sx {
            Some(sx) => crate::kernels::scalar::fma(gr.dm, sx, *mins),
            None => {
                let imin = gr.m[0] * xs[0] + gr.m[1] * xs[1];
                crate::kernels::scalar::fma(gr.dm * dx, imin as f32, *mins)
            }
        };
    }
}

/// Dequantizes whole blocks of `B` from `blocks` into `out`.
pub fn dequantize<B: QuantBlock>(blocks: &[B], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(B::N)) {
        b.dequantize(o);
    }
}

/// The dot-product spec of these formats, per [`QuantBlock::ACTS`]:
/// - with blocks of 32 activation quants (`qs`, `d`, `s` as [`crate::kernels::QActs`] holds
///   them): per group of 32, the integer sum `Σ sc·q·x` (exact), then one fused multiply-add into
///   the scale chain, `acc = fma(d·d_x, Σ sc·q·x, acc)`, and one into the minimum chain:
///   `mins = fma(dm·d_x, Σ m·x, mins)` with Q8_0 activations, `mins = fma(dm, s_x, mins)` with
///   Q8_1's block sums (Q5_1, whose one minimum covers the group), group after group;
/// - with Q8_K activations (256 quants, one f32 scale `d_x` each; `s` unused): the same integer
///   sums over the whole block of 256 (exact in i32: at most 2^28 for every format), then one
///   fused multiply-add per block into each chain ([`block_step_k`]).
///
/// The result is `acc − mins`. A minimum chain skips the steps whose float scale is 0.
pub fn dot<B: QuantBlock>(w: &[B], qs: &[i8], d: &[f32], s: &[f32]) -> f32 {
    let groups = B::N / GROUP;
    let (mut acc, mut mins) = (0.0f32, 0.0f32);
    for (bi, b) in w.iter().enumerate() {
        match B::ACTS {
            Acts::Q8_0 | Acts::Q8_1 => {
                for g in 0..groups {
                    let gi = bi * groups + g;
                    let x = &qs[gi * GROUP..(gi + 1) * GROUP];
                    let sx = (B::ACTS == Acts::Q8_1).then(|| s[gi]);
                    group_step(&b.group(g), x, d[gi], sx, &mut acc, &mut mins);
                }
            }
            Acts::Q8K => {
                let x = &qs[bi * B::N..(bi + 1) * B::N];
                let gs: [Group; QK_K / GROUP] = core::array::from_fn(|g| b.group(g));
                block_step_k(&gs, x, d[bi], &mut acc, &mut mins);
            }
        }
    }
    acc - mins
}

/// The integer sums of one block of 256 (its eight groups `gs`) with 256 Q8_K activation quants
/// `x`: `Σ sc·q·x` and `Σ m·x` (exact in i32, in any order).
#[inline(always)]
pub fn block_sums_k(gs: &[Group; QK_K / GROUP], x: &[i8]) -> (i32, i32) {
    let (mut isum, mut imin) = (0i32, 0i32);
    for (gr, x) in gs.iter().zip(x.chunks_exact(GROUP)) {
        let (s, sx) = group_sums(&gr.q, x);
        isum += gr.sc[0] * s[0] + gr.sc[1] * s[1];
        imin += gr.m[0] * sx[0] + gr.m[1] * sx[1];
    }
    (isum, imin)
}

/// One block's contribution to the two chains of [`dot`] with Q8_K activations (scale `dx`):
/// `acc = fma(d·dx, Σ sc·q·x, acc)`, and `mins = fma(dm·dx, Σ m·x, mins)` unless `dm` is 0 (the
/// eight groups of a block share `d` and `dm`).
#[inline(always)]
pub fn block_step_k(gs: &[Group; QK_K / GROUP], x: &[i8], dx: f32, acc: &mut f32, mins: &mut f32) {
    let (isum, imin) = block_sums_k(gs, x);
    let (d, dm) = (gs[0].d, gs[0].dm);
    *acc = crate::kernels::scalar::fma(d * dx, isum as f32, *acc);
    if dm != 0.0 {
        *mins = crate::kernels::scalar::fma(dm * dx, imin as f32, *mins);
    }
}

/// ggml's `nearest_int`: round to nearest, ties to even, by adding 1.5·2²³ and reading the low
/// mantissa bits (exact for |x| < 2²²; beyond that the same bits as ggml's, which its
/// quantizers' byte identity needs).
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    ((x + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Quantizes `x` (whole blocks of 256) into Q8_K activation blocks, ggml's
/// `quantize_row_q8_K_ref`: per block, `max` is the value of largest magnitude (the first such),
/// `iscale = −127/max`, each quant is `min(127, round_ties_even(iscale·x))` and the block scale
/// `1/iscale`; a block of zeros has scale 0. Beyond ggml: a NaN value quantizes to 0 (as ggml's
/// rounding trick happens to give), and quants are clamped to −127..127 (ggml's rounding of
/// values past 2^22, reached only when `max` is subnormal, is not kept: there the scale is 0 or
/// −0 anyway).
pub fn quantize_q8k(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    for ((xb, qb), d) in x
        .chunks_exact(QK_K)
        .zip(qs.chunks_exact_mut(QK_K))
        .zip(d.iter_mut())
    {
        let (mut max, mut amax) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            qb.fill(0);
            *d = 0.0;
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in qb.iter_mut().zip(xb) {
            // Round to nearest, ties to even, as ggml's nearest_int (exact for |y| ≤ 127).
            let y = (iscale * v).clamp(-127.0, 127.0);
            *q = if y.is_nan() { 0 } else { nearest_int(y) as i8 };
        }
        *d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twelve scale bytes for each of 12·256·4 cases: every value of each byte position four
    /// times, the other bytes from a generator seeded with `seed`.
    fn scale_bytes_cases(mut seed: u64) -> impl Iterator<Item = [u8; 12]> {
        (0..12 * 256 * 4).map(move |i| {
            let mut q = [0u8; 12];
            for b in q.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = (seed >> 32) as u8;
            }
            q[i / 1024 % 12] = (i % 256) as u8;
            q
        })
    }

    #[test]
    fn packed_k4_scales_are_each_groups() {
        for q in scale_bytes_cases(0x9e37_79b9_7f4a_7c15) {
            let (sc, m) = scales_mins_k4(&q);
            for j in 0..8 {
                let want = scale_min_k4(j, &q);
                let got = ((sc >> (8 * j)) as u8, (m >> (8 * j)) as u8);
                assert_eq!(got, want, "group {j} of {q:?}");
            }
        }
    }

    #[test]
    fn q3k_scales_are_each_scale_bit_by_bit() {
        // Each scale read from the packing's definition, one bit field at a time.
        for s in scale_bytes_cases(0x2545_f491_4f6c_dd1d) {
            let got = q3k_scales(&s);
            for k in 0..16 {
                let low = (s[k % 8] >> (4 * (k / 8))) & 0x0f;
                let top = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
                assert_eq!(got[k], low | top << 4, "scale {k} of {s:?}");
            }
        }
    }

    #[test]
    fn q8k_activations_follow_ggml_q8_k() {
        // A ramp: the value of largest magnitude is the last (155), so iscale = −127/155 and
        // every quant is round(−127·x/155), ties to even.
        let x: [f32; QK_K] = core::array::from_fn(|j| j as f32 - 100.0);
        let (mut q, mut d) = ([0i8; QK_K], [0f32; 1]);
        quantize_q8k(&x, &mut q, &mut d);
        let iscale = -127.0f32 / 155.0;
        assert_eq!(d[0], 1.0 / iscale);
        for j in 0..QK_K {
            assert_eq!(q[j] as f32, libm::rintf(iscale * x[j]), "quant {j}");
        }
        assert_eq!((q[0], q[100], q[255]), (82, 0, -127));

        // The first value of the largest magnitude sets the sign of the scale (here −2: iscale
        // 63.5, scale 2/127); NaN is 0; 63.5 rounds to even; zeros give scale 0.
        let mut y = [0f32; 2 * QK_K];
        y[3] = -2.0;
        y[7] = 2.0;
        y[9] = f32::NAN;
        y[10] = 1.0;
        let (mut q, mut d) = ([1i8; 2 * QK_K], [1f32; 2]);
        quantize_q8k(&y, &mut q, &mut d);
        assert_eq!(d[0], 2.0 / 127.0);
        assert_eq!((q[3], q[7], q[9], q[10]), (-127, 127, 0, 64));
        assert_eq!(d[1], 0.0);
        assert!(q[QK_K..].iter().all(|&v| v == 0));
    }

    #[test]
    fn activation_forms_are_ggml_vec_dot_types() {
        for b in crate::weights::BLOCK_TYPES.iter() {
            let want = match (b.ty.block_size(), b.ty) {
                (QK_K, _) => Acts::Q8K,
                (_, crate::weights::GgmlType::Q5_1 | crate::weights::GgmlType::Q4_1) => Acts::Q8_1,
                _ => Acts::Q8_0,
            };
            assert_eq!(b.acts, want, "{}", b.ty.name());
        }
    }
}
