//! The server's memory budget for running functions: before a run starts, it reserves what its
//! function may use at most; when the budget is spent, runs wait briefly and then are refused,
//! so concurrent requests cannot exhaust the machine (under hermit, the VM's RAM).

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Bytes reserved per run besides twice its `max-memory`: wasmi's value stack (bounded by
/// [`sandbox::MAX_STACK_BYTES`]) and host bookkeeping.
pub const RUN_OVERHEAD: usize = sandbox::MAX_STACK_BYTES + (256 << 10);

/// What a run of a function limited to `max_memory` bytes reserves. Twice the limit: wasmi
/// grows linear memory by reallocating it, so the old and the new copy exist at once.
pub fn reservation_for(max_memory: usize) -> usize {
    max_memory.saturating_mul(2).saturating_add(RUN_OVERHEAD)
}

/// The budget and what is reserved of it.
#[derive(Debug)]
pub struct MemoryPool {
    total: usize,
    reserved: Mutex<usize>,
    released: Condvar,
}

/// A reservation, returned to its pool when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    pool: &'a MemoryPool,
    bytes: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut reserved = self.pool.lock();
        *reserved = reserved.saturating_sub(self.bytes);
        drop(reserved);
        self.pool.released.notify_all();
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// More than the whole budget: it can never fit.
    TooLarge { bytes: usize, total: usize },
    /// The budget stayed full for the whole wait.
    Busy { bytes: usize, total: usize },
}

impl MemoryPool {
    /// A pool of `total` bytes.
    pub fn new(total: usize) -> MemoryPool {
        MemoryPool {
            total,
            reserved: Mutex::new(0),
            released: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.reserved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The budget in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes reserved now.
    pub fn reserved(&self) -> usize {
        *self.lock()
    }

    /// Reserves `bytes`, waiting up to `wait` for other runs to release theirs.
    pub fn reserve(&self, bytes: usize, wait: Duration) -> Result<Reservation<'_>, Refused> {
        if bytes > self.total {
            return Err(Refused::TooLarge {
                bytes,
                total: self.total,
            });
        }
        let deadline = Instant::now() + wait;
        let mut reserved = self.lock();
        loop {
            if self.total - *reserved >= bytes {
                *reserved += bytes;
                return Ok(Reservation { pool: self, bytes });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Refused::Busy {
                    bytes,
                    total: self.total,
                });
            }
            reserved = self
                .released
                .wait_timeout(reserved, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_wait_for_room_and_are_returned() {
        let pool = MemoryPool::new(100);
        let first = pool.reserve(60, Duration::ZERO).expect("fits");
        assert_eq!(
            pool.reserve(50, Duration::from_millis(20)).map(|_| ()),
            Err(Refused::Busy {
                bytes: 50,
                total: 100
            })
        );
        assert_eq!(
            pool.reserve(101, Duration::ZERO).map(|_| ()),
            Err(Refused::TooLarge {
                bytes: 101,
                total: 100
            })
        );
        std::thread::scope(|s| {
            let waiter = s.spawn(|| pool.reserve(50, Duration::from_secs(5)).map(|r| r.bytes));
            std::thread::sleep(Duration::from_millis(50));
            drop(first);
            assert_eq!(waiter.join().expect("waiter"), Ok(50));
        });
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn a_reservation_covers_growth_by_copy() {
        assert_eq!(reservation_for(8 << 20), (16 << 20) + RUN_OVERHEAD);
        assert_eq!(reservation_for(usize::MAX), usize::MAX);
    }
}
