//! Tensor tracing for numerical comparison with llama.cpp (feature `trace`, std only).
//!
//! With the feature on and `EMBER_TRACE=DIR` set, every [`forward`](super::forward::forward)
//! call writes each intermediate tensor as raw little-endian f32 to
//! `DIR/<call>-<name>.bin`, under the names llama.cpp's graph gives them (`attn_norm-0`,
//! `Qcur-0` after RoPE, `kqv_out-0`, `ffn_swiglu-0`, `l_out-0`, `result_output`…), so a dump of
//! llama.cpp's tensors (taken with its `cb_eval` callback) can be compared bit for bit,
//! `tools/compare-trace.py` shows where two runs first differ. Without the feature every call
//! compiles to nothing.

#[cfg(feature = "trace")]
mod imp {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALL: AtomicUsize = AtomicUsize::new(0);

    /// Starts the next forward call's numbering.
    pub fn next_call() {
        CALL.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes `data` as `<call>-<name>[-<layer>].bin` when `EMBER_TRACE` names a directory.
    pub fn tensor(name: &str, layer: Option<usize>, data: &[f32]) {
        let Some(dir) = std::env::var_os("EMBER_TRACE") else {
            return;
        };
        let call = CALL.load(Ordering::Relaxed).saturating_sub(1);
        let file = match layer {
            Some(l) => format!("{call}-{name}-{l}.bin"),
            None => format!("{call}-{name}.bin"),
        };
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        // A trace is a debugging aid: a failed write is reported, not fatal.
        if let Err(e) = std::fs::write(std::path::Path::new(&dir).join(&file), bytes) {
            std::eprintln!("ember: trace: {file}: {e}");
        }
    }
}

#[cfg(not(feature = "trace"))]
mod imp {
    /// Nothing (tracing is compiled out).
    #[inline(always)]
    pub fn next_call() {}
    /// Nothing (tracing is compiled out).
    #[inline(always)]
    pub fn tensor(_name: &str, _layer: Option<usize>, _data: &[f32]) {}
}

pub use imp::{next_call, tensor};
