//! Property-style tests of the canonical ABI runtime and the generated types: random values
//! survive store/load and lower/lift round trips, and random memory never makes lifting panic.

#![allow(clippy::unwrap_used)]

use crate::abi::*;
use crate::bindings::http_types::{HttpError, Method, Request, Response};
use crate::bindings::keyvalue::KeyvalueError;

/// A linear memory in a `Vec` with a bump allocator, as a guest would have.
struct VecMemory {
    bytes: Vec<u8>,
    heap: u32,
}

impl VecMemory {
    fn new(size: usize) -> Self {
        Self {
            bytes: vec![0; size],
            heap: 8,
        }
    }
}

impl GuestMemory for VecMemory {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    fn charge(&self, _: u64) -> Result<(), AbiError> {
        Ok(())
    }
    fn realloc(&mut self, _: u32, _: u32, align: u32, size: u32) -> Result<u32, AbiError> {
        let ptr = align_to(self.heap, align);
        let end = ptr
            .checked_add(size)
            .ok_or(AbiError::Realloc("overflow".into()))?;
        if end as usize > self.bytes.len() {
            return Err(AbiError::Realloc("out of memory".into()));
        }
        self.heap = end;
        Ok(ptr)
    }
}

/// xorshift64*: deterministic, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn string(&mut self) -> String {
        let alphabet = ['a', 'z', '/', ' ', 'é', '€', '😀', '\0', ':'];
        (0..self.below(12))
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
            .collect()
    }
    fn bytes(&mut self) -> Vec<u8> {
        (0..self.below(40)).map(|_| self.next() as u8).collect()
    }
    fn pairs(&mut self) -> Vec<(String, String)> {
        (0..self.below(4))
            .map(|_| (self.string(), self.string()))
            .collect()
    }
    fn method(&mut self) -> Method {
        [
            Method::Get,
            Method::Post,
            Method::Put,
            Method::Delete,
            Method::Patch,
            Method::Head,
            Method::Options,
        ][self.below(7) as usize]
    }
    fn request(&mut self) -> Request {
        Request {
            method: self.method(),
            uri: self.string(),
            headers: self.pairs(),
            params: self.pairs(),
            body: if self.below(2) == 0 {
                None
            } else {
                Some(self.bytes())
            },
        }
    }
    fn http_error(&mut self) -> HttpError {
        match self.below(5) {
            0 => HttpError::InvalidUrl(self.string()),
            1 => HttpError::TimeoutError(self.string()),
            2 => HttpError::ProtocolError(self.string()),
            3 => HttpError::StatusError(self.next() as u16),
            _ => HttpError::UnexpectedError(self.string()),
        }
    }
    fn response(&mut self) -> Result<Response, HttpError> {
        if self.below(3) == 0 {
            return Err(self.http_error());
        }
        Ok(Response {
            status: self.next() as u16,
            headers: if self.below(2) == 0 {
                None
            } else {
                Some(self.pairs())
            },
            body: if self.below(2) == 0 {
                None
            } else {
                Some(self.bytes())
            },
        })
    }
}

fn round_trip<T: WitType + PartialEq + std::fmt::Debug>(value: &T) {
    let mut mem = VecMemory::new(1 << 16);
    // Through memory.
    let ptr = alloc(&mut mem, T::SIZE, T::ALIGN).unwrap();
    value.store(&mut mem, ptr).unwrap();
    assert_eq!(&T::load(&mem, ptr).unwrap(), value);
    // Through core values.
    let mut flat = Vec::new();
    value.lower_flat(&mut mem, &mut flat).unwrap();
    let types: Vec<FlatType> = flat
        .iter()
        .map(|v| match v {
            FlatVal::I32(_) => FlatType::I32,
            FlatVal::I64(_) => FlatType::I64,
            FlatVal::F32(_) => FlatType::F32,
            FlatVal::F64(_) => FlatType::F64,
        })
        .collect();
    assert_eq!(
        types,
        flat_types_of::<T>(),
        "lowered values match the flattened type of {value:?}"
    );
    let mut iter = FlatIter::new(&flat);
    assert_eq!(&T::lift_flat(&mem, &mut iter).unwrap(), value);
    assert!(
        iter.take(1).is_err(),
        "lifting consumes exactly the flattened values"
    );
}

#[test]
fn random_values_round_trip() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..500 {
        round_trip(&rng.request());
        round_trip(&rng.response());
        round_trip(&rng.string());
        round_trip(&rng.bytes());
        round_trip(&rng.pairs());
        let n = rng.next();
        round_trip(&(n as u8, n as i16, n as u32, n as i64));
        round_trip(&Some(n));
        round_trip(
            &(if n.is_multiple_of(2) {
                Ok(n as u32)
            } else {
                Err(f32::from_bits(n as u32 & 0x3fff_ffff))
            }) as &Result<u32, f32>,
        );
        round_trip(
            &(if n.is_multiple_of(3) {
                Ok(n as f32)
            } else {
                Err(n)
            }) as &Result<f32, u64>,
        );
        round_trip(
            &(if n.is_multiple_of(2) {
                Some((n as u8, rng.string(), n as f64))
            } else {
                None
            }),
        );
        round_trip(&char::from_u32(n as u32 % 0xd000).unwrap_or('x'));
        round_trip(&(n.is_multiple_of(2)));
        round_trip(
            &[
                KeyvalueError::KeyNotFound(rng.string()),
                KeyvalueError::IoError(rng.string()),
            ][(n % 2) as usize],
        );
    }
}

#[test]
fn layouts_match_the_canonical_abi() {
    assert_eq!((String::SIZE, String::ALIGN), (8, 4));
    assert_eq!((<Option<u64>>::SIZE, <Option<u64>>::ALIGN), (16, 8));
    assert_eq!(
        (<Result<(), String>>::SIZE, <Result<(), String>>::ALIGN),
        (12, 4)
    );
    assert_eq!((<(u8, u32, u16)>::SIZE, <(u8, u32, u16)>::ALIGN), (12, 4));
    assert_eq!((Response::SIZE, Response::ALIGN), (28, 4));
    assert_eq!(Method::SIZE, 1);
    assert_eq!(
        flat_types_of::<Result<f32, u64>>(),
        [FlatType::I32, FlatType::I64]
    );
    assert_eq!(
        flat_types_of::<Result<f32, u32>>(),
        [FlatType::I32, FlatType::I32]
    );
    assert_eq!(
        flat_types_of::<Option<f64>>(),
        [FlatType::I32, FlatType::F64]
    );
    // handle-http's parameters: handler name (2) + request (1 + 2 + 2 + 2 + 3).
    assert_eq!(flat_types_of::<(String, Request)>().len(), 12);
}

#[test]
fn random_memory_never_panics_when_lifting() {
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let mut mem = VecMemory::new(256);
        for b in mem.bytes.iter_mut() {
            // Small values make discriminants and lengths plausible often enough to go deep.
            *b = if rng.below(3) == 0 {
                rng.next() as u8
            } else {
                rng.below(4) as u8
            };
        }
        let ptr = rng.below(300) as u32;
        let _ = Request::load(&mem, ptr);
        let _ = <Result<Response, HttpError>>::load(&mem, ptr);
        let _ = <Vec<String>>::load(&mem, ptr);
        let flat: Vec<FlatVal> = (0..12)
            .map(|_| FlatVal::I32(rng.below(300) as i32))
            .collect();
        let _ = <(String, Request)>::lift_flat(&mem, &mut FlatIter::new(&flat));
    }
}

#[test]
fn bad_data_is_reported_precisely() {
    let mut mem = VecMemory::new(64);
    mem.bytes[0] = 9;
    assert_eq!(
        Method::load(&mem, 0),
        Err(AbiError::InvalidDiscriminant {
            type_name: "method",
            value: 9
        })
    );
    assert_eq!(
        String::load(&mem, 2),
        Err(AbiError::Misaligned { ptr: 2, align: 4 })
    );
    mem.bytes[8..12].copy_from_slice(&60u32.to_le_bytes());
    mem.bytes[12..16].copy_from_slice(&10u32.to_le_bytes());
    assert!(matches!(
        String::load(&mem, 8),
        Err(AbiError::OutOfBounds { .. })
    ));
    mem.bytes[12..16].copy_from_slice(&2u32.to_le_bytes());
    mem.bytes[60] = 0xff;
    assert_eq!(String::load(&mem, 8), Err(AbiError::InvalidUtf8));
    let huge = [FlatVal::I32(0), FlatVal::I32(-1)];
    assert!(<Vec<u64>>::lift_flat(&mem, &mut FlatIter::new(&huge)).is_err());
    let wrong = [FlatVal::I64(0)];
    assert_eq!(
        u32::lift_flat(&mem, &mut FlatIter::new(&wrong)),
        Err(AbiError::FlatMismatch)
    );
    // An i64 joined slot carrying an i32 payload must fit in 32 bits.
    let joined = [FlatVal::I32(0), FlatVal::I64(1 << 40)];
    assert_eq!(
        <Result<u32, u64>>::lift_flat(&mem, &mut FlatIter::new(&joined)),
        Err(AbiError::PayloadOverflow(1 << 40))
    );
}
