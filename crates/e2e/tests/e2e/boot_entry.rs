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

/// A damaged compressed module (`kernel-app.lz4` cut in half; a header naming a length of 0):
/// the loader says what is wrong and QEMU exits, instead of loading whatever came out.
#[test]
fn loader_refuses_a_damaged_compressed_module() {
    let module = e2e::target_dir().join("image/kernel-app.lz4");
    let bytes =
        std::fs::read(&module).expect("target/image/kernel-app.lz4 (cargo xtask test builds it)");
    let mut zero_length = bytes.clone();
    zero_length[4..12].copy_from_slice(&0u64.to_le_bytes());
    let cases = [
        (
            "cut",
            bytes[..bytes.len() / 2].to_vec(),
            "loader: error: the compressed boot module is corrupt",
        ),
        (
            "zero-length",
            zero_length,
            "loader: error: the compressed boot module's header names a length",
        ),
    ];
    for (name, damaged, message) in cases {
        let file =
            std::env::temp_dir().join(format!("e2e-{name}-{}-kernel-app.lz4", std::process::id()));
        std::fs::write(&file, damaged).expect("write the damaged module");
        let file_arg = file.to_string_lossy().into_owned();
        let mut boot = Instance::launch(0, &["boot", "--no-build", "--app", &file_arg]);
        let status = boot.wait_exit(std::time::Duration::from_secs(60));
        let output = boot.output();
        let _ = std::fs::remove_file(&file);
        assert!(status.is_some(), "{name}: QEMU did not exit:\n{output}");
        assert!(
            output.contains(message),
            "{name}: no {message:?} in:\n{output}"
        );
        assert!(
            !output.contains("Welcome to Hermit"),
            "{name}: the kernel started:\n{output}"
        );
    }
}
