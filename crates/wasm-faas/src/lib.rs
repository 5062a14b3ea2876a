//! Classic FaaS guests, run in the [`sandbox`].
//!
//! Two kinds of modules are supported (see [`classify`]):
//! - **WASI commands** (`wasi_snapshot_preview1` imports, `_start: () -> ()`), run by [`run_wasi`]
//!   with stdin, args and env in, exit code, stdout and stderr out. The WASI subset is implemented
//!   here in plain `std` (no wasi-common or cap-std), so the crate builds for `x86_64-unknown-hermit`.
//! - **Nanoprocesses** (`_start` over i32/i64/f32/f64, optionally importing `platform.now`), run by
//!   [`run_nanoprocess`] / [`run_nanoprocess_str`] with numbers in and numbers (as text) out.
//!
//! A module that imports nothing and whose `_start` takes and returns nothing is both: it is
//! classified as a WASI command and also runs as a nanoprocess ([`nanoprocess_signature`]).
//!
//! Every invocation gets a fresh store and instance bounded by [`Limits`] (fuel, wall-clock
//! deadline, memory budget, output size) and returns a [`Report`] of what it cost, whatever the
//! outcome. Compile modules once with [`load_module`] (on an [`engine`] of their own when they
//! live long: an engine keeps the code of every module compiled on it) and cache them.

// Guest- or client-controlled data passes through this crate: nothing here may panic on it (the
// image aborts on panic), so indexing, unwrap and friends are refused outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

mod error;
mod kind;
mod nanoprocess;
mod wasi;

use std::time::Duration;

pub use error::RunError;
pub use kind::{
    ENTRY, Kind, PLATFORM_MODULE, PLATFORM_NOW, WASI_MODULE, classify, nanoprocess_signature,
};
pub use nanoprocess::{NanoOutput, format_value, parse_args, run_nanoprocess, run_nanoprocess_str};
pub use sandbox::{Fault, Module, Report, Spend, engine};
pub use wasi::{GuestRandom, STDERR_CAPTURE, WasiInput, WasiOutput, run_wasi};
pub use wasmi::{Engine, Val, ValType};

/// Limits of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Instruction budget (wasmi fuel).
    pub fuel: u64,
    /// Wall-clock budget of the whole invocation.
    pub deadline: Duration,
    /// Memory budget: linear memory, tables, and what the host holds for the guest (stdin,
    /// captured output).
    pub max_memory_bytes: usize,
    /// Upper bound of captured stdout, in bytes.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    /// 1e9 fuel, 10 s, 64 MiB memory, 1 MiB output.
    fn default() -> Self {
        Self {
            fuel: 1_000_000_000,
            deadline: Duration::from_secs(10),
            max_memory_bytes: 64 << 20,
            max_output_bytes: 1 << 20,
        }
    }
}

impl Limits {
    fn sandbox(&self) -> sandbox::Limits {
        sandbox::Limits {
            fuel: self.fuel,
            timeout: self.deadline,
            max_memory: self.max_memory_bytes,
        }
    }
}

/// The outcome of one invocation and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Run<T> {
    /// The result, or why there is none.
    pub result: Result<T, RunError>,
    /// Fuel, peak memory and time, also for failed runs.
    pub report: Report,
}

impl<T> Run<T> {
    fn failed(error: RunError) -> Self {
        Run {
            result: Err(error),
            report: Report::default(),
        }
    }
}

/// Compiles a module from binary wasm (`\0asm...`) or WAT text on `engine`, which keeps its
/// code as long as the engine lives: a long-lived module wants an engine of its own
/// ([`sandbox::compile`]).
pub fn load_module(engine: &Engine, source: &[u8]) -> Result<Module, RunError> {
    Module::new(engine, source).map_err(|error| RunError::Invalid(error.to_string()))
}
