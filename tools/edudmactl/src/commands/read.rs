//! `read`: DMA bytes out of the device buffer — a hex dump for a person,
//! raw bytes for a file or a pipe, hex in JSON.

use std::path::Path;

use serde::Serialize;

use super::Outcome;
use crate::cli::ReadArgs;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::output::{Output, count_of, hex_dump, hex_string};

#[derive(Serialize)]
struct Report {
    command: &'static str,
    ok: bool,
    offset: u32,
    len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<String>,
    /// The bytes as hex, when they were not written to a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_hex: Option<String>,
}

/// Run `read`.
pub fn run(device: &mut Device, args: &ReadArgs, output: &Output) -> Result<Outcome> {
    if !args.no_range_check {
        device.check_range(args.offset, args.len as usize)?;
    }
    // `--out -` is stdout: the raw bytes, as to a file.
    let to_stdout = args.out.as_deref() == Some(Path::new("-"));
    if to_stdout && output.is_json() {
        return Err(Error::Usage(
            "--out - puts the raw bytes on stdout, where --json prints its object: \
             give --out a file, or leave --out out for the bytes in hex"
                .into(),
        ));
    }
    let data = device.dma_read(args.offset, args.len as usize)?;
    let file = args.out.as_ref().filter(|_| !to_stdout);
    if let Some(path) = file {
        std::fs::write(path, &data).map_err(|source| Error::Output {
            path: Some(path.clone()),
            source,
        })?;
    }
    if output.is_json() {
        let report = Report {
            command: "read",
            ok: true,
            offset: args.offset,
            len: data.len(),
            out: file.map(|p| p.display().to_string()),
            data_hex: file.is_none().then(|| hex_string(&data)),
        };
        output.emit(&report, String::new)?;
    } else if let Some(path) = file {
        // The data went to the file; say so on stderr so stdout stays clean.
        crate::output::print_stderr(&format!(
            "read {} at offset {} into {}\n",
            count_of(data.len() as u64, "byte"),
            args.offset,
            path.display()
        ));
    } else if to_stdout {
        output.raw(&data);
    } else if output.is_terminal() {
        output.raw(hex_dump(&data, args.offset).as_bytes());
    } else {
        output.raw(&data);
    }
    Ok(Outcome::Success)
}
