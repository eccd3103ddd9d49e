//! # ember-runtime
//!
//! The inference engine behind ember, in the order data flows through it:
//!
//! | module        | what it does                                                            |
//! |---------------|-------------------------------------------------------------------------|
//! | [`gguf`]      | zero-copy GGUF reader over `&[u8]` (memory map on a host, flash on a board) |
//! | [`weights`]   | tensor types, quantized block layouts, typed matrix views               |
//! | [`kernels`]   | scalar reference and SIMD kernels, chosen once per CPU                  |
//! | [`model`]     | the architecture table, hyperparameters, weight binding, the forward pass |
//! | [`kv`]        | the key/value cache                                                     |
//! | [`tokenizer`] | byte-level BPE and SentencePiece from the GGUF vocabulary               |
//! | [`sampler`]   | choosing the next token                                                 |
//! | [`grammar`]   | GBNF grammars compiled into caller memory, and a matcher over them       |
//! | [`session`]   | prompt in, tokens out: the generation loop                              |
//! | [`chat`]      | conversations as prompts: the model's chat template                      |
//! | [`console`]   | the serial chat console over any `embedded-io` byte port                |
//! | [`engine`]    | (std) owned models and sessions: the API every host front end uses       |
//!
//! The core is `no_std` without `alloc`: every buffer comes from caller-provided memory
//! ([`arena`]). The `std` feature (default) adds memory-mapped files and CPU detection.

#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod arena;
pub mod chat;
pub mod console;
#[cfg(feature = "std")]
pub mod engine;
pub mod error;
pub mod gguf;
pub mod grammar;
pub mod kernels;
pub mod kv;
pub mod model;
pub mod parallel;
pub mod sampler;
pub mod session;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
