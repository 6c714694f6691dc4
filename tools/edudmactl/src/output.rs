//! Where results go: one JSON object with `--json`, readable text otherwise,
//! and the hex dump of `read`.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use serde::Serialize;

use crate::error::{Error, Result};

/// How to print: JSON or text, and whether stdout is a terminal.
///
/// What a command prints is held until [`Output::flush`], so that `main`
/// can first end the session (on the simulator: the leak check) and print
/// one JSON object — the result, or the error if the ending failed.
#[derive(Debug)]
pub struct Output {
    json: bool,
    terminal: bool,
    stderr_terminal: bool,
    pending: RefCell<Vec<u8>>,
    /// The script line running, if a script is: JSON is then one compact
    /// object per line, with its `line`.
    script_line: Cell<Option<usize>>,
}

impl Output {
    /// Output for this run; `json` from `--json`.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            terminal: io::stdout().is_terminal(),
            stderr_terminal: io::stderr().is_terminal(),
            pending: RefCell::new(Vec::new()),
            script_line: Cell::new(None),
        }
    }

    /// Mark what follows as the output of script line `line` (`None`: no script).
    pub fn set_script_line(&self, line: Option<usize>) {
        self.script_line.set(line);
    }

    /// True when stderr is a terminal (where the progress bar goes).
    pub fn is_stderr_terminal(&self) -> bool {
        self.stderr_terminal
    }

    /// Queue raw bytes for stdout.
    pub fn raw(&self, bytes: &[u8]) {
        self.pending.borrow_mut().extend_from_slice(bytes);
    }

    /// Drop what was queued (the command's result is replaced by an error).
    pub fn discard(&self) {
        self.pending.borrow_mut().clear();
    }

    /// Write what was queued to stdout.
    pub fn flush(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        print_stdout(&pending)
    }

    /// True with `--json`.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// True when stdout is a terminal (a person is watching).
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Print `value` as JSON, or `text` — the one the user asked for.
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            let to_output_error = |error: serde_json::Error| Error::Output {
                path: None,
                source: io::Error::other(error),
            };
            let json = match self.script_line.get() {
                Some(line) => {
                    let json = serde_json::to_string(value).map_err(to_output_error)?;
                    // The line first, the command's fields in their order after it.
                    match json.strip_prefix('{') {
                        Some("}") => format!("{{\"line\":{line}}}"),
                        Some(fields) => format!("{{\"line\":{line},{fields}"),
                        None => json,
                    }
                }
                None => serde_json::to_string_pretty(value).map_err(to_output_error)?,
            };
            self.raw(format!("{json}\n").as_bytes());
        } else {
            self.raw(text().as_bytes());
        }
        Ok(())
    }
}

/// Write bytes to stdout, flushing; a closed pipe is not worth a panic.
pub fn print_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|source| Error::Output { path: None, source })
}

/// Write a message to stderr. A closed or broken stderr (`2>&1 | true`)
/// loses the message but never aborts the tool, unlike `eprintln!`, which
/// panics on a write error.
pub fn print_stderr(message: &str) {
    let mut stderr = io::stderr().lock();
    let _ = stderr
        .write_all(message.as_bytes())
        .and_then(|()| stderr.flush());
}

/// A classic hex dump: offset, 16 bytes in hex, the printable ones as text.
pub fn hex_dump(bytes: &[u8], base: u32) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let offset = u64::from(base) + row as u64 * 16;
        let _ = write!(out, "{offset:08x}  ");
        for column in 0..16 {
            match chunk.get(column) {
                Some(byte) => {
                    let _ = write!(out, "{byte:02x} ");
                }
                None => out.push_str("   "),
            }
            if column == 7 {
                out.push(' ');
            }
        }
        out.push_str(" |");
        out.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    out
}

/// Bytes as a lowercase hex string, for JSON.
pub fn hex_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `count` and `noun`, plural unless `count` is 1: "1 byte", "2 bytes".
pub fn count_of(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// A byte count with a binary unit, for text output.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_dump_rows() {
        let dump = hex_dump(b"Hello, edu DMA!\x00\x01", 0x10);
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("00000010  48 65 6c 6c"), "{dump}");
        assert!(lines[0].ends_with("|Hello, edu DMA!.|"), "{dump}");
        assert!(lines[1].starts_with("00000020  01 "), "{dump}");
    }

    #[test]
    fn hex_and_units() {
        assert_eq!(hex_string(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(40960.0), "40.00 KiB");
        assert_eq!(count_of(1, "byte"), "1 byte");
        assert_eq!(count_of(0, "byte"), "0 bytes");
        assert_eq!(count_of(4095, "byte"), "4095 bytes");
    }
}
