//! Compute kernels and their dispatch.
//!
//! [`scalar`] is the reference; `x86_64/` and `aarch64/` hold the SIMD sets, one file per
//! instruction set. A [`Kernels`] table is chosen once when a model is loaded — by runtime CPU
//! detection under `std`, by `cfg(target_feature)` without it — and the forward pass calls only
//! through it, so a generic build still uses AVX2 / AVX-512 / SDOT where the CPU has them.

pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use core::fmt;
use half::f16;

/// An instruction-set family of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) with VNNI.
    Avx512Vnni,
}

impl Isa {
    /// Every set, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar];

    /// The name printed in stats and accepted by `EMBER_KERNELS`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }

    /// Parses a name as printed by [`Isa::name`].
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    /// Whether this CPU can run the set (runtime detection with `std`, compile-time without).
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86_64::avx2_supported(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86_64::avx512_vnni_supported(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512Vnni => false,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A batched matrix product over quantized blocks: `w` holds rows of `nb` weight blocks, `x`
/// holds tokens of `nb` activation blocks; writes `out[t * out_stride + r] = w[r] · x[t]`.
pub type GemmFn<W, A> = fn(w: &[W], x: &[A], nb: usize, out: &mut [f32], out_stride: usize);

/// The kernel table the forward pass calls through.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Which set this is.
    pub isa: Isa,
    /// Activations → Q8_0 blocks (for Q4_0 and Q8_0 weights).
    pub quantize_q8_0: fn(&[f32], &mut [BlockQ8_0]),
    /// Activations → Q8_1 blocks (for Q4_1 weights).
    pub quantize_q8_1: fn(&[f32], &mut [BlockQ8_1]),
    /// Q4_0 weights × Q8_0 activations.
    pub gemm_q4_0_q8_0: GemmFn<BlockQ4_0, BlockQ8_0>,
    /// Q4_1 weights × Q8_1 activations.
    pub gemm_q4_1_q8_1: GemmFn<BlockQ4_1, BlockQ8_1>,
    /// Q8_0 weights × Q8_0 activations.
    pub gemm_q8_0_q8_0: GemmFn<BlockQ8_0, BlockQ8_0>,
    /// f32 · f32.
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// f16 · f32 (attention scores over an f16 key cache).
    pub dot_f16_f32: fn(&[f16], &[f32]) -> f32,
    /// y += a·x with f16 x (attention over an f16 value cache).
    pub axpy_f16: fn(&mut [f32], f32, &[f16]),
    /// y += a·x.
    pub axpy_f32: fn(&mut [f32], f32, &[f32]),
    /// y = f16(x·a + y) (f16 running sum of attention).
    pub mad_f16: fn(&mut [f16], &[f16], f32),
    /// y = f16(y·a).
    pub scale_f16: fn(&mut [f16], f32),
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kernels({})", self.isa)
    }
}

/// Row-by-row product with a per-row dot function: the generic driver behind every set's GEMM.
/// Each weight row is read once and multiplied by every token while it is in cache.
#[inline(always)]
pub fn gemm_by_rows<W, A>(
    dot: impl Fn(&[W], &[A]) -> f32,
    w: &[W],
    x: &[A],
    nb: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if nb == 0 {
        return;
    }
    for (r, row) in w.chunks_exact(nb).enumerate() {
        for (t, xt) in x.chunks_exact(nb).enumerate() {
            out[t * out_stride + r] = dot(row, xt);
        }
    }
}

fn scalar_gemm_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], s: usize) {
    gemm_by_rows(scalar::vec_dot_q4_0_q8_0, w, x, nb, out, s)
}
fn scalar_gemm_q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1], nb: usize, out: &mut [f32], s: usize) {
    gemm_by_rows(scalar::vec_dot_q4_1_q8_1, w, x, nb, out, s)
}
fn scalar_gemm_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0], nb: usize, out: &mut [f32], s: usize) {
    gemm_by_rows(scalar::vec_dot_q8_0_q8_0, w, x, nb, out, s)
}

impl Kernels {
    /// The scalar reference set.
    pub const SCALAR: Kernels = Kernels {
        isa: Isa::Scalar,
        quantize_q8_0: crate::weights::blocks::quantize_act_q8_0,
        quantize_q8_1: crate::weights::blocks::quantize_act_q8_1,
        gemm_q4_0_q8_0: scalar_gemm_q4_0,
        gemm_q4_1_q8_1: scalar_gemm_q4_1,
        gemm_q8_0_q8_0: scalar_gemm_q8_0,
        dot_f32: scalar::vec_dot_f32,
        dot_f16_f32: scalar::vec_dot_f16_f32,
        axpy_f16: scalar::axpy_f16,
        axpy_f32: scalar::axpy_f32,
        mad_f16: scalar::mad_f16,
        scale_f16: scalar::scale_f16,
    };

    /// The table for `isa`, or `None` when this CPU cannot run it.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        if !isa.is_supported() {
            return None;
        }
        match isa {
            Isa::Scalar => Some(Self::SCALAR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86_64::avx2::kernels(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86_64::avx512::kernels(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    /// The fastest set this CPU supports.
    pub fn best() -> Kernels {
        Isa::ALL
            .into_iter()
            .find_map(Self::for_isa)
            .unwrap_or(Self::SCALAR)
    }

    /// Every set this CPU supports (for tests and benchmarks).
    pub fn all_supported() -> impl Iterator<Item = Kernels> {
        Isa::ALL.into_iter().filter_map(Self::for_isa)
    }
}

#[cfg(test)]
mod tests;
