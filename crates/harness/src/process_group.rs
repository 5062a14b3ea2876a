//! A child process in a process group of its own: signals reach the whole group (`xtask run`
//! and the QEMU it started, or a server and its helpers), and dropping the handle kills the
//! group, also when a test fails or a benchmark stops early.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A child leading its own process group; the group is killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct ProcessGroup {
    child: Child,
}

impl ProcessGroup {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> io::Result<ProcessGroup> {
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        Ok(ProcessGroup {
            child: cmd.spawn()?,
        })
    }

    /// The leader, e.g. to take its output pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Process id of the leader (also the group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The leader's exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Whether the leader has exited (or cannot be waited for).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` to every process of the group.
    pub fn signal(&self, signal: libc::c_int) {
        // A pid fits in pid_t; the leader's pid is the group's id.
        let group = libc::pid_t::try_from(self.child.id()).unwrap_or(libc::pid_t::MAX);
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(-group, signal) };
    }

    /// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to the group
    /// (which may still hold QEMU if the leader died first); the leader's exit status.
    pub fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                self.signal(libc::SIGKILL);
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill()
    }

    /// SIGKILL to the group; the leader's exit status.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.child.wait()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The group is killed on drop: a grandchild of the leader is gone too.
    #[test]
    fn dropping_kills_the_whole_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped());
        let mut group = ProcessGroup::spawn(&mut cmd).expect("spawn sh");
        let mut line = String::new();
        let stdout = group.child().stdout.take().expect("stdout");
        io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line).expect("pid");
        let sleeper: libc::pid_t = line.trim().parse().expect("a pid");
        assert!(running(sleeper), "sleep {sleeper} did not start");
        drop(group);
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(sleeper) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(sleeper), "sleep {sleeper} survived");
    }

    /// Whether `pid` exists and is not a zombie waiting for its new parent to reap it.
    fn running(pid: libc::pid_t) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
    }

    /// SIGTERM first: a leader that exits on it reports that exit.
    #[test]
    fn terminate_sends_sigterm_first() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done"]);
        cmd.stderr(std::process::Stdio::null());
        let mut group = ProcessGroup::spawn(&mut cmd).expect("spawn sh");
        std::thread::sleep(Duration::from_millis(200));
        let status = group.terminate(Duration::from_secs(10)).expect("wait");
        assert_eq!(status.code(), Some(7));
    }
}
