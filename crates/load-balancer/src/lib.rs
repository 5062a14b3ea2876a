//! A throwaway HAProxy (Debian's package) on a free port of 127.0.0.1 in front of instances
//! listening on other ports of 127.0.0.1: round robin, `GET /healthz` checks every 300 ms, and
//! a request whose instance refuses the connection or dies mid-way is retried on another one.
//! Every response names the instance that answered in `X-Served-By` (`i{index}`).
//!
//! The binary is `$HAPROXY`, else `haproxy` on `PATH`, else `/usr/sbin/haproxy`; if it is
//! missing, [`HaProxy::start`] fails saying so (`./setup.sh` installs it).

use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Response header naming the instance that answered.
pub const SERVED_BY: &str = "x-served-by";

/// How long HAProxy may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The haproxy binary: `$HAPROXY`, else `haproxy` on `PATH`, else Debian's path.
pub fn binary() -> PathBuf {
    redis_test_server::find_program("HAPROXY", "haproxy", "/usr/sbin/haproxy")
}

/// A running HAProxy; stopped (and its directory removed) on drop.
pub struct HaProxy {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// HAProxy's configuration for a frontend on `port` and `backends` (ports on 127.0.0.1).
pub fn config(port: u16, backends: &[u16]) -> String {
    let mut text = format!(
        "global\n\
         \x20   maxconn 4096\n\
         defaults\n\
         \x20   mode http\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \x20   timeout check 2s\n\
         \x20   retries 3\n\
         \x20   option redispatch 1\n\
         \x20   retry-on conn-failure empty-response response-timeout\n\
         frontend fleet\n\
         \x20   bind 127.0.0.1:{port}\n\
         \x20   default_backend instances\n\
         backend instances\n\
         \x20   balance roundrobin\n\
         \x20   option httpchk GET /healthz\n\
         \x20   http-check expect status 200\n\
         \x20   http-response set-header X-Served-By %s\n\
         \x20   default-server inter 300ms fall 2 rise 1\n"
    );
    for (index, backend) in backends.iter().enumerate() {
        text.push_str(&format!("    server i{index} 127.0.0.1:{backend} check\n"));
    }
    text
}

impl HaProxy {
    /// Starts HAProxy on a free port in front of `backends` and waits until it listens.
    pub fn start(backends: &[u16]) -> io::Result<HaProxy> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "haproxy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let port = redis_test_server::free_port();
        let child = launch(&dir, port, backends, None)?;
        let mut proxy = HaProxy { child, port, dir };
        proxy.wait_listening()?;
        Ok(proxy)
    }

    /// Port on 127.0.0.1 the balancer listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the instances behind the balancer: a new HAProxy takes over the port
    /// (`-sf`), the old one finishes the requests it has and exits.
    pub fn reconfigure(&mut self, backends: &[u16]) -> io::Result<()> {
        let child = launch(&self.dir, self.port, backends, Some(self.child.id()))?;
        let mut old = std::mem::replace(&mut self.child, child);
        let deadline = Instant::now() + START_TIMEOUT;
        while matches!(old.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = old.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = old.wait();
        self.wait_listening()
    }

    fn wait_listening(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(io::Error::other(format!(
                    "haproxy exited with {status}: {}",
                    std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
                )));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("haproxy did not listen on {} in time", self.port),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Writes the configuration into `dir` and starts HAProxy in the foreground (`-db`), in a
/// process group of its own; `replaces` is a running HAProxy told to finish (`-sf`).
fn launch(dir: &Path, port: u16, backends: &[u16], replaces: Option<u32>) -> io::Result<Child> {
    let binary = binary();
    if !binary.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "haproxy not found at {} (install the Debian package `haproxy`, as ./setup.sh \
                 does, or set HAPROXY)",
                binary.display()
            ),
        ));
    }
    let config_path = dir.join("haproxy.cfg");
    std::fs::write(&config_path, config(port, backends))?;
    let log = std::fs::File::create(dir.join("haproxy.log"))?;
    let mut cmd = Command::new(binary);
    cmd.arg("-db").arg("-f").arg(&config_path);
    if let Some(pid) = replaces {
        cmd.arg("-sf").arg(pid.to_string());
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_every_backend() {
        let text = config(8000, &[9001, 9002]);
        assert!(text.contains("bind 127.0.0.1:8000"));
        assert!(text.contains("server i0 127.0.0.1:9001 check"));
        assert!(text.contains("server i1 127.0.0.1:9002 check"));
    }
}
