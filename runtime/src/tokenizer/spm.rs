//! SentencePiece-style merging (`tokenizer.ggml.model = llama`: Llama 2, Gemma, Phi-3 vocabularies).
//!
//! The text (spaces already escaped to `▁`) starts as one symbol per UTF-8 character. Repeatedly,
//! the adjacent pair whose concatenation is a token with the highest score (leftmost on ties) is
//! merged, until no adjacent pair forms a token. Each final symbol is its token, or, when the
//! character is not in the vocabulary, one `<0xNN>` byte token per byte (byte fallback). Pairs
//! made stale by an earlier merge are recognised when popped (their combined length changed) and
//! skipped, as in llama.cpp's session.

/// One symbol: a byte range of the text in a doubly linked list.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Sym {
    off: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// A candidate merge of symbols `left` and `right`, whose text is a token of `score`.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Pair {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl super::heap::Before for Pair {
    /// Heap order: higher score first, then leftmost.
    fn before(&self, o: &Self) -> bool {
        self.score > o.score || (self.score == o.score && self.left < o.left)
    }
}

const END: u32 = u32::MAX;

/// Heap entries needed for a text of `n` symbols: n − 1 initial pairs plus two per merge.
pub fn heap_capacity(n: usize) -> usize {
    3 * n.max(1)
}

/// Length of the UTF-8 sequence that starts with `b` (1 for continuation or invalid bytes), as
/// llama.cpp splits SentencePiece input.
fn utf8_len(b: u8) -> usize {
    match b >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

/// Merges `text` and calls `out` with each token id, in order. `token(bytes)` finds a token by
/// its text with its score; `byte(b)` is the fallback token of one byte. Returns false when the
/// scratch slices are too small (never when both hold `text.len()` and
/// `heap_capacity(text.len())` entries).
pub fn merge(
    text: &[u8],
    token: impl Fn(&[u8]) -> Option<(u32, f32)>,
    byte: impl Fn(u8) -> Option<u32>,
    syms: &mut [Sym],
    heap: &mut [Pair],
    mut out: impl FnMut(u32),
) -> bool {
    if text.is_empty() {
        return true;
    }
    if syms.len() < text.len() || heap.len() < heap_capacity(text.len()) {
        return false;
    }
    let mut n = 0usize;
    let mut off = 0usize;
    while off < text.len() {
        let len = utf8_len(text[off]).min(text.len() - off);
        syms[n] = Sym {
            off: off as u32,
            len: len as u32,
            prev: if n == 0 { END } else { n as u32 - 1 },
            next: if off + len == text.len() {
                END
            } else {
                n as u32 + 1
            },
        };
        n += 1;
        off += len;
    }
    let syms = &mut syms[..n];
    let mut h = super::heap::Heap::new(heap);
    let candidate = |syms: &[Sym], left: u32, right: u32| -> Option<Pair> {
        if left == END || right == END {
            return None;
        }
        let (l, r) = (syms[left as usize], syms[right as usize]);
        let span = &text[l.off as usize..(l.off + l.len + r.len) as usize];
        token(span).map(|(_, score)| Pair {
            score,
            left,
            right,
            size: l.len + r.len,
        })
    };
    for i in 1..n as u32 {
        if let Some(p) = candidate(syms, i - 1, i) {
            h.push(p);
        }
    }
    while let Some(p) = h.pop() {
        let (l, r) = (syms[p.left as usize], syms[p.right as usize]);
        if l.len == 0 || r.len == 0 || l.len + r.len != p.size {
            continue;
        }
        // Merge the right symbol into the left one.
        syms[p.left as usize].len += r.len;
        syms[p.right as usize].len = 0;
        syms[p.left as usize].next = r.next;
        if r.next != END {
            syms[r.next as usize].prev = p.left;
        }
        for (a, b) in [(l.prev, p.left), (p.left, r.next)] {
            if let Some(c) = candidate(syms, a, b) {
                h.push(c);
            }
        }
    }
    let mut i = 0u32;
    while i != END {
        let s = syms[i as usize];
        let span = &text[s.off as usize..(s.off + s.len) as usize];
        match token(span) {
            Some((id, _)) => out(id),
            None => {
                for &b in span {
                    if let Some(id) = byte(b) {
                        out(id);
                    }
                }
            }
        }
        i = s.next;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn run(text: &str, vocab: &[(&str, f32)]) -> Vec<u32> {
        let find = |t: &[u8]| {
            vocab
                .iter()
                .position(|(v, _)| v.as_bytes() == t)
                .map(|i| (i as u32, vocab[i].1))
        };
        let mut syms = vec![Sym::default(); text.len()];
        let mut heap = vec![Pair::default(); heap_capacity(text.len())];
        let mut out = Vec::new();
        assert!(merge(
            text.as_bytes(),
            find,
            |b| Some(1000 + b as u32),
            &mut syms,
            &mut heap,
            |id| out.push(id)
        ));
        out
    }

    #[test]
    fn highest_score_merges_first_and_unknown_characters_fall_back_to_bytes() {
        let v = [
            ("a", 0.0),
            ("b", 0.0),
            ("c", 0.0),
            ("ab", -1.0),
            ("bc", -0.5),
            ("abc", -3.0),
        ];
        // "bc" (-0.5) beats "ab" (-1), then a + bc = abc.
        assert_eq!(run("abc", &v), vec![5]);
        assert_eq!(run("ab", &v), vec![3]);
        // "é" is not in the vocabulary: its two bytes.
        assert_eq!(run("aé", &v), vec![0, 1000 + 0xC3, 1000 + 0xA9]);
        // Ties go to the leftmost pair.
        let t = [("x", 0.0), ("xx", -1.0)];
        assert_eq!(run("xxx", &t), vec![1, 0]);
    }
}
