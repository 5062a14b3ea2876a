//! Self-test of the kernel archive built by `cargo xtask kernel`, run as a hermit application.
//!
//! Prints one `selftest: FAIL <check>: <detail>` line per failed check, then `selftest: ok` or
//! `selftest: failed (N)`, and exits with 0 or 1. `cargo xtask kernel-selftest` boots it in QEMU.
//!
//! Arguments (`key=value`, from the kernel command line after `--`): `peer=ADDR:PORT` and
//! `serve=PORT` enable the TCP connection checks of [`tcp`] against the xtask on the host;
//! `wait-after=SECONDS` keeps the guest running that long after serving (so that the kernel's
//! linger timer would fire on any connection that did not close properly).

mod tcp;

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Port the TCP check listens on (inside the guest only).
const LISTEN_PORT: u16 = 8123;

/// Collects failed checks.
#[derive(Default)]
pub(crate) struct Report {
    failures: usize,
}

impl Report {
    pub(crate) fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        if !ok {
            self.failures += 1;
            println!("selftest: FAIL {name}: {}", detail());
        }
    }

    fn close_f64(&mut self, name: &str, got: f64, want: f64) {
        self.check(
            name,
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            || format!("got {got:e}, want {want:e}"),
        );
    }

    fn close_f32(&mut self, name: &str, got: f32, want: f32) {
        self.check(
            name,
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            || format!("got {got:e}, want {want:e}"),
        );
    }
}

/// The C math functions that `std` takes from the kernel archive (`kernel/builtins`). `black_box`
/// keeps the compiler from folding them to constants.
fn check_math(report: &mut Report) {
    let one = black_box(1.0_f64);
    report.close_f64("sin", one.sin(), 0.841_470_984_807_896_5);
    report.close_f64("cos", one.cos(), 0.540_302_305_868_139_8);
    report.close_f64("tan", one.tan(), 1.557_407_724_654_902_3);
    report.close_f64("exp", one.exp(), std::f64::consts::E);
    report.close_f64("ln", black_box(10.0_f64).ln(), std::f64::consts::LN_10);
    report.close_f64("log10", black_box(1000.0_f64).log10(), 3.0);
    report.close_f64("log2", black_box(1024.0_f64).log2(), 10.0);
    report.close_f64(
        "powf",
        black_box(2.0_f64).powf(0.5),
        std::f64::consts::SQRT_2,
    );
    report.close_f64("cbrt", black_box(27.0_f64).cbrt(), 3.0);
    report.close_f64("hypot", black_box(3.0_f64).hypot(4.0), 5.0);
    report.close_f64(
        "atan2",
        one.atan2(black_box(1.0)),
        std::f64::consts::FRAC_PI_4,
    );
    report.close_f64("tanh", one.tanh(), 0.761_594_155_955_764_9);
    report.close_f64("asinh", one.asinh(), 0.881_373_587_019_543);
    report.close_f64(
        "exp_m1",
        black_box(1e-10_f64).exp_m1(),
        1.000_000_000_05e-10,
    );
    report.close_f64("floor", black_box(-2.5_f64).floor(), -3.0);
    report.close_f64("ceil", black_box(-2.5_f64).ceil(), -2.0);
    report.close_f64("round", black_box(2.5_f64).round(), 3.0);
    report.close_f64("trunc", black_box(-2.7_f64).trunc(), -2.0);
    report.close_f64("rem", black_box(7.5_f64) % black_box(2.0), 1.5);
    report.close_f64("mul_add", black_box(2.0_f64).mul_add(3.0, 1.0), 7.0);
    report.close_f32("sinf", black_box(1.0_f32).sin(), 0.841_470_96);
    report.close_f32("expf", black_box(1.0_f32).exp(), std::f32::consts::E);
    report.close_f32("powf32", black_box(2.5_f32).powf(1.5), 3.952_847);
    report.close_f32("floorf", black_box(2.5_f32).floor(), 2.0);
}

/// `std`'s `RandomState`, seeded by `sys_read_entropy` (the xtask also checks that the kernel did
/// not fall back to its fixed-seed generator, kernel/patches/0005): keys differ between maps.
fn check_entropy(report: &mut Report) {
    use std::hash::{BuildHasher, RandomState};
    let hashes: HashSet<u64> = (0..8)
        .map(|_| RandomState::new().hash_one("same key"))
        .collect();
    report.check("random-state", hashes.len() == 8, || {
        format!("{} distinct hashes of 8", hashes.len())
    });
}

/// Threads on the kernel scheduler.
fn check_threads(report: &mut Report) {
    let handles: Vec<_> = (0..4_u64)
        .map(|i| std::thread::spawn(move || (0..1000).map(|n| n * i).sum::<u64>()))
        .collect();
    let sums: Vec<u64> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
    report.check("threads", sums == [0, 499_500, 999_000, 1_498_500], || {
        format!("sums {sums:?}")
    });
}

/// Clocks: a plausible wall clock and a monotonic clock that advances.
fn check_time(report: &mut Report) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    report.check("system-time", since_epoch > 1_600_000_000, || {
        format!("{since_epoch} s since the epoch")
    });
    let start = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let slept = start.elapsed().as_millis();
    report.check("sleep", (20..2000).contains(&slept), || {
        format!("slept {slept} ms")
    });
}

/// A listening TCP socket reports its address (kernel/patches/0004).
fn check_tcp(report: &mut Report) {
    match TcpListener::bind((Ipv4Addr::UNSPECIFIED, LISTEN_PORT)) {
        Ok(listener) => {
            let addr = listener.local_addr();
            let want = SocketAddr::from((Ipv4Addr::UNSPECIFIED, LISTEN_PORT));
            report.check("tcp-local-addr", addr.as_ref().ok() == Some(&want), || {
                format!("{addr:?}")
            });
        }
        Err(err) => report.check("tcp-bind", false, || err.to_string()),
    }
}

/// The TCP connection checks (see [`tcp`]), when the xtask passed a peer and a port.
fn check_connections(report: &mut Report) {
    let arg = |key: &str| {
        std::env::args()
            .skip(1)
            .find_map(|a| a.strip_prefix(&format!("{key}=")).map(str::to_string))
    };
    let peer = arg("peer").and_then(|p| p.parse::<SocketAddr>().ok());
    let linger_peer = arg("linger-peer").and_then(|p| p.parse::<SocketAddr>().ok());
    let serve_port = arg("serve").and_then(|p| p.parse::<u16>().ok());
    let wait_after = arg("wait-after").and_then(|s| s.parse::<u64>().ok());
    let (Some(peer), Some(linger_peer), Some(serve_port)) = (peer, linger_peer, serve_port) else {
        println!(
            "selftest: no peer=, linger-peer= and serve= arguments: connection checks skipped"
        );
        return;
    };
    tcp::start_linger(report, linger_peer);
    tcp::check_shutdown_write(report, peer);
    tcp::check_close_does_not_block(report, peer);
    tcp::check_simultaneous_close(report, peer);
    let stats = tcp::serve(report, serve_port);
    println!(
        "selftest: served {} of {} accepted connections",
        stats.served, stats.accepted
    );
    if let Some(seconds) = wait_after {
        println!("selftest: waiting {seconds} s for the kernel's linger timer");
        std::thread::sleep(Duration::from_secs(seconds));
    }
}

fn main() {
    let mut report = Report::default();
    check_math(&mut report);
    check_entropy(&mut report);
    check_threads(&mut report);
    check_time(&mut report);
    check_tcp(&mut report);
    check_connections(&mut report);
    if report.failures == 0 {
        println!("selftest: ok");
        std::process::exit(0);
    }
    println!("selftest: failed ({})", report.failures);
    std::process::exit(1);
}
