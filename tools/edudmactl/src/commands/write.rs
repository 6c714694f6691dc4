//! `write`: DMA a file or a pattern into the device buffer.

use serde::Serialize;

use super::Outcome;
use crate::cli::WriteArgs;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::output::Output;

#[derive(Serialize)]
struct Report {
    command: &'static str,
    offset: u32,
    len: usize,
    source: String,
}

/// Run `write`.
pub fn run(device: &mut Device, args: &WriteArgs, output: &Output) -> Result<Outcome> {
    let (data, source) = match (&args.file, args.pattern, args.len) {
        (Some(path), _, _) => {
            let data = std::fs::read(path).map_err(|source| Error::InputFile {
                path: path.clone(),
                source,
            })?;
            (data, format!("file {}", path.display()))
        }
        (None, Some(pattern), Some(len)) => (
            pattern.generate(len as usize, args.pattern_seed),
            format!("pattern {}", pattern.name()),
        ),
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
    if !args.no_range_check {
        device.check_range(args.offset, data.len())?;
    }
    device.dma_write(args.offset, &data)?;
    let report = Report {
        command: "write",
        offset: args.offset,
        len: data.len(),
        source,
    };
    output.emit(&report, || {
        format!(
            "wrote {} bytes at offset {} ({})\n",
            report.len, report.offset, report.source
        )
    })?;
    Ok(Outcome::Success)
}
