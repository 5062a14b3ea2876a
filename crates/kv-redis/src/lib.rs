//! Redis backend for the [`keyvalue::KeyValue`] capability.
//!
//! A small blocking RESP2 client over `std::net::TcpStream` (no socket2, no libc), so the same
//! code runs on Linux and inside the hermit unikernel. [`RedisStore`] keeps a small pool of
//! connections, reconnects on its own after Redis restarts, and maps every failure to a
//! [`KvError`].
//!
//! Key layout: the value of `key` in store `store` lives in the Redis key `<store>:<key>`, where
//! `%` and `:` in the store name are written `%25` and `%3A`, so stores never overlap.
//! [`KeyValue::keys`] walks the store with `SCAN ... MATCH <store>:* COUNT 1000`, never `KEYS`.
//!
//! ```
//! use kv_redis::RedisStore;
//!
//! // Nothing connects yet: the first operation does, and every later one reconnects if needed.
//! let store = RedisStore::new("redis://:secret@127.0.0.1:6379/0")?;
//! assert_eq!(store.config().connection.db, 0);
//! # Ok::<(), kv_redis::RedisError>(())
//! ```
//!
//! Timeouts: hermit 0.11 rejects `SO_RCVTIMEO`/`SO_SNDTIMEO`, so there connections switch to
//! a non-blocking socket polled against a deadline ([`TimeoutStrategy`]); Linux uses socket
//! timeouts.
//!
//! Every call honours the caller's [`Bounds`]: waiting for a pooled connection, connecting and
//! each read and write wait at most until `bounds.deadline` (besides the configured
//! `pool_wait`, `connect_timeout` and `io_timeout`), and a reply whose payload exceeds
//! `bounds.max_reply_bytes` is refused on its length header, before it is buffered. A wait cut
//! short by the caller's deadline is [`KvError::Timeout`]; a reply that did not come within the
//! configured `io_timeout` is Redis's slowness, [`KvError::BackendTimeout`]; a pool that stayed
//! busy is [`KvError::Connection`] (see [`connection`]). Refused credentials are
//! [`KvError::Authentication`], a value Redis finds too long [`KvError::InvalidValue`].

pub mod connection;
pub mod resp;
/// `redis://` URLs (a crate of its own: the configuration parses them without this client).
pub use redis_url as url;

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keyvalue::{Bounds, KeyValue, KvError, Write, validate_name};

pub use connection::{Connection, ConnectionOptions, TimeoutEnforcement, TimeoutStrategy};
pub use resp::{Limits, ProtocolError, ReplyBudget, Value};
pub use url::{ConnectionInfo, UrlError};

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL given to [`RedisStore::new`] is malformed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// No TCP connection could be established.
    #[error("cannot connect to redis at {address}: {source}")]
    Connect {
        /// `host:port` tried.
        address: String,
        /// The last connect error.
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("redis connection failed: {0}")]
    Io(#[source] io::Error),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis closed the connection.
    #[error("redis closed the connection")]
    Closed,
    /// Redis sent bytes that are not valid RESP2 within our limits.
    #[error("redis protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// Redis refused our credentials or requires some.
    #[error("redis authentication failed: {0}")]
    Auth(String),
    /// Redis answered a command with an error reply.
    #[error("redis error: {0}")]
    Server(String),
    /// Redis answered with a reply of the wrong type.
    #[error("unexpected redis reply to {command}: {reply}")]
    UnexpectedReply {
        /// The command sent.
        command: &'static str,
        /// What came back (a description, not the payload).
        reply: String,
    },
    /// All pooled connections stayed busy for too long.
    #[error("all {0} redis connections busy")]
    PoolExhausted(usize),
    /// The caller's deadline passed during `phase` (before the configured timeout would have).
    #[error("redis call gave up {phase}: the caller's deadline passed")]
    Deadline {
        /// What was being waited for, such as "waiting for the reply".
        phase: &'static str,
    },
    /// A reply would exceed what the caller can take; refused before it was buffered.
    #[error("{}", KvError::TooLarge { limit: *.limit, size: *.size })]
    TooLarge {
        /// The caller's limit in bytes.
        limit: usize,
        /// Size of the reply (or of the part that did not fit), when known.
        size: Option<usize>,
    },
}

impl RedisError {
    /// Whether the connection that produced this error is unusable afterwards.
    pub fn breaks_connection(&self) -> bool {
        !matches!(self, RedisError::Server(_))
    }

    /// Whether the connection broke in a way a stale pooled connection would (closed or reset
    /// by the peer), so one retry on a fresh connection is worthwhile.
    fn is_stale_connection(&self) -> bool {
        matches!(self, RedisError::Closed | RedisError::Io(_))
    }
}

impl From<RedisError> for KvError {
    fn from(error: RedisError) -> Self {
        let message = error.to_string();
        match error {
            RedisError::Deadline { .. } => KvError::Timeout(message),
            RedisError::TooLarge { limit, size } => KvError::TooLarge { limit, size },
            RedisError::Timeout(_) => KvError::BackendTimeout(message),
            RedisError::Auth(_) => KvError::Authentication(message),
            RedisError::Connect { .. }
            | RedisError::Io(_)
            | RedisError::Closed
            | RedisError::PoolExhausted(_) => KvError::Connection(message),
            // Redis refuses a value longer than its `proto-max-bulk-len`.
            RedisError::Server(reply) if reply.contains("exceeds maximum allowed size") => {
                KvError::InvalidValue(message)
            }
            RedisError::Protocol(_) | RedisError::Server(_) => KvError::Io(message),
            RedisError::Url(_) | RedisError::UnexpectedReply { .. } => KvError::Unexpected(message),
        }
    }
}

/// Settings of a [`RedisStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Server address, credentials and database.
    pub connection: ConnectionInfo,
    /// Timeouts and reply limits of each connection.
    pub options: ConnectionOptions,
    /// Most connections open at once.
    pub pool_size: usize,
    /// How long a caller waits for a connection when all `pool_size` are in use.
    pub pool_wait: Duration,
    /// `COUNT` hint for each `SCAN` round of [`KeyValue::keys`].
    pub scan_count: usize,
}

impl RedisConfig {
    /// Defaults (pool of 8, 2 s connect and 5 s I/O timeouts, 512 MiB values) for `url`.
    pub fn from_url(url: &str) -> Result<Self, RedisError> {
        Ok(Self::new(ConnectionInfo::parse(url)?))
    }

    /// Defaults for an already parsed connection.
    pub fn new(connection: ConnectionInfo) -> Self {
        Self {
            connection,
            options: ConnectionOptions::default(),
            pool_size: 8,
            pool_wait: Duration::from_secs(5),
            scan_count: 1000,
        }
    }
}

/// A [`KeyValue`] backend storing every store in one Redis database.
#[derive(Debug)]
pub struct RedisStore {
    config: RedisConfig,
    pool: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Connection>,
    /// Idle plus checked-out connections, plus connections being opened.
    open: usize,
}

impl RedisStore {
    /// A store for `redis://[[user]:password@]host[:port][/db]` with default settings.
    /// Does not connect yet: connections are opened on first use.
    pub fn new(url: &str) -> Result<Self, RedisError> {
        Ok(Self::with_config(RedisConfig::from_url(url)?))
    }

    /// A store with explicit settings (a pool size of 0 is treated as 1).
    pub fn with_config(mut config: RedisConfig) -> Self {
        config.pool_size = config.pool_size.max(1);
        config.scan_count = config.scan_count.max(1);
        Self {
            config,
            pool: Mutex::new(PoolState::default()),
            returned: Condvar::new(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Checks that Redis answers `PING` within `bounds`.
    pub fn ping(&self, bounds: &Bounds) -> Result<(), RedisError> {
        self.run(bounds, |connection| connection.ping(bounds))
    }

    /// Connections currently open (idle or in use).
    pub fn open_connections(&self) -> usize {
        self.lock().open
    }

    /// Runs `operation` on a pooled connection, waiting for one and connecting within
    /// `bounds.deadline`; `operation` must pass the deadline on to its commands. If a reused
    /// connection turns out to be dead (Redis restarted), the idle pool is flushed and the
    /// operation retried once on a fresh connection, so `operation` may run twice and must be
    /// idempotent (GET, SET, DEL and SCAN as used here are). The retry is bounded by the same
    /// deadline: a passed deadline fails it before it connects.
    pub fn run<T>(
        &self,
        bounds: &Bounds,
        operation: impl Fn(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        // Fail before touching the pool: a command started with no time left would break a
        // healthy connection.
        if bounds.expired() {
            return Err(RedisError::Deadline {
                phase: "before starting",
            });
        }
        let mut lease = self.checkout(true, bounds)?;
        match lease.run(&operation) {
            Err(error) if lease.reused && error.is_stale_connection() => {
                drop(lease);
                self.drop_idle();
                log::debug!("pooled redis connection was stale ({error}); retrying on a new one");
                self.checkout(false, bounds)?.run(&operation)
            }
            result => result,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock cannot leave the pool inconsistent.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an idle connection (if `reuse`) or opens a new one within the pool size, waiting
    /// for a free slot at most `pool_wait` and never past the caller's deadline.
    fn checkout(&self, reuse: bool, bounds: &Bounds) -> Result<Lease<'_>, RedisError> {
        let pool_deadline = Instant::now().checked_add(self.config.pool_wait);
        // Which limit ends the wait decides the error: the caller's deadline is a Timeout,
        // the configured pool_wait means Redis is overloaded (a Connection error).
        let (deadline, callers) = match (bounds.deadline, pool_deadline) {
            (Some(callers), Some(pool)) if callers < pool => (Some(callers), true),
            (Some(callers), None) => (Some(callers), true),
            (_, pool) => (pool, false),
        };
        let mut state = self.lock();
        loop {
            if reuse && let Some(connection) = state.idle.pop() {
                return Ok(Lease {
                    store: self,
                    connection: Some(connection),
                    reused: true,
                });
            }
            if state.open < self.config.pool_size {
                state.open += 1;
                drop(state);
                let connected =
                    Connection::connect(&self.config.connection, &self.config.options, bounds);
                return match connected {
                    Ok(connection) => Ok(Lease {
                        store: self,
                        connection: Some(connection),
                        reused: false,
                    }),
                    Err(error) => {
                        self.release_slot();
                        Err(error)
                    }
                };
            }
            let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            state = match left {
                Some(left) if left.is_zero() && callers => {
                    return Err(RedisError::Deadline {
                        phase: "waiting for a free connection",
                    });
                }
                Some(left) if left.is_zero() => {
                    return Err(RedisError::PoolExhausted(self.config.pool_size));
                }
                Some(left) => {
                    self.returned
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                // A pool_wait too long for an `Instant` and no deadline: wait as long as it takes.
                None => self.returned.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    fn release_slot(&self) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.returned.notify_one();
    }

    /// Closes all idle connections (after one turned out dead, the others likely are too).
    fn drop_idle(&self) {
        let mut state = self.lock();
        let idle = std::mem::take(&mut state.idle);
        state.open = state.open.saturating_sub(idle.len());
        drop(state);
        drop(idle);
        self.returned.notify_all();
    }

    /// The key names of `store`, or `None` once what they cost the host adds up to more than
    /// `bounds.max_reply_bytes`.
    ///
    /// Everything the walk holds is counted against that limit before it is allocated: each
    /// name collected costs [`COLLECTED_KEY_OVERHEAD`] besides its bytes, and each `SCAN` round
    /// may cost at most what the names collected so far leave, its keys
    /// [`ROUND_KEY_OVERHEAD`] and twice their length each (store prefix included), plus a
    /// constant for the cursor. A round that would cost more is refused on the length header of
    /// the first key that does not fit ([`RedisError::TooLarge`]); that connection is out of
    /// step and dropped. SCAN may return a key more than once; the copies are counted until
    /// the walk ends, then dropped.
    fn keys_of(&self, store: &str, bounds: &Bounds) -> Result<Option<Vec<String>>, RedisError> {
        /// Room for the cursor, which is charged like a key: at most 20 digits.
        const CURSOR_LEN: usize = 20;
        let prefix = key_prefix(store);
        let pattern = format!("{}*", glob_escape(&prefix));
        let scan_count = self.config.scan_count;
        let limit = bounds.max_reply_bytes;
        self.run(bounds, |connection| {
            let mut names: Vec<String> = Vec::new();
            let mut size = 0usize;
            let mut cursor = 0;
            loop {
                // Each payload byte of the round is held twice, so the parser is given half of
                // what is left, and half of each key's overhead.
                let per_bulk = ROUND_KEY_OVERHEAD / 2;
                let budget = ReplyBudget {
                    max_bytes: (limit.saturating_sub(size) / 2)
                        .saturating_add(CURSOR_LEN + per_bulk),
                    per_bulk,
                };
                let (next, batch) = connection
                    .scan(
                        cursor,
                        pattern.as_bytes(),
                        scan_count,
                        bounds.deadline,
                        &budget,
                    )
                    .map_err(|error| match error {
                        // The size of one name says nothing about the listing's.
                        RedisError::TooLarge { .. } => RedisError::TooLarge { limit, size: None },
                        error => error,
                    })?;
                for key in batch {
                    // Keys not written through this API (not UTF-8) cannot be named by callers.
                    if let Some(name) = key.strip_prefix(prefix.as_bytes())
                        && let Ok(name) = std::str::from_utf8(name)
                    {
                        size =
                            size.saturating_add(name.len().saturating_add(COLLECTED_KEY_OVERHEAD));
                        if size > limit {
                            return Ok(None);
                        }
                        names.push(name.to_string());
                    }
                }
                if next == 0 {
                    names.sort_unstable();
                    names.dedup();
                    // Without the spare capacity, the listing costs what callers charge for it
                    // (at most `keyvalue::listing_cost`).
                    names.shrink_to_fit();
                    return Ok(Some(names));
                }
                cursor = next;
            }
        })
    }
}

/// Host bytes a collected name costs during a key listing besides its bytes: its `String` in
/// the growing list (24 bytes, up to 72 while the list doubles: the old and the new buffer) and
/// its allocation's header and rounding (up to 32 with glibc).
const COLLECTED_KEY_OVERHEAD: usize = 72 + 32;

/// Host bytes a key of a `SCAN` reply costs besides twice its length (the read buffer and
/// the parsed reply both hold it) until its round is collected: its RESP framing in the buffer
/// (up to 16), its `Value` in the parsed array (32, up to 64 with spare capacity), its
/// allocation's header and rounding (32), its slot in the batch (24, up to 32 when
/// converted in place), and its name's copy once collected ([`COLLECTED_KEY_OVERHEAD`]).
const ROUND_KEY_OVERHEAD: usize = 16 + 64 + 32 + 32 + COLLECTED_KEY_OVERHEAD;

// A finished listing costs callers no more than the walk counted for it.
const _: () = assert!(COLLECTED_KEY_OVERHEAD >= keyvalue::LISTED_KEY_OVERHEAD);

/// A checked-out connection; goes back to the pool on drop unless it broke.
struct Lease<'a> {
    store: &'a RedisStore,
    connection: Option<Connection>,
    reused: bool,
}

impl Lease<'_> {
    fn run<T>(
        &mut self,
        operation: impl Fn(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let Some(connection) = self.connection.as_mut() else {
            return Err(RedisError::Closed);
        };
        let result = operation(connection);
        if let Err(error) = &result
            && error.breaks_connection()
        {
            self.connection = None;
        }
        result
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        match self.connection.take() {
            Some(connection) => {
                self.store.lock().idle.push(connection);
                self.store.returned.notify_one();
            }
            None => self.store.release_slot(),
        }
    }
}

/// `<store>:` with `%` and `:` in the store name escaped, so the first `:` ends the store name.
fn key_prefix(store: &str) -> String {
    let mut prefix = String::with_capacity(store.len() + 1);
    for c in store.chars() {
        match c {
            '%' => prefix.push_str("%25"),
            ':' => prefix.push_str("%3A"),
            c => prefix.push(c),
        }
    }
    prefix.push(':');
    prefix
}

fn redis_key(store: &str, key: &str) -> Result<Vec<u8>, KvError> {
    validate_name(store)?;
    validate_name(key)?;
    let mut full = key_prefix(store).into_bytes();
    full.extend_from_slice(key.as_bytes());
    Ok(full)
}

/// Escapes Redis glob metacharacters so `text` matches only itself in `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Maps an error of `operation` (started at `started`) to a [`KvError`], saying for a passed
/// deadline which operation gave up, while doing what, and after how long.
fn kv_error(operation: &str, started: Instant, error: RedisError) -> KvError {
    match error {
        RedisError::Deadline { phase } => KvError::Timeout(format!(
            "redis {operation} gave up {phase} after {} ms: the caller's deadline passed",
            started.elapsed().as_millis()
        )),
        error => error.into(),
    }
}

impl KeyValue for RedisStore {
    fn open(&self, store: &str, bounds: &Bounds) -> Result<(), KvError> {
        let started = Instant::now();
        validate_name(store)?;
        self.ping(bounds).map_err(|e| kv_error("open", started, e))
    }

    fn get(&self, store: &str, key: &str, bounds: &Bounds) -> Result<Vec<u8>, KvError> {
        let started = Instant::now();
        let full = redis_key(store, key)?;
        self.run(bounds, |connection| connection.get(&full, bounds))
            .map_err(|e| kv_error("get", started, e))?
            .ok_or_else(|| KvError::KeyNotFound(key.to_string()))
    }

    fn set(&self, store: &str, key: &str, value: &[u8], bounds: &Bounds) -> Result<(), KvError> {
        let started = Instant::now();
        let full = redis_key(store, key)?;
        self.run(bounds, |connection| connection.set(&full, value, bounds))
            .map_err(|e| kv_error("set", started, e))
    }

    fn keys(&self, store: &str, bounds: &Bounds) -> Result<Vec<String>, KvError> {
        let started = Instant::now();
        validate_name(store)?;
        self.keys_of(store, bounds)
            .map_err(|e| kv_error("keys", started, e))?
            .ok_or(KvError::TooLarge {
                limit: bounds.max_reply_bytes,
                size: None,
            })
    }

    fn delete(&self, store: &str, key: &str, bounds: &Bounds) -> Result<(), KvError> {
        let started = Instant::now();
        let full = redis_key(store, key)?;
        self.run(bounds, |connection| connection.del(&full, bounds))
            .map_err(|e| kv_error("delete", started, e))?;
        Ok(())
    }

    /// `MULTI`, the writes (`SET`/`DEL`), `INCR` of the counter, `EXEC`: Redis runs the
    /// transaction as one step.
    fn write_counted(
        &self,
        writes: &[Write<'_>],
        (counter_store, counter_key): (&str, &str),
        bounds: &Bounds,
    ) -> Result<u64, KvError> {
        let started = Instant::now();
        let counter = redis_key(counter_store, counter_key)?;
        let writes = writes
            .iter()
            .map(|write| {
                let (store, key) = write.target();
                let value = match write {
                    Write::Set { value, .. } => Some(*value),
                    Write::Delete { .. } => None,
                };
                Ok((redis_key(store, key)?, value))
            })
            .collect::<Result<Vec<_>, KvError>>()?;
        self.run(bounds, |connection| {
            connection.transaction(
                writes.iter().map(|(key, value)| (key.as_slice(), *value)),
                &counter,
                bounds,
            )
        })
        .map_err(|e| kv_error("write_counted", started, e))
    }
}

#[cfg(test)]
mod tests;
