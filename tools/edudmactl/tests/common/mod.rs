//! What the binary's tests share: the tool, and its JSON output parsed.

#![allow(dead_code)]

use assert_cmd::Command;
use serde_json::Value;

/// The built `edudmactl`.
pub fn tool() -> Command {
    Command::cargo_bin("edudmactl").expect("the edudmactl binary is built")
}

/// Run with `args`, expect `code`, and parse stdout as one JSON object.
pub fn json(args: &[&str], code: i32) -> Value {
    let output = tool().args(args).assert().code(code).get_output().clone();
    let stdout = String::from_utf8(output.stdout).expect("JSON output is UTF-8");
    serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("stdout of {args:?} is not one JSON object ({error}):\n{stdout}")
    })
}

/// Run with `args` and `stdin`, expect `code`, and parse each stdout line as a JSON object.
pub fn json_lines(args: &[&str], stdin: &str, code: i32) -> (Vec<Value>, String) {
    let output = tool()
        .args(args)
        .write_stdin(stdin)
        .assert()
        .code(code)
        .get_output()
        .clone();
    let stdout = String::from_utf8(output.stdout).expect("JSON output is UTF-8");
    let objects = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("line {line:?} is not JSON ({error})"))
        })
        .collect();
    (
        objects,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
