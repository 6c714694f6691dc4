//! `edudmactl --sim script`: several commands on ONE simulated machine.

mod common;

use common::{json_lines, tool};
use predicates::prelude::*;

#[test]
fn a_write_is_there_for_the_read_after_it() {
    let script = "\
# counter bytes at 0x10, read back on the same machine
write --offset 0x10 --pattern counter --len 8

read --offset 0x10 --len 8   # the same eight bytes
";
    let (lines, _) = json_lines(&["--sim", "--json", "script", "-"], script, 0);
    assert_eq!(lines.len(), 2, "one JSON object per command: {lines:?}");
    assert_eq!(
        (lines[0]["command"].clone(), lines[0]["line"].clone()),
        ("write".into(), 2.into())
    );
    assert_eq!(lines[1]["line"], 4);
    assert_eq!(lines[1]["data_hex"], "0001020304050607");
    // Two separate runs are two machines: the read sees none of the write.
    tool()
        .args([
            "--sim",
            "write",
            "--offset",
            "16",
            "--pattern",
            "ones",
            "--len",
            "8",
        ])
        .assert()
        .success();
    let fresh = common::json(
        &["--sim", "--json", "read", "--offset", "16", "--len", "8"],
        0,
    );
    assert_eq!(fresh["data_hex"], "0000000000000000");
}

#[test]
fn a_script_file_runs_on_one_machine() {
    let dir = std::env::temp_dir().join(format!("edudmactl-script-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("steps.txt");
    std::fs::write(&path, "write --pattern ones --len 2\nread --len 3\nstats\n").unwrap();
    let (lines, _) = json_lines(
        &["--sim", "--json", "script", path.to_str().unwrap()],
        "",
        0,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(lines[1]["data_hex"], "ffff00");
    assert_eq!(
        lines[2]["stats"]["requests"], 2,
        "stats counts the script's requests"
    );
}

#[test]
fn the_first_failing_line_stops_the_script_with_its_exit_code() {
    let script = "info\nread --offset 5000 --len 1\ninfo\n";
    let (lines, stderr) = json_lines(&["--sim", "--json", "script", "-"], script, 2);
    assert_eq!(lines.len(), 2, "the third line never ran: {lines:?}");
    assert_eq!(lines[1]["ok"], false);
    assert_eq!(lines[1]["error"]["line"], 2);
    assert!(stderr.contains("line 2: --offset 5000"), "{stderr}");

    // A mismatch stops it with exit code 3.
    let (lines, stderr) = json_lines(
        &["--sim", "--json", "--inject-corruption", "1", "script", "-"],
        "loopback --iterations 1\ninfo\n",
        3,
    );
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["ok"], false);
    assert!(stderr.contains("line 1: loopback"), "{stderr}");
}

#[test]
fn lines_use_the_command_grammar_without_run_wide_options() {
    for (line, problem) in [
        (
            "--seed 3 info",
            "--seed belongs on the script's command line",
        ),
        ("info --json", "--json belongs"),
        ("script other.txt", "cannot run another script"),
        ("fly", "line 1: unrecognized subcommand 'fly'"),
        ("read --out 'open", "never closed"),
    ] {
        tool()
            .args(["--sim", "script", "-"])
            .write_stdin(format!("{line}\n"))
            .assert()
            .code(2)
            .stderr(predicate::str::contains(problem));
    }
    tool()
        .args(["--sim", "script", "/nonexistent/steps.txt"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "cannot read /nonexistent/steps.txt",
        ));
}
