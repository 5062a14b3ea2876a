//! Runs a child process in the foreground and makes sure it does not outlive us:
//! Ctrl-C or SIGTERM to the xtask stops the child (QEMU or the native server) and waits for it.

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context, Result};

/// Process id of the child we supervise (0 when none).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Set once Ctrl-C or SIGTERM asked us to stop.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether the child ended because we were asked to stop (then its exit status is expected).
pub fn stopped_by_signal() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Sends SIGTERM to the supervised child, if any.
fn stop_child() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Spawns `cmd`, forwards SIGINT/SIGTERM to it as SIGTERM, and waits for it to exit.
pub fn run_foreground(cmd: &mut Command) -> Result<ExitStatus> {
    // Installing the handler twice (a second run in one process) is harmless to ignore.
    let _ = ctrlc::set_handler(stop_child);
    let mut child = cmd
        .spawn()
        .with_context(|| crate::util::redacted(&format!("could not start {cmd:?}")))?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let status = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    Ok(status?)
}
