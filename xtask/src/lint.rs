//! Formatting and lints as part of the suite: `cargo fmt --check` over every crate of the
//! repository, and `cargo clippy` with warnings as errors for the native workspace, the image's
//! application on the hermit target, the wasm guests and the fuzz targets.

use std::path::Path;

use anyhow::Result;

use crate::util;

/// Manifests outside the main workspace whose formatting is checked too.
const OTHER_MANIFESTS: &[&str] = &[
    "guests/fib/Cargo.toml",
    "loader/Cargo.toml",
    "fuzz/Cargo.toml",
    "bench/hyper-baseline/Cargo.toml",
    "kernel/selftest/Cargo.toml",
    "kernel/builtins/Cargo.toml",
    "kernel/fetch/Cargo.toml",
];

/// Runs every check; fails on the first that finds something.
pub fn check_all() -> Result<()> {
    fmt()?;
    clippy_native()?;
    clippy_hermit()?;
    clippy_guests()?;
    clippy_fuzz()
}

fn fmt() -> Result<()> {
    println!("== cargo fmt --check");
    let root = util::root();
    util::run(
        util::cargo()
            .current_dir(&root)
            .args(["fmt", "--all", "--check"]),
    )?;
    util::run(
        util::cargo()
            .current_dir(root.join("guests"))
            .args(["fmt", "--all", "--check"]),
    )?;
    for manifest in OTHER_MANIFESTS {
        let manifest = root.join(manifest);
        if !Path::new(&manifest).exists() {
            continue;
        }
        util::run(
            util::cargo()
                .current_dir(&root)
                .args(["fmt", "--check", "--manifest-path"])
                .arg(&manifest),
        )?;
    }
    Ok(())
}

fn clippy_native() -> Result<()> {
    println!("== cargo clippy (native workspace, all targets)");
    util::run(util::cargo().current_dir(util::root()).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn clippy_hermit() -> Result<()> {
    println!(
        "== cargo clippy (kernel-app for {})",
        crate::app::APP_TARGET
    );
    util::run(
        crate::app::hermit_cargo("clippy", &util::target_dir())
            .args(["--package", "kernel-app", "--release"])
            .args(["--", "-D", "warnings"]),
    )
}

fn clippy_guests() -> Result<()> {
    println!("== cargo clippy (wasm guests)");
    // guests/.cargo/config.toml picks the wasm target, build-std and the target directory.
    util::run(
        util::cargo()
            .current_dir(util::root().join("guests"))
            .args(["clippy", "--release", "--workspace", "--", "-D", "warnings"]),
    )
}

fn clippy_fuzz() -> Result<()> {
    println!("== cargo clippy (fuzz targets)");
    // A target directory of its own: the fuzz build's coverage flags would be rebuilt otherwise.
    util::run(
        util::cargo()
            .current_dir(util::root().join("fuzz"))
            .args(["clippy", "--target-dir"])
            .arg(util::target_dir().join("fuzz-clippy"))
            .args(["--", "-D", "warnings"]),
    )
}
