//! A binary heap over a caller-provided slice, for the merge queues of both tokenizers.

/// Heap order: `before` items come out first.
pub trait Before: Copy {
    /// Whether `self` comes out before `o`.
    fn before(&self, o: &Self) -> bool;
}

/// The heap: its first `len` items of `items`.
pub struct Heap<'s, T> {
    items: &'s mut [T],
    len: usize,
}

impl<'s, T: Before> Heap<'s, T> {
    /// An empty heap in `items`.
    pub fn new(items: &'s mut [T]) -> Self {
        Heap { items, len: 0 }
    }

    /// Adds `b`; false (nothing added) when the slice is full.
    pub fn push(&mut self, b: T) -> bool {
        if self.len == self.items.len() {
            return false;
        }
        let mut i = self.len;
        self.items[i] = b;
        self.len += 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.items[i].before(&self.items[parent]) {
                self.items.swap(i, parent);
                i = parent;
            } else {
                break;
            }
        }
        true
    }

    /// Takes the first item.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let top = self.items[0];
        self.len -= 1;
        self.items[0] = self.items[self.len];
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.len && self.items[l].before(&self.items[m]) {
                m = l;
            }
            if r < self.len && self.items[r].before(&self.items[m]) {
                m = r;
            }
            if m == i {
                break;
            }
            self.items.swap(i, m);
            i = m;
        }
        Some(top)
    }
}
