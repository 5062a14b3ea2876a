//! The live limits of one run: memory budget, deadline, fuel not yet handed to the store, the
//! re-entrance gate, and the first fault hit.

use std::time::{Duration, Instant};

use wasmi::ResourceLimiter;
use wasmi::errors::{MemoryError, TableError};
use wasmi_core::LimiterError;

use crate::budget::{Budget, TABLE_ELEMENT_BYTES};
use crate::fault::{Fault, Spend};

/// Limits of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (about one unit per wasm instruction) for the whole invocation.
    pub fuel: u64,
    /// Wall-clock time for the whole invocation, host calls included.
    pub timeout: Duration,
    /// Bytes for linear memory, tables and everything the host allocates for the guest.
    pub max_memory: usize,
}

/// Guest calls in progress at once (host → guest → host → guest...); the gate keeps it at 2.
const MAX_NESTING: u32 = 4;

/// The live state of one run; lives in the store's data (see [`crate::HasQuota`]).
#[derive(Debug)]
pub struct Quota {
    /// Memory in use against the limit.
    pub budget: Budget,
    limits: Limits,
    started: Instant,
    /// `None` when the timeout is too long to represent (no deadline).
    deadline: Option<Instant>,
    /// Fuel not handed to the store yet.
    pub(crate) fuel_left: u64,
    /// Guest calls the host made on its own behalf (`cabi_realloc`, post-return) in progress.
    pub(crate) callbacks: u32,
    /// Guest calls in progress.
    pub(crate) depth: u32,
    /// The first fault that stopped the run.
    fault: Option<Fault>,
    /// The first growth the budget refused: the guest saw `-1` and may cope, so it explains a
    /// later trap rather than failing the run by itself.
    refused_growth: Option<Fault>,
}

impl Quota {
    /// A fresh quota; the clock starts now.
    pub fn new(limits: Limits) -> Quota {
        let started = Instant::now();
        Quota {
            budget: Budget::new(limits.max_memory),
            limits,
            started,
            deadline: started.checked_add(limits.timeout),
            fuel_left: limits.fuel,
            callbacks: 0,
            depth: 0,
            fault: None,
            refused_growth: None,
        }
    }

    /// The limits this run started with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the run must end (`None`: never).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`Duration::MAX` without one).
    pub fn remaining(&self) -> Duration {
        self.deadline.map_or(Duration::MAX, |deadline| {
            deadline.saturating_duration_since(Instant::now())
        })
    }

    /// Fails (and records) the deadline if it has passed.
    pub fn check_deadline(&mut self) -> Result<(), Fault> {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(self.fail(Fault::Timeout {
                limit: self.limits.timeout,
            }));
        }
        Ok(())
    }

    /// Records `fault` unless an earlier one was recorded, and returns the one that counts.
    pub fn fail(&mut self, fault: Fault) -> Fault {
        self.fault.get_or_insert(fault).clone()
    }

    /// The first fault recorded, if any.
    pub fn fault(&self) -> Option<&Fault> {
        self.fault.as_ref()
    }

    /// Charges host memory held until the current host call returns; records a failure.
    pub fn charge_transient(&mut self, bytes: usize) -> Result<(), Fault> {
        match self.budget.charge_transient(bytes) {
            Ok(()) => Ok(()),
            Err(fault) => Err(self.fail(fault)),
        }
    }

    /// Charges host memory kept for the rest of the run; records a failure.
    pub fn charge(&mut self, bytes: usize) -> Result<(), Fault> {
        self.charge_for(bytes, Spend::HostAllocation)
    }

    /// Charges memory spent on `spent`, kept for the rest of the run; records a failure.
    pub fn charge_for(&mut self, bytes: usize, spent: Spend) -> Result<(), Fault> {
        match self.budget.charge(bytes, spent) {
            Ok(()) => Ok(()),
            Err(fault) => Err(self.fail(fault)),
        }
    }

    /// Whether the guest may call host imports now: not while the host runs it on its own
    /// behalf, so host calls never nest (the native stack stays shallow).
    pub fn check_entry(&mut self, import: &str) -> Result<(), Fault> {
        if self.callbacks > 0 {
            return Err(self.fail(Fault::Reentrance(format!(
                "{import} called while the host was calling the guest (from cabi_realloc or a \
                 post-return function)"
            ))));
        }
        self.check_deadline()
    }

    /// Notes a guest call starting; fails when calls nest too deep.
    pub(crate) fn enter_guest(&mut self, callback: bool) -> Result<(), Fault> {
        if self.depth >= MAX_NESTING {
            return Err(self.fail(Fault::Reentrance(format!(
                "guest calls nested {} deep",
                self.depth + 1
            ))));
        }
        self.depth += 1;
        if callback {
            self.callbacks += 1;
        }
        Ok(())
    }

    pub(crate) fn leave_guest(&mut self, callback: bool) {
        self.depth = self.depth.saturating_sub(1);
        if callback {
            self.callbacks = self.callbacks.saturating_sub(1);
        }
    }

    /// The fault that ended a call with a trap: the first recorded one; else the refused
    /// growth if the guest then trapped (a Rust guest aborts when allocation fails); else the
    /// trap itself. Recorded, so that enclosing calls report the same.
    pub(crate) fn settle(&mut self, trap: Fault) -> Fault {
        if let Some(fault) = &self.fault {
            return fault.clone();
        }
        let fault = match (&trap, &self.refused_growth) {
            (Fault::Trap(_) | Fault::Instantiate(_), Some(refused)) => refused.clone(),
            _ => trap,
        };
        self.fail(fault)
    }

    fn denied(&mut self, fault: Fault) -> Result<bool, LimiterError> {
        // Wasm semantics: the growth fails (`memory.grow` returns -1, instantiation fails).
        self.refused_growth.get_or_insert(fault);
        Ok(false)
    }
}

impl ResourceLimiter for Quota {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false); // the module's own maximum: plain wasm semantics
        }
        match self.budget.grow(current, desired, Spend::LinearMemory) {
            Ok(()) => Ok(true),
            Err(fault) => self.denied(fault),
        }
    }

    fn memory_grow_failed(&mut self, _error: &MemoryError) -> Result<(), LimiterError> {
        self.budget.growth_failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let bytes = |elements: usize| elements.saturating_mul(TABLE_ELEMENT_BYTES);
        match self
            .budget
            .grow(bytes(current), bytes(desired), Spend::Table)
        {
            Ok(()) => Ok(true),
            Err(fault) => self.denied(fault),
        }
    }

    fn table_grow_failed(&mut self, _error: &TableError) -> Result<(), LimiterError> {
        self.budget.growth_failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}
