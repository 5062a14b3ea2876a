//! The application's configuration, read from `key=value` words on the kernel command line
//! (hermit) or argv (native), and a minimal console logger.
//!
//! ```
//! let config = boot_config::Config::parse("port=9000 workers=4 kv=memory").unwrap();
//! assert_eq!(config.port, 9000);
//! assert_eq!(config.workers, 4);
//! ```

mod logging;

use std::fmt;

pub use log::LevelFilter;
pub use logging::{init_logging, uptime};

/// Where the key-value capability stores its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvBackend {
    /// In-process memory (`kv=memory`), lost on restart.
    Memory,
    /// A Redis server (`kv=redis://[[user]:password@]host[:port][/db]`, port 6379 by default).
    Redis(redis_url::ConnectionInfo),
}

impl fmt::Display for KvBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvBackend::Memory => write!(f, "memory"),
            KvBackend::Redis(info) => write!(f, "{info}"),
        }
    }
}

/// The typed configuration with defaults for every key.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// `bind=`: IP address to listen on (default 0.0.0.0; the native run uses 127.0.0.1).
    pub bind: std::net::IpAddr,
    /// `port=`: TCP port to listen on (default 8080; 0 picks a free port).
    pub port: u16,
    /// `log=`: off, error, warn, info (default), debug or trace.
    pub log: LevelFilter,
    /// `io-threads=`: threads that own connections and parse requests, 1..=64 (default: one
    /// per CPU, at most 4).
    pub io_threads: Option<usize>,
    /// `workers=`: threads that run functions on complete requests, 1..=256 (default 2).
    pub workers: usize,
    /// `queue=`: complete requests that may wait for a worker before 503, 0..=65536
    /// (default 1024).
    pub queue: usize,
    /// `max-connections=`: open connections served at once, beyond them 503 and close,
    /// 1..=1000000 (default: from the descriptor limit natively, from RAM under hermit).
    pub max_connections: Option<usize>,
    /// `queue-timeout-ms=`: how long a complete request may wait for a worker before it is
    /// answered 503 without running (default 10000).
    pub queue_timeout_ms: u64,
    /// `root=`: the function that serves paths no endpoint or function claims.
    pub root: Option<String>,
    /// `admin-token=`: bearer token for `/_admin` (admin endpoints disabled when unset).
    pub admin_token: Option<String>,
    /// `kv=`: key-value backend (default memory).
    pub kv: KvBackend,
    /// `max-body=`: largest request body in bytes; `k`/`m` suffixes for KiB/MiB (default 4m).
    pub max_body: usize,
    /// `header-timeout-ms=`: time from a request's first byte to its complete head (default
    /// 10000); 408 beyond.
    pub header_timeout_ms: u64,
    /// `body-timeout-ms=`: base time for a request body, extended at `min-rate` (default 10000).
    pub body_timeout_ms: u64,
    /// `send-timeout-ms=`: base time for writing a response, extended at `min-rate`
    /// (default 10000).
    pub send_timeout_ms: u64,
    /// `min-rate=`: bytes per second a body or response must move at least (default 1k).
    pub min_rate: usize,
    /// `keepalive-ms=`: how long an idle connection waits for its next request (default 5000).
    pub keepalive_ms: u64,
    /// `memory-budget=`: bytes that functions may use at once, all requests together
    /// (default: from the RAM under hermit, 1 GiB natively).
    pub memory_budget: Option<usize>,
    /// `buffer-budget=`: bytes that request and response buffers may hold, all connections
    /// together, beyond 16 KiB each (default: from the RAM under hermit, 256 MiB natively).
    pub buffer_budget: Option<usize>,
    /// `kv-memory=`: bytes the in-memory key-value store (`kv=memory`) may hold, keys, values
    /// and bookkeeping together; a write beyond fails (default: from the RAM under hermit,
    /// 256 MiB natively).
    pub kv_memory: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: std::net::IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            log: LevelFilter::Info,
            io_threads: None,
            workers: 2,
            queue: 1024,
            max_connections: None,
            queue_timeout_ms: 10_000,
            root: None,
            admin_token: None,
            kv: KvBackend::Memory,
            max_body: 4 * 1024 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            send_timeout_ms: 10_000,
            min_rate: 1024,
            keepalive_ms: 5_000,
            memory_budget: None,
            buffer_budget: None,
            kv_memory: None,
        }
    }
}

/// Every key the configuration accepts (`_` may be written for `-`).
pub const KNOWN_KEYS: &[&str] = &[
    "bind",
    "port",
    "log",
    "io-threads",
    "workers",
    "queue",
    "max-connections",
    "queue-timeout-ms",
    "root",
    "admin-token",
    "kv",
    "max-body",
    "header-timeout-ms",
    "body-timeout-ms",
    "send-timeout-ms",
    "min-rate",
    "keepalive-ms",
    "memory-budget",
    "buffer-budget",
    "kv-memory",
];

/// Why the configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A word without `=`.
    #[error("expected key=value, got {word:?}")]
    NotKeyValue {
        /// The offending word.
        word: String,
    },
    /// A key that is not in [`KNOWN_KEYS`].
    #[error("unknown key {key:?}; known keys: {}", KNOWN_KEYS.join(", "))]
    UnknownKey {
        /// The offending key.
        key: String,
    },
    /// A value that does not fit its key.
    #[error("invalid value for {key}: {reason}")]
    InvalidValue {
        /// The key whose value is wrong.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Parses whitespace-separated `key=value` words (a kernel command line).
    pub fn parse(line: &str) -> Result<Config, ConfigError> {
        Config::from_args(line.split_whitespace())
    }

    /// Parses `key=value` arguments, e.g. `std::env::args().skip(1)`.
    ///
    /// Each argument may hold several words; `--key=value` is accepted as `key=value`, a bare
    /// `--` is ignored, and a later value for a key replaces an earlier one.
    pub fn from_args<I, S>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut config = Config::default();
        for arg in args {
            for word in arg.as_ref().split_whitespace() {
                if word == "--" {
                    continue;
                }
                let word = word.strip_prefix("--").unwrap_or(word);
                let Some((key, value)) = word.split_once('=') else {
                    return Err(ConfigError::NotKeyValue {
                        word: word.to_string(),
                    });
                };
                config.set(key, value)?;
            }
        }
        Ok(config)
    }

    /// Sets one key from its textual value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let normalized = key.replace('_', "-");
        let Some(&key) = KNOWN_KEYS.iter().find(|known| **known == normalized) else {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
            });
        };
        let invalid = |reason: String| ConfigError::InvalidValue { key, reason };
        match key {
            "bind" => {
                self.bind = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?} is not an IP address")))?;
            }
            "port" => {
                self.port = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?} is not a port number (0..=65535)")))?;
            }
            "log" => {
                self.log = parse_level(value).ok_or_else(|| {
                    invalid(format!(
                        "{value:?} is not one of off, error, warn, info, debug, trace"
                    ))
                })?
            }
            "io-threads" => self.io_threads = Some(parse_bounded(value, 1, 64).map_err(invalid)?),
            "workers" => self.workers = parse_bounded(value, 1, 256).map_err(invalid)?,
            "queue" => self.queue = parse_bounded(value, 0, 65_536).map_err(invalid)?,
            "max-connections" => {
                self.max_connections = Some(parse_bounded(value, 1, 1_000_000).map_err(invalid)?);
            }
            "root" => {
                if !is_function_name(value) {
                    return Err(invalid(format!(
                        "{value:?} is not a function name (1-64 of A-Z a-z 0-9 _ -)"
                    )));
                }
                self.root = Some(value.to_string());
            }
            "admin-token" => {
                if value.len() < 8 || !value.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid(
                        "the token needs at least 8 printable ASCII characters".to_string(),
                    ));
                }
                self.admin_token = Some(value.to_string());
            }
            "kv" => self.kv = parse_kv(value).map_err(invalid)?,
            "max-body" => self.max_body = parse_size(value).map_err(invalid)?,
            "queue-timeout-ms" => self.queue_timeout_ms = parse_millis(value).map_err(invalid)?,
            "header-timeout-ms" => self.header_timeout_ms = parse_millis(value).map_err(invalid)?,
            "body-timeout-ms" => self.body_timeout_ms = parse_millis(value).map_err(invalid)?,
            "send-timeout-ms" => self.send_timeout_ms = parse_millis(value).map_err(invalid)?,
            "keepalive-ms" => self.keepalive_ms = parse_millis(value).map_err(invalid)?,
            "min-rate" => self.min_rate = parse_size(value).map_err(invalid)?.max(1),
            "memory-budget" => {
                self.memory_budget = Some(parse_size(value).map_err(invalid)?.max(1 << 20));
            }
            "buffer-budget" => self.buffer_budget = Some(parse_size(value).map_err(invalid)?),
            "kv-memory" => self.kv_memory = Some(parse_size(value).map_err(invalid)?),
            _ => unreachable!("every known key is handled"),
        }
        Ok(())
    }

    /// The configuration as `key=value` words, with the admin token redacted.
    pub fn summary(&self) -> String {
        let auto =
            |value: Option<usize>| value.map_or_else(|| "auto".to_string(), |v| v.to_string());
        format!(
            "bind={} port={} log={} io-threads={} workers={} queue={} queue-timeout-ms={} \
             max-connections={} root={} \
             admin-token={} kv={} max-body={} header-timeout-ms={} body-timeout-ms={} \
             send-timeout-ms={} min-rate={} keepalive-ms={} memory-budget={} buffer-budget={} \
             kv-memory={}",
            self.bind,
            self.port,
            self.log.as_str().to_ascii_lowercase(),
            auto(self.io_threads),
            self.workers,
            self.queue,
            self.queue_timeout_ms,
            auto(self.max_connections),
            self.root.as_deref().unwrap_or("-"),
            if self.admin_token.is_some() {
                "<set>"
            } else {
                "-"
            },
            self.kv,
            self.max_body,
            self.header_timeout_ms,
            self.body_timeout_ms,
            self.send_timeout_ms,
            self.min_rate,
            self.keepalive_ms,
            auto(self.memory_budget),
            auto(self.buffer_budget),
            auto(self.kv_memory),
        )
    }
}

impl fmt::Debug for Config {
    /// Like [`Config::summary`]: never prints the admin token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Config({})", self.summary())
    }
}

fn parse_level(value: &str) -> Option<LevelFilter> {
    let level = match value.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" | "warning" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    };
    Some(level)
}

fn parse_bounded(value: &str, min: usize, max: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(format!("{value:?} is not a number in {min}..={max}")),
    }
}

fn parse_millis(value: &str) -> Result<u64, String> {
    parse_bounded(value, 1, 3_600_000).map(|ms| ms as u64)
}

/// Bytes, optionally with a `k` (KiB), `m` (MiB) or `g` (GiB) suffix; at most 64 GiB.
pub fn parse_size(value: &str) -> Result<usize, String> {
    let lower = value.to_ascii_lowercase();
    let (digits, unit) = if let Some(d) = lower.strip_suffix('k') {
        (d, 1 << 10)
    } else if let Some(d) = lower.strip_suffix('m') {
        (d, 1 << 20)
    } else if let Some(d) = lower.strip_suffix('g') {
        (d, 1 << 30)
    } else {
        (lower.as_str(), 1)
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&bytes| bytes as u64 <= 64 << 30)
        .ok_or_else(|| {
            format!("{value:?} is not a size in bytes (e.g. 65536, 64k, 4m, 1g; max 64g)")
        })
}

fn parse_kv(value: &str) -> Result<KvBackend, String> {
    if value == "memory" {
        return Ok(KvBackend::Memory);
    }
    if !value.starts_with("redis://") {
        return Err(format!(
            "{value:?} is neither memory nor redis://[[user]:password@]host[:port][/db]"
        ));
    }
    redis_url::ConnectionInfo::parse(value)
        .map(KvBackend::Redis)
        .map_err(|e| e.to_string())
}

fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_address() {
        assert_eq!(Config::default().bind.to_string(), "0.0.0.0");
        assert_eq!(
            Config::parse("bind=127.0.0.1").unwrap().bind.to_string(),
            "127.0.0.1"
        );
        assert!(matches!(
            Config::parse("bind=localhost"),
            Err(ConfigError::InvalidValue { key: "bind", .. })
        ));
    }

    #[test]
    fn defaults() {
        let config = Config::parse("").expect("empty line");
        assert_eq!(config, Config::default());
        assert_eq!(config.port, 8080);
        assert_eq!(config.log, LevelFilter::Info);
        assert_eq!(config.workers, 2);
        assert_eq!(config.kv, KvBackend::Memory);
        assert_eq!(config.root, None);
    }

    #[test]
    fn parses_every_key() {
        let config = Config::parse(
            "port=9000 log=DEBUG io-threads=3 workers=4 queue=0 max-connections=77 \
             root=http-server-demo admin-token=s3cret-token kv=redis://10.0.2.2:6380 max-body=64k \
             header-timeout-ms=2500 body-timeout-ms=2600 send-timeout-ms=2700 min-rate=2k \
             keepalive-ms=300 memory-budget=48m buffer-budget=3m queue-timeout-ms=700",
        )
        .expect("valid line");
        assert_eq!(config.port, 9000);
        assert_eq!(config.log, LevelFilter::Debug);
        assert_eq!(config.workers, 4);
        assert_eq!(config.queue, 0);
        assert_eq!(config.root.as_deref(), Some("http-server-demo"));
        assert_eq!(config.admin_token.as_deref(), Some("s3cret-token"));
        assert_eq!(config.kv.to_string(), "redis://10.0.2.2:6380/0");
        assert_eq!(config.max_body, 65536);
        assert_eq!(config.io_threads, Some(3));
        assert_eq!(config.max_connections, Some(77));
        assert_eq!(config.header_timeout_ms, 2500);
        assert_eq!(config.body_timeout_ms, 2600);
        assert_eq!(config.send_timeout_ms, 2700);
        assert_eq!(config.min_rate, 2048);
        assert_eq!(config.keepalive_ms, 300);
        assert_eq!(config.memory_budget, Some(48 << 20));
        assert_eq!(config.buffer_budget, Some(3 << 20));
        assert_eq!(config.queue_timeout_ms, 700);
    }

    #[test]
    fn argv_forms() {
        let config = Config::from_args([
            "--port=1234",
            "--",
            "log=warn workers=3",
            "admin_token=abcdefgh",
        ])
        .expect("valid args");
        assert_eq!(config.port, 1234);
        assert_eq!(config.log, LevelFilter::Warn);
        assert_eq!(config.workers, 3);
        assert!(config.admin_token.is_some());
        // Later values win.
        assert_eq!(Config::parse("port=1 port=2").map(|c| c.port), Ok(2));
    }

    #[test]
    fn kv_forms() {
        assert_eq!(parse_kv("memory"), Ok(KvBackend::Memory));
        let redis = |url: &str| parse_kv(url).map(|kv| kv.to_string());
        assert_eq!(
            redis("redis://localhost"),
            Ok("redis://localhost:6379/0".into())
        );
        assert_eq!(
            redis("redis://127.0.0.1:7000/2"),
            Ok("redis://127.0.0.1:7000/2".into())
        );
        assert_eq!(
            redis("redis://:secret@h:1"),
            Ok("redis://:***@h:1/0".into())
        );
        for bad in [
            "redis",
            "redis://",
            "redis://h:0",
            "redis://h:x",
            "file://x",
            "Memory",
        ] {
            assert!(parse_kv(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("4m"), Ok(4 << 20));
        assert_eq!(parse_size("1024m"), Ok(1 << 30));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        for bad in ["", "k", "65g", "-1", "1t", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_list_the_known_ones() {
        let error = Config::parse("port=1 colour=blue").expect_err("unknown key");
        assert_eq!(
            error,
            ConfigError::UnknownKey {
                key: "colour".into()
            }
        );
        let message = error.to_string();
        for key in KNOWN_KEYS {
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        for (line, key) in [
            ("port=70000", "port"),
            ("port=http", "port"),
            ("log=loud", "log"),
            ("workers=0", "workers"),
            ("workers=1000", "workers"),
            ("queue=-1", "queue"),
            ("root=a/b", "root"),
            ("root=", "root"),
            ("admin-token=short", "admin-token"),
            ("kv=disk", "kv"),
            ("max-body=lots", "max-body"),
            ("header-timeout-ms=0", "header-timeout-ms"),
            ("keepalive-ms=x", "keepalive-ms"),
            ("max-connections=0", "max-connections"),
            ("memory-budget=lots", "memory-budget"),
            ("kv-memory=1t", "kv-memory"),
        ] {
            match Config::parse(line) {
                Err(ConfigError::InvalidValue { key: got, .. }) => assert_eq!(got, key, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
            let message = Config::parse(line).expect_err(line).to_string();
            assert!(message.contains(key), "{message}");
        }
        assert_eq!(
            Config::parse("port"),
            Err(ConfigError::NotKeyValue {
                word: "port".into()
            })
        );
    }

    #[test]
    fn kv_memory_is_a_size() {
        assert_eq!(Config::default().kv_memory, None);
        assert_eq!(
            Config::parse("kv-memory=16m").unwrap().kv_memory,
            Some(16 << 20)
        );
        assert_eq!(Config::parse("kv_memory=0").unwrap().kv_memory, Some(0));
        let summary = Config::parse("kv-memory=4k").unwrap().summary();
        assert!(summary.ends_with(" kv-memory=4096"), "{summary}");
        assert!(Config::default().summary().ends_with(" kv-memory=auto"));
    }

    #[test]
    fn the_token_is_never_printed() {
        let config = Config::parse("admin-token=very-secret-value").expect("valid");
        assert!(!format!("{config:?}").contains("very-secret"));
        assert!(config.summary().contains("admin-token=<set>"));
        assert!(
            Config::default()
                .summary()
                .starts_with("bind=0.0.0.0 port=8080 log=info io-threads=auto workers=2")
        );
    }
}
