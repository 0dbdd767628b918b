//! The bounded queue between refreshes and the span exporter, as index
//! arithmetic over a fixed number of slots: a refresh reserves a slot or,
//! when all are taken, counts a dropped span and goes on (a refresh never
//! waits for the exporter); the exporter takes the oldest spans in order.
//! The state is plain `Copy` data so that it can live in shared memory
//! under a lock, with the slots beside it; this module decides which slot.

/// Where the queue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct RingState {
    /// Slots in the queue.
    pub capacity: u32,
    /// The slot of the oldest queued span.
    pub head: u32,
    /// Spans queued.
    pub len: u32,
    /// Spans dropped because the queue was full, ever.
    pub dropped: u64,
    /// Spans accepted, ever.
    pub accepted: u64,
}

impl RingState {
    /// An empty queue of `capacity` slots (at least one).
    pub fn new(capacity: u32) -> RingState {
        RingState {
            capacity: capacity.max(1),
            ..RingState::default()
        }
    }

    /// The slot a new span goes into, or None (and one more dropped span)
    /// when the queue is full.
    pub fn reserve(&mut self) -> Option<u32> {
        if self.len >= self.capacity {
            self.dropped += 1;
            return None;
        }
        let slot = ((self.head as u64 + self.len as u64) % self.capacity as u64) as u32;
        self.len += 1;
        self.accepted += 1;
        Some(slot)
    }

    /// The slots of the oldest `max` spans, oldest first, now free again.
    pub fn take(&mut self, max: u32) -> Vec<u32> {
        let n = max.min(self.len);
        let slots = (0..n)
            .map(|i| ((self.head as u64 + i as u64) % self.capacity as u64) as u32)
            .collect();
        self.head = ((self.head as u64 + n as u64) % self.capacity as u64) as u32;
        self.len -= n;
        slots
    }
}

/// Logging of export errors at a bounded rate: at most one line per
/// `every_us`, telling how many were suppressed since the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogLimit {
    /// When the last line was logged (microseconds), if ever.
    pub last: Option<i64>,
    /// Errors not logged since then.
    pub suppressed: u64,
}

impl LogLimit {
    /// Whether to log an error at `now`; Some(suppressed before it) when so.
    pub fn allow(&mut self, now: i64, every_us: i64) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_sub(last) < every_us && now >= last => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn a_full_queue_drops_and_counts_and_frees_slots_in_order() {
        let mut r = RingState::new(2);
        assert_eq!(r.reserve(), Some(0));
        assert_eq!(r.reserve(), Some(1));
        assert_eq!(r.reserve(), None);
        assert_eq!(r.dropped, 1);
        assert_eq!(r.take(1), vec![0]);
        assert_eq!(r.reserve(), Some(0));
        assert_eq!(r.take(5), vec![1, 0]);
        assert_eq!((r.len, r.accepted, r.dropped), (0, 3, 1));
    }

    #[test]
    fn errors_are_logged_at_most_once_per_period_with_the_count_suppressed() {
        let mut l = LogLimit::default();
        assert_eq!(l.allow(0, 10), Some(0));
        assert_eq!(l.allow(3, 10), None);
        assert_eq!(l.allow(9, 10), None);
        assert_eq!(l.allow(10, 10), Some(2));
        // A clock that stepped back does not silence logging for good.
        assert_eq!(l.allow(-100, 10), Some(0));
    }

    proptest! {
        /// Against a plain queue: spans come out in the order they went
        /// in, each slot holds one live span, nothing is lost that was
        /// accepted, and every refusal is counted.
        #[test]
        fn the_ring_behaves_as_a_bounded_fifo(cap in 1u32..8, ops in proptest::collection::vec(any::<Option<u8>>(), 0..200)) {
            let mut r = RingState::new(cap);
            let mut slots: Vec<Option<u64>> = vec![None; cap as usize];
            let mut model: VecDeque<u64> = VecDeque::new();
            let (mut next, mut dropped) = (0u64, 0u64);
            for op in ops {
                match op {
                    None => match r.reserve() {
                        Some(s) => {
                            prop_assert!(slots[s as usize].is_none(), "slot {} still held", s);
                            slots[s as usize] = Some(next);
                            model.push_back(next);
                            next += 1;
                        }
                        None => {
                            prop_assert_eq!(model.len(), cap as usize);
                            dropped += 1;
                        }
                    },
                    Some(n) => {
                        for s in r.take(n as u32 % 4) {
                            let got = slots[s as usize].take();
                            prop_assert_eq!(got, model.pop_front());
                        }
                    }
                }
                prop_assert_eq!(r.len as usize, model.len());
                prop_assert_eq!(r.dropped, dropped);
                prop_assert_eq!(r.accepted, next);
            }
        }
    }
}
