//! Builds the classic FaaS guests into `target/guests/`: the Rust WASI commands `guests/fib` and
//! `guests/nebula-fib` (the Nebula seed's guest, test data for the end-to-end tests;
//! wasm32-wasip1, std built from source and linked against Debian's wasi-libc, then shrunk with
//! `wasm-opt` like the other guests) and the WAT
//! examples of `guests/wat/` (copied as source: wasmi compiles WAT text directly).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::util::{cargo, root, run, target_dir};

/// Debian's wasi-libc (package `wasi-libc`): libc.a and the command start file.
pub const WASI_LIBC: &str = "/usr/lib/wasm32-wasi";
/// Linker for wasm objects (package `lld-19`); Debian's rustc ships no `rust-lld`.
pub const WASM_LINKER: &str = "wasm-ld-19";

/// Builds `guests/fib` and `guests/nebula-fib` and copies `guests/wat/*.wat`; returns the paths
/// written to `target/guests/`.
pub fn build_faas_guests() -> Result<Vec<PathBuf>> {
    let out_dir = target_dir().join("guests");
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = vec![
        build_wasi_command("fib", &out_dir)?,
        build_wasi_command("nebula-fib", &out_dir)?,
    ];
    written.extend(copy_wat(&root().join("guests/wat"), &out_dir)?);
    Ok(written)
}

/// Builds the Rust WASI command `guests/<name>` and copies it to `<out_dir>/<name>.wasm`.
fn build_wasi_command(name: &str, out_dir: &Path) -> Result<PathBuf> {
    let crt1 = Path::new(WASI_LIBC).join("crt1-command.o");
    if !crt1.exists() {
        bail!(
            "{} is missing: install the Debian package `wasi-libc`",
            crt1.display()
        );
    }
    let build_dir = target_dir().join("faas-guests");
    let rustflags = [
        "-C link-self-contained=no".to_string(),
        format!("-C linker={WASM_LINKER}"),
        format!("-L native={WASI_LIBC}"),
        format!("-C link-arg={}", crt1.display()),
    ]
    .join(" ");
    run(cargo()
        .current_dir(root().join("guests").join(name))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-Zbuild-std=std,panic_abort",
        ])
        .env("CARGO_TARGET_DIR", &build_dir)
        .env("RUSTFLAGS", rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS"))?;
    let built = build_dir.join(format!("wasm32-wasip1/release/{name}.wasm"));
    let target = out_dir.join(format!("{name}.wasm"));
    // Shrunk like the other guests (it is embedded into the image); only when rebuilt, so that
    // the image is not relinked for an unchanged guest.
    if crate::guests::is_newer(&built, &target)? {
        crate::guests::optimise(crate::guests::which("wasm-opt").as_deref(), &built, &target)?;
    }
    Ok(target)
}

/// Copies every `*.wat` of `source_dir` into `out_dir`.
fn copy_wat(source_dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let entries = fs::read_dir(source_dir)
        .with_context(|| format!("cannot list {}", source_dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "wat")
            && let Some(file_name) = path.file_name()
        {
            let target = out_dir.join(file_name);
            fs::copy(&path, &target).with_context(|| format!("cannot copy {}", path.display()))?;
            written.push(target);
        }
    }
    written.sort();
    Ok(written)
}
