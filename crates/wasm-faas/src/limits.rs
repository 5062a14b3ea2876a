//! Per-invocation resource limits and the memory limiter that enforces them.

use std::time::Duration;

use wasmi::ResourceLimiter;
use wasmi::errors::{MemoryError, TableError};
use wasmi_core::LimiterError;

/// Resource limits of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Instruction budget (wasmi fuel); `None` means unlimited.
    pub fuel: Option<u64>,
    /// Wall-clock budget of the whole invocation, instantiation included; `None` means unlimited.
    ///
    /// Checked between fuel slices of [`crate::FUEL_SLICE`] units and while the guest sleeps in
    /// `poll_oneoff`, so it stops even guests that spin in an endless loop with unlimited fuel.
    pub deadline: Option<Duration>,
    /// Upper bound of the guest's linear memory, in bytes.
    pub max_memory_bytes: usize,
    /// Upper bound of captured stdout and (separately) stderr, in bytes.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    /// 1e9 fuel, 10 s, 64 MiB memory, 1 MiB output per stream.
    fn default() -> Self {
        Self {
            fuel: Some(1_000_000_000),
            deadline: Some(Duration::from_secs(10)),
            max_memory_bytes: 64 << 20,
            max_output_bytes: 1 << 20,
        }
    }
}

/// Upper bound of table elements (function pointers) per table.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Enforces [`Limits::max_memory_bytes`] and records the peak.
///
/// A denied growth follows wasm semantics (`memory.grow` returns -1, instantiation fails) and
/// sets [`MemoryLimiter::exceeded`], so a failure that follows is reported as
/// [`crate::RunError::MemoryLimit`] rather than as a generic trap.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    max_memory_bytes: usize,
    /// Largest memory size granted so far, in bytes.
    pub(crate) peak_memory: usize,
    /// Set once a memory or table growth was denied by the limit.
    pub(crate) exceeded: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(max_memory_bytes: usize) -> Self {
        Self {
            max_memory_bytes,
            peak_memory: 0,
            exceeded: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            // The module's own maximum: plain wasm semantics, `memory.grow` returns -1.
            return Ok(false);
        }
        if desired > self.max_memory_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: &MemoryError) -> Result<(), LimiterError> {
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        if desired > MAX_TABLE_ELEMENTS {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: &TableError) -> Result<(), LimiterError> {
        Ok(())
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        8
    }

    fn memories(&self) -> usize {
        1
    }
}
