//! Per-invocation cost of classic FaaS guests (fresh store and instance each time, module cached).
//!
//! `cargo run --release -p wasm-faas --example faas_bench [target/guests]`
//! (build `fib.wasm` first with `cargo xtask faas-guests`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasm_faas::{Limits, WasiInput, engine, load_module, run_nanoprocess_str, run_wasi};

fn report(name: &str, runs: u32, total: Duration, fuel: u64) {
    println!(
        "{name:<14} {runs:>6} runs  mean {:>9.1} µs/invocation  fuel {fuel}",
        total.as_secs_f64() * 1e6 / f64::from(runs)
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/guests"),
        PathBuf::from,
    );
    let engine = engine();
    let limits = Limits::default();

    let started = Instant::now();
    let fib = load_module(&engine, &std::fs::read(dir.join("fib.wasm"))?)?;
    println!(
        "fib.wasm compile (once): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let answer = load_module(&engine, &std::fs::read(dir.join("answer.wat"))?)?;
    let input = WasiInput {
        stdin: b"20".to_vec(),
        ..WasiInput::default()
    };

    let runs = 2000;
    let mut fuel = 0;
    let started = Instant::now();
    for _ in 0..runs {
        let run = run_wasi(&fib, &input, &limits);
        run.result?;
        fuel = run.report.fuel_used;
    }
    report("fib(20) wasi", runs, started.elapsed(), fuel);

    let runs = 20000;
    let started = Instant::now();
    for _ in 0..runs {
        let run = run_nanoprocess_str(&answer, "", &limits);
        run.result?;
        fuel = run.report.fuel_used;
    }
    report("answer.wat", runs, started.elapsed(), fuel);

    // The smallest WASI command: the fixed cost of a WASI invocation (linker, store, instance).
    let exit = load_module(&engine, &std::fs::read(dir.join("wasi_exit.wat"))?)?;
    let started = Instant::now();
    for _ in 0..runs {
        let run = run_wasi(&exit, &WasiInput::default(), &limits);
        run.result?;
        fuel = run.report.fuel_used;
    }
    report("wasi_exit.wat", runs, started.elapsed(), fuel);

    compilation_modes(&std::fs::read(dir.join("fib.wasm"))?, &input, &limits)
}

/// fib.wasm compiled, compiled → first answer, and one run once warm, with every function
/// translated at compile time (eager) and on its first call (lazy translation, the mode
/// [`wasm_faas::engine`] uses).
fn compilation_modes(
    wasm: &[u8],
    input: &WasiInput,
    limits: &Limits,
) -> Result<(), Box<dyn std::error::Error>> {
    use wasmi::CompilationMode;
    println!("\n| fib.wasm, mode | compile | compile → first fib(20) | fib(20), warm |");
    println!("| --- | --- | --- | --- |");
    for (name, mode) in [
        ("eager", CompilationMode::Eager),
        ("lazy translation", CompilationMode::LazyTranslation),
    ] {
        let rounds = 50;
        let (mut compiled, mut first) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let started = Instant::now();
            let module = load_module(&sandbox::engine_with(mode), wasm)?;
            compiled += started.elapsed();
            run_wasi(&module, input, limits).result?;
            first += started.elapsed();
        }
        let module = load_module(&sandbox::engine_with(mode), wasm)?;
        run_wasi(&module, input, limits).result?;
        let runs = 2000;
        let started = Instant::now();
        for _ in 0..runs {
            run_wasi(&module, input, limits).result?;
        }
        println!(
            "| {name} | {:?} | {:?} | {:?} |",
            compiled / rounds,
            first / rounds,
            started.elapsed() / runs
        );
    }
    Ok(())
}
