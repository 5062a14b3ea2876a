//! One blocking connection to a Redis server over `std::net::TcpStream`.
//!
//! Every command runs under the caller's [`Bounds`]: each connect, write and read waits at most
//! until the caller's deadline (and never longer than the configured timeouts), and the reply's
//! bulk strings may carry at most `max_reply_bytes`.
//!
//! Two kinds of timeout are told apart, because they mean different things to the caller:
//! - a wait cut short by the caller's deadline (the time left was shorter than the configured
//!   timeout) is [`RedisError::Deadline`], which becomes [`keyvalue::KvError::Timeout`]: the
//!   request ran out of time, whether or not Redis is healthy;
//! - a wait that ran for the whole configured `connect_timeout` or `io_timeout` is Redis's own
//!   slowness ([`RedisError::Connect`], a [`keyvalue::KvError::Connection`] error, and
//!   [`RedisError::Timeout`], a [`keyvalue::KvError::BackendTimeout`]): the backend is unhealthy.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use keyvalue::Bounds;

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
    /// Connects, authenticates (`AUTH`) and selects the database (`SELECT`) named by `info`,
    /// all before `bounds.deadline`.
    pub fn connect(
        info: &ConnectionInfo,
        options: &ConnectionOptions,
        bounds: &Bounds,
    ) -> Result<Self, RedisError> {
        let stream = connect_tcp(info, options.connect_timeout, bounds.deadline)?;
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
                stream,
                io_timeout: options.io_timeout,
                enforcement,
                deadline: None,
                read_timeout: options.io_timeout,
                write_timeout: options.io_timeout,
            },
            reader: ReplyReader::new(options.limits),
            write_buf: Vec::new(),
        };
        if let Some(password) = &info.password {
            let reply = match &info.username {
                Some(user) => connection.raw_command(
                    &[b"AUTH", user.as_bytes(), password.as_bytes()],
                    bounds.deadline,
                    &ReplyBudget::bytes(bounds.max_reply_bytes),
                )?,
                None => connection.raw_command(
                    &[b"AUTH", password.as_bytes()],
                    bounds.deadline,
                    &ReplyBudget::bytes(bounds.max_reply_bytes),
                )?,
            };
            match reply {
                Value::SimpleString(ok) if ok == "OK" => {}
                Value::Error(message) => return Err(RedisError::Auth(message)),
                other => return Err(unexpected("AUTH", &other)),
            }
        }
        if info.db != 0 {
            let db = info.db.to_string();
            expect_ok(
                "SELECT",
                connection.command(&[b"SELECT", db.as_bytes()], bounds)?,
            )?;
        }
        Ok(connection)
    }

    /// How read and write timeouts are enforced on this connection.
    pub fn timeout_enforcement(&self) -> TimeoutEnforcement {
        self.stream.enforcement
    }

    /// Sends one command within `bounds` and returns its reply; error replies become
    /// [`RedisError::Server`] (or [`RedisError::Auth`] for `NOAUTH`/`WRONGPASS`).
    pub fn command(&mut self, args: &[&[u8]], bounds: &Bounds) -> Result<Value, RedisError> {
        let budget = ReplyBudget::bytes(bounds.max_reply_bytes);
        self.command_within(args, bounds.deadline, &budget)
    }

    /// Like [`Connection::command`], with the reply bounded by an explicit `budget`.
    pub fn command_within(
        &mut self,
        args: &[&[u8]],
        deadline: Option<Instant>,
        budget: &ReplyBudget,
    ) -> Result<Value, RedisError> {
        match self.raw_command(args, deadline, budget)? {
            Value::Error(message) if is_auth_error(&message) => Err(RedisError::Auth(message)),
            Value::Error(message) => Err(RedisError::Server(message)),
            value => Ok(value),
        }
    }

    /// Sends one command and returns its reply as is, error replies included. Every write and
    /// read gives up at `deadline` ([`RedisError::Deadline`]); a reply whose bulk strings exceed
    /// `budget` is refused on the first header that does not fit ([`RedisError::TooLarge`]).
    ///
    /// After either refusal the rest of the reply is still on its way, so the connection is out
    /// of step and must be dropped ([`RedisError::breaks_connection`]). Dropping is cheaper and
    /// better bounded than draining: the rest may be hundreds of MiB, and reading it would spend
    /// the caller's time on bytes nobody wants. The pool opens a new connection when needed.
    pub fn raw_command(
        &mut self,
        args: &[&[u8]],
        deadline: Option<Instant>,
        budget: &ReplyBudget,
    ) -> Result<Value, RedisError> {
        self.stream.deadline = deadline;
        let result = self.exchange(args, budget);
        self.stream.deadline = None;
        result
    }

    fn exchange(&mut self, args: &[&[u8]], budget: &ReplyBudget) -> Result<Value, RedisError> {
        self.write_buf.clear();
        resp::encode_command(args, &mut self.write_buf);
        let written = self.stream.write_all(&self.write_buf);
        if self.write_buf.capacity() > 64 * 1024 {
            self.write_buf = Vec::new();
        }
        written.map_err(|e| self.transport_error(e, "sending the command"))?;
        match self.reader.read_reply(&mut self.stream, budget) {
            Ok(value) => Ok(value),
            Err(ReadError::Io(e)) => Err(self.transport_error(e, "waiting for the reply")),
            Err(ReadError::Closed) => Err(RedisError::Closed),
            Err(ReadError::Protocol(e)) => Err(RedisError::Protocol(e)),
            Err(ReadError::OverBudget { limit, len }) => Err(RedisError::TooLarge {
                limit,
                size: Some(len),
            }),
        }
    }

    fn transport_error(&self, error: io::Error, phase: &'static str) -> RedisError {
        if is_deadline_passed(&error) {
            return RedisError::Deadline { phase };
        }
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                RedisError::Timeout(self.stream.io_timeout)
            }
            _ => RedisError::Io(error),
        }
    }

    /// `PING`, expecting `PONG`.
    pub fn ping(&mut self, bounds: &Bounds) -> Result<(), RedisError> {
        match self.command(&[b"PING"], bounds)? {
            Value::SimpleString(pong) if pong == "PONG" => Ok(()),
            other => Err(unexpected("PING", &other)),
        }
    }

    /// `GET key`; `None` when the key does not exist. A value longer than
    /// `bounds.max_reply_bytes` is [`RedisError::TooLarge`] (and breaks the connection).
    pub fn get(&mut self, key: &[u8], bounds: &Bounds) -> Result<Option<Vec<u8>>, RedisError> {
        match self.command(&[b"GET", key], bounds)? {
            Value::BulkString(value) => Ok(Some(value)),
            Value::Nil => Ok(None),
            other => Err(unexpected("GET", &other)),
        }
    }

    /// `SET key value`; returns only once Redis acknowledged with `+OK`.
    pub fn set(&mut self, key: &[u8], value: &[u8], bounds: &Bounds) -> Result<(), RedisError> {
        expect_ok("SET", self.command(&[b"SET", key, value], bounds)?)
    }

    /// `DEL key`; returns how many keys were removed.
    pub fn del(&mut self, key: &[u8], bounds: &Bounds) -> Result<i64, RedisError> {
        match self.command(&[b"DEL", key], bounds)? {
            Value::Integer(removed) => Ok(removed),
            other => Err(unexpected("DEL", &other)),
        }
    }

    /// In one transaction (`MULTI` ... `EXEC`): `SET key value` (or `DEL key` where the value is
    /// `None`) for each of `writes`, then `INCR counter`; returns the counter's new value. A
    /// command Redis refuses while queueing discards the transaction (`DISCARD`).
    pub fn transaction<'a>(
        &mut self,
        writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        counter: &[u8],
        bounds: &Bounds,
    ) -> Result<u64, RedisError> {
        expect_ok("MULTI", self.command(&[b"MULTI"], bounds)?)?;
        let mut queued = Ok(());
        for (key, value) in writes {
            queued = match value {
                Some(value) => self.queue("SET", &[b"SET", key, value], bounds),
                None => self.queue("DEL", &[b"DEL", key], bounds),
            };
            if queued.is_err() {
                break;
            }
        }
        if let Err(error) = queued.and_then(|()| self.queue("INCR", &[b"INCR", counter], bounds)) {
            if !error.breaks_connection() {
                self.command(&[b"DISCARD"], bounds)?;
            }
            return Err(error);
        }
        let Value::Array(replies) = self.command(&[b"EXEC"], bounds)? else {
            return Err(RedisError::UnexpectedReply {
                command: "EXEC",
                reply: "not an array (transaction aborted)".into(),
            });
        };
        if let Some(Value::Error(message)) = replies.iter().find(|r| matches!(r, Value::Error(_))) {
            return Err(RedisError::Server(message.clone()));
        }
        match replies.last() {
            Some(Value::Integer(count)) => {
                u64::try_from(*count).map_err(|_| RedisError::UnexpectedReply {
                    command: "INCR",
                    reply: format!("negative counter {count}"),
                })
            }
            Some(other) => Err(unexpected("INCR", other)),
            None => Err(RedisError::UnexpectedReply {
                command: "EXEC",
                reply: "empty array".into(),
            }),
        }
    }

    /// Sends one command inside `MULTI`, expecting `+QUEUED`.
    fn queue(
        &mut self,
        command: &'static str,
        args: &[&[u8]],
        bounds: &Bounds,
    ) -> Result<(), RedisError> {
        match self.command(args, bounds)? {
            Value::SimpleString(queued) if queued == "QUEUED" => Ok(()),
            other => Err(unexpected(command, &other)),
        }
    }

    /// `SCAN cursor MATCH pattern COUNT count`; returns the next cursor and this batch of keys.
    /// The reply (cursor and key names together) must fit `budget`.
    pub fn scan(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
        deadline: Option<Instant>,
        budget: &ReplyBudget,
    ) -> Result<(u64, Vec<Vec<u8>>), RedisError> {
        let cursor = cursor.to_string();
        let count = count.to_string();
        let reply = self.command_within(
            &[
                b"SCAN",
                cursor.as_bytes(),
                b"MATCH",
                pattern,
                b"COUNT",
                count.as_bytes(),
            ],
            deadline,
            budget,
        )?;
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
/// first address that accepts, waiting at most `timeout` per address and never past
/// `deadline`. (A DNS lookup itself cannot be bounded with `std`; IP addresses and `localhost`
/// skip it.)
fn connect_tcp(
    info: &ConnectionInfo,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<TcpStream, RedisError> {
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
        let phase = "connecting";
        let (limit, by_deadline) =
            wait_limit(timeout, deadline).ok_or(RedisError::Deadline { phase })?;
        match TcpStream::connect_timeout(&address, limit) {
            Ok(stream) => return Ok(stream),
            Err(e) if by_deadline && is_timeout(&e) => return Err(RedisError::Deadline { phase }),
            Err(e) => last_error = e,
        }
    }
    Err(connect_error(last_error))
}

/// How long the next wait may last: `timeout`, or less if the caller's `deadline` comes first
/// (then `true`: a timeout of this wait is the caller's). `None` once the deadline has passed.
fn wait_limit(timeout: Duration, deadline: Option<Instant>) -> Option<(Duration, bool)> {
    let Some(deadline) = deadline else {
        return Some((timeout, false));
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        None
    } else if left < timeout {
        Some((left, true))
    } else {
        Some((timeout, false))
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Marks an I/O error as the caller's deadline having passed (rather than Redis being slow).
#[derive(Debug)]
struct DeadlinePassed;

impl fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the caller's deadline passed")
    }
}

impl std::error::Error for DeadlinePassed {}

fn deadline_passed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, DeadlinePassed)
}

fn is_deadline_passed(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<DeadlinePassed>())
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// A TCP stream whose reads and writes give up after `io_timeout` without progress, or earlier
/// at the current command's `deadline`; a wait ended by the deadline fails with an error for
/// which [`is_deadline_passed`] holds.
#[derive(Debug)]
struct TimedStream {
    stream: TcpStream,
    /// Longest wait for progress allowed to Redis (the configured I/O timeout).
    io_timeout: Duration,
    enforcement: TimeoutEnforcement,
    /// When the current command's caller gives up (set per command).
    deadline: Option<Instant>,
    /// Receive timeout currently set on the socket (with socket enforcement), so the common
    /// case of a distant deadline costs no `setsockopt` per read.
    read_timeout: Duration,
    /// Send timeout currently set on the socket (with socket enforcement).
    write_timeout: Duration,
}

impl TimedStream {
    /// Runs one read or write (`attempt`) bounded by `io_timeout` and the deadline.
    ///
    /// With socket timeouts, the socket's timeout is lowered to the time left when the deadline
    /// is nearer than `io_timeout` (and restored afterwards, only when it differs). When
    /// polling, `attempt` is repeated while the non-blocking socket is not ready, pausing a
    /// little longer each time, until it makes progress or the wait limit has passed.
    fn poll<T>(
        &mut self,
        direction: Direction,
        mut attempt: impl FnMut(&mut TcpStream) -> io::Result<T>,
    ) -> io::Result<T> {
        let stream = &mut self.stream;
        let (limit, by_deadline) =
            wait_limit(self.io_timeout, self.deadline).ok_or_else(deadline_passed)?;
        let timed_out = || {
            if by_deadline {
                deadline_passed()
            } else {
                io::Error::from(io::ErrorKind::TimedOut)
            }
        };
        match self.enforcement {
            TimeoutEnforcement::None => return attempt(stream),
            TimeoutEnforcement::Socket => {
                let current = match direction {
                    Direction::Read => &mut self.read_timeout,
                    Direction::Write => &mut self.write_timeout,
                };
                if *current != limit {
                    match direction {
                        Direction::Read => stream.set_read_timeout(Some(limit))?,
                        Direction::Write => stream.set_write_timeout(Some(limit))?,
                    }
                    *current = limit;
                }
                return match attempt(stream) {
                    Err(e) if is_timeout(&e) => Err(timed_out()),
                    other => other,
                };
            }
            TimeoutEnforcement::Polling => {}
        }
        // `None` only for an `io_timeout` too large for an `Instant`: no limit then.
        let give_up = Instant::now().checked_add(limit);
        let mut pause = Duration::from_micros(20);
        let mut round = 0u32;
        loop {
            round = round.saturating_add(1);
            match attempt(stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = give_up.map(|at| at.saturating_duration_since(Instant::now()));
                    if left.is_some_and(|left| left.is_zero()) {
                        return Err(timed_out());
                    }
                    // Replies usually come within microseconds: yield first, then back off.
                    if round <= 8 {
                        thread::yield_now();
                    } else {
                        thread::sleep(left.map_or(pause, |left| pause.min(left)));
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
        self.poll(Direction::Read, |stream| stream.read(buf))
    }
}

impl Write for TimedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll(Direction::Write, |stream| stream.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// Answers every request on one connection with `+PONG`.
    fn pong_server() -> (ConnectionInfo, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = thread::spawn(move || {
            let Ok((mut socket, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            while socket.read(&mut buf).unwrap_or(0) > 0 {
                if socket.write_all(b"+PONG\r\n").is_err() {
                    return;
                }
            }
        });
        let info = ConnectionInfo::parse(&format!("redis://127.0.0.1:{port}")).expect("url");
        (info, handle)
    }

    fn socket_read_timeout(connection: &Connection) -> Option<Duration> {
        connection.stream.stream.read_timeout().ok().flatten()
    }

    #[test]
    fn socket_timeouts_follow_a_near_deadline_and_are_restored() {
        let (info, server) = pong_server();
        let options = ConnectionOptions::default();
        let io_timeout = options.io_timeout;
        let mut connection =
            Connection::connect(&info, &options, &Bounds::UNBOUNDED).expect("connect");
        assert_eq!(connection.timeout_enforcement(), TimeoutEnforcement::Socket);
        connection.ping(&Bounds::UNBOUNDED).expect("ping");
        assert_eq!(connection.stream.read_timeout, io_timeout);
        assert_eq!(socket_read_timeout(&connection), Some(io_timeout));

        // A deadline further away than io_timeout changes nothing.
        let far = Bounds::within(Duration::from_secs(60), usize::MAX);
        connection.ping(&far).expect("ping");
        assert_eq!(connection.stream.read_timeout, io_timeout);

        // A nearer deadline lowers both timeouts to the time left.
        let near = Bounds::within(Duration::from_secs(2), usize::MAX);
        connection.ping(&near).expect("ping");
        let lowered = connection.stream.read_timeout;
        assert!(lowered <= Duration::from_secs(2), "{lowered:?}");
        assert!(connection.stream.write_timeout <= Duration::from_secs(2));
        let on_socket = socket_read_timeout(&connection).expect("a timeout is set");
        assert!(on_socket <= Duration::from_secs(2), "{on_socket:?}");

        // The next call without a near deadline gets io_timeout back.
        connection.ping(&far).expect("ping");
        assert_eq!(connection.stream.read_timeout, io_timeout);
        assert_eq!(connection.stream.write_timeout, io_timeout);
        assert_eq!(socket_read_timeout(&connection), Some(io_timeout));
        drop(connection);
        server.join().expect("server thread");
    }

    #[test]
    fn wait_limit_says_whose_limit_applies() {
        let timeout = Duration::from_secs(5);
        assert_eq!(wait_limit(timeout, None), Some((timeout, false)));
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(wait_limit(timeout, Some(far)), Some((timeout, false)));
        let near = Instant::now() + Duration::from_secs(1);
        let (limit, by_deadline) = wait_limit(timeout, Some(near)).expect("time left");
        assert!(by_deadline && limit <= Duration::from_secs(1));
        assert_eq!(wait_limit(timeout, Some(Instant::now())), None);
    }

    #[test]
    fn deadline_errors_are_recognised() {
        assert!(is_deadline_passed(&deadline_passed()));
        assert!(!is_deadline_passed(&io::Error::from(
            io::ErrorKind::TimedOut
        )));
        assert!(is_timeout(&deadline_passed()));
    }
}
