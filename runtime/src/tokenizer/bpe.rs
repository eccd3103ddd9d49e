//! Byte-pair merging of one word.
//!
//! The word starts as one symbol per byte (each byte's GPT-2 alphabet token). Repeatedly, the
//! adjacent pair with the lowest merge rank (leftmost on ties) is merged, until no pair has a
//! rank. A min-heap of candidate pairs keeps this O(n log n); pairs made stale by an earlier
//! merge are recognised when popped (their token ids no longer match) and skipped.

use super::NO_TOKEN;

/// One symbol of the word being merged (a doubly linked list over a fixed slice).
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Symbol {
    id: u32,
    prev: u32,
    next: u32,
    alive: u32,
}

/// A candidate merge of symbol `left` with the symbol after it.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Bigram {
    rank: u32,
    left: u32,
    left_id: u32,
    right_id: u32,
}

impl super::heap::Before for Bigram {
    /// Heap order: lower rank first, then leftmost.
    fn before(&self, o: &Self) -> bool {
        (self.rank, self.left) < (o.rank, o.left)
    }
}

const END: u32 = u32::MAX;

/// Heap entries needed for a word of `n` bytes: n - 1 initial pairs plus at most two per merge.
pub fn heap_capacity(n: usize) -> usize {
    3 * n
}

/// Merges the byte symbols `ids` (one token id per byte, [`NO_TOKEN`] where the vocabulary has
/// none) and calls `out` with each resulting token id, in order. `rank(a, b)` gives the merge rank
/// and merged token of a pair. Returns false if the scratch slices are too small (never when
/// `syms.len() >= ids.len()` and `heap.len() >= heap_capacity(ids.len())`).
pub fn merge_word(
    ids: &[u32],
    rank: impl Fn(u32, u32) -> Option<(u32, u32)>,
    syms: &mut [Symbol],
    heap: &mut [Bigram],
    mut out: impl FnMut(u32),
) -> bool {
    let n = ids.len();
    if n == 0 {
        return true;
    }
    if syms.len() < n || heap.len() < heap_capacity(n) {
        return false;
    }
    let syms = &mut syms[..n];
    for (i, &id) in ids.iter().enumerate() {
        syms[i] = Symbol {
            id,
            prev: if i == 0 { END } else { i as u32 - 1 },
            next: if i + 1 == n { END } else { i as u32 + 1 },
            alive: 1,
        };
    }
    let mut heap = super::heap::Heap::new(heap);
    let candidate = |syms: &[Symbol], left: u32| -> Option<Bigram> {
        if left == END {
            return None;
        }
        let l = syms[left as usize];
        if l.next == END {
            return None;
        }
        let r = syms[l.next as usize];
        if l.id == NO_TOKEN || r.id == NO_TOKEN {
            return None;
        }
        rank(l.id, r.id).map(|(rank, _)| Bigram {
            rank,
            left,
            left_id: l.id,
            right_id: r.id,
        })
    };
    for i in 0..n as u32 - 1 {
        if let Some(b) = candidate(syms, i) {
            heap.push(b);
        }
    }
    while let Some(b) = heap.pop() {
        let l = syms[b.left as usize];
        // Stale: the left symbol was merged away or changed, or its right neighbour changed.
        if l.alive == 0 || l.id != b.left_id || l.next == END {
            continue;
        }
        let ri = l.next as usize;
        let r = syms[ri];
        if r.id != b.right_id {
            continue;
        }
        let Some((_, merged)) = rank(l.id, r.id) else {
            continue;
        };
        // Merge the right symbol into the left one.
        syms[b.left as usize].id = merged;
        syms[b.left as usize].next = r.next;
        syms[ri].alive = 0;
        if r.next != END {
            syms[r.next as usize].prev = b.left;
        }
        for left in [l.prev, b.left] {
            if let Some(c) = candidate(syms, left) {
                heap.push(c);
            }
        }
    }
    let mut i = 0u32;
    while i != END {
        let s = syms[i as usize];
        if s.id != NO_TOKEN {
            out(s.id);
        }
        i = s.next;
    }
    true
}
