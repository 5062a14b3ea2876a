//! Why a guest run ended without a result.

use std::fmt;
use std::time::Duration;

use wasmi::TrapCode;
use wasmi::errors::HostError;

/// What a request's memory budget was spent on when it ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Growing the guest's linear memory.
    LinearMemory,
    /// Growing a table (function references).
    Table,
    /// The host side of a module instance: its functions, globals, segments and exports.
    Instance,
    /// Memory the host allocates for the guest: values lifted out of guest memory, replies of
    /// host calls, route tables, captured output.
    HostAllocation,
}

impl fmt::Display for Spend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Spend::LinearMemory => "linear memory",
            Spend::Table => "table",
            Spend::Instance => "module instance",
            Spend::HostAllocation => "host allocations",
        })
    }
}

/// Why a run stopped. The first fault a run hits is the one reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The guest trapped (unreachable, out-of-bounds access, call stack exhausted, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The guest broke the host's rules: invalid data given to a host call, an unknown
    /// handle, a malformed result.
    #[error("invalid use of the host: {0}")]
    Host(String),
    /// The guest called a host function while the host was calling the guest on its own behalf
    /// (e.g. from `cabi_realloc` during a host call), or calls nested too deep.
    #[error("re-entered the host: {0}")]
    Reentrance(String),
    /// The fuel budget ran out.
    #[error("out of fuel (fuel={limit})")]
    OutOfFuel {
        /// The fuel the run had.
        limit: u64,
    },
    /// The wall-clock deadline passed.
    #[error("deadline of {} ms exceeded (timeout-ms={})", .limit.as_millis(), .limit.as_millis())]
    Timeout {
        /// The time the run had.
        limit: Duration,
    },
    /// The memory budget ran out.
    #[error(
        "memory limit exceeded: {spent} needed {needed} more bytes with {used} of max-memory={limit} in use"
    )]
    Memory {
        /// What the memory was for.
        spent: Spend,
        /// Bytes asked for.
        needed: usize,
        /// Bytes in use at the time.
        used: usize,
        /// The budget.
        limit: usize,
    },
    /// Output (stdout) grew beyond its limit.
    #[error("output exceeded {limit} bytes (max-body={limit})")]
    Output {
        /// The limit in bytes.
        limit: usize,
    },
    /// The guest called `proc_exit`: not a failure by itself; the caller decides.
    #[error("exited with code {0}")]
    Exit(i32),
    /// The module could not be instantiated (imports, data segments).
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
}

impl Fault {
    /// Classifies an error that ended a call, unless the run already recorded a fault.
    pub(crate) fn from_error(error: &wasmi::Error) -> Fault {
        if let Some(HostFault(fault)) = error.downcast_ref::<HostFault>() {
            return fault.clone();
        }
        match error.as_trap_code() {
            Some(TrapCode::StackOverflow) => {
                Fault::Trap("call stack exhausted (recursion too deep)".into())
            }
            Some(code) => Fault::Trap(code.to_string()),
            None => match error.kind() {
                wasmi::errors::ErrorKind::Linker(_)
                | wasmi::errors::ErrorKind::Instantiation(_) => {
                    Fault::Instantiate(error.to_string())
                }
                _ => Fault::Trap(error.to_string()),
            },
        }
    }
}

/// A [`Fault`] carried through wasmi as a host error, to trap the guest.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HostFault(pub Fault);

impl HostError for HostFault {}

impl From<Fault> for wasmi::Error {
    fn from(fault: Fault) -> Self {
        wasmi::Error::host(HostFault(fault))
    }
}
