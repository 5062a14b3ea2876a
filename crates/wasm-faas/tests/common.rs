//! Shared helpers of the integration tests: repository paths and module loading.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use wasm_faas::{Engine, Limits, Module, load_module};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The engine all test modules are compiled with.
pub fn engine() -> Engine {
    wasm_faas::engine()
}

/// Compiles `guests/wat/<name>`.
pub fn wat_module(engine: &Engine, name: &str) -> Module {
    let path = repo_root().join("guests/wat").join(name);
    let source = std::fs::read(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    load_module(engine, &source).unwrap_or_else(|error| panic!("{name} does not compile: {error}"))
}

/// Compiles inline WAT text.
pub fn inline(engine: &Engine, wat: &str) -> Module {
    load_module(engine, wat.as_bytes())
        .unwrap_or_else(|error| panic!("inline WAT does not compile: {error}"))
}

/// Path of the built fib guest; builds it through `cargo xtask faas-guests` when it is missing
/// and fails loudly if that does not work (never a silent pass).
pub fn fib_wasm() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let path = target_dir.join("guests/fib.wasm");
    // Tests run in parallel: only one of them builds.
    static BUILD: Mutex<()> = Mutex::new(());
    let _building = BUILD.lock().unwrap_or_else(PoisonError::into_inner);
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(repo_root())
            .args(["run", "--quiet", "--package", "xtask", "--", "faas-guests"])
            .status();
        assert!(
            matches!(status, Ok(status) if status.success()) && path.exists(),
            "{} is missing and `cargo xtask faas-guests` could not build it ({status:?}); \
             build it with `cargo xtask faas-guests` (needs lld-19 and wasi-libc)",
            path.display()
        );
    }
    path
}

/// Limits for tests: generous, but with both fuel and a deadline so no test can hang.
pub fn test_limits() -> Limits {
    Limits {
        fuel: 500_000_000,
        deadline: Duration::from_secs(20),
        ..Limits::default()
    }
}
