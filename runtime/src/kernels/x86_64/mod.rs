//! x86-64 kernel sets: AVX2 (+FMA, F16C) and AVX-512 with VNNI.
//!
//! Each `#[target_feature]` function is `unsafe` to call: the caller must have checked the CPU.
//! The safe wrappers in each file are only reachable through a [`super::Kernels`] table that
//! `kernels()` hands out after that check, which is what makes them sound.

pub mod avx2;
pub mod avx512;
mod blocks;
mod gemm;

/// AVX2 with FMA and F16C, detected at run time with `std`.
#[cfg(feature = "std")]
pub fn avx2_supported() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// AVX2 with FMA and F16C, as compiled in (no runtime detection without `std`).
#[cfg(not(feature = "std"))]
pub fn avx2_supported() -> bool {
    cfg!(all(
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))
}

/// AVX-512 F/BW/VL/DQ with VNNI (and the AVX2 set), detected at run time with `std`.
#[cfg(feature = "std")]
pub fn avx512_vnni_supported() -> bool {
    avx2_supported()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// AVX-512 F/BW/VL with VNNI, as compiled in.
#[cfg(not(feature = "std"))]
pub fn avx512_vnni_supported() -> bool {
    avx2_supported()
        && cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl",
            target_feature = "avx512dq",
            target_feature = "avx512vnni"
        ))
}
