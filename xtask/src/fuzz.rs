//! `cargo xtask fuzz [--seconds N] [TARGET...]`: coverage-guided fuzzing of the places where
//! hostile bytes meet host code (`fuzz/fuzz_targets/`).
//!
//! The engine is libFuzzer through `libfuzzer-sys` (crates.io; it builds libFuzzer's C++ sources
//! with the system's g++). The targets keep cargo-fuzz's layout, but the xtask builds them itself
//! with the flags `cargo fuzz build -s none` passes (SanitizerCoverage through `-Cpasses` and
//! `-Cllvm-args`, all stable rustc options): Debian's rustc ships no sanitizer runtimes, and the
//! cargo-fuzz binary itself would be one more tool to install. cargo-afl would need AFL++ built
//! against rustc's own LLVM; bolero's coverage-guided engines are libFuzzer or AFL again.
//!
//! Each target runs for `--seconds`, reading `fuzz/corpus/TARGET` (kept in the repository) and
//! writing what it discovers to `target/fuzz/corpus/TARGET`; `--save` merges that back into the
//! repository's corpus (minimised by libFuzzer's `-merge=1`). A crash fails the run and leaves
//! its input in `target/fuzz/artifacts/TARGET/`: make it a regression test in the crate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util;

/// Every fuzz target, in the order they run.
pub const TARGETS: [&str; 4] = ["http_request", "abi_lift", "wasi_calls", "resp_reply"];

/// The host target: named explicitly so that the coverage flags stay off build scripts.
const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// What `cargo fuzz build -s none` passes to rustc.
const COVERAGE_RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args, Debug, Clone)]
pub struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Merge the inputs found into the repository's corpus (`fuzz/corpus/TARGET`).
    #[arg(long)]
    pub save: bool,
    /// Targets to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

/// What one target's run did.
pub struct FuzzRun {
    pub target: String,
    pub executions: u64,
    pub seconds: f64,
    pub corpus: usize,
}

impl FuzzRun {
    /// Executions per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.executions as f64 / self.seconds.max(0.001)
    }
}

/// Builds the targets and runs each for `args.seconds`; fails on the first crash.
pub fn run(args: &FuzzArgs) -> Result<Vec<FuzzRun>> {
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    build()?;
    let mut runs = Vec::new();
    for target in targets {
        let run = run_target(target, args.seconds)?;
        if args.save {
            save(target)?;
        }
        runs.push(run);
    }
    println!("fuzz target       seconds   executions      exec/s   corpus");
    for run in &runs {
        println!(
            "{:<16} {:>8.0} {:>12} {:>11.0} {:>8}",
            run.target,
            run.seconds,
            run.executions,
            run.rate(),
            run.corpus
        );
    }
    Ok(runs)
}

fn fuzz_dir() -> PathBuf {
    util::root().join("fuzz")
}

fn work_dir() -> PathBuf {
    util::target_dir().join("fuzz")
}

fn binary(target: &str) -> PathBuf {
    work_dir().join(HOST_TARGET).join("release").join(target)
}

fn build() -> Result<()> {
    println!("== fuzz: building the targets with coverage instrumentation");
    util::run(
        util::cargo()
            .current_dir(fuzz_dir())
            .args(["build", "--release", "--bins", "--target", HOST_TARGET])
            .arg("--target-dir")
            .arg(work_dir())
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("RUSTFLAGS", COVERAGE_RUSTFLAGS),
    )
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

fn run_target(target: &str, seconds: u64) -> Result<FuzzRun> {
    let seeds = fuzz_dir().join("corpus").join(target);
    let found = work_dir().join("corpus").join(target);
    let artifacts = work_dir().join("artifacts").join(target);
    for dir in [&seeds, &found, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    println!("== fuzz: {target} for {seconds} s");
    let start = Instant::now();
    let output = Command::new(binary(target))
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&found)
        .arg(&seeds)
        .output()
        .with_context(|| format!("run {}", binary(target).display()))?;
    let elapsed = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
        bail!(
            "fuzz target {target} failed ({}); the input is in {}",
            output.status,
            artifacts.display()
        );
    }
    let executions = final_stat(&log, "number_of_executed_units").unwrap_or(0);
    Ok(FuzzRun {
        target: target.to_string(),
        executions,
        seconds: elapsed,
        corpus: count_files(&seeds) + count_files(&found),
    })
}

/// A `stat::NAME: VALUE` line of libFuzzer's `-print_final_stats=1`.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines().find_map(|line| {
        line.strip_prefix("stat::")?
            .strip_prefix(name)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

/// Merges what the last run found into the repository's corpus (only inputs that add coverage).
fn save(target: &str) -> Result<()> {
    let seeds = fuzz_dir().join("corpus").join(target);
    let found = work_dir().join("corpus").join(target);
    util::run(
        Command::new(binary(target))
            .arg("-merge=1")
            .arg(&seeds)
            .arg(&found),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#123 DONE cov: 10\nstat::number_of_executed_units: 4567\n\
                   stat::average_exec_per_sec:     76\n";
        assert_eq!(final_stat(log, "number_of_executed_units"), Some(4567));
        assert_eq!(final_stat(log, "average_exec_per_sec"), Some(76));
        assert_eq!(final_stat(log, "peak_rss_mb"), None);
    }
}
