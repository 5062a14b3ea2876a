//! Servers under load for the connection benchmarks, started exactly as a user starts them:
//! `xtask run [--native] --no-build --port P --append ...` (this very xtask binary), in their own
//! process group with their output in `target/bench-logs/`, killed with the group on drop.
//! Also: the process that really serves (the child of `xtask run`: kernel-app or QEMU) and its
//! resident memory, read from /proc.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::ProcessGroup;

use super::{ProbeFailure, free_port, probe};
use crate::vm::VmArgs;

/// A process group we started; SIGKILLed as a whole on drop.
pub(crate) struct Group {
    group: ProcessGroup,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

impl Group {
    /// Spawns `cmd` in a new process group, stdout and stderr into `target/bench-logs/{name}.log`.
    pub fn spawn(mut cmd: Command, name: &str) -> Result<Group> {
        let dir = crate::util::target_dir().join("bench-logs");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let command = command_text(&cmd);
        let group = ProcessGroup::spawn(&mut cmd).with_context(|| format!("start {command}"))?;
        Ok(Group {
            group,
            log,
            command,
        })
    }

    /// Process id of the group leader.
    pub fn pid(&self) -> u32 {
        self.group.id()
    }

    /// Whether the leader has exited.
    pub fn exited(&mut self) -> bool {
        self.group.exited()
    }

    /// The last lines of the log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A command line as one could type it.
pub(crate) fn command_text(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains([' ', '"', '\'']) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Our server started through `xtask run --no-build` (built beforehand by the bench).
pub(crate) struct XtaskRun {
    group: Group,
    /// Host port on 127.0.0.1 it serves on.
    pub port: u16,
}

impl XtaskRun {
    /// `xtask run --no-build --port P --append APPEND`, natively (`vm` = None) or in QEMU.
    pub fn start(name: &str, vm: Option<&VmArgs>, append: &str) -> Result<XtaskRun> {
        let port = free_port()?;
        let exe = std::env::current_exe().context("path of the xtask binary")?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "run",
            "--no-build",
            "--port",
            &port.to_string(),
            "--append",
            append,
        ]);
        match vm {
            None => {
                cmd.arg("--native");
            }
            Some(vm) => {
                cmd.args(vm_flags(vm));
            }
        }
        Ok(XtaskRun {
            group: Group::spawn(cmd, name)?,
            port,
        })
    }

    /// The `xtask run` command line.
    pub fn command(&self) -> &str {
        &self.group.command
    }

    /// Waits until every path in `paths` answers 200 (boot functions deploy in the background);
    /// the time from the start until `/healthz` first answered 200.
    pub fn wait_ready(&mut self, paths: &[&str], limit: Duration) -> Result<Duration> {
        wait_ready(&mut self.group, self.port, paths, limit)
    }

    /// The process that serves: the child of `xtask run` (kernel-app natively, else QEMU).
    pub fn server_pid(&self) -> Result<u32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = children_of(self.group.pid()).first() {
                return Ok(*pid);
            }
            if Instant::now() > deadline {
                bail!(
                    "`xtask run` (pid {}) has no child process",
                    self.group.pid()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the server's output goes.
    pub fn log(&self) -> &std::path::Path {
        &self.group.log
    }
}

/// The `xtask run` flags that select `vm` (the same flags `cargo xtask run` takes).
pub(crate) fn vm_flags(vm: &VmArgs) -> Vec<String> {
    vec![
        "--smp".into(),
        vm.smp.to_string(),
        "--memory".into(),
        vm.memory.to_string(),
        "--machine".into(),
        value(&vm.machine),
        "--accel".into(),
        value(&vm.accel),
        "--nic".into(),
        value(&vm.nic),
    ]
}

/// The command-line spelling of a clap value.
fn value<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Waits until `GET path` answers 200 on `port` for every path of `paths`, while `group` runs;
/// the time until the first path first answered.
pub(crate) fn wait_ready(
    group: &mut Group,
    port: u16,
    paths: &[&str],
    limit: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    let mut first = None;
    for path in paths {
        // Short attempts while the guest boots, longer ones once it answers slowly.
        let mut attempt = Duration::from_millis(100);
        loop {
            match probe(port, path, attempt) {
                Ok(200) => break,
                Err(ProbeFailure::Slow) => attempt = (attempt * 2).min(Duration::from_secs(2)),
                _ => {}
            }
            if group.exited() {
                bail!(
                    "{} exited before {path} answered 200:\n{}",
                    group.command,
                    group.log_tail()
                );
            }
            if start.elapsed() > limit {
                bail!(
                    "{path} on port {port} did not answer 200 within {limit:?} (log: {})",
                    group.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        first.get_or_insert(start.elapsed());
    }
    Ok(first.unwrap_or_default())
}

/// Process ids whose parent is `parent` (from /proc/*/stat).
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children.sort_unstable();
    children
}

/// A `Key:   value kB` field of /proc/PID/status, as a number.
pub(crate) fn proc_status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident set size in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmRSS")
}

/// The command line of a running process.
pub(crate) fn proc_cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// KiB as "12.3 MiB" (or "?").
pub(crate) fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// The host's load averages and core count, as a caveat for the figures (other work on the
/// host shares its cores with the servers and wrk).
pub(crate) fn host_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<&str> = load.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "load average {} (1/5/15 min) on {cores} cores",
        averages.join(" / ")
    )
}
