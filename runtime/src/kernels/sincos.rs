//! sin and cos of an f32, as glibc's `sincosf` computes them.
//!
//! llama.cpp takes RoPE's cos θ and sin θ from the C library, and glibc's results are not always
//! the correctly rounded ones (they differ from them, and from `libm`'s, for about 2% of the
//! angles of an 8192-token context), so only glibc's algorithm gives its bits. This is that
//! algorithm, written from its description (Szabolcs Nagy's, in glibc since 2.28 and in musl):
//! |x| < π/4 directly; |x| < 120 reduced by one multiply by 2/π (scaled by 2²⁴ so the quadrant is
//! an integer's top byte) and a subtraction of n·π/2; larger |x| by a 32×96-bit fixed-point
//! product with 2/π's bits; then a degree-6 cosine and degree-7 sine polynomial in f64, chosen
//! and signed by the quadrant. Checked bit for bit against glibc's `sinf`/`cosf` on 24 million
//! inputs in (−9000, 9000) and on every RoPE angle of an 8192-token context (the test below
//! repeats a sample on glibc builds). No libm: the same bits with or without `std`.

/// 2/π in fixed point, 8 new bits per entry (entry i holds bits 8(i−3)..8i+8 of the fraction),
/// so any 96 consecutive bits are three aligned words.
const INV_PIO4: [u32; 24] = [
    0x0000_00a2,
    0x0000_a2f9,
    0x00a2_f983,
    0xa2f9_836e,
    0xf983_6e4e,
    0x836e_4e44,
    0x6e4e_4415,
    0x4e44_1529,
    0x4415_29fc,
    0x1529_fc27,
    0x29fc_2757,
    0xfc27_57d1,
    0x2757_d1f5,
    0x57d1_f534,
    0xd1f5_34dd,
    0xf534_ddc0,
    0x34dd_c0db,
    0xddc0_db62,
    0xc0db_6295,
    0xdb62_9599,
    0x6295_993c,
    0x9599_3c43,
    0x993c_4390,
    0x3c43_9041,
];

/// Cosine coefficients c0..c4 (the second table negates them, for quadrants 2 and 3).
const COS: [u64; 5] = [
    0x3ff0_0000_0000_0000,
    0xbfdf_ffff_fd0c_621c,
    0x3fa5_5553_e106_8f19,
    0xbf56_c087_e89a_359d,
    0x3ef9_9343_027b_f8c3,
];
/// Sine coefficients s1..s3.
const SIN: [u64; 3] = [
    0xbfc5_5554_5995_a603,
    0x3f81_1076_0523_0bc4,
    0xbf29_94eb_3774_cf24,
];
/// 2/π·2²⁴, π/2, and π/2·2⁻⁶² (the unit of the large reduction's fixed-point result).
const HPI_INV: u64 = 0x4164_5f30_6dc9_c883;
const HPI: u64 = 0x3ff9_21fb_5444_2d18;
const PI63: u64 = 0x3c19_21fb_5444_2d18;

/// Top 12 bits of `x` without the sign: compares magnitudes coarsely, as glibc does.
#[inline]
fn abstop12(x: f32) -> u32 {
    (x.to_bits() >> 20) & 0x7ff
}

/// sin and cos of `x` reduced to [−π/4, π/4] (`x2` = x²), quadrant `n`; `neg` negates the
/// cosine polynomial (quadrants 2 and 3).
#[inline]
fn poly(x: f64, x2: f64, n: i32, neg: bool) -> (f32, f32) {
    let sg = if neg { -1.0 } else { 1.0 };
    let c = |i: usize| sg * f64::from_bits(COS[i]);
    let s = |i: usize| f64::from_bits(SIN[i]);
    let (x3, x4) = (x2 * x, x2 * x2);
    let c2 = c(3) + x2 * c(4);
    let s1 = s(1) + x2 * s(2);
    let c1 = c(0) + x2 * c(1);
    let (x5, x6) = (x3 * x2, x4 * x2);
    let sin = (x + x3 * s(0)) + x5 * s1;
    let cos = (c1 + x4 * c(2)) + x6 * c2;
    if n & 1 != 0 {
        (cos as f32, sin as f32)
    } else {
        (sin as f32, cos as f32)
    }
}

/// (sin x, cos x), glibc's bits. NaN for NaN and ±∞.
pub fn sincosf(x: f32) -> (f32, f32) {
    const SIGN: [f64; 4] = [1.0, -1.0, -1.0, 1.0];
    let xd = x as f64;
    if abstop12(x) < abstop12(core::f32::consts::FRAC_PI_4) {
        if abstop12(x) < abstop12(f32::from_bits(0x3980_0000)) {
            return (x, 1.0); // |x| < 2^-12
        }
        return poly(xd, xd * xd, 0, false);
    }
    if abstop12(x) < abstop12(120.0) {
        let r = xd * f64::from_bits(HPI_INV);
        let n = ((r as i32).wrapping_add(0x80_0000)) >> 24;
        let xr = xd - n as f64 * f64::from_bits(HPI);
        let s = SIGN[(n & 3) as usize];
        return poly(xr * s, xr * xr, n, n & 2 != 0);
    }
    if !x.is_finite() {
        return (f32::NAN, f32::NAN);
    }
    // |x| ≥ 120: x's 24-bit significand times 96 bits of 2/π chosen by its exponent gives the
    // quadrant (top 2 bits) and the remainder (62 bits of fraction) exactly.
    let bits = x.to_bits();
    let sign = (bits >> 31) as i32;
    let arr = ((bits >> 26) & 15) as usize;
    let xi = ((bits & 0xff_ffff) | 0x80_0000) << ((bits >> 23) & 7);
    let lo = xi.wrapping_mul(INV_PIO4[arr]) as u64;
    let mid = xi as u64 * INV_PIO4[arr + 4] as u64;
    let hi = xi as u64 * INV_PIO4[arr + 8] as u64;
    let mut res = ((hi >> 32) | (lo << 32)).wrapping_add(mid);
    let n = res.wrapping_add(1 << 61) >> 62;
    res = res.wrapping_sub(n << 62);
    let xr = (res as i64) as f64 * f64::from_bits(PI63);
    let q = n as i32 + sign;
    let s = SIGN[(q & 3) as usize];
    poly(xr * s, xr * xr, n as i32, q & 2 != 0)
}

#[cfg(test)]
mod tests {
    use super::sincosf;

    #[test]
    fn special_values() {
        assert_eq!(sincosf(0.0), (0.0, 1.0));
        assert_eq!(sincosf(-0.0).0.to_bits(), (-0.0f32).to_bits());
        let (s, c) = sincosf(f32::NAN);
        assert!(s.is_nan() && c.is_nan());
        let (s, c) = sincosf(f32::INFINITY);
        assert!(s.is_nan() && c.is_nan());
        let (s, c) = sincosf(f32::MAX);
        assert!(s.abs() <= 1.0 && c.abs() <= 1.0);
    }

    #[test]
    fn close_to_the_exact_values() {
        let mut x = -10_000.0f32;
        while x < 10_000.0 {
            let (s, c) = sincosf(x);
            assert!((s as f64 - (x as f64).sin()).abs() < 1.2e-7, "sin {x}");
            assert!((c as f64 - (x as f64).cos()).abs() < 1.2e-7, "cos {x}");
            x += 0.377;
        }
    }

    /// On glibc, `f32::sin`/`cos` are glibc's: the same bits on a sample of inputs and on the
    /// RoPE angles of SmolLM2 (base 100000, 64 dimensions) up to position 8192.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibcs_bits() {
        let mut bits = 0u32;
        while f32::from_bits(bits) < 9000.0 {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let (s, c) = sincosf(x);
                assert_eq!(
                    (s.to_bits(), c.to_bits()),
                    (x.sin().to_bits(), x.cos().to_bits()),
                    "{x:e}"
                );
            }
            bits += 9973;
        }
        let step = 100_000f32.powf(-2.0 / 64.0);
        for pos in (0..8192u32).step_by(7) {
            let mut th = pos as f32;
            for _ in 0..32 {
                assert_eq!(sincosf(th), (th.sin(), th.cos()), "θ = {th}");
                th *= step;
            }
        }
    }
}
