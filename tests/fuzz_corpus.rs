//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, with the crash reproducers in
//! `fuzz/regressions/<target>/`) and the bad-input corpus through the fuzz target bodies
//! (`fuzz/src/targets.rs`, compiled here against the real library), so every input that
//! once crashed a parser stays a test in `cargo test --release` without cargo-fuzz. A
//! counting allocator also holds every input to single allocations of at most 256 MiB (the
//! reproducers of the dicom-rs over-allocations made it allocate gigabytes).

#![allow(clippy::unwrap_used)] // a test's panic is its failure report

#[path = "common/largest_allocation.rs"]
mod largest_allocation;

use std::path::{Path, PathBuf};

const ALLOCATION_CAP: usize = 256 << 20;

/// The names `targets.rs` reaches the parsers through.
mod surface {
    pub use triscope::io::{checkpoint, dicom, imaging, npy};
    pub use triscope::train;
}

#[path = "../fuzz/src/targets.rs"]
mod targets;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.file_name().is_some_and(|n| n != ".gitkeep") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8]), extra: &[&str]) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![
        root.join("fuzz/corpus").join(target),
        root.join("fuzz/regressions").join(target),
    ];
    dirs.extend(extra.iter().map(|d| root.join("tests/bad_inputs").join(d)));
    let mut n = 0;
    for dir in dirs {
        for f in files(&dir) {
            let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let (outcome, largest) = largest_allocation::largest_during(|| run(&bytes));
            assert!(
                largest <= ALLOCATION_CAP,
                "the {target} target allocates {} MiB at once on {}",
                largest >> 20,
                f.display()
            );
            assert!(
                outcome.is_ok(),
                "the {target} target panics on {}",
                f.display()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn image_corpus() {
    assert!(replay("image", targets::image, &["images", "dicom"]) >= 20);
}

#[test]
fn dicom_corpus() {
    assert!(replay("dicom", targets::dicom, &["dicom"]) >= 15);
}

#[test]
fn checkpoint_corpus() {
    assert!(replay("checkpoint", targets::checkpoint, &["checkpoints"]) >= 10);
}

#[test]
fn config_corpus() {
    assert!(replay("config", targets::config, &["configs"]) >= 10);
}
