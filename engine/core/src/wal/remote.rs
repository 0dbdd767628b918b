//! Capture on other nodes: which decoded transactions of a node's slot a
//! drain writes into the coordinator's change buffer, and who may drain.
//!
//! The coordinator reads a sharded source's rows on each node through
//! `postgres_fdw`, in one REPEATABLE READ snapshot of that node per local
//! transaction. A refresh is exact only when the changes it consumes are
//! exactly the node's transactions that snapshot sees (and an earlier
//! refresh's did not). So a drain writes a decoded transaction only once
//! a snapshot of the node sees it, and a refresh first drains up to the
//! snapshot its reads use, under the lock that keeps other drains of that
//! slot out until it commits.
//!
//! A node's commit is decoded a moment before it is visible (and longer
//! with a synchronous standby), so a drain can meet transactions it must
//! hold back. [`Progress`] therefore is not one position: every commit
//! before `settled` is written, and so are the listed later ones. The
//! slot is advanced (non-transactionally) only to a `settled` that a
//! committed drain recorded, so a crash at any point re-decodes what was
//! not written and skips what was.

use std::collections::BTreeMap;

use super::capture::Snapshot;

/// What of a node's slot is in the change buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every transaction committing before this WAL position is written.
    pub settled: u64,
    /// Transactions committing at or after `settled` that are written:
    /// full transaction id to commit position.
    pub written: BTreeMap<u64, u64>,
}

/// A decoded transaction of the node: full id and commit position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decoded {
    /// Full (epoch-extended) transaction id on the node.
    pub xid: u64,
    /// Position of its commit record.
    pub commit_lsn: u64,
}

/// What a drain does with the transactions it decoded up to `upto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// The transactions to write now.
    pub write: Vec<u64>,
    /// The progress to record in the same transaction.
    pub progress: Progress,
}

impl Progress {
    /// Whether transaction `t` is already in the buffer.
    pub fn has(&self, t: &Decoded) -> bool {
        t.commit_lsn < self.settled || self.written.get(&t.xid) == Some(&t.commit_lsn)
    }

    /// The drain of `decoded` (every transaction of the slot committing
    /// in `[settled, upto)`, in any order) against `snapshot`, a snapshot
    /// of the node taken after every one of them was decoded: write the
    /// ones it sees that are not written yet; hold back the others.
    pub fn drain(&self, decoded: &[Decoded], snapshot: &Snapshot, upto: u64) -> Drain {
        let mut write = Vec::new();
        let mut written = self.written.clone();
        let mut held_from = upto;
        for t in decoded {
            if self.has(t) || t.commit_lsn >= upto {
                continue;
            }
            if snapshot.sees(t.xid) {
                write.push(t.xid);
                written.insert(t.xid, t.commit_lsn);
            } else {
                held_from = held_from.min(t.commit_lsn);
            }
        }
        write.sort_unstable();
        write.dedup();
        let settled = held_from.max(self.settled);
        written.retain(|_, lsn| *lsn >= settled);
        Drain {
            write,
            progress: Progress { settled, written },
        }
    }
}

/// A lease on a node's slot: who may advance it and drain it on a
/// schedule, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it.
    pub holder: String,
    /// When it was taken (microseconds, any epoch the caller keeps).
    pub acquired_at: i64,
    /// When it lapses.
    pub expires_at: i64,
}

/// What a would-be holder may do with a slot's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Take it (nobody held it) or renew it (we hold it): work, and write
    /// this lease in the same transaction.
    Hold(Lease),
    /// Another holder's lease lapsed: take it over (this lease), and
    /// record the takeover.
    TakeOver {
        /// The lease to write.
        lease: Lease,
        /// Whose lapsed lease it replaces.
        from: String,
    },
    /// Another holder's lease runs until then: leave the slot alone.
    Wait {
        /// The holder.
        holder: String,
        /// When its lease lapses.
        until: i64,
    },
}

/// What `me` may do at `now` with a slot whose lease is `current`,
/// holding it for `length` if it may.
pub fn decide_lease(current: Option<&Lease>, me: &str, now: i64, length: i64) -> LeaseDecision {
    let mine = |acquired_at| Lease {
        holder: me.to_string(),
        acquired_at,
        expires_at: now.saturating_add(length.max(1)),
    };
    match current {
        None => LeaseDecision::Hold(mine(now)),
        Some(l) if l.holder == me => LeaseDecision::Hold(mine(l.acquired_at)),
        Some(l) if l.expires_at <= now => LeaseDecision::TakeOver {
            lease: mine(now),
            from: l.holder.clone(),
        },
        Some(l) => LeaseDecision::Wait {
            holder: l.holder.clone(),
            until: l.expires_at,
        },
    }
}

/// The prefix of every slot database `database` of the coordinator with
/// `system_identifier` keeps on a node.
pub fn slot_prefix(system_identifier: u64, database: u32) -> String {
    format!("pgtrickle_{system_identifier:x}_{database}_")
}

/// The slot name for source `source` of database `database` on a node,
/// unique across coordinators by the coordinator's system identifier.
pub fn slot_name(system_identifier: u64, database: u32, source: u32) -> String {
    format!("{}{source}", slot_prefix(system_identifier, database))
}

/// PostgreSQL's limit on an identifier, in bytes.
pub const NAME_LIMIT: usize = 63;

/// The relation that holds shard `shard_id` of Citus table `table` on a
/// node (`orders_102008`), or None when the name would pass
/// [`NAME_LIMIT`]: Citus then shortens it with a hash, which capture does
/// not follow.
pub fn citus_shard_relation(table: &str, shard_id: i64) -> Option<String> {
    let name = format!("{table}_{shard_id}");
    (name.len() <= NAME_LIMIT).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citus_shard_relations_append_the_shard_id_within_the_name_limit() {
        assert_eq!(
            citus_shard_relation("orders", 102008).as_deref(),
            Some("orders_102008")
        );
        let long = "t".repeat(NAME_LIMIT - 7);
        assert_eq!(
            citus_shard_relation(&long, 102008).map(|n| n.len()),
            Some(NAME_LIMIT)
        );
        assert_eq!(citus_shard_relation(&format!("{long}x"), 102008), None);
        // Bytes, not characters: a multibyte name reaches the limit sooner.
        let wide = "é".repeat(29);
        assert_eq!(citus_shard_relation(&wide, 102008), None);
    }
    use proptest::prelude::*;

    fn snap(xmin: u64, xmax: u64, running: &[u64]) -> Snapshot {
        Snapshot {
            xmin,
            xmax,
            running: running.to_vec(),
        }
    }

    fn t(xid: u64, commit_lsn: u64) -> Decoded {
        Decoded { xid, commit_lsn }
    }

    #[test]
    fn a_decoded_transaction_the_snapshot_does_not_see_is_held_back() {
        let p = Progress::default();
        let d = p.drain(
            &[t(10, 100), t(11, 200), t(12, 300)],
            &snap(10, 13, &[11]),
            400,
        );
        assert_eq!(d.write, vec![10, 12]);
        assert_eq!(d.progress.settled, 200);
        assert_eq!(d.progress.written.get(&12), Some(&300));
        // Once visible, 11 is written, 12 is not written again.
        let again = d
            .progress
            .drain(&[t(11, 200), t(12, 300)], &snap(13, 13, &[]), 400);
        assert_eq!(again.write, vec![11]);
        assert_eq!(again.progress.settled, 400);
        assert!(again.progress.written.is_empty());
    }

    #[test]
    fn transactions_at_or_past_upto_wait_for_a_later_drain() {
        let d = Progress::default().drain(&[t(5, 100), t(6, 500)], &snap(7, 7, &[]), 500);
        assert_eq!(d.write, vec![5]);
        assert_eq!(d.progress.settled, 500);
    }

    #[test]
    fn a_lease_is_held_renewed_taken_over_when_lapsed_and_otherwise_waited_for() {
        assert_eq!(
            decide_lease(None, "a", 100, 30),
            LeaseDecision::Hold(Lease {
                holder: "a".into(),
                acquired_at: 100,
                expires_at: 130
            })
        );
        let held = Lease {
            holder: "a".into(),
            acquired_at: 100,
            expires_at: 130,
        };
        assert_eq!(
            decide_lease(Some(&held), "a", 120, 30),
            LeaseDecision::Hold(Lease {
                holder: "a".into(),
                acquired_at: 100,
                expires_at: 150
            })
        );
        assert_eq!(
            decide_lease(Some(&held), "b", 129, 30),
            LeaseDecision::Wait {
                holder: "a".into(),
                until: 130
            }
        );
        assert_eq!(
            decide_lease(Some(&held), "b", 130, 30),
            LeaseDecision::TakeOver {
                lease: Lease {
                    holder: "b".into(),
                    acquired_at: 130,
                    expires_at: 160
                },
                from: "a".into()
            }
        );
    }

    #[test]
    fn slot_names_fit_postgres_name_length() {
        let s = slot_name(u64::MAX, u32::MAX, u32::MAX);
        assert!(s.len() < 64, "{s}");
        assert_eq!(slot_name(0xab, 5, 16384), "pgtrickle_ab_5_16384");
    }

    /// A node's history: transactions with increasing commit positions,
    /// each becoming visible at some later step; drains at every step,
    /// some of them "crashing" (their result not recorded).
    fn history() -> impl Strategy<Value = (Vec<(u64, usize)>, Vec<bool>)> {
        (1usize..30).prop_flat_map(|n| {
            (
                proptest::collection::vec((0u64..3, 0usize..4), n),
                proptest::collection::vec(any::<bool>(), n + 8),
            )
                .prop_map(|(gaps, crashes)| {
                    let mut lsn = 100;
                    let txns = gaps
                        .into_iter()
                        .map(|(gap, delay)| {
                            lsn += 10 + gap * 10;
                            (lsn, delay)
                        })
                        .collect();
                    (txns, crashes)
                })
        })
    }

    proptest! {
        /// Every transaction is written exactly once, whatever the
        /// visibility delays and lost (crashed) drains, and never before a
        /// snapshot sees it.
        #[test]
        fn every_transaction_is_written_once_and_only_when_visible((txns, crashes) in history()) {
            // Transaction k has xid 1000 + k, commits at txns[k].0, and is
            // visible from step k + delay.
            let n = txns.len();
            let mut progress = Progress::default();
            let mut times_written = vec![0u32; n];
            for (step, crash) in crashes.iter().enumerate() {
                let decoded: Vec<Decoded> = txns
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k <= step)
                    .map(|(k, (lsn, _))| t(1000 + k as u64, *lsn))
                    .collect();
                let running: Vec<u64> = txns
                    .iter()
                    .enumerate()
                    .filter(|(k, (_, delay))| *k <= step && k + delay > step)
                    .map(|(k, _)| 1000 + k as u64)
                    .collect();
                let xmax = 1000 + (step.min(n - 1) as u64) + 1;
                let s = snap(running.iter().copied().min().unwrap_or(xmax), xmax, &running);
                let upto = decoded.iter().map(|d| d.commit_lsn + 1).max().unwrap_or(0);
                let d = progress.drain(&decoded, &s, upto);
                for x in &d.write {
                    prop_assert!(s.sees(*x), "wrote {x}, which the snapshot does not see");
                }
                let last = step + 1 == crashes.len();
                if *crash && !last {
                    continue;
                }
                for x in &d.write {
                    times_written[(*x - 1000) as usize] += 1;
                }
                prop_assert!(d.progress.settled >= progress.settled);
                progress = d.progress;
            }
            prop_assert!(times_written.iter().all(|w| *w == 1), "{times_written:?}");
        }
    }
}
