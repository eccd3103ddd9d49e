//! Compute kernels and their dispatch.
//!
//! [`scalar`] is the reference; `x86_64/` and `aarch64/` hold the SIMD sets, one file per
//! instruction set. A [`Kernels`] table is chosen once when a model is loaded — by runtime CPU
//! detection under `std`, by `cfg(target_feature)` without it — and the forward pass calls only
//! through it, so a generic build still uses AVX2 / AVX-512 / SDOT where the CPU has them.

pub mod attend;
pub mod scalar;
pub mod sincos;
pub mod tiles;

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;

use crate::weights::{quants, BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockType, QK};
use core::fmt;
use half::f16;

/// An instruction-set family of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL, DQ) with VNNI.
    Avx512Vnni,
    /// aarch64 NEON (Cortex-A53, A72: Pi 3, Zero 2 W, Pi 4).
    Neon,
    /// aarch64 NEON with SDOT (Cortex-A76: Pi 5).
    NeonDotprod,
}

impl Isa {
    /// Every set, fastest first.
    pub const ALL: [Isa; 5] = [
        Isa::Avx512Vnni,
        Isa::Avx2,
        Isa::NeonDotprod,
        Isa::Neon,
        Isa::Scalar,
    ];

    /// The name printed in stats and accepted by `EMBER_KERNELS`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
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
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => aarch64::neon_supported(),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => aarch64::dotprod_supported(),
            #[cfg(not(target_arch = "aarch64"))]
            Isa::Neon | Isa::NeonDotprod => false,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Activations quantized to 8 bits for the integer matrix products, planar: for each token, `nb`
/// blocks of quants and their scales `d`. In the common form ([`quants::Acts::Q8_0`] and
/// [`quants::Acts::Q8_1`], made by
/// [`Kernels::quantize`]) blocks hold 32 quants, `d` is the f16-rounded amax/127 (as f32) and
/// `s` the f16-rounded d·Σq (as f32, used by Q4_1's minimum term; Q4_0 and Q8_0 ignore it); one
/// quantization serves every weight type of 32-element blocks. The formats of 256-element blocks
/// take ggml's Q8_K instead ([`quants::Acts::Q8K`], [`quants::quantize_q8k`]): blocks of 256
/// quants with an f32 scale, and `s` empty.
#[derive(Clone, Copy, Debug)]
pub struct QActs<'a> {
    /// Quants, `[tokens][nb * 32]`.
    pub qs: &'a [i8],
    /// Block scales, `[tokens][nb]`.
    pub d: &'a [f32],
    /// Block sums times scale, `[tokens][nb]`.
    pub s: &'a [f32],
    /// The integer sums Σq of each 32 quants ([`block_sums`]): `[tokens][nb]`, or with Q8_K
    /// `[tokens][nb * 8]`; or empty. Some SIMD products read them (a weight offset's
    /// correction, the K formats' minimums); without them they take a slower way to the same
    /// result.
    pub sums: &'a [i32],
    /// Blocks per token.
    pub nb: usize,
}

impl QActs<'_> {
    /// Tokens held.
    pub fn tokens(&self) -> usize {
        self.d.len().checked_div(self.nb).unwrap_or(0)
    }

    /// Whether the integer sums of every 32 quants are here ([`QActs::sums`]).
    pub fn has_sums(&self) -> bool {
        self.sums.len() * QK == self.qs.len()
    }
}

/// Each block's integer sum: `sums[b] = Σ qs[32b..32b + 32]`.
pub fn block_sums(qs: &[i8], sums: &mut [i32]) {
    for (s, q) in sums.iter_mut().zip(qs.chunks_exact(QK)) {
        *s = q.iter().map(|&v| v as i32).sum();
    }
}

/// Quantizes one row of activations (`x.len() = 32·nb`) into `qs`, `d`, `s`.
pub type QuantizeFn = fn(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]);

/// Quantizes activations (whole blocks of 256) into Q8_K quants `qs` and block scales `d`: the
/// spec is [`quants::quantize_q8k`].
pub type QuantizeKFn = fn(x: &[f32], qs: &mut [i8], d: &mut [f32]);

/// Where a matrix product writes: element (token t, row r) at `t * stride + r`, for `r` in
/// `0..rows` and `t` in `0..toks`. Threads working on one product each hold a view of a disjoint
/// range of rows ([`OutRows::rows`]). Elements are f32 unless told (the forward pass also writes
/// quantized activations through such views).
pub struct OutRows<'a, T = f32> {
    ptr: *mut T,
    stride: usize,
    rows: usize,
    toks: usize,
    _out: core::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: an `OutRows` is a unique view of its elements (disjoint from every other view made by
// `rows`), so moving it to, or sharing it with, another thread is like moving a `&mut [T]`.
unsafe impl<T: Send> Send for OutRows<'_, T> {}
// SAFETY: as above; `set` needs `&mut self`, so a shared view cannot write.
unsafe impl<T: Sync> Sync for OutRows<'_, T> {}

impl<'a, T: Copy> OutRows<'a, T> {
    /// A view of `out` holding `toks` rows of `rows` values, `stride` apart.
    pub fn new(out: &'a mut [T], stride: usize, rows: usize, toks: usize) -> Self {
        assert!(rows <= stride || toks <= 1, "rows overlap");
        assert!(
            toks == 0 || out.len() >= (toks - 1) * stride + rows,
            "output too small"
        );
        OutRows {
            ptr: out.as_mut_ptr(),
            stride,
            rows,
            toks,
            _out: core::marker::PhantomData,
        }
    }

    /// Rows `r0..r1` of this view.
    ///
    /// # Safety
    /// Views used at the same time must cover disjoint row ranges.
    pub unsafe fn rows(&self, r0: usize, r1: usize) -> OutRows<'a, T> {
        assert!(r0 <= r1 && r1 <= self.rows);
        // SAFETY: r0 <= rows, so the offset stays inside the original slice (or one past it).
        OutRows {
            ptr: unsafe { self.ptr.add(r0) },
            stride: self.stride,
            rows: r1 - r0,
            toks: self.toks,
            _out: self._out,
        }
    }

    /// Rows in this view.
    pub fn n_rows(&self) -> usize {
        self.rows
    }

    /// Tokens in this view.
    pub fn n_toks(&self) -> usize {
        self.toks
    }

    /// Reads element (t, r).
    #[inline]
    pub fn get(&self, t: usize, r: usize) -> T {
        assert!(t < self.toks && r < self.rows);
        // SAFETY: (t, r) is inside the view (checked), which `new` checked against the slice.
        unsafe { *self.ptr.add(t * self.stride + r) }
    }

    /// Row `t` of this view: its `rows` elements.
    #[inline]
    pub fn row_mut(&mut self, t: usize) -> &mut [T] {
        assert!(t < self.toks);
        // SAFETY: the elements t·stride .. t·stride + rows belong to this view alone (views made
        // by `rows` are disjoint), and `new` checked them against the slice.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(t * self.stride), self.rows) }
    }

    /// Writes element (t, r).
    #[inline]
    pub fn set(&mut self, t: usize, r: usize, v: T) {
        assert!(t < self.toks && r < self.rows);
        // SAFETY: (t, r) is inside the view (checked), which `new` checked against the slice.
        unsafe { *self.ptr.add(t * self.stride + r) = v }
    }
}

/// A batched matrix product: `w` holds rows of `a.nb` weight blocks (as many rows as `out` has);
/// writes `out(t, r) = w[r] · a[t]` for every row r and token t.
pub type GemmFn<W> = fn(w: &[W], a: &QActs<'_>, out: &mut OutRows<'_>);

/// A batched product for the block formats of the weight table ([`gemm_blocks`]): rows of
/// `row_bytes` bytes of the format `kind`.
pub type GemmBlocksFn =
    fn(kind: &BlockType, w: &[u8], row_bytes: usize, a: &QActs<'_>, out: &mut OutRows<'_>);

/// The order the products of ggml's first formats (Q4_0, Q4_1, Q8_0) follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numerics {
    /// ember's: the weight table's spec ([`crate::weights::quants::dot`]: each block's integer
    /// sum exact, then one fused multiply-add per block), the same bits on every set.
    Ember,
    /// llama.cpp's (its AVX-512 build's accumulator order): the tiles that reproduce
    /// llama.cpp's logits bit for bit, kept as the proof that the forward pass is llama.cpp's.
    Exact,
}

/// The kernel table the forward pass calls through.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Which set this is.
    pub isa: Isa,
    /// Which order the Q4_0 / Q4_1 / Q8_0 products follow: [`Numerics::Ember`] routes them
    /// through `gemm_blocks` (the table's spec), [`Numerics::Exact`] through `gemm_q4_0`,
    /// `gemm_q4_1` and `gemm_q8_0`.
    pub numerics: Numerics,
    /// Activations → 8-bit planar blocks.
    pub quantize: QuantizeFn,
    /// Activations → Q8_K blocks (for the 256-element block formats).
    pub quantize_q8k: QuantizeKFn,
    /// Q4_0 weights × 8-bit activations.
    pub gemm_q4_0: GemmFn<BlockQ4_0>,
    /// Q4_1 weights × 8-bit activations.
    pub gemm_q4_1: GemmFn<BlockQ4_1>,
    /// Q8_0 weights × 8-bit activations.
    pub gemm_q8_0: GemmFn<BlockQ8_0>,
    /// The weight table's other block formats × 8-bit activations ([`gemm_blocks`]).
    pub gemm_blocks: GemmBlocksFn,
    /// f32 · f32.
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// f16 · f32 (attention scores over an f16 key cache).
    pub dot_f16_f32: fn(&[f16], &[f32]) -> f32,
    /// y = fma(a, x, y).
    pub axpy_f32: fn(&mut [f32], f32, &[f32]),
    /// acc += Σ a_i · (row i of b, rows `stride` apart), in order ([`scalar::fma_rows`]).
    pub fma_rows: fn(&mut [f32], &[f32], &[f32], usize),
    /// RoPE of one head, adjacent pairs ([`scalar::rope`]).
    pub rope: fn(&mut [f32], &[f32]),
    /// RoPE of one head, GPT-NeoX's halves ([`scalar::rope_neox`]).
    pub rope_neox: fn(&mut [f32], &[f32]),
    /// One chunk of attention's online softmax ([`scalar::softmax_chunk`]).
    pub softmax: attend::SoftmaxFn,
    /// Attention scores over an f16 key cache, a chunk of keys at a time
    /// ([`scalar::scores_f16`]).
    pub scores_f16: fn(&[f16], &[f32], &mut [f32]),
    /// A chunk of f16 values into attention's f16 running sum, rescaled where the max grew
    /// ([`scalar::update_f16`]; llama.cpp's numerics).
    pub update_f16: UpdateF16Fn<f16>,
    /// The same into an f32 running sum (ember's numerics, [`attend::RunningSum`]).
    pub update_f16_f32: UpdateF16Fn<f32>,
    /// gate = silu(gate)·up with ggml's exp ([`scalar::exp_ggml`]).
    pub swiglu: fn(&mut [f32], &[f32]),
    /// gate = gelu_tanh(gate)·up with libm's tanh ([`scalar::geglu`]).
    pub geglu: fn(&mut [f32], &[f32]),
    /// x ← tanh(x) with libm's tanh ([`scalar::tanh_inplace`]; logit soft-capping).
    pub tanh: fn(&mut [f32]),
    /// x ← e^x with ggml's exp ([`scalar::exp_ggml`]; the weights of tiled attention).
    pub exp_ggml: fn(&mut [f32]),
    /// y = fma(q·d, a, y) over Q8_0 blocks (attention over a Q8_0 value cache).
    pub mad_q8_0: fn(&mut [f32], &[BlockQ8_0], f32),
    /// f16 → f32, element by element (exact; [`scalar::f16_f32`]): the cache rows tiled
    /// attention reads.
    pub f16_f32: fn(&[f16], &mut [f32]),
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kernels({})", self.name())
    }
}

/// Adds a chunk of f16 values to attention's running sum ([`scalar::update_f16`]): running sum,
/// values, which keys grow the max, their factors or weights.
pub type UpdateF16Fn<A> = fn(&mut [A], &[f16], &[bool], &[f32]);

/// Row-by-row product with a per-(row, token) dot function: the scalar set's GEMM.
pub fn gemm_by_rows<W>(
    dot: impl Fn(&[W], &[i8], &[f32], &[f32]) -> f32,
    w: &[W],
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    let nb = a.nb;
    if nb == 0 {
        return;
    }
    for (r, row) in w.chunks_exact(nb).take(out.n_rows()).enumerate() {
        for t in 0..a.tokens().min(out.n_toks()) {
            let qs = &a.qs[t * nb * QK..(t + 1) * nb * QK];
            let (d, s) = (&a.d[t * nb..(t + 1) * nb], &a.s[t * nb..(t + 1) * nb]);
            out.set(t, r, dot(row, qs, d, s));
        }
    }
}

/// The product of rows of a block format of the weight table (`row_bytes` bytes each) with every
/// token of `a` (activations in the format's form, `kind.acts`): for each row, groups are
/// unpacked once for a tile of tokens, then each token takes [`quants::group_step`] group after
/// group (or [`quants::block_step_k`] block after block with Q8_K activations), so every (row,
/// token) result is the spec's ([`quants::dot`]) bit for bit. The scalar set's version; the SIMD
/// sets' are in `x86_64/blocks.rs` and `aarch64/blocks.rs`.
pub fn gemm_blocks(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &mut OutRows<'_>,
) {
    const GROUPS: usize = 16;
    const TOKENS: usize = 64;
    let nb = a.nb;
    if nb == 0 || row_bytes == 0 {
        return;
    }
    let n_tok = a.tokens().min(out.n_toks());
    let empty = quants::Group {
        q: [0; quants::GROUP],
        sc: [0; 2],
        d: 0.0,
        m: [0; 2],
        dm: 0.0,
    };
    let mut groups = [empty; GROUPS];
    if kind.acts == quants::Acts::Q8K {
        // nb blocks of 256 a token; a block's eight groups unpacked once per tile of tokens.
        const GPB: usize = quants::QK_K / quants::GROUP;
        let mut gs = [empty; GPB];
        for (r, row) in w.chunks_exact(row_bytes).take(out.n_rows()).enumerate() {
            for t0 in (0..n_tok).step_by(TOKENS) {
                let tn = (n_tok - t0).min(TOKENS);
                let (mut acc, mut mins) = ([0f32; TOKENS], [0f32; TOKENS]);
                for b in 0..nb {
                    (kind.unpack)(row, b * GPB, &mut gs);
                    for t in 0..tn {
                        let tok = t0 + t;
                        let i = tok * nb + b;
                        let x = &a.qs[i * quants::QK_K..(i + 1) * quants::QK_K];
                        quants::block_step_k(&gs, x, a.d[i], &mut acc[t], &mut mins[t]);
                    }
                }
                for t in 0..tn {
                    out.set(t0 + t, r, acc[t] - mins[t]);
                }
            }
        }
        return;
    }
    for (r, row) in w.chunks_exact(row_bytes).take(out.n_rows()).enumerate() {
        for t0 in (0..n_tok).step_by(TOKENS) {
            let tn = (n_tok - t0).min(TOKENS);
            let (mut acc, mut mins) = ([0f32; TOKENS], [0f32; TOKENS]);
            for g0 in (0..nb).step_by(GROUPS) {
                let gn = (nb - g0).min(GROUPS);
                (kind.unpack)(row, g0, &mut groups[..gn]);
                for t in 0..tn {
                    let tok = t0 + t;
                    let qs = &a.qs[tok * nb * QK..(tok + 1) * nb * QK];
                    let d = &a.d[tok * nb..(tok + 1) * nb];
                    for (i, gr) in groups[..gn].iter().enumerate() {
                        let g = g0 + i;
                        let sx = (kind.acts == quants::Acts::Q8_1).then(|| a.s[tok * nb + g]);
                        quants::group_step(
                            gr,
                            &qs[g * QK..(g + 1) * QK],
                            d[g],
                            sx,
                            &mut acc[t],
                            &mut mins[t],
                        );
                    }
                }
            }
            for t in 0..tn {
                out.set(t0 + t, r, acc[t] - mins[t]);
            }
        }
    }
}

/// What a product of a block format of the weight table covers, for the SIMD sets' versions of
/// [`gemm_blocks`]: `(nb, rows, toks)`, activation blocks per token, rows and tokens, or `None`
/// when there is nothing to compute. Checks that the activations hold what the tiles read in the
/// format's form (`kind.acts`) and that a row is `nb` such blocks.
pub(crate) fn block_extent(
    kind: &BlockType,
    w: &[u8],
    row_bytes: usize,
    a: &QActs<'_>,
    out: &OutRows<'_>,
) -> Option<(usize, usize, usize)> {
    let nb = a.nb;
    if nb == 0 || row_bytes == 0 {
        return None;
    }
    let rows = (w.len() / row_bytes).min(out.n_rows());
    let toks = a.tokens().min(out.n_toks());
    if rows == 0 || toks == 0 {
        return None;
    }
    let block = kind.acts.block();
    assert!(a.qs.len() >= toks * nb * block && a.d.len() >= toks * nb);
    // The blocks of 32 carry their sums (read by Q8_1 formats).
    assert!(kind.acts == quants::Acts::Q8K || a.s.len() >= toks * nb);
    assert!(row_bytes == kind.ty.row_bytes((nb * block) as u64).unwrap_or(0) as usize);
    Some((nb, rows, toks))
}

/// Rows `r0..r0 + R` of `w` (rows of `row_bytes`, `rows` of them), worked on together by a SIMD
/// tile; a last group shorter than `R` repeats its last row (computed, not stored).
pub(crate) fn row_group<const R: usize>(
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    r0: usize,
) -> [&[u8]; R] {
    core::array::from_fn(|j| {
        let r = (r0 + j).min(rows - 1);
        &w[r * row_bytes..(r + 1) * row_bytes]
    })
}

fn scalar_gemm_q4_0(w: &[BlockQ4_0], a: &QActs<'_>, out: &mut OutRows<'_>) {
    gemm_by_rows(scalar::vec_dot_q4_0, w, a, out)
}
fn scalar_gemm_q4_1(w: &[BlockQ4_1], a: &QActs<'_>, out: &mut OutRows<'_>) {
    gemm_by_rows(scalar::vec_dot_q4_1, w, a, out)
}
fn scalar_gemm_q8_0(w: &[BlockQ8_0], a: &QActs<'_>, out: &mut OutRows<'_>) {
    gemm_by_rows(scalar::vec_dot_q8_0, w, a, out)
}

impl Kernels {
    /// The scalar reference set.
    pub const SCALAR: Kernels = Kernels {
        isa: Isa::Scalar,
        numerics: Numerics::Ember,
        quantize: scalar::quantize_row,
        quantize_q8k: quants::quantize_q8k,
        gemm_q4_0: scalar_gemm_q4_0,
        gemm_q4_1: scalar_gemm_q4_1,
        gemm_q8_0: scalar_gemm_q8_0,
        gemm_blocks,
        dot_f32: scalar::vec_dot_f32,
        dot_f16_f32: scalar::vec_dot_f16_f32,
        axpy_f32: scalar::axpy_f32,
        rope: scalar::rope,
        rope_neox: scalar::rope_neox,
        softmax: scalar::softmax_chunk,
        scores_f16: scalar::scores_f16,
        update_f16: scalar::update_f16::<f16>,
        update_f16_f32: scalar::update_f16::<f32>,
        swiglu: scalar::swiglu,
        geglu: scalar::geglu,
        tanh: scalar::tanh_inplace,
        fma_rows: scalar::fma_rows,
        exp_ggml: scalar::exp_ggml_inplace,
        mad_q8_0: attend::mad_q8_0_scalar,
        f16_f32: scalar::f16_f32,
    };

    /// This set with llama.cpp's order for Q4_0 / Q4_1 / Q8_0 ([`Numerics::Exact`]).
    pub fn exact(self) -> Kernels {
        Kernels {
            numerics: Numerics::Exact,
            ..self
        }
    }

    /// The name printed in stats and accepted by `--kernels`: the set's, with `+exact` for
    /// llama.cpp's order.
    pub fn name(&self) -> &'static str {
        match (self.numerics, self.isa) {
            (Numerics::Ember, isa) => isa.name(),
            (Numerics::Exact, Isa::Scalar) => "scalar+exact",
            (Numerics::Exact, Isa::Avx2) => "avx2+exact",
            (Numerics::Exact, Isa::Avx512Vnni) => "avx512-vnni+exact",
            (Numerics::Exact, Isa::Neon) => "neon+exact",
            (Numerics::Exact, Isa::NeonDotprod) => "neon-dotprod+exact",
        }
    }

    /// The table a `--kernels` name gives: `auto` (or empty), a set's name, `exact` (the best
    /// set in llama.cpp's order), or a set's name with `+exact`; `None` for an unknown name or
    /// a set this CPU cannot run.
    pub fn from_name(name: &str) -> Option<Kernels> {
        let (set, exact) = match name {
            "exact" => ("auto", true),
            _ => match name.strip_suffix("+exact") {
                Some("") => return None,
                Some(set) => (set, true),
                None => (name, false),
            },
        };
        let k = match set {
            "" | "auto" => Self::best(),
            _ => Self::for_isa(Isa::from_name(set)?)?,
        };
        Some(if exact { k.exact() } else { k })
    }

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
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => aarch64::neon::kernels(),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => aarch64::neon::kernels_dotprod(),
            #[allow(unreachable_patterns)]
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
