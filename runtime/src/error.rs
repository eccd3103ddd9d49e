//! One error type for the whole engine.
//!
//! It carries no heap data (the core is `no_std` without `alloc`), so names taken from a file are
//! copied into a small fixed buffer ([`Name`]) and truncated if they are long.

use core::fmt;

/// A short, owned copy of a text, cut to at most `CAP` bytes (`CAP` < 256) on a character
/// boundary, for errors that carry no heap data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FixedText<const CAP: usize> {
    len: u8,
    bytes: [u8; CAP],
}

/// A name read from a model file (tensor or metadata key), truncated.
pub type Name = FixedText<64>;

/// A short message kept with an error (a template error's construct and cause), truncated.
pub type Detail = FixedText<96>;

impl<const CAP: usize> FixedText<CAP> {
    /// Bytes kept; longer texts are cut on a character boundary.
    pub const CAP: usize = {
        assert!(CAP < 256);
        CAP
    };

    /// Copies up to `CAP` bytes of `s`.
    pub fn new(s: &str) -> Self {
        let mut n = s.len().min(Self::CAP);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        let mut bytes = [0u8; CAP];
        bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        FixedText {
            len: n as u8,
            bytes,
        }
    }

    /// Like [`FixedText::new`], with line breaks turned into spaces (for one-line messages).
    pub fn one_line(s: &str) -> Self {
        let mut t = Self::new(s);
        for b in &mut t.bytes[..t.len as usize] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        t
    }

    /// Like [`FixedText::new`] for bytes that may not be UTF-8 (the valid prefix, then `?`).
    pub fn from_bytes(b: &[u8]) -> Self {
        match core::str::from_utf8(b) {
            Ok(s) => Self::new(s),
            Err(e) => {
                let valid = &b[..e.valid_up_to()];
                // `valid_up_to` marks a prefix that is valid UTF-8.
                let s = core::str::from_utf8(valid).unwrap_or("");
                let mut n = Self::new(s);
                if (n.len as usize) < Self::CAP {
                    n.bytes[n.len as usize] = b'?';
                    n.len += 1;
                }
                n
            }
        }
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

/// Appends, cutting what does not fit on a character boundary (never fails).
impl<const CAP: usize> fmt::Write for FixedText<CAP> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut n = s.len().min(Self::CAP - self.len as usize);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        let at = self.len as usize;
        self.bytes[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n as u8;
        Ok(())
    }
}

impl<const CAP: usize> fmt::Debug for FixedText<CAP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const CAP: usize> fmt::Display for FixedText<CAP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "defmt")]
impl<const CAP: usize> defmt::Format for FixedText<CAP> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=str}", self.as_str())
    }
}

/// Everything that can go wrong in the engine. Each variant says what and where.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
#[allow(missing_docs)] // fields are named for what they hold
pub enum Error {
    // ---- reading a GGUF file ----
    /// The file does not start with `GGUF`.
    BadMagic,
    /// A GGUF version this reader does not know.
    UnsupportedVersion(u32),
    /// The file ends before a field that should be there.
    Truncated { what: &'static str, offset: u64 },
    /// A count, length or dimension beyond the reader's hard limits.
    LimitExceeded {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    /// A metadata value type id that GGUF does not define.
    BadValueType { key: Name, type_id: u32 },
    /// A string that is not valid UTF-8 where text is required.
    InvalidUtf8 { what: &'static str },
    /// A metadata key appears twice.
    DuplicateKey(Name),
    /// A tensor name appears twice.
    DuplicateTensor(Name),
    /// `general.alignment` is zero or not a power of two.
    BadAlignment(u64),
    /// A tensor whose data does not fit the file, is misaligned, or overlaps another.
    BadTensorData { name: Name, reason: &'static str },
    /// A tensor element type this engine cannot use (GGUF type id).
    UnsupportedTensorType { name: Name, type_id: u32 },

    // ---- turning a GGUF into a model ----
    /// A required metadata key is missing.
    MissingKey(&'static str),
    /// A metadata key has the wrong type or an unusable value.
    BadKey {
        key: &'static str,
        reason: &'static str,
    },
    /// The file's `general.architecture` is not one ember runs.
    UnsupportedArchitecture(Name),
    /// A tensor the architecture needs is missing.
    MissingTensor(Name),
    /// A tensor has the wrong shape for its role (GGUF dimension order; `found_dims` of
    /// `found` are used).
    BadTensorShape {
        name: Name,
        expected: [u64; 2],
        found: [u64; 4],
        found_dims: u8,
    },
    /// A tensor's element type is one ember does not run in that role.
    UnsupportedWeightType {
        name: Name,
        ty: &'static str,
        supported: &'static str,
    },
    /// A tensor has a type ember does not support for its role.
    BadTensorRole { name: Name, reason: &'static str },

    // ---- tokenizer ----
    /// The tokenizer in the file is unusable.
    Tokenizer(&'static str),
    /// A token id outside the vocabulary.
    TokenOutOfRange { id: u32, vocab: u32 },

    // ---- running ----
    /// A caller-provided buffer or a fixed capacity is too small.
    Capacity {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// The system refused memory for a buffer (allocation failed).
    OutOfMemory { what: &'static str, bytes: u64 },
    /// An argument out of its valid range.
    InvalidArgument(&'static str),
    /// A setting outside `min..=max`.
    Setting {
        what: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    /// The chat template could not be compiled or rendered; `detail` says which construct and
    /// why (truncated).
    Template {
        reason: &'static str,
        detail: Detail,
    },
    /// A grammar could not be compiled; `detail` gives the line and column (and the rule).
    Grammar {
        reason: &'static str,
        detail: Detail,
    },
    /// Generation was stopped on request.
    Cancelled,
    /// An operating-system I/O error (with `std`).
    Io { kind: IoKind, context: &'static str },
}

/// The part of an OS error worth reporting, without holding a `std::io::Error`.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    /// The file does not exist.
    NotFound,
    /// Permission denied.
    PermissionDenied,
    /// Any other error, with its raw OS code when there is one.
    Other(i32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            BadMagic => write!(f, "not a GGUF file (bad magic)"),
            UnsupportedVersion(v) => {
                write!(f, "unsupported GGUF version {v} (ember reads 2 and 3)")
            }
            Truncated { what, offset } => {
                write!(
                    f,
                    "file truncated: {what} at byte {offset} runs past the end"
                )
            }
            LimitExceeded { what, value, limit } => {
                write!(f, "{what} is {value}, above the limit of {limit}")
            }
            BadValueType { key, type_id } => {
                write!(f, "metadata key '{key}' has unknown value type {type_id}")
            }
            InvalidUtf8 { what } => write!(f, "{what} is not valid UTF-8"),
            DuplicateKey(k) => write!(f, "metadata key '{k}' appears twice"),
            DuplicateTensor(n) => write!(f, "tensor '{n}' appears twice"),
            BadAlignment(a) => write!(f, "general.alignment {a} is not a power of two"),
            BadTensorData { name, reason } => write!(f, "tensor '{name}': {reason}"),
            UnsupportedTensorType { name, type_id } => {
                write!(
                    f,
                    "tensor '{name}' has type id {type_id}, which ember does not support"
                )
            }
            MissingKey(k) => write!(f, "metadata key '{k}' is missing"),
            BadKey { key, reason } => write!(f, "metadata key '{key}': {reason}"),
            UnsupportedArchitecture(a) => {
                write!(
                    f,
                    "architecture '{a}' is not supported (ember runs 'llama')"
                )
            }
            MissingTensor(n) => write!(f, "tensor '{n}' is missing"),
            BadTensorShape {
                name,
                expected,
                found,
                found_dims,
            } => {
                write!(f, "tensor '{name}' has shape [")?;
                let n = (*found_dims as usize).clamp(1, 4);
                for (i, d) in found[..n].iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{d}")?;
                }
                write!(f, "], expected [{}, {}]", expected[0], expected[1])
            }
            UnsupportedWeightType {
                name,
                ty,
                supported,
            } => write!(
                f,
                "tensor '{name}' has type {ty}, which ember does not run in that role (it runs {supported})"
            ),
            BadTensorRole { name, reason } => write!(f, "tensor '{name}': {reason}"),
            Tokenizer(why) => write!(f, "tokenizer: {why}"),
            TokenOutOfRange { id, vocab } => {
                write!(f, "token id {id} is outside the vocabulary of {vocab}")
            }
            Capacity {
                what,
                needed,
                available,
            } => {
                write!(f, "{what}: needs {needed}, only {available} available")
            }
            OutOfMemory { what, bytes } => {
                write!(f, "{what}: could not allocate {bytes} bytes (out of memory)")
            }
            InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Setting {
                what,
                value,
                min,
                max,
            } => write!(f, "{what} must be between {min} and {max}, not {value}"),
            Template { reason, detail } => {
                if detail.as_str().is_empty() {
                    write!(f, "chat template: {reason}")
                } else {
                    write!(f, "chat template: {reason}: {detail}")
                }
            }
            Grammar { reason, detail } => write!(f, "grammar: {reason} ({detail})"),
            Cancelled => write!(f, "cancelled"),
            Io { kind, context } => match kind {
                IoKind::NotFound => write!(f, "{context}: no such file"),
                IoKind::PermissionDenied => write!(f, "{context}: permission denied"),
                IoKind::Other(code) => write!(f, "{context}: I/O error (os error {code})"),
            },
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

#[cfg(feature = "std")]
impl Error {
    /// Wraps an OS error with what was being done.
    pub fn io(e: &std::io::Error, context: &'static str) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => IoKind::NotFound,
            std::io::ErrorKind::PermissionDenied => IoKind::PermissionDenied,
            _ => IoKind::Other(e.raw_os_error().unwrap_or(0)),
        };
        Error::Io { kind, context }
    }
}

/// The engine's result type.
pub type Result<T> = core::result::Result<T, Error>;
