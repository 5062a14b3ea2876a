//! Links the hermit kernel (`libhermit.a`) into the self-test (same logic as `kernel-app/build.rs`).
//!
//! The archive's directory comes from `HERMIT_KERNEL_DIR` (set by `cargo xtask app`), falling back
//! to `target/hermit-kernel/dist` where `cargo xtask kernel` puts it. Native builds link nothing.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=HERMIT_KERNEL_DIR");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("hermit") {
        return;
    }
    let kernel_dir = env::var_os("HERMIT_KERNEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            manifest_dir.join("../../target/hermit-kernel/dist")
        });
    let archive = kernel_dir.join("libhermit.a");
    println!("cargo:rerun-if-changed={}", archive.display());
    if !archive.is_file() {
        println!(
            "cargo:warning=no {} (run `cargo xtask kernel`): the hermit link will fail",
            archive.display()
        );
        return;
    }
    println!("cargo:rustc-link-search=native={}", kernel_dir.display());
    println!("cargo:rustc-link-lib=static=hermit");
}
