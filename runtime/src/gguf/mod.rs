//! Zero-copy GGUF reader over a borrowed byte slice.
//!
//! A GGUF file is: header (magic, version, tensor count, metadata count), the metadata key/value
//! pairs, the tensor table (name, dims, type, offset), padding to `general.alignment`, then the
//! tensor data. [`Gguf::parse`] walks and checks all of it once — every count, length, offset and
//! size against the slice and against hard limits — and keeps only a few offsets. After that,
//! metadata and tensors are read back as views into the same slice: nothing is copied, so the
//! weights stay in the memory map (host) or in flash (board).
//!
//! We read the format ourselves rather than with a crate because the runtime must be `no_std`
//! without `alloc` and must not copy the file; `gguf-rs` is used only as an independent
//! cross-check in the tests.

#[cfg(feature = "std")]
mod mmap;
#[cfg(feature = "std")]
pub use mmap::MappedFile;

use crate::error::{Error, Name, Result};
use crate::weights::GgmlType;

/// Names of the metadata keys ember reads, in one place.
#[allow(missing_docs)]
pub mod keys {
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const ALIGNMENT: &str = "general.alignment";
    pub const NAME: &str = "general.name";
    pub const FILE_TYPE: &str = "general.file_type";
    pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
    pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    pub const EOM_ID: &str = "tokenizer.ggml.eom_token_id";
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// Hard limits: a hostile file can ask for no more than this, whatever its size.
pub mod limits {
    /// Metadata key/value pairs (real files have well under 100).
    pub const MAX_KV: u64 = 1024;
    /// Tensors in one file (a 70B Llama has 723).
    pub const MAX_TENSORS: u64 = 4096;
    /// Bytes in a metadata key or a tensor name.
    pub const MAX_KEY_LEN: u64 = 256;
    /// Bytes in one string value (chat templates are a few KiB).
    pub const MAX_STRING_LEN: u64 = 1 << 20;
    /// Elements in one array value (vocabularies are up to a few hundred thousand).
    pub const MAX_ARRAY_LEN: u64 = 1 << 24;
    /// Nesting depth of arrays of arrays.
    pub const MAX_ARRAY_DEPTH: u32 = 3;
    /// Dimensions of a tensor.
    pub const MAX_DIMS: u32 = 4;
    /// Elements in one tensor (2^40: far above any model ember targets).
    pub const MAX_ELEMENTS: u64 = 1 << 40;
    /// Largest `general.alignment` accepted.
    pub const MAX_ALIGNMENT: u64 = 1 << 16;
}

const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The type of a metadata value, as GGUF numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_u32(v: u32) -> Option<Self> {
        use ValueType::*;
        Some(match v {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Size of a fixed-size value, `None` for strings and arrays.
    fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The name GGUF tools print.
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

/// One metadata value, borrowed from the file.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Value<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    /// Raw bytes: GGUF strings are meant to be UTF-8 but nothing enforces it.
    Str(&'a [u8]),
    Array(Array<'a>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl<'a> Value<'a> {
    /// Any integer type that fits in a `u64` (negative values do not).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type as `i64`, when it fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v as i64),
            Value::U16(v) => Some(v as i64),
            Value::U32(v) => Some(v as i64),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Either float type (and integers, exactly when they are small).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// A boolean (also 0/1 integers, as some converters write).
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => match self.as_u64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
        }
    }

    /// A string value as UTF-8 text.
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::Str(b) => core::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// An array value.
    pub fn as_array(&self) -> Option<Array<'a>> {
        match *self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }
}

/// An array value: element type, count, and the bytes holding the elements (already checked).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Array<'a> {
    elem: ValueType,
    len: usize,
    bytes: &'a [u8],
}

impl<'a> Array<'a> {
    /// Element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The elements in order.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter {
            elem: self.elem,
            left: self.len,
            cur: Cursor::new(self.bytes),
        }
    }
    /// The bytes holding every element, as stored (strings with their u64 length prefixes).
    pub fn raw_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// The element bytes of a fixed-size array (for typed access such as `&[i32]`), or `None`.
    pub fn raw_fixed(&self) -> Option<&'a [u8]> {
        self.elem.fixed_size().map(|_| self.bytes)
    }
    /// Element `i` of a fixed-size array, without walking the ones before.
    pub fn get_fixed(&self, i: usize) -> Option<Value<'a>> {
        let size = self.elem.fixed_size()?;
        if i >= self.len {
            return None;
        }
        let mut c = Cursor::new(&self.bytes[i * size..(i + 1) * size]);
        c.value_of(self.elem, "array element", Name::new(""), 0)
            .ok()
    }
}

/// Iterator over an [`Array`]'s elements. The bytes were validated at parse time, so a failure
/// here cannot happen; it ends the iteration rather than panicking.
pub struct ArrayIter<'a> {
    elem: ValueType,
    left: usize,
    cur: Cursor<'a>,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match self
            .cur
            .value_of(self.elem, "array element", Name::new(""), 1)
        {
            Ok(v) => Some(v),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// A bounds-checked little-endian reader.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(Error::Truncated {
                what,
                offset: self.pos as u64,
            });
        }
        let n = n as usize;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length, then bytes.
    fn string(&mut self, what: &'static str, limit: u64) -> Result<&'a [u8]> {
        let len = self.u64(what)?;
        if len > limit {
            return Err(Error::LimitExceeded {
                what,
                value: len,
                limit,
            });
        }
        self.take(len, what)
    }

    /// Reads one value of type `t`. `depth` counts array nesting.
    fn value_of(
        &mut self,
        t: ValueType,
        what: &'static str,
        key: Name,
        depth: u32,
    ) -> Result<Value<'a>> {
        Ok(match t {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(what)?[0] != 0),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::String => Value::Str(self.string(what, limits::MAX_STRING_LEN)?),
            ValueType::Array => {
                if depth >= limits::MAX_ARRAY_DEPTH {
                    return Err(Error::LimitExceeded {
                        what: "array nesting depth",
                        value: depth as u64 + 1,
                        limit: limits::MAX_ARRAY_DEPTH as u64,
                    });
                }
                let type_id = self.u32("array element type")?;
                let elem =
                    ValueType::from_u32(type_id).ok_or(Error::BadValueType { key, type_id })?;
                let len = self.u64("array length")?;
                if len > limits::MAX_ARRAY_LEN {
                    return Err(Error::LimitExceeded {
                        what: "array length",
                        value: len,
                        limit: limits::MAX_ARRAY_LEN,
                    });
                }
                let start = self.pos;
                match elem.fixed_size() {
                    // Fixed-size elements: one bounds check for the whole array.
                    Some(size) => {
                        self.take(len * size as u64, "array data")?;
                    }
                    // Strings and nested arrays: walk each one. Every element consumes at least
                    // 8 bytes, so a huge count fails on truncation long before it is slow.
                    None => {
                        for _ in 0..len {
                            self.value_of(elem, "array element", key, depth + 1)?;
                        }
                    }
                }
                Value::Array(Array {
                    elem,
                    len: len as usize,
                    bytes: &self.bytes[start..self.pos],
                })
            }
        })
    }
}

/// A tensor's table entry, with its data as a view into the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorInfo<'a> {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: &'a str,
    /// Dimensions, innermost (row length) first, as GGUF stores them; unused ones are 1.
    pub dims: [u64; 4],
    /// Number of dimensions used.
    pub n_dims: u32,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// The tensor's bytes.
    pub data: &'a [u8],
}

impl TensorInfo<'_> {
    /// Total number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed and validated GGUF file, borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Gguf<'a> {
    bytes: &'a [u8],
    version: u32,
    n_kv: usize,
    kv_start: usize,
    n_tensors: usize,
    tensors_start: usize,
    data_start: usize,
    alignment: u64,
}

impl<'a> Gguf<'a> {
    /// Parses and checks the whole file structure. Costs one pass over the metadata and the
    /// tensor table; the tensor data are not read.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut c = Cursor::new(bytes);
        let magic = c.array::<4>("magic")?;
        if &magic != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedVersion(version));
        }
        let n_tensors = c.u64("tensor count")?;
        if n_tensors > limits::MAX_TENSORS {
            return Err(Error::LimitExceeded {
                what: "tensor count",
                value: n_tensors,
                limit: limits::MAX_TENSORS,
            });
        }
        let n_kv = c.u64("metadata count")?;
        if n_kv > limits::MAX_KV {
            return Err(Error::LimitExceeded {
                what: "metadata count",
                value: n_kv,
                limit: limits::MAX_KV,
            });
        }

        // Metadata: walk every pair once, remember where each key is, find the alignment.
        let kv_start = c.pos;
        let mut alignment = DEFAULT_ALIGNMENT;
        // (offset, length) of every key, for the duplicate check (a fixed table: no allocator).
        let mut key_at = [(0u32, 0u16); limits::MAX_KV as usize];
        for slot in key_at.iter_mut().take(n_kv as usize) {
            let key = c.string("metadata key", limits::MAX_KEY_LEN)?;
            let key_s = core::str::from_utf8(key).map_err(|_| Error::InvalidUtf8 {
                what: "a metadata key",
            })?;
            // The key's bytes end at c.pos; keys are at most MAX_KEY_LEN (fits u16), and offsets
            // beyond 4 GiB cannot occur before the (small) metadata ends in any sane file.
            let off = u32::try_from(c.pos - key.len()).map_err(|_| Error::LimitExceeded {
                what: "metadata offset",
                value: c.pos as u64,
                limit: u32::MAX as u64,
            })?;
            *slot = (off, key.len() as u16);
            let type_id = c.u32("metadata value type")?;
            let name = Name::new(key_s);
            let t =
                ValueType::from_u32(type_id).ok_or(Error::BadValueType { key: name, type_id })?;
            let v = c.value_of(t, "metadata value", name, 0)?;
            if key_s == keys::ALIGNMENT {
                let a = v.as_u64().ok_or(Error::BadKey {
                    key: keys::ALIGNMENT,
                    reason: "not an unsigned integer",
                })?;
                if a == 0 || !a.is_power_of_two() || a > limits::MAX_ALIGNMENT {
                    return Err(Error::BadAlignment(a));
                }
                alignment = a;
            }
        }
        // Duplicate keys: quadratic in the key count (at most MAX_KV), comparing key bytes only.
        let key_bytes = |(off, len): (u32, u16)| &bytes[off as usize..off as usize + len as usize];
        for i in 1..n_kv as usize {
            let k = key_bytes(key_at[i]);
            if key_at[..i].iter().any(|&e| key_bytes(e) == k) {
                return Err(Error::DuplicateKey(Name::from_bytes(k)));
            }
        }

        // Tensor table.
        let tensors_start = c.pos;
        let mut infos = c;
        for _ in 0..n_tensors {
            Self::read_tensor_header(&mut infos)?;
        }
        let table_end = infos.pos as u64;
        let data_start = align_up(table_end, alignment);
        if data_start > bytes.len() as u64 && n_tensors > 0 {
            return Err(Error::Truncated {
                what: "tensor data",
                offset: table_end,
            });
        }
        let gguf = Gguf {
            bytes,
            version,
            n_kv: n_kv as usize,
            kv_start,
            n_tensors: n_tensors as usize,
            tensors_start,
            data_start: data_start.min(bytes.len() as u64) as usize,
            alignment,
        };

        // Each tensor: data inside the file, aligned, no duplicate names, no overlap.
        for (i, t) in gguf.tensor_headers().enumerate() {
            let t = t?;
            let nbytes = t.ty.row_bytes(t.n_elements()).ok_or(Error::BadTensorData {
                name: Name::new(t.name),
                reason: "element count is not a multiple of the type's block size",
            })?;
            if t.dims[0] % t.ty.block_size() as u64 != 0 {
                return Err(Error::BadTensorData {
                    name: Name::new(t.name),
                    reason: "row length is not a multiple of the type's block size",
                });
            }
            if t.offset % alignment != 0 {
                return Err(Error::BadTensorData {
                    name: Name::new(t.name),
                    reason: "data offset is not aligned to general.alignment",
                });
            }
            let end = (gguf.data_start as u64)
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(nbytes));
            match end {
                Some(end) if end <= bytes.len() as u64 => {}
                _ => {
                    return Err(Error::BadTensorData {
                        name: Name::new(t.name),
                        reason: "data runs past the end of the file",
                    })
                }
            }
            for u in gguf.tensor_headers().take(i) {
                let u = u?;
                if u.name == t.name {
                    return Err(Error::DuplicateTensor(Name::new(t.name)));
                }
                let u_bytes = u.ty.row_bytes(u.n_elements()).unwrap_or(0);
                let disjoint = t.offset >= u.offset + u_bytes || u.offset >= t.offset + nbytes;
                if !disjoint && nbytes > 0 && u_bytes > 0 {
                    return Err(Error::BadTensorData {
                        name: Name::new(t.name),
                        reason: "data overlaps another tensor",
                    });
                }
            }
        }
        Ok(gguf)
    }

    /// Reads one tensor table entry (name, dims, type, offset), checking its limits.
    fn read_tensor_header(c: &mut Cursor<'a>) -> Result<TensorHeader<'a>> {
        let name = c.string("tensor name", limits::MAX_KEY_LEN)?;
        let name = core::str::from_utf8(name).map_err(|_| Error::InvalidUtf8 {
            what: "a tensor name",
        })?;
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims == 0 {
            return Err(Error::BadTensorData {
                name: Name::new(name),
                reason: "it has no dimensions (a tensor has 1 to 4)",
            });
        }
        if n_dims > limits::MAX_DIMS {
            return Err(Error::LimitExceeded {
                what: "tensor dimension count",
                value: n_dims as u64,
                limit: limits::MAX_DIMS as u64,
            });
        }
        let mut dims = [1u64; 4];
        let mut n: u64 = 1;
        for d in dims.iter_mut().take(n_dims as usize) {
            *d = c.u64("tensor dimension")?;
            if *d == 0 {
                return Err(Error::BadTensorData {
                    name: Name::new(name),
                    reason: "a dimension is 0",
                });
            }
            n = n
                .checked_mul(*d)
                .filter(|&n| n <= limits::MAX_ELEMENTS)
                .ok_or(Error::LimitExceeded {
                    what: "tensor element count",
                    value: u64::MAX,
                    limit: limits::MAX_ELEMENTS,
                })?;
        }
        let type_id = c.u32("tensor type")?;
        let ty = GgmlType::from_u32(type_id).ok_or(Error::UnsupportedTensorType {
            name: Name::new(name),
            type_id,
        })?;
        let offset = c.u64("tensor offset")?;
        Ok(TensorHeader {
            name,
            dims,
            n_dims,
            ty,
            offset,
        })
    }

    fn tensor_headers(&self) -> impl Iterator<Item = Result<TensorHeader<'a>>> + 'a {
        let mut c = Cursor {
            bytes: self.bytes,
            pos: self.tensors_start,
        };
        (0..self.n_tensors).map(move |_| Self::read_tensor_header(&mut c))
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }
    /// Data alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
    /// Offset of the tensor data section.
    pub fn data_offset(&self) -> usize {
        self.data_start
    }
    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Number of metadata pairs.
    pub fn metadata_len(&self) -> usize {
        self.n_kv
    }
    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.n_tensors
    }

    /// All metadata pairs, in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + 'a {
        let mut c = Cursor {
            bytes: self.bytes,
            pos: self.kv_start,
        };
        // Everything was validated by `parse`; `map_while` just stops on the impossible error.
        (0..self.n_kv).map_while(move |_| {
            let key = c.string("metadata key", limits::MAX_KEY_LEN).ok()?;
            let key = core::str::from_utf8(key).ok()?;
            let t = ValueType::from_u32(c.u32("metadata value type").ok()?)?;
            let v = c.value_of(t, "metadata value", Name::new(key), 0).ok()?;
            Some((key, v))
        })
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.metadata().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// A string key as text; `Err` when present but not a UTF-8 string.
    pub fn get_str(&self, key: &'static str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or(Error::BadKey {
                key,
                reason: "not a UTF-8 string",
            }),
        }
    }

    /// An unsigned integer key; `Err` when present with another type.
    pub fn get_u64(&self, key: &'static str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(Error::BadKey {
                key,
                reason: "not an unsigned integer",
            }),
        }
    }

    /// A float key; `Err` when present with another type.
    pub fn get_f32(&self, key: &'static str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(|f| Some(f as f32)).ok_or(Error::BadKey {
                key,
                reason: "not a number",
            }),
        }
    }

    /// A boolean key; `Err` when present with another type.
    pub fn get_bool(&self, key: &'static str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or(Error::BadKey {
                key,
                reason: "not a boolean",
            }),
        }
    }

    /// All tensors, in table order, with their data views.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo<'a>> + 'a {
        let bytes = self.bytes;
        let data_start = self.data_start;
        self.tensor_headers().map_while(move |h| {
            let h = h.ok()?;
            let n = h.ty.row_bytes(h.dims.iter().product())? as usize;
            let start = data_start + h.offset as usize;
            Some(TensorInfo {
                name: h.name,
                dims: h.dims,
                n_dims: h.n_dims,
                ty: h.ty,
                offset: h.offset,
                data: bytes.get(start..start + n)?,
            })
        })
    }

    /// The tensor with this name.
    pub fn tensor(&self, name: &str) -> Option<TensorInfo<'a>> {
        self.tensors().find(|t| t.name == name)
    }
}

#[derive(Clone, Copy)]
struct TensorHeader<'a> {
    name: &'a str,
    dims: [u64; 4],
    n_dims: u32,
    ty: GgmlType,
    offset: u64,
}

impl TensorHeader<'_> {
    fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

#[cfg(test)]
mod tests;
