//! Hundreds of corrupted copies of the real model through `ember inspect` and `ember run`:
//! truncated at many offsets, bits flipped in the header, metadata and tensor table (and some in
//! the data), counts, lengths, dimensions, types and offsets set to huge or odd values, NaN and
//! infinity written into weights. Every run must end normally or with one clear error line and
//! exit status 1: never a signal, a panic (status 101) or a hang.

mod common;

use common::{ember_bare, wait_or_kill};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A run that takes longer than this is a hang.
const HANG: Duration = Duration::from_secs(120);

/// A field of the GGUF header found by walking it.
#[derive(Clone, Copy, Debug)]
struct Field {
    offset: usize,
    width: usize,
    what: &'static str,
}

/// Walks the header and returns its fields and where the data starts (independent of ember's
/// reader: a few lines over the format as the GGUF spec describes it).
fn walk(b: &[u8]) -> (Vec<Field>, usize) {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let mut f = vec![
        Field {
            offset: 4,
            width: 4,
            what: "version",
        },
        Field {
            offset: 8,
            width: 8,
            what: "tensor count",
        },
        Field {
            offset: 16,
            width: 8,
            what: "metadata count",
        },
    ];
    let (n_tensors, n_kv) = (u64_at(8) as usize, u64_at(16) as usize);
    let mut o = 24;
    fn value(b: &[u8], o: &mut usize, ty: u32, f: &mut Vec<Field>, depth: u32) {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        match ty {
            0 | 1 | 7 => *o += 1,
            2 | 3 => *o += 2,
            4..=6 => *o += 4,
            10..=12 => *o += 8,
            8 => {
                if depth == 0 || f.len().is_multiple_of(7) {
                    f.push(Field {
                        offset: *o,
                        width: 8,
                        what: "string length",
                    });
                }
                *o += 8 + u64_at(*o) as usize;
            }
            9 => {
                f.push(Field {
                    offset: *o,
                    width: 4,
                    what: "array type",
                });
                f.push(Field {
                    offset: *o + 4,
                    width: 8,
                    what: "array count",
                });
                let (et, n) = (u32_at(*o), u64_at(*o + 4));
                *o += 12;
                for _ in 0..n {
                    value(b, o, et, f, depth + 1);
                }
            }
            _ => panic!("the real model has no type {ty}"),
        }
    }
    for _ in 0..n_kv {
        f.push(Field {
            offset: o,
            width: 8,
            what: "key length",
        });
        o += 8 + u64_at(o) as usize;
        f.push(Field {
            offset: o,
            width: 4,
            what: "value type",
        });
        let ty = u32_at(o);
        o += 4;
        value(b, &mut o, ty, &mut f, 0);
    }
    for _ in 0..n_tensors {
        f.push(Field {
            offset: o,
            width: 8,
            what: "tensor name length",
        });
        o += 8 + u64_at(o) as usize;
        f.push(Field {
            offset: o,
            width: 4,
            what: "dimension count",
        });
        let nd = u32_at(o) as usize;
        o += 4;
        for _ in 0..nd {
            f.push(Field {
                offset: o,
                width: 8,
                what: "dimension",
            });
            o += 8;
        }
        f.push(Field {
            offset: o,
            width: 4,
            what: "tensor type",
        });
        f.push(Field {
            offset: o + 4,
            width: 8,
            what: "tensor offset",
        });
        o += 12;
    }
    (f, o.div_ceil(32) * 32)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One corruption: bytes written at an offset, or a truncation.
enum Damage {
    Patch {
        offset: usize,
        bytes: Vec<u8>,
        what: String,
    },
    Truncate(usize),
}

/// Runs `ember ARGS`: `Ok(whether it exited 0)` when it ended cleanly, else what went wrong.
fn check(args: &[&str], label: &str) -> Result<bool, String> {
    let mut child = ember_bare()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = wait_or_kill(&mut child, HANG) else {
        return Err(format!("{label}: {args:?} hung"));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    match status.code() {
        Some(0) => Ok(true),
        Some(1) if err.starts_with("ember: error: ") && !err.contains("panicked") => Ok(false),
        Some(c) => Err(format!("{label}: {args:?} exit {c}: {err}")),
        None => Err(format!("{label}: {args:?} killed by a signal: {err}")),
    }
}

/// `ember inspect` and `ember run` on `path`: whether inspect succeeded, and any failures.
fn both(path: &Path, label: &str) -> (bool, Vec<String>) {
    let p = path.to_str().unwrap();
    let inspect = check(&["inspect", p], label);
    let run = check(
        &["run", "-m", p, "-p", "Hi", "-n", "2", "-t", "1", "-c", "64"],
        label,
    );
    let inspected = inspect == Ok(true);
    (
        inspected,
        [inspect, run].into_iter().filter_map(Result::err).collect(),
    )
}

#[test]
fn corrupted_copies_of_the_real_model_end_cleanly() {
    let model = std::fs::read(ember_tests::model_path()).unwrap();
    let (fields, data_start) = walk(&model);
    let mut rng = Rng(0x5eed_c0de_1234_5678);
    let mut damage = Vec::new();

    // Truncations: every small length, then across the header and the data.
    for n in [0, 1, 3, 4, 7, 8, 15, 16, 23, 24, 25, 31, 32] {
        damage.push(Damage::Truncate(n));
    }
    for _ in 0..50 {
        damage.push(Damage::Truncate(rng.below(data_start)));
    }
    for _ in 0..10 {
        damage.push(Damage::Truncate(
            data_start + rng.below(model.len() - data_start),
        ));
    }
    damage.push(Damage::Truncate(model.len() - 1));
    // Bit flips: mostly where the structure is, some in the weights.
    for i in 0..140 {
        let offset = if i < 120 {
            rng.below(data_start)
        } else {
            data_start + rng.below(model.len() - data_start)
        };
        let bit = 1u8 << rng.below(8);
        damage.push(Damage::Patch {
            offset,
            bytes: vec![model[offset] ^ bit],
            what: format!("bit flip at {offset}"),
        });
    }
    // Fields set to huge or odd values.
    let huge: [u64; 8] = [
        u64::MAX,
        1 << 63,
        1 << 40,
        1 << 32,
        0xffff_ffff,
        0,
        1,
        0x7fff_ffff,
    ];
    for _ in 0..110 {
        let f = fields[rng.below(fields.len())];
        let v = huge[rng.below(huge.len())];
        let bytes = v.to_le_bytes()[..f.width].to_vec();
        damage.push(Damage::Patch {
            offset: f.offset,
            bytes,
            what: format!("{} at {} set to {v:#x}", f.what, f.offset),
        });
    }
    // NaN and infinity in the weights: in the first f16 scale of the first matrices' data
    // (Q4_1 and Q8_0 blocks start with their f16 scale) and in the first bytes of the data.
    for (k, at) in [
        data_start,
        data_start + 18,
        data_start + (model.len() - data_start) / 2,
    ]
    .into_iter()
    .enumerate()
    {
        for (name, v) in [("NaN", 0x7e00u16), ("+inf", 0x7c00), ("-inf", 0xfc00)] {
            damage.push(Damage::Patch {
                offset: at & !1,
                bytes: v.to_le_bytes().to_vec(),
                what: format!("f16 {name} at weight position {k}"),
            });
        }
    }
    damage.push(Damage::Patch {
        offset: data_start,
        bytes: f32::NAN.to_le_bytes().to_vec(),
        what: "f32 NaN at the start of the data".into(),
    });
    assert!(damage.len() >= 300, "{} cases", damage.len());

    let dir: PathBuf = std::env::temp_dir().join(format!("ember-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("model.gguf");
    std::fs::write(&copy, &model).unwrap();
    let cut = dir.join("truncated.gguf");
    let mut file = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    let mut failures = Vec::new();
    let (mut n_ok, mut n_err) = (0, 0);
    for d in &damage {
        let (path, label, restore) = match d {
            Damage::Truncate(n) => {
                std::fs::write(&cut, &model[..*n]).unwrap();
                (cut.clone(), format!("truncated to {n} bytes"), None)
            }
            Damage::Patch {
                offset,
                bytes,
                what,
            } => {
                file.seek(SeekFrom::Start(*offset as u64)).unwrap();
                file.write_all(bytes).unwrap();
                file.flush().unwrap();
                (copy.clone(), what.clone(), Some((*offset, bytes.len())))
            }
        };
        let (inspected, f) = both(&path, &label);
        if f.is_empty() {
            if inspected {
                n_ok += 1
            } else {
                n_err += 1
            }
        }
        failures.extend(f);
        if let Some((offset, len)) = restore {
            file.seek(SeekFrom::Start(offset as u64)).unwrap();
            file.write_all(&model[offset..offset + len]).unwrap();
            file.flush().unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    eprintln!(
        "{} corrupted copies: {n_ok} still inspect cleanly, {n_err} end in a clear error",
        damage.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
