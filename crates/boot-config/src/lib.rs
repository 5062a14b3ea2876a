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
    Redis(kv_redis::ConnectionInfo),
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
    /// `workers=`: HTTP worker threads, 1..=256 (default 2).
    pub workers: usize,
    /// `queue=`: connections that may wait for a worker before 503, 0..=4096 (default 16).
    pub queue: usize,
    /// `root=`: the function that serves paths no endpoint or function claims.
    pub root: Option<String>,
    /// `admin-token=`: bearer token for `/_admin` (admin endpoints disabled when unset).
    pub admin_token: Option<String>,
    /// `kv=`: key-value backend (default memory).
    pub kv: KvBackend,
    /// `max-body=`: largest request body in bytes; `k`/`m` suffixes for KiB/MiB (default 4m).
    pub max_body: usize,
    /// `timeout-ms=`: time a client has to send a complete request (default 10000).
    pub timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: std::net::IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            log: LevelFilter::Info,
            workers: 2,
            queue: 16,
            root: None,
            admin_token: None,
            kv: KvBackend::Memory,
            max_body: 4 * 1024 * 1024,
            timeout_ms: 10_000,
        }
    }
}

/// Every key the configuration accepts (`_` may be written for `-`).
pub const KNOWN_KEYS: &[&str] = &[
    "bind",
    "port",
    "log",
    "workers",
    "queue",
    "root",
    "admin-token",
    "kv",
    "max-body",
    "timeout-ms",
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
            "workers" => self.workers = parse_bounded(value, 1, 256).map_err(invalid)?,
            "queue" => self.queue = parse_bounded(value, 0, 4096).map_err(invalid)?,
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
            "timeout-ms" => {
                self.timeout_ms = parse_bounded(value, 1, 3_600_000).map_err(invalid)? as u64;
            }
            _ => unreachable!("every known key is handled"),
        }
        Ok(())
    }

    /// The configuration as `key=value` words, with the admin token redacted.
    pub fn summary(&self) -> String {
        format!(
            "bind={} port={} log={} workers={} queue={} root={} admin-token={} kv={} max-body={} timeout-ms={}",
            self.bind,
            self.port,
            self.log.as_str().to_ascii_lowercase(),
            self.workers,
            self.queue,
            self.root.as_deref().unwrap_or("-"),
            if self.admin_token.is_some() {
                "<set>"
            } else {
                "-"
            },
            self.kv,
            self.max_body,
            self.timeout_ms
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

/// Bytes, optionally with a `k` (KiB) or `m` (MiB) suffix; at most 1 GiB.
fn parse_size(value: &str) -> Result<usize, String> {
    let lower = value.to_ascii_lowercase();
    let (digits, unit) = if let Some(d) = lower.strip_suffix('k') {
        (d, 1024)
    } else if let Some(d) = lower.strip_suffix('m') {
        (d, 1024 * 1024)
    } else {
        (lower.as_str(), 1)
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&bytes| bytes <= 1 << 30)
        .ok_or_else(|| format!("{value:?} is not a size in bytes (e.g. 65536, 64k, 4m; max 1024m)"))
}

fn parse_kv(value: &str) -> Result<KvBackend, String> {
    if value == "memory" {
        return Ok(KvBackend::Memory);
    }
    if !value.starts_with("redis://") {
        return Err(format!("{value:?} is neither memory nor redis://[[user]:password@]host[:port][/db]"));
    }
    kv_redis::ConnectionInfo::parse(value)
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
        assert_eq!(Config::parse("bind=127.0.0.1").unwrap().bind.to_string(), "127.0.0.1");
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
            "port=9000 log=DEBUG workers=4 queue=0 root=http-server-demo \
             admin-token=s3cret-token kv=redis://10.0.2.2:6380 max-body=64k timeout-ms=2500",
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
        assert_eq!(config.timeout_ms, 2500);
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
        assert_eq!(redis("redis://localhost"), Ok("redis://localhost:6379/0".into()));
        assert_eq!(redis("redis://127.0.0.1:7000/2"), Ok("redis://127.0.0.1:7000/2".into()));
        assert_eq!(redis("redis://:secret@h:1"), Ok("redis://:***@h:1/0".into()));
        for bad in ["redis", "redis://", "redis://h:0", "redis://h:x", "file://x", "Memory"] {
            assert!(parse_kv(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("4m"), Ok(4 << 20));
        assert_eq!(parse_size("1024m"), Ok(1 << 30));
        for bad in ["", "k", "1025m", "-1", "1g", "99999999999999999999"] {
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
            ("timeout-ms=0", "timeout-ms"),
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
    fn the_token_is_never_printed() {
        let config = Config::parse("admin-token=very-secret-value").expect("valid");
        assert!(!format!("{config:?}").contains("very-secret"));
        assert!(config.summary().contains("admin-token=<set>"));
        assert!(
            Config::default()
                .summary()
                .starts_with("bind=0.0.0.0 port=8080 log=info workers=2")
        );
    }
}
