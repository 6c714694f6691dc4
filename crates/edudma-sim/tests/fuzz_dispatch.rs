//! The dispatch fuzzer on the stable toolchain: proptest feeds random
//! bytes to the same interpretation and invariants the `cargo fuzz` target
//! runs (`edudma_sim::fuzz`), over the full dispatch path of `src/` on the
//! simulator. `EDUDMA_FUZZ_CASES` sets the number of cases (default 512).

use edudma_sim::fuzz;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

fn cases() -> u32 {
    std::env::var("EDUDMA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
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
    let one = |bytes: Vec<u8>| {
        if std::env::var_os("EDUDMA_FUZZ_TRACE").is_some() {
            eprintln!("next: {:?}", fuzz::scenario_of(&bytes));
        }
        let o = fuzz::run_bytes(&bytes).map_err(TestCaseError::fail)?;
        let mut total = total.borrow_mut();
        total.ops += o.ops;
        total.sent += o.sent;
        total.succeeded += o.succeeded;
        total.rejected += o.rejected;
        total.cancelled += o.cancelled;
        total.refused += o.refused;
        total.after_removal += o.after_removal;
        Ok(())
    };
    let result = runner.run(&proptest::collection::vec(any::<u8>(), 0..600), one);
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
    assert!(total.after_removal > 0, "{total:?}");
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

/// Regenerate the seed corpus (`cargo test -p edudma-sim --test
/// fuzz_dispatch -- --ignored write_seed_corpus`): inputs from a fixed
/// generator, kept when they reach transfers, cancels and refusals alike.
#[test]
#[ignore = "writes fuzz/corpus/dispatch"]
fn write_seed_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/dispatch");
    std::fs::create_dir_all(dir).expect("the corpus directory");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut kept = 0;
    for i in 0..400 {
        let bytes: Vec<u8> = (0..400)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let o = fuzz::run_bytes(&bytes).expect("a passing input");
        if o.succeeded >= 4 && o.rejected >= 2 && (o.cancelled > 0 || o.refused > 0) {
            std::fs::write(format!("{dir}/seed-{i:03}"), &bytes).expect("a seed");
            kept += 1;
            if kept == 8 {
                break;
            }
        }
    }
    assert!(kept >= 4, "{kept} seeds");
}

/// Replay one input of the fuzzer on the stable toolchain:
/// `EDUDMA_FUZZ_INPUT=fuzz/artifacts/dispatch/crash-... cargo test -p
/// edudma-sim --test fuzz_dispatch replay -- --nocapture`.
#[test]
fn replay() {
    let Some(path) = std::env::var_os("EDUDMA_FUZZ_INPUT") else {
        return;
    };
    let bytes = std::fs::read(&path).expect("the input");
    eprintln!("{:#?}", fuzz::scenario_of(&bytes));
    if let Err(e) = fuzz::run_bytes(&bytes) {
        panic!("{e}");
    }
}
