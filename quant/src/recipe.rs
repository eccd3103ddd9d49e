//! Which type each tensor of a quantized file takes: llama.cpp's choice (`llama_tensor_get_type`
//! in its `llama-quant.cpp`), for the targets ember writes.
//!
//! - **A single type** (`--type q4_k`, as `llama-quantize --pure`): every quantizable matrix
//!   takes it, the token embedding takes `--embeddings` (Q8_0 unless told).
//! - **A mix** (`--type q4_k_m` / `q5_k_m`, as `llama-quantize` without `--pure`): the base type
//!   (Q4_K / Q5_K), with more bits where llama.cpp puts them: Q6_K for the value projections and
//!   the FFN down projections of the first and last eighth of the layers and every third layer
//!   between (`use_more_bits`), and for the output head (also a tied token embedding), which
//!   takes Q8_0 instead when its rows are not whole Q6_K blocks.
//!
//! In both, a K type that does not divide a tensor's rows falls back as llama.cpp's
//! `tensor_type_fallback` does: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0 (rows of 576, 640, 896 or
//! 960 values, the widths of small models, are not multiples of 256), and to F16 when even that
//! does not divide them.
//!
//! Not followed: what only models ember does not run would reach (mixture-of-experts counts,
//! Falcon's and 70B Llama's special cases, importance matrices).

use ember_runtime::weights::GgmlType;

/// One of llama.cpp's per-tensor mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// `Q4_K_M`: Q4_K, with Q6_K where more bits pay (llama_ftype 15).
    Q4KM,
    /// `Q5_K_M`: Q5_K, with Q6_K where more bits pay (llama_ftype 17).
    Q5KM,
}

impl Mix {
    /// The names `--type` takes.
    pub const NAMES: [&'static str; 2] = ["q4_k_m", "q5_k_m"];

    /// The mix called `name` (any case).
    pub fn by_name(name: &str) -> Option<Mix> {
        match name.to_ascii_lowercase().as_str() {
            "q4_k_m" => Some(Mix::Q4KM),
            "q5_k_m" => Some(Mix::Q5KM),
            _ => None,
        }
    }

    /// The type of the matrices that take no more bits.
    pub fn base(self) -> GgmlType {
        match self {
            Mix::Q4KM => GgmlType::Q4_K,
            Mix::Q5KM => GgmlType::Q5_K,
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            Mix::Q4KM => 15,
            Mix::Q5KM => 17,
        }
    }
}

/// What `--type` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One type for every quantizable matrix.
    Single(GgmlType),
    /// A per-tensor mix.
    Mix(Mix),
}

impl Target {
    /// The type the recipe starts each matrix from.
    pub fn base(self) -> GgmlType {
        match self {
            Target::Single(t) => t,
            Target::Mix(m) => m.base(),
        }
    }

    /// `general.file_type` of the output.
    pub fn file_type(self) -> u32 {
        match self {
            Target::Single(t) => crate::file_type(t),
            Target::Mix(m) => m.file_type(),
        }
    }
}

/// What llama.cpp calls a tensor's category (by its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    /// Value projections, fused QKV, or the compressed KV projection.
    AttnV,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if ["attn_qkv.weight", "attn_kv_b.weight", "attn_v.weight"]
        .iter()
        .any(|p| name.contains(p))
    {
        Category::AttnV
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third layer
/// between.
fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The K types' fallbacks for rows they do not divide (llama.cpp's `tensor_type_fallback`), and
/// F16 when the fallback does not divide them either.
pub fn fallback(ty: GgmlType, cols: usize) -> GgmlType {
    if cols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let to = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        GgmlType::IQ4_XS => GgmlType::IQ4_NL,
        other => other,
    };
    if cols.is_multiple_of(to.block_size()) {
        to
    } else {
        GgmlType::F16
    }
}

/// Chooses each quantizable tensor's type, in llama.cpp's tensor order (the mixes count value
/// and FFN down projections as they go, as llama.cpp does).
pub struct Recipe {
    target: Target,
    embeddings: Option<GgmlType>,
    /// The model has no separate output head (the token embedding is also the output).
    tied: bool,
    n_attn_v: i64,
    n_layer: i64,
    i_attn_v: i64,
    i_ffn_down: i64,
}

impl Recipe {
    /// A recipe for a model whose tensors are `names` and which has `n_layer` blocks.
    /// `embeddings` is the token embedding's type when the user chose it.
    pub fn new<'n>(
        target: Target,
        embeddings: Option<GgmlType>,
        names: impl Iterator<Item = &'n str>,
        n_layer: usize,
    ) -> Recipe {
        let (mut tied, mut n_attn_v) = (true, 0);
        for n in names {
            match category(n) {
                Category::Output => tied = false,
                Category::AttnV => n_attn_v += 1,
                _ => {}
            }
        }
        Recipe {
            target,
            embeddings,
            tied,
            n_attn_v,
            n_layer: n_layer as i64,
            i_attn_v: 0,
            i_ffn_down: 0,
        }
    }

    /// The type of the next quantizable tensor, `name`, whose rows hold `cols` values.
    pub fn choose(&mut self, name: &str, cols: usize) -> GgmlType {
        let cat = category(name);
        if cat == Category::TokenEmbd {
            if let Some(e) = self.embeddings {
                return e;
            }
        }
        let mut ty = self.target.base();
        if let Target::Mix(_) = self.target {
            let head = cat == Category::Output || (self.tied && cat == Category::TokenEmbd);
            if head {
                ty = if !cols.is_multiple_of(ty.block_size()) {
                    GgmlType::Q8_0
                } else {
                    GgmlType::Q6_K
                };
            } else if cat == Category::AttnV {
                if use_more_bits(self.i_attn_v, self.n_attn_v) {
                    ty = GgmlType::Q6_K;
                }
                self.i_attn_v += 1;
            } else if cat == Category::FfnDown {
                if use_more_bits(self.i_ffn_down, self.n_layer) {
                    ty = GgmlType::Q6_K;
                }
                self.i_ffn_down += 1;
            }
        }
        fallback(ty, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M (30 layers, rows of 576 and 1536, tied embedding) as llama-quantize makes
    /// its Q4_K_M: the file the issue lists holds q4_K, q5_0, q6_K and q8_0.
    #[test]
    fn q4_k_m_of_a_small_llama() {
        let mut names = vec!["token_embd.weight".to_string()];
        for l in 0..30 {
            for t in [
                "attn_k",
                "attn_output",
                "attn_q",
                "attn_v",
                "ffn_down",
                "ffn_gate",
            ] {
                names.push(format!("blk.{l}.{t}.weight"));
            }
        }
        let mut r = Recipe::new(
            Target::Mix(Mix::Q4KM),
            None,
            names.iter().map(|s| s.as_str()),
            30,
        );
        let mut got = std::collections::BTreeMap::new();
        for n in &names {
            let cols = if n.contains("ffn_down") { 1536 } else { 576 };
            let role = n.split('.').nth(2).unwrap_or("embd").to_string();
            *got.entry((role, r.choose(n, cols).name())).or_insert(0) += 1;
        }
        use GgmlType::*;
        let want = [
            (("attn_k", Q5_0), 30),
            (("attn_output", Q5_0), 30),
            (("attn_q", Q5_0), 30),
            // use_more_bits(i, 30): i < 3, i ≥ 26, (i − 3) % 3 == 2 → 3 + 4 + 7 = 14 layers.
            (("attn_v", Q8_0), 14),
            (("attn_v", Q5_0), 16),
            (("ffn_down", Q6_K), 14),
            (("ffn_down", Q4_K), 16),
            (("ffn_gate", Q5_0), 30),
            (("embd", Q8_0), 1),
        ];
        for ((t, ty), n) in want {
            let key = (t.to_string(), ty.name());
            assert_eq!(got.get(&key), Some(&n), "{t} {ty:?}: {got:?}");
        }
    }

    #[test]
    fn fallbacks_follow_llama_cpp() {
        use GgmlType::*;
        assert_eq!(fallback(Q4_K, 576), Q5_0);
        assert_eq!(fallback(Q5_K, 640), Q5_1);
        assert_eq!(fallback(Q6_K, 896), Q8_0);
        assert_eq!(fallback(Q4_K, 1536), Q4_K);
        assert_eq!(fallback(Q4_K, 100), F16);
        assert_eq!(fallback(IQ4_NL, 576), IQ4_NL);
    }

    #[test]
    fn chosen_embeddings_and_untied_heads() {
        let names = ["token_embd.weight", "output.weight", "blk.0.attn_v.weight"];
        let mut r = Recipe::new(Target::Mix(Mix::Q5KM), None, names.iter().copied(), 1);
        // Untied: the embedding keeps the base type; the head takes Q6_K (2048 = 8 blocks).
        assert_eq!(r.choose("token_embd.weight", 2048), GgmlType::Q5_K);
        assert_eq!(r.choose("output.weight", 2048), GgmlType::Q6_K);
        assert_eq!(r.choose("blk.0.attn_v.weight", 2048), GgmlType::Q6_K);
        let mut r = Recipe::new(
            Target::Single(GgmlType::Q4_K),
            Some(GgmlType::Q8_0),
            names.iter().copied(),
            1,
        );
        assert_eq!(r.choose("token_embd.weight", 576), GgmlType::Q8_0);
        assert_eq!(r.choose("output.weight", 576), GgmlType::Q5_0);
    }
}
