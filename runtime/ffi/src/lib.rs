//! libember: the C ABI of the ember runtime. `include/ember.h` is generated from this file by
//! cbindgen (`tests/header.rs` fails when the committed header is stale).
//!
//! Every entry point checks its pointers, catches panics (none may cross into C) and reports
//! failures as an [`ember_status`] plus a thread-local message ([`ember_last_error`]).

#![allow(non_camel_case_types)]

use ember_runtime::engine::{Engine, LoadedModel, Settings};
use ember_runtime::kernels::Kernels;
use ember_runtime::kv::KvType;
use ember_runtime::sampler::SamplerConfig;
use ember_runtime::session::{self, GenOptions, StopReason};
use ember_runtime::Error;
use std::cell::{RefCell, UnsafeCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Alignment, in bytes, that ember_model_open_memory needs of its buffer (malloc's and mmap's
/// buffers have it).
pub const EMBER_DATA_ALIGN: usize = 8;

/// Result of every fallible call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ember_status {
    /// Success.
    EMBER_OK = 0,
    /// A NULL pointer, invalid UTF-8, or a parameter out of range.
    EMBER_ERR_INVALID_ARGUMENT,
    /// The file could not be opened or read.
    EMBER_ERR_IO,
    /// The data is not a well-formed GGUF model.
    EMBER_ERR_FORMAT,
    /// A well-formed model ember cannot run (architecture, tensor type, version).
    EMBER_ERR_UNSUPPORTED,
    /// A buffer, the context, or memory is too small.
    EMBER_ERR_CAPACITY,
    /// Stopped by ember_session_cancel.
    EMBER_ERR_CANCELLED,
    /// A bug in ember (a caught panic); the message says where.
    EMBER_ERR_INTERNAL,
}
use ember_status::*;

/// Precision of the KV cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ember_kv_type {
    /// Half precision (default).
    EMBER_KV_F16 = 0,
    /// Single precision.
    EMBER_KV_F32 = 1,
    /// 8-bit blocks.
    EMBER_KV_Q8_0 = 2,
}

/// Session parameters: start from ember_params_default() and change what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ember_params {
    /// Context size in tokens (the KV ring's capacity), 1 ..= the model's context length.
    pub n_ctx: u32,
    /// Threads for the forward pass; 0 = one per physical core (as the ember CLI).
    pub n_threads: u32,
    /// Sampling temperature; 0 = greedy.
    pub temperature: f32,
    /// Keep the K most likely tokens (0 = all; 1 = greedy).
    pub top_k: u32,
    /// Nucleus sampling mass, (0, 1]; 1 = off.
    pub top_p: f32,
    /// Minimum probability relative to the best token, [0, 1]; 0 = off.
    pub min_p: f32,
    /// Repetition penalty; 1 = off.
    pub repeat_penalty: f32,
    /// Random seed (same seed, same text on the same machine).
    pub seed: u64,
    /// Tokens the penalties look back over.
    pub repeat_last_n: u32,
    /// Leading tokens the ring KV cache never overwrites (must be below n_ctx).
    pub n_sinks: u32,
    /// KV cache precision: one of ember_kv_type (a plain integer here, so that any value C
    /// passes is checked rather than trusted).
    pub kv_type: u32,
}

/// A model: the mapped (or borrowed) file and its tables. Read-only once open.
pub struct ember_model {
    model: Arc<LoadedModel>,
}

/// One conversation over a model: KV cache, sampler, threads, chat state.
pub struct ember_session {
    /// The engine, used by the one thread the C contract allows per session at a time.
    inner: UnsafeCell<Engine>,
    /// The engine's cancel flag, set by ember_session_cancel (from any thread).
    cancel: Arc<AtomicBool>,
}

// SAFETY: `inner` is only reached by the one thread the C contract allows per session at a time;
// `cancel` is atomic.
unsafe impl Sync for ember_session {}

/// Called for each piece of generated text: whole UTF-8 characters, `len` bytes, also
/// NUL-terminated. Return non-zero to stop the generation (no further call follows).
pub type ember_piece_fn =
    Option<unsafe extern "C" fn(piece: *const c_char, len: usize, user: *mut c_void) -> c_int>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// A failure: the status and its message.
struct Fail(ember_status, String);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Io { .. } => EMBER_ERR_IO,
            Error::UnsupportedVersion(_)
            | Error::UnsupportedTensorType { .. }
            | Error::UnsupportedWeightType { .. }
            | Error::UnsupportedArchitecture(_) => EMBER_ERR_UNSUPPORTED,
            Error::Capacity { .. } | Error::OutOfMemory { .. } => EMBER_ERR_CAPACITY,
            Error::InvalidArgument(_)
            | Error::Setting { .. }
            | Error::TokenOutOfRange { .. }
            | Error::Template { .. }
            | Error::Grammar { .. } => EMBER_ERR_INVALID_ARGUMENT,
            Error::Cancelled => EMBER_ERR_CANCELLED,
            _ => EMBER_ERR_FORMAT,
        };
        Fail(status, e.to_string())
    }
}

fn invalid(msg: &str) -> Fail {
    Fail(EMBER_ERR_INVALID_ARGUMENT, msg.to_string())
}

/// Runs `f`, turning errors and panics into a status and a message.
fn guard(f: impl FnOnce() -> Result<ember_status, Fail>) -> ember_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(s)) => s,
        Ok(Err(Fail(status, msg))) => {
            set_error(&msg);
            status
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            set_error(&format!("internal error (please report): {what}"));
            EMBER_ERR_INTERNAL
        }
    }
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid(&format!("{what} is not valid UTF-8")))
}

/// The `*out` of a constructor, set to NULL until it succeeds.
///
/// # Safety
/// `out` is NULL or valid for writes.
unsafe fn out_slot<'a, T>(out: *mut *mut T) -> Result<&'a mut *mut T, Fail> {
    // SAFETY: NULL is refused; otherwise the caller guarantees a writable pointer.
    let slot = unsafe { out.as_mut() }.ok_or_else(|| invalid("out is NULL"))?;
    *slot = core::ptr::null_mut();
    Ok(slot)
}

/// The library's version, e.g. "0.1.0" (a static string).
#[no_mangle]
pub extern "C" fn ember_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The message of this thread's last failure ("" if none). Valid until this thread's next
/// failing call.
#[no_mangle]
pub extern "C" fn ember_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Default parameters: context 2048, one thread per physical core, greedy (temperature 0), top-k 40, top-p 0.95,
/// min-p 0.05, no repetition penalty (window 64), seed 0x5eed, 4 sinks, f16 KV cache.
#[no_mangle]
pub extern "C" fn ember_params_default() -> ember_params {
    let s = SamplerConfig::default();
    ember_params {
        n_ctx: 2048,
        n_threads: 0,
        temperature: 0.0,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        repeat_penalty: 1.0,
        seed: 0x5eed,
        repeat_last_n: s.repeat_last_n as u32,
        n_sinks: session::DEFAULT_SINKS as u32,
        kv_type: ember_kv_type::EMBER_KV_F16 as u32,
    }
}

/// Opens the GGUF model at `path` (memory-mapped, read-only). On failure `*out` is NULL.
/// The file must not change while the model is open.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_model_open(
    path: *const c_char,
    out: *mut *mut ember_model,
) -> ember_status {
    guard(|| {
        // SAFETY: the caller passes NULL or a writable pointer.
        let out = unsafe { out_slot(out) }?;
        // SAFETY: the caller passes NULL or a C string.
        let path = unsafe { c_str(path, "path") }?;
        let model = LoadedModel::open(path, Kernels::best())
            .map_err(|e| Fail::from(e).with_context(path))?;
        *out = Box::into_raw(Box::new(ember_model {
            model: Arc::new(model),
        }));
        Ok(EMBER_OK)
    })
}

impl Fail {
    fn with_context(self, what: &str) -> Fail {
        Fail(self.0, format!("{what}: {}", self.1))
    }
}

/// Opens a GGUF model held in memory. The model borrows `data` (nothing is copied): keep it
/// unchanged and alive until ember_model_free. `data` must be aligned to EMBER_DATA_ALIGN (8)
/// bytes, as every malloc and mmap buffer is, since the weights are read in place; another
/// address gives EMBER_ERR_INVALID_ARGUMENT. On failure `*out` is NULL.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes that outlive the model; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ember_model_open_memory(
    data: *const c_void,
    len: usize,
    out: *mut *mut ember_model,
) -> ember_status {
    guard(|| {
        // SAFETY: the caller passes NULL or a writable pointer.
        let out = unsafe { out_slot(out) }?;
        if data.is_null() {
            return Err(invalid("data is NULL"));
        }
        if !(data as usize).is_multiple_of(EMBER_DATA_ALIGN) {
            return Err(invalid(&format!(
                "data must be aligned to {EMBER_DATA_ALIGN} bytes (its address is {} past a multiple): the weights are read in place",
                data as usize % EMBER_DATA_ALIGN
            )));
        }
        // SAFETY: the caller guarantees `len` readable bytes that outlive the model.
        let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(data as *const u8, len) };
        let model = LoadedModel::from_static(bytes, Kernels::best())?;
        *out = Box::into_raw(Box::new(ember_model {
            model: Arc::new(model),
        }));
        Ok(EMBER_OK)
    })
}

/// Frees a model (NULL: nothing). Free its sessions first.
///
/// # Safety
/// `m` is NULL or a model from ember_model_open*, not yet freed, with no live session.
#[no_mangle]
pub unsafe extern "C" fn ember_model_free(m: *mut ember_model) {
    if !m.is_null() {
        // SAFETY: the caller passes a pointer from Box::into_raw, freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(m) })));
    }
}

/// The engine settings of `p` (checked by the engine against the model).
fn settings(p: &ember_params) -> Result<Settings, Fail> {
    let kv_type = match p.kv_type {
        0 => KvType::F16,
        1 => KvType::F32,
        2 => KvType::Q8_0,
        _ => return Err(invalid("kv_type is not one of EMBER_KV_*")),
    };
    Ok(Settings {
        n_ctx: p.n_ctx as usize,
        sinks: p.n_sinks as usize,
        kv_type,
        threads: p.n_threads as usize,
        sampler: SamplerConfig {
            temperature: p.temperature,
            top_k: p.top_k as usize,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            repeat_last_n: p.repeat_last_n as usize,
            seed: p.seed,
            ..SamplerConfig::default()
        },
        ..Settings::default()
    })
}

/// Makes a session over model `m` with parameters `p` (NULL: the defaults). Every buffer is
/// allocated here, once. On failure `*out` is NULL. The model must outlive the session.
///
/// # Safety
/// `m` is NULL or an open model; `p` is NULL or readable; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_session_new(
    m: *const ember_model,
    p: *const ember_params,
    out: *mut *mut ember_session,
) -> ember_status {
    guard(|| {
        // SAFETY: the caller passes NULL or a writable pointer.
        let out = unsafe { out_slot(out) }?;
        if m.is_null() {
            return Err(invalid("model is NULL"));
        }
        // SAFETY: an open model (the session keeps its own reference to it).
        let model = Arc::clone(unsafe { &(*m).model });
        let params = if p.is_null() {
            ember_params_default()
        } else {
            // SAFETY: non-NULL and readable.
            unsafe { *p }
        };
        let engine = Engine::new(model, &settings(&params)?, None)?;
        let s = Box::new(ember_session {
            cancel: engine.cancel_flag(),
            inner: UnsafeCell::new(engine),
        });
        *out = Box::into_raw(s);
        Ok(EMBER_OK)
    })
}

/// Frees a session (NULL: nothing).
///
/// # Safety
/// `s` is NULL or a session from ember_session_new, not yet freed, not in use.
#[no_mangle]
pub unsafe extern "C" fn ember_session_free(s: *mut ember_session) {
    if !s.is_null() {
        // SAFETY: a pointer from Box::into_raw, freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(s) })));
    }
}

/// Forgets the context and the conversation (NULL: nothing).
///
/// # Safety
/// `s` is NULL or a live session not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn ember_session_reset(s: *mut ember_session) {
    if s.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a live session used by this thread only.
        let engine = unsafe { &mut *(*s).inner.get() };
        engine.reset();
    }));
}

/// Keeps every later ember_generate and ember_chat reply of `s` inside the GBNF grammar `gbnf`
/// (llama.cpp's syntax; its `root` rule; each reply is one sentence of it, ending where the
/// grammar may end). NULL removes the grammar. ember_grammar_json() gives the built-in JSON
/// grammar. A grammar that does not compile is EMBER_ERR_INVALID_ARGUMENT, its line and column
/// in ember_last_error(), and the session keeps the grammar it had.
///
/// # Safety
/// `s` is NULL or a live session used by this thread only; `gbnf` NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn ember_session_set_grammar(
    s: *mut ember_session,
    gbnf: *const c_char,
) -> ember_status {
    guard(|| {
        if s.is_null() {
            return Err(invalid("session is NULL"));
        }
        // SAFETY: a live session used by this thread only.
        let engine = unsafe { &mut *(*s).inner.get() };
        let src = if gbnf.is_null() {
            None
        } else {
            // SAFETY: non-NULL, a C string.
            Some(unsafe { c_str(gbnf, "gbnf") }?)
        };
        engine.set_grammar(src)?;
        Ok(EMBER_OK)
    })
}

/// Keeps every later ember_generate and ember_chat reply of `s` JSON text that the JSON Schema
/// `schema` accepts (the schema is JSON text; it becomes a grammar as `ember run --json-schema`
/// makes it: see the README for the keywords). NULL removes the grammar. A schema that is not
/// JSON, or that uses a keyword ember cannot turn into a grammar (`pattern`, `minimum`, ...),
/// is EMBER_ERR_INVALID_ARGUMENT with the keyword and where it is in ember_last_error(), and
/// the session keeps the grammar it had.
///
/// # Safety
/// `s` is NULL or a live session used by this thread only; `schema` NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn ember_session_set_json_schema(
    s: *mut ember_session,
    schema: *const c_char,
) -> ember_status {
    guard(|| {
        if s.is_null() {
            return Err(invalid("session is NULL"));
        }
        // SAFETY: a live session used by this thread only.
        let engine = unsafe { &mut *(*s).inner.get() };
        if schema.is_null() {
            engine.set_grammar(None)?;
            return Ok(EMBER_OK);
        }
        // SAFETY: non-NULL, a C string.
        let src = unsafe { c_str(schema, "schema") }?;
        let gbnf = ember_runtime::grammar::gbnf_from_schema(src)?;
        engine.set_grammar(Some(&gbnf))?;
        Ok(EMBER_OK)
    })
}

/// The built-in grammar of any JSON value, for ember_session_set_grammar (a static string).
#[no_mangle]
pub extern "C" fn ember_grammar_json() -> *const c_char {
    static JSON: std::sync::OnceLock<CString> = std::sync::OnceLock::new();
    JSON.get_or_init(|| CString::new(ember_runtime::grammar::JSON).unwrap_or_default())
        .as_ptr()
}

/// Asks the call running on `s` (from any thread) to stop: ember_generate or ember_chat returns
/// EMBER_ERR_CANCELLED after the current token, or, while the prompt is being evaluated, after
/// the current layer (well under 100 ms on a small model). The session stays usable: a prompt
/// stopped half-way is not kept (if it had begun to overwrite the full ring cache, the context
/// is forgotten), and ember_chat forgets the user message it was given. NULL: nothing.
///
/// # Safety
/// `s` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn ember_session_cancel(s: *mut ember_session) {
    if !s.is_null() {
        // SAFETY: a live session; only its atomic flag is touched.
        unsafe { (*s).cancel.store(true, Ordering::SeqCst) };
    }
}

/// Tokenizes `text` (special tokens such as <|im_start|> recognised; BOS where the model asks
/// for it) into `ids`. `*n_out` is the number of tokens; when `cap` is too small, nothing is
/// written to `ids`, `*n_out` is the count needed and the status is EMBER_ERR_CAPACITY. `ids`
/// may be NULL when `cap` is 0.
///
/// # Safety
/// `m` is NULL or an open model; `text` NULL or a C string; `ids` NULL or `cap` writable
/// int32_t; `n_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ember_tokenize(
    m: *const ember_model,
    text: *const c_char,
    ids: *mut i32,
    cap: usize,
    n_out: *mut usize,
) -> ember_status {
    guard(|| {
        if m.is_null() || n_out.is_null() {
            return Err(invalid("model or n_out is NULL"));
        }
        if ids.is_null() && cap > 0 {
            return Err(invalid("ids is NULL but cap is not 0"));
        }
        // SAFETY: checked non-NULL.
        unsafe { *n_out = 0 };
        // SAFETY: a C string or NULL (checked).
        let text = unsafe { c_str(text, "text") }?;
        // SAFETY: an open model.
        let model = unsafe { (*m).model.model() };
        let toks = model.tokenizer.encode_to_vec(text.as_bytes(), true, true)?;
        // SAFETY: checked non-NULL.
        unsafe { *n_out = toks.len() };
        if toks.len() > cap {
            return Err(Fail(
                EMBER_ERR_CAPACITY,
                format!("{} tokens do not fit in {cap}", toks.len()),
            ));
        }
        for (i, &t) in toks.iter().enumerate() {
            // SAFETY: i < toks.len() <= cap, and `ids` holds `cap` values.
            unsafe { *ids.add(i) = t as i32 };
        }
        Ok(EMBER_OK)
    })
}

/// Streams `text` to the C callback: NUL-terminated pieces on whole characters.
fn emit(cb: ember_piece_fn, user: *mut c_void, text: &str) -> bool {
    let Some(cb) = cb else { return true };
    let mut buf = [0u8; 256];
    let mut rest = text;
    while !rest.is_empty() {
        let mut n = rest.len().min(buf.len() - 1);
        while !rest.is_char_boundary(n) {
            n -= 1;
        }
        buf[..n].copy_from_slice(&rest.as_bytes()[..n]);
        buf[n] = 0;
        // SAFETY: the caller's callback, given a NUL-terminated piece of n bytes.
        if unsafe { cb(buf.as_ptr() as *const c_char, n, user) } != 0 {
            return false;
        }
        rest = &rest[n..];
    }
    true
}

/// The options of a C generation call.
fn options(max_tokens: u32) -> GenOptions<'static> {
    GenOptions {
        max_tokens: max_tokens as usize,
        ignore_eos: false,
        stop: &[],
    }
}

/// The piece callback of a C generation call: stops once the session is cancelled.
fn pieces<'a>(
    s: &'a ember_session,
    cb: ember_piece_fn,
    user: *mut c_void,
    cancelled: &'a mut bool,
) -> impl FnMut(&str) -> bool + 'a {
    move |piece| {
        if s.cancel.load(Ordering::SeqCst) {
            *cancelled = true;
            return false;
        }
        emit(cb, user, piece)
    }
}

/// The status of a finished C generation call.
fn finished(
    s: &ember_session,
    r: Result<ember_runtime::engine::Outcome, Error>,
    cancelled: bool,
) -> Result<ember_status, Fail> {
    let o = r?;
    if cancelled || (o.reason == StopReason::Stopped && s.cancel.load(Ordering::SeqCst)) {
        return Err(Fail(EMBER_ERR_CANCELLED, "generation cancelled".into()));
    }
    Ok(EMBER_OK)
}

/// Appends `prompt` (verbatim, special tokens recognised) to the session's context and generates
/// up to `max_tokens` tokens, calling `cb` with the text as it comes (NULL: no callback). Stops at
/// an end-of-generation token, after `max_tokens`, when `cb` returns non-zero (EMBER_OK), or
/// on ember_session_cancel (EMBER_ERR_CANCELLED). With temperature 0 the text equals
/// `ember run -p PROMPT`'s.
///
/// # Safety
/// `s` is NULL or a live session used by this thread only; `prompt` NULL or a C string; `cb`
/// NULL or a function safe to call with `user`.
#[no_mangle]
pub unsafe extern "C" fn ember_generate(
    s: *mut ember_session,
    prompt: *const c_char,
    max_tokens: u32,
    cb: ember_piece_fn,
    user: *mut c_void,
) -> ember_status {
    guard(|| {
        if s.is_null() {
            return Err(invalid("session is NULL"));
        }
        // SAFETY: a C string or NULL (checked).
        let prompt = unsafe { c_str(prompt, "prompt") }?;
        // SAFETY: a live session; `inner` is used by this thread only (the C contract).
        let (s, engine) = unsafe { (&*s, &mut *(*s).inner.get()) };
        let mut cancelled = false;
        let r = engine.generate(
            prompt,
            &options(max_tokens),
            &mut || {},
            &mut pieces(s, cb, user, &mut cancelled),
        );
        finished(s, r, cancelled)
    })
}

/// One chat turn: `user_message` through the model's chat template (the conversation so far is
/// kept; only new tokens are fed), then the reply streamed to `cb` as in ember_generate. The
/// reply ends at the model's end-of-turn token, which is not passed to `cb`.
///
/// # Safety
/// As ember_generate.
#[no_mangle]
pub unsafe extern "C" fn ember_chat(
    s: *mut ember_session,
    user_message: *const c_char,
    max_tokens: u32,
    cb: ember_piece_fn,
    user: *mut c_void,
) -> ember_status {
    guard(|| {
        if s.is_null() {
            return Err(invalid("session is NULL"));
        }
        // SAFETY: a C string or NULL (checked).
        let msg = unsafe { c_str(user_message, "user_message") }?;
        // SAFETY: a live session used by this thread only.
        let (s, engine) = unsafe { (&*s, &mut *(*s).inner.get()) };
        let mut cancelled = false;
        let r = engine.chat(
            msg,
            &options(max_tokens),
            &mut || {},
            &mut pieces(s, cb, user, &mut cancelled),
        );
        finished(s, r, cancelled)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_runtime::error::Name;

    #[test]
    fn errors_map_to_the_statuses_ember_h_promises() {
        let status = |e: Error| Fail::from(e).0;
        assert_eq!(
            status(Error::UnsupportedWeightType {
                name: Name::new("blk.0.ffn_up.weight"),
                ty: "iq2_xxs",
                supported: "",
            }),
            EMBER_ERR_UNSUPPORTED
        );
        assert_eq!(
            status(Error::UnsupportedTensorType {
                name: Name::new("x"),
                type_id: 99
            }),
            EMBER_ERR_UNSUPPORTED
        );
        assert_eq!(
            status(Error::OutOfMemory {
                what: "session memory",
                bytes: 1 << 40
            }),
            EMBER_ERR_CAPACITY
        );
        assert_eq!(status(Error::Cancelled), EMBER_ERR_CANCELLED);
        assert_eq!(
            status(Error::Template {
                reason: "it is nested too deeply",
                detail: ember_runtime::error::Detail::new("brackets")
            }),
            EMBER_ERR_INVALID_ARGUMENT
        );
    }
}
