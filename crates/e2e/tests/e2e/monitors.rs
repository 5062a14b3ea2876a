//! Other monitors: QEMU with KVM and uhyve. They need KVM that can run hermit, so they are
//! `#[ignore]`d: `cargo xtask test` includes them where KVM can (`xtask::qemu::kvm_status`), and
//! otherwise says they were not run and why.

use e2e::{Instance, Mode};

use crate::http_front::{HTTP_FRONT_APPEND, http_front_suite};

#[test]
#[ignore = "needs KVM that can run hermit; `cargo xtask test` includes it where KVM can"]
fn uhyve_boots_to_ready() {
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
        .any(|line| line.contains(e2e::READY_LINE));
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "uhyve boot never logged {:?}", e2e::READY_LINE);
}

#[test]
#[ignore = "needs KVM that can run hermit; `cargo xtask test` includes it where KVM can"]
fn qemu_kvm_http_front() {
    let inst = Instance::start(Mode::Qemu, HTTP_FRONT_APPEND, &["--accel", "kvm"]);
    http_front_suite(&inst);
}
