//! Change ids handed out in blocks: row capture draws one value of a
//! buffer's identity sequence per block of rows, not one per row.
//!
//! A buffer's `change_id` sequence counts in steps of its increment (see
//! [`BLOCK`]). Each value it hands out starts a block of that many ids that
//! no other draw can return, so a writer that drew `v` may number its rows
//! `v`, `v + 1`, ... `v + increment - 1` without another call. On a 1M-row
//! `INSERT ... SELECT` the per-row `nextval` was a seventh of the writer's
//! time.
//!
//! What the ids must guarantee is narrow: consumption is decided by
//! transaction visibility, and ids are compared only among the rows of one
//! transaction (a refresh records the last id its own transaction wrote;
//! rows that transaction writes afterwards must come after it). So a block
//! is used only inside the transaction that drew it, and only until a
//! refresh records its own-change positions: after either, the next id
//! comes from a new draw, which is past every id drawn before it by anyone
//! (other writers in the transaction, a drain inserting through the
//! column default, included).
//!
//! A block stays exclusive only while the increment it was drawn with
//! does: the sequence remembers the block's first id, and a draw after
//! lowering the increment would land inside it. pg_trickle only ever
//! raises it (the 0.40.0 upgrade, from 1); a concurrent `ALTER` waits for
//! every transaction that drew (`nextval` holds its lock to the end), and
//! the row trigger forgets its blocks on any invalidation of the buffer's
//! relations. Lowering it by hand inside a transaction that captured rows
//! is not supported.

/// The increment of the change-id sequence of a buffer created by this
/// version: the rows one draw numbers.
pub const BLOCK: i64 = 1024;

/// The ids left in one drawn block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdBlock {
    /// The next id to hand out.
    next: i64,
    /// One past the last id of the block.
    end: i64,
}

impl IdBlock {
    /// The block a draw of `start` opens for a sequence counting in steps
    /// of `increment` (1 or less, or a start so close to the largest id that
    /// the block would pass it: a block of one).
    pub fn drawn(start: i64, increment: i64) -> IdBlock {
        let size = increment.max(1);
        IdBlock {
            next: start,
            end: start.checked_add(size).unwrap_or(start.saturating_add(1)),
        }
    }

    /// The next id of the block, or `None` when it is used up.
    pub fn take(&mut self) -> Option<i64> {
        (self.next < self.end).then(|| {
            let id = self.next;
            self.next += 1;
            id
        })
    }
}

/// The next id from `block`, drawing a new block with `draw` (a `nextval`
/// of a sequence counting in steps of `increment`) when there is none or
/// it is used up.
pub fn next_id(block: &mut Option<IdBlock>, increment: i64, draw: impl FnOnce() -> i64) -> i64 {
    if let Some(id) = block.as_mut().and_then(IdBlock::take) {
        return id;
    }
    let mut fresh = IdBlock::drawn(draw(), increment);
    let id = fresh
        .take()
        .expect("a freshly drawn block holds at least one id");
    *block = Some(fresh);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A sequence as PostgreSQL runs it: starts at 1, counts by `increment`.
    struct Sequence {
        last: i64,
        increment: i64,
        draws: u32,
    }

    impl Sequence {
        fn new(increment: i64) -> Sequence {
            Sequence {
                last: 1 - increment,
                increment,
                draws: 0,
            }
        }
        fn nextval(&mut self) -> i64 {
            self.last += self.increment;
            self.draws += 1;
            self.last
        }
    }

    #[test]
    fn one_draw_numbers_a_whole_block() {
        let mut seq = Sequence::new(BLOCK);
        let mut block = None;
        let ids: Vec<i64> = (0..BLOCK + 1)
            .map(|_| next_id(&mut block, BLOCK, || seq.nextval()))
            .collect();
        assert_eq!(ids[0], 1);
        assert_eq!(ids[BLOCK as usize - 1], BLOCK);
        assert_eq!(ids[BLOCK as usize], BLOCK + 1, "the second draw");
        assert_eq!(seq.draws, 2);
    }

    #[test]
    fn an_increment_of_one_draws_for_every_id() {
        let mut seq = Sequence::new(1);
        let mut block = None;
        let ids: Vec<i64> = (0..5)
            .map(|_| next_id(&mut block, 1, || seq.nextval()))
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(seq.draws, 5);
    }

    #[test]
    fn a_block_at_the_end_of_the_range_does_not_overflow() {
        let mut b = IdBlock::drawn(i64::MAX - 1, BLOCK);
        assert_eq!(b.take(), Some(i64::MAX - 1));
        assert_eq!(b.take(), None);
        let mut b = IdBlock::drawn(i64::MAX - 2000, BLOCK);
        assert_eq!(b.take(), Some(i64::MAX - 2000));
    }

    proptest! {
        /// Two writers interleaved on one sequence, each forgetting its
        /// block at random (a transaction end, a refresh): every id is
        /// unique, each writer's ids increase, and an id taken after a
        /// forget is past every id anyone took before it.
        #[test]
        fn ids_are_unique_increasing_and_past_everything_after_a_forget(
            steps in proptest::collection::vec((0usize..2, 0u8..10), 1..400),
            increment in prop_oneof![Just(1i64), Just(7), Just(BLOCK)],
        ) {
            let mut seq = Sequence::new(increment);
            let mut blocks = [None, None];
            let mut last = [i64::MIN, i64::MIN];
            let mut seen = std::collections::HashSet::new();
            let mut highest = i64::MIN;
            for (writer, action) in steps {
                let forgot = action == 0;
                if forgot {
                    blocks[writer] = None;
                }
                let id = next_id(&mut blocks[writer], increment, || seq.nextval());
                prop_assert!(seen.insert(id), "id {} handed out twice", id);
                prop_assert!(id > last[writer], "writer {}: {} after {}", writer, id, last[writer]);
                if forgot {
                    prop_assert!(id > highest, "{} after a forget, {} taken before", id, highest);
                }
                last[writer] = id;
                highest = highest.max(id);
            }
        }
    }
}
