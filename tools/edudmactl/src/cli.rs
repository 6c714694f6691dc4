//! The command line: global options, the simulator's knobs and the commands.
//!
//! Everything here is declarative (clap derive); the commands themselves live
//! in [`crate::commands`].

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::numbers::{parse_count_u64, parse_u32, parse_u64, u32_in};
use crate::patterns::Pattern;

const ABOUT: &str =
    "Drive the edudma DMA driver: on Windows through its device, anywhere with --sim";

const LONG_ABOUT: &str = "\
edudmactl talks to the edudma driver for QEMU's edu PCI device through the same
IOCTL contract on two backends:

  * a Windows device: the driver's device interface (GUID_DEVINTERFACE_EDUDMA;
    the device has no other name), or any interface path given with --device;
  * --sim: the whole driver run in-process on edudma-sim, a strict model of the
    HAL's DMA version 3, Driver Verifier, the I/O manager and the edu device,
    with virtual time (the device moves 4096 bytes per 100 ms) and a seed that
    reproduces a run exactly. It works on any OS, no VM or driver needed.";

const AFTER_LONG_HELP: &str = "\
Examples:
  edudmactl --sim selftest                     full self-test on the simulator
  edudmactl --sim --json info                  device and DMA adapter facts, as JSON
  edudmactl selftest                           the same against the installed driver
  edudmactl write --offset 0 --pattern counter --len 4095
  edudmactl read --offset 0 --len 64           hex dump on a terminal
  edudmactl read --offset 0 --len 4095 --out dump.bin
  edudmactl --sim script steps.txt             several commands on ONE simulated machine
  edudmactl --sim --map-registers 1 --scatter-gather off loopback --iterations 20
  edudmactl --sim --dma-strategy v1-packet loopback --iterations 20
  edudmactl --sim --dma-strategy sg-list --map-registers 1 loopback --iterations 20
  edudmactl --sim --dma-strategy common-buffer loopback --iterations 20
  edudmactl --sim --no-dma-v3 info             the fallback when version 3 is missing
  edudmactl --sim --dma-mask-bits 25 selftest  a device that reaches only 32 MiB
  edudmactl --sim --alloc async --cpus 4 --seed 7 bench --len 4095
  edudmactl stats --reset

Each --sim run boots a fresh simulated machine and removes it at the end:
`edudmactl --sim write ...` then `edudmactl --sim read ...` reads a new device,
not the bytes written. To see one machine across commands, put them in a file
(one command per line, `#` starts a comment) and run `edudmactl --sim script FILE`.

Numbers take decimal or 0x-prefixed hex (--offset 0x100, --seed 0x2A).
`--file -` reads stdin, `--out -` writes stdout, `script -` reads stdin.

Exit codes:
  0  success
  1  device or driver error (no device, access denied, the driver or the system failed
     a request, the simulator stopped the driver on a rule violation, stdout failed)
  2  usage error (a bad or missing argument, a range outside the device window, a
     --file, --out or script file that cannot be read or written)
  3  data mismatch (bytes read back differ from the bytes written)
A script stops at its first failing line with that command's exit code.";

/// `edudmactl`: the parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "edudmactl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    after_help = "Run `edudmactl --help` for examples and exit codes.",
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Which device to talk to, and how to print.
    #[command(flatten)]
    pub target: Target,

    /// Simulator settings, used with --sim.
    #[command(flatten)]
    pub sim: SimOptions,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The heading of the options every command takes.
const GLOBAL: &str = "Global options";
/// The heading of the simulator's knobs.
const SIMULATOR: &str = "Simulator (with --sim; each run boots a fresh machine)";

/// The backend selection (a device path or the simulator) and the output format.
#[derive(Debug, Args)]
pub struct Target {
    /// Open this device interface path (default: the first present interface of the driver).
    #[arg(long, value_name = "PATH", global = true, conflicts_with = "sim", help_heading = GLOBAL)]
    pub device: Option<String>,

    /// Run the whole driver in-process on the simulator instead of a real device.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub sim: bool,

    /// Print one JSON object on stdout instead of text (errors too; a script: one per line).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
}

/// `--scatter-gather on|off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl OnOff {
    /// True for `on`.
    pub fn is_on(self) -> bool {
        self == OnOff::On
    }
}

/// `--alloc sync|async`: how the driver allocates the adapter channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AllocMode {
    /// The default: synchronous when the transfer needs no map registers, else (and after
    /// a refusal) asynchronous at once, so each request makes one AllocateAdapterChannelEx.
    Sync,
    /// Asynchronous only: the execution routine always runs later.
    Async,
}

/// `--dma-strategy`: the driver's `DmaStrategy` registry value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyName {
    /// The ten version-3 steps.
    #[value(name = "v3-packet")]
    V3Packet,
    /// The version-1 packet-based sequence.
    #[value(name = "v1-packet")]
    V1Packet,
    /// Scatter/gather lists (BuildScatterGatherList, PutScatterGatherList).
    #[value(name = "sg-list")]
    SgList,
    /// One page of common buffer, the bytes copied through it (the INF's default).
    #[value(name = "common-buffer")]
    CommonBuffer,
}

/// `--placement`: where the physical pages of user buffers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlacementName {
    /// Any frame (most land above 256 MiB on a machine of more than 256 MiB).
    Any,
    /// Only frames below 256 MiB: nothing to bounce.
    Low,
    /// Only frames at or above 256 MiB: every page bounced.
    High,
    /// Even pages low, odd pages high.
    Mixed,
}

/// `--window 4095|4096`: how much of the device's 4096-byte buffer the driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WindowSize {
    /// 4095 bytes: safe with QEMU before 8.2.1, whose range check is off by one.
    #[value(name = "4095")]
    W4095,
    /// 4096 bytes: the whole buffer, for QEMU 8.2.1 and later.
    #[value(name = "4096")]
    W4096,
}

impl WindowSize {
    /// The window in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            WindowSize::W4095 => 4095,
            WindowSize::W4096 => 4096,
        }
    }
}

/// The simulator's knobs (refused without `--sim`). The defaults are
/// `edudma_sim::SimConfig::default()`'s (a unit test holds them equal).
#[derive(Debug, Args)]
pub struct SimOptions {
    /// Seed of the run: the same seed replays the same schedule.
    #[arg(long, value_name = "N", global = true, help_heading = SIMULATOR,
          value_parser = parse_u64, default_value = "0")]
    pub seed: u64,

    /// Guest physical memory in MiB, 512 to 65536.
    #[arg(long, value_name = "MIB", global = true, help_heading = SIMULATOR,
          value_parser = u32_in(512, 65536), default_value = "4096")]
    pub memory_mib: u32,

    /// The most map registers the HAL grants an adapter, 1 to 4096 (the driver asks for 2,
    /// enough for its 4096-byte maximum transfer, and gets the smaller number).
    #[arg(long, value_name = "N", global = true, help_heading = SIMULATOR,
          value_parser = u32_in(1, 4096), default_value = "16")]
    pub map_registers: u32,

    /// Whether the platform gives the adapter scatter/gather.
    #[arg(long, value_name = "on|off", global = true, help_heading = SIMULATOR,
          default_value = "on")]
    pub scatter_gather: OnOff,

    /// How the driver allocates the adapter channel.
    #[arg(long, value_name = "sync|async", global = true, help_heading = SIMULATOR,
          default_value = "sync")]
    pub alloc: AllocMode,

    /// The DMA strategy the driver is configured with (its DmaStrategy registry value;
    /// common-buffer is what the INF installs).
    #[arg(long, value_name = "STRATEGY", global = true, help_heading = SIMULATOR,
          default_value = "common-buffer")]
    pub dma_strategy: StrategyName,

    /// A HAL without DMA version 3 (IoGetDmaAdapter returns NULL for it): the driver falls back.
    #[arg(long, global = true, help_heading = SIMULATOR)]
    pub no_dma_v3: bool,

    /// Number of simulated CPUs, 1 to 64 (the DPC may run on any of them).
    #[arg(long, value_name = "N", global = true, help_heading = SIMULATOR,
          value_parser = u32_in(1, 64), default_value = "2")]
    pub cpus: u32,

    /// The edu device's dma_mask width, 24 to 64 bits: it masks every DMA address to it
    /// (QEMU's default is 28). The driver describes min(BITS, 28) bits to the HAL, below 28
    /// through its DmaAddressWidth registry value, and the HAL bounces every page above.
    #[arg(long, value_name = "BITS", global = true, help_heading = SIMULATOR,
          value_parser = u32_in(24, 64), default_value = "28")]
    pub dma_mask_bits: u32,

    /// Use a message-signalled interrupt instead of a line-based one.
    #[arg(long, global = true, help_heading = SIMULATOR)]
    pub msi: bool,

    /// Bytes of the device buffer the driver uses (4096 also models QEMU 8.2.1 or newer).
    #[arg(long, value_name = "4095|4096", global = true, help_heading = SIMULATOR,
          default_value = "4095")]
    pub window: WindowSize,

    /// Write the run's timeline to FILE in Chrome's trace-event JSON (open it at
    /// ui.perfetto.dev or chrome://tracing): a lane per CPU with each driver routine and
    /// its IRQL, the device's DMA, the interrupt line, and every IRP from dispatch to
    /// completion. Written when the run ends, also when it fails.
    #[arg(long, value_name = "FILE", global = true, help_heading = SIMULATOR)]
    pub trace: Option<std::path::PathBuf>,

    /// Percent of channel allocations, 0 to 100, that find the map registers held by
    /// another device (then freed 0.2 to 30 ms later): the HAL's contention.
    #[arg(long, value_name = "PERCENT", global = true, help_heading = SIMULATOR,
          value_parser = u32_in(0, 100), default_value = "10")]
    pub contention_percent: u32,

    /// Where the physical pages of user buffers come from.
    #[arg(long, value_name = "WHERE", global = true, help_heading = SIMULATOR,
          default_value = "any")]
    pub placement: PlacementName,

    /// Testing only: corrupt one byte of the N-th DMA transfer (1-based).
    #[arg(long, value_name = "N", global = true, hide = true, value_parser = parse_count_u64)]
    pub inject_corruption: Option<u64>,
}

/// The simulator's knobs by clap id, with their flags, for the "needs --sim" error.
const SIM_KNOBS: [(&str, &str); 15] = [
    ("seed", "--seed"),
    ("memory_mib", "--memory-mib"),
    ("map_registers", "--map-registers"),
    ("scatter_gather", "--scatter-gather"),
    ("alloc", "--alloc"),
    ("dma_strategy", "--dma-strategy"),
    ("no_dma_v3", "--no-dma-v3"),
    ("cpus", "--cpus"),
    ("dma_mask_bits", "--dma-mask-bits"),
    ("msi", "--msi"),
    ("window", "--window"),
    ("inject_corruption", "--inject-corruption"),
    ("trace", "--trace"),
    ("contention_percent", "--contention-percent"),
    ("placement", "--placement"),
];

/// A parsed command line, with which simulator knobs it set (defaults aside).
#[derive(Debug)]
pub struct Invocation {
    /// The arguments.
    pub cli: Cli,
    /// The flags of the simulator knobs given on the command line.
    pub sim_knobs_given: Vec<&'static str>,
}

impl Invocation {
    /// Parse `args` (the program name first).
    pub fn parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        // A global given after the command is recorded in its matches.
        let mut levels = vec![&matches];
        while let Some((_, sub)) = levels[levels.len() - 1].subcommand() {
            levels.push(sub);
        }
        let sim_knobs_given = SIM_KNOBS
            .iter()
            .filter(|(id, _)| {
                levels
                    .iter()
                    .any(|m| m.value_source(id) == Some(ValueSource::CommandLine))
            })
            .map(|&(_, flag)| flag)
            .collect();
        Ok(Self {
            cli,
            sim_knobs_given,
        })
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the device and its DMA adapter: contract, driver and DMA interface version, window.
    Info,

    /// Check the device end to end: registers, factorial, interrupt, then DMA round trips.
    ///
    /// Runs the driver's self-test (IOCTL_EDUDMA_SELFTEST: identification, liveness,
    /// polled and interrupt-driven factorial, a raised interrupt), then writes and reads
    /// back buffers of several lengths at several offsets, through the DMA IOCTLs and
    /// through ReadFile/WriteFile, comparing every byte. Exits 3 on any mismatch.
    Selftest(SelftestArgs),

    /// DMA bytes into the device buffer at an offset, from a file or a pattern.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["file", "pattern"])))]
    Write(WriteArgs),

    /// DMA bytes out of the device buffer: a hex dump on a terminal, raw bytes otherwise.
    Read(ReadArgs),

    /// Write a pattern, read it back and compare, several times. Exits 3 on a mismatch.
    Loopback(LoopbackArgs),

    /// Show the driver's counters (requests, bytes, HAL DMA calls, interrupts, errors).
    ///
    /// With --sim every run boots a new machine, so the counters start at zero;
    /// `selftest --json` and `bench` report the counters of their own runs, and
    /// `stats` as a line of a `script` those of the lines before it.
    Stats(StatsArgs),

    /// Measure DMA throughput (and, on the simulator, virtual time and DMA calls per request),
    /// checking every byte read back. Exits 3 on a mismatch.
    Bench(BenchArgs),

    /// Run commands from a file on ONE device (with --sim: one simulated machine).
    ///
    /// One command per line, written as on the command line without `edudmactl`
    /// (`write --offset 0 --pattern counter --len 16`); `#` starts a comment, blank
    /// lines are skipped, words may be quoted ('…' or "…"). Global options and the
    /// simulator's knobs belong on the script's own command line, not on its lines.
    /// The script stops at the first failing line, naming it, with that command's
    /// exit code; with --json each command prints one JSON object on one line.
    Script(ScriptArgs),

    /// Print the help of edudmactl, or of one command.
    Help(HelpArgs),
}

/// `script` options.
#[derive(Debug, Args)]
pub struct ScriptArgs {
    /// The script (`-`: stdin).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `help` options.
#[derive(Debug, Args)]
pub struct HelpArgs {
    /// The command to explain (default: edudmactl itself).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// `selftest` options.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Only run the driver's register/interrupt self-test, no DMA round trips.
    #[arg(long)]
    pub no_dma: bool,
}

/// `write` options.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Device offset to write at.
    #[arg(long, value_name = "N", value_parser = parse_u32, default_value = "0")]
    pub offset: u32,

    /// Write the contents of this file (`-`: stdin); it must fit in the window.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pattern", "len"])]
    pub file: Option<PathBuf>,

    /// Write a generated pattern (needs --len).
    #[arg(long, value_name = "NAME", requires = "len")]
    pub pattern: Option<Pattern>,

    /// Bytes of pattern to write.
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    pub len: Option<u32>,

    /// Seed of the `random` pattern.
    #[arg(long, value_name = "N", value_parser = parse_u64, default_value = "1")]
    pub pattern_seed: u64,

    /// Testing only: send the range to the driver unchecked, to see its own validation.
    #[arg(long, hide = true)]
    pub no_range_check: bool,
}

/// `read` options.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Device offset to read from.
    #[arg(long, value_name = "N", value_parser = parse_u32, default_value = "0")]
    pub offset: u32,

    /// Bytes to read.
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    pub len: u32,

    /// Write the raw bytes to this file (`-`: stdout, raw even on a terminal).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Testing only: send the range to the driver unchecked, to see its own validation.
    #[arg(long, hide = true)]
    pub no_range_check: bool,
}

/// `loopback` options.
#[derive(Debug, Args)]
pub struct LoopbackArgs {
    /// Bytes per round trip (default: the whole window).
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    pub len: Option<u32>,

    /// Device offset of each round trip.
    #[arg(long, value_name = "N", value_parser = parse_u32, default_value = "0")]
    pub offset: u32,

    /// Round trips to run.
    #[arg(long, value_name = "K", value_parser = parse_u32, default_value = "10")]
    pub iterations: u32,

    /// Pattern to write (each iteration uses a different seed for `random`).
    #[arg(long, value_name = "NAME", default_value = "random")]
    pub pattern: Pattern,
}

/// `stats` options.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Zero the counters after showing them.
    #[arg(long)]
    pub reset: bool,
}

/// `bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Bytes per request (default: the whole window).
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    pub len: Option<u32>,

    /// Requests of each direction.
    #[arg(long, value_name = "K", value_parser = parse_u32, default_value = "10")]
    pub iterations: u32,

    /// Requests kept in flight at once (1 to 64): each write is still read back
    /// and checked, but the next requests are already queued behind it
    /// (overlapped I/O on Windows, concurrent IRPs on the simulator).
    #[arg(long, value_name = "N", value_parser = parse_u32, default_value = "1")]
    pub queue_depth: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn knobs_given_are_told_from_defaults() {
        let plain = Invocation::parse_from(["edudmactl", "info"]).unwrap();
        assert!(plain.sim_knobs_given.is_empty());
        let given = Invocation::parse_from([
            "edudmactl",
            "--seed",
            "0x2A",
            "info",
            "--msi",
            "--cpus",
            "0x4",
        ])
        .unwrap();
        assert_eq!(given.sim_knobs_given, ["--seed", "--cpus", "--msi"]);
        assert_eq!(given.cli.sim.seed, 42);
        assert_eq!(given.cli.sim.cpus, 4);
        // Given as its default value, a knob still counts as given.
        let default_given = Invocation::parse_from(["edudmactl", "--cpus", "2", "info"]).unwrap();
        assert_eq!(default_given.sim_knobs_given, ["--cpus"]);
    }
}
