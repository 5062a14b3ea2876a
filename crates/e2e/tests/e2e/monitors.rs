//! Other monitors: QEMU with KVM and uhyve, skipped with the reason where KVM cannot run hermit.

use e2e::{Instance, Mode};

use crate::http_front::{HTTP_FRONT_APPEND, http_front_suite};

/// Whether KVM can run the hermit kernel here (the same check `cargo xtask` uses: `/dev/kvm`
/// usable, not the nested kvm-pvm on which the kernel dies, vmx/svm present).
fn kvm_unusable_reason() -> Option<String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm does not exist".into());
    }
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        return Some(
            "KVM here is kvm-pvm (nested, paravirtualized); the hermit kernel dies under it".into(),
        );
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !cpuinfo.split_whitespace().any(|f| f == "vmx" || f == "svm") {
        return Some("the CPU exposes neither vmx nor svm".into());
    }
    None
}

#[test]
fn uhyve_boots_to_ready() {
    if let Some(reason) = kvm_unusable_reason() {
        eprintln!("SKIPPED uhyve_boots_to_ready: {reason}");
        return;
    }
    let mut child = std::process::Command::new(std::env::var_os("XTASK_BIN").expect("XTASK_BIN"))
        .args(["run", "--no-build", "--uhyve", "--append", "log=info"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start uhyve");
    let stdout = child.stdout.take().expect("stdout");
    let pid = child.id() as i32;
    // A hung boot must not hang the suite: stop it after a minute.
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    });
    let ready = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .take(2000)
        .any(|line| line.contains("ready"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "uhyve boot printed no ready line");
}

#[test]
fn qemu_kvm_http_front() {
    if let Some(reason) = kvm_unusable_reason() {
        eprintln!("SKIPPED qemu_kvm_http_front: {reason}");
        return;
    }
    let inst = Instance::start(Mode::Qemu, HTTP_FRONT_APPEND, &["--accel", "kvm"]);
    http_front_suite(&inst);
}
