//! A consumer group's delivery state over an outbox whose messages are
//! numbered 1, 2, ... in commit order: which messages are committed, and
//! which batches are leased to which worker. The rules:
//!
//! - **No double delivery within a lease:** a poll hands out only messages
//!   that are neither committed nor in another live lease.
//! - **At least once:** a message is handed out again once its lease
//!   lapsed uncommitted (its worker crashed or was too slow), until a
//!   commit.
//! - **Monotonic offset:** the group's offset (every message up to it is
//!   committed) only grows, except by an explicit replay.
//! - **Retention:** rows at or below the smallest offset of all groups may
//!   be dropped; nothing a group has not committed is.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::lease::{Lease, LeaseError};

/// A run of messages `first..=last` handed to one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The poll that handed it out: a commit or an extension names it, so
    /// a worker's late commit of a batch that lapsed and was handed out
    /// again (even to the same worker, even from the same first message)
    /// never commits the new delivery.
    pub id: u64,
    /// Its first message.
    pub first: u64,
    /// Its last message.
    pub last: u64,
    /// Who holds it, until when.
    pub lease: Lease,
}

/// Why a poll, commit or extension is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GroupError {
    /// The batch size is not in 1..=10000.
    #[error("a batch holds 1 to 10000 messages, not {0}")]
    BadBatchSize(u64),
    /// No such delivery is leased (committed already, lapsed and handed
    /// out again, or never polled).
    #[error("delivery {0} is not leased")]
    NoBatch(u64),
    /// The lease rules refused it.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

impl GroupError {
    /// The SQLSTATE to raise it with: bad arguments are 22023, a
    /// delivery that is not (or no longer) the caller's is 55000, an expiry
    /// past the end of time 22008.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            GroupError::BadBatchSize(_)
            | GroupError::Lease(LeaseError::BadLength(_))
            | GroupError::Lease(LeaseError::NoHolder) => "22023",
            GroupError::NoBatch(_)
            | GroupError::Lease(LeaseError::NotHolder(_))
            | GroupError::Lease(LeaseError::Lapsed(_)) => "55000",
            GroupError::Lease(LeaseError::Overflow) => "22008",
        }
    }
}

/// The largest batch a poll hands out.
pub const MAX_BATCH: u64 = 10_000;

/// One consumer group's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Every message up to and including this one is committed.
    pub offset: u64,
    /// Messages above `offset` committed ahead of a gap.
    pub done: BTreeSet<u64>,
    /// Batches handed out and not committed, by first message.
    pub batches: BTreeMap<u64, Batch>,
    /// The id of the last delivery handed out.
    pub last_id: u64,
}

/// What a poll hands a worker: delivery `id` of messages `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Names the delivery in a commit or an extension.
    pub id: u64,
    /// Its first message.
    pub first: u64,
    /// Its last message.
    pub last: u64,
}

impl Group {
    /// Whether message `m` is committed.
    pub fn is_done(&self, m: u64) -> bool {
        m <= self.offset || self.done.contains(&m)
    }

    /// The live batch holding message `m` at `now`, if any.
    pub fn leased(&self, m: u64, now: i64) -> Option<&Batch> {
        self.batches
            .range(..=m)
            .next_back()
            .map(|(_, b)| b)
            .filter(|b| m <= b.last && b.lease.is_live(now))
    }

    /// Hand `holder` the first run of at most `size` messages up to `head`
    /// that are neither committed nor in a live lease, leased for
    /// `seconds` from `now`; None when there is none. Lapsed batches are
    /// forgotten first, so their messages are handed out again.
    pub fn poll(
        &mut self,
        head: u64,
        holder: &str,
        size: u64,
        now: i64,
        seconds: i64,
    ) -> Result<Option<Delivery>, GroupError> {
        if !(1..=MAX_BATCH).contains(&size) {
            return Err(GroupError::BadBatchSize(size));
        }
        let lease = Lease::take(holder, now, seconds)?;
        self.batches.retain(|_, b| b.lease.is_live(now));
        let free = |g: &Group, m: u64| !g.is_done(m) && g.leased(m, now).is_none();
        let Some(first) = (self.offset + 1..=head).find(|m| free(self, *m)) else {
            return Ok(None);
        };
        let mut last = first;
        while last < head && last - first + 1 < size && free(self, last + 1) {
            last += 1;
        }
        self.last_id += 1;
        let id = self.last_id;
        self.batches.insert(
            first,
            Batch {
                id,
                first,
                last,
                lease,
            },
        );
        Ok(Some(Delivery { id, first, last }))
    }

    /// The first message of delivery `id`, if it is still leased.
    fn find(&self, id: u64) -> Result<u64, GroupError> {
        self.batches
            .values()
            .find(|b| b.id == id)
            .map(|b| b.first)
            .ok_or(GroupError::NoBatch(id))
    }

    /// Commit delivery `id`, which `holder` must hold live at `now` (a
    /// lapsed batch may be another worker's by now: it is delivered again
    /// instead). Returns the group's offset after it.
    pub fn commit(&mut self, holder: &str, id: u64, now: i64) -> Result<u64, GroupError> {
        let first = self.find(id)?;
        let batch = &self.batches[&first];
        if batch.lease.holder != holder {
            return Err(LeaseError::NotHolder(batch.lease.holder.clone()).into());
        }
        if !batch.lease.is_live(now) {
            return Err(LeaseError::Lapsed(batch.lease.expires_at).into());
        }
        let last = batch.last;
        self.batches.remove(&first);
        self.done.extend(first..=last);
        while self.done.remove(&(self.offset + 1)) {
            self.offset += 1;
        }
        Ok(self.offset)
    }

    /// Extend `holder`'s lease on delivery `id`.
    pub fn extend(
        &mut self,
        holder: &str,
        id: u64,
        now: i64,
        seconds: i64,
    ) -> Result<(), GroupError> {
        let first = self.find(id)?;
        let batch = self.batches.get_mut(&first).expect("found above");
        batch.lease = batch.lease.extend(holder, now, seconds)?;
        Ok(())
    }

    /// Deliver every message from `from` on again: the offset goes back
    /// to `from - 1` (never forward) and every batch is forgotten.
    pub fn replay(&mut self, from: u64) {
        let to = from.saturating_sub(1);
        self.offset = self.offset.min(to);
        self.done.retain(|m| *m < from);
        while self.done.remove(&(self.offset + 1)) {
            self.offset += 1;
        }
        self.batches.clear();
    }
}

/// The highest message that every group has committed: rows up to it may
/// be dropped. With no group, nothing is retained for anyone (`head`).
pub fn retention_floor(groups: &[&Group], head: u64) -> u64 {
    groups.iter().map(|g| g.offset).min().unwrap_or(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = 1_000_000;

    #[test]
    fn two_workers_get_disjoint_batches_and_commits_close_gaps() {
        let mut g = Group::default();
        assert_eq!(span(g.poll(10, "a", 4, 0, 30)), Some((1, 4)));
        assert_eq!(span(g.poll(10, "b", 4, 0, 30)), Some((5, 8)));
        assert_eq!(g.commit("b", 2, S).unwrap(), 0, "a gap stays open");
        assert_eq!(g.commit("a", 1, S).unwrap(), 8);
        assert_eq!(span(g.poll(10, "a", 4, S, 30)), Some((9, 10)));
        assert_eq!(span(g.poll(10, "b", 4, S, 30)), None);
    }

    #[test]
    fn a_lapsed_batch_is_delivered_again_and_its_late_commit_refused() {
        let mut g = Group::default();
        assert_eq!(span(g.poll(3, "a", 10, 0, 1)), Some((1, 3)));
        assert_eq!(span(g.poll(3, "b", 10, S / 2, 1)), None);
        assert_eq!(span(g.poll(3, "b", 10, S, 1)), Some((1, 3)));
        assert_eq!(g.commit("a", 1, S), Err(GroupError::NoBatch(1)));
        assert_eq!(
            g.commit("a", 2, S),
            Err(LeaseError::NotHolder("b".into()).into())
        );
        assert_eq!(g.commit("b", 2, S + 1).unwrap(), 3);
    }

    #[test]
    fn a_late_commit_never_commits_the_same_workers_new_delivery() {
        // The case the model test found: a worker's batch lapses, the same
        // worker is handed a longer run from the same first message, and
        // its late commit of the old batch must not commit the new one.
        let mut g = Group::default();
        let old = g.poll(3, "a", 1, 0, 1).unwrap().unwrap();
        let new = g.poll(3, "a", 3, S, 1).unwrap().unwrap();
        assert_eq!((new.first, new.last), (1, 3));
        assert_eq!(g.commit("a", old.id, S), Err(GroupError::NoBatch(old.id)));
        assert_eq!(g.offset, 0);
        assert_eq!(g.commit("a", new.id, S).unwrap(), 3);
    }

    fn span(d: Result<Option<Delivery>, GroupError>) -> Option<(u64, u64)> {
        d.unwrap().map(|d| (d.first, d.last))
    }

    #[test]
    fn replay_goes_back_never_forward() {
        let mut g = Group::default();
        let d = g.poll(5, "a", 5, 0, 30).unwrap().unwrap();
        g.commit("a", d.id, 1).unwrap();
        g.replay(3);
        assert_eq!(g.offset, 2);
        g.replay(9);
        assert_eq!(g.offset, 2);
        assert_eq!(span(g.poll(5, "a", 5, 2, 30)), Some((3, 5)));
    }

    /// What a random history does.
    #[derive(Debug, Clone)]
    enum Op {
        Publish(u64),
        Poll(usize, u64),
        Commit(usize),
        Extend(usize),
        Wait(i64),
        Crash(usize),
        Replay(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..6).prop_map(Op::Publish),
            (0usize..3, 1u64..5).prop_map(|(w, n)| Op::Poll(w, n)),
            (0usize..3).prop_map(Op::Commit),
            (0usize..3).prop_map(Op::Extend),
            (0i64..4_000_000).prop_map(Op::Wait),
            (0usize..3).prop_map(Op::Crash),
            (1u64..20).prop_map(Op::Replay),
        ]
    }

    const WORKERS: [&str; 3] = ["w0", "w1", "w2"];
    const LEASE: i64 = 2;

    proptest! {
        /// Random polls, commits, extensions, waits, worker crashes and
        /// replays, against a reference
        /// model that tracks, per message, whether it is committed and
        /// who holds it until when.
        #[test]
        fn deliveries_follow_the_contract(ops in proptest::collection::vec(op(), 1..80)) {
            let mut g = Group::default();
            let mut head = 0u64;
            let mut now = 0i64;
            // Reference: committed flags, and the live holder of each message.
            let mut committed: Vec<bool> = vec![false];
            // (worker, until, delivery id) of the delivery holding each message.
            let mut holder: Vec<Option<(usize, i64, u64)>> = vec![None];
            // Each worker's deliveries (id, first, last), oldest first; a
            // worker keeps a delivery that lapsed and was handed out again,
            // and its commit must then be refused.
            let mut held: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); WORKERS.len()];
            for op in ops {
                let before = g.offset;
                match op {
                    Op::Publish(n) => {
                        head += n;
                        committed.resize(head as usize + 1, false);
                        holder.resize(head as usize + 1, None);
                    }
                    Op::Poll(w, n) => {
                        if let Some(d) = g.poll(head, WORKERS[w], n, now, LEASE).unwrap() {
                            let (a, b) = (d.first, d.last);
                            prop_assert!(a <= b && b <= head && b - a < n);
                            for m in a..=b {
                                let m = m as usize;
                                prop_assert!(!committed[m], "message {} delivered after its commit", m);
                                if let Some((other, until, _)) = holder[m] {
                                    prop_assert!(until <= now, "message {} delivered while {} held it live", m, other);
                                }
                                holder[m] = Some((w, now + LEASE * S, d.id));
                            }
                            held[w].push((d.id, a, b));
                        }
                    }
                    Op::Commit(w) => {
                        if let Some((id, a, b)) = held[w].first().copied() {
                            held[w].remove(0);
                            let live_mine = (a..=b).all(|m| holder[m as usize].is_some_and(|(h, until, i)| h == w && i == id && until > now));
                            match g.commit(WORKERS[w], id, now) {
                                Ok(_) => {
                                    prop_assert!(live_mine, "a commit of {}..={} accepted without a live lease", a, b);
                                    for m in a..=b {
                                        committed[m as usize] = true;
                                        holder[m as usize] = None;
                                    }
                                }
                                Err(_) => prop_assert!(!live_mine, "a commit of a live batch {}..={} refused", a, b),
                            }
                        }
                    }
                    Op::Extend(w) => {
                        if let Some((id, a, b)) = held[w].first().copied() {
                            let live_mine = (a..=b).all(|m| holder[m as usize].is_some_and(|(h, until, i)| h == w && i == id && until > now));
                            let extended = g.extend(WORKERS[w], id, now, LEASE).is_ok();
                            prop_assert_eq!(extended, live_mine, "extension of {}..={} (delivery {})", a, b, id);
                            if extended {
                                for m in a..=b {
                                    if let Some((h, until, i)) = holder[m as usize] {
                                        holder[m as usize] = Some((h, until.max(now + LEASE * S), i));
                                    }
                                }
                            }
                        }
                    }
                    Op::Wait(dt) => now += dt,
                    // A crashed worker forgets its deliveries and never
                    // commits them: they must come back after their lease.
                    Op::Crash(w) => held[w].clear(),
                    Op::Replay(from) => {
                        g.replay(from);
                        for c in committed.iter_mut().skip(from as usize) {
                            *c = false;
                        }
                        for h in holder.iter_mut() {
                            *h = None;
                        }
                        for h in held.iter_mut() {
                            h.clear();
                        }
                    }
                }
                if !matches!(op, Op::Replay(_)) {
                    prop_assert!(g.offset >= before, "the offset went back without a replay");
                }
                // The offset is exactly the committed prefix.
                let prefix = (1..committed.len()).take_while(|m| committed[*m]).count() as u64;
                prop_assert_eq!(g.offset, prefix);
                prop_assert!(retention_floor(&[&g], head) <= prefix);
            }
            // At least once: after every lease lapses, one worker drains
            // whatever is left, and everything ends committed.
            now += 10 * LEASE * S;
            while let Some(d) = g.poll(head, "w0", 7, now, LEASE).unwrap() {
                g.commit("w0", d.id, now).unwrap();
            }
            prop_assert_eq!(g.offset, head);
        }
    }
}
