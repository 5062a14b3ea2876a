//! `cargo xtask app`: builds `kernel-app` for `x86_64-unknown-hermit` and links it with the kernel
//! archive into the unikernel image `target/image/kernel-app`. Also `cargo xtask kernel-selftest`,
//! which boots `kernel/selftest` to check the kernel archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{kernel, loader, qemu, selftest_net, util};

/// The hermit application target.
pub const APP_TARGET: &str = "x86_64-unknown-hermit";

/// Environment variable that tells the hermit packages' `build.rs` where `libhermit.a` is.
pub const KERNEL_DIR_ENV: &str = "HERMIT_KERNEL_DIR";

/// `RUSTFLAGS` for every crate built for the hermit target. `cargo clippy` for the hermit target
/// needs the same (in `CARGO_TARGET_X86_64_UNKNOWN_HERMIT_RUSTFLAGS`) to reuse the `std` build.
pub const HERMIT_RUSTFLAGS: &str = "-Cpanic=abort";

/// Cargo profile of the image's application (the workspace's `[profile.image]`: size-oriented,
/// LTO); debug builds use `dev`.
pub const IMAGE_PROFILE: &str = "unikernel";

/// Cargo profile of an application build: [`IMAGE_PROFILE`] for release, else `dev`.
fn app_profile(release: bool) -> &'static str {
    if release { IMAGE_PROFILE } else { "dev" }
}

/// The directory name cargo puts `profile`'s outputs in.
fn profile_dir(profile: &str) -> &str {
    if profile == "dev" { "debug" } else { profile }
}

/// How long the self-test may run in QEMU (TCG) before it counts as hung.
/// (The TCP connection checks take about a minute: load, then the kernel's linger time.)
const SELFTEST_TIMEOUT: Duration = Duration::from_secs(420);

/// Builds the kernel (if needed) and the application, copies the linked ELF to
/// `target/image/kernel-app` and returns that path.
pub fn build_app(release: bool) -> Result<PathBuf> {
    let kernel_dir = kernel::build_kernel()?;
    let built = build_hermit_binary(
        &util::root().join("Cargo.toml"),
        "kernel-app",
        "kernel-app",
        app_profile(release),
        &kernel_dir,
        &util::target_dir(),
    )?;
    copy_image(&built, &util::target_dir().join("image"), release)
}

/// The linked application ELF of [`build_app`] before stripping (with its symbols), in the
/// target directory; `target/image/kernel-app` is its stripped copy in release builds.
pub fn linked_app_path(release: bool) -> PathBuf {
    util::target_dir()
        .join(APP_TARGET)
        .join(profile_dir(app_profile(release)))
        .join("kernel-app")
}

/// Builds the application against the [`kernel::MMIO_STATIC_FEATURES`] kernel (for `-M microvm`
/// and tap devices) in its own cargo target directory, so that the default image is not relinked,
/// and writes `target/image-microvm/kernel-app` (release, stripped).
pub fn build_microvm_app() -> Result<PathBuf> {
    let variant_dir = util::target_dir().join("variant-microvm");
    let kernel_dir = kernel::build_kernel_in(
        &variant_dir.join("hermit-kernel"),
        kernel::MMIO_STATIC_FEATURES,
    )?;
    let built = build_hermit_binary(
        &util::root().join("Cargo.toml"),
        "kernel-app",
        "kernel-app",
        IMAGE_PROFILE,
        &kernel_dir,
        // The shared target dir: only kernel-app is relinked against the other archive
        // (its build script reruns when HERMIT_KERNEL_DIR changes); std and deps are reused.
        &util::target_dir(),
    )?;
    copy_image(&built, &util::target_dir().join("image-microvm"), true)
}

/// Copies the linked ELF `built` to `image_dir/kernel-app` (stripped when `release`) and writes
/// its compressed boot module `kernel-app.lz4` beside it.
fn copy_image(built: &Path, image_dir: &Path, release: bool) -> Result<PathBuf> {
    fs::create_dir_all(image_dir)?;
    let image = image_dir.join("kernel-app");
    if release {
        // The image ships without symbols: smaller to copy into the guest at every boot.
        util::run(
            std::process::Command::new(kernel::llvm_objcopy()?)
                .arg("--strip-all")
                .arg(built)
                .arg(&image),
        )?;
    } else {
        fs::copy(built, &image)
            .with_context(|| format!("copying {} to {}", built.display(), image.display()))?;
    }
    let module = crate::compress::write_module(&image)?;
    eprintln!("app: wrote {} and {}", image.display(), module.display());
    Ok(image)
}

/// `cargo SUBCOMMAND` for the hermit target with std built from source, in the root workspace
/// and `target_dir` (the flags and environment every hermit build shares, so `std` is reused).
pub fn hermit_cargo(subcommand: &str, target_dir: &Path) -> std::process::Command {
    let mut cargo = util::cargo();
    cargo
        .current_dir(util::root())
        .args([
            subcommand,
            "--target",
            APP_TARGET,
            "-Zbuild-std=std,panic_abort",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_HERMIT_RUSTFLAGS",
            HERMIT_RUSTFLAGS,
        );
    cargo
}

/// Builds binary `bin` of `package` (in the workspace of `manifest`) for hermit, linked with the
/// kernel archive with cargo profile `profile`, and returns the path of the ELF in the target
/// directory.
fn build_hermit_binary(
    manifest: &Path,
    package: &str,
    bin: &str,
    profile: &str,
    kernel_dir: &Path,
    target_dir: &Path,
) -> Result<PathBuf> {
    let linker = kernel::ld_lld()?;

    eprintln!("app: building {package} ({profile}) for {APP_TARGET}");
    let mut cargo = hermit_cargo("build", target_dir);
    cargo
        .args(["--package", package, "--bin", bin, "--profile", profile])
        .arg("--manifest-path")
        .arg(manifest)
        .env(KERNEL_DIR_ENV, kernel_dir)
        // Debian's rustc has no rust-lld: link with LLVM's ld.lld (the target's flavor is gnu-lld).
        .env("CARGO_TARGET_X86_64_UNKNOWN_HERMIT_LINKER", &linker);
    util::run(&mut cargo)?;
    Ok(target_dir
        .join(APP_TARGET)
        .join(profile_dir(profile))
        .join(bin))
}

/// Builds `kernel/selftest`, boots it with our loader in QEMU and fails unless every check passed
/// and the kernel found an entropy source. The TCP connection checks talk to a peer and a load
/// generator here (`selftest_net`); `SELFTEST_BURSTS` (default 20 bursts of 50 simultaneous
/// connections) and `SELFTEST_SEQUENTIAL` (default 2000 connections) size the load.
pub fn kernel_selftest() -> Result<()> {
    let selftest = build_hermit_binary(
        &util::root().join("kernel/selftest/Cargo.toml"),
        "hermit-selftest",
        "hermit-selftest",
        "release",
        &kernel::build_kernel()?,
        &util::target_dir(),
    )?;
    let loader = loader::build_loader()?;
    let env_count = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let plan = selftest_net::LoadPlan {
        bursts: env_count("SELFTEST_BURSTS", 20),
        burst_size: SELFTEST_FORWARDS,
        sequential: env_count("SELFTEST_SEQUENTIAL", 2000),
    };
    let peer = selftest_net::Peer::start()?;
    // QEMU's user network accepts forwarded connections on a host socket with a listen backlog
    // of 1 (libslirp's tcp_listen): 50 simultaneous connects to one forwarded port overflow the
    // host's accept queue, and the host drops SYNs and handshake ACKs (clients that think they
    // are connected wait for up to a minute, or give up). One forwarded port per connection of
    // a burst keeps that out of the test.
    // free_port releases each port it finds, so it can hand out the same one twice: keep
    // asking until the ports are distinct (QEMU refuses a second forward of one port).
    let mut serve_ports: Vec<u16> = Vec::with_capacity(SELFTEST_FORWARDS);
    while serve_ports.len() < SELFTEST_FORWARDS {
        let port = crate::bench::free_port()?;
        if !serve_ports.contains(&port) {
            serve_ports.push(port);
        }
    }
    // Long enough after the last connection for the kernel's linger timer to reset any
    // connection that did not finish closing (it would log that).
    let wait_after = selftest_net::KERNEL_LINGER.as_secs() + 5;
    let config = qemu::QemuConfig {
        smp: 2,
        memory_mib: 256,
        forwards: serve_ports
            .iter()
            .map(|&port| (port, SELFTEST_SERVE_PORT))
            .collect(),
        append: format!(
            "-- peer=10.0.2.2:{} linger-peer=10.0.2.2:{} serve={SELFTEST_SERVE_PORT} \
             wait-after={wait_after}",
            peer.port, peer.linger_port
        ),
        // `SELFTEST_PCAP=FILE` records the guest's network traffic.
        extra_args: std::env::var("SELFTEST_PCAP")
            .map(|file| {
                vec![
                    "-object".to_string(),
                    format!("filter-dump,id=dump0,netdev=net0,file={file}"),
                ]
            })
            .unwrap_or_default(),
        ..qemu::QemuConfig::default()
    };
    let mut command = qemu::command(&config, &loader, &selftest);
    eprintln!("selftest: booting {}", selftest.display());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", qemu::QEMU))?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + SELFTEST_TIMEOUT;
    let mut output = String::new();
    let mut load = None;
    let status = loop {
        while let Ok(line) = lines.try_recv() {
            if line.starts_with("selftest: serving on port") && load.is_none() {
                eprintln!(
                    "selftest: load {plan:?} on {} forwarded ports",
                    serve_ports.len()
                );
                let ports = serve_ports.clone();
                load = Some(std::thread::spawn(move || {
                    selftest_net::run_load(&ports, plan)
                }));
            }
            output.push_str(&line);
            output.push('\n');
        }
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The rest of the output, up to QEMU's exit.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
        output.push_str(&line);
        output.push('\n');
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut output);
    }
    let selftest_lines: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with("selftest:"))
        .collect();
    for line in &selftest_lines {
        eprintln!("{line}");
    }

    let Some(status) = status else {
        bail!("the self-test did not finish within {SELFTEST_TIMEOUT:?}:\n{output}");
    };
    let exit = qemu::GuestExit::from_status(status);
    if output.contains("Unable to read entropy") {
        bail!("the kernel found no entropy source (RDSEED/RDRAND):\n{output}");
    }
    if !matches!(exit, qemu::GuestExit::Success) || !selftest_lines.contains(&"selftest: ok") {
        bail!("kernel self-test failed ({exit}):\n{output}");
    }
    check_connection_results(&output, &peer, load)?;
    eprintln!("selftest: passed ({exit})");
    Ok(())
}

/// Port of the self-test's server inside the guest.
const SELFTEST_SERVE_PORT: u16 = 8124;

/// Host ports forwarded to it (one per connection of a burst, see `kernel_selftest`).
const SELFTEST_FORWARDS: usize = 50;

/// The host's view of the connection checks: every load connection answered, the `linger`
/// connection reset after the kernel's linger time, and no other connection reset by it.
fn check_connection_results(
    output: &str,
    peer: &selftest_net::Peer,
    load: Option<std::thread::JoinHandle<selftest_net::LoadReport>>,
) -> Result<()> {
    let load = load
        .context("the guest never started serving")?
        .join()
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))?;
    eprintln!(
        "selftest: host: {} connections in {:.1} s (slowest burst {:.1} s), {} failed",
        load.connections,
        load.elapsed.as_secs_f64(),
        load.slowest_burst.as_secs_f64(),
        load.failures.len()
    );
    if !load.failures.is_empty() {
        bail!(
            "connections to the guest's server failed:\n{}",
            load.failures.join("\n")
        );
    }
    let linger = selftest_net::KERNEL_LINGER;
    let reset_after = peer.linger_result();
    eprintln!("selftest: host: the lingering connection was reset after {reset_after:?}");
    match reset_after {
        Some(Ok(after)) if after >= linger - Duration::from_secs(1) && after <= linger * 2 => {}
        other => {
            bail!("the kernel did not reset the lingering connection after {linger:?}: {other:?}")
        }
    }
    // The kernel warns once per connection it resets after the linger time: only `linger`.
    let resets: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("orphaned connection"))
        .collect();
    let linger_peer = format!(":{}", peer.linger_port);
    if resets.len() != 1 || !resets[0].contains(&linger_peer) {
        bail!(
            "connections that should have closed were reset after the linger time:\n{}",
            resets.join("\n")
        );
    }
    Ok(())
}
