//! Writing GGUF v3, tensor by tensor.
//!
//! The header, metadata and tensor table are written first (every tensor's type and size is
//! known before its data is made), then each tensor's data in order, each padded to the
//! alignment. The file is written as a temporary file in the destination's folder and renamed
//! over the destination only when complete: a failed or interrupted run leaves nothing at OUT.

use crate::{QuantError, Result};
use ember_runtime::gguf::{Value, ValueType};
use ember_runtime::weights::GgmlType;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// The alignment GGUF uses without a `general.alignment` key.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata entry, its value already encoded as GGUF stores it (type tag separate).
#[derive(Clone, Debug, PartialEq)]
pub struct MetaKv {
    /// Key.
    pub key: String,
    /// Value type.
    pub ty: ValueType,
    /// The value's bytes after its type tag.
    pub bytes: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

impl MetaKv {
    fn new(key: &str, ty: ValueType, bytes: Vec<u8>) -> Self {
        MetaKv {
            key: key.into(),
            ty,
            bytes,
        }
    }
    /// A `u32`.
    pub fn u32(key: &str, v: u32) -> Self {
        Self::new(key, ValueType::U32, v.to_le_bytes().to_vec())
    }
    /// An `i32`.
    pub fn i32(key: &str, v: i32) -> Self {
        Self::new(key, ValueType::I32, v.to_le_bytes().to_vec())
    }
    /// An `f32`.
    pub fn f32(key: &str, v: f32) -> Self {
        Self::new(key, ValueType::F32, v.to_le_bytes().to_vec())
    }
    /// A bool.
    pub fn bool(key: &str, v: bool) -> Self {
        Self::new(key, ValueType::Bool, vec![v as u8])
    }
    /// A string.
    pub fn str(key: &str, v: &str) -> Self {
        let mut b = Vec::with_capacity(8 + v.len());
        put_str(&mut b, v.as_bytes());
        Self::new(key, ValueType::String, b)
    }
    /// An array of strings.
    pub fn str_array<S: AsRef<[u8]>>(key: &str, items: &[S]) -> Self {
        let mut b = Vec::new();
        b.extend_from_slice(&(ValueType::String as u32).to_le_bytes());
        b.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            put_str(&mut b, s.as_ref());
        }
        Self::new(key, ValueType::Array, b)
    }
    /// An array of `i32`.
    pub fn i32_array(key: &str, items: &[i32]) -> Self {
        let mut b = Vec::with_capacity(12 + 4 * items.len());
        b.extend_from_slice(&(ValueType::I32 as u32).to_le_bytes());
        b.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for v in items {
            b.extend_from_slice(&v.to_le_bytes());
        }
        Self::new(key, ValueType::Array, b)
    }
    /// A copy of a value read from another GGUF file, byte for byte.
    pub fn copy(key: &str, v: &Value<'_>) -> Self {
        let mut b = Vec::new();
        match *v {
            Value::U8(x) => b.push(x),
            Value::I8(x) => b.push(x as u8),
            Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::Bool(x) => b.push(x as u8),
            Value::Str(s) => put_str(&mut b, s),
            Value::Array(a) => {
                b.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
                b.extend_from_slice(&(a.len() as u64).to_le_bytes());
                b.extend_from_slice(a.raw_bytes());
            }
            Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        }
        Self::new(key, v.value_type(), b)
    }
}

/// A tensor to be written: its table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Name.
    pub name: String,
    /// Dimensions, innermost first (GGUF order).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
}

impl TensorEntry {
    /// Bytes of data, or an error when the innermost dimension is not a whole number of blocks.
    pub fn size(&self) -> Result<u64> {
        let cols = *self.dims.first().unwrap_or(&1);
        let rows: u64 = self.dims.iter().skip(1).product();
        self.ty
            .row_bytes(cols)
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| {
                QuantError(format!(
                    "{}: row length {cols} is not a multiple of the {} block size {}",
                    self.name,
                    self.ty.name(),
                    self.ty.block_size()
                ))
            })
    }
}

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// A GGUF file being written (see the module notes).
pub struct GgufWriter {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    alignment: u64,
    sizes: Vec<u64>,
    next: usize,
    in_tensor: u64,
}

impl GgufWriter {
    /// Starts `dest`: writes the header, `meta` and the table of `tensors`. The alignment is
    /// `general.alignment` from `meta` when present.
    pub fn create(dest: &Path, meta: &[MetaKv], tensors: &[TensorEntry]) -> Result<Self> {
        let mut alignment = DEFAULT_ALIGNMENT;
        if let Some(kv) = meta.iter().find(|kv| kv.key == "general.alignment") {
            alignment = match (kv.ty, kv.bytes.as_slice()) {
                (ValueType::U32, &[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as u64,
                _ => 0,
            };
            if alignment == 0 || !alignment.is_power_of_two() {
                return Err(QuantError(
                    "general.alignment must be a power of two".into(),
                ));
            }
        }
        let mut keys = std::collections::HashSet::new();
        for kv in meta {
            if !keys.insert(kv.key.as_str()) {
                return Err(QuantError(format!("metadata key {} appears twice", kv.key)));
            }
        }
        let mut names = std::collections::HashSet::new();
        for t in tensors {
            if !names.insert(t.name.as_str()) {
                return Err(QuantError(format!("tensor {} appears twice", t.name)));
            }
        }
        let sizes = tensors
            .iter()
            .map(TensorEntry::size)
            .collect::<Result<Vec<_>>>()?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest
            .file_name()
            .ok_or_else(|| QuantError(format!("{}: not a file path", dest.display())))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp)
            .map_err(|e| QuantError(format!("creating {}: {e}", tmp.display())))?;
        let mut w = GgufWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            dest: dest.to_path_buf(),
            alignment,
            sizes,
            next: 0,
            in_tensor: 0,
        };
        let mut head = Vec::new();
        head.extend_from_slice(GGUF_MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for kv in meta {
            put_str(&mut head, kv.key.as_bytes());
            head.extend_from_slice(&(kv.ty as u32).to_le_bytes());
            head.extend_from_slice(&kv.bytes);
        }
        let mut offset = 0u64;
        for (t, &size) in tensors.iter().zip(&w.sizes) {
            put_str(&mut head, t.name.as_bytes());
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&(t.ty as u32).to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset += align(size, alignment);
        }
        let pad = align(head.len() as u64, alignment) as usize - head.len();
        head.resize(head.len() + pad, 0);
        w.write(&head)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| QuantError("the output is already closed".into()))?;
        out.write_all(bytes)
            .map_err(|e| QuantError(format!("writing {}: {e}", self.tmp.display())))
    }

    /// Appends data of the current tensor.
    pub fn write_data(&mut self, bytes: &[u8]) -> Result<()> {
        let size = *self
            .sizes
            .get(self.next)
            .ok_or_else(|| QuantError("more tensor data than the table holds".into()))?;
        if self.in_tensor + bytes.len() as u64 > size {
            return Err(QuantError(
                "a tensor's data is larger than its table entry".into(),
            ));
        }
        self.in_tensor += bytes.len() as u64;
        self.write(bytes)
    }

    /// Ends the current tensor (its data must be complete) and pads to the alignment.
    pub fn end_tensor(&mut self) -> Result<()> {
        let size = self.sizes[self.next];
        if self.in_tensor != size {
            return Err(QuantError(format!(
                "tensor {} has {} bytes of data, its table says {size}",
                self.next, self.in_tensor
            )));
        }
        let pad = (align(size, self.alignment) - size) as usize;
        self.write(&vec![0u8; pad])?;
        self.next += 1;
        self.in_tensor = 0;
        Ok(())
    }

    /// Writes all of one tensor's data.
    pub fn tensor(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_data(bytes)?;
        self.end_tensor()
    }

    /// Completes the file and moves it to its destination.
    pub fn finish(mut self) -> Result<()> {
        if self.next != self.sizes.len() {
            return Err(QuantError(format!(
                "only {} of {} tensors were written",
                self.next,
                self.sizes.len()
            )));
        }
        let out = self
            .out
            .take()
            .ok_or_else(|| QuantError("the output is already closed".into()))?;
        let done = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.dest));
        done.map_err(|e| {
            let _ = std::fs::remove_file(&self.tmp);
            QuantError(format!("writing {}: {e}", self.dest.display()))
        })
    }
}

impl Drop for GgufWriter {
    /// An unfinished file is removed: nothing is left at the destination or beside it.
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
