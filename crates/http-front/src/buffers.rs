//! The server-wide bound on memory held in connection buffers: request heads and bodies being
//! received or waiting for a handler, responses being written. Each connection gets a small
//! allowance for free (a request head, a small response); what it holds beyond that is charged
//! here, and a request or response that does not fit fails alone with 503.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes each connection may buffer without drawing from the budget: a full request head at the
/// default limits, or a small response.
pub(crate) const FREE_PER_CONNECTION: usize = 16 * 1024;

/// Memory that connection buffers may hold beyond their free allowance, across all connections.
#[derive(Debug)]
pub struct BufferBudget {
    limit: usize,
    used: AtomicUsize,
}

impl Default for BufferBudget {
    /// No bound.
    fn default() -> Self {
        BufferBudget::new(usize::MAX)
    }
}

impl BufferBudget {
    pub(crate) fn new(limit: usize) -> BufferBudget {
        BufferBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// The bound in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_grow(&self, by: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(by).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn grow(&self, by: usize) {
        self.used.fetch_add(by, Ordering::AcqRel);
    }

    fn shrink(&self, by: usize) {
        // Never below zero, even if a caller released more than it holds.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(by))
            });
    }
}

/// What one connection has charged to the [`BufferBudget`].
#[derive(Debug, Default)]
pub(crate) struct BufferCharge {
    charged: usize,
}

impl BufferCharge {
    /// Charges a connection holding `held` bytes; refuses (and changes nothing) when the growth
    /// does not fit in the budget. Shrinking always succeeds.
    pub(crate) fn try_set(&mut self, budget: &BufferBudget, held: usize) -> bool {
        let wanted = held.saturating_sub(FREE_PER_CONNECTION);
        match wanted.cmp(&self.charged) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Greater => {
                if !budget.try_grow(wanted - self.charged) {
                    return false;
                }
            }
            std::cmp::Ordering::Less => budget.shrink(self.charged - wanted),
        }
        self.charged = wanted;
        true
    }

    /// Charges a connection holding `held` bytes whatever the budget says: for bytes that were
    /// admitted already and only moved (a request handed to a worker).
    pub(crate) fn set(&mut self, budget: &BufferBudget, held: usize) {
        let wanted = held.saturating_sub(FREE_PER_CONNECTION);
        match wanted.cmp(&self.charged) {
            std::cmp::Ordering::Equal => {}
            std::cmp::Ordering::Greater => budget.grow(wanted - self.charged),
            std::cmp::Ordering::Less => budget.shrink(self.charged - wanted),
        }
        self.charged = wanted;
    }

    /// Gives everything back (the connection is gone).
    pub(crate) fn release(&mut self, budget: &BufferBudget) {
        budget.shrink(std::mem::take(&mut self.charged));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_beyond_the_free_allowance_and_refuses_what_does_not_fit() {
        let budget = BufferBudget::new(100_000);
        let mut a = BufferCharge::default();
        let mut b = BufferCharge::default();
        assert!(a.try_set(&budget, FREE_PER_CONNECTION));
        assert_eq!(budget.used(), 0);
        assert!(a.try_set(&budget, FREE_PER_CONNECTION + 60_000));
        assert_eq!(budget.used(), 60_000);
        assert!(!b.try_set(&budget, FREE_PER_CONNECTION + 50_000));
        assert_eq!(budget.used(), 60_000, "a refused charge changes nothing");
        assert!(b.try_set(&budget, FREE_PER_CONNECTION + 40_000));
        assert_eq!(budget.used(), 100_000);
        assert!(a.try_set(&budget, 10));
        assert_eq!(budget.used(), 40_000);
        b.set(&budget, FREE_PER_CONNECTION + 200_000);
        assert_eq!(
            budget.used(),
            200_000,
            "admitted bytes are charged regardless"
        );
        b.release(&budget);
        a.release(&budget);
        assert_eq!(budget.used(), 0);
    }
}
