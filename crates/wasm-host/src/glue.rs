//! Generic adapters between the canonical ABI runtime ([`crate::abi`]) and wasmi, used by the
//! generated bindings. Nothing here is specific to one WIT function.
//!
//! Rules for host and guest (enforced with the [`sandbox`]): a host import first checks that the
//! guest may call it (not from inside a host callback, deadline not passed); values lifted out of
//! guest memory are charged to the run's memory budget before the host allocates them, and
//! released when the import returns; the host calls the guest's `cabi_realloc` and post-return
//! functions as callbacks, during which the guest cannot call imports.

use std::cell::Cell;

use sandbox::{Fault, HasQuota, Spend};
use wasmi::errors::HostError;
use wasmi::{
    AsContext, AsContextMut, Caller, Extern, Func, FuncType, Instance, Memory, Val, ValType,
};

use crate::abi::{self, AbiError, FlatType, FlatVal, GuestMemory, WitType};

/// A core function of the world: where it lives and its flattened signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreFunc {
    /// Import module (empty for exports).
    pub module: &'static str,
    /// Field name.
    pub name: &'static str,
    /// Core parameter types.
    pub params: &'static [FlatType],
    /// Core result types.
    pub results: &'static [FlatType],
}

impl CoreFunc {
    /// The wasmi function type.
    pub fn func_type(&self) -> FuncType {
        func_type(self.params, self.results)
    }
}

impl HostError for AbiError {}

/// The fault of a guest that broke the ABI (or ran its budget out while being lifted).
pub fn abi_fault(error: AbiError) -> Fault {
    match error {
        AbiError::OverBudget {
            needed,
            used,
            limit,
        } => Fault::Memory {
            spent: Spend::HostAllocation,
            needed: usize::try_from(needed).unwrap_or(usize::MAX),
            used,
            limit,
        },
        other => Fault::Host(other.to_string()),
    }
}

impl From<AbiError> for wasmi::Error {
    /// Traps the calling guest with the fault the violation stands for.
    fn from(error: AbiError) -> Self {
        abi_fault(error).into()
    }
}

/// Charges what lifting a host call's arguments allocated, until the call returns.
pub fn commit_lifted<T: HasQuota>(caller: &mut Caller<'_, T>, charged: usize) -> Result<(), Fault> {
    caller.data_mut().quota_mut().charge_transient(charged)
}

/// Ends a host call: what was charged for it alone is released.
pub fn end_host_call<T: HasQuota>(caller: &mut Caller<'_, T>) {
    caller.data_mut().quota_mut().budget.release_transient();
}

/// Charges what lifting an export's result allocated, for the rest of the run.
pub fn keep_charged<T: HasQuota>(
    store: &mut wasmi::Store<T>,
    charged: usize,
) -> Result<(), CallError> {
    Ok(store.data_mut().quota_mut().charge(charged)?)
}

fn val_type(t: FlatType) -> ValType {
    match t {
        FlatType::I32 => ValType::I32,
        FlatType::I64 => ValType::I64,
        FlatType::F32 => ValType::F32,
        FlatType::F64 => ValType::F64,
    }
}

/// The wasmi function type of a flattened signature.
pub fn func_type(params: &[FlatType], results: &[FlatType]) -> FuncType {
    FuncType::new(
        params.iter().copied().map(val_type),
        results.iter().copied().map(val_type),
    )
}

/// Converts wasmi values into flat values.
pub fn vals_to_flat(vals: &[Val]) -> Result<Vec<FlatVal>, AbiError> {
    vals.iter()
        .map(|v| match v {
            Val::I32(x) => Ok(FlatVal::I32(*x)),
            Val::I64(x) => Ok(FlatVal::I64(*x)),
            Val::F32(x) => Ok(FlatVal::F32(x.to_bits())),
            Val::F64(x) => Ok(FlatVal::F64(x.to_bits())),
            _ => Err(AbiError::FlatMismatch),
        })
        .collect()
}

fn flat_to_val(v: FlatVal) -> Val {
    match v {
        FlatVal::I32(x) => Val::I32(x),
        FlatVal::I64(x) => Val::I64(x),
        FlatVal::F32(x) => Val::F32(wasmi::F32::from_bits(x)),
        FlatVal::F64(x) => Val::F64(wasmi::F64::from_bits(x)),
    }
}

/// Writes flat values into a wasmi result slice of the same length.
pub fn flat_to_vals(flat: &[FlatVal], out: &mut [Val]) -> Result<(), AbiError> {
    if flat.len() != out.len() {
        return Err(AbiError::FlatMismatch);
    }
    for (o, v) in out.iter_mut().zip(flat) {
        *o = flat_to_val(*v);
    }
    Ok(())
}

/// The `i`-th flat value as a pointer.
pub fn flat_ptr(flat: &[FlatVal], i: usize) -> Result<u32, AbiError> {
    match flat.get(i) {
        Some(FlatVal::I32(p)) => Ok(*p as u32),
        _ => Err(AbiError::FlatMismatch),
    }
}

/// Stores `value` at the guest-provided, alignment-checked `ptr`.
pub fn store_at<T: WitType>(
    mem: &mut dyn GuestMemory,
    ptr: u32,
    value: &T,
) -> Result<(), AbiError> {
    abi::checked_range(mem.bytes().len(), ptr, T::SIZE.into(), T::ALIGN)?;
    value.store(mem, ptr)
}

/// Loads a `T` from the guest-provided, alignment-checked `ptr`.
pub fn load_at<T: WitType>(mem: &dyn GuestMemory, ptr: u32) -> Result<T, AbiError> {
    abi::checked_range(mem.bytes().len(), ptr, T::SIZE.into(), T::ALIGN)?;
    T::load(mem, ptr)
}

/// A guest's memory and allocator seen through a wasmi store context, with the run's memory
/// budget for what lifting allocates on the host.
pub struct WasmiMemory<C> {
    ctx: C,
    memory: Memory,
    realloc: Option<Func>,
    /// Bytes charged by lifting so far (committed to the quota by the caller).
    charged: Cell<usize>,
    /// The budget when this view was made: in use and limit.
    used: usize,
    limit: usize,
}

impl<C: AsContextMut<Data = D>, D: HasQuota + 'static> WasmiMemory<C> {
    /// Wraps `memory` and `realloc` of an instance living in `ctx`.
    pub fn new(ctx: C, memory: Memory, realloc: Option<Func>) -> Self {
        let (used, limit) = {
            let context = ctx.as_context();
            let budget = &context.data().quota().budget;
            (budget.used(), budget.limit())
        };
        Self {
            ctx,
            memory,
            realloc,
            charged: Cell::new(0),
            used,
            limit,
        }
    }

    /// Bytes lifting charged through this view.
    pub fn charged(&self) -> usize {
        self.charged.get()
    }
}

impl<'a, 'b, D: HasQuota + 'static> WasmiMemory<&'a mut Caller<'b, D>> {
    /// The memory and allocator of the guest calling a host function.
    pub fn from_caller(caller: &'a mut Caller<'b, D>) -> Result<Self, AbiError> {
        let memory = caller
            .get_export("memory")
            .and_then(Extern::into_memory)
            .ok_or(AbiError::NoMemory)?;
        let realloc = caller
            .get_export("cabi_realloc")
            .and_then(Extern::into_func)
            .filter(|f| f.typed::<(i32, i32, i32, i32), i32>(&*caller).is_ok());
        Ok(Self::new(caller, memory, realloc))
    }
}

impl<C: AsContextMut<Data = D>, D: HasQuota + 'static> GuestMemory for WasmiMemory<C> {
    fn bytes(&self) -> &[u8] {
        self.memory.data(self.ctx.as_context())
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.memory.data_mut(self.ctx.as_context_mut())
    }

    fn charge(&self, bytes: u64) -> Result<(), AbiError> {
        let in_use = self.used.saturating_add(self.charged.get());
        let total = (in_use as u64).saturating_add(bytes);
        if total > self.limit as u64 {
            return Err(AbiError::OverBudget {
                needed: bytes,
                used: in_use,
                limit: self.limit,
            });
        }
        // Fits in usize: at most `limit`.
        self.charged.set(total as usize - self.used);
        Ok(())
    }

    fn realloc(
        &mut self,
        old_ptr: u32,
        old_size: u32,
        align: u32,
        new_size: u32,
    ) -> Result<u32, AbiError> {
        let realloc = self.realloc.ok_or(AbiError::NoRealloc)?;
        let params = [
            Val::I32(old_ptr as i32),
            Val::I32(old_size as i32),
            Val::I32(align as i32),
            Val::I32(new_size as i32),
        ];
        let mut result = [Val::I32(0)];
        sandbox::callback(&mut self.ctx, realloc, &params, &mut result)
            .map_err(|fault| AbiError::Realloc(fault.to_string()))?;
        match result {
            [Val::I32(ptr)] => Ok(ptr as u32),
            _ => Err(AbiError::Realloc("cabi_realloc returned no i32".into())),
        }
    }
}

/// A guest export is missing or has the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The export does not exist.
    #[error("guest does not export `{0}`")]
    Missing(String),
    /// The export exists with another type.
    #[error("guest export `{name}` has type {found}, the world expects {expected}")]
    WrongType {
        name: String,
        expected: String,
        found: String,
    },
}

/// The guest's `memory` export.
pub fn export_memory(store: &impl AsContext, instance: &Instance) -> Result<Memory, ExportError> {
    instance
        .get_memory(store, "memory")
        .ok_or_else(|| ExportError::Missing("memory".into()))
}

/// The guest's `cabi_realloc`, if it exports one (with the right type).
pub fn export_realloc(
    store: &impl AsContext,
    instance: &Instance,
) -> Result<Option<Func>, ExportError> {
    match instance.get_func(store, "cabi_realloc") {
        None => Ok(None),
        Some(f) => f
            .typed::<(i32, i32, i32, i32), i32>(store)
            .map(|_| Some(f))
            .map_err(|_| ExportError::WrongType {
                name: "cabi_realloc".into(),
                expected: "(i32, i32, i32, i32) -> i32".into(),
                found: format!("{:?}", f.ty(store)),
            }),
    }
}

/// The export `name` (checked against the flattened signature) and its optional post-return.
pub fn export_func(
    store: &impl AsContext,
    instance: &Instance,
    name: &str,
    params: &[FlatType],
    results: &[FlatType],
) -> Result<(Func, Option<Func>), ExportError> {
    let expected = func_type(params, results);
    let func = instance
        .get_func(store, name)
        .ok_or_else(|| ExportError::Missing(name.into()))?;
    check_type(store, name, func, &expected)?;
    let post_name = format!("cabi_post_{name}");
    let post = match instance.get_func(store, &post_name) {
        None => None,
        Some(post) => {
            check_type(store, &post_name, post, &func_type(results, &[]))?;
            Some(post)
        }
    };
    Ok((func, post))
}

fn check_type(
    store: &impl AsContext,
    name: &str,
    func: Func,
    expected: &FuncType,
) -> Result<(), ExportError> {
    let found = func.ty(store);
    if &found != expected {
        return Err(ExportError::WrongType {
            name: name.into(),
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        });
    }
    Ok(())
}

/// Calling a guest export failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The run stopped: a trap, a limit, or a host call the guest misused.
    #[error("{0}")]
    Fault(#[from] Fault),
    /// Arguments could not be lowered or the result could not be lifted.
    #[error("{0}")]
    Abi(#[from] AbiError),
}

/// Calls the export `func` with flat arguments in the sandbox and returns its `n_results` flat
/// results.
pub fn call<T: HasQuota + 'static>(
    store: &mut wasmi::Store<T>,
    func: Func,
    args: &[FlatVal],
    n_results: usize,
) -> Result<Vec<FlatVal>, CallError> {
    let args: Vec<Val> = args.iter().map(|v| flat_to_val(*v)).collect();
    let mut results = vec![Val::I32(0); n_results];
    sandbox::call(&mut *store, func, &args, &mut results)?;
    Ok(vals_to_flat(&results)?)
}

/// Calls an export's post-return function (a callback: no host imports from it).
pub fn post_return<T: HasQuota + 'static>(
    store: &mut wasmi::Store<T>,
    func: Func,
    results: &[FlatVal],
) -> Result<(), CallError> {
    let args: Vec<Val> = results.iter().map(|v| flat_to_val(*v)).collect();
    sandbox::callback(&mut *store, func, &args, &mut [])?;
    Ok(())
}
