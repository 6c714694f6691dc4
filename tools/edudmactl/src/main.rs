//! `edudmactl`: the user-mode tool of the edudma driver.
//!
//! It drives the driver through its IOCTL contract (`edudma_core::ioctl`) on
//! two backends: the installed device on Windows, or the whole driver run
//! in-process on the simulator (`--sim`), on any host. See `edudmactl --help`.

use std::process::ExitCode;

use clap::CommandFactory;
use serde::Serialize;

use edudmactl::cli::{Cli, Command, Invocation};
use edudmactl::commands::Outcome;
use edudmactl::device::Device;
use edudmactl::error::Error;
use edudmactl::output::{Output, print_stderr};

/// Every allocation counted, so that `bench` can report allocations per
/// request (in the driver's code, and elsewhere).
#[global_allocator]
static ALLOCATOR: edudmactl::alloc_count::CountingAllocator =
    edudmactl::alloc_count::CountingAllocator;

/// The JSON printed on stdout when a command fails under `--json`.
#[derive(Serialize)]
struct ErrorReport<'a> {
    ok: bool,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'a str,
    message: String,
    exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// The script line that failed, for `script`.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
}

fn main() -> ExitCode {
    let Invocation {
        cli,
        sim_knobs_given,
    } = match Invocation::parse_from(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(error) => return usage_error(&error),
    };
    let output = Output::new(cli.target.json);
    if let Command::Help(args) = &cli.command {
        return match help(args.command.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => report_error(&error, &output),
        };
    }
    let result = edudmactl::backend::open(&cli, &sim_knobs_given).and_then(|backend| {
        let mut device = Device::new(backend);
        let outcome = edudmactl::commands::run(&cli.command, &mut device, &output)?;
        // End the session before printing: on the simulator this is the
        // removal and leak check, and its failure replaces the result.
        device.finish()?;
        Ok(outcome)
    });
    match result {
        Ok(outcome) => {
            if let Err(error) = output.flush() {
                // A reader that went away (`| head`) is not a failure of ours,
                // but the outcome (a mismatch, a device failure) still is.
                let reader_gone = matches!(&error, Error::Output { path: None, source }
                    if source.kind() == std::io::ErrorKind::BrokenPipe);
                if !reader_gone {
                    return report_error(&error, &output);
                }
            }
            match outcome {
                Outcome::Success => ExitCode::SUCCESS,
                Outcome::Mismatch(ref message) | Outcome::DeviceFailure(ref message) => {
                    print_stderr(&format!("edudmactl: {message}\n"));
                    ExitCode::from(outcome.exit_code())
                }
            }
        }
        Err(error) => report_error(&error, &output),
    }
}

/// `edudmactl help [COMMAND]`: the long help of the tool or of one command.
fn help(command: Option<&str>) -> Result<(), Error> {
    let mut cli = Cli::command();
    let text = match command {
        None => cli.render_long_help(),
        Some(name) => match cli.find_subcommand_mut(name) {
            Some(sub) => sub
                .clone()
                .bin_name(format!("edudmactl {name}"))
                .render_long_help(),
            None => {
                let names: Vec<String> = Cli::command()
                    .get_subcommands()
                    .map(|sub| sub.get_name().to_owned())
                    .collect();
                return Err(Error::Usage(format!(
                    "there is no command `{name}`: use one of {}",
                    names.join(", ")
                )));
            }
        },
    };
    // Styled for a terminal, plain for a pipe, as clap's own help is.
    let text = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        text.ansi().to_string()
    } else {
        text.to_string()
    };
    edudmactl::output::print_stdout(text.as_bytes())
}

/// A command line clap refused: help and version print and exit 0; a usage
/// error prints clap's message (exit 2), and with `--json` a JSON error too.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) || !std::env::args().any(|arg| arg == "--json")
    {
        // clap exits with 0 for help and version and 2 for usage errors.
        error.exit();
    }
    let message = error.to_string();
    let first_line = message
        .lines()
        .next()
        .unwrap_or("bad command line")
        .trim_start_matches("error: ");
    let report = ErrorReport {
        ok: false,
        error: ErrorBody {
            kind: "usage",
            message: format!("{first_line}; see `edudmactl --help`"),
            exit_code: edudmactl::error::EXIT_USAGE,
            status: None,
            line: None,
        },
    };
    if let Ok(json) = serde_json::to_string_pretty(&report) {
        let _ = edudmactl::output::print_stdout(format!("{json}\n").as_bytes());
    }
    print_stderr(&message);
    ExitCode::from(edudmactl::error::EXIT_USAGE)
}

/// Print an error (one line on stderr, and a JSON object with `--json`).
fn report_error(error: &Error, output: &Output) -> ExitCode {
    if output.is_json() {
        output.discard();
        let report = ErrorReport {
            ok: false,
            error: ErrorBody {
                kind: error.kind(),
                message: error.to_string(),
                exit_code: error.exit_code(),
                status: error.status().map(|status| status.to_string()),
                line: error.script_line(),
            },
        };
        // A script's objects are one per line; the failing line's too.
        let json = if error.script_line().is_some() {
            serde_json::to_string(&report)
        } else {
            serde_json::to_string_pretty(&report)
        };
        if let Ok(json) = json {
            // Nothing more can be done if stdout is gone.
            let _ = edudmactl::output::print_stdout(format!("{json}\n").as_bytes());
        }
    } else {
        // A text result printed before the failure is still worth showing.
        let _ = output.flush();
    }
    print_stderr(&format!("edudmactl: {error}\n"));
    ExitCode::from(error.exit_code())
}
