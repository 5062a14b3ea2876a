//! Harness for end-to-end tests.
//!
//! An [`Instance`] is the server started exactly as a user starts it — `cargo xtask run
//! [--native] --port P --append ...` (through the already built xtask binary, with `--no-build`) —
//! in its own process group, so that dropping it stops QEMU too, also when a test fails.
//! [`http`] is a deliberately independent HTTP/1.1 client over raw TCP (shared with xtask).

pub mod cut_proxy;
pub mod redis_server;

pub use harness::http;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
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
    group: ProcessGroup,
    /// Host port on 127.0.0.1 the server answers on.
    pub port: u16,
    output: Arc<Mutex<String>>,
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else the repository's `target/`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// Path of the xtask binary, given by `cargo xtask test` in `XTASK_BIN`.
pub fn xtask_bin() -> PathBuf {
    match std::env::var_os("XTASK_BIN") {
        Some(p) => PathBuf::from(p),
        None => panic!("XTASK_BIN is not set: run the end-to-end tests with `cargo xtask test`"),
    }
}

pub use harness::ProcessGroup;
pub use redis_test_server::free_port;

/// The start of the line the server logs once it listens (`kernel-app/src/main.rs`).
pub const READY_LINE: &str = "ready: listening on http://";

impl Instance {
    /// Starts the server with the kernel command line `append` (plus `extra` xtask flags) and
    /// waits until `GET /healthz` answers 200.
    pub fn start(mode: Mode, append: &str, extra: &[&str]) -> Instance {
        let port = free_port();
        let port_text = port.to_string();
        let mut args = vec![
            "run",
            "--no-build",
            "--port",
            &port_text,
            "--append",
            append,
        ];
        if mode == Mode::Native {
            args.push("--native");
        }
        args.extend_from_slice(extra);
        let mut instance = Instance::launch(port, &args);
        let limit = match mode {
            Mode::Native => Duration::from_secs(30),
            Mode::Qemu => Duration::from_secs(180),
        };
        instance.wait_healthy(limit);
        instance
    }

    /// Starts `xtask ARGS` (any subcommand that serves: `run`, `boot`, `tap`) in its own
    /// process group, collecting its output, without waiting for it; `port` is the host port it
    /// will answer on (0 when it does not answer on 127.0.0.1).
    pub fn launch(port: u16, args: &[&str]) -> Instance {
        let mut cmd = Command::new(xtask_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut group = ProcessGroup::spawn(&mut cmd).expect("start xtask");
        let output = Arc::new(Mutex::new(String::new()));
        let child = group.child();
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
        Instance {
            group,
            port,
            output,
        }
    }

    /// Calls `probe` until it returns `Some` (every 200 ms); panics with the output if the
    /// server exits or `limit` passes.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = probe() {
                return value;
            }
            if let Some(status) = self.group.try_wait() {
                panic!(
                    "{what}: xtask exited with {status}; output:\n{}",
                    self.output()
                );
            }
            assert!(
                start.elapsed() < limit,
                "{what}: nothing within {limit:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let start = Instant::now();
        // Short attempts first (a booting guest drops SYNs, and a fresh attempt beats a
        // retransmission), then longer ones: an emulated guest on a busy host can be slow.
        let mut attempt = Duration::from_millis(500);
        loop {
            if let Some(status) = self.group.try_wait() {
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
            if let Some(status) = self.group.try_wait() {
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

    /// SIGTERM to the group (xtask forwards it to QEMU and cleans up), up to 10 s, then SIGKILL.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.group
            .terminate(Duration::from_secs(10))
            .expect("wait for the server")
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
                eprintln!("holding the server (pid {}) for {hold} s", self.group.id());
                std::thread::sleep(Duration::from_secs(hold));
            }
        }
        // A server still running gets SIGTERM first; the group is killed when it drops.
        if !self.group.exited() {
            let _ = self.group.terminate(Duration::from_secs(10));
        }
    }
}
