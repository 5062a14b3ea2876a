//! Building our loader (`loader/`, bare metal `x86_64-unknown-none`) into
//! `target/image/hermit-loader`, the flat multiboot image QEMU boots with `-kernel`, and
//! `target/image/hermit-loader-pvh`, the ELF with the PVH note (QEMU `-kernel`, Firecracker).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::qemu::BootEntry;
use crate::util;

/// `llvm-objcopy` turns the linked ELF into the flat image (multiboot a.out-kludge layout) and
/// strips the PVH ELF.
const OBJCOPY: &str = "llvm-objcopy-22";

/// Where the flat loader image ends up.
pub fn loader_image_path() -> PathBuf {
    util::target_dir().join("image/hermit-loader")
}

/// Where the PVH loader ELF ends up.
pub fn pvh_loader_image_path() -> PathBuf {
    util::target_dir().join("image/hermit-loader-pvh")
}

/// The loader file QEMU enters through `entry`.
pub fn loader_path(entry: BootEntry) -> PathBuf {
    match entry {
        BootEntry::Multiboot => loader_image_path(),
        BootEntry::Pvh => pvh_loader_image_path(),
    }
}

/// Builds both loaders (incrementally) and returns the path of `target/image/hermit-loader`
/// (the PVH one is [`pvh_loader_image_path`]).
pub fn build_loader() -> Result<PathBuf> {
    let loader_dir = util::root().join("loader");
    // Its own target subdirectory: its own cargo lock, so it never waits for the kernel build.
    let target_dir = util::target_dir().join("loader");
    let mut cargo = util::cargo();
    cargo
        .current_dir(&loader_dir)
        .args(["build", "--release", "--quiet", "--target-dir"])
        .arg(&target_dir);
    // The loader's .cargo/config.toml sets target, rustflags and build-std; variables inherited
    // from an outer cargo or the user's shell must not override them.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cargo.env_remove(var);
    }
    util::run(&mut cargo).context("building the loader")?;

    let elf_dir = target_dir.join("x86_64-unknown-none/release");
    let image = loader_image_path();
    objcopy(&elf_dir.join("hermit-loader"), &image, &["-O", "binary"])?;
    objcopy(
        &elf_dir.join("hermit-loader-pvh"),
        &pvh_loader_image_path(),
        &["--strip-all"],
    )?;
    Ok(image)
}

/// Writes `output` from `elf` with `llvm-objcopy FLAGS` unless it is newer than `elf`.
fn objcopy(elf: &Path, output: &Path, flags: &[&str]) -> Result<()> {
    if is_newer(elf, output)? {
        fs::create_dir_all(output.parent().expect("image path has a parent"))?;
        util::run(Command::new(OBJCOPY).args(flags).arg(elf).arg(output))
            .with_context(|| format!("{OBJCOPY} (apt-get install llvm-22)"))?;
    }
    Ok(())
}

/// Whether `source` was modified after `derived` (or `derived` does not exist).
fn is_newer(source: &Path, derived: &Path) -> Result<bool> {
    let source_time = fs::metadata(source)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading {}", source.display()))?;
    Ok(match fs::metadata(derived).and_then(|m| m.modified()) {
        Ok(derived_time) => source_time > derived_time,
        Err(_) => true,
    })
}
