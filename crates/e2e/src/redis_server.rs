//! A throwaway `redis-server` on a free port of 127.0.0.1, and a tiny raw RESP client to look
//! at what the server under test stored (independent of the project's own Redis client).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The redis-server binary: `$REDIS_SERVER`, else `redis-server` on `PATH`, else Debian's path.
fn redis_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("REDIS_SERVER") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("redis-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"))
}

/// A running redis-server without persistence, killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free port of 127.0.0.1 and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        let binary = redis_server_binary();
        assert!(
            binary.is_file(),
            "redis-server not found at {} (install the Debian package `redis-server` or set \
             REDIS_SERVER); the Redis end-to-end tests need a real server",
            binary.display()
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "e2e-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir for redis-server");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
        };
        // Someone may take the probed port before redis binds it: try a few.
        for _ in 0..5 {
            server.port = crate::free_port();
            if server.launch() {
                return server;
            }
        }
        panic!(
            "redis-server did not start; see {}",
            server.dir.join("redis.log").display()
        );
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running (not stopped by [`RedisServer::stop`]).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections are still accepted by the host's TCP stack,
    /// but nothing answers — a hung Redis rather than a dead one.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("redis-server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "signal {signal} to redis-server"
        );
    }

    /// Starts the server again on the same port, empty (nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A raw client connection to this server.
    pub fn client(&self) -> RawRedis {
        RawRedis::connect(self.port)
            .unwrap_or_else(|e| panic!("connect to redis on {}: {e}", self.port))
    }

    /// Spawns redis-server on `self.port`; true once it answers `PING`.
    fn launch(&mut self) -> bool {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("open the redis log");
        let mut command = Command::new(redis_server_binary());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port is taken
            }
            if RawRedis::connect(self.port)
                .and_then(|mut c| c.command(&[b"PING"]))
                .is_ok_and(|reply| reply == Reply::Simple("PONG".into()))
            {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.thaw();
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+...`
    Simple(String),
    /// `-...`
    Error(String),
    /// `:...`
    Integer(i64),
    /// `$...`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*...`
    Array(Vec<Reply>),
}

/// A minimal blocking RESP2 client for checking what the server under test stored.
pub struct RawRedis {
    reader: BufReader<TcpStream>,
}

impl RawRedis {
    /// Connects to 127.0.0.1:`port` with 5 s timeouts.
    pub fn connect(port: u16) -> std::io::Result<RawRedis> {
        let stream = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(5),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(RawRedis {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command (as a RESP array of bulk strings) and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out)?;
        self.read_reply()
    }

    /// `GET key`: the value, or `None` if the key does not exist.
    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        match self.command(&[b"GET", key.as_bytes()]).expect("redis GET") {
            Reply::Bulk(value) => Some(value),
            Reply::Nil => None,
            other => panic!("GET {key}: unexpected reply {other:?}"),
        }
    }

    /// `SET key value`.
    pub fn set(&mut self, key: &str, value: &[u8]) {
        let reply = self
            .command(&[b"SET", key.as_bytes(), value])
            .expect("redis SET");
        assert_eq!(reply, Reply::Simple("OK".into()), "SET {key}");
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches("\r\n").to_string())
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let line = self.read_line()?;
        let (kind, rest) = line
            .split_at_checked(1)
            .ok_or_else(|| invalid("empty reply line".into()))?;
        let number = || {
            rest.parse::<i64>()
                .map_err(|_| invalid(format!("bad length in {line:?}")))
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Integer(number()?),
            "$" => match usize::try_from(number()?) {
                Err(_) => Reply::Nil,
                Ok(len) => {
                    let mut value = vec![0u8; len + 2];
                    self.reader.read_exact(&mut value)?;
                    value.truncate(len);
                    Reply::Bulk(value)
                }
            },
            "*" => match usize::try_from(number()?) {
                Err(_) => Reply::Nil,
                Ok(len) => Reply::Array(
                    (0..len)
                        .map(|_| self.read_reply())
                        .collect::<Result<_, _>>()?,
                ),
            },
            _ => return Err(invalid(format!("unknown reply type in {line:?}"))),
        })
    }
}
