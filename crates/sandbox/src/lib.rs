//! The one place that runs guest WebAssembly, for every kind of function.
//!
//! - [`engine`] configures wasmi: fuel metering, bounded stacks, no start functions (so no guest
//!   code runs outside a deadline), and wasmi's strict caps on what a module may declare.
//! - [`inspect`] reads a module without compiling it: its [`Footprint`] (the host memory of its
//!   instances), checked against the host's caps, and its [`Interface`] (imports and exports,
//!   enough to tell its kind); [`Inspected::compile`] (or [`compile`]) then compiles it once, on
//!   an engine of its own (dropping the module frees its code), translating each function on its
//!   first call ([`COMPILATION_MODE`]).
//! - [`store`] creates a store for one run with its [`Limits`]; its data is a [`Guest`]: the
//!   run's [`Quota`] plus the kind's host state.
//! - [`call`] runs an export a fuel slice at a time, checking the wall-clock deadline between
//!   slices; [`callback`] does the same for calls the host makes on its own behalf from inside a
//!   host function (`cabi_realloc`, post-return), during which the guest may not call host
//!   imports ([`enter_host`] refuses), so host and guest never nest more than one level.
//! - [`Budget`] counts linear memory, tables, the instance's host memory and host allocations made
//!   for the guest against one limit; host code charges what it allocates before allocating it.
//! - [`Fault`] says why a run stopped (the first limit hit wins); [`report`] gives fuel and peak
//!   memory for every outcome.

// Guest-controlled data passes through this crate: nothing here may panic on it (the
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

mod budget;
mod fault;
mod interface;
mod module;
mod quota;
mod run;
mod text;

pub use budget::{Budget, TABLE_ELEMENT_BYTES};
pub use fault::{Fault, HostFault, Spend};
pub use interface::{Import, Interface, ItemType, Signature};
pub use module::{
    CompileError, DATA_SEGMENT_BYTES, ELEMENT_ITEM_BYTES, ELEMENT_SEGMENT_BYTES, EXPORT_BYTES,
    FUNCTION_BYTES, Footprint, GLOBAL_BYTES, INSTANCE_BYTES, Inspected, MAX_ELEMENT_ITEMS,
    MAX_EXPORTS, MAX_IMPORTS, Module, TABLE_OR_MEMORY_BYTES, compile, inspect, wasm_binary,
};
pub use quota::{Limits, Quota};
pub use run::{FUEL_SLICE, Report, call, callback, enter_host, instantiate, report, store};
pub use text::{CUT_MARK, CUT_START_MARK, Clipped, GUEST_TEXT_MAX, clip, clip_display, clip_end};

/// Deepest wasm call stack (frames) a guest may use; beyond it the guest traps.
pub const MAX_RECURSION_DEPTH: usize = 1000;

/// Largest value stack of one run, in bytes (wasmi keeps it outside linear memory).
pub const MAX_STACK_BYTES: usize = 1 << 20;

/// How guest code is compiled: validated when deployed, each function translated to wasmi's
/// bytecode on its first call (charged to that call's fuel and deadline). Deploys and boot
/// answer sooner and code that never runs is never translated; once translated, a function runs
/// as fast as eagerly compiled code (`cargo bench -p wasm-host` measures both modes).
pub const COMPILATION_MODE: wasmi::CompilationMode = wasmi::CompilationMode::LazyTranslation;

/// An engine configured for guests, compiling in [`COMPILATION_MODE`]. wasmi keeps the code of
/// every module compiled on an engine for as long as the engine lives: give each long-lived
/// module its own (see [`compile`]).
///
/// Modules are held to [`wasmi::EnforcedLimits::strict`] (the only caps wasmi 2 lets a user
/// set): at most 10,000 defined functions averaging 40 bytes of code or more, 1,000 globals,
/// 100 tables, 1 memory, 1,000 element and 1,000 data segments, 32 parameters and results.
pub fn engine() -> wasmi::Engine {
    engine_with(COMPILATION_MODE)
}

/// An engine configured as [`engine`]'s but compiling in `mode` (for measuring the modes).
pub fn engine_with(mode: wasmi::CompilationMode) -> wasmi::Engine {
    let mut config = wasmi::Config::default();
    config
        .consume_fuel(true)
        .allow_start_fn(false)
        .set_max_recursion_depth(MAX_RECURSION_DEPTH)
        .set_max_stack_height(MAX_STACK_BYTES)
        .enforced_limits(wasmi::EnforcedLimits::strict())
        .compilation_mode(mode);
    wasmi::Engine::new(&config)
}

/// Store data of a run: its quota and the host state of the function's kind.
#[derive(Debug)]
pub struct Guest<T> {
    /// The run's limits and what it used.
    pub quota: Quota,
    /// The kind's host state (WASI buffers, resource tables, ...).
    pub host: T,
}

/// Store data that carries a [`Quota`].
pub trait HasQuota {
    /// The run's quota.
    fn quota(&self) -> &Quota;
    /// The run's quota, mutable.
    fn quota_mut(&mut self) -> &mut Quota;
}

impl<T> HasQuota for Guest<T> {
    fn quota(&self) -> &Quota {
        &self.quota
    }

    fn quota_mut(&mut self) -> &mut Quota {
        &mut self.quota
    }
}

#[cfg(test)]
mod tests;
