//! Running guest code: fuel handed out in slices, the deadline checked between slices and at
//! every host call, and the outcome classified.

use std::time::Duration;

use wasmi::{AsContextMut, Caller, Func, Instance, Linker, ResumableCall, Store, Val};

use crate::fault::{Fault, Spend};
use crate::module::Module;
use crate::quota::Quota;
use crate::{Guest, HasQuota, Limits};

/// Fuel handed to the guest between two deadline checks.
///
/// About one unit per wasm instruction: natively a slice takes well under a millisecond, under
/// QEMU TCG a few milliseconds, which bounds how late a deadline fires.
pub const FUEL_SLICE: u64 = 250_000;

/// What a run cost, whatever its outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Fuel consumed.
    pub fuel_used: u64,
    /// The most bytes of the memory budget in use at once.
    pub peak_memory: usize,
    /// Wall-clock time since the run started.
    pub elapsed: Duration,
}

/// A store for one run of a module compiled on `engine`, with `host` as the host state.
pub fn store<T>(engine: &wasmi::Engine, limits: Limits, host: T) -> Store<Guest<T>> {
    let mut store = Store::new(
        engine,
        Guest {
            quota: Quota::new(limits),
            host,
        },
    );
    store.limiter(|guest| &mut guest.quota);
    // Fuel is handed out in slices by `call`; the store starts empty. Engines from
    // `crate::engine` meter fuel, so this cannot fail.
    let _ = store.set_fuel(0);
    store
}

/// Instantiates `module` (engines from [`crate::engine`] refuse start functions, so no guest
/// code runs here). The instance's host memory ([`Module::footprint`]) is charged first, then
/// memories and tables as they are created.
pub fn instantiate<D: HasQuota>(
    store: &mut Store<D>,
    linker: &Linker<D>,
    module: &Module,
) -> Result<Instance, Fault> {
    let quota = store.data_mut().quota_mut();
    quota.check_deadline()?;
    quota.charge_for(module.footprint().host_bytes(), Spend::Instance)?;
    linker
        .instantiate_and_start(&mut *store, module)
        .map_err(|error| settle(store.data_mut().quota_mut(), &error))
}

/// Calls `func` as the host's export call (the guest may call host imports meanwhile).
pub fn call<D: HasQuota>(
    ctx: impl AsContextMut<Data = D>,
    func: Func,
    params: &[Val],
    results: &mut [Val],
) -> Result<(), Fault> {
    guarded(ctx, func, params, results, false)
}

/// Calls `func` on the host's own behalf from inside a host call (`cabi_realloc`,
/// post-return): the guest may not call host imports until it returns.
pub fn callback<D: HasQuota>(
    ctx: impl AsContextMut<Data = D>,
    func: Func,
    params: &[Val],
    results: &mut [Val],
) -> Result<(), Fault> {
    guarded(ctx, func, params, results, true)
}

fn guarded<D: HasQuota>(
    mut ctx: impl AsContextMut<Data = D>,
    func: Func,
    params: &[Val],
    results: &mut [Val],
    callback: bool,
) -> Result<(), Fault> {
    ctx.as_context_mut()
        .data_mut()
        .quota_mut()
        .enter_guest(callback)?;
    let result = sliced(&mut ctx, func, params, results);
    ctx.as_context_mut()
        .data_mut()
        .quota_mut()
        .leave_guest(callback);
    result
}

/// Runs `func` a fuel slice at a time until it returns, traps, or a limit is hit.
fn sliced<D: HasQuota>(
    ctx: &mut impl AsContextMut<Data = D>,
    func: Func,
    params: &[Val],
    results: &mut [Val],
) -> Result<(), Fault> {
    refill(ctx, 0)?;
    let mut call = func.call_resumable(ctx.as_context_mut(), params, results);
    loop {
        match call {
            Ok(ResumableCall::Finished) => return Ok(()),
            Ok(ResumableCall::OutOfFuel(paused)) => {
                refill(ctx, paused.required_fuel())?;
                call = paused.resume(ctx.as_context_mut(), results);
            }
            Ok(ResumableCall::HostTrap(paused)) => {
                let error = paused.into_host_error();
                return Err(settle(ctx.as_context_mut().data_mut().quota_mut(), &error));
            }
            Err(error) => return Err(settle(ctx.as_context_mut().data_mut().quota_mut(), &error)),
        }
    }
}

/// The fault that ended a call (see [`Quota::settle`]).
fn settle(quota: &mut Quota, error: &wasmi::Error) -> Fault {
    quota.settle(Fault::from_error(error))
}

/// Moves the fuel left in the store back to the quota and hands out the next slice (at least
/// `required`), after checking the deadline.
fn refill<D: HasQuota>(ctx: &mut impl AsContextMut<Data = D>, required: u64) -> Result<(), Fault> {
    let mut ctx = ctx.as_context_mut();
    let in_store = ctx.get_fuel().unwrap_or(0);
    let quota = ctx.data_mut().quota_mut();
    quota.check_deadline()?;
    let total = quota.fuel_left.saturating_add(in_store);
    if total < required.max(1) {
        quota.fuel_left = total;
        let limit = quota.limits().fuel;
        let fault = quota.fail(Fault::OutOfFuel { limit });
        let _ = ctx.set_fuel(0);
        return Err(fault);
    }
    let grant = required.max(FUEL_SLICE).min(total);
    quota.fuel_left = total - grant;
    ctx.set_fuel(grant)
        .map_err(|error| Fault::Instantiate(format!("the engine does not meter fuel: {error}")))
}

/// Checks at the start of a host import that the guest may call it now (not from a host
/// callback, deadline not passed); the error traps the guest.
pub fn enter_host<D: HasQuota>(
    caller: &mut Caller<'_, D>,
    import: &str,
) -> Result<(), wasmi::Error> {
    caller
        .data_mut()
        .quota_mut()
        .check_entry(import)
        .map_err(wasmi::Error::from)
}

/// What the run in `store` cost so far.
pub fn report<D: HasQuota>(store: &Store<D>) -> Report {
    let quota = store.data().quota();
    let in_store = store.get_fuel().unwrap_or(0);
    Report {
        fuel_used: quota
            .limits()
            .fuel
            .saturating_sub(quota.fuel_left.saturating_add(in_store)),
        peak_memory: quota.budget.peak(),
        elapsed: quota.started().elapsed(),
    }
}
