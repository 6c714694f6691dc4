//! `read`: DMA bytes out of the device buffer — a hex dump for a person,
//! raw bytes for a file or a pipe, hex in JSON.

use serde::Serialize;

use super::Outcome;
use crate::cli::ReadArgs;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::output::{Output, hex_dump, hex_string};

#[derive(Serialize)]
struct Report {
    command: &'static str,
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
    let data = device.dma_read(args.offset, args.len as usize)?;
    if let Some(path) = &args.out {
        std::fs::write(path, &data).map_err(|source| Error::Output {
            path: Some(path.clone()),
            source,
        })?;
    }
    if output.is_json() {
        let report = Report {
            command: "read",
            offset: args.offset,
            len: data.len(),
            out: args.out.as_ref().map(|p| p.display().to_string()),
            data_hex: args.out.is_none().then(|| hex_string(&data)),
        };
        output.emit(&report, String::new)?;
    } else if let Some(path) = &args.out {
        // The data went to the file; say so on stderr so stdout stays clean.
        crate::output::print_stderr(&format!(
            "read {} bytes at offset {} into {}\n",
            data.len(),
            args.offset,
            path.display()
        ));
    } else if output.is_terminal() {
        output.raw(hex_dump(&data, args.offset).as_bytes());
    } else {
        output.raw(&data);
    }
    Ok(Outcome::Success)
}
