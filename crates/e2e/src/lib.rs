//! Harness for end-to-end tests.
//!
//! An [`Instance`] is the server started exactly as a user starts it — `cargo xtask run
//! [--native] --port P --append ...` (through the already built xtask binary, with `--no-build`) —
//! in its own process group, so that dropping it stops QEMU too, also when a test fails.
//! [`http`] is a deliberately independent HTTP/1.1 client over raw TCP.

pub mod http;
pub mod redis_server;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the server under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The Linux build of the same server.
    Native,
    /// The unikernel image in QEMU with user networking.
    Qemu,
}

/// A running server; stopped (with everything it started) on drop.
pub struct Instance {
    child: Child,
    /// Host port on 127.0.0.1 the server answers on.
    pub port: u16,
    output: Arc<Mutex<String>>,
}

/// Path of the xtask binary, given by `cargo xtask test` in `XTASK_BIN`.
fn xtask_bin() -> PathBuf {
    match std::env::var_os("XTASK_BIN") {
        Some(p) => PathBuf::from(p),
        None => panic!("XTASK_BIN is not set: run the end-to-end tests with `cargo xtask test`"),
    }
}

pub use redis_test_server::free_port;

/// The start of the line the server logs once it listens (`kernel-app/src/main.rs`).
pub const READY_LINE: &str = "ready: listening on http://";

impl Instance {
    /// Starts the server with the kernel command line `append` (plus `extra` xtask flags) and
    /// waits until `GET /healthz` answers 200.
    pub fn start(mode: Mode, append: &str, extra: &[&str]) -> Instance {
        let port = free_port();
        let mut cmd = Command::new(xtask_bin());
        cmd.args([
            "run",
            "--no-build",
            "--port",
            &port.to_string(),
            "--append",
            append,
        ]);
        if mode == Mode::Native {
            cmd.arg("--native");
        }
        cmd.args(extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("start `xtask run`");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("E2E_VERBOSE").is_some() {
                        eprintln!("[server] {line}");
                    }
                    let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let mut instance = Instance {
            child,
            port,
            output,
        };
        let limit = match mode {
            Mode::Native => Duration::from_secs(30),
            Mode::Qemu => Duration::from_secs(180),
        };
        instance.wait_healthy(limit);
        instance
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let start = Instant::now();
        // Short attempts first (a booting guest drops SYNs, and a fresh attempt beats a
        // retransmission), then longer ones: an emulated guest on a busy host can be slow.
        let mut attempt = Duration::from_millis(500);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "server exited with {status} before answering; output:\n{}",
                    self.output()
                );
            }
            if http::is_healthy(self.port, attempt) {
                return;
            }
            attempt = (attempt * 2).min(Duration::from_secs(8));
            if start.elapsed() > limit {
                panic!(
                    "no 200 from /healthz within {limit:?}; output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything the server printed so far (serial console or stdout, and stderr).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `limit` for the server to exit by itself; its exit status, or `None`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends SIGTERM to the whole process group and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The group may still hold QEMU if xtask died first: make sure nothing is left.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                return status;
            }
            if Instant::now() > deadline {
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                return self.child.wait().expect("wait for the killed server");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test shows what the server said last: a hang or a crash leaves its
            // trace there, and nothing else records it.
            let output = self.output();
            let lines: Vec<&str> = output.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- last {} lines of the server's output ---", tail.len());
            for line in tail {
                eprintln!("[server] {line}");
            }
            // E2E_HOLD_SECONDS=N keeps a failed test's server running for N seconds, for a
            // debugger or QEMU's monitor to look at it.
            if let Some(hold) = std::env::var("E2E_HOLD_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
            {
                eprintln!("holding the server (pid {}) for {hold} s", self.child.id());
                std::thread::sleep(Duration::from_secs(hold));
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        } else {
            let pgid = self.child.id() as i32;
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}
