/*
 * ember.h: the C ABI of ember, an LLM inference runtime for small devices.
 * Generated from runtime/ffi/src/lib.rs by cbindgen; do not edit (tests/header.rs checks it).
 *
 * Link with -lember (libember.so or libember.a; the static library also needs
 * -lpthread -ldl -lm).
 *
 * Thread safety: a model is read-only once open; any number of sessions, on any threads, may
 * use one model at once. A session is used by one thread at a time, except
 * ember_session_cancel, which may be called from any thread while another generates.
 * ember_last_error is per thread. Every function checks its pointers: NULL gives
 * EMBER_ERR_INVALID_ARGUMENT (or nothing, for the *_free and void functions).
 *
 * Stack: every call works on a host thread with 256 KiB of stack (the C test makes a session
 * and chats on one); give threads at least that (musl's default is 128 KiB). Chat templates,
 * which come from the model file, are compiled and rendered on a thread of ember's own with a
 * 128 MiB stack (reserved, touched only as deep as a template goes), so no template can
 * overflow the caller's.
 *
 * Memory: every buffer is allocated when a model or session is made; an allocation the system
 * refuses is EMBER_ERR_CAPACITY, never an abort.
 */

#ifndef EMBER_H
#define EMBER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

// Alignment, in bytes, that ember_model_open_memory needs of its buffer (malloc's and mmap's
// buffers have it).
#define EMBER_DATA_ALIGN 8

// Result of every fallible call.
typedef enum ember_status {
  // Success.
  EMBER_OK = 0,
  // A NULL pointer, invalid UTF-8, or a parameter out of range.
  EMBER_ERR_INVALID_ARGUMENT,
  // The file could not be opened or read.
  EMBER_ERR_IO,
  // The data is not a well-formed GGUF model.
  EMBER_ERR_FORMAT,
  // A well-formed model ember cannot run (architecture, tensor type, version).
  EMBER_ERR_UNSUPPORTED,
  // A buffer, the context, or memory is too small.
  EMBER_ERR_CAPACITY,
  // Stopped by ember_session_cancel.
  EMBER_ERR_CANCELLED,
  // A bug in ember (a caught panic); the message says where.
  EMBER_ERR_INTERNAL,
} ember_status;

// Precision of the KV cache.
typedef enum ember_kv_type {
  // Half precision (default).
  EMBER_KV_F16 = 0,
  // Single precision.
  EMBER_KV_F32 = 1,
  // 8-bit blocks.
  EMBER_KV_Q8_0 = 2,
} ember_kv_type;

// A model: the mapped (or borrowed) file and its tables. Read-only once open.
typedef struct ember_model ember_model;

// One conversation over a model: KV cache, sampler, threads, chat state.
typedef struct ember_session ember_session;

// Session parameters: start from ember_params_default() and change what you need.
typedef struct ember_params {
  // Context size in tokens (the KV ring's capacity), 1 ..= the model's context length.
  uint32_t n_ctx;
  // Threads for the forward pass; 0 = one per physical core (as the ember CLI).
  uint32_t n_threads;
  // Sampling temperature; 0 = greedy.
  float temperature;
  // Keep the K most likely tokens (0 = all; 1 = greedy).
  uint32_t top_k;
  // Nucleus sampling mass, (0, 1]; 1 = off.
  float top_p;
  // Minimum probability relative to the best token, [0, 1]; 0 = off.
  float min_p;
  // Repetition penalty; 1 = off.
  float repeat_penalty;
  // Random seed (same seed, same text on the same machine).
  uint64_t seed;
  // Tokens the penalties look back over.
  uint32_t repeat_last_n;
  // Leading tokens the ring KV cache never overwrites (must be below n_ctx).
  uint32_t n_sinks;
  // KV cache precision: one of ember_kv_type (a plain integer here, so that any value C
  // passes is checked rather than trusted).
  uint32_t kv_type;
} ember_params;

// Called for each piece of generated text: whole UTF-8 characters, `len` bytes, also
// NUL-terminated. Return non-zero to stop the generation (no further call follows).
typedef int (*ember_piece_fn)(const char *piece, size_t len, void *user);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// The library's version, e.g. "0.1.0" (a static string).
const char *ember_version(void);

// The message of this thread's last failure ("" if none). Valid until this thread's next
// failing call.
const char *ember_last_error(void);

// Default parameters: context 2048, one thread per physical core, greedy (temperature 0), top-k 40, top-p 0.95,
// min-p 0.05, no repetition penalty (window 64), seed 0x5eed, 4 sinks, f16 KV cache.
struct ember_params ember_params_default(void);

// Opens the GGUF model at `path` (memory-mapped, read-only). On failure `*out` is NULL.
// The file must not change while the model is open.
//
// # Safety
// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
enum ember_status ember_model_open(const char *path, struct ember_model **out);

// Opens a GGUF model held in memory. The model borrows `data` (nothing is copied): keep it
// unchanged and alive until ember_model_free. `data` must be aligned to EMBER_DATA_ALIGN (8)
// bytes, as every malloc and mmap buffer is, since the weights are read in place; another
// address gives EMBER_ERR_INVALID_ARGUMENT. On failure `*out` is NULL.
//
// # Safety
// `data` is NULL or points to `len` readable bytes that outlive the model; `out` is NULL or
// writable.
enum ember_status ember_model_open_memory(const void *data, size_t len, struct ember_model **out);

// Frees a model (NULL: nothing). Free its sessions first.
//
// # Safety
// `m` is NULL or a model from ember_model_open*, not yet freed, with no live session.
void ember_model_free(struct ember_model *m);

// Makes a session over model `m` with parameters `p` (NULL: the defaults). Every buffer is
// allocated here, once. On failure `*out` is NULL. The model must outlive the session.
//
// # Safety
// `m` is NULL or an open model; `p` is NULL or readable; `out` is NULL or writable.
enum ember_status ember_session_new(const struct ember_model *m,
                                    const struct ember_params *p,
                                    struct ember_session **out);

// Frees a session (NULL: nothing).
//
// # Safety
// `s` is NULL or a session from ember_session_new, not yet freed, not in use.
void ember_session_free(struct ember_session *s);

// Forgets the context and the conversation (NULL: nothing).
//
// # Safety
// `s` is NULL or a live session not in use by another thread.
void ember_session_reset(struct ember_session *s);

// Keeps every later ember_generate and ember_chat reply of `s` inside the GBNF grammar `gbnf`
// (llama.cpp's syntax; its `root` rule; each reply is one sentence of it, ending where the
// grammar may end). NULL removes the grammar. ember_grammar_json() gives the built-in JSON
// grammar. A grammar that does not compile is EMBER_ERR_INVALID_ARGUMENT, its line and column
// in ember_last_error(), and the session keeps the grammar it had.
//
// # Safety
// `s` is NULL or a live session used by this thread only; `gbnf` NULL or a C string.
enum ember_status ember_session_set_grammar(struct ember_session *s, const char *gbnf);

// Keeps every later ember_generate and ember_chat reply of `s` JSON text that the JSON Schema
// `schema` accepts (the schema is JSON text; it becomes a grammar as `ember run --json-schema`
// makes it: see the README for the keywords). NULL removes the grammar. A schema that is not
// JSON, or that uses a keyword ember cannot turn into a grammar (`pattern`, `minimum`, ...),
// is EMBER_ERR_INVALID_ARGUMENT with the keyword and where it is in ember_last_error(), and
// the session keeps the grammar it had.
//
// # Safety
// `s` is NULL or a live session used by this thread only; `schema` NULL or a C string.
enum ember_status ember_session_set_json_schema(struct ember_session *s, const char *schema);

// The built-in grammar of any JSON value, for ember_session_set_grammar (a static string).
const char *ember_grammar_json(void);

// Asks the call running on `s` (from any thread) to stop: ember_generate or ember_chat returns
// EMBER_ERR_CANCELLED after the current token, or, while the prompt is being evaluated, after
// the current layer (well under 100 ms on a small model). The session stays usable: a prompt
// stopped half-way is not kept (if it had begun to overwrite the full ring cache, the context
// is forgotten), and ember_chat forgets the user message it was given. NULL: nothing.
//
// # Safety
// `s` is NULL or a live session.
void ember_session_cancel(struct ember_session *s);

// Tokenizes `text` (special tokens such as <|im_start|> recognised; BOS where the model asks
// for it) into `ids`. `*n_out` is the number of tokens; when `cap` is too small, nothing is
// written to `ids`, `*n_out` is the count needed and the status is EMBER_ERR_CAPACITY. `ids`
// may be NULL when `cap` is 0.
//
// # Safety
// `m` is NULL or an open model; `text` NULL or a C string; `ids` NULL or `cap` writable
// int32_t; `n_out` NULL or writable.
enum ember_status ember_tokenize(const struct ember_model *m,
                                 const char *text,
                                 int32_t *ids,
                                 size_t cap,
                                 size_t *n_out);

// Appends `prompt` (verbatim, special tokens recognised) to the session's context and generates
// up to `max_tokens` tokens, calling `cb` with the text as it comes (NULL: no callback). Stops at
// an end-of-generation token, after `max_tokens`, when `cb` returns non-zero (EMBER_OK), or
// on ember_session_cancel (EMBER_ERR_CANCELLED). With temperature 0 the text equals
// `ember run -p PROMPT`'s.
//
// # Safety
// `s` is NULL or a live session used by this thread only; `prompt` NULL or a C string; `cb`
// NULL or a function safe to call with `user`.
enum ember_status ember_generate(struct ember_session *s,
                                 const char *prompt,
                                 uint32_t max_tokens,
                                 ember_piece_fn cb,
                                 void *user);

// One chat turn: `user_message` through the model's chat template (the conversation so far is
// kept; only new tokens are fed), then the reply streamed to `cb` as in ember_generate. The
// reply ends at the model's end-of-turn token, which is not passed to `cb`.
//
// # Safety
// As ember_generate.
enum ember_status ember_chat(struct ember_session *s,
                             const char *user_message,
                             uint32_t max_tokens,
                             ember_piece_fn cb,
                             void *user);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* EMBER_H */
