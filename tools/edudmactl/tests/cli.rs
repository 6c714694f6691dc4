//! End-to-end tests of the `edudmactl` binary on the simulator (`--sim`):
//! every command, `--json` parsed and checked, bad arguments (exit 2), and a
//! corrupted DMA byte caught as a data mismatch (exit 3).

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn tool() -> Command {
    Command::cargo_bin("edudmactl").expect("the edudmactl binary is built")
}

/// Run with `args`, expect `code`, and parse stdout as one JSON object.
fn json(args: &[&str], code: i32) -> Value {
    let output = tool().args(args).assert().code(code).get_output().clone();
    let stdout = String::from_utf8(output.stdout).expect("JSON output is UTF-8");
    serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("stdout of {args:?} is not one JSON object ({error}):\n{stdout}")
    })
}

#[test]
fn help_teaches_examples_and_exit_codes() {
    tool()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"))
        .stdout(predicate::str::contains("--sim selftest"))
        .stdout(predicate::str::contains("Exit codes:"))
        .stdout(predicate::str::contains("3  data mismatch"));
    tool()
        .args(["selftest", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("round trips"));
}

#[test]
fn info_json_names_dma_interface_version_3() {
    let info = json(&["--sim", "--json", "info"], 0);
    assert_eq!(info["command"], "info");
    assert_eq!(info["backend"]["kind"], "sim");
    assert_eq!(info["device"]["dma_interface_version"], 3);
    assert_eq!(info["device"]["dma_window"], 4095);
    assert_eq!(info["device"]["device_buffer_size"], 4096);
    assert_eq!(
        info["device"]["contract_version"],
        info["device"]["tool_contract_version"]
    );
    let id = info["device"]["device_id"]
        .as_str()
        .expect("device_id is a string");
    assert!(id.to_ascii_uppercase().ends_with("ED"), "edu id: {id}");
}

#[test]
fn info_text_is_readable() {
    tool()
        .args(["--sim", "info"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "version 3 (DEVICE_DESCRIPTION_VERSION3)",
        ))
        .stdout(predicate::str::contains("DMA window"));
}

#[test]
fn knobs_reach_the_simulated_adapter() {
    let info = json(
        &[
            "--sim",
            "--json",
            "--seed",
            "9",
            "--map-registers",
            "2",
            "--scatter-gather",
            "off",
            "--alloc",
            "async",
            "--cpus",
            "4",
            "--msi",
            "--window",
            "4096",
            "info",
        ],
        0,
    );
    let device = &info["device"];
    assert_eq!(device["dma_window"], 4096);
    // src/ always describes a scatter/gather bus master (what it reports);
    // `--scatter-gather off` is the platform's HAL not giving it one.
    assert_eq!(device["scatter_gather"], true);
    assert_eq!(info["backend"]["config"]["scatter_gather"], false);
    assert_eq!(device["interrupt"], "message-signaled");
    assert_eq!(device["allocation_policy"], "async-only");
    assert_eq!(info["backend"]["config"]["seed"], 9);
    assert_eq!(info["backend"]["config"]["cpus"], 4);
}

#[test]
fn selftest_passes_and_reports_bytes_verified() {
    tool()
        .args(["--sim", "selftest"])
        .assert()
        .success()
        .stdout(predicate::str::contains("selftest PASSED"))
        .stdout(predicate::str::contains("bytes verified"));
}

#[test]
fn selftest_json_checks_every_step_and_byte() {
    let report = json(&["--sim", "--json", "selftest"], 0);
    assert_eq!(report["ok"], true);
    let steps = report["driver_selftest"].as_array().expect("steps");
    assert_eq!(steps.len(), 5);
    assert!(steps.iter().all(|step| step["ok"] == true), "{steps:?}");
    let trips = report["round_trips"].as_array().expect("round trips");
    assert!(trips.len() >= 10);
    assert!(trips.iter().any(|trip| trip["path"] == "file"));
    assert!(trips.iter().all(|trip| trip["mismatched"] == 0));
    let verified = report["bytes_verified"].as_u64().expect("bytes_verified");
    let sum: u64 = trips.iter().map(|t| t["len"].as_u64().unwrap_or(0)).sum();
    assert_eq!(
        verified,
        sum + 4095,
        "round trips plus the final whole-window read"
    );
    assert_eq!(report["mismatched_bytes"], 0);
    assert!(report["virtual_time_ms"].as_f64().unwrap_or(0.0) > 0.0);
    let stats = &report["driver_stats"];
    assert_eq!(stats["errors"], 0);
    assert_eq!(stats["requests"], stats["completed"]);
    assert!(stats["bytes_to_device"].as_u64().unwrap_or(0) >= sum);
}

#[test]
fn selftest_passes_on_harder_adapters() {
    for knobs in [
        &["--map-registers", "1", "--scatter-gather", "off"][..],
        &["--alloc", "async", "--cpus", "4", "--seed", "42"][..],
        &["--window", "4096", "--msi"][..],
    ] {
        let mut args = vec!["--sim"];
        args.extend_from_slice(knobs);
        args.push("selftest");
        tool().args(&args).assert().success();
    }
}

#[test]
fn corrupted_dma_byte_is_a_data_mismatch() {
    tool()
        .args(["--sim", "--inject-corruption", "3", "selftest"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("FAIL"))
        .stderr(predicate::str::contains("read back wrong"));
    let report = json(
        &["--sim", "--json", "--inject-corruption", "3", "selftest"],
        3,
    );
    assert_eq!(report["ok"], false);
    assert!(report["mismatched_bytes"].as_u64().unwrap_or(0) >= 1);
}

#[test]
fn loopback_compares_and_catches_corruption() {
    let report = json(
        &[
            "--sim",
            "--json",
            "loopback",
            "--len",
            "300",
            "--iterations",
            "3",
        ],
        0,
    );
    assert_eq!(report["ok"], true);
    assert_eq!(report["bytes_verified"], 900);
    let bad = json(
        &[
            "--sim",
            "--json",
            "--inject-corruption",
            "4",
            "loopback",
            "--len",
            "300",
            "--iterations",
            "3",
        ],
        3,
    );
    assert_eq!(bad["ok"], false);
    // One corrupted byte spoils exactly one round trip.
    assert_eq!(bad["failed_iterations"], 1);
    assert_eq!(bad["mismatched_bytes"], 1);
    assert!(bad["first_failure"]["first"]["offset"].is_u64());
}

#[test]
fn write_then_read_in_json_and_raw() {
    let write = json(
        &[
            "--sim",
            "--json",
            "write",
            "--offset",
            "16",
            "--pattern",
            "counter",
            "--len",
            "32",
        ],
        0,
    );
    assert_eq!(write["len"], 32);
    assert_eq!(write["source"], "pattern counter");

    let read = json(
        &["--sim", "--json", "read", "--offset", "0", "--len", "16"],
        0,
    );
    assert_eq!(read["data_hex"].as_str().map(str::len), Some(32));

    // Not a terminal: raw bytes on stdout.
    let raw = tool()
        .args(["--sim", "read", "--offset", "0x10", "--len", "100"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(raw.len(), 100);
}

#[test]
fn write_from_file_and_read_to_file() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let input = dir.join("edudmactl-input.bin");
    std::fs::write(&input, b"hello edu").expect("temp file");
    tool()
        .args(["--sim", "write", "--offset", "100", "--file"])
        .arg(&input)
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote 9 bytes at offset 100"));

    let out = dir.join("edudmactl-output.bin");
    let _ = std::fs::remove_file(&out);
    tool()
        .args(["--sim", "read", "--offset", "0", "--len", "4095", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
    assert_eq!(std::fs::metadata(&out).map(|m| m.len()).ok(), Some(4095));
}

#[test]
fn stats_json_has_every_counter() {
    let report = json(&["--sim", "--json", "stats", "--reset"], 0);
    assert_eq!(report["reset"], true);
    let stats = report["stats"].as_object().expect("stats object");
    for name in [
        "requests",
        "bytes_to_device",
        "get_dma_transfer_info",
        "allocate_adapter_channel",
        "map_transfer",
        "flush_adapter_buffers",
        "free_adapter_channel",
        "interrupts",
        "errors",
    ] {
        assert!(stats.contains_key(name), "missing {name}");
    }
}

#[test]
fn bench_reports_virtual_throughput_under_the_device_limit() {
    let report = json(
        &[
            "--sim",
            "--json",
            "--dma-strategy",
            "v3-packet",
            "bench",
            "--len",
            "4095",
            "--iterations",
            "3",
        ],
        0,
    );
    assert_eq!(report["device_limit_bytes_per_sec"], 40960.0);
    for direction in ["write", "read"] {
        let d = &report[direction];
        assert_eq!(d["bytes"], 3 * 4095);
        let rate = d["virtual_bytes_per_sec"].as_f64().expect("virtual rate");
        assert!(rate > 0.0 && rate <= 40960.0, "{direction}: {rate}");
        let percent = d["percent_of_device_limit"].as_f64().expect("percent");
        assert!(percent > 0.0 && percent <= 100.0);
    }
    let calls = &report["dma_calls_per_request"];
    assert!(calls["map_transfer"].as_f64().unwrap_or(0.0) >= 1.0);
    assert!(calls["device_commands"].as_f64().unwrap_or(0.0) >= 1.0);
    assert_eq!(calls["free_adapter_channel"].as_f64(), Some(1.0));
}

#[test]
fn bench_keeps_requests_in_flight_and_checks_every_read() {
    let report = json(
        &[
            "--sim",
            "--json",
            "--dma-strategy",
            "v3-packet",
            "bench",
            "--queue-depth",
            "4",
            "--len",
            "4095",
            "--iterations",
            "6",
        ],
        0,
    );
    assert_eq!(report["queue_depth"], 4);
    assert_eq!(report["ok"], true);
    assert_eq!(report["bytes_verified"], 6 * 4095);
    assert_eq!(report["dma_strategy"], "v3-packet");
    let total = &report["total"];
    assert_eq!(total["requests"], 12);
    let percent = total["percent_of_device_limit"].as_f64().expect("percent");
    assert!(percent > 0.0 && percent <= 100.0, "{percent}");
    assert!(report["requests_per_wall_second"].as_f64().unwrap_or(0.0) > 0.0);
    // The binary counts allocations: the driver's code makes none per request.
    let allocations = &report["allocations_per_request"];
    assert_eq!(
        allocations["driver_code"].as_f64(),
        Some(0.0),
        "{allocations}"
    );
    assert!(allocations["elsewhere"].as_f64().unwrap_or(0.0) > 0.0);
    let floors = report["dma_call_floors"].as_array().expect("floors");
    let routines: Vec<&str> = floors
        .iter()
        .map(|f| f["routine"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        routines,
        [
            "GetDmaTransferInfo",
            "AllocateAdapterChannelEx",
            "MapTransferEx",
            "FlushAdapterBuffersEx",
            "FreeAdapterChannel"
        ]
    );
    let get_info = &floors[0];
    assert_eq!(get_info["per_request"].as_f64(), Some(1.0));
    assert_eq!(get_info["at_floor"], true);
    assert_eq!(report["device_commands_floor"].as_f64(), Some(1.0));
}

#[test]
fn with_one_map_register_the_command_floor_is_per_page_unless_the_common_buffer_copies() {
    let packet = json(
        &[
            "--sim",
            "--json",
            "--dma-strategy",
            "v3-packet",
            "--map-registers",
            "1",
            "bench",
            "--iterations",
            "2",
        ],
        0,
    );
    assert!(packet.get("device_commands_floor").is_none(), "{packet}");
    assert_eq!(packet["device_commands_per_request"].as_f64(), Some(2.0));
    let floors = packet["dma_call_floors"].as_array().expect("floors");
    let map = floors
        .iter()
        .find(|f| f["routine"] == "MapTransferEx")
        .expect("MapTransferEx");
    // One MapTransferEx per mapped range: two pages, two ranges.
    assert_eq!(map["floor"].as_f64(), Some(2.0));
    assert_eq!(map["at_floor"], true);
    let common = json(
        &[
            "--sim",
            "--json",
            "--map-registers",
            "1",
            "--dma-strategy",
            "common-buffer",
            "bench",
            "--iterations",
            "2",
        ],
        0,
    );
    assert_eq!(common["dma_strategy"], "common-buffer");
    assert_eq!(common["device_commands_floor"].as_f64(), Some(1.0));
    assert_eq!(common["device_commands_per_request"].as_f64(), Some(1.0));
}

#[test]
fn a_queued_bench_still_catches_a_corrupted_byte() {
    let report = json(
        &[
            "--sim",
            "--json",
            "--inject-corruption",
            "3",
            "bench",
            "--queue-depth",
            "4",
            "--iterations",
            "3",
        ],
        3,
    );
    // Transfers 1 and 2 are the first round's write and read; 3 is the
    // second round's write.
    assert_eq!(report["ok"], false);
    assert_eq!(report["mismatched_bytes"], 1);
    assert_eq!(report["first_failure"]["iteration"], 2);
}

#[test]
fn queue_depths_out_of_range_are_usage_errors() {
    for depth in ["0", "65", "4294967295"] {
        tool()
            .args(["--sim", "bench", "--queue-depth", depth])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--queue-depth"))
            .stderr(predicate::str::contains("1 to 64"));
    }
    tool()
        .args(["--sim", "bench", "--queue-depth", "many"])
        .assert()
        .code(2);
}

#[test]
fn bad_arguments_exit_2() {
    let cases: &[&[&str]] = &[
        &["--sim", "read", "--offset", "0"],         // missing --len
        &["--sim", "read", "--len", "ten"],          // not a number
        &["--sim", "write", "--offset", "0"],        // no source
        &["--sim", "write", "--pattern", "counter"], // pattern without --len
        &["--sim", "write", "--pattern", "nope", "--len", "4"], // unknown pattern
        &["--sim", "--scatter-gather", "maybe", "info"], // bad knob value
        &["--sim", "--window", "2048", "info"],      // bad window
        &["--sim", "--device", r"\\?\edudma-interface", "info"], // both backends
        &["--seed", "3", "info"],                    // knob without --sim
        &["--sim", "frobnicate"],                    // unknown command
        &["--sim", "--cpus", "0", "info"],           // out of range knob
        &["--sim", "--dma-strategy", "v2-packet", "info"], // unknown strategy
        &["--dma-strategy", "v1-packet", "info"],    // strategy without --sim
        &["--no-dma-v3", "info"],                    // HAL knob without --sim
    ];
    for args in cases {
        tool().args(*args).assert().code(2);
    }
}

#[test]
fn bad_arguments_with_json_still_print_one_json_object() {
    let report = json(&["--sim", "--json", "read", "--len", "ten"], 2);
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["kind"], "usage");
    assert!(
        report["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--len")),
        "{report}"
    );
}

#[test]
fn ranges_outside_the_window_are_usage_errors_with_advice() {
    tool()
        .args(["--sim", "read", "--offset", "4000", "--len", "100"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("window"))
        .stderr(predicate::str::contains("edudmactl info"));
    let report = json(
        &[
            "--sim",
            "--json",
            "write",
            "--offset",
            "4095",
            "--pattern",
            "ones",
            "--len",
            "1",
        ],
        2,
    );
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["kind"], "usage");
    assert_eq!(report["error"]["exit_code"], 2);
}

#[test]
fn driver_error_status_is_named_and_explained() {
    // Past the tool's own range check, the driver's validation answers.
    tool()
        .args([
            "--sim",
            "read",
            "--offset",
            "4000",
            "--len",
            "200",
            "--no-range-check",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "STATUS_INVALID_BUFFER_SIZE (0xC0000206)",
        ))
        .stderr(predicate::str::contains(
            "past the end of the device window",
        ))
        .stderr(predicate::str::contains("\n").count(1));
    let report = json(
        &[
            "--sim",
            "--json",
            "write",
            "--offset",
            "5000",
            "--pattern",
            "ones",
            "--len",
            "1",
            "--no-range-check",
        ],
        1,
    );
    assert_eq!(report["error"]["kind"], "driver_status");
    assert_eq!(
        report["error"]["status"],
        "STATUS_INVALID_PARAMETER (0xC000000D)"
    );
}

#[test]
fn missing_input_file_is_a_usage_error() {
    tool()
        .args(["--sim", "write", "--file", "/nonexistent/edudmactl.bin"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read"));
}

#[cfg(not(windows))]
#[test]
fn a_real_device_off_windows_says_to_use_sim() {
    tool()
        .arg("info")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--sim"))
        .stderr(predicate::str::contains("\n").count(1));
}

#[test]
fn each_strategy_loops_back_with_its_routines_at_their_floor() {
    // (arguments, routines called once per request, routines never called)
    let cases: [(&[&str], &[&str], &[&str]); 5] = [
        (
            &["--dma-strategy", "v3-packet"],
            &["get_dma_transfer_info", "free_adapter_channel"],
            &["flush_io_buffers", "free_map_registers"],
        ),
        (
            &["--dma-strategy", "v1-packet"],
            &["flush_io_buffers", "free_map_registers"],
            &[
                "get_dma_transfer_info",
                "free_adapter_channel",
                "cancel_adapter_channel",
            ],
        ),
        (
            &["--no-dma-v3"],
            &["flush_io_buffers", "free_map_registers"],
            &["get_dma_transfer_info", "free_adapter_channel"],
        ),
        (
            &["--dma-strategy", "sg-list"],
            &[
                "calculate_scatter_gather_list",
                "build_scatter_gather_list",
                "put_scatter_gather_list",
            ],
            &["allocate_adapter_channel", "get_scatter_gather_list"],
        ),
        (
            &["--dma-strategy", "common-buffer"],
            &["common_buffer_copies"],
            &[
                "allocate_adapter_channel",
                "map_transfer",
                "build_scatter_gather_list",
            ],
        ),
    ];
    for (knobs, once, never) in cases {
        let mut args = vec!["--sim", "--json"];
        args.extend_from_slice(knobs);
        args.extend_from_slice(&["loopback", "--iterations", "20"]);
        let report = json(&args, 0);
        assert_eq!(report["ok"], true, "{knobs:?}");
        assert_eq!(report["bytes_verified"], 20 * 4095);
        let stats = &report["driver_stats"];
        let requests = stats["requests"].as_u64().expect("requests");
        assert_eq!(requests, 40, "{knobs:?}: a write and a read per iteration");
        let packet: &[&str] = if knobs.contains(&"sg-list") || knobs.contains(&"common-buffer") {
            &["device_commands"]
        } else {
            &["map_transfer", "flush_adapter_buffers"]
        };
        for name in once.iter().chain(packet) {
            assert_eq!(stats[*name].as_u64(), Some(requests), "{knobs:?} {name}");
        }
        for name in never {
            assert_eq!(stats[*name].as_u64(), Some(0), "{knobs:?} {name}");
        }
    }
}

#[test]
fn info_says_which_strategy_is_in_force_and_why() {
    // The INF's default: the common buffer.
    let default = json(&["--sim", "--json", "info"], 0);
    assert_eq!(default["device"]["dma_strategy"], "common-buffer");
    assert_eq!(default["device"]["dma_interface_version"], 3);
    let v3 = json(
        &["--sim", "--json", "--dma-strategy", "v3-packet", "info"],
        0,
    );
    assert_eq!(v3["device"]["dma_strategy"], "v3-packet");
    assert_eq!(v3["device"]["dma_v3_fallback"], false);
    let v1 = json(
        &["--sim", "--json", "--dma-strategy", "v1-packet", "info"],
        0,
    );
    assert_eq!(v1["device"]["dma_strategy"], "v1-packet");
    assert_eq!(v1["device"]["dma_interface_version"], 2);
    assert_eq!(v1["device"]["dma_v3_fallback"], false);
    let fallback = json(
        &[
            "--sim",
            "--json",
            "--dma-strategy",
            "v3-packet",
            "--no-dma-v3",
            "info",
        ],
        0,
    );
    assert_eq!(fallback["device"]["dma_strategy"], "v1-packet");
    assert_eq!(fallback["device"]["requested_dma_strategy"], "v3-packet");
    assert_eq!(fallback["device"]["dma_v3_fallback"], true);
    assert_eq!(fallback["backend"]["config"]["dma_v3"], false);
    tool()
        .args(["--sim", "--no-dma-v3", "info"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "v1-packet (fallback: common-buffer asked for, the HAL has no DMA version 3)",
        ));
}

#[test]
fn a_closed_stderr_or_stdout_never_aborts_the_tool() {
    use std::process::{Command as Process, Stdio};
    // A usage error (4096 bytes do not fit the 4095-byte window), a data
    // result, and a device error: each printed into pipes whose reader has
    // gone (as `edudmactl ... 2>&1 | true`).
    let cases: [(&[&str], i32); 3] = [
        (
            &["--sim", "write", "--len", "4096", "--pattern", "zeros"],
            2,
        ),
        (&["--sim", "write", "--len", "100", "--pattern", "zeros"], 0),
        (
            &[
                "--sim",
                "--inject-corruption",
                "2",
                "loopback",
                "--iterations",
                "1",
            ],
            3,
        ),
    ];
    for (args, code) in cases {
        let mut child = Process::new(assert_cmd::cargo::cargo_bin("edudmactl"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(code), "{args:?}: {status}");
    }
}
