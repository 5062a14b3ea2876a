//! Generic adapters between the canonical ABI runtime ([`crate::abi`]) and wasmi, used by the
//! generated bindings. Nothing here is specific to one WIT function.

use wasmi::errors::HostError;
use wasmi::{
    AsContext, AsContextMut, Caller, Extern, Func, FuncType, Instance, Memory, TypedFunc, Val,
    ValType,
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

/// A host implementation's request to trap the calling guest (e.g. an unknown handle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostTrap(pub String);

impl HostError for HostTrap {}
impl HostError for AbiError {}

impl From<AbiError> for wasmi::Error {
    fn from(e: AbiError) -> Self {
        wasmi::Error::host(e)
    }
}

/// Turns an ABI violation into a trap of the calling guest.
pub fn abi_trap(e: AbiError) -> wasmi::Error {
    wasmi::Error::host(e)
}

/// Turns a host-requested trap into a wasmi error.
pub fn host_trap(e: HostTrap) -> wasmi::Error {
    wasmi::Error::host(e)
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

/// `cabi_realloc` as a typed function.
pub type Realloc = TypedFunc<(i32, i32, i32, i32), i32>;

/// A guest's memory and allocator seen through a wasmi store context.
pub struct WasmiMemory<C> {
    ctx: C,
    memory: Memory,
    realloc: Option<Realloc>,
}

impl<C: AsContextMut> WasmiMemory<C> {
    /// Wraps `memory` and `realloc` of an instance living in `ctx`.
    pub fn new(ctx: C, memory: Memory, realloc: Option<Realloc>) -> Self {
        Self {
            ctx,
            memory,
            realloc,
        }
    }
}

impl<'a, 'b, T> WasmiMemory<&'a mut Caller<'b, T>> {
    /// The memory and allocator of the guest calling a host function.
    pub fn from_caller(caller: &'a mut Caller<'b, T>) -> Result<Self, AbiError> {
        let memory = caller
            .get_export("memory")
            .and_then(Extern::into_memory)
            .ok_or(AbiError::NoMemory)?;
        let realloc = caller
            .get_export("cabi_realloc")
            .and_then(Extern::into_func)
            .and_then(|f| f.typed::<(i32, i32, i32, i32), i32>(&*caller).ok());
        Ok(Self {
            ctx: caller,
            memory,
            realloc,
        })
    }
}

impl<C: AsContextMut> GuestMemory for WasmiMemory<C> {
    fn bytes(&self) -> &[u8] {
        self.memory.data(self.ctx.as_context())
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.memory.data_mut(self.ctx.as_context_mut())
    }

    fn realloc(
        &mut self,
        old_ptr: u32,
        old_size: u32,
        align: u32,
        new_size: u32,
    ) -> Result<u32, AbiError> {
        let realloc = self.realloc.ok_or(AbiError::NoRealloc)?;
        realloc
            .call(
                self.ctx.as_context_mut(),
                (
                    old_ptr as i32,
                    old_size as i32,
                    align as i32,
                    new_size as i32,
                ),
            )
            .map(|p| p as u32)
            .map_err(|e| AbiError::Realloc(e.to_string()))
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
) -> Result<Option<Realloc>, ExportError> {
    match instance.get_func(store, "cabi_realloc") {
        None => Ok(None),
        Some(f) => f
            .typed(store)
            .map(Some)
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
    /// The guest trapped, ran out of fuel, or a host function it called trapped.
    #[error("{0}")]
    Wasm(#[from] wasmi::Error),
    /// Arguments could not be lowered or the result could not be lifted.
    #[error("{0}")]
    Abi(#[from] AbiError),
}

/// Calls `func` with flat arguments and returns its `n_results` flat results.
pub fn call(
    mut store: impl AsContextMut,
    func: Func,
    args: &[FlatVal],
    n_results: usize,
) -> Result<Vec<FlatVal>, CallError> {
    let args: Vec<Val> = args.iter().map(|v| flat_to_val(*v)).collect();
    let mut results = vec![Val::I32(0); n_results];
    func.call(store.as_context_mut(), &args, &mut results)?;
    Ok(vals_to_flat(&results)?)
}
