//! The machines the README names: the image boots and serves on QEMU `pc` and `q35`, in 64 MiB of
//! guest RAM, with one and with four vCPUs (TCG).

use e2e::{Instance, Mode};

use crate::call;

/// Boots the image with `--machine machine --memory 64 --smp smp` and checks that it serves every
/// kind of function, from several clients at once, and that the guest saw what QEMU gave it.
fn serves_on(machine: &str, smp: usize) {
    let smp_arg = smp.to_string();
    let inst = Instance::start(
        Mode::Qemu,
        "log=info",
        &["--machine", machine, "--memory", "64", "--smp", &smp_arg],
    );
    let port = inst.port;
    let health = call(port, "GET", "/healthz", b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    // Several clients at once, each calling every kind of function. At 64 MiB the memory budget
    // holds about one function run at a time: the others wait, and after 500 ms get 503 with
    // `Retry-After`, which a client honours.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let hello = served(port, "/http-server-demo/hello");
                    assert_eq!((hello.status, hello.text()), (200, "hello".to_string()));
                    let fib = served(port, "/api/fib/10");
                    assert_eq!(fib.status, 200, "{}", fib.text());
                    assert_eq!(fib.text().trim(), "0,1,1,2,3,5,8,13,21,34");
                    let sum = served(port, "/exec/sum?args=5,2");
                    assert_eq!((sum.status, sum.text().trim()), (200, "7"));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    let metrics = call(port, "GET", "/metrics", b"").text();
    for line in metrics.lines().filter(|line| {
        !line.starts_with('#')
            && (line.contains("rejected") || line.contains("queue") || line.contains("busy"))
    }) {
        eprintln!("{machine} -smp {smp}: {line}");
    }
    let output = inst.output();
    // The xtask's first line: `booting ... (q35, tcg, pvh entry, 4 vcpu, 64 mib)`.
    let booted = output
        .lines()
        .find(|line| line.starts_with("booting "))
        .unwrap_or_default();
    assert!(
        booted.contains(&format!("({machine}, tcg, "))
            && booted.contains(&format!(", {smp} vcpu, 64 mib)")),
        "xtask booted another machine:\n{output}"
    );
    // One I/O thread per CPU the kernel brought up (at most 4).
    assert!(
        output.contains(&format!(": {smp} I/O threads")),
        "the guest did not use {smp} CPUs:\n{output}"
    );
    // The heap the kernel reports (allocated + available) fits in 64 MiB.
    let heap: Vec<u64> = output
        .lines()
        .find_map(|line| line.split_once("heap: "))
        .map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|word| word.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let total: u64 = heap.iter().sum();
    assert!(
        heap.len() == 2 && total > 0 && total < 64 << 20,
        "heap of a 64 MiB guest {heap:?}:\n{output}"
    );
}

/// `GET path`, again after a short wait while the server answers 503 with `Retry-After`
/// (at most 100 times).
fn served(port: u16, path: &str) -> e2e::http::Response {
    for _ in 0..100 {
        let response = call(port, "GET", path, b"");
        if response.status != 503 {
            return response;
        }
        assert!(
            response.header("retry-after").is_some(),
            "503 without Retry-After: {}",
            response.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("GET {path}: still 503 after 100 tries");
}

#[test]
fn pc_64_mib_one_vcpu() {
    serves_on("pc", 1);
}

#[test]
fn pc_64_mib_four_vcpus() {
    serves_on("pc", 4);
}

#[test]
fn q35_64_mib_one_vcpu() {
    serves_on("q35", 1);
}

#[test]
fn q35_64_mib_four_vcpus() {
    serves_on("q35", 4);
}
