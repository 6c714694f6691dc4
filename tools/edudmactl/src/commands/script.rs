//! `script`: several commands on one device — with `--sim`, one simulated
//! machine, so a `write` is there for the `read` after it.
//!
//! Each line is parsed with the command line's own grammar (clap), so a
//! script line is exactly what would follow `edudmactl` in a shell.

use std::io::Read;
use std::path::Path;

use super::Outcome;
use crate::cli::{Command, Invocation, ScriptArgs};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::output::Output;

/// The longest script read: far more than any hand-written list of commands,
/// and a bound for `script /dev/zero`.
const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// Run `script`.
pub fn run(device: &mut Device, args: &ScriptArgs, output: &Output) -> Result<Outcome> {
    let text = read_script(&args.file)?;
    let mut outcome = Outcome::Success;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let words = split_words(line).map_err(|problem| Error::Usage(problem).at_line(number))?;
        if words.is_empty() {
            continue;
        }
        let command = parse_line(&words).map_err(|error| error.at_line(number))?;
        output.set_script_line(Some(number));
        let result = super::run(&command, device, output);
        output.set_script_line(None);
        // What this line printed is out before the next line runs.
        output.flush()?;
        outcome = match result.map_err(|error| error.at_line(number))? {
            Outcome::Success => Outcome::Success,
            Outcome::Mismatch(message) => Outcome::Mismatch(format!("line {number}: {message}")),
            Outcome::DeviceFailure(message) => {
                Outcome::DeviceFailure(format!("line {number}: {message}"))
            }
        };
        if outcome != Outcome::Success {
            break;
        }
    }
    Ok(outcome)
}

/// The script's text: a file, or stdin for `-`.
fn read_script(path: &Path) -> Result<String> {
    let input_error = |source| Error::InputFile {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    let limit = MAX_SCRIPT_BYTES + 1;
    if path == Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|file| file.take(limit).read_to_end(&mut bytes))
    }
    .map_err(input_error)?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(Error::Usage(format!(
            "{} is longer than a script may be (1 MiB)",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|_| {
        Error::Usage(format!(
            "{} is not text (UTF-8): a script is commands, one per line",
            path.display()
        ))
    })
}

/// One line's command, parsed as `edudmactl WORDS…` would be; options of
/// the whole run (the backend, --json, the simulator's knobs) and commands
/// that do not run on the device are refused.
fn parse_line(words: &[String]) -> Result<Command> {
    let args = std::iter::once("edudmactl".to_owned()).chain(words.iter().cloned());
    let invocation = Invocation::parse_from(args).map_err(|error| {
        let message = error.to_string();
        let first = message
            .lines()
            .next()
            .unwrap_or("bad command")
            .trim_start_matches("error: ");
        Error::Usage(format!(
            "{first} (a line is a command as after `edudmactl`)"
        ))
    })?;
    let target = &invocation.cli.target;
    let mut run_wide: Vec<&str> = invocation.sim_knobs_given.clone();
    if target.sim {
        run_wide.push("--sim");
    }
    if target.device.is_some() {
        run_wide.push("--device");
    }
    if target.json {
        run_wide.push("--json");
    }
    if !run_wide.is_empty() {
        return Err(Error::Usage(format!(
            "{} belong{} on the script's command line, before `script`, not on a line",
            run_wide.join(", "),
            if run_wide.len() == 1 { "s" } else { "" }
        )));
    }
    match invocation.cli.command {
        Command::Script(_) => Err(Error::Usage(
            "a script cannot run another script: put its lines here".into(),
        )),
        Command::Help(_) => Err(Error::Usage(
            "help does not run on a device: run `edudmactl help` outside the script".into(),
        )),
        command => Ok(command),
    }
}

/// Split a line into words: blanks separate, '…' and "…" group, `#` at the
/// start of a word comments out the rest.
pub fn split_words(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' if word.is_none() => break,
            '\'' | '"' => {
                let quoted = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(end) if end == c => break,
                        Some(other) => quoted.push(other),
                        None => return Err(format!("the quote {c} is never closed")),
                    }
                }
            }
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_and_comments() {
        assert_eq!(
            split_words("write --file 'my dump.bin'  --offset 0x10 # later"),
            Ok(vec![
                "write".into(),
                "--file".into(),
                "my dump.bin".into(),
                "--offset".into(),
                "0x10".into()
            ])
        );
        assert_eq!(split_words("   # only a comment"), Ok(Vec::new()));
        assert_eq!(split_words(""), Ok(Vec::new()));
        assert_eq!(split_words("a\"b c\"d"), Ok(vec!["ab cd".to_string()]));
        assert_eq!(split_words("x ''"), Ok(vec!["x".into(), String::new()]));
        assert!(split_words("read --out 'open").is_err());
    }

    #[test]
    fn lines_are_commands_without_run_wide_options() {
        let words = |line: &str| split_words(line).unwrap();
        assert!(matches!(
            parse_line(&words("read --len 0x10")),
            Ok(Command::Read(_))
        ));
        for line in [
            "--seed 3 read --len 1",
            "read --len 1 --json",
            "--sim info",
            "script other.txt",
            "help",
            "fly",
        ] {
            let error = parse_line(&words(line)).unwrap_err();
            assert_eq!(
                error.exit_code(),
                crate::error::EXIT_USAGE,
                "{line}: {error}"
            );
        }
    }
}
