//! The fuzz targets' committed corpora and crash reproducers, replayed on
//! stable as ordinary tests: every input under `fuzz/corpus/<target>/` and
//! `fuzz/reproducers/<target>/` goes through the same property function
//! the fuzz target calls (`pg_trickle_core::fuzzing`). A target without a
//! corpus fails: it was never run.

use std::path::PathBuf;

use pg_trickle_core::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_corpus_and_reproducer_replays_clean() {
    for (target, check) in TARGETS {
        let corpus = inputs("corpus", target);
        assert!(
            !corpus.is_empty(),
            "fuzz target {target} has no committed corpus under fuzz/corpus/{target}"
        );
        for path in corpus.iter().chain(&inputs("reproducers", target)) {
            let data = std::fs::read(path).expect("read input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target} fails on {}; reproduce with: cargo +nightly fuzz run {target} {}",
                path.display(),
                path.display()
            );
        }
    }
}
