//! `cargo xtask build-function DIR`: builds a function crate (as `cargo xtask new` writes it)
//! in release and shrinks it with `wasm-opt` (with the wasm features Rust enables), into
//! `<target dir>/<crate>.wasm`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::util;

/// Options of `cargo xtask build-function`.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildFunctionArgs {
    /// The function crate's directory.
    pub dir: PathBuf,
    /// Cargo's target directory (default: `$CARGO_TARGET_DIR`, else `DIR/target`).
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
}

/// Builds the crate in `dir` and returns the path of the optimised module.
pub fn build(dir: &Path, target_dir: Option<&Path>) -> Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("no function crate at {}", dir.display()))?;
    let target_dir = target_dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| dir.join("target"));
    let mut cmd = util::cargo();
    cmd.current_dir(&dir)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .stdout(Stdio::piped());
    // The crate's own .cargo/config.toml sets target, linker and flags; an outer cargo's must
    // not override them.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let mut linked = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            linked = wasm_artifact(&line?).or(linked);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("building {} failed ({status})", dir.display());
    }
    let linked = linked.with_context(|| {
        format!(
            "building {} produced no .wasm (is it a cdylib or a bin crate?)",
            dir.display()
        )
    })?;
    let name = package_name(&dir)?;
    let output = target_dir.join(format!("{name}.wasm"));
    if crate::guests::is_newer(&linked, &output)? {
        if crate::guests::which("wasm-opt").is_none() {
            bail!("wasm-opt is missing: install the Debian package `binaryen` (./setup.sh does)");
        }
        crate::guests::optimise(
            crate::guests::which("wasm-opt").as_deref(),
            &linked,
            &output,
        )?;
    }
    Ok(output)
}

/// The `name = "..."` of the crate's `[package]` (the module's file name uses it as it is, where
/// cargo's library file name has `_` for `-`).
fn package_name(dir: &Path) -> Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    text.lines()
        .skip_while(|line| line.trim() != "[package]")
        .find_map(|line| {
            let value = line.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("{} has no [package] name", manifest.display()))
}

/// The `.wasm` file named by one line of cargo's JSON messages, if it names one.
fn wasm_artifact(line: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    message["filenames"]
        .as_array()?
        .iter()
        .filter_map(serde_json::Value::as_str)
        .find(|file| file.ends_with(".wasm"))
        .map(PathBuf::from)
}
