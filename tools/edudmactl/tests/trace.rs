//! `edudmactl --sim --trace FILE`: the run's timeline in Chrome's
//! trace-event JSON, for any command, also one that fails.

mod common;

use common::tool;

fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("the trace file");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    doc["traceEvents"].as_array().expect("traceEvents").clone()
}

#[test]
fn a_traced_loopback_shows_cpus_dma_interrupts_and_irps() {
    let dir = std::env::temp_dir().join(format!("edudmactl-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("loopback.json");
    tool()
        .args(["--sim", "--cpus", "3", "--trace"])
        .arg(&path)
        .args(["loopback", "--len", "64", "--iterations", "2"])
        .assert()
        .success();
    let events = events(&path);
    let lane_names: Vec<String> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        .collect();
    for lane in [
        "CPU 0",
        "CPU 1",
        "CPU 2",
        "edu DMA",
        "interrupt line",
        "IRPs",
    ] {
        assert!(
            lane_names.iter().any(|l| l == lane),
            "{lane}: {lane_names:?}"
        );
    }
    let named = |name: &str| {
        events
            .iter()
            .any(|e| e["name"].as_str().is_some_and(|n| n.starts_with(name)))
    };
    for routine in [
        "StartIo",
        "ISR",
        "DpcForIsr",
        "DMA 64 B to RAM",
        "DMA 64 B to the device",
    ] {
        assert!(named(routine), "{routine}");
    }
    let irps_sent = events.iter().filter(|e| e["ph"] == "b").count();
    let irps_done = events.iter().filter(|e| e["ph"] == "e").count();
    assert!(irps_sent >= 4, "two writes and two reads at least");
    assert_eq!(irps_sent, irps_done, "every IRP completed");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_failing_command_still_leaves_its_timeline() {
    let dir = std::env::temp_dir().join(format!("edudmactl-trace-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("corrupt.json");
    tool()
        .args(["--sim", "--inject-corruption", "1", "--trace"])
        .arg(&path)
        .args(["loopback", "--len", "16", "--iterations", "1"])
        .assert()
        .code(3);
    assert!(!events(&path).is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unwritable_trace_file_is_an_output_error() {
    tool()
        .args(["--sim", "--trace", "/nonexistent-dir/t.json", "info"])
        .assert()
        .code(2);
}
