//! Canonical ABI runtime used by the bindings generated from `wit/` (see `build.rs`).
//!
//! Every WIT type maps to a Rust type implementing [`WitType`], which knows its size, alignment
//! and flattening and how to move itself in and out of guest memory. All reads are bounds-,
//! alignment-, UTF-8- and discriminant-checked and fail with [`AbiError`]; nothing here panics on
//! guest-controlled data.

use std::marker::PhantomData;

/// A core wasm value type in a flattened signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatType {
    I32,
    I64,
    F32,
    F64,
}

/// A core wasm value (floats as bits so that values compare exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatVal {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
}

impl FlatVal {
    fn ty(self) -> FlatType {
        match self {
            FlatVal::I32(_) => FlatType::I32,
            FlatVal::I64(_) => FlatType::I64,
            FlatVal::F32(_) => FlatType::F32,
            FlatVal::F64(_) => FlatType::F64,
        }
    }

    fn zero(ty: FlatType) -> Self {
        match ty {
            FlatType::I32 => FlatVal::I32(0),
            FlatType::I64 => FlatVal::I64(0),
            FlatType::F32 => FlatVal::F32(0),
            FlatType::F64 => FlatVal::F64(0),
        }
    }
}

/// Why a value could not be moved across the guest boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    /// A guest pointer/length pair leaves linear memory.
    #[error("guest range {ptr:#x}+{len} is outside linear memory of {memory_len} bytes")]
    OutOfBounds {
        ptr: u64,
        len: u64,
        memory_len: usize,
    },
    /// A guest pointer is not aligned as its type requires.
    #[error("guest pointer {ptr:#x} is not aligned to {align}")]
    Misaligned { ptr: u32, align: u32 },
    /// A guest string is not valid UTF-8.
    #[error("guest string is not valid UTF-8")]
    InvalidUtf8,
    /// A variant, enum, option or result discriminant is out of range.
    #[error("invalid discriminant {value} for {type_name}")]
    InvalidDiscriminant { type_name: &'static str, value: u32 },
    /// A `char` is not a Unicode scalar value.
    #[error("invalid char {0:#x}")]
    InvalidChar(u32),
    /// The core values do not have the types the signature promises.
    #[error("core values do not match the flattened signature")]
    FlatMismatch,
    /// An i64 carrying a narrower variant payload does not fit.
    #[error("variant payload {0} does not fit in 32 bits")]
    PayloadOverflow(i64),
    /// A list is too large to address in a 32-bit memory.
    #[error("list of {0} elements does not fit in guest memory")]
    ListTooLarge(usize),
    /// The guest exports no `memory`.
    #[error("guest exports no memory")]
    NoMemory,
    /// The guest exports no `cabi_realloc`.
    #[error("guest exports no cabi_realloc")]
    NoRealloc,
    /// `cabi_realloc` trapped or returned an unusable pointer.
    #[error("cabi_realloc failed: {0}")]
    Realloc(String),
    /// Lifting a value would exceed the run's memory budget.
    #[error("lifting {needed} bytes exceeds max-memory={limit} with {used} in use")]
    OverBudget {
        needed: u64,
        used: usize,
        limit: usize,
    },
}

/// A guest's linear memory plus its allocator.
pub trait GuestMemory {
    /// The whole linear memory.
    fn bytes(&self) -> &[u8];
    /// The whole linear memory, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Charges `bytes` of host memory that lifting is about to allocate, before it does.
    fn charge(&self, bytes: u64) -> Result<(), AbiError>;
    /// Calls the guest's `cabi_realloc(old_ptr, old_size, align, new_size)`.
    fn realloc(
        &mut self,
        old_ptr: u32,
        old_size: u32,
        align: u32,
        new_size: u32,
    ) -> Result<u32, AbiError>;
}

/// Checks that `ptr..ptr+len` lies in memory and `ptr` is aligned; returns the byte range.
pub fn checked_range(
    memory_len: usize,
    ptr: u32,
    len: u64,
    align: u32,
) -> Result<std::ops::Range<usize>, AbiError> {
    if align > 1 && !ptr.is_multiple_of(align) {
        return Err(AbiError::Misaligned { ptr, align });
    }
    let end = u64::from(ptr) + len;
    if end > memory_len as u64 {
        return Err(AbiError::OutOfBounds {
            ptr: ptr.into(),
            len,
            memory_len,
        });
    }
    Ok(ptr as usize..end as usize)
}

/// The guest bytes `ptr..ptr+len`, checked for bounds and alignment.
pub fn guest_slice(bytes: &[u8], ptr: u32, len: u64, align: u32) -> Result<&[u8], AbiError> {
    let range = checked_range(bytes.len(), ptr, len, align)?;
    bytes.get(range).ok_or(AbiError::OutOfBounds {
        ptr: ptr.into(),
        len,
        memory_len: bytes.len(),
    })
}

/// The guest bytes `ptr..ptr+len`, writable, checked for bounds and alignment.
pub fn guest_slice_mut(
    bytes: &mut [u8],
    ptr: u32,
    len: u64,
    align: u32,
) -> Result<&mut [u8], AbiError> {
    let memory_len = bytes.len();
    let range = checked_range(memory_len, ptr, len, align)?;
    bytes.get_mut(range).ok_or(AbiError::OutOfBounds {
        ptr: ptr.into(),
        len,
        memory_len,
    })
}

/// Reads `N` bytes at `ptr` (aligned to `N`).
pub fn read_bytes<const N: usize>(mem: &dyn GuestMemory, ptr: u32) -> Result<[u8; N], AbiError> {
    let mut out = [0; N];
    out.copy_from_slice(guest_slice(mem.bytes(), ptr, N as u64, N as u32)?);
    Ok(out)
}

/// Writes `data` at `ptr`, which must be aligned to `align`.
pub fn write_bytes(
    mem: &mut dyn GuestMemory,
    ptr: u32,
    data: &[u8],
    align: u32,
) -> Result<(), AbiError> {
    guest_slice_mut(mem.bytes_mut(), ptr, data.len() as u64, align)?.copy_from_slice(data);
    Ok(())
}

/// Allocates `size` bytes aligned to `align` in the guest and checks the returned block.
pub fn alloc(mem: &mut dyn GuestMemory, size: u32, align: u32) -> Result<u32, AbiError> {
    if size == 0 {
        return Ok(align.max(1));
    }
    let ptr = mem.realloc(0, 0, align, size)?;
    checked_range(mem.bytes().len(), ptr, size.into(), align)
        .map_err(|e| AbiError::Realloc(e.to_string()))?;
    Ok(ptr)
}

/// Consumes core values while lifting a flattened value.
pub struct FlatIter<'a> {
    vals: std::slice::Iter<'a, FlatVal>,
}

impl<'a> FlatIter<'a> {
    /// Iterates over `vals`.
    pub fn new(vals: &'a [FlatVal]) -> Self {
        Self { vals: vals.iter() }
    }

    /// The next value, which must be an `i32`.
    pub fn i32(&mut self) -> Result<i32, AbiError> {
        match self.vals.next() {
            Some(FlatVal::I32(v)) => Ok(*v),
            _ => Err(AbiError::FlatMismatch),
        }
    }

    /// The next value, which must be an `i64`.
    pub fn i64(&mut self) -> Result<i64, AbiError> {
        match self.vals.next() {
            Some(FlatVal::I64(v)) => Ok(*v),
            _ => Err(AbiError::FlatMismatch),
        }
    }

    /// The next value, which must be an `f32` (as bits).
    pub fn f32(&mut self) -> Result<u32, AbiError> {
        match self.vals.next() {
            Some(FlatVal::F32(v)) => Ok(*v),
            _ => Err(AbiError::FlatMismatch),
        }
    }

    /// The next value, which must be an `f64` (as bits).
    pub fn f64(&mut self) -> Result<u64, AbiError> {
        match self.vals.next() {
            Some(FlatVal::F64(v)) => Ok(*v),
            _ => Err(AbiError::FlatMismatch),
        }
    }

    /// The next `n` values.
    pub fn take(&mut self, n: usize) -> Result<Vec<FlatVal>, AbiError> {
        let out: Vec<FlatVal> = self.vals.by_ref().take(n).copied().collect();
        if out.len() == n {
            Ok(out)
        } else {
            Err(AbiError::FlatMismatch)
        }
    }
}

/// A Rust type with a canonical ABI representation.
pub trait WitType: Sized {
    /// Size in linear memory.
    const SIZE: u32;
    /// Alignment in linear memory.
    const ALIGN: u32;
    /// Appends the flattened core types.
    fn flat_types(out: &mut Vec<FlatType>);
    /// Reads a value stored at `ptr` (alignment already checked by the caller or here).
    fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError>;
    /// Writes the value at `ptr`, allocating in the guest for strings and lists.
    fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError>;
    /// Lifts the value from flattened core values.
    fn lift_flat(mem: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError>;
    /// Lowers the value to flattened core values.
    fn lower_flat(&self, mem: &mut dyn GuestMemory, out: &mut Vec<FlatVal>)
    -> Result<(), AbiError>;

    /// Reads `len` consecutive elements at `ptr`, after charging the host memory they take.
    fn load_list(mem: &dyn GuestMemory, ptr: u32, len: u32) -> Result<Vec<Self>, AbiError> {
        let total = u64::from(len) * u64::from(Self::SIZE);
        checked_range(mem.bytes().len(), ptr, total, Self::ALIGN)?;
        mem.charge(u64::from(len) * host_size::<Self>())?;
        (0..len)
            .map(|i| Self::load(mem, ptr + i * Self::SIZE))
            .collect()
    }

    /// Allocates and writes `items`; returns `(ptr, len)`.
    fn store_list(items: &[Self], mem: &mut dyn GuestMemory) -> Result<(u32, u32), AbiError> {
        let len = u32::try_from(items.len()).map_err(|_| AbiError::ListTooLarge(items.len()))?;
        let size = len
            .checked_mul(Self::SIZE)
            .ok_or(AbiError::ListTooLarge(items.len()))?;
        let ptr = alloc(mem, size, Self::ALIGN)?;
        for (i, item) in items.iter().enumerate() {
            item.store(mem, ptr + i as u32 * Self::SIZE)?;
        }
        Ok((ptr, len))
    }
}

/// Host bytes one lifted `T` takes at least (more for what its elements own).
fn host_size<T>() -> u64 {
    std::mem::size_of::<T>().max(1) as u64
}

/// Flattened types of `T`.
pub fn flat_types_of<T: WitType>() -> Vec<FlatType> {
    let mut out = Vec::new();
    T::flat_types(&mut out);
    out
}

/// Rounds `offset` up to `align`.
pub const fn align_to(offset: u32, align: u32) -> u32 {
    offset.div_ceil(align) * align
}

/// Size and alignment of a record with fields of the given `(size, align)`.
// Evaluated at compile time for each WIT type; the index stays below the length.
#[allow(clippy::indexing_slicing)]
pub const fn record_layout(fields: &[(u32, u32)]) -> (u32, u32) {
    let mut offset = 0;
    let mut align = 1;
    let mut i = 0;
    while i < fields.len() {
        offset = align_to(offset, fields[i].1) + fields[i].0;
        if fields[i].1 > align {
            align = fields[i].1;
        }
        i += 1;
    }
    (align_to(offset, align), align)
}

/// Bytes of the discriminant of a variant with `cases` cases.
pub const fn discriminant_size(cases: usize) -> u32 {
    if cases <= 1 << 8 {
        1
    } else if cases <= 1 << 16 {
        2
    } else {
        4
    }
}

/// `(size, align, payload_offset)` of a variant whose cases have payloads of `(size, align)`.
// Evaluated at compile time for each WIT type; the index stays below the length.
#[allow(clippy::indexing_slicing)]
pub const fn variant_layout(cases: &[(u32, u32)]) -> (u32, u32, u32) {
    let disc = discriminant_size(cases.len());
    let mut align = disc;
    let mut max_size = 0;
    let mut i = 0;
    while i < cases.len() {
        if cases[i].1 > align {
            align = cases[i].1;
        }
        if cases[i].0 > max_size {
            max_size = cases[i].0;
        }
        i += 1;
    }
    let payload = align_to(disc, align);
    (align_to(payload + max_size, align), align, payload)
}

/// Reads a discriminant of a variant with `cases` cases at `ptr`.
pub fn load_discriminant(
    mem: &dyn GuestMemory,
    ptr: u32,
    cases: usize,
    type_name: &'static str,
) -> Result<u32, AbiError> {
    let value = match discriminant_size(cases) {
        1 => u32::from(read_bytes::<1>(mem, ptr)?[0]),
        2 => u32::from(u16::from_le_bytes(read_bytes::<2>(mem, ptr)?)),
        _ => u32::from_le_bytes(read_bytes::<4>(mem, ptr)?),
    };
    if value as usize >= cases {
        return Err(AbiError::InvalidDiscriminant { type_name, value });
    }
    Ok(value)
}

/// Writes discriminant `value` of a variant with `cases` cases at `ptr`.
pub fn store_discriminant(
    mem: &mut dyn GuestMemory,
    ptr: u32,
    cases: usize,
    value: u32,
) -> Result<(), AbiError> {
    match discriminant_size(cases) {
        1 => write_bytes(mem, ptr, &[value as u8], 1),
        2 => write_bytes(mem, ptr, &(value as u16).to_le_bytes(), 2),
        _ => write_bytes(mem, ptr, &value.to_le_bytes(), 4),
    }
}

/// The flattening of one variant case's payload.
pub type CaseFlat = fn(&mut Vec<FlatType>);

/// A case without payload.
pub fn no_payload(_: &mut Vec<FlatType>) {}

fn join(a: FlatType, b: FlatType) -> FlatType {
    use FlatType::*;
    match (a, b) {
        _ if a == b => a,
        (I32, F32) | (F32, I32) => I32,
        _ => I64,
    }
}

/// The joined payload types of a variant's cases (without the discriminant).
pub fn variant_payload_types(cases: &[CaseFlat]) -> Vec<FlatType> {
    let mut joined: Vec<FlatType> = Vec::new();
    let mut case_types = Vec::new();
    for case in cases {
        case_types.clear();
        case(&mut case_types);
        for (i, t) in case_types.iter().enumerate() {
            match joined.get_mut(i) {
                Some(j) => *j = join(*j, *t),
                None => joined.push(*t),
            }
        }
    }
    joined
}

/// Appends the flattening of a variant with the given cases.
pub fn variant_flat_types(out: &mut Vec<FlatType>, cases: &[CaseFlat]) {
    out.push(FlatType::I32);
    out.extend(variant_payload_types(cases));
}

fn coerce_to(val: FlatVal, to: FlatType) -> FlatVal {
    match (val, to) {
        (v, t) if v.ty() == t => v,
        (FlatVal::F32(b), FlatType::I32) => FlatVal::I32(b as i32),
        (FlatVal::I32(v), FlatType::I64) => FlatVal::I64(i64::from(v as u32)),
        (FlatVal::F32(b), FlatType::I64) => FlatVal::I64(i64::from(b)),
        (FlatVal::F64(b), FlatType::I64) => FlatVal::I64(b as i64),
        (v, _) => v,
    }
}

fn coerce_from(val: FlatVal, to: FlatType) -> Result<FlatVal, AbiError> {
    let narrow = |v: i64| u32::try_from(v).map_err(|_| AbiError::PayloadOverflow(v));
    Ok(match (val, to) {
        (v, t) if v.ty() == t => v,
        (FlatVal::I32(v), FlatType::F32) => FlatVal::F32(v as u32),
        (FlatVal::I64(v), FlatType::I32) => FlatVal::I32(narrow(v)? as i32),
        (FlatVal::I64(v), FlatType::F32) => FlatVal::F32(narrow(v)?),
        (FlatVal::I64(v), FlatType::F64) => FlatVal::F64(v as u64),
        _ => return Err(AbiError::FlatMismatch),
    })
}

/// Lowers case `discriminant` with `payload` of a variant with `cases`.
pub fn lower_variant_case<P: WitType>(
    mem: &mut dyn GuestMemory,
    out: &mut Vec<FlatVal>,
    cases: &[CaseFlat],
    discriminant: u32,
    payload: &P,
) -> Result<(), AbiError> {
    let joined = variant_payload_types(cases);
    out.push(FlatVal::I32(discriminant as i32));
    let mut own = Vec::new();
    payload.lower_flat(mem, &mut own)?;
    for (i, ty) in joined.iter().enumerate() {
        out.push(match own.get(i) {
            Some(v) => coerce_to(*v, *ty),
            None => FlatVal::zero(*ty),
        });
    }
    Ok(())
}

/// Reads the discriminant and the joined payload values of a flattened variant.
pub fn lift_variant_flat(
    vals: &mut FlatIter<'_>,
    cases: &[CaseFlat],
    type_name: &'static str,
) -> Result<(u32, Vec<FlatVal>), AbiError> {
    let value = vals.i32()? as u32;
    let payload = vals.take(variant_payload_types(cases).len())?;
    if value as usize >= cases.len() {
        return Err(AbiError::InvalidDiscriminant { type_name, value });
    }
    Ok((value, payload))
}

/// Lifts one case's payload from the joined payload values.
pub fn lift_case<P: WitType>(mem: &dyn GuestMemory, joined: &[FlatVal]) -> Result<P, AbiError> {
    let types = flat_types_of::<P>();
    let vals = types
        .iter()
        .zip(joined)
        .map(|(t, v)| coerce_from(*v, *t))
        .collect::<Result<Vec<_>, _>>()?;
    if vals.len() != types.len() {
        return Err(AbiError::FlatMismatch);
    }
    P::lift_flat(mem, &mut FlatIter::new(&vals))
}

macro_rules! int_type {
    ($ty:ty, $size:expr, $flat:ident, $get:ident, $as:ty $(, { $($extra:tt)* })?) => {
        impl WitType for $ty {
            const SIZE: u32 = $size;
            const ALIGN: u32 = $size;
            fn flat_types(out: &mut Vec<FlatType>) {
                out.push(FlatType::$flat);
            }
            fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
                Ok(<$ty>::from_le_bytes(read_bytes::<$size>(mem, ptr)?))
            }
            fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
                write_bytes(mem, ptr, &self.to_le_bytes(), $size)
            }
            fn lift_flat(_: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
                // Narrow integers wrap, as the canonical ABI specifies.
                Ok(vals.$get()? as $ty)
            }
            fn lower_flat(&self, _: &mut dyn GuestMemory, out: &mut Vec<FlatVal>) -> Result<(), AbiError> {
                out.push(FlatVal::$flat(*self as $as));
                Ok(())
            }
            $($($extra)*)?
        }
    };
}

int_type!(u8, 1, I32, i32, i32, {
    fn load_list(mem: &dyn GuestMemory, ptr: u32, len: u32) -> Result<Vec<Self>, AbiError> {
        checked_range(mem.bytes().len(), ptr, len.into(), 1)?;
        mem.charge(len.into())?;
        Ok(guest_slice(mem.bytes(), ptr, len.into(), 1)?.to_vec())
    }
    fn store_list(items: &[Self], mem: &mut dyn GuestMemory) -> Result<(u32, u32), AbiError> {
        lower_bytes(mem, items)
    }
});
int_type!(i8, 1, I32, i32, i32);
int_type!(u16, 2, I32, i32, i32);
int_type!(i16, 2, I32, i32, i32);
int_type!(u32, 4, I32, i32, i32);
int_type!(i32, 4, I32, i32, i32);
int_type!(u64, 8, I64, i64, i64);
int_type!(i64, 8, I64, i64, i64);

/// `WitType` for a float: little-endian in memory, its bit pattern as the flat value.
macro_rules! float_type {
    ($ty:ty, $size:literal, $flat:ident, $getter:ident) => {
        impl WitType for $ty {
            const SIZE: u32 = $size;
            const ALIGN: u32 = $size;
            fn flat_types(out: &mut Vec<FlatType>) {
                out.push(FlatType::$flat);
            }
            fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
                Ok(<$ty>::from_le_bytes(read_bytes::<$size>(mem, ptr)?))
            }
            fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
                write_bytes(mem, ptr, &self.to_le_bytes(), $size)
            }
            fn lift_flat(_: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
                Ok(<$ty>::from_bits(vals.$getter()?))
            }
            fn lower_flat(
                &self,
                _: &mut dyn GuestMemory,
                out: &mut Vec<FlatVal>,
            ) -> Result<(), AbiError> {
                out.push(FlatVal::$flat(self.to_bits()));
                Ok(())
            }
        }
    };
}

float_type!(f32, 4, F32, f32);
float_type!(f64, 8, F64, f64);

impl WitType for bool {
    const SIZE: u32 = 1;
    const ALIGN: u32 = 1;
    fn flat_types(out: &mut Vec<FlatType>) {
        out.push(FlatType::I32);
    }
    fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
        Ok(read_bytes::<1>(mem, ptr)?[0] != 0)
    }
    fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
        write_bytes(mem, ptr, &[u8::from(*self)], 1)
    }
    fn lift_flat(_: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
        Ok(vals.i32()? != 0)
    }
    fn lower_flat(&self, _: &mut dyn GuestMemory, out: &mut Vec<FlatVal>) -> Result<(), AbiError> {
        out.push(FlatVal::I32(i32::from(*self)));
        Ok(())
    }
}

impl WitType for char {
    const SIZE: u32 = 4;
    const ALIGN: u32 = 4;
    fn flat_types(out: &mut Vec<FlatType>) {
        out.push(FlatType::I32);
    }
    fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
        let v = u32::from_le_bytes(read_bytes::<4>(mem, ptr)?);
        char::from_u32(v).ok_or(AbiError::InvalidChar(v))
    }
    fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
        write_bytes(mem, ptr, &u32::from(*self).to_le_bytes(), 4)
    }
    fn lift_flat(_: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
        let v = vals.i32()? as u32;
        char::from_u32(v).ok_or(AbiError::InvalidChar(v))
    }
    fn lower_flat(&self, _: &mut dyn GuestMemory, out: &mut Vec<FlatVal>) -> Result<(), AbiError> {
        out.push(FlatVal::I32(u32::from(*self) as i32));
        Ok(())
    }
}

impl WitType for () {
    const SIZE: u32 = 0;
    const ALIGN: u32 = 1;
    fn flat_types(_: &mut Vec<FlatType>) {}
    fn load(_: &dyn GuestMemory, _: u32) -> Result<Self, AbiError> {
        Ok(())
    }
    fn store(&self, _: &mut dyn GuestMemory, _: u32) -> Result<(), AbiError> {
        Ok(())
    }
    fn lift_flat(_: &dyn GuestMemory, _: &mut FlatIter<'_>) -> Result<Self, AbiError> {
        Ok(())
    }
    fn lower_flat(&self, _: &mut dyn GuestMemory, _: &mut Vec<FlatVal>) -> Result<(), AbiError> {
        Ok(())
    }
}

fn load_ptr_len(mem: &dyn GuestMemory, ptr: u32) -> Result<(u32, u32), AbiError> {
    Ok((u32::load(mem, ptr)?, u32::load(mem, ptr + 4)?))
}

fn store_ptr_len(mem: &mut dyn GuestMemory, at: u32, ptr: u32, len: u32) -> Result<(), AbiError> {
    ptr.store(mem, at)?;
    len.store(mem, at + 4)
}

fn lift_string(mem: &dyn GuestMemory, ptr: u32, len: u32) -> Result<String, AbiError> {
    checked_range(mem.bytes().len(), ptr, len.into(), 1)?;
    mem.charge(len.into())?;
    std::str::from_utf8(guest_slice(mem.bytes(), ptr, len.into(), 1)?)
        .map(str::to_owned)
        .map_err(|_| AbiError::InvalidUtf8)
}

fn lower_bytes(mem: &mut dyn GuestMemory, data: &[u8]) -> Result<(u32, u32), AbiError> {
    let len = u32::try_from(data.len()).map_err(|_| AbiError::ListTooLarge(data.len()))?;
    let ptr = alloc(mem, len, 1)?;
    write_bytes(mem, ptr, data, 1)?;
    Ok((ptr, len))
}

impl WitType for String {
    const SIZE: u32 = 8;
    const ALIGN: u32 = 4;
    fn flat_types(out: &mut Vec<FlatType>) {
        out.extend([FlatType::I32, FlatType::I32]);
    }
    fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
        let (p, l) = load_ptr_len(mem, ptr)?;
        lift_string(mem, p, l)
    }
    fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
        let (p, l) = lower_bytes(mem, self.as_bytes())?;
        store_ptr_len(mem, ptr, p, l)
    }
    fn lift_flat(mem: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
        let p = vals.i32()? as u32;
        let l = vals.i32()? as u32;
        lift_string(mem, p, l)
    }
    fn lower_flat(
        &self,
        mem: &mut dyn GuestMemory,
        out: &mut Vec<FlatVal>,
    ) -> Result<(), AbiError> {
        let (p, l) = lower_bytes(mem, self.as_bytes())?;
        out.extend([FlatVal::I32(p as i32), FlatVal::I32(l as i32)]);
        Ok(())
    }
}

impl<T: WitType> WitType for Vec<T> {
    const SIZE: u32 = 8;
    const ALIGN: u32 = 4;
    fn flat_types(out: &mut Vec<FlatType>) {
        out.extend([FlatType::I32, FlatType::I32]);
    }
    fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
        let (p, l) = load_ptr_len(mem, ptr)?;
        T::load_list(mem, p, l)
    }
    fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
        let (p, l) = T::store_list(self, mem)?;
        store_ptr_len(mem, ptr, p, l)
    }
    fn lift_flat(mem: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
        let p = vals.i32()? as u32;
        let l = vals.i32()? as u32;
        T::load_list(mem, p, l)
    }
    fn lower_flat(
        &self,
        mem: &mut dyn GuestMemory,
        out: &mut Vec<FlatVal>,
    ) -> Result<(), AbiError> {
        let (p, l) = T::store_list(self, mem)?;
        out.extend([FlatVal::I32(p as i32), FlatVal::I32(l as i32)]);
        Ok(())
    }
}

impl<T: WitType> WitType for Option<T> {
    const SIZE: u32 = variant_layout(&[(0, 1), (T::SIZE, T::ALIGN)]).0;
    const ALIGN: u32 = variant_layout(&[(0, 1), (T::SIZE, T::ALIGN)]).1;
    fn flat_types(out: &mut Vec<FlatType>) {
        variant_flat_types(out, &[no_payload, T::flat_types]);
    }
    fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
        let offset = variant_layout(&[(0, 1), (T::SIZE, T::ALIGN)]).2;
        match load_discriminant(mem, ptr, 2, "option")? {
            0 => Ok(None),
            _ => Ok(Some(T::load(mem, ptr + offset)?)),
        }
    }
    fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
        let offset = variant_layout(&[(0, 1), (T::SIZE, T::ALIGN)]).2;
        match self {
            None => store_discriminant(mem, ptr, 2, 0),
            Some(v) => {
                store_discriminant(mem, ptr, 2, 1)?;
                v.store(mem, ptr + offset)
            }
        }
    }
    fn lift_flat(mem: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
        let (disc, payload) = lift_variant_flat(vals, &[no_payload, T::flat_types], "option")?;
        match disc {
            0 => Ok(None),
            _ => Ok(Some(lift_case::<T>(mem, &payload)?)),
        }
    }
    fn lower_flat(
        &self,
        mem: &mut dyn GuestMemory,
        out: &mut Vec<FlatVal>,
    ) -> Result<(), AbiError> {
        let cases: [CaseFlat; 2] = [no_payload, T::flat_types];
        match self {
            None => lower_variant_case(mem, out, &cases, 0, &()),
            Some(v) => lower_variant_case(mem, out, &cases, 1, v),
        }
    }
}

impl<T: WitType, E: WitType> WitType for Result<T, E> {
    const SIZE: u32 = variant_layout(&[(T::SIZE, T::ALIGN), (E::SIZE, E::ALIGN)]).0;
    const ALIGN: u32 = variant_layout(&[(T::SIZE, T::ALIGN), (E::SIZE, E::ALIGN)]).1;
    fn flat_types(out: &mut Vec<FlatType>) {
        variant_flat_types(out, &[T::flat_types, E::flat_types]);
    }
    fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
        let offset = variant_layout(&[(T::SIZE, T::ALIGN), (E::SIZE, E::ALIGN)]).2;
        match load_discriminant(mem, ptr, 2, "result")? {
            0 => Ok(Ok(T::load(mem, ptr + offset)?)),
            _ => Ok(Err(E::load(mem, ptr + offset)?)),
        }
    }
    fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
        let offset = variant_layout(&[(T::SIZE, T::ALIGN), (E::SIZE, E::ALIGN)]).2;
        match self {
            Ok(v) => {
                store_discriminant(mem, ptr, 2, 0)?;
                v.store(mem, ptr + offset)
            }
            Err(e) => {
                store_discriminant(mem, ptr, 2, 1)?;
                e.store(mem, ptr + offset)
            }
        }
    }
    fn lift_flat(mem: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
        let (disc, payload) = lift_variant_flat(vals, &[T::flat_types, E::flat_types], "result")?;
        match disc {
            0 => Ok(Ok(lift_case::<T>(mem, &payload)?)),
            _ => Ok(Err(lift_case::<E>(mem, &payload)?)),
        }
    }
    fn lower_flat(
        &self,
        mem: &mut dyn GuestMemory,
        out: &mut Vec<FlatVal>,
    ) -> Result<(), AbiError> {
        let cases: [CaseFlat; 2] = [T::flat_types, E::flat_types];
        match self {
            Ok(v) => lower_variant_case(mem, out, &cases, 0, v),
            Err(e) => lower_variant_case(mem, out, &cases, 1, e),
        }
    }
}

macro_rules! tuple_type {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: WitType),+> WitType for ($($name,)+) {
            const SIZE: u32 = record_layout(&[$(($name::SIZE, $name::ALIGN)),+]).0;
            const ALIGN: u32 = record_layout(&[$(($name::SIZE, $name::ALIGN)),+]).1;
            fn flat_types(out: &mut Vec<FlatType>) {
                $($name::flat_types(out);)+
            }
            fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
                let mut offset = 0;
                Ok(($({
                    offset = align_to(offset, $name::ALIGN);
                    let v = $name::load(mem, ptr + offset)?;
                    offset += $name::SIZE;
                    let _ = offset;
                    v
                },)+))
            }
            fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
                let mut offset = 0;
                $(
                    offset = align_to(offset, $name::ALIGN);
                    self.$idx.store(mem, ptr + offset)?;
                    offset += $name::SIZE;
                )+
                let _ = offset;
                Ok(())
            }
            fn lift_flat(mem: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
                Ok(($($name::lift_flat(mem, vals)?,)+))
            }
            fn lower_flat(&self, mem: &mut dyn GuestMemory, out: &mut Vec<FlatVal>) -> Result<(), AbiError> {
                $(self.$idx.lower_flat(mem, out)?;)+
                Ok(())
            }
        }
    };
}

tuple_type!(A 0);
tuple_type!(A 0, B 1);
tuple_type!(A 0, B 1, C 2);
tuple_type!(A 0, B 1, C 2, D 3);

/// A resource handle (`own<T>` or `borrow<T>`) as the guest sees it: an index into a host table.
pub struct Resource<T> {
    handle: u32,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Resource<T> {
    /// Wraps a handle number.
    pub fn new(handle: u32) -> Self {
        Self {
            handle,
            _marker: PhantomData,
        }
    }

    /// The handle number.
    pub fn handle(&self) -> u32 {
        self.handle
    }
}

impl<T> Clone for Resource<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Resource<T> {}
impl<T> std::fmt::Debug for Resource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resource({})", self.handle)
    }
}
impl<T> PartialEq for Resource<T> {
    fn eq(&self, other: &Self) -> bool {
        self.handle == other.handle
    }
}

impl<T> WitType for Resource<T> {
    const SIZE: u32 = 4;
    const ALIGN: u32 = 4;
    fn flat_types(out: &mut Vec<FlatType>) {
        out.push(FlatType::I32);
    }
    fn load(mem: &dyn GuestMemory, ptr: u32) -> Result<Self, AbiError> {
        Ok(Self::new(u32::load(mem, ptr)?))
    }
    fn store(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), AbiError> {
        self.handle.store(mem, ptr)
    }
    fn lift_flat(_: &dyn GuestMemory, vals: &mut FlatIter<'_>) -> Result<Self, AbiError> {
        Ok(Self::new(vals.i32()? as u32))
    }
    fn lower_flat(&self, _: &mut dyn GuestMemory, out: &mut Vec<FlatVal>) -> Result<(), AbiError> {
        out.push(FlatVal::I32(self.handle as i32));
        Ok(())
    }
}
