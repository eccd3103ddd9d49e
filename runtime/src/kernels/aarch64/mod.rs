//! aarch64 kernel sets: NEON (every 64-bit Arm core: the Pi 3's and Zero 2 W's Cortex-A53, the
//! Pi 4's A72) and NEON with the dot-product extension (SDOT: the Pi 5's A76).

/// A marker for llvm-mca around one block of a decode kernel (`tools/mca-arm.py` builds with
/// `--cfg ember_mca` to count its cycles statically); nothing in any other build.
macro_rules! mca_mark {
    ($m:literal) => {
        #[cfg(ember_mca)]
        // SAFETY: an assembler comment: no instruction.
        unsafe {
            core::arch::asm!(
                concat!("// LLVM-MCA-", $m),
                options(nomem, nostack, preserves_flags)
            )
        }
    };
    ($m:literal, $id:expr) => {
        #[cfg(ember_mca)]
        // SAFETY: an assembler comment: no instruction.
        unsafe {
            core::arch::asm!(
                concat!("// LLVM-MCA-", $m, " type{id}"),
                id = const $id,
                options(nomem, nostack, preserves_flags)
            )
        }
    };
}

mod blocks;
pub mod neon;

/// NEON is part of the aarch64 baseline (the `neon` target feature is on for every aarch64
/// target Rust supports), so it needs no detection.
pub fn neon_supported() -> bool {
    cfg!(target_feature = "neon")
}

/// The dot-product extension, detected at run time with `std`.
#[cfg(feature = "std")]
pub fn dotprod_supported() -> bool {
    neon_supported() && std::arch::is_aarch64_feature_detected!("dotprod")
}

/// The dot-product extension, as compiled in.
#[cfg(not(feature = "std"))]
pub fn dotprod_supported() -> bool {
    neon_supported() && cfg!(target_feature = "dotprod")
}
