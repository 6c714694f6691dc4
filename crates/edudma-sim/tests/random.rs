//! The scenario generator (`edudma_sim::scenario`) over many seeds: each
//! draws a machine and a run of operations and faults through the driver
//! that ships, and checks every request's status, every byte and the leak
//! check.
//!
//! `EDUDMA_SIM_SEEDS=n` runs n seeds (default 2,000 here; CI runs 100,000
//! in release, `scripts/scenarios.sh`); `EDUDMA_SIM_SEED=s` runs only seed
//! s (to reproduce a failure), and with `EDUDMA_SIM_TRACE=FILE` writes its
//! timeline (Chrome trace-event JSON); both numbers take decimal or `0x` hex.
//! `EDUDMA_SIM_THREADS` sets the threads (default: twice the cores).

use edudma_sim::scenario;

#[test]
fn randomized_scenarios() {
    if let Some(seed) = env_number("EDUDMA_SIM_SEED") {
        let verdict = match std::env::var_os("EDUDMA_SIM_TRACE") {
            Some(path) => {
                let (verdict, trace) = scenario::run_traced(seed);
                std::fs::write(&path, trace).expect("write EDUDMA_SIM_TRACE");
                eprintln!(
                    "timeline of seed {seed} in {} (open it in ui.perfetto.dev or chrome://tracing)",
                    path.to_string_lossy()
                );
                verdict
            }
            None => scenario::run(seed),
        };
        match verdict {
            Ok(cov) => eprintln!("seed {seed} passed: {cov:?}"),
            Err(f) => panic!("seed {seed}: {}", f.message),
        }
        return;
    }
    let n = env_number("EDUDMA_SIM_SEEDS").unwrap_or(2_000);
    assert!(n > 0, "EDUDMA_SIM_SEEDS=0 would run no scenario");
    let threads = env_number("EDUDMA_SIM_THREADS").map_or_else(
        || std::thread::available_parallelism().map_or(2, |p| p.get() * 2),
        |t| t.max(1) as usize,
    );
    let started = std::time::Instant::now();
    let summary = scenario::run_seeds(0, n, threads, 10);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} scenarios in {secs:.1} s ({:.0}/s) on {threads} threads",
        summary.scenarios,
        summary.scenarios as f64 / secs
    );
    for (what, count) in &summary.coverage.0 {
        eprintln!("  {what}: {count}");
    }
    for f in &summary.failures {
        eprintln!(
            "seed {} failed: {}\n  replay: EDUDMA_SIM_SEED={} cargo test --release -p edudma-sim --test random \
             (EDUDMA_SIM_TRACE=seed.json also writes its timeline)",
            f.seed, f.message, f.seed
        );
    }
    let seeds: Vec<u64> = summary.failures.iter().map(|f| f.seed).collect();
    assert!(seeds.is_empty(), "failing seeds: {seeds:?}");
    assert_eq!(summary.scenarios, n, "every seed ran");
}

/// A number from the environment, decimal or `0x` hex; anything else stops
/// the run loudly rather than running the default.
fn env_number(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    match parse_number(&raw) {
        Some(n) => Some(n),
        None => panic!("{name}={raw:?} is not a number (decimal, or hex with 0x)"),
    }
}

fn parse_number(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => raw.parse().ok(),
    }
}

#[test]
fn seeds_from_the_environment_are_decimal_or_hex_and_nothing_else() {
    assert_eq!(parse_number("16"), Some(16));
    assert_eq!(parse_number("0x10"), Some(16));
    assert_eq!(parse_number("0XfF"), Some(255));
    assert_eq!(parse_number(" 7 "), Some(7));
    for bad in ["", "0x", "ten", "1e3", "-1", "0x1g", "18446744073709551616"] {
        assert_eq!(parse_number(bad), None, "{bad:?}");
    }
}
