//! Read-only memory mapping of a model file (with `std`).

use crate::error::{Error, Result};
use std::fs::File;
use std::path::Path;

/// Refuses what cannot be a model file: a directory, a FIFO, a socket, a character device.
fn check_kind(meta: &std::fs::Metadata) -> Result<()> {
    if meta.is_dir() {
        return Err(Error::InvalidArgument("the model path is a directory"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() || t.is_socket() || t.is_char_device() {
            return Err(Error::InvalidArgument(
                "the model path is not a regular file (a FIFO, socket or character device)",
            ));
        }
    }
    Ok(())
}

/// A model file mapped read-only into memory. The bytes stay on disk (page cache) and are paged
/// in on first touch, so opening is O(1) in the file size.
pub struct MappedFile {
    map: memmap2::Mmap,
}

impl MappedFile {
    /// Maps `path` read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        // Look before opening: opening a FIFO for reading blocks until a writer comes, and a
        // character device (a terminal, /dev/zero) never ends. Only regular files and block
        // devices are models.
        let before = std::fs::metadata(path.as_ref())
            .map_err(|e| Error::io(&e, "reading the model's metadata"))?;
        check_kind(&before)?;
        let file = File::open(path.as_ref()).map_err(|e| Error::io(&e, "opening the model"))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(&e, "reading the model's metadata"))?;
        check_kind(&meta)?;
        if meta.len() == 0 {
            // Mapping an empty file fails on some systems; it is simply not a GGUF.
            return Err(Error::Truncated {
                what: "magic",
                offset: 0,
            });
        }
        // SAFETY: the mapping is read-only and private to this process. If another process
        // truncates or rewrites the file while it is mapped, reads may see the new bytes or fault
        // (SIGBUS); this is documented in the README's Security section (replace models by
        // writing a new file and renaming it over the old one, which leaves this mapping intact).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::io(&e, "memory-mapping the model"))?;
        Ok(MappedFile { map })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}
