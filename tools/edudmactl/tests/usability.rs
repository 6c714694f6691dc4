//! What a new user ran into (#13 §4): huge inputs checked before they are
//! built, allocation failures named as such, hex everywhere, honest help,
//! `ok` in every JSON answer, consistent exit codes, stdin and stdout as
//! files, a bench that checks its data, and messages that read right.

mod common;

use std::time::{Duration, Instant};

use common::{json, tool};
use predicates::prelude::*;

#[test]
fn a_huge_pattern_is_refused_before_it_is_built() {
    let started = Instant::now();
    tool()
        .args([
            "--sim",
            "write",
            "--pattern",
            "counter",
            "--len",
            "0xFFFFFFFF",
        ])
        .timeout(Duration::from_secs(60))
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "at this offset use at most 4095 bytes",
        ));
    // Building 4 GiB of pattern first took far longer than this.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_endless_file_is_read_only_as_far_as_the_window() {
    tool()
        .args(["--sim", "write", "--file", "/dev/zero", "--offset", "4000"])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "/dev/zero holds more than the 95 bytes from --offset 4000",
        ));
}

#[test]
fn stdin_is_a_file_and_stdout_an_output() {
    let report: serde_json::Value = serde_json::from_slice(
        &tool()
            .args([
                "--sim", "--json", "write", "--file", "-", "--offset", "4085",
            ])
            .write_stdin("0123456789")
            .assert()
            .code(0)
            .get_output()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        (report["ok"].clone(), report["len"].clone()),
        (true.into(), 10.into())
    );
    tool()
        .args(["--sim", "write", "--file", "-", "--offset", "4085"])
        .write_stdin("0123456789A")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "stdin holds more than the 10 bytes",
        ));
    // A fresh machine's buffer is zero: 5 raw zero bytes on stdout.
    tool()
        .args(["--sim", "read", "--len", "5", "--out", "-"])
        .assert()
        .code(0)
        .stdout(predicate::eq(&[0u8; 5][..]));
}

#[test]
fn a_buffer_larger_than_memory_is_an_allocation_failure_and_fast() {
    let started = Instant::now();
    let error = json(
        &[
            "--sim",
            "--json",
            "read",
            "--offset",
            "4000",
            "--len",
            "4294967295",
            "--no-range-check",
        ],
        1,
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        error["error"]["status"],
        "STATUS_INSUFFICIENT_RESOURCES (0xC000009A)"
    );
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("could not allocate or lock"), "{message}");
    assert!(!message.contains("offset, length or flags"), "{message}");
}

#[test]
fn every_numeric_flag_takes_hex() {
    let info = json(
        &[
            "--sim",
            "--json",
            "--seed",
            "0x2A",
            "--memory-mib",
            "0x1200",
            "--map-registers",
            "0x1",
            "--cpus",
            "0x3",
            "--dma-mask-bits",
            "0x20",
            "info",
        ],
        0,
    );
    let config = &info["backend"]["config"];
    assert_eq!(config["seed"], 42);
    assert_eq!(config["memory_mib"], 4608);
    assert_eq!(config["map_registers"], 1);
    assert_eq!(config["cpus"], 3);
    assert_eq!(config["dma_mask_bits"], 32);
    let bytes_with = |seed: &str| {
        let script =
            format!("write --pattern random --pattern-seed {seed} --len 0x20\nread --len 0x20\n");
        let (lines, _) = common::json_lines(&["--sim", "--json", "script", "-"], &script, 0);
        lines[1]["data_hex"].clone()
    };
    assert_eq!(bytes_with("0x7"), bytes_with("7"));
    assert_ne!(bytes_with("0x7"), bytes_with("8"));
}

#[test]
fn knobs_out_of_range_are_refused_with_the_range() {
    for (flag, value, range) in [
        ("--memory-mib", "100", "use 512 to 65536"),
        ("--map-registers", "0", "use 1 to 4096"),
        ("--cpus", "0x41", "use 1 to 64"),
    ] {
        tool()
            .args(["--sim", flag, value, "info"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(range));
    }
}

#[test]
fn help_headings_defaults_and_ranges_are_true() {
    let output = tool().arg("--help").assert().success().get_output().clone();
    let help = String::from_utf8(output.stdout).unwrap();
    let global = help.find("Global options:").expect("a global heading");
    let simulator = help
        .find("Simulator (with --sim")
        .expect("a simulator heading");
    let json_flag = help.find("--json").unwrap();
    assert!(
        global < json_flag && json_flag < simulator,
        "--json is global:\n{help}"
    );
    for shown in [
        "[default: 4096]",
        "[default: 28]",
        "[default: 16]",
        "[default: common-buffer]",
        "24 to 64",
        "512 to 65536",
        "the HAL grants",
        "boots a fresh simulated machine",
        "script FILE",
    ] {
        assert!(help.contains(shown), "help lacks {shown:?}:\n{help}");
    }
    // A command's own options come first, under their own heading.
    let read = tool()
        .args(["read", "--help"])
        .assert()
        .success()
        .get_output()
        .clone();
    let read = String::from_utf8(read.stdout).unwrap();
    let local = read.find("--len").unwrap();
    assert!(local < read.find("Global options:").unwrap(), "{read}");
}

#[test]
fn help_about_help_and_commands_succeeds() {
    tool().args(["help", "--help"]).assert().success();
    tool()
        .args(["help", "read"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--len"));
    tool()
        .args(["help", "fly"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("there is no command `fly`"));
}

#[test]
fn every_command_says_ok_in_json() {
    for args in [
        &["info"][..],
        &["stats"],
        &["write", "--pattern", "ones", "--len", "3"],
        &["read", "--len", "3"],
        &["bench", "--iterations", "1", "--len", "64"],
        &["loopback", "--iterations", "1", "--len", "64"],
        &["selftest", "--no-dma"],
    ] {
        let report = json(&[&["--sim", "--json"][..], args].concat(), 0);
        assert_eq!(report["ok"], true, "{args:?}: {report}");
    }
}

#[test]
fn unreadable_inputs_and_unwritable_outputs_exit_alike() {
    let input = json(
        &["--sim", "--json", "write", "--file", "/nonexistent/in.bin"],
        2,
    );
    let output = json(
        &[
            "--sim",
            "--json",
            "read",
            "--len",
            "1",
            "--out",
            "/nonexistent/out.bin",
        ],
        2,
    );
    assert_eq!(input["error"]["exit_code"], output["error"]["exit_code"]);
    assert_eq!(input["error"]["kind"], "input_file");
    assert_eq!(output["error"]["kind"], "output");
}

#[test]
fn bench_checks_every_byte_it_reads_back() {
    let report = json(
        &[
            "--sim",
            "--json",
            "--inject-corruption",
            "1",
            "bench",
            "--iterations",
            "2",
        ],
        3,
    );
    assert_eq!(report["ok"], false);
    assert_eq!(report["mismatched_bytes"], 1);
    assert_eq!(report["first_failure"]["iteration"], 1);
    let clean = json(&["--sim", "--json", "bench", "--iterations", "2"], 0);
    assert_eq!(clean["bytes_verified"], 2 * 4095);
    assert_eq!(clean["mismatched_bytes"], 0);
}

#[test]
fn messages_count_right_and_say_it_once() {
    tool()
        .args(["--sim", "write", "--pattern", "counter", "--len", "1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote 1 byte at offset 0"));
    let output = tool()
        .args(["--sim", "read", "--offset", "4000", "--len", "200"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let message = String::from_utf8(output.stderr).unwrap();
    assert_eq!(message.matches("4095-byte window").count(), 1, "{message}");
    assert!(message.contains("use at most 95 bytes"), "{message}");
    tool()
        .args(["--sim", "loopback", "--offset", "4095"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--offset 4095 leaves no room"))
        .stderr(predicate::str::contains("at least one byte").not());
    tool()
        .args(["--seed", "1", "info"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--seed only makes sense"));
}
