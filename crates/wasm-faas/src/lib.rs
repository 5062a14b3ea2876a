//! Classic FaaS guests on the [`wasmi`] interpreter, with limits.
//!
//! Two kinds of modules are supported (see [`classify`]):
//! - **WASI commands** (`wasi_snapshot_preview1` imports, `_start: () -> ()`), run by [`run_wasi`]
//!   with stdin, args and env in, exit code, stdout and stderr out. The WASI subset is implemented
//!   here in plain `std` (no wasi-common or cap-std), so the crate builds for `x86_64-unknown-hermit`.
//! - **Nanoprocesses** (`_start` over i32/i64/f32/f64, optionally importing `platform.now`), run by
//!   [`run_nanoprocess`] / [`run_nanoprocess_str`] with numbers in and numbers (as text) out.
//!
//! Every invocation gets a fresh [`wasmi::Store`] and instance and is bounded by [`Limits`]:
//! fuel, a wall-clock deadline (checked between fuel slices), linear memory and output size.
//! Compile modules once with [`load_module`] on an engine from [`new_engine`] and cache them.

mod error;
mod exec;
mod kind;
mod limits;
mod nanoprocess;
mod wasi;

pub use error::RunError;
pub use exec::FUEL_SLICE;
pub use kind::{ENTRY, Kind, PLATFORM_MODULE, PLATFORM_NOW, WASI_MODULE, classify};
pub use limits::Limits;
pub use nanoprocess::{NanoOutput, format_value, parse_args, run_nanoprocess, run_nanoprocess_str};
pub use wasi::{GuestRandom, WasiInput, WasiOutput, run_wasi};
pub use wasmi::{Engine, Module, Val, ValType};

use wasmi::{CompilationMode, Config};

/// An engine that meters fuel and compiles eagerly, as [`run_wasi`] and [`run_nanoprocess`] require.
pub fn new_engine() -> Engine {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(CompilationMode::Eager);
    Engine::new(&config)
}

/// Compiles a module from binary wasm (`\0asm...`) or WAT text.
pub fn load_module(engine: &Engine, source: &[u8]) -> Result<Module, RunError> {
    Module::new(engine, source).map_err(|error| RunError::Invalid(error.to_string()))
}
