//! `cargo xtask test`: the whole suite — native unit and integration tests, then end-to-end tests
//! that boot the real image in QEMU (and run the native server) and talk HTTP to it.

use anyhow::Result;

use crate::util;

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug, Clone)]
pub struct TestArgs {
    /// Only the native unit and integration tests (no image, no QEMU).
    #[arg(long)]
    pub unit: bool,
    /// Extra arguments for the end-to-end test binary (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    pub filter: Vec<String>,
}

/// Runs the suite; fails on the first failing stage.
pub fn run(args: &TestArgs) -> Result<()> {
    println!("== building wasm guests");
    crate::image::build_boot_functions()?;

    println!("== native unit and integration tests");
    util::run(util::cargo().args(["test", "--workspace", "--exclude", "e2e"]))?;
    if args.unit {
        return Ok(());
    }

    println!("== building the native server and the image");
    crate::native::build_server()?;
    crate::image::build()?;
    crate::image_dir::microvm_image(true)?;

    match crate::qemu::kvm_status() {
        Ok(()) => println!("== KVM is usable: VM tests use it"),
        Err(reason) => println!("== KVM tests skipped: {reason}; QEMU runs under TCG"),
    }

    println!("== end-to-end tests");
    let xtask = std::env::current_exe()?;
    let mut cmd = util::cargo();
    cmd.args(["test", "-p", "e2e", "--", "--test-threads=1", "--nocapture"])
        .args(&args.filter)
        .env("XTASK_BIN", xtask);
    util::run(&mut cmd)
}
