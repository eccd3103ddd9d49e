//! Carving typed buffers out of one caller-provided byte buffer.
//!
//! The engine never calls an allocator: a [`MemoryPlan`](crate::session) says how many bytes a
//! session needs, the caller provides them once (a static array on a board, one heap allocation
//! on a host), and [`Arena`] hands out aligned, zeroed slices from it until it is full.

use crate::error::{Error, Result};
use bytemuck::Pod;

/// Every slice handed out starts on this boundary (a cache line; enough for any SIMD load).
pub const ALIGN: usize = 64;

/// A bump allocator over a borrowed byte buffer. Slices live as long as the buffer borrow.
pub struct Arena<'a> {
    rest: &'a mut [u8],
    used: usize,
}

impl<'a> Arena<'a> {
    /// Wraps `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Arena { rest: buf, used: 0 }
    }

    /// Bytes handed out so far, padding included.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Bytes still free (before alignment of the next request).
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// A zeroed slice of `n` values of `T`, aligned to [`ALIGN`].
    pub fn alloc<T: Pod>(&mut self, n: usize, what: &'static str) -> Result<&'a mut [T]> {
        let size = n
            .checked_mul(core::mem::size_of::<T>())
            .ok_or(Error::Capacity {
                what,
                needed: u64::MAX,
                available: self.rest.len() as u64,
            })?;
        let pad = self.rest.as_ptr().align_offset(ALIGN);
        let need = pad.saturating_add(size);
        if need > self.rest.len() {
            return Err(Error::Capacity {
                what,
                needed: need as u64,
                available: self.rest.len() as u64,
            });
        }
        let rest = core::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut(need);
        self.rest = tail;
        self.used += need;
        let bytes = &mut head[pad..];
        bytes.fill(0);
        // Alignment to 64 covers every Pod type used here, and the length is exact.
        Ok(bytemuck::cast_slice_mut(bytes))
    }

    /// A slice of `n` values of any plain `Copy` type (no destructor to forget), each built by
    /// `init(i)`. Used for tables of views (e.g. per-layer weight matrices).
    pub fn alloc_init<T: Copy>(
        &mut self,
        n: usize,
        what: &'static str,
        mut init: impl FnMut(usize) -> Result<T>,
    ) -> Result<&'a mut [T]> {
        const { assert!(core::mem::align_of::<T>() <= ALIGN) };
        let bytes = self.alloc::<u8>(n.saturating_mul(core::mem::size_of::<T>()), what)?;
        let ptr = bytes.as_mut_ptr() as *mut T;
        for i in 0..n {
            let v = init(i)?;
            // SAFETY: `bytes` is exclusively ours, ALIGN-aligned (>= align_of::<T>, checked above)
            // and holds exactly n values of T; element i is in bounds.
            unsafe { ptr.add(i).write(v) };
        }
        // SAFETY: all n elements were initialised above; the memory lives for 'a and is not
        // reachable through any other reference (the byte slice is consumed here).
        Ok(unsafe { core::slice::from_raw_parts_mut(ptr, n) })
    }

    /// Bytes needed for `n` values of `T` in the worst case of alignment padding.
    pub const fn size_of<T>(n: usize) -> usize {
        n * core::mem::size_of::<T>() + ALIGN
    }
}

/// A zeroed heap buffer of `len` bytes for an [`Arena`], or [`Error::OutOfMemory`] when the
/// system refuses the memory (instead of aborting the process, as `vec![0; len]` does).
#[cfg(feature = "alloc")]
pub fn try_zeroed(len: usize, what: &'static str) -> Result<alloc::vec::Vec<u8>> {
    let mut v = alloc::vec::Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
        what,
        bytes: len as u64,
    })?;
    v.resize(len, 0);
    Ok(v)
}
