//! Shared invocation machinery: fresh store, fuel slices, wall-clock deadline, error mapping.

use std::time::{Duration, Instant};

use wasmi::errors::ErrorKind;
use wasmi::{Error, Func, ResumableCall, Store, TrapCode, Val};

use crate::error::RunError;
use crate::limits::{Limits, MemoryLimiter};

/// Fuel handed to the guest between two deadline checks when a deadline is set.
///
/// Roughly one fuel unit per wasm instruction: natively a slice takes well below a
/// millisecond, under QEMU TCG a few milliseconds, which bounds how late a deadline fires.
pub const FUEL_SLICE: u64 = 250_000;

/// Fuel allowed for instantiation (data segments and a `start` function), which cannot be
/// sliced; capped further by [`Limits::fuel`].
const INSTANTIATION_FUEL: u64 = 50_000_000;

/// Why a host function stopped the guest; carried through wasmi as a host error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostStop {
    /// `proc_exit(code)`.
    #[error("guest exited with code {0}")]
    Exit(i32),
    /// A write would overflow the output buffer.
    #[error("output limit exceeded")]
    OutputTooLarge,
    /// The deadline passed while the host blocked on behalf of the guest.
    #[error("deadline exceeded")]
    Timeout,
    /// The guest handed the host an invalid pointer, length or encoding.
    #[error("{0}")]
    Fault(String),
}

impl wasmi::errors::HostError for HostStop {}

/// State every store carries, whatever the guest kind.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) limiter: MemoryLimiter,
    pub(crate) started: Instant,
    pub(crate) deadline: Option<Instant>,
}

impl Budget {
    pub(crate) fn new(limits: &Limits) -> Self {
        let started = Instant::now();
        Self {
            limiter: MemoryLimiter::new(limits.max_memory_bytes),
            started,
            deadline: limits
                .deadline
                .and_then(|budget| started.checked_add(budget)),
        }
    }

    pub(crate) fn is_past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// Gives the store access to its [`Budget`].
pub(crate) trait HasBudget {
    fn budget(&self) -> &Budget;
    fn budget_mut(&mut self) -> &mut Budget;
}

/// How a run ended, before it is mapped onto [`RunError`].
pub(crate) enum Ending {
    /// The entry function returned.
    Returned,
    /// The guest called `proc_exit`.
    Exited(i32),
}

/// Tracks fuel across slices.
pub(crate) struct Fuel {
    /// Fuel left of [`Limits::fuel`]; `None` for unlimited.
    remaining: Option<u64>,
    /// Fuel consumed so far.
    pub(crate) used: u64,
    sliced: bool,
}

impl Fuel {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            remaining: limits.fuel,
            used: 0,
            sliced: limits.deadline.is_some(),
        }
    }

    /// Fuel to hand out next: at least `required`, at most what is left.
    fn grant(&self, required: u64, cap: u64) -> Option<u64> {
        let wanted = if self.sliced {
            cap.max(required)
        } else {
            u64::MAX
        };
        match self.remaining {
            Some(remaining) if remaining < required.max(1) => None,
            Some(remaining) => Some(wanted.min(remaining)),
            None => Some(wanted),
        }
    }

    fn account(&mut self, granted: u64, left: u64) {
        let consumed = granted.saturating_sub(left);
        self.used = self.used.saturating_add(consumed);
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(consumed);
        }
    }
}

/// Runs `instantiate` under the instantiation fuel cap and maps its failure.
pub(crate) fn instantiate<T: HasBudget, R>(
    store: &mut Store<T>,
    fuel: &mut Fuel,
    limits: &Limits,
    instantiate: impl FnOnce(&mut Store<T>) -> Result<R, Error>,
) -> Result<R, RunError> {
    let granted = fuel
        .grant(0, INSTANTIATION_FUEL)
        .ok_or(RunError::OutOfFuel)?
        .min(INSTANTIATION_FUEL);
    set_fuel(store, granted)?;
    let outcome = instantiate(store);
    let left = store.get_fuel().unwrap_or(0);
    fuel.account(granted, left);
    match outcome {
        Ok(value) => Ok(value),
        Err(error) => Err(match map_error(store, limits, error) {
            Ok(Ending::Exited(code)) => {
                RunError::Trap(format!("the start function exited with code {code}"))
            }
            Ok(Ending::Returned) => RunError::Trap("instantiation failed".into()),
            Err(error) => error,
        }),
    }
}

fn set_fuel<T>(store: &mut Store<T>, fuel: u64) -> Result<(), RunError> {
    store.set_fuel(fuel).map_err(|_| {
        RunError::Invalid(
            "the module's engine does not meter fuel; create it with wasm_faas::new_engine()"
                .into(),
        )
    })
}

/// Calls `func` in fuel slices, checking the deadline between slices.
pub(crate) fn call<T: HasBudget>(
    store: &mut Store<T>,
    fuel: &mut Fuel,
    limits: &Limits,
    func: Func,
    inputs: &[Val],
    outputs: &mut [Val],
) -> Result<Ending, RunError> {
    let mut granted = fuel.grant(0, FUEL_SLICE).ok_or(RunError::OutOfFuel)?;
    set_fuel(store, granted)?;
    let mut call = func.call_resumable(&mut *store, inputs, outputs);
    loop {
        let left = store.get_fuel().unwrap_or(0);
        fuel.account(granted, left);
        match call {
            Ok(ResumableCall::Finished) => return Ok(Ending::Returned),
            Ok(ResumableCall::OutOfFuel(paused)) => {
                if store.data().budget().is_past_deadline() {
                    return Err(timeout(limits));
                }
                granted = fuel
                    .grant(paused.required_fuel(), FUEL_SLICE)
                    .ok_or(RunError::OutOfFuel)?;
                set_fuel(store, granted)?;
                call = paused.resume(&mut *store, outputs);
            }
            Ok(ResumableCall::HostTrap(paused)) => {
                return map_error(store, limits, paused.into_host_error());
            }
            Err(error) => return map_error(store, limits, error),
        }
    }
}

/// Maps a failed call or instantiation onto how the run ended.
fn map_error<T: HasBudget>(
    store: &Store<T>,
    limits: &Limits,
    error: Error,
) -> Result<Ending, RunError> {
    if let Some(stop) = error.downcast_ref::<HostStop>() {
        return match stop {
            HostStop::Exit(code) => Ok(Ending::Exited(*code)),
            HostStop::OutputTooLarge => Err(RunError::OutputTooLarge),
            HostStop::Timeout => Err(timeout(limits)),
            HostStop::Fault(message) => Err(RunError::Trap(message.clone())),
        };
    }
    if store.data().budget().limiter.exceeded {
        return Err(RunError::MemoryLimit);
    }
    match error.as_trap_code() {
        Some(TrapCode::OutOfFuel) => Err(RunError::OutOfFuel),
        Some(code) => Err(RunError::Trap(code.to_string())),
        None if matches!(
            error.kind(),
            ErrorKind::Linker(_) | ErrorKind::Instantiation(_)
        ) =>
        {
            Err(RunError::Invalid(error.to_string()))
        }
        None => Err(RunError::Trap(error.to_string())),
    }
}

fn timeout(limits: &Limits) -> RunError {
    RunError::Timeout(limits.deadline.unwrap_or(Duration::ZERO))
}
