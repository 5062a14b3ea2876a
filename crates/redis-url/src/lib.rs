//! Parsing of `redis://` URLs, in a crate of its own so that the configuration (`boot-config`)
//! holds the parsed value without depending on the Redis client (`kv-redis`).

use std::fmt;

use percent_encoding::percent_decode_str;

/// Port used when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// Where and how to connect, parsed from `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database index selected after connecting.
    pub db: u32,
    /// ACL user name, sent with the password (`AUTH user password`).
    pub username: Option<String>,
    /// Password (`AUTH password`).
    pub password: Option<String>,
}

/// Why a URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid redis URL: {0}")]
pub struct UrlError(pub String);

fn err(message: impl Into<String>) -> UrlError {
    UrlError(message.into())
}

impl ConnectionInfo {
    /// Parses `redis://[[user]:password@]host[:port][/db]`; user and password may be
    /// percent-encoded. The port defaults to 6379 and the database to 0.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(err("expected redis://[[user]:password@]host[:port][/db]"));
        };
        if scheme.eq_ignore_ascii_case("rediss") {
            return Err(err("TLS (rediss://) is not supported"));
        }
        if !scheme.eq_ignore_ascii_case("redis") {
            return Err(err(format!(
                "unsupported scheme {scheme:?}, expected redis://"
            )));
        }
        if rest.contains(['?', '#']) {
            return Err(err("query strings and fragments are not supported"));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, pass)) => (
                    non_empty(percent_decode(user)?),
                    non_empty(percent_decode(pass)?),
                ),
                None => {
                    return Err(err(
                        "user name without password; write redis://:password@host or redis://user:password@host",
                    ));
                }
            },
        };
        if username.is_some() && password.is_none() {
            return Err(err("user name without password"));
        }
        let (host, port) = parse_host_port(host_port)?;
        let db = match path {
            "" | "/" => 0,
            path => {
                let digits = &path[1..];
                if digits.is_empty()
                    || digits.len() > 9
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(err(format!("database {digits:?} is not a number")));
                }
                digits
                    .parse()
                    .map_err(|_| err(format!("database {digits:?} is not a number")))?
            }
        };
        Ok(Self {
            host,
            port,
            db,
            username,
            password,
        })
    }

    /// `host:port` as used for connecting (IPv6 addresses in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Shows the URL without its password.
impl fmt::Display for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis://")?;
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (None, Some(_)) => write!(f, ":***@")?,
            _ => {}
        }
        write!(f, "{}/{}", self.address(), self.db)
    }
}

/// Like [`fmt::Display`]: the password never appears in logs.
impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionInfo({self})")
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn parse_host_port(host_port: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(err("unterminated [ in IPv6 address"));
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(err(format!("{host:?} is not an IPv6 address")));
        }
        match after {
            "" => (host, None),
            after => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(err(format!("unexpected {after:?} after IPv6 address"))),
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(err("missing host"));
    }
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if !host.chars().all(valid_char) {
        return Err(err(format!("invalid host {host:?}")));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(err(format!("invalid port {text:?}"))),
        },
    };
    Ok((host.to_string(), port))
}

/// Decodes user or password with `percent-encoding`, which leaves a malformed escape as it is:
/// credentials must not silently differ from what was written, so one is refused first.
fn percent_decode(text: &str) -> Result<String, UrlError> {
    let malformed = text.match_indices('%').any(|(at, _)| {
        !text
            .get(at + 1..at + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if malformed {
        return Err(err("bad percent escape in user or password"));
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| err("user or password is not UTF-8 after percent-decoding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> ConnectionInfo {
        ConnectionInfo::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn parses_host_port_and_db() {
        let info = parse("redis://127.0.0.1:6380/3");
        assert_eq!(
            (info.host.as_str(), info.port, info.db),
            ("127.0.0.1", 6380, 3)
        );
        assert_eq!((info.username, info.password), (None, None));
        let info = parse("redis://localhost");
        assert_eq!(
            (info.host.as_str(), info.port, info.db),
            ("localhost", DEFAULT_PORT, 0)
        );
        assert_eq!(parse("REDIS://h:1/").db, 0);
        let info = parse("redis://[::1]:7000/2");
        assert_eq!((info.host.as_str(), info.port, info.db), ("::1", 7000, 2));
        assert_eq!(info.address(), "[::1]:7000");
        assert_eq!(parse("redis://[::1]").port, DEFAULT_PORT);
    }

    #[test]
    fn parses_credentials() {
        let info = parse("redis://:s3cret@127.0.0.1:6379");
        assert_eq!(
            (info.username, info.password.as_deref()),
            (None, Some("s3cret"))
        );
        let info = parse("redis://alice:p%40ss%3Aw%2Frd@host/1");
        assert_eq!(info.username.as_deref(), Some("alice"));
        assert_eq!(info.password.as_deref(), Some("p@ss:w/rd"));
        // The last @ separates credentials from the host, so raw @ in a password works too.
        assert_eq!(parse("redis://:a@b@host").password.as_deref(), Some("a@b"));
        assert_eq!(parse("redis://:@host").password, None);
    }

    #[test]
    fn never_shows_the_password() {
        let info = parse("redis://alice:topsecret@host:1/2");
        assert_eq!(info.to_string(), "redis://alice:***@host:1/2");
        assert!(!format!("{info:?}").contains("topsecret"));
        assert_eq!(parse("redis://:pw@h").to_string(), "redis://:***@h:6379/0");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "",
            "127.0.0.1:6379",
            "http://127.0.0.1",
            "rediss://127.0.0.1",
            "unix:///tmp/redis.sock",
            "redis://",
            "redis://:6379",
            "redis://host:",
            "redis://host:0",
            "redis://host:65536",
            "redis://host:+1",
            "redis://host:port",
            "redis://host/x",
            "redis://host/-1",
            "redis://host/1/2",
            "redis://host/1?x=1",
            "redis://ho st",
            "redis://[::1",
            "redis://[nothost]:1",
            "redis://[::1]x",
            "redis://user@host",
            "redis://alice:@host",
            "redis://:%zz@host",
            "redis://:%ff@host",
        ] {
            assert!(ConnectionInfo::parse(url).is_err(), "accepted {url:?}");
        }
    }
}
