//! `cargo xtask app`: builds `kernel-app` for `x86_64-unknown-hermit` and links it with the kernel
//! archive into the unikernel image `target/image/kernel-app`. Also `cargo xtask kernel-selftest`,
//! which boots `kernel/selftest` to check the kernel archive.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{kernel, loader, qemu, util};

/// The hermit application target.
pub const APP_TARGET: &str = "x86_64-unknown-hermit";

/// Environment variable that tells the hermit packages' `build.rs` where `libhermit.a` is.
pub const KERNEL_DIR_ENV: &str = "HERMIT_KERNEL_DIR";

/// `RUSTFLAGS` for every crate built for the hermit target. `cargo clippy` for the hermit target
/// needs the same (in `CARGO_TARGET_X86_64_UNKNOWN_HERMIT_RUSTFLAGS`) to reuse the `std` build.
pub const HERMIT_RUSTFLAGS: &str = "-Cpanic=abort";

/// How long the self-test may run in QEMU (TCG) before it counts as hung.
const SELFTEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Builds the kernel (if needed) and the application, copies the linked ELF to
/// `target/image/kernel-app` and returns that path.
pub fn build_app(release: bool) -> Result<PathBuf> {
    let kernel_dir = kernel::build_kernel()?;
    let built = build_hermit_binary(
        &util::root().join("Cargo.toml"),
        "kernel-app",
        "kernel-app",
        release,
        &kernel_dir,
        &util::target_dir(),
    )?;
    copy_image(&built, &util::target_dir().join("image"), release)
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
        true,
        &kernel_dir,
        // The shared target dir: only kernel-app is relinked against the other archive
        // (its build script reruns when HERMIT_KERNEL_DIR changes); std and deps are reused.
        &util::target_dir(),
    )?;
    copy_image(&built, &util::target_dir().join("image-microvm"), true)
}

/// Copies the linked ELF `built` to `image_dir/kernel-app` (stripped when `release`).
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
    eprintln!("app: wrote {}", image.display());
    Ok(image)
}

/// Builds binary `bin` of `package` (in the workspace of `manifest`) for hermit, linked with the
/// kernel archive, and returns the path of the ELF in the target directory.
fn build_hermit_binary(
    manifest: &Path,
    package: &str,
    bin: &str,
    release: bool,
    kernel_dir: &Path,
    target_dir: &Path,
) -> Result<PathBuf> {
    let linker = kernel::ld_lld()?;
    let profile = if release { "release" } else { "debug" };

    eprintln!("app: building {package} ({profile}) for {APP_TARGET}");
    let mut cargo = util::cargo();
    cargo
        .current_dir(util::root())
        .args([
            "build",
            "--package",
            package,
            "--bin",
            bin,
            "--target",
            APP_TARGET,
        ])
        .args(["-Zbuild-std=std,panic_abort"])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .env(KERNEL_DIR_ENV, kernel_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // Debian's rustc has no rust-lld: link with LLVM's ld.lld (the target's flavor is gnu-lld).
        .env("CARGO_TARGET_X86_64_UNKNOWN_HERMIT_LINKER", &linker)
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_HERMIT_RUSTFLAGS",
            HERMIT_RUSTFLAGS,
        );
    if release {
        cargo.arg("--release");
    }
    util::run(&mut cargo)?;
    Ok(target_dir.join(APP_TARGET).join(profile).join(bin))
}

/// Builds `kernel/selftest`, boots it with our loader in QEMU and fails unless every check passed
/// and the kernel found an entropy source.
pub fn kernel_selftest() -> Result<()> {
    let selftest = build_hermit_binary(
        &util::root().join("kernel/selftest/Cargo.toml"),
        "hermit-selftest",
        "hermit-selftest",
        true,
        &kernel::build_kernel()?,
        &util::target_dir(),
    )?;
    let loader = loader::build_loader()?;
    let config = qemu::QemuConfig {
        smp: 2,
        memory_mib: 256,
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
    let mut stdout = child.stdout.take().context("qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });

    let deadline = Instant::now() + SELFTEST_TIMEOUT;
    let status = loop {
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
    let output = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the qemu output reader panicked"))?;
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
    eprintln!("selftest: passed ({exit})");
    Ok(())
}
