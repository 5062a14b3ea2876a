//! `cargo xtask guests`: builds the wasm guests in `guests/` into `target/guests/<name>.wasm`.
//!
//! Guests are `cdylib` crates of the `guests/` workspace, compiled for `wasm32-unknown-unknown`
//! with Debian's rustc (`-Zbuild-std`, linker `wasm-ld-19`, see `guests/.cargo/config.toml`) and
//! shrunk with binaryen's `wasm-opt` when it is installed. Cargo makes the build incremental;
//! `wasm-opt` only runs when the linked module is newer than the output.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Features Rust enables by default for wasm32-unknown-unknown, which wasm-opt must accept.
const WASM_OPT_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// Names of the guest crates: the members of the `guests/` workspace except the SDK.
/// (Other directories in `guests/`, such as standalone crates, are not ours to build.)
pub fn guest_names() -> Result<Vec<String>> {
    let manifest = util::root().join("guests/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let members = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("members"))
        .context("guests/Cargo.toml has no one-line `members = [...]`")?;
    let names: Vec<String> = members
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|n| *n != "sdk")
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        bail!("guests/Cargo.toml lists no guests");
    }
    Ok(names)
}

/// The directory the built guests land in.
pub fn guests_dir() -> PathBuf {
    util::target_dir().join("guests")
}

/// Builds every guest and returns the paths of the `.wasm` files.
pub fn build_guests() -> Result<Vec<PathBuf>> {
    let guests = util::root().join("guests");
    let build_dir = util::target_dir().join("guests-build");
    let names = guest_names()?;
    let mut cmd = util::cargo();
    cmd.current_dir(&guests)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .arg("--target-dir")
        .arg(&build_dir);
    for name in &names {
        cmd.args(["-p", name]);
    }
    // The outer cargo's settings must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    util::run(&mut cmd).context("building the wasm guests")?;

    let out_dir = guests_dir();
    std::fs::create_dir_all(&out_dir)?;
    let linked_dir = build_dir.join("wasm32-unknown-unknown/release");
    let wasm_opt = which("wasm-opt");
    let mut outputs = Vec::new();
    for name in &names {
        let linked = linked_dir.join(format!("{}.wasm", name.replace('-', "_")));
        if !linked.is_file() {
            bail!(
                "{} was not produced (is {name} a cdylib?)",
                linked.display()
            );
        }
        let output = out_dir.join(format!("{name}.wasm"));
        if is_newer(&linked, &output)? {
            optimise(wasm_opt.as_deref(), &linked, &output)?;
        }
        outputs.push(output);
    }
    Ok(outputs)
}

pub fn is_newer(source: &Path, output: &Path) -> Result<bool> {
    let Ok(out_meta) = std::fs::metadata(output) else {
        return Ok(true);
    };
    Ok(std::fs::metadata(source)?.modified()? > out_meta.modified()?)
}

/// Writes `linked` shrunk by `wasm-opt -Oz` to `output` (a plain copy without wasm-opt).
pub fn optimise(wasm_opt: Option<&Path>, linked: &Path, output: &Path) -> Result<()> {
    if let Some(wasm_opt) = wasm_opt {
        let status = Command::new(wasm_opt)
            .arg("-Oz")
            .args(WASM_OPT_FEATURES)
            .arg(linked)
            .arg("-o")
            .arg(output)
            .status();
        match status {
            Ok(s) if s.success() => return Ok(()),
            other => {
                eprintln!("warning: wasm-opt failed ({other:?}); using the unoptimised module")
            }
        }
    }
    std::fs::copy(linked, output)
        .with_context(|| format!("copying {} to {}", linked.display(), output.display()))?;
    Ok(())
}

/// The path of `program` on `PATH`, if it is there.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
