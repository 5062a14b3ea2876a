//! Embeds the functions served from boot: the guests `cargo xtask` built into `target/guests/`
//! (override with `BOOT_FUNCTIONS_DIR`). A missing file is left out with a warning, so plain
//! `cargo build` works before the guests are built.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Function name and file name, in the order they are deployed (`functions.txt`).
fn functions(list: &str) -> Vec<(&str, &str)> {
    list.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(char::is_whitespace))
        .map(|(name, file)| (name, file.trim()))
        .collect()
}

fn main() {
    println!("cargo:rerun-if-env-changed=BOOT_FUNCTIONS_DIR");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = env::var_os("BOOT_FUNCTIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../../target/guests"));
    println!("cargo:rerun-if-changed={}", dir.display());

    let list_path = manifest_dir.join("functions.txt");
    println!("cargo:rerun-if-changed={}", list_path.display());
    let list = match std::fs::read_to_string(&list_path) {
        Ok(list) => list,
        Err(err) => panic!("cannot read {}: {err}", list_path.display()),
    };
    let mut table = String::from("&[\n");
    for (name, file) in functions(&list) {
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
