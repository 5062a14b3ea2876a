//! Per-connection deadlines of one event loop.
//!
//! A binary heap of `(when, slot)` entries with lazy re-arming: a connection whose deadline moves
//! later keeps its old entry, and when that entry comes due it is pushed again at the current
//! deadline. So each connection has about one live entry however often its deadline is extended
//! (every request, every chunk of a slow body), and the heap stays as small as the number of
//! connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A connection's slot: its index in the loop's table and the generation of that slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// The deadline state a connection carries.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deadline {
    /// When the connection's current phase expires; `None` while it waits for a worker.
    pub(crate) at: Option<Instant>,
    /// The time of the connection's entry in the heap, if it has one.
    armed: Option<Instant>,
}

/// Where the queue finds a live connection's [`Deadline`].
pub(crate) trait DeadlineTable {
    /// The deadline state of the connection in `slot`, `None` if it was closed.
    fn deadline_mut(&mut self, slot: SlotId) -> Option<&mut Deadline>;
}

/// The heap of one event loop.
#[derive(Debug, Default)]
pub(crate) struct DeadlineQueue {
    heap: BinaryHeap<Reverse<(Instant, SlotId)>>,
}

impl DeadlineQueue {
    /// Sets `deadline` of connection `slot` to `at` (`None`: no deadline).
    pub(crate) fn set(&mut self, slot: SlotId, deadline: &mut Deadline, at: Option<Instant>) {
        deadline.at = at;
        if let Some(at) = at
            && deadline.armed.is_none_or(|armed| at < armed)
        {
            self.heap.push(Reverse((at, slot)));
            deadline.armed = Some(at);
        }
    }

    /// The earliest entry's time, to bound how long the loop may sleep.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops the entries due at `now` and returns the slots whose deadline really expired.
    pub(crate) fn expired(&mut self, now: Instant, table: &mut impl DeadlineTable) -> Vec<SlotId> {
        let mut expired = Vec::new();
        while let Some(Reverse((at, slot))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(state) = table.deadline_mut(slot) else {
                continue; // the connection is gone
            };
            if state.armed != Some(at) {
                continue; // a stale entry: a newer, earlier one was pushed since
            }
            state.armed = None;
            match state.at {
                Some(due) if due <= now => expired.push(slot),
                Some(due) => {
                    self.heap.push(Reverse((due, slot)));
                    state.armed = Some(due);
                }
                None => {}
            }
        }
        expired
    }

    /// Entries in the heap (live and stale).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    impl DeadlineTable for HashMap<SlotId, Deadline> {
        fn deadline_mut(&mut self, slot: SlotId) -> Option<&mut Deadline> {
            self.get_mut(&slot)
        }
    }

    fn slot(index: u32) -> SlotId {
        SlotId {
            index,
            generation: 0,
        }
    }

    #[test]
    fn extending_a_deadline_keeps_one_entry_and_fires_late() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut queue = DeadlineQueue::default();
        let a = slot(1);
        let mut state = Deadline::default();
        for ms in [100, 200, 300, 400] {
            queue.set(a, &mut state, Some(at(ms)));
        }
        assert_eq!(queue.len(), 1, "later deadlines reuse the armed entry");
        let mut table = HashMap::from([(a, state)]);
        assert!(
            queue.expired(at(150), &mut table).is_empty(),
            "re-armed, not fired"
        );
        assert_eq!(queue.next_wake(), Some(at(400)));
        assert_eq!(queue.expired(at(400), &mut table), vec![a]);
        assert_eq!(queue.next_wake(), None);
    }

    #[test]
    fn earlier_deadlines_cleared_deadlines_and_closed_slots() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut queue = DeadlineQueue::default();
        let (a, b, c) = (slot(1), slot(2), slot(3));
        let (mut da, mut db, mut dc) = (
            Deadline::default(),
            Deadline::default(),
            Deadline::default(),
        );
        queue.set(a, &mut da, Some(at(500)));
        queue.set(a, &mut da, Some(at(100)));
        queue.set(b, &mut db, Some(at(50)));
        queue.set(b, &mut db, None);
        queue.set(c, &mut dc, Some(at(10)));
        let mut table = HashMap::from([(a, da), (b, db)]);
        assert_eq!(
            queue.expired(at(600), &mut table),
            vec![a],
            "b has none, c is closed"
        );
        assert_eq!(
            queue.next_wake(),
            None,
            "a's stale entry at 500 was dropped too"
        );
    }
}
