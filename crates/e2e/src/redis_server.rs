//! A tiny raw RESP client to look at what the server under test stored (independent of the
//! project's own Redis client), plus the throwaway `redis-server` from `redis-test-server`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub use redis_test_server::RedisServer;

/// Opens a [`RawRedis`] connection to a [`RedisServer`].
pub trait RawClient {
    /// A raw client connection to this server; panics if it cannot connect.
    fn client(&self) -> RawRedis;
}

impl RawClient for RedisServer {
    fn client(&self) -> RawRedis {
        RawRedis::connect(self.port())
            .unwrap_or_else(|e| panic!("connect to redis on {}: {e}", self.port()))
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
