//! Every seed and every saved crash of every fuzz target, replayed through
//! the target's body: `fuzz/seeds/<target>/*` (the starting corpus) and
//! `fuzz/regressions/<target>/*` (inputs that once crashed a target, copied
//! there by `scripts/fuzz.sh`; each must now pass).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_target_has_seeds_and_passes_them_and_its_regressions() {
    for target in ferroflow_fuzzing::TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(target.name));
        assert!(!seeds.is_empty(), "fuzz/seeds/{} has no seed", target.name);
        let regressions = files(&fuzz_dir().join("regressions").join(target.name));
        for path in seeds.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| (target.run)(&data));
            assert!(outcome.is_ok(), "{} panics on {}", target.name, path.display());
        }
    }
}

#[test]
fn every_target_has_a_libfuzzer_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for target in ferroflow_fuzzing::TARGETS {
        assert!(manifest.contains(&format!("name = \"{}\"", target.name)), "fuzz/Cargo.toml lacks {}", target.name);
        let source = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{}.rs", target.name))).unwrap();
        assert!(
            source.contains(&format!("ferroflow_fuzzing::{}(", target.name)),
            "{} does not call its body",
            target.name
        );
    }
}

/// The checkpoint target is not vacuous: its seeds include checkpoints that
/// parse (and so reach the round trip and the restore).
#[test]
fn checkpoint_seeds_parse() {
    let seeds = files(&fuzz_dir().join("seeds/checkpoint_restore"));
    let parsed = seeds
        .iter()
        .filter(|p| ferroflow_train::checkpoint::Checkpoint::from_bytes(&std::fs::read(p).unwrap(), "seed").is_ok())
        .count();
    assert!(parsed >= 2, "{parsed} of {} checkpoint seeds parse", seeds.len());
}
