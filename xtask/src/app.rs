//! `cargo xtask app`: builds `kernel-app` for `x86_64-unknown-hermit` and links it with the kernel
//! archive into the unikernel image `target/image/kernel-app`.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{kernel, util};

/// The hermit application target.
pub const APP_TARGET: &str = "x86_64-unknown-hermit";

/// Environment variable that tells `kernel-app/build.rs` where `libhermit.a` is.
pub const KERNEL_DIR_ENV: &str = "HERMIT_KERNEL_DIR";

/// Builds the kernel (if needed) and the application, copies the linked ELF to
/// `target/image/kernel-app` and returns that path.
pub fn build_app(release: bool) -> Result<PathBuf> {
    let kernel_dir = kernel::build_kernel()?;
    let linker = kernel::ld_lld()?;
    let profile = if release { "release" } else { "debug" };

    eprintln!("app: building kernel-app ({profile}) for {APP_TARGET}");
    let mut cargo = util::cargo();
    cargo
        .current_dir(util::root())
        .args(["build", "--package", "kernel-app", "--target", APP_TARGET])
        .args(["-Zbuild-std=std,panic_abort"])
        .arg("--target-dir")
        .arg(util::target_dir())
        .env(KERNEL_DIR_ENV, &kernel_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // Debian's rustc has no rust-lld: link with LLVM's ld.lld (the target's flavor is gnu-lld).
        .env("CARGO_TARGET_X86_64_UNKNOWN_HERMIT_LINKER", &linker)
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_HERMIT_RUSTFLAGS",
            hermit_rustflags(),
        );
    if release {
        cargo.arg("--release");
    }
    util::run(&mut cargo)?;

    let built = util::target_dir()
        .join(APP_TARGET)
        .join(profile)
        .join("kernel-app");
    let image_dir = util::target_dir().join("image");
    fs::create_dir_all(&image_dir)?;
    let image = image_dir.join("kernel-app");
    fs::copy(&built, &image)
        .with_context(|| format!("copying {} to {}", built.display(), image.display()))?;
    eprintln!("app: wrote {}", image.display());
    Ok(image)
}

/// `RUSTFLAGS` for every crate built for the hermit target (also what `cargo clippy` needs to
/// share the build of `std`).
pub fn hermit_rustflags() -> &'static str {
    "-Cpanic=abort"
}
