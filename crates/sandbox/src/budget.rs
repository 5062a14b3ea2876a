//! The memory budget of one run: linear memory, tables and what the host allocates for the
//! guest all count against one limit.

use crate::fault::{Fault, Spend};

/// Host bytes charged per table element (a function reference plus bookkeeping; generous).
pub const TABLE_ELEMENT_BYTES: usize = 16;

/// Bytes in use by one run, against its limit.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: usize,
    used: usize,
    peak: usize,
    /// Charged for the current host call only; released when it returns.
    transient: usize,
    /// The last growth granted to linear memory or a table, returned if the growth then fails.
    pending_growth: usize,
}

impl Budget {
    /// A budget of `limit` bytes with nothing in use.
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: 0,
            peak: 0,
            transient: 0,
            pending_growth: 0,
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes in use now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The most bytes in use at once so far.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Bytes that may still be charged.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }

    /// Charges `bytes` for `spent`, or says why they do not fit.
    pub fn charge(&mut self, bytes: usize, spent: Spend) -> Result<(), Fault> {
        let used = self.used.saturating_add(bytes);
        if used > self.limit {
            return Err(Fault::Memory {
                spent,
                needed: bytes,
                used: self.used,
                limit: self.limit,
            });
        }
        self.used = used;
        self.peak = self.peak.max(used);
        Ok(())
    }

    /// Returns `bytes` to the budget.
    pub fn release(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// Charges host memory held only until the current host call returns.
    pub fn charge_transient(&mut self, bytes: usize) -> Result<(), Fault> {
        self.charge(bytes, Spend::HostAllocation)?;
        self.transient = self.transient.saturating_add(bytes);
        Ok(())
    }

    /// Releases what [`Budget::charge_transient`] charged (at the end of a host call).
    pub fn release_transient(&mut self) {
        let bytes = std::mem::take(&mut self.transient);
        self.release(bytes);
    }

    /// Charges a growth of linear memory or a table from `current` to `desired` bytes.
    pub(crate) fn grow(
        &mut self,
        current: usize,
        desired: usize,
        spent: Spend,
    ) -> Result<(), Fault> {
        let more = desired.saturating_sub(current);
        self.charge(more, spent)?;
        self.pending_growth = more;
        Ok(())
    }

    /// The growth charged last did not happen after all.
    pub(crate) fn growth_failed(&mut self) {
        let bytes = std::mem::take(&mut self.pending_growth);
        self.release(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_within_the_limit_and_tracks_the_peak() {
        let mut budget = Budget::new(100);
        budget.charge(60, Spend::LinearMemory).expect("fits");
        budget.charge_transient(30).expect("fits");
        assert_eq!((budget.used(), budget.peak()), (90, 90));
        let error = budget.charge(20, Spend::HostAllocation).expect_err("over");
        assert_eq!(
            error,
            Fault::Memory {
                spent: Spend::HostAllocation,
                needed: 20,
                used: 90,
                limit: 100
            }
        );
        budget.release_transient();
        assert_eq!(
            (budget.used(), budget.peak(), budget.available()),
            (60, 90, 40)
        );
        budget.grow(10, 40, Spend::Table).expect("fits");
        assert_eq!(budget.used(), 90);
        budget.growth_failed();
        assert_eq!(budget.used(), 60);
        assert!(budget.charge(usize::MAX, Spend::HostAllocation).is_err());
    }
}
