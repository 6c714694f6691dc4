//! `write`: DMA a file (or stdin) or a pattern into the device buffer.
//!
//! The range is checked before any byte is generated or read, and a file is
//! read only as far as the window can take (one byte more tells that it is
//! too long), so `--len 0xFFFFFFFF` or `--file /dev/zero` fail at once.

use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::Outcome;
use crate::cli::WriteArgs;
use crate::device::{Device, zeroed_buffer};
use crate::error::{Error, Result};
use crate::output::{Output, count_of};

#[derive(Serialize)]
struct Report {
    command: &'static str,
    ok: bool,
    offset: u32,
    len: usize,
    source: String,
}

/// Run `write`.
pub fn run(device: &mut Device, args: &WriteArgs, output: &Output) -> Result<Outcome> {
    let window = device.window()?;
    let (data, source) = match (&args.file, args.pattern, args.len) {
        (Some(path), _, _) => {
            if !args.no_range_check && args.offset >= window {
                device.check_range(args.offset, 1)?;
            }
            // Unchecked, the driver gets what a window holds plus one byte.
            let room = if args.no_range_check {
                window
            } else {
                window - args.offset
            };
            let data = read_at_most(path, u64::from(room) + 1)?;
            if !args.no_range_check && data.len() > room as usize {
                return Err(Error::Usage(format!(
                    "{} holds more than the {} from --offset {} to the end of the {window}-byte \
                     window: give a shorter file",
                    display(path),
                    count_of(u64::from(room), "byte"),
                    args.offset
                )));
            }
            (data, format!("file {}", display(path)))
        }
        (None, Some(pattern), Some(len)) => {
            if !args.no_range_check {
                device.check_range(args.offset, len as usize)?;
            }
            let mut data = zeroed_buffer(len as usize, "the pattern")?;
            pattern.fill(&mut data, args.pattern_seed);
            (data, format!("pattern {}", pattern.name()))
        }
        _ => {
            return Err(Error::Usage(
                "write needs --file FILE, or --pattern NAME with --len N".into(),
            ));
        }
    };
    if data.is_empty() {
        return Err(Error::Usage(format!(
            "nothing to write: {source} is empty; give a file with data"
        )));
    }
    device.dma_write(args.offset, &data)?;
    let report = Report {
        command: "write",
        ok: true,
        offset: args.offset,
        len: data.len(),
        source,
    };
    output.emit(&report, || {
        format!(
            "wrote {} at offset {} ({})\n",
            count_of(report.len as u64, "byte"),
            report.offset,
            report.source
        )
    })?;
    Ok(Outcome::Success)
}

/// `-` is stdin.
fn display(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".into()
    } else {
        path.display().to_string()
    }
}

/// Read at most `limit` bytes of `path` (`-`: stdin).
fn read_at_most(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut data)
    } else {
        std::fs::File::open(path).and_then(|file| file.take(limit).read_to_end(&mut data))
    };
    read.map_err(|source| Error::InputFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(data)
}
