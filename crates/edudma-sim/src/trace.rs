//! A timeline of a simulated run in Chrome's trace-event JSON, which
//! Perfetto (ui.perfetto.dev) and `chrome://tracing` open: one lane per CPU
//! with the driver routine running there and its IRQL, a lane for the
//! device's DMA, one for the interrupt line, and each IRP's life from
//! dispatch to completion.
//!
//! Time is virtual. Routines take no virtual time unless they stall or
//! wait, so every record is also shifted by its sequence number in
//! nanoseconds: the order on screen is the order things happened, and a
//! routine that ran "instantly" still shows as a slice.

use std::fmt::Write as _;

use crate::sched::Nanos;

/// The lane of the device's DMA engine.
const DMA_LANE: u64 = 1000;
/// The lane of the interrupt line (deliveries, losses, spurious ones).
const INTERRUPT_LANE: u64 = 1001;
/// The lane IRPs hang from (their slices are asynchronous, one per IRP).
const IRP_LANE: u64 = 1002;

#[derive(Clone, Debug)]
enum Phase {
    Begin,
    End,
    Instant,
    AsyncBegin(u64),
    AsyncEnd(u64),
}

#[derive(Clone, Debug)]
struct Record {
    ts_ns: u64,
    lane: u64,
    phase: Phase,
    name: String,
    args: Vec<(&'static str, String)>,
}

/// The records of one run.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    records: Vec<Record>,
    /// What the next routine started on a CPU is (set by whoever starts it).
    pub(crate) next_routine: Option<String>,
}

impl Trace {
    fn push(&mut self, now: Nanos, lane: u64, phase: Phase, name: String) -> &mut Record {
        let ts_ns = now + self.records.len() as u64;
        self.records.push(Record {
            ts_ns,
            lane,
            phase,
            name,
            args: Vec::new(),
        });
        let last = self.records.len() - 1;
        &mut self.records[last]
    }

    /// A routine starts on `cpu` at `irql`.
    pub(crate) fn routine_begins(&mut self, now: Nanos, cpu: usize, name: &str, irql: &str) {
        self.push(now, cpu as u64, Phase::Begin, name.to_string())
            .args
            .push(("irql", irql.to_string()));
    }

    /// The routine on top of `cpu` returns or leaves the CPU to wait.
    pub(crate) fn routine_ends(&mut self, now: Nanos, cpu: usize, why: &str) {
        self.push(now, cpu as u64, Phase::End, String::new())
            .args
            .push(("ended", why.to_string()));
    }

    /// The device starts a DMA command.
    pub(crate) fn dma_begins(&mut self, now: Nanos, what: String) {
        self.push(now, DMA_LANE, Phase::Begin, what);
    }

    /// The device's DMA command lands.
    pub(crate) fn dma_ends(&mut self, now: Nanos) {
        self.push(now, DMA_LANE, Phase::End, String::new());
    }

    /// Something on the interrupt line.
    pub(crate) fn interrupt(&mut self, now: Nanos, what: &str) {
        self.push(now, INTERRUPT_LANE, Phase::Instant, what.to_string());
    }

    /// An IRP is sent to the driver.
    pub(crate) fn irp_sent(&mut self, now: Nanos, irp: u64, what: String) {
        self.push(now, IRP_LANE, Phase::AsyncBegin(irp), what);
    }

    /// An IRP is completed.
    pub(crate) fn irp_completed(
        &mut self,
        now: Nanos,
        irp: u64,
        status: String,
        information: usize,
    ) {
        let r = self.push(now, IRP_LANE, Phase::AsyncEnd(irp), String::new());
        r.args.push(("status", status));
        r.args.push(("information", information.to_string()));
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No record yet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The trace-event JSON of a machine with `cpus` processors.
    pub fn to_json(&self, cpus: usize) -> String {
        let mut out = String::from("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
        let mut lanes: Vec<(u64, String)> =
            (0..cpus as u64).map(|c| (c, format!("CPU {c}"))).collect();
        lanes.push((DMA_LANE, "edu DMA".into()));
        lanes.push((INTERRUPT_LANE, "interrupt line".into()));
        lanes.push((IRP_LANE, "IRPs".into()));
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push_str(",\n");
            }
            first = false;
        };
        for (i, (lane, name)) in lanes.iter().enumerate() {
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"ph\":\"M\",\"pid\":1,\"tid\":{lane},\"name\":\"thread_name\",\"args\":{{\"name\":{}}}}}",
                json_string(name)
            );
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"ph\":\"M\",\"pid\":1,\"tid\":{lane},\"name\":\"thread_sort_index\",\"args\":{{\"sort_index\":{i}}}}}"
            );
        }
        for r in &self.records {
            sep(&mut out);
            let (ph, id) = match r.phase {
                Phase::Begin => ("B", None),
                Phase::End => ("E", None),
                Phase::Instant => ("i", None),
                Phase::AsyncBegin(id) => ("b", Some(id)),
                Phase::AsyncEnd(id) => ("e", Some(id)),
            };
            let _ = write!(
                out,
                "{{\"ph\":\"{ph}\",\"pid\":1,\"tid\":{},\"ts\":{}.{:03}",
                r.lane,
                r.ts_ns / 1000,
                r.ts_ns % 1000
            );
            if !r.name.is_empty() {
                let _ = write!(out, ",\"name\":{}", json_string(&r.name));
            }
            if let Some(id) = id {
                let _ = write!(out, ",\"cat\":\"irp\",\"id\":{id}");
                if r.name.is_empty() {
                    out.push_str(",\"name\":\"IRP\"");
                }
            }
            if matches!(r.phase, Phase::Instant) {
                out.push_str(",\"s\":\"t\"");
            }
            if !r.args.is_empty() {
                out.push_str(",\"args\":{");
                for (i, (k, v)) in r.args.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{}:{}", json_string(k), json_string(v));
                }
                out.push('}');
            }
            out.push('}');
        }
        out.push_str("\n]}\n");
        out
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_trace_events_in_order() {
        let mut t = Trace::default();
        t.routine_begins(1000, 0, "StartIo", "Dispatch");
        t.dma_begins(1000, "DMA \"to RAM\"".into());
        t.routine_ends(1000, 0, "returned");
        t.interrupt(2000, "delivered");
        t.irp_sent(0, 7, "read".into());
        t.irp_completed(3000, 7, "STATUS_SUCCESS".into(), 4);
        let json = t.to_json(1);
        assert!(json.contains("\"tid\":0,\"ts\":1.000,\"name\":\"StartIo\""));
        assert!(json.contains("\"ph\":\"E\",\"pid\":1,\"tid\":0,\"ts\":1.002"));
        assert!(json.contains("\"name\":\"DMA \\\"to RAM\\\"\""));
        assert!(json.contains("\"ph\":\"e\",\"pid\":1,\"tid\":1002"));
        assert!(json.contains("\"args\":{\"name\":\"CPU 0\"}"));
        assert_eq!(json.matches("\"ph\":").count(), 6 + 2 * 4);
    }
}
