//! The command line: global options, the simulator's knobs and the commands.
//!
//! Everything here is declarative (clap derive); the commands themselves live
//! in [`crate::commands`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::numbers::parse_u32;
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
  edudmactl --sim --map-registers 1 --scatter-gather off loopback --iterations 20
  edudmactl --sim --dma-strategy v1-packet loopback --iterations 20
  edudmactl --sim --dma-strategy sg-list --map-registers 1 loopback --iterations 20
  edudmactl --sim --dma-strategy common-buffer loopback --iterations 20
  edudmactl --sim --no-dma-v3 info             the fallback when version 3 is missing
  edudmactl --sim --alloc async --cpus 4 --seed 7 bench --len 4095
  edudmactl stats --reset

Numbers take decimal or 0x-prefixed hex (--offset 0x100).

Exit codes:
  0  success
  1  device or driver error (no device, access denied, the driver failed a request,
     the simulator stopped the driver on a rule violation)
  2  usage error (a bad or missing argument, a range outside the device window)
  3  data mismatch (bytes read back differ from the bytes written)";

/// `edudmactl`: the parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "edudmactl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    after_help = "Run `edudmactl --help` for examples and exit codes.",
    propagate_version = true
)]
pub struct Cli {
    /// Which device to talk to.
    #[command(flatten)]
    pub target: Target,

    /// Simulator settings, used with --sim.
    #[command(flatten)]
    pub sim: SimOptions,

    /// Print one JSON object on stdout instead of text (errors too).
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The backend selection: a device path or the simulator.
#[derive(Debug, Args)]
pub struct Target {
    /// Open this device interface path (default: the first present interface of the driver).
    #[arg(long, value_name = "PATH", global = true, conflicts_with = "sim")]
    pub device: Option<String>,

    /// Run the whole driver in-process on the simulator instead of a real device.
    #[arg(long, global = true)]
    pub sim: bool,
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
    /// Synchronous first, asynchronous on STATUS_INSUFFICIENT_RESOURCES (the default).
    Sync,
    /// Asynchronous only: the execution routine always runs later.
    Async,
}

/// `--dma-strategy`: the driver's `DmaStrategy` registry value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyName {
    /// The ten version-3 steps (the default).
    #[value(name = "v3-packet")]
    V3Packet,
    /// The version-1 packet-based sequence.
    #[value(name = "v1-packet")]
    V1Packet,
    /// Scatter/gather lists (BuildScatterGatherList, PutScatterGatherList).
    #[value(name = "sg-list")]
    SgList,
    /// One page of common buffer, the bytes copied through it.
    #[value(name = "common-buffer")]
    CommonBuffer,
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

/// The simulator's knobs (ignored without `--sim`, which the tool reports as a usage error).
#[derive(Debug, Args)]
#[command(next_help_heading = "Simulator (with --sim)")]
pub struct SimOptions {
    /// Seed of the run: the same seed replays the same schedule.
    #[arg(long, value_name = "N", global = true)]
    pub seed: Option<u64>,

    /// Guest physical memory in MiB.
    #[arg(long, value_name = "MIB", global = true)]
    pub memory_mib: Option<u32>,

    /// Map registers IoGetDmaAdapter grants.
    #[arg(long, value_name = "N", global = true)]
    pub map_registers: Option<u32>,

    /// Whether the adapter does scatter/gather.
    #[arg(long, value_name = "on|off", global = true)]
    pub scatter_gather: Option<OnOff>,

    /// How the driver allocates the adapter channel.
    #[arg(long, value_name = "sync|async", global = true)]
    pub alloc: Option<AllocMode>,

    /// The DMA strategy the driver is configured with (its DmaStrategy registry value).
    #[arg(long, value_name = "STRATEGY", global = true)]
    pub dma_strategy: Option<StrategyName>,

    /// A HAL without DMA version 3 (IoGetDmaAdapter returns NULL for it): the driver falls back.
    #[arg(long, global = true)]
    pub no_dma_v3: bool,

    /// Number of simulated CPUs (the DPC may run on any of them).
    #[arg(long, value_name = "N", global = true)]
    pub cpus: Option<u32>,

    /// Address bits the device can reach (edu clamps to 28).
    #[arg(long, value_name = "BITS", global = true)]
    pub dma_mask_bits: Option<u32>,

    /// Use a message-signalled interrupt instead of a line-based one.
    #[arg(long, global = true)]
    pub msi: bool,

    /// Bytes of the device buffer the driver uses.
    #[arg(long, value_name = "4095|4096", global = true)]
    pub window: Option<WindowSize>,

    /// Testing only: corrupt one byte of the N-th DMA transfer (1-based).
    #[arg(long, value_name = "N", global = true, hide = true)]
    pub inject_corruption: Option<u64>,
}

impl SimOptions {
    /// The names of the knobs that were given, for the "needs --sim" usage error.
    pub fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let mut note = |set: bool, name| {
            if set {
                given.push(name);
            }
        };
        note(self.seed.is_some(), "--seed");
        note(self.memory_mib.is_some(), "--memory-mib");
        note(self.map_registers.is_some(), "--map-registers");
        note(self.scatter_gather.is_some(), "--scatter-gather");
        note(self.alloc.is_some(), "--alloc");
        note(self.dma_strategy.is_some(), "--dma-strategy");
        note(self.no_dma_v3, "--no-dma-v3");
        note(self.cpus.is_some(), "--cpus");
        note(self.dma_mask_bits.is_some(), "--dma-mask-bits");
        note(self.msi, "--msi");
        note(self.window.is_some(), "--window");
        note(self.inject_corruption.is_some(), "--inject-corruption");
        given
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
    /// `selftest --json` and `bench` report the counters of their own runs.
    Stats(StatsArgs),

    /// Measure DMA throughput (and, on the simulator, virtual time and DMA calls per request).
    Bench(BenchArgs),
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

    /// Write the contents of this file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pattern", "len"])]
    pub file: Option<PathBuf>,

    /// Write a generated pattern (needs --len).
    #[arg(long, value_name = "NAME", requires = "len")]
    pub pattern: Option<Pattern>,

    /// Bytes of pattern to write.
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    pub len: Option<u32>,

    /// Seed of the `random` pattern.
    #[arg(long, value_name = "N", default_value_t = 1)]
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

    /// Write the raw bytes to this file instead of stdout.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
