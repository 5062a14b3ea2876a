//! Deployment forms: `-M microvm` with virtio-net on virtio-mmio (user network, hostfwd), a tap
//! device inside a private network namespace, and the `cargo xtask image` directory.
//!
//! The microvm and tap tests need the kernel variant without `pci`/`dhcpv4`
//! (`cargo xtask microvm-app` → target/image-microvm/kernel-app); the tap test needs root.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::{Instance, http, target_dir, xtask_bin};

/// Kernel options of the microvm variant on QEMU's user network (no DHCP client in it).
const USER_NET_STATIC: &str = "-ip 10.0.2.15 -gateway 10.0.2.2 -mask 255.255.255.0";
/// The guest address `cargo xtask tap` gives the VM inside its namespace.
const TAP_GUEST: &str = "10.0.5.3";
/// How long a TCG boot may take on a busy host.
const BOOT_LIMIT: Duration = Duration::from_secs(180);

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

/// `GET path` over a fresh connection to `addr`; (status, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let response = http::send(&mut stream, &http::request_bytes("GET", path, &[], b""))?;
    Ok((response.status, response.text()))
}

#[test]
fn microvm_serves_http_through_hostfwd() {
    let app = microvm_app();
    let port = e2e::free_port();
    let forward = format!("{port}:8080");
    let append = format!("{USER_NET_STATIC} -- log=info");
    let app = app.to_string_lossy().into_owned();
    let mut server = Instance::launch(
        port,
        &[
            "boot",
            "--no-build",
            "--machine",
            "microvm",
            // The variant's least (kernel patch 0031; it used to need 256 MiB).
            "--memory",
            "64",
            "--app",
            &app,
            "--forward",
            &forward,
            "--append",
            &append,
        ],
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let health = server.wait_for("microvm /healthz", BOOT_LIMIT, || {
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
    let mut server = Instance::launch(
        0,
        &[
            "tap",
            "--no-build",
            "--netns",
            &name,
            "--append",
            "log=info",
        ],
    );
    let addr: SocketAddr = (
        TAP_GUEST.parse::<std::net::Ipv4Addr>().expect("address"),
        8080,
    )
        .into();
    let ns = name.clone();
    let health = server.wait_for("tap /healthz", BOOT_LIMIT, move || {
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
        "kernel-app.lz4",
        "kernel-app-microvm.lz4",
        "kernel-app",
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
    // 96 MiB is above the microvm variant's least (64 MiB since kernel/patches/0031).
    assert_eq!(microvm["memory_mib"], 96, "{microvm}");
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
    assert!(qemu.contains(&"kernel-app-microvm.lz4"), "{qemu:?}");
    let firecracker: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("firecracker.json")).expect("firecracker.json"),
    )
    .expect("json");
    let boot_source = &firecracker["boot-source"];
    assert_eq!(boot_source["kernel_image_path"], "hermit-loader-pvh");
    assert_eq!(boot_source["initrd_path"], "kernel-app-microvm.lz4");
    // The boot modules are the compressed form the loader expands; uhyve's ELF is plain.
    for (file, magic) in [
        ("kernel-app.lz4", b"HLZ4".as_slice()),
        ("kernel-app-microvm.lz4", b"HLZ4"),
        ("kernel-app", b"\x7fELF"),
    ] {
        let bytes = std::fs::read(out.join(file)).expect("image file");
        assert!(
            bytes.starts_with(magic),
            "{file} does not start with {magic:?}"
        );
    }
    let booting = std::fs::read_to_string(out.join("BOOTING.md")).expect("BOOTING.md");
    assert!(
        booting.contains("Firecracker") && booting.contains("uhyve"),
        "{booting}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
