//! AVX-512 kernels with VNNI: `vpdpbusd` forms the 8 lanes of 4-byte dot products of two blocks
//! in one instruction (unsigned weights × signed activations); see `gemm.rs`.

use super::{avx2, gemm};
use crate::kernels::{Isa, Kernels, OutRows, QActs};
use crate::weights::{BlockQ4_0, BlockQ4_1, BlockQ8_0};

/// The AVX-512 VNNI table, if this CPU has it.
pub fn kernels() -> Option<Kernels> {
    if !super::avx512_vnni_supported() {
        return None;
    }
    // Activation quantization and the f32/f16 vector ops are memory-bound at these sizes: the
    // AVX2 versions are reused, attention's additions of values compiled for AVX-512 VL's 32
    // registers.
    let base = avx2::kernels()?;
    Some(Kernels {
        isa: Isa::Avx512Vnni,
        numerics: crate::kernels::Numerics::Ember,
        gemm_q4_0,
        gemm_q4_1,
        gemm_q8_0,
        gemm_blocks: super::blocks::gemm_blocks_vnni,
        update_f16: avx2::update_f16::<true>,
        update_f16_f32: avx2::update_f16_f32::<true>,
        ..base
    })
}

fn gemm_q4_0(w: &[BlockQ4_0], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: AVX-512 VNNI checked by `kernels()`.
    unsafe { crate::kernels::tiles::drive(&gemm::avx512::Q4_0, w, a, out) }
}

fn gemm_q4_1(w: &[BlockQ4_1], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: as above.
    unsafe { crate::kernels::tiles::drive(&gemm::avx512::Q4_1, w, a, out) }
}

fn gemm_q8_0(w: &[BlockQ8_0], a: &QActs<'_>, out: &mut OutRows<'_>) {
    // SAFETY: as above.
    unsafe { crate::kernels::tiles::drive(&gemm::avx512::Q8_0, w, a, out) }
}
