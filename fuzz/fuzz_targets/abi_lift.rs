//! Canonical-ABI lifting from a hostile guest: arbitrary linear memory, an arbitrary pointer and
//! arbitrary flat core values, lifted as each type a guest hands the host (handler results,
//! requests, header lists, key-value arguments and errors). Lifting must never panic, must
//! charge the memory budget for what it allocates before it does, and a value it accepts must
//! survive lowering and lifting again unchanged.
#![no_main]

use std::cell::Cell;

use libfuzzer_sys::fuzz_target;
use wasm_host::abi::{AbiError, FlatIter, FlatType, FlatVal, GuestMemory, WitType, flat_types_of};
use wasm_host::bindings::http_types::{HttpError, Request, Response};
use wasm_host::bindings::keyvalue::KeyvalueError;

/// Host bytes lifting may charge in one run.
const BUDGET: u64 = 4096;

/// A guest's linear memory with a budget and a bump allocator that counts what it hands out.
struct Memory {
    bytes: Vec<u8>,
    charged: Cell<u64>,
    heap: u32,
    allocated: u64,
}

impl Memory {
    fn new(bytes: Vec<u8>) -> Self {
        let heap = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        Memory {
            bytes,
            charged: Cell::new(0),
            heap,
            allocated: 0,
        }
    }
}

impl GuestMemory for Memory {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    fn charge(&self, bytes: u64) -> Result<(), AbiError> {
        let total = self.charged.get().saturating_add(bytes);
        if total > BUDGET {
            return Err(AbiError::OverBudget {
                needed: bytes,
                used: self.charged.get() as usize,
                limit: BUDGET as usize,
            });
        }
        self.charged.set(total);
        Ok(())
    }
    fn realloc(&mut self, _: u32, _: u32, align: u32, size: u32) -> Result<u32, AbiError> {
        let ptr = self.heap.next_multiple_of(align.max(1));
        let end = ptr
            .checked_add(size)
            .ok_or(AbiError::Realloc("overflow".into()))?;
        self.bytes.resize(end as usize, 0);
        self.heap = end;
        self.allocated += u64::from(size);
        Ok(ptr)
    }
}

/// Reads little-endian values off the front of the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn flat(&mut self, ty: FlatType) -> FlatVal {
        match ty {
            FlatType::I32 => FlatVal::I32(i32::from_le_bytes(self.take())),
            FlatType::I64 => FlatVal::I64(i64::from_le_bytes(self.take())),
            FlatType::F32 => FlatVal::F32(u32::from_le_bytes(self.take())),
            FlatType::F64 => FlatVal::F64(u64::from_le_bytes(self.take())),
        }
    }
}

/// Lifts a `T` from `memory` at `ptr` (`from_memory`) or from flat values read off `input`,
/// then checks what was charged and the round trip.
fn lift<T: WitType + PartialEq + std::fmt::Debug>(
    from_memory: bool,
    ptr: u32,
    input: &mut Input<'_>,
    memory: Vec<u8>,
) {
    let memory = Memory::new(memory);
    let lifted = if from_memory {
        T::load(&memory, ptr)
    } else {
        let flat: Vec<FlatVal> = flat_types_of::<T>()
            .into_iter()
            .map(|ty| input.flat(ty))
            .collect();
        T::lift_flat(&memory, &mut FlatIter::new(&flat))
    };
    let charged = memory.charged.get();
    assert!(charged <= BUDGET);
    let Ok(value) = lifted else {
        return;
    };
    // Lower into a fresh memory: what the guest would have to allocate for the value (its
    // strings and lists) is no more than what lifting charged the host.
    let mut fresh = Memory::new(vec![0; 64]);
    let mut flat = Vec::new();
    value.lower_flat(&mut fresh, &mut flat).expect("lower");
    assert!(
        fresh.allocated <= charged,
        "lifting charged {charged} bytes for a value that takes {} to store: {value:?}",
        fresh.allocated
    );
    // Each lift from `fresh` below is a separate run with a budget of its own (a value may
    // take more than half the budget, so two lifts on one count would exceed it).
    fresh.charged.set(0);
    let again = T::lift_flat(&fresh, &mut FlatIter::new(&flat)).expect("lift what was lowered");
    assert_eq!(again, value);
    let slot = fresh.realloc(0, 0, T::ALIGN, T::SIZE).expect("slot");
    value.store(&mut fresh, slot).expect("store");
    fresh.charged.set(0);
    assert_eq!(T::load(&fresh, slot).expect("load what was stored"), value);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let [selector] = input.take::<1>();
    let ptr = u32::from_le_bytes(input.take());
    let from_memory = selector & 0x80 != 0;
    // Flat values come first; linear memory is the rest of the input.
    let mut flat_input = Input(input.0);
    let memory = input.0.get(64..).unwrap_or_default().to_vec();
    let input = &mut flat_input;
    match selector & 0x7f {
        0 => lift::<Response>(from_memory, ptr, input, memory),
        1 => lift::<Result<Response, HttpError>>(from_memory, ptr, input, memory),
        2 => lift::<Request>(from_memory, ptr, input, memory),
        3 => lift::<Vec<(String, String)>>(from_memory, ptr, input, memory),
        4 => lift::<Option<Vec<u8>>>(from_memory, ptr, input, memory),
        5 => lift::<Result<Option<Vec<u8>>, KeyvalueError>>(from_memory, ptr, input, memory),
        6 => lift::<Vec<String>>(from_memory, ptr, input, memory),
        7 => lift::<Result<Vec<String>, KeyvalueError>>(from_memory, ptr, input, memory),
        8 => lift::<(String, (char, bool), u64, u8)>(from_memory, ptr, input, memory),
        _ => lift::<Vec<Option<Result<String, ()>>>>(from_memory, ptr, input, memory),
    }
});
