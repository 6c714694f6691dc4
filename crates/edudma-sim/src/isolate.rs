//! One process per test where a test may abort.
//!
//! Driver code is `extern "C"`: a panic inside it cannot unwind and aborts
//! the whole process, and a bug check parks the simulated CPUs rather than
//! unwinding through the driver. A test that may end that way runs its body
//! in a child process of the test binary, so an abort fails that test only.

use std::process::{Command, Output};

/// Environment variable that tells a test it is the child of
/// [`run_in_child`] and must run its body.
pub const CHILD_ENV: &str = "EDUDMA_SIM_ISOLATED_CHILD";

/// True inside the child process [`run_in_child`] started.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// How the child ended.
#[derive(Debug)]
pub struct ChildEnd {
    /// The child's exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// The signal that ended it (an abort is `SIGABRT`, 6), on Unix.
    pub signal: Option<i32>,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl ChildEnd {
    /// True when the child aborted (`SIGABRT`, or `abort`'s exit code on
    /// platforms without signals).
    pub fn aborted(&self) -> bool {
        self.signal == Some(6) || self.code == Some(134)
    }
}

/// Run the test `name` of the current test binary alone, in a child
/// process, with [`CHILD_ENV`] set; the test checks [`is_child`] and runs
/// its body only there. `Err` when the child could not be started.
pub fn run_in_child(name: &str) -> std::io::Result<ChildEnd> {
    let exe = std::env::current_exe()?;
    let out: Output = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()?;
    #[cfg(unix)]
    let signal = std::os::unix::process::ExitStatusExt::signal(&out.status);
    #[cfg(not(unix))]
    let signal = None;
    Ok(ChildEnd {
        code: out.status.code(),
        signal,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
