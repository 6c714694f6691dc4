//! The timeline (`SimConfig::trace`): Chrome trace-event JSON with a lane
//! per CPU, the device's DMA, the interrupt line and every IRP.

use edudma_sim::{IrpSpec, SimConfig, SimMachine};

#[test]
fn a_traced_run_shows_routines_per_cpu_the_dma_the_interrupts_and_each_irp() {
    let mut sim = SimMachine::new(SimConfig {
        seed: 11,
        cpus: 3,
        trace: true,
        ..SimConfig::default()
    })
    .unwrap();
    let a = sim
        .submit(IrpSpec::Write {
            offset: 0,
            data: vec![7; 300],
        })
        .unwrap();
    let b = sim
        .submit(IrpSpec::Read {
            offset: 0,
            length: 300,
        })
        .unwrap();
    sim.wait(a).unwrap();
    sim.wait(b).unwrap();
    let json = sim.trace_json().expect("traced");
    for lane in [
        "CPU 0",
        "CPU 1",
        "CPU 2",
        "edu DMA",
        "interrupt line",
        "IRPs",
    ] {
        assert!(json.contains(&format!("{{\"name\":\"{lane}\"}}")), "{lane}");
    }
    for routine in [
        "DriverEntry, AddDevice",
        "PnP StartDevice",
        "StartIo (IRP ",
        "ISR",
        "DpcForIsr",
    ] {
        assert!(json.contains(routine), "{routine}");
    }
    assert!(json.contains("\"name\":\"DMA 300 B to the device\""));
    assert!(json.contains("\"name\":\"DMA 300 B to RAM\""));
    assert!(json.contains("\"name\":\"delivered\""));
    for irp in [a, b] {
        let id = format!("\"cat\":\"irp\",\"id\":{}", irp.0);
        assert_eq!(
            json.matches(&id).count(),
            2,
            "IRP {} sent and completed",
            irp.0
        );
    }
    assert!(json.contains("\"status\":\"STATUS_SUCCESS (0x00000000)\""));
    // Every slice that begins on a lane ends on it.
    let begins = json.matches("\"ph\":\"B\"").count();
    assert!(begins > 10);
    assert_eq!(begins, json.matches("\"ph\":\"E\"").count());
    sim.finish().unwrap();
}

#[test]
fn an_untraced_run_records_nothing() {
    let mut sim = SimMachine::new(SimConfig::default()).unwrap();
    sim.write(0, b"x").unwrap();
    assert_eq!(sim.trace_json(), None);
}
