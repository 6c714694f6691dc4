//! The dispatch fuzzer on the stable toolchain: proptest feeds random
//! bytes to the same interpretation and invariants the `cargo fuzz` target
//! runs (`edudma_sim::fuzz`), over the full dispatch path of `src/` on the
//! simulator. `EDUDMA_FUZZ_CASES` sets the number of cases (default 200).

use edudma_sim::fuzz;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

fn cases() -> u32 {
    std::env::var("EDUDMA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

#[test]
fn random_inputs_keep_every_invariant() {
    // Deterministic: one run of the suite is one set of inputs.
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let total = std::cell::RefCell::new(fuzz::Outcome::default());
    let result =
        runner.run(
            &proptest::collection::vec(any::<u8>(), 0..600),
            |bytes| match fuzz::run_bytes(&bytes) {
                Ok(o) => {
                    let mut total = total.borrow_mut();
                    total.ops += o.ops;
                    total.sent += o.sent;
                    total.succeeded += o.succeeded;
                    total.rejected += o.rejected;
                    total.cancelled += o.cancelled;
                    total.refused += o.refused;
                    Ok(())
                }
                Err(e) => Err(TestCaseError::fail(e)),
            },
        );
    match result {
        Err(proptest::test_runner::TestError::Fail(reason, bytes)) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{reason}\ninput (hex): {hex}");
        }
        Err(e) => panic!("{e}"),
        Ok(()) => {}
    }
    let total = total.into_inner();
    eprintln!("{total:?}");
    // The generator reaches every outcome: not a test that cannot fail.
    assert!(total.sent > 0 && total.succeeded > 0 && total.rejected > 0);
    assert!(total.refused > 0 && total.cancelled > 0, "{total:?}");
}

/// Every committed seed of the fuzzer's corpus passes.
#[test]
fn the_seed_corpus_passes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/dispatch");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("the seed corpus") {
        let path = entry.expect("an entry").path();
        let bytes = std::fs::read(&path).expect("a seed");
        if let Err(e) = fuzz::run_bytes(&bytes) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 4, "{n} seeds");
}
