//! Every input the fuzzers keep (`fuzz/seeds/<target>/`: realistic starting
//! points; `fuzz/regressions/<target>/`: inputs that once crashed) replayed
//! through the fuzz targets' checks on stable Rust, in every test run.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

#[path = "../fuzz/checks.rs"]
#[allow(dead_code, reason = "shared with the fuzz targets")]
mod checks;

use std::path::Path;

#[test]
fn every_saved_fuzz_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for (target, check) in checks::TARGETS {
        for kind in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let input = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| check(&input));
                assert!(outcome.is_ok(), "{target} fails on {}", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= checks::TARGETS.len(), "only {replayed} inputs: the seeds are missing");
}
