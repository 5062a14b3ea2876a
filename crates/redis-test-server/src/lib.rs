//! A throwaway `redis-server` for tests: started on a free port of 127.0.0.1 without
//! persistence, controllable (stop, freeze, restart), killed and cleaned up on drop.
//!
//! The binary is `$REDIS_SERVER`, else `redis-server` on `PATH`, else `/usr/bin/redis-server`.
//! If it is missing, [`RedisServer::start`] panics with a clear message: tests that need a real
//! server fail rather than pass silently.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long one launch may take until the server answers `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`RedisServer::restart`] keeps retrying to bind the same port.
const RESTART_TIMEOUT: Duration = Duration::from_secs(15);

/// The redis-server binary: `$REDIS_SERVER`, else `redis-server` on `PATH`, else Debian's path.
fn redis_server_binary() -> PathBuf {
    find_program("REDIS_SERVER", "redis-server", "/usr/bin/redis-server")
}

/// A program tests start: the path in `$env_var`, else `name` on `PATH`, else `fallback`.
pub fn find_program(env_var: &str, name: &str, fallback: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(fallback))
}

/// A running redis-server without persistence, killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`; panics with a clear
    /// message if redis-server is missing or does not start.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra redis-server arguments such as
    /// `["--requirepass", "pw"]` (kept for [`RedisServer::restart`]).
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        let binary = redis_server_binary();
        assert!(
            binary.is_file(),
            "redis-server not found at {} (install the Debian package `redis-server` or set \
             REDIS_SERVER); these tests need a real server",
            binary.display()
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "redis-test-server-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir for redis-server");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        // Someone may take the probed port before redis binds it: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.launch() {
                return server;
            }
        }
        panic!(
            "redis-server did not start; see {}",
            server.log_path().display()
        );
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server process is running (not stopped by [`RedisServer::stop`]); a frozen
    /// server counts as running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Process id while running, for signals in tests.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Temporary directory of this server (working dir, holds `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections are still accepted by the host's TCP stack,
    /// but nothing answers — a hung Redis rather than a dead one. Panics if not running.
    pub fn freeze(&self) {
        let result = self.signal(libc::SIGSTOP);
        assert_eq!(result, Ok(()), "SIGSTOP to redis-server");
    }

    /// Lets a frozen server run again (SIGCONT). Panics if not running.
    pub fn thaw(&self) {
        let result = self.signal(libc::SIGCONT);
        assert_eq!(result, Ok(()), "SIGCONT to redis-server");
    }

    /// Starts the server again on the same port with the same arguments, empty (nothing is
    /// persisted); retries while the old port is still held.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + RESTART_TIMEOUT;
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}; see {}",
                self.port,
                self.log_path().display()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to the running server.
    fn signal(&self, signal: libc::c_int) -> Result<(), String> {
        let child = self.child.as_ref().ok_or("redis-server is not running")?;
        let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        match unsafe { libc::kill(pid, signal) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error().to_string()),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// Spawns redis-server on `self.port`; true once it answers `PING`.
    fn launch(&mut self) -> bool {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the redis log");
        let mut command = Command::new(redis_server_binary());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server: {e}"));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port is taken
            }
            if answers_ping(self.port) {
                self.child = Some(child);
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Thaw first so a frozen server is not left stopped if the kill fails; never panic here.
        let _ = self.signal(libc::SIGCONT);
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free port")
        .port()
}

/// True if something on the port answers an inline `PING` with `+PONG` or a `NOAUTH` error (a
/// server with a password is up too).
fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    match stream.read(&mut reply) {
        Ok(n) if n > 0 => reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends an inline command and returns the first reply line (empty on timeout).
    fn inline(port: u16, command: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("write");
        let mut reply = [0u8; 256];
        let n = stream.read(&mut reply).unwrap_or(0);
        String::from_utf8_lossy(&reply[..n]).trim_end().to_string()
    }

    #[test]
    fn starts_answers_and_cleans_up_on_drop() {
        let server = RedisServer::start();
        assert!(server.is_running());
        assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
        assert_eq!(inline(server.port(), "PING"), "+PONG");
        assert!(server.dir().join("redis.log").is_file());
        let (port, dir) = (server.port(), server.dir().to_path_buf());
        drop(server);
        assert!(!answers_ping(port), "server still answers after drop");
        assert!(!dir.exists(), "temp dir left behind");
    }

    #[test]
    fn stop_then_restart_on_the_same_port_empty() {
        let mut server = RedisServer::start();
        let port = server.port();
        assert_eq!(inline(port, "SET k v"), "+OK");
        server.stop();
        assert!(!server.is_running());
        assert_eq!(server.pid(), None);
        assert!(!answers_ping(port));
        server.restart();
        assert!(server.is_running());
        assert_eq!(server.port(), port);
        assert_eq!(inline(port, "GET k"), "$-1", "nothing is persisted");
    }

    #[test]
    fn freeze_hangs_and_thaw_resumes() {
        let server = RedisServer::start();
        server.freeze();
        assert!(server.is_running());
        assert_eq!(
            inline(server.port(), "PING"),
            "",
            "a frozen server must not answer"
        );
        server.thaw();
        assert_eq!(inline(server.port(), "PING"), "+PONG");
    }

    #[test]
    fn drop_kills_a_frozen_server() {
        let server = RedisServer::start();
        let pid = libc::pid_t::try_from(server.pid().expect("running")).expect("pid");
        server.freeze();
        drop(server);
        // SAFETY: signal 0 only checks that the process exists.
        assert_ne!(
            unsafe { libc::kill(pid, 0) },
            0,
            "redis-server {pid} survived drop"
        );
    }

    #[test]
    fn extra_args_apply_and_survive_restart() {
        let mut server = RedisServer::start_with(&["--requirepass", "pw"]);
        assert!(inline(server.port(), "PING").starts_with("-NOAUTH"));
        server.restart();
        assert!(inline(server.port(), "PING").starts_with("-NOAUTH"));
        assert_eq!(inline(server.port(), "AUTH pw"), "+OK");
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("probed port is free");
    }
}
