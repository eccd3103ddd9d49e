//! Streaming detokenization: tokens arrive one by one, each a few bytes that may end in the
//! middle of a UTF-8 character. [`Utf8Stream`] passes on only whole characters and holds back an
//! incomplete tail (at most 3 bytes) until the next token completes it. Bytes that can never
//! form a character come out as U+FFFD, so the output is always valid UTF-8.

/// Holds back incomplete UTF-8 sequences between pushes. No allocation.
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    pending: [u8; 4],
    n: usize,
}

/// Length of the sequence a lead byte announces, 0 for a byte that cannot start one.
fn seq_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

impl Utf8Stream {
    /// A stream with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held back, waiting for the rest of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending[..self.n]
    }

    /// Feeds `bytes`, calling `emit` with valid UTF-8 text (possibly several times).
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        // First complete (or give up on) a pending sequence.
        while self.n > 0 && !bytes.is_empty() {
            self.pending[self.n] = bytes[0];
            self.n += 1;
            bytes = &bytes[1..];
            match core::str::from_utf8(&self.pending[..self.n]) {
                Ok(s) => {
                    emit(s);
                    self.n = 0;
                }
                Err(e) if e.error_len().is_some() => {
                    // The pending bytes cannot become a character: replace the bad prefix and
                    // re-feed what follows it.
                    let bad = e.valid_up_to() + e.error_len().unwrap_or(1);
                    let (mut tmp, tn) = ([0u8; 4], self.n);
                    tmp[..tn].copy_from_slice(&self.pending[..tn]);
                    self.n = 0;
                    if e.valid_up_to() > 0 {
                        emit(core::str::from_utf8(&tmp[..e.valid_up_to()]).unwrap_or(""));
                    }
                    emit("\u{fffd}");
                    self.push(&tmp[bad..tn], emit);
                }
                Err(_) => {} // still incomplete
            }
        }
        while !bytes.is_empty() {
            match core::str::from_utf8(bytes) {
                Ok(s) => {
                    emit(s);
                    return;
                }
                Err(e) => {
                    let ok = e.valid_up_to();
                    if ok > 0 {
                        // SAFETY-free: `valid_up_to` marks a valid prefix.
                        emit(core::str::from_utf8(&bytes[..ok]).unwrap_or(""));
                    }
                    match e.error_len() {
                        Some(bad) => {
                            emit("\u{fffd}");
                            bytes = &bytes[ok + bad..];
                        }
                        None => {
                            // An incomplete sequence at the end: keep it for the next push.
                            let tail = &bytes[ok..];
                            debug_assert!(tail.len() < 4 && seq_len(tail[0]) > tail.len());
                            self.pending[..tail.len()].copy_from_slice(tail);
                            self.n = tail.len();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: an incomplete tail becomes U+FFFD.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&str)) {
        if self.n > 0 {
            self.n = 0;
            emit("\u{fffd}");
        }
    }

    /// Forgets anything pending.
    pub fn reset(&mut self) {
        self.n = 0;
    }
}
