//! TCP connection checks (kernel/patches/0007 to 0009), run against the xtask on the host.
//!
//! The guest is a client of the xtask's peer (`peer=10.0.2.2:P`, the host's 127.0.0.1 through
//! QEMU's user network) and the server of its load generator (`serve=PORT`, reached through a
//! `hostfwd`). The peer protocol: the first line names what the peer does with the connection.
//!
//! - `half`: read to end of stream, answer `got N` (bytes after the command line), close.
//! - `hold MS`: read to end of stream, keep the connection open MS milliseconds, close.
//! - `sim`: answer `x` and close at once (the guest closes as soon as it read it: both ends
//!   close at about the same time).
//! - `linger`: read to end of stream and never close; the peer measures how long until the
//!   guest's kernel resets the orphaned connection.
//!
//! (Kernel 0.11 has no socket timeouts, SO_RCVTIMEO: a hung check ends in the xtask's timeout.)
//!
//! The server (`serve`) answers every line `L` with `ok L` and closes; `quit` ends it. It is a
//! single-threaded non-blocking `mio` event loop, i.e. `poll(2)` on the listener and the
//! connections, the way the application will use the kernel.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream as MioStream};
use mio::{Events, Interest, Poll, Token};

use crate::Report;

/// The longest a `close` (drop) may take: it must not wait for the peer (the old kernel waited
/// until the peer closed too, 3 s in the `hold` check).
const MAX_CLOSE: Duration = Duration::from_millis(500);

/// Simultaneous closes in a row (each used to leave a socket in CLOSING, kernel/patches/0009).
const SIMULTANEOUS_CLOSES: usize = 50;

/// The event loop gives up when nothing happens for this long.
const SERVE_IDLE_LIMIT: Duration = Duration::from_secs(60);

fn connect(peer: SocketAddr, command: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(peer)?;
    stream.write_all(command.as_bytes())?;
    Ok(stream)
}

/// `shutdown(Write)` sends FIN (the peer sees the end of the request), and the socket still
/// reads the answer, then end of stream; writing afterwards fails.
pub fn check_shutdown_write(report: &mut Report, peer: SocketAddr) {
    let result = (|| -> std::io::Result<(Vec<u8>, std::io::Result<usize>)> {
        let mut stream = connect(peer, "half\n")?;
        stream.write_all(&[b'a'; 20_000])?;
        stream.shutdown(Shutdown::Write)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let write_after = stream.write(b"late");
        Ok((answer, write_after))
    })();
    match result {
        Ok((answer, write_after)) => {
            report.check("tcp-shutdown-write", answer == b"got 20000\n", || {
                format!("answer {:?}", String::from_utf8_lossy(&answer))
            });
            report.check(
                "tcp-write-after-shutdown",
                write_after
                    .as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::BrokenPipe),
                || format!("{write_after:?}"),
            );
        }
        Err(err) => report.check("tcp-shutdown-write", false, || err.to_string()),
    }
}

/// Dropping a connection returns at once although the peer keeps its end open for 3 s.
pub fn check_close_does_not_block(report: &mut Report, peer: SocketAddr) {
    for _ in 0..3 {
        let stream = match connect(peer, "hold 3000\n") {
            Ok(stream) => stream,
            Err(err) => return report.check("tcp-close-nonblocking", false, || err.to_string()),
        };
        let start = Instant::now();
        drop(stream);
        let took = start.elapsed();
        report.check("tcp-close-nonblocking", took < MAX_CLOSE, || {
            format!("close took {took:?}")
        });
    }
}

/// A connection whose peer never closes: closed here at once, reset by the kernel after its
/// linger time (the xtask checks when the peer saw the reset).
pub fn start_linger(report: &mut Report, peer: SocketAddr) {
    if let Err(err) = connect(peer, "linger\n") {
        report.check("tcp-linger", false, || err.to_string());
    }
}

/// Both ends close at about the same time, many times in a row. A socket left in CLOSING would
/// be reset after the linger time, which the xtask finds in the kernel log.
pub fn check_simultaneous_close(report: &mut Report, peer: SocketAddr) {
    for i in 0..SIMULTANEOUS_CLOSES {
        let result = (|| -> std::io::Result<u8> {
            let mut stream = connect(peer, "sim\n")?;
            let mut byte = [0];
            stream.read_exact(&mut byte)?;
            Ok(byte[0])
        })();
        if let Err(err) = &result {
            return report.check("tcp-simultaneous-close", false, || format!("#{i}: {err}"));
        }
    }
}

/// One client of the event loop.
struct Connection {
    stream: MioStream,
    request: Vec<u8>,
    answer: Vec<u8>,
    written: usize,
}

/// What [`serve`] did.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub accepted: usize,
    pub served: usize,
}

/// Serves `ok LINE` answers until a `quit` line, with `mio` (poll(2)) on one thread.
pub fn serve(report: &mut Report, port: u16) -> ServeStats {
    let mut stats = ServeStats::default();
    if let Err(err) = serve_loop(port, &mut stats) {
        report.check("tcp-serve", false, || format!("{err} ({stats:?})"));
    }
    stats
}

fn serve_loop(port: u16, stats: &mut ServeStats) -> std::io::Result<()> {
    const LISTENER: Token = Token(0);
    // std's listen backlog (128); mio's own bind would ask for 1024 sockets.
    let std_listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
    std_listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(std_listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(256);
    let mut connections: HashMap<Token, Connection> = HashMap::new();
    let mut next_token = 1;
    println!("selftest: serving on port {port}");

    loop {
        poll.poll(&mut events, Some(SERVE_IDLE_LIMIT))?;
        if events.is_empty() {
            return Err(std::io::Error::other(format!(
                "no event for {SERVE_IDLE_LIMIT:?} with {} open connections",
                connections.len()
            )));
        }
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let token = Token(next_token);
                            next_token += 1;
                            poll.registry().register(
                                &mut stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            stats.accepted += 1;
                            connections.insert(
                                token,
                                Connection {
                                    stream,
                                    request: Vec::new(),
                                    answer: Vec::new(),
                                    written: 0,
                                },
                            );
                        }
                        Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                        Err(err) => return Err(err),
                    }
                }
                continue;
            }
            let Some(connection) = connections.get_mut(&event.token()) else {
                continue;
            };
            match drive(connection) {
                Ok(Progress::Waiting) => {}
                Ok(Progress::Done { quit }) => {
                    stats.served += 1;
                    if let Some(mut connection) = connections.remove(&event.token()) {
                        poll.registry().deregister(&mut connection.stream)?;
                    }
                    if quit {
                        return Ok(());
                    }
                }
                Err(err) => {
                    println!("selftest: serve: connection error: {err}");
                    connections.remove(&event.token());
                }
            }
        }
    }
}

enum Progress {
    Waiting,
    Done { quit: bool },
}

/// Reads the request line (until `\n` or end of stream), then writes the answer; non-blocking.
fn drive(connection: &mut Connection) -> std::io::Result<Progress> {
    while connection.answer.is_empty() {
        let mut buffer = [0; 512];
        match connection.stream.read(&mut buffer) {
            Ok(0) => {
                if connection.request.is_empty() {
                    return Err(std::io::Error::other("end of stream before a request"));
                }
                break;
            }
            Ok(n) => {
                connection.request.extend_from_slice(&buffer[..n]);
                if connection.request.contains(&b'\n') {
                    break;
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(Progress::Waiting),
            Err(err) => return Err(err),
        }
    }
    let line = String::from_utf8_lossy(&connection.request)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    if connection.answer.is_empty() {
        connection.answer = format!("ok {line}\n").into_bytes();
    }
    while connection.written < connection.answer.len() {
        match connection
            .stream
            .write(&connection.answer[connection.written..])
        {
            Ok(0) => return Err(std::io::Error::from(ErrorKind::WriteZero)),
            Ok(n) => connection.written += n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(Progress::Waiting),
            Err(err) => return Err(err),
        }
    }
    Ok(Progress::Done {
        quit: line == "quit",
    })
}
