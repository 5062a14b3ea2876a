//! Embeds the functions served from boot: the guests `cargo xtask` built into `target/guests/`
//! (override with `BOOT_FUNCTIONS_DIR`). A missing file is left out with a warning, so plain
//! `cargo build` works before the guests are built.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Function name and file name, in the order they are deployed.
const FUNCTIONS: &[(&str, &str)] = &[
    ("http-server-demo", "http-server-demo.wasm"),
    ("keyvalue-demo", "keyvalue-demo.wasm"),
    ("todo-demo", "todo-demo.wasm"),
    ("slight-http-server-demo", "slight-http-server-demo.wasm"),
    ("slight-keyvalue-demo", "slight-keyvalue-demo.wasm"),
    ("fib", "fib.wasm"),
    ("answer", "answer.wat"),
    ("sum", "sum.wat"),
    ("sleep", "sleep.wat"),
    ("stuck", "stuck.wat"),
];

fn main() {
    println!("cargo:rerun-if-env-changed=BOOT_FUNCTIONS_DIR");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = env::var_os("BOOT_FUNCTIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../../target/guests"));
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut table = String::from("&[\n");
    for (name, file) in FUNCTIONS {
        let path = dir.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_file() {
            let _ = writeln!(
                table,
                "    ({name:?}, include_bytes!({:?}) as &[u8]),",
                path.display().to_string()
            );
        } else {
            println!(
                "cargo:warning=boot function {name} left out: {} not built (cargo xtask build)",
                path.display()
            );
        }
    }
    table.push(']');
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("functions.rs");
    if let Err(err) = std::fs::write(&out, table) {
        panic!("cannot write {}: {err}", out.display());
    }
}
