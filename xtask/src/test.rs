//! `cargo xtask test`: the whole suite — formatting and lints, native unit and integration tests,
//! a bounded fuzzing run of every fuzz target, then end-to-end tests that boot the real image in
//! QEMU (and run the native server) and talk HTTP to it. It closes with how many tests ran and
//! which were not run, and why.

use anyhow::Result;

use crate::test_tally::Tally;
use crate::util;

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug, Clone)]
pub struct TestArgs {
    /// Only the checks and the native unit and integration tests (no fuzzing, no image, no QEMU).
    #[arg(long)]
    pub unit: bool,
    /// Seconds each fuzz target runs (0: no fuzzing).
    #[arg(long, default_value_t = 60)]
    pub fuzz_seconds: u64,
    /// Extra arguments for the end-to-end test binary (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    pub filter: Vec<String>,
}

/// Runs the suite; fails on the first failing stage, after saying what ran until then.
pub fn run(args: &TestArgs) -> Result<()> {
    let mut tally = Tally::default();
    let result = stages(args, &mut tally);
    println!("== test summary: {}", tally.summary());
    result
}

fn stages(args: &TestArgs, tally: &mut Tally) -> Result<()> {
    println!("== building wasm guests");
    crate::image::build_boot_functions()?;

    crate::lint::check_all()?;

    println!("== native unit and integration tests");
    tally.run(util::cargo().args(["test", "--workspace", "--exclude", "e2e"]))?;
    if args.unit {
        return Ok(());
    }

    if args.fuzz_seconds > 0 {
        crate::fuzz::run(&crate::fuzz::FuzzArgs {
            seconds: args.fuzz_seconds,
            save: false,
            targets: Vec::new(),
        })?;
    } else {
        println!("== NOT RUN: fuzzing (--fuzz-seconds 0)");
    }

    println!("== building the native server and the image");
    crate::native::build_server()?;
    crate::image::build()?;
    crate::image_dir::microvm_image(true)?;

    // Tests that need what this machine may lack are #[ignore]d; those it has run, the others
    // are named as not run, with the reason.
    let kvm = crate::qemu::kvm_status().err();
    let needs: [(&str, Option<String>); 3] = [
        ("monitors::uhyve_boots_to_ready", kvm.clone()),
        ("monitors::qemu_kvm_http_front", kvm),
        (
            "deploy_forms::tap_device_in_a_network_namespace",
            crate::tap::unusable_reason(),
        ),
    ];
    for (test, reason) in &needs {
        match reason {
            None => println!("== {test} runs (what it needs is here)"),
            Some(reason) => println!("== NOT RUN: {test}: {reason}"),
        }
    }

    println!("== end-to-end tests");
    let xtask = std::env::current_exe()?;
    let mut cmd = util::cargo();
    cmd.args(["test", "-p", "e2e", "--", "--test-threads=1", "--nocapture"]);
    if needs.iter().any(|(_, reason)| reason.is_none()) {
        cmd.arg("--include-ignored");
        for (test, _) in needs.iter().filter(|(_, reason)| reason.is_some()) {
            cmd.args(["--skip", test]);
        }
    }
    cmd.args(&args.filter).env("XTASK_BIN", xtask);
    let result = tally.run(&mut cmd);
    for (test, reason) in &needs {
        if let Some(reason) = reason {
            tally.not_run(test, reason);
        }
    }
    result
}
