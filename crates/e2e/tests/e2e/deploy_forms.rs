//! Deployment forms: `-M microvm` with virtio-net on virtio-mmio (user network, hostfwd), a tap
//! device inside a private network namespace, and the `cargo xtask image` directory.
//!
//! The microvm and tap tests need the kernel variant without `pci`/`dhcpv4`
//! (`cargo xtask microvm-app` → target/image-microvm/kernel-app); the tap test needs root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kernel options of the microvm variant on QEMU's user network (no DHCP client in it).
const USER_NET_STATIC: &str = "-ip 10.0.2.15 -gateway 10.0.2.2 -mask 255.255.255.0";
/// The guest address `cargo xtask tap` gives the VM inside its namespace.
const TAP_GUEST: &str = "10.0.5.3";
/// How long a TCG boot may take on a busy host.
const BOOT_LIMIT: Duration = Duration::from_secs(180);

fn xtask_bin() -> PathBuf {
    PathBuf::from(std::env::var_os("XTASK_BIN").expect("XTASK_BIN: run through `cargo xtask test`"))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// The microvm variant's app ELF (`cargo xtask test` builds it; missing, the test fails).
fn microvm_app() -> PathBuf {
    let app = target_dir().join("image-microvm/kernel-app");
    assert!(
        app.exists(),
        "{} missing (build it: cargo xtask microvm-app)",
        app.display()
    );
    app
}

/// An xtask child in its own process group, with its output collected; the group is killed on
/// drop (also when an assertion fails).
struct Server {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(xtask_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("start xtask");
        let output = Arc::new(Mutex::new(String::new()));
        let streams: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for stream in streams {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Server { child, output }
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Calls `probe` until it returns `Some`; panics with the output if the server exits or
    /// the limit passes.
    fn wait_for<T>(&mut self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = probe() {
                return value;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{what}: xtask exited with {status}; output:\n{}",
                    self.output()
                );
            }
            assert!(
                start.elapsed() < BOOT_LIMIT,
                "{what}: nothing within {BOOT_LIMIT:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM to the group (xtask forwards it to QEMU and cleans up), then SIGKILL.
    fn stop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` over a fresh connection to `addr`; (status, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn microvm_serves_http_through_hostfwd() {
    let app = microvm_app();
    let port = e2e::free_port();
    let forward = format!("{port}:8080");
    let append = format!("{USER_NET_STATIC} -- log=info");
    let app = app.to_string_lossy().into_owned();
    let mut server = Server::start(&[
        "boot",
        "--no-build",
        "--machine",
        "microvm",
        "--memory",
        "256",
        "--app",
        &app,
        "--forward",
        &forward,
        "--append",
        &append,
    ]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let health = server.wait_for("microvm /healthz", || {
        get(addr, "/healthz").ok().filter(|r| r.0 == 200)
    });
    assert!(health.1.contains("\"status\":\"ok\""), "{}", health.1);
    assert_eq!(
        get(addr, "/http-server-demo/hello").expect("hello"),
        (200, "hello".to_string())
    );
    assert_eq!(
        get(addr, "/api/fib/10").expect("fib").1.trim(),
        "0,1,1,2,3,5,8,13,21,34"
    );
    let output = server.output();
    assert!(output.contains("microvm"), "{output}");
    assert!(
        output.contains("Found network card"),
        "virtio-mmio NIC not found:\n{output}"
    );
}

/// A network namespace name that is unique for this test run.
fn namespace_name() -> String {
    format!("e2e-tap-{}", std::process::id())
}

/// Deletes the namespace on drop, in case xtask could not (killed, or failed half-way).
struct NamespaceGuard(String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `request` on a thread that joined network namespace `name` (setns affects only the
/// calling thread), so the client's traffic stays inside the namespace.
fn in_namespace<T: Send + 'static>(
    name: &str,
    request: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).ok()?;
        // SAFETY: setns(2) on a valid namespace fd changes only this thread's network namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        (rc == 0).then(request)
    })
    .join()
    .ok()
    .flatten()
}

#[test]
#[ignore = "needs root, /dev/net/tun and iproute2; `cargo xtask test` includes it where they are"]
fn tap_device_in_a_network_namespace() {
    microvm_app();
    let name = namespace_name();
    let guard = NamespaceGuard(name.clone());
    let mut server = Server::start(&[
        "tap",
        "--no-build",
        "--netns",
        &name,
        "--append",
        "log=info",
    ]);
    let addr: SocketAddr = (
        TAP_GUEST.parse::<std::net::Ipv4Addr>().expect("address"),
        8080,
    )
        .into();
    let ns = name.clone();
    let health = server.wait_for("tap /healthz", move || {
        in_namespace(&ns, move || get(addr, "/healthz").ok())
            .flatten()
            .filter(|r| r.0 == 200)
    });
    assert!(health.1.contains("\"status\":\"ok\""), "{}", health.1);
    let hello = in_namespace(&name, move || get(addr, "/http-server-demo/hello").ok()).flatten();
    assert_eq!(hello, Some((200, "hello".to_string())));
    // The client ran only inside the namespace; the tap device lives only there.
    let outside = Command::new("ip")
        .args(["link", "show", "tap0"])
        .stderr(Stdio::null())
        .output()
        .expect("ip link");
    let inside = Command::new("ip")
        .args(["netns", "exec", &name, "ip", "link", "show", "tap0"])
        .output()
        .expect("ip link");
    assert!(inside.status.success(), "no tap0 inside the namespace");
    assert!(
        !outside.status.success() || !String::from_utf8_lossy(&outside.stdout).contains("tap0"),
        "tap0 outside the namespace"
    );

    server.stop();
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&namespaces.stdout).contains(&name),
        "xtask tap left namespace {name} behind"
    );
    drop(guard);
}

#[test]
fn image_directory_has_everything_to_boot() {
    microvm_app();
    let out = target_dir().join(format!("tmp/e2e-image-{}", std::process::id()));
    let status = Command::new(xtask_bin())
        .args([
            "image",
            "--no-build",
            "--memory",
            "96",
            "--smp",
            "2",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("xtask image");
    assert!(status.success(), "xtask image failed: {status}");
    for file in [
        "hermit-loader",
        "hermit-loader-pvh",
        "kernel-app",
        "kernel-app-microvm",
        "vm.json",
        "firecracker.json",
        "BOOTING.md",
    ] {
        assert!(
            out.join(file).is_file(),
            "{file} missing in {}",
            out.display()
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("vm.json")).expect("vm.json"))
            .expect("json");
    assert_eq!(manifest["memory_mib"], 96);
    assert_eq!(manifest["vcpus"], 2);
    let microvm = &manifest["variants"]["microvm"];
    assert_eq!(microvm["memory_mib"], 256, "{microvm}");
    assert!(
        microvm["machine"]
            .as_str()
            .unwrap_or("")
            .starts_with("microvm"),
        "{microvm}"
    );
    assert!(
        microvm["kernel_command_line"]
            .as_str()
            .unwrap_or("")
            .starts_with("-ip 10.0.2.15"),
        "{microvm}"
    );
    let qemu: Vec<&str> = microvm["qemu"]
        .as_array()
        .expect("qemu args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(qemu.contains(&"virtio-net-device,netdev=net0"), "{qemu:?}");
    assert!(qemu.contains(&"kernel-app-microvm"), "{qemu:?}");
    let firecracker: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("firecracker.json")).expect("firecracker.json"),
    )
    .expect("json");
    let boot_source = &firecracker["boot-source"];
    assert_eq!(boot_source["kernel_image_path"], "hermit-loader-pvh");
    assert_eq!(boot_source["initrd_path"], "kernel-app-microvm");
    let booting = std::fs::read_to_string(out.join("BOOTING.md")).expect("BOOTING.md");
    assert!(
        booting.contains("Firecracker") && booting.contains("uhyve"),
        "{booting}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
