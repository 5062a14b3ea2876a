//! Both entries of our loader boot the image and serve, on q35 and microvm: PVH (the ELF note
//! `XEN_ELFNOTE_PHYS32_ENTRY` that QEMU, Firecracker and Cloud Hypervisor take; `--entry pvh`)
//! and multiboot (`--entry multiboot`). The loader says on the serial console which one it was
//! entered through.

use e2e::{Instance, Mode};

use crate::call;

/// Boots with `cargo xtask run --machine MACHINE --entry ENTRY`, then checks `/healthz`, a
/// function's answer, and that the loader was entered through `entered` ("PVH", "multiboot").
fn serves_through(machine: &str, entry: &str, entered: &str) {
    let server = Instance::start(
        Mode::Qemu,
        "log=info",
        &["--machine", machine, "--entry", entry],
    );
    let health = call(server.port, "GET", "/healthz", b"");
    assert_eq!(health.status, 200, "{}", health.text());
    let answer = call(server.port, "GET", "/exec/answer", b"");
    assert_eq!((answer.status, answer.text().trim()), (200, "42"));
    let output = server.output();
    let line = format!("loader: entered through {entered}");
    assert!(output.contains(&line), "no {line:?} in:\n{output}");
}

#[test]
fn pvh_entry_on_q35_serves() {
    serves_through("q35", "pvh", "PVH");
}

#[test]
fn pvh_entry_on_microvm_serves() {
    serves_through("microvm", "pvh", "PVH");
}

#[test]
fn multiboot_entry_on_q35_serves() {
    serves_through("q35", "multiboot", "multiboot");
}

#[test]
fn multiboot_entry_on_microvm_serves() {
    serves_through("microvm", "multiboot", "multiboot");
}
