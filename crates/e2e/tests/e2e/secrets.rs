//! Secrets stay out of the serial console, which ends up in log files: the loader's and the
//! kernel's command-line lines redact them, and the kernel's boot log has no device-tree dump.

use e2e::{Instance, Mode};

/// The image booted with an admin token and a Redis password prints neither, as text or as the
/// list of bytes a device-tree dump shows.
#[test]
fn serial_console_shows_no_secrets() {
    let token = "e2e-SeCrEt-token-4711";
    let password = "e2e-PaSsWoRd-0815";
    // Nothing listens on port 1: key-value calls fail, the boot does not.
    let append = format!("log=info admin-token={token} kv=redis://user:{password}@10.0.2.2:1/0");
    let instance = Instance::start(Mode::Qemu, &append, &[]);
    let output = instance.output();
    instance.stop();
    assert!(output.contains("loader: command line:"), "{output}");
    assert!(
        output.matches("admin-token=<redacted>").count() >= 2,
        "the loader's and the kernel's lines: {output}"
    );
    assert!(
        output.contains("redis://<redacted>@10.0.2.2:1/0"),
        "{output}"
    );
    for secret in [token, password] {
        let as_bytes: Vec<String> = secret.bytes().map(|b| b.to_string()).collect();
        assert!(!output.contains(secret), "{secret} in:\n{output}");
        assert!(
            !output.contains(&as_bytes.join(", ")),
            "{secret} as bytes in:\n{output}"
        );
    }
}
