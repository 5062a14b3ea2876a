//! The host side of the self-test's TCP connection checks (`kernel/selftest/src/tcp.rs`): the
//! peer the guest connects to (through QEMU's user network, on 127.0.0.1 only) and the load
//! generator for the guest's poll(2)-driven server (through a `hostfwd`).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

/// The kernel's linger time for closed connections whose peer does not close
/// (`ORPHAN_LINGER` in kernel/patches/0007).
pub const KERNEL_LINGER: Duration = Duration::from_secs(30);

/// How long any one connection of the load may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// The peer: one listener for the `half`/`hold`/`sim` commands and one for `linger`.
pub struct Peer {
    pub port: u16,
    pub linger_port: u16,
    /// When the guest's kernel reset the `linger` connection, counted from its end of stream;
    /// `Err` says why there is no such time.
    linger_result: Arc<Mutex<Option<Result<Duration, String>>>>,
}

impl Peer {
    /// Starts both listeners on 127.0.0.1 (threads that live as long as the xtask).
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let linger_listener = TcpListener::bind("127.0.0.1:0")?;
        let peer = Self {
            port: listener.local_addr()?.port(),
            linger_port: linger_listener.local_addr()?.port(),
            linger_result: Arc::default(),
        };
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || serve_command(stream));
            }
        });
        let result = Arc::clone(&peer.linger_result);
        thread::spawn(move || {
            if let Some(stream) = linger_listener.incoming().flatten().next() {
                *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(watch_linger(stream));
            }
        });
        Ok(peer)
    }

    /// The `linger` measurement, if the connection ended (or failed) by now.
    pub fn linger_result(&self) -> Option<Result<Duration, String>> {
        self.linger_result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One peer connection: the command line, then what it asks for.
fn serve_command(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(CONNECTION_TIMEOUT));
    let mut reader = BufReader::new(stream);
    let mut command = String::new();
    if reader.read_line(&mut command).is_err() {
        return;
    }
    let mut rest = Vec::new();
    let mut words = command.split_whitespace();
    match words.next() {
        Some("half") => {
            if reader.read_to_end(&mut rest).is_ok() {
                let _ = reader
                    .get_mut()
                    .write_all(format!("got {}\n", rest.len()).as_bytes());
            }
        }
        Some("hold") => {
            let ms = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let _ = reader.read_to_end(&mut rest);
            thread::sleep(Duration::from_millis(ms));
        }
        Some("sim") => {
            let _ = reader.get_mut().write_all(b"x");
        }
        _ => {}
    }
}

/// Reads the `linger` connection to its end, then writes a byte every 200 ms until that fails
/// (the guest's reset made QEMU close its side): the time from end of stream to that failure.
fn watch_linger(stream: TcpStream) -> Result<Duration, String> {
    let _ = stream.set_read_timeout(Some(CONNECTION_TIMEOUT));
    let mut stream = stream;
    let mut sink = Vec::new();
    stream
        .read_to_end(&mut sink)
        .map_err(|e| format!("reading to end of stream: {e}"))?;
    let end_of_stream = Instant::now();
    while end_of_stream.elapsed() < KERNEL_LINGER * 3 {
        thread::sleep(Duration::from_millis(200));
        if stream.write_all(b"z").is_err() {
            return Ok(end_of_stream.elapsed());
        }
    }
    Err(format!(
        "still open {:?} after the guest closed it",
        end_of_stream.elapsed()
    ))
}

/// What the load generator sends to the guest's server.
#[derive(Clone, Copy, Debug)]
pub struct LoadPlan {
    /// Bursts of simultaneous new connections.
    pub bursts: usize,
    /// Connections per burst.
    pub burst_size: usize,
    /// Connections opened and closed one after another (on 4 threads) after the bursts.
    pub sequential: usize,
}

/// What went wrong under load, empty when every connection got its answer.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub failures: Vec<String>,
    pub connections: usize,
    pub slowest_burst: Duration,
    pub elapsed: Duration,
}

/// Runs `plan` against the guest's server, forwarded from 127.0.0.1:`ports` (client `i` of a
/// burst uses `ports[i % len]`), then sends it `quit`.
pub fn run_load(ports: &[u16], plan: LoadPlan) -> LoadReport {
    let port = ports[0];
    let start = Instant::now();
    let mut report = LoadReport::default();
    for burst in 0..plan.bursts {
        let burst_start = Instant::now();
        let barrier = Arc::new(Barrier::new(plan.burst_size));
        let clients: Vec<_> = (0..plan.burst_size)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                let port = ports[i % ports.len()];
                thread::spawn(move || {
                    barrier.wait();
                    // Every other client half-closes after its request (shutdown(Write), as some
                    // clients do): the guest then reads end of stream and answers in CLOSE-WAIT.
                    exchange(port, &format!("burst {burst} {i}"), i % 2 == 0, true)
                })
            })
            .collect();
        for client in clients {
            report.connections += 1;
            match client.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => report.failures.push(err),
                Err(_) => report.failures.push("client thread panicked".into()),
            }
        }
        report.slowest_burst = report.slowest_burst.max(burst_start.elapsed());
    }
    let threads = 4;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let count = plan.sequential / threads;
            thread::spawn(move || {
                let mut failures = Vec::new();
                for k in 0..count {
                    // Half of them close as soon as they have the answer, racing the guest's
                    // close (a simultaneous close); the others wait for the guest's FIN.
                    if let Err(err) = exchange(port, &format!("seq {t} {k}"), false, k % 2 == 0) {
                        failures.push(err);
                    }
                }
                (count, failures)
            })
        })
        .collect();
    for worker in workers {
        if let Ok((count, failures)) = worker.join() {
            report.connections += count;
            report.failures.extend(failures);
        }
    }
    if let Err(err) = exchange(port, "quit", false, true) {
        report.failures.push(err);
    }
    report.elapsed = start.elapsed();
    report
}

/// Next local port for [`connect_from_unique_port`]: below Linux's ephemeral range (32768 and up).
static NEXT_LOCAL_PORT: AtomicU16 = AtomicU16::new(0);

/// Connects to 127.0.0.1:`port` from a local port no other connection of this run used.
///
/// QEMU's user network keeps the client's port: the guest sees 10.0.2.2:`local port`. Linux
/// picks ephemeral ports per destination, so two clients of a burst (to different forwarded
/// ports) may get the same one, and their connections then collide in the guest (the second
/// SYN meets the first connection); a port reused within seconds may also meet QEMU's
/// TIME-WAIT entry of an earlier connection.
fn connect_from_unique_port(port: u16) -> std::io::Result<TcpStream> {
    let localhost = |port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let _ = NEXT_LOCAL_PORT.compare_exchange(
        0,
        20_000 + (std::process::id() % 4_000) as u16,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let local_port = NEXT_LOCAL_PORT.fetch_add(1, Ordering::Relaxed);
        if local_port >= 32_768 {
            return Err(std::io::Error::other("out of local ports"));
        }
        // SAFETY: socket(2) has no memory-safety preconditions.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new socket that nothing else owns; `stream` closes it.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        let local = localhost(local_port);
        // SAFETY: `local` is a sockaddr_in of `len` bytes.
        if unsafe { libc::bind(fd, (&raw const local).cast(), len) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::AddrInUse {
                continue;
            }
            return Err(err);
        }
        let remote = localhost(port);
        // SAFETY: `remote` is a sockaddr_in of `len` bytes.
        if unsafe { libc::connect(fd, (&raw const remote).cast(), len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(stream);
    }
}

/// One connection to the guest's server: sends `line`, reads `ok line`, optionally half-closes
/// after the request and waits for the guest's end of stream.
fn exchange(port: u16, line: &str, half_close: bool, read_to_end: bool) -> Result<(), String> {
    let fail = |what: &str, err: std::io::Error| format!("{line}: {what}: {err}");
    let mut stream = connect_from_unique_port(port).map_err(|e| fail("connect", e))?;
    stream
        .set_read_timeout(Some(CONNECTION_TIMEOUT))
        .map_err(|e| fail("timeout", e))?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| fail("write", e))?;
    if half_close {
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| fail("shutdown", e))?;
    }
    let want = format!("ok {line}\n");
    let mut answer = vec![0; want.len()];
    stream
        .read_exact(&mut answer)
        .map_err(|e| fail("read", e))?;
    if answer != want.as_bytes() {
        return Err(format!(
            "{line}: answer {:?}",
            String::from_utf8_lossy(&answer)
        ));
    }
    if read_to_end {
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => {}
            Ok(_) => return Err(format!("{line}: {} more bytes", rest.len())),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => {
                return Err(format!("{line}: reset instead of FIN"));
            }
            Err(err) => return Err(fail("read to end", err)),
        }
    }
    Ok(())
}
