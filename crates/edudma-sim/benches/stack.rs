//! The whole simulated stack: 4095-byte requests through the driver of
//! `src/` on the simulated Windows (dispatch → StartIo → the DMA steps →
//! the edu device → ISR → DPC → completion), written and read back, one
//! request in flight and four. Wall-clock time per request of the
//! simulator; the device's own 100 ms per command pass in virtual time.
//!
//! `cargo bench -p edudma-sim --bench stack`. Benchmarks only: nothing here
//! asserts a time.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edudma_core::ioctl::{DmaHeader, IOCTL_EDUDMA_DMA_READ, IOCTL_EDUDMA_DMA_WRITE};
use edudma_sim::io::IrpId;
use edudma_sim::{IrpSpec, SimConfig, SimMachine};
use zerocopy::IntoBytes;

const LEN: u32 = 4095;

fn write_spec(byte: u8) -> IrpSpec {
    let header = DmaHeader {
        device_offset: 0,
        flags: 0,
    };
    IrpSpec::Control {
        code: IOCTL_EDUDMA_DMA_WRITE,
        input: header.as_bytes().to_vec(),
        output_length: LEN,
        data: vec![byte; LEN as usize],
    }
}

fn read_spec() -> IrpSpec {
    let header = DmaHeader {
        device_offset: 0,
        flags: 0,
    };
    IrpSpec::Control {
        code: IOCTL_EDUDMA_DMA_READ,
        input: header.as_bytes().to_vec(),
        output_length: LEN,
        data: Vec::new(),
    }
}

/// `rounds` writes each read back, `depth` requests in flight; every read
/// is checked against its write.
fn run(sim: &mut SimMachine, rounds: u32, depth: usize) {
    let mut in_flight = VecDeque::with_capacity(depth);
    let finish = |sim: &mut SimMachine, in_flight: &mut VecDeque<(IrpId, Option<u8>)>| {
        let (irp, read) = in_flight.pop_front().expect("a request in flight");
        let result = sim.wait(irp).expect("the machine runs");
        assert!(result.status.is_success(), "{:?}", result.status);
        if let Some(byte) = read {
            assert!(result.output.iter().all(|b| *b == byte), "read back wrong");
        }
    };
    for round in 0..rounds {
        let byte = round as u8;
        for (spec, read) in [(write_spec(byte), None), (read_spec(), Some(byte))] {
            let irp = sim.submit(spec).expect("submitted");
            in_flight.push_back((irp, read));
            if in_flight.len() == depth {
                finish(sim, &mut in_flight);
            }
        }
    }
    while !in_flight.is_empty() {
        finish(sim, &mut in_flight);
    }
}

fn stack_requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("stack");
    // Each iteration: 8 rounds, 16 requests.
    const ROUNDS: u32 = 8;
    group.throughput(Throughput::Elements(2 * u64::from(ROUNDS)));
    group.sample_size(20);
    for depth in [1usize, 4] {
        let mut sim = SimMachine::new(SimConfig::default()).expect("the device starts");
        group.bench_function(format!("4095-byte write+read, queue depth {depth}"), |b| {
            b.iter(|| run(black_box(&mut sim), ROUNDS, depth))
        });
        sim.finish().expect("no leak");
    }
    group.finish();
}

criterion_group!(benches, stack_requests);
criterion_main!(benches);
