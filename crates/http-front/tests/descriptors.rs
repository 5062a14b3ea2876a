//! Out of descriptors: `accept` fails, the server keeps serving its connections and accepts
//! the waiting ones as soon as descriptors are free again. Its own test binary, because it
//! lowers the process's descriptor limit.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{start, test_config};

/// A TCP socket created now and connected later (connecting needs no new descriptor).
struct Unconnected(i32);

impl Unconnected {
    fn new() -> Unconnected {
        // SAFETY: plain socket(2); the descriptor is owned by the value.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket");
        Unconnected(fd)
    }

    fn connect(self, addr: SocketAddr) -> TcpStream {
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4 only")
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: connect(2) reads one sockaddr_in; the descriptor then belongs to the stream.
        unsafe {
            let status = libc::connect(
                self.0,
                (&raw const sin).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(status, 0, "connect");
            TcpStream::from_raw_fd(self.0)
        }
    }
}

#[test]
fn connections_waiting_while_descriptors_ran_out_are_accepted_later() {
    let mut config = test_config();
    config.max_connections = 10_000;
    let (handle, addr) = start(config);
    let sockets: Vec<Unconnected> = (0..20).map(|_| Unconnected::new()).collect();

    // Use up every descriptor the (lowered) limit allows.
    let mut rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read one `rlimit` we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlimit), 0);
        rlimit.rlim_cur = rlimit.rlim_cur.min(1024);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit), 0);
    }
    let mut filler = Vec::new();
    while let Ok(file) = File::open("/dev/null") {
        filler.push(file);
    }

    // The kernel completes the handshakes for the listener's backlog; the server cannot
    // accept them.
    let mut clients: Vec<TcpStream> = sockets.into_iter().map(|s| s.connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        handle.stats().connections_accepted.load(Ordering::Relaxed),
        0,
        "descriptors did not run out"
    );
    // Descriptors come back: the waiting connections are accepted and served without any new
    // connection arriving.
    drop(filler);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())))
            .expect("timeout");
        client
            .write_all(b"GET /late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer);
        assert!(
            answer.starts_with(b"HTTP/1.1 200 "),
            "client {i} never served: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    handle.shutdown().expect("shutdown");
}
