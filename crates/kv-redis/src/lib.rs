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

pub mod connection;
pub mod resp;
pub mod url;

use std::collections::HashSet;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keyvalue::{KeyValue, KvError, validate_name};

pub use connection::{Connection, ConnectionOptions, TimeoutEnforcement, TimeoutStrategy};
pub use resp::{Limits, ProtocolError, Value};
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
            RedisError::Connect { .. }
            | RedisError::Io(_)
            | RedisError::Timeout(_)
            | RedisError::Closed
            | RedisError::Auth(_)
            | RedisError::PoolExhausted(_) => KvError::Connection(message),
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

    /// Checks that Redis answers `PING`.
    pub fn ping(&self) -> Result<(), RedisError> {
        self.run(Connection::ping)
    }

    /// Connections currently open (idle or in use).
    pub fn open_connections(&self) -> usize {
        self.lock().open
    }

    /// Runs `operation` on a pooled connection. If a reused connection turns out to be dead
    /// (Redis restarted), the idle pool is flushed and the operation retried once on a fresh
    /// connection, so `operation` may run twice and must be idempotent (GET, SET, DEL and SCAN
    /// as used here are).
    pub fn run<T>(
        &self,
        operation: impl Fn(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let mut lease = self.checkout(true)?;
        match lease.run(&operation) {
            Err(error) if lease.reused && error.is_stale_connection() => {
                drop(lease);
                self.drop_idle();
                log::debug!("pooled redis connection was stale ({error}); retrying on a new one");
                self.checkout(false)?.run(&operation)
            }
            result => result,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock cannot leave the pool inconsistent.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an idle connection (if `reuse`) or opens a new one within the pool size.
    fn checkout(&self, reuse: bool) -> Result<Lease<'_>, RedisError> {
        let deadline = Instant::now() + self.config.pool_wait;
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
                return match Connection::connect(&self.config.connection, &self.config.options) {
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
            let now = Instant::now();
            if now >= deadline {
                return Err(RedisError::PoolExhausted(self.config.pool_size));
            }
            state = self
                .returned
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
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

    fn keys_of(&self, store: &str) -> Result<Vec<String>, RedisError> {
        let prefix = key_prefix(store);
        let pattern = format!("{}*", glob_escape(&prefix));
        let scan_count = self.config.scan_count;
        self.run(|connection| {
            let mut keys = HashSet::new();
            let mut cursor = 0;
            loop {
                let (next, batch) = connection.scan(cursor, pattern.as_bytes(), scan_count)?;
                for key in batch {
                    // Keys not written through this API (not UTF-8) cannot be named by callers.
                    if let Some(name) = key.strip_prefix(prefix.as_bytes())
                        && let Ok(name) = String::from_utf8(name.to_vec())
                    {
                        keys.insert(name);
                    }
                }
                if next == 0 {
                    return Ok(keys.into_iter().collect());
                }
                cursor = next;
            }
        })
    }
}

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

impl KeyValue for RedisStore {
    fn open(&self, store: &str) -> Result<(), KvError> {
        validate_name(store)?;
        Ok(self.ping()?)
    }

    fn get(&self, store: &str, key: &str) -> Result<Vec<u8>, KvError> {
        let full = redis_key(store, key)?;
        self.run(|connection| connection.get(&full))?
            .ok_or_else(|| KvError::KeyNotFound(key.to_string()))
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let full = redis_key(store, key)?;
        Ok(self.run(|connection| connection.set(&full, value))?)
    }

    fn keys(&self, store: &str) -> Result<Vec<String>, KvError> {
        validate_name(store)?;
        Ok(self.keys_of(store)?)
    }

    fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        let full = redis_key(store, key)?;
        self.run(|connection| connection.del(&full))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
