//! Board profiles: what ember runs with on each supported board, and the check that a
//! configuration fits the board's memory before anything is allocated.
//!
//! A profile gives the threads (one per core), the context, the KV cache precision and a memory
//! budget: the share of the board's RAM ember may use, leaving the rest to the OS (and, on the
//! smallest boards, to a desktop-less Raspberry Pi OS Lite). The budget counts everything that
//! must be resident: the model file (memory-mapped, but every page is read on each token), the
//! model's tables and the session's one buffer (KV cache and scratch).
//!
//! `no_std`: a board's firmware can embed the same table.

#![no_std]

use ember_runtime::kv::KvType;

/// One board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    /// The name `--board` takes.
    pub name: &'static str,
    /// The board, in words.
    pub description: &'static str,
    /// Cores and their type.
    pub cpu: &'static str,
    /// RAM of the smallest variant, in MiB.
    pub ram_mib: usize,
    /// What ember may use, in MiB.
    pub budget_mib: usize,
    /// Threads (one per core).
    pub threads: usize,
    /// Context size in tokens.
    pub n_ctx: usize,
    /// KV cache precision.
    pub kv_type: KvType,
    /// The kernel set the CPU runs (`neon` without, `neon-dotprod` with the dot-product
    /// extension).
    pub kernels: &'static str,
}

/// The supported boards, smallest first.
pub const BOARDS: &[Board] = &[
    Board {
        name: "pi-zero-2w",
        description: "Raspberry Pi Zero 2 W",
        cpu: "4x Cortex-A53 @ 1 GHz",
        ram_mib: 512,
        budget_mib: 256,
        threads: 4,
        n_ctx: 2048,
        kv_type: KvType::Q8_0,
        kernels: "neon",
    },
    Board {
        name: "pi-3b",
        description: "Raspberry Pi 3 Model B / B+",
        cpu: "4x Cortex-A53 @ 1.2-1.4 GHz",
        ram_mib: 1024,
        budget_mib: 512,
        threads: 4,
        n_ctx: 4096,
        kv_type: KvType::F16,
        kernels: "neon",
    },
    Board {
        name: "pi-4",
        description: "Raspberry Pi 4 Model B (2, 4 or 8 GB)",
        cpu: "4x Cortex-A72 @ 1.5-1.8 GHz",
        ram_mib: 2048,
        budget_mib: 1024,
        threads: 4,
        n_ctx: 8192,
        kv_type: KvType::F16,
        kernels: "neon",
    },
    Board {
        name: "pi-5",
        description: "Raspberry Pi 5 (4, 8 or 16 GB)",
        cpu: "4x Cortex-A76 @ 2.4 GHz",
        ram_mib: 4096,
        budget_mib: 2048,
        threads: 4,
        n_ctx: 8192,
        kv_type: KvType::F16,
        kernels: "neon-dotprod",
    },
];

/// The board called `name`.
pub fn find(name: &str) -> Option<&'static Board> {
    BOARDS.iter().find(|b| b.name == name)
}

/// Resident memory of a configuration, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// The model file (mapped).
    pub weights: usize,
    /// The model's tables (layer views, tokenizer index).
    pub model_tables: usize,
    /// The session's buffer (KV cache, scratch, logits).
    pub session: usize,
}

impl Footprint {
    /// Everything.
    pub fn total(&self) -> usize {
        self.weights + self.model_tables + self.session
    }
}

/// Why a configuration does not fit a board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoesNotFit {
    /// Bytes the configuration needs.
    pub needed: usize,
    /// The board's budget in bytes.
    pub budget: usize,
    /// The largest context that would fit with the same KV precision, if any.
    pub max_ctx: Option<usize>,
}

impl Board {
    /// The budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget_mib << 20
    }

    /// Checks `fp` against the budget. `session_bytes(n_ctx)` gives the session buffer for
    /// another context size (`None` when invalid), to say what would fit; `max_ctx` bounds the
    /// search (the model's context length).
    pub fn check(
        &self,
        fp: &Footprint,
        max_ctx: usize,
        session_bytes: impl Fn(usize) -> Option<usize>,
    ) -> Result<(), DoesNotFit> {
        if fp.total() <= self.budget() {
            return Ok(());
        }
        let fixed = fp.weights + fp.model_tables;
        let fits = |ctx: usize| {
            session_bytes(ctx).is_some_and(|s| fixed.saturating_add(s) <= self.budget())
        };
        // The session grows with the context: binary search for the largest that fits.
        let (mut lo, mut hi) = (0usize, max_ctx);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Err(DoesNotFit {
            needed: fp.total(),
            budget: self.budget(),
            max_ctx: (lo > 0 && fits(lo)).then_some(lo),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, b) in BOARDS.iter().enumerate() {
            assert_eq!(find(b.name), Some(b));
            assert!(BOARDS[i + 1..].iter().all(|o| o.name != b.name));
            assert!(b.budget_mib < b.ram_mib && b.threads > 0 && b.n_ctx > 0);
        }
        assert_eq!(find("pi-6"), None);
    }

    #[test]
    fn a_configuration_over_budget_is_refused_with_the_largest_context_that_fits() {
        let b = find("pi-zero-2w").unwrap();
        // 1 KiB per token of context on top of 200 MiB.
        let session = |ctx: usize| Some(ctx * 1024);
        let fp = |ctx: usize| Footprint {
            weights: 200 << 20,
            model_tables: 0,
            session: ctx * 1024,
        };
        assert!(b.check(&fp(1000), 1 << 20, session).is_ok());
        let e = b.check(&fp(100_000), 1 << 20, session).unwrap_err();
        assert_eq!(e.max_ctx, Some(56 * 1024));
        assert!(e.needed > e.budget);
        // Nothing fits when the weights alone are over budget.
        let big = Footprint {
            weights: 300 << 20,
            model_tables: 0,
            session: 1024,
        };
        assert_eq!(b.check(&big, 1 << 20, session).unwrap_err().max_ctx, None);
    }
}
