//! One blocking connection to a Redis server over `std::net::TcpStream`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::RedisError;
use crate::resp::{self, Limits, ReadError, ReplyBudget, ReplyReader, Value};
use crate::url::ConnectionInfo;

/// How read and write timeouts are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeoutStrategy {
    /// Socket timeouts (`SO_RCVTIMEO`/`SO_SNDTIMEO`); where the platform rejects them (hermit
    /// 0.11 does), fall back to [`TimeoutStrategy::Polling`].
    #[default]
    Socket,
    /// A non-blocking socket polled with short pauses until data moves or the timeout passes.
    Polling,
}

/// How timeouts ended up being enforced on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutEnforcement {
    /// By the operating system's socket timeouts.
    Socket,
    /// By polling a non-blocking socket.
    Polling,
    /// Not at all: neither socket timeouts nor non-blocking mode are available.
    None,
}

/// Timeouts and limits for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// How long to wait for the TCP handshake, per address tried.
    pub connect_timeout: Duration,
    /// How long a read or write may wait without any progress.
    pub io_timeout: Duration,
    /// How `io_timeout` is enforced.
    pub timeouts: TimeoutStrategy,
    /// Bounds applied to replies.
    pub limits: Limits,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            timeouts: TimeoutStrategy::default(),
            limits: Limits::default(),
        }
    }
}

/// An authenticated connection with the configured database selected.
#[derive(Debug)]
pub struct Connection {
    stream: TimedStream,
    reader: ReplyReader,
    write_buf: Vec<u8>,
}

impl Connection {
    /// Connects, authenticates (`AUTH`) and selects the database (`SELECT`) named by `info`.
    pub fn connect(info: &ConnectionInfo, options: &ConnectionOptions) -> Result<Self, RedisError> {
        let stream = connect_tcp(info, options.connect_timeout)?;
        // Redis answers small requests at once; do not let Nagle delay them.
        let _ = stream.set_nodelay(true);
        let socket_timeouts = options.timeouts == TimeoutStrategy::Socket
            && stream.set_read_timeout(Some(options.io_timeout)).is_ok()
            && stream.set_write_timeout(Some(options.io_timeout)).is_ok();
        let enforcement = if socket_timeouts {
            TimeoutEnforcement::Socket
        } else if stream.set_nonblocking(true).is_ok() {
            TimeoutEnforcement::Polling
        } else {
            log::warn!("no way to enforce timeouts here; redis I/O to {info} may block");
            TimeoutEnforcement::None
        };
        let mut connection = Self {
            stream: TimedStream {
                stream: Some(stream),
                timeout: options.io_timeout,
                enforcement,
            },
            reader: ReplyReader::new(options.limits),
            write_buf: Vec::new(),
        };
        if let Some(password) = &info.password {
            let reply = match &info.username {
                Some(user) => {
                    connection.raw_command(&[b"AUTH", user.as_bytes(), password.as_bytes()])?
                }
                None => connection.raw_command(&[b"AUTH", password.as_bytes()])?,
            };
            match reply {
                Value::SimpleString(ok) if ok == "OK" => {}
                Value::Error(message) => return Err(RedisError::Auth(message)),
                other => return Err(unexpected("AUTH", &other)),
            }
        }
        if info.db != 0 {
            let db = info.db.to_string();
            expect_ok("SELECT", connection.command(&[b"SELECT", db.as_bytes()])?)?;
        }
        Ok(connection)
    }

    /// How read and write timeouts are enforced on this connection.
    pub fn timeout_enforcement(&self) -> TimeoutEnforcement {
        self.stream.enforcement
    }

    /// Sends one command and returns its reply; error replies become [`RedisError::Server`]
    /// (or [`RedisError::Auth`] for `NOAUTH`/`WRONGPASS`).
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Value, RedisError> {
        match self.raw_command(args)? {
            Value::Error(message) if is_auth_error(&message) => Err(RedisError::Auth(message)),
            Value::Error(message) => Err(RedisError::Server(message)),
            value => Ok(value),
        }
    }

    /// Sends one command and returns its reply as is, error replies included.
    pub fn raw_command(&mut self, args: &[&[u8]]) -> Result<Value, RedisError> {
        self.write_buf.clear();
        resp::encode_command(args, &mut self.write_buf);
        let written = self.stream.write_all(&self.write_buf);
        if self.write_buf.capacity() > 64 * 1024 {
            self.write_buf = Vec::new();
        }
        written.map_err(|e| self.transport_error(e))?;
        match self
            .reader
            .read_reply(&mut self.stream, &ReplyBudget::UNLIMITED)
        {
            Ok(value) => Ok(value),
            Err(ReadError::Io(e)) => Err(self.transport_error(e)),
            Err(ReadError::Closed) => Err(RedisError::Closed),
            Err(ReadError::Protocol(e)) => Err(RedisError::Protocol(e)),
            Err(e @ ReadError::OverBudget { .. }) => Err(RedisError::Io(io::Error::other(e))),
        }
    }

    fn transport_error(&self, error: io::Error) -> RedisError {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                RedisError::Timeout(self.stream.timeout)
            }
            _ => RedisError::Io(error),
        }
    }

    /// `PING`, expecting `PONG`.
    pub fn ping(&mut self) -> Result<(), RedisError> {
        match self.command(&[b"PING"])? {
            Value::SimpleString(pong) if pong == "PONG" => Ok(()),
            other => Err(unexpected("PING", &other)),
        }
    }

    /// `GET key`; `None` when the key does not exist.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, RedisError> {
        match self.command(&[b"GET", key])? {
            Value::BulkString(value) => Ok(Some(value)),
            Value::Nil => Ok(None),
            other => Err(unexpected("GET", &other)),
        }
    }

    /// `SET key value`; returns only once Redis acknowledged with `+OK`.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), RedisError> {
        expect_ok("SET", self.command(&[b"SET", key, value])?)
    }

    /// `DEL key`; returns how many keys were removed.
    pub fn del(&mut self, key: &[u8]) -> Result<i64, RedisError> {
        match self.command(&[b"DEL", key])? {
            Value::Integer(removed) => Ok(removed),
            other => Err(unexpected("DEL", &other)),
        }
    }

    /// `SCAN cursor MATCH pattern COUNT count`; returns the next cursor and this batch of keys.
    pub fn scan(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>), RedisError> {
        let cursor = cursor.to_string();
        let count = count.to_string();
        let reply = self.command(&[
            b"SCAN",
            cursor.as_bytes(),
            b"MATCH",
            pattern,
            b"COUNT",
            count.as_bytes(),
        ])?;
        let Value::Array(mut parts) = reply else {
            return Err(unexpected("SCAN", &reply));
        };
        let (Some(Value::Array(keys)), Some(Value::BulkString(next)), None) =
            (parts.pop(), parts.pop(), parts.pop())
        else {
            return Err(RedisError::UnexpectedReply {
                command: "SCAN",
                reply: "not a [cursor, keys] pair".into(),
            });
        };
        let next = std::str::from_utf8(&next)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| RedisError::UnexpectedReply {
                command: "SCAN",
                reply: "cursor is not a number".into(),
            })?;
        let keys = keys
            .into_iter()
            .map(|key| match key {
                Value::BulkString(key) => Ok(key),
                other => Err(unexpected("SCAN", &other)),
            })
            .collect::<Result<_, _>>()?;
        Ok((next, keys))
    }
}

fn is_auth_error(message: &str) -> bool {
    message.starts_with("NOAUTH") || message.starts_with("WRONGPASS")
}

fn expect_ok(command: &'static str, reply: Value) -> Result<(), RedisError> {
    match reply {
        Value::SimpleString(ok) if ok == "OK" => Ok(()),
        other => Err(unexpected(command, &other)),
    }
}

fn unexpected(command: &'static str, reply: &Value) -> RedisError {
    RedisError::UnexpectedReply {
        command,
        reply: reply.describe(),
    }
}

/// Resolves the host without DNS where possible (hermit has no resolver) and connects to the
/// first address that accepts.
fn connect_tcp(info: &ConnectionInfo, timeout: Duration) -> Result<TcpStream, RedisError> {
    let connect_error = |source: io::Error| RedisError::Connect {
        address: info.address(),
        source,
    };
    let addresses: Vec<SocketAddr> = if let Ok(ip) = info.host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, info.port)]
    } else if info.host.eq_ignore_ascii_case("localhost") {
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), info.port)]
    } else {
        (info.host.as_str(), info.port)
            .to_socket_addrs()
            .map_err(connect_error)?
            .collect()
    };
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e,
        }
    }
    Err(connect_error(last_error))
}

/// A TCP stream whose reads and writes give up after `timeout` without progress.
#[derive(Debug)]
struct TimedStream {
    /// `None` only while being dropped.
    stream: Option<TcpStream>,
    timeout: Duration,
    enforcement: TimeoutEnforcement,
}

impl TimedStream {
    /// Repeats `attempt` while the non-blocking socket is not ready, pausing a little longer
    /// each time, until it makes progress or `timeout` has passed.
    fn poll<T>(
        &mut self,
        mut attempt: impl FnMut(&mut TcpStream) -> io::Result<T>,
    ) -> io::Result<T> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if self.enforcement != TimeoutEnforcement::Polling {
            return attempt(stream);
        }
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_micros(20);
        let mut round = 0u32;
        loop {
            round = round.saturating_add(1);
            match attempt(stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(io::Error::from(io::ErrorKind::TimedOut));
                    }
                    // Replies usually come within microseconds: yield first, then back off.
                    if round <= 8 {
                        thread::yield_now();
                    } else {
                        thread::sleep(pause.min(deadline - now));
                        pause = (pause * 2).min(Duration::from_millis(2));
                    }
                }
                other => return other,
            }
        }
    }
}

impl Read for TimedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.poll(|stream| stream.read(buf))
    }
}

impl Write for TimedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll(|stream| stream.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TimedStream {
    fn drop(&mut self) {
        if CLOSE_IN_BACKGROUND && let Some(stream) = self.stream.take() {
            close_in_background(stream);
        }
    }
}

/// Whether sockets are closed on a background thread. On hermit 0.11, closing a TCP socket
/// blocks until the peer closes too (the kernel waits, without a timeout, for the socket to
/// leave FIN-WAIT); a Redis that hangs never does, so dropping a timed-out connection would hang
/// the request that gave up on it.
const CLOSE_IN_BACKGROUND: bool = cfg!(target_os = "hermit");

/// Hands `stream` to the one closer thread, which drops sockets in order; they close whenever
/// their peers let them. If the thread cannot be started, the socket is closed right here.
pub(crate) fn close_in_background(stream: TcpStream) {
    static CLOSER: OnceLock<Option<Mutex<Sender<TcpStream>>>> = OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<TcpStream>();
        thread::Builder::new()
            .name("redis-closer".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for stream in receiver {
                    drop(stream);
                }
            })
            .inspect_err(|e| log::warn!("no closer thread ({e}); redis sockets close inline"))
            .ok()
            .map(|_| Mutex::new(sender))
    });
    if let Some(sender) = closer {
        let sender = sender.lock().unwrap_or_else(|e| e.into_inner());
        // If the closer thread is gone, the stream comes back in the error and drops here.
        let _ = sender.send(stream);
    }
}
