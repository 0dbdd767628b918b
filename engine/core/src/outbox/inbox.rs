//! The inbox's rules as pure code: which event ids are acceptable, how a
//! failed attempt moves an event toward the dead-letter state, and, when
//! an inbox keeps order per aggregate key, which pending events may be
//! worked on now. The SQL side (`pgtrickle.create_inbox`,
//! `inbox_ingest`, ...) follows these rules; the property tests here state
//! them.

use thiserror::Error;

/// The longest event id, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 512;

/// Why an event id is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventIdError {
    /// No id at all.
    #[error("an inbox event needs an event id, not NULL")]
    Null,
    /// An empty or all-whitespace id.
    #[error("an inbox event id may not be empty or only whitespace")]
    Empty,
    /// Longer than [`MAX_EVENT_ID_BYTES`].
    #[error("an inbox event id is at most {MAX_EVENT_ID_BYTES} bytes, not {0}")]
    TooLong(usize),
}

impl EventIdError {
    /// The SQLSTATE to raise it with.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            EventIdError::Null => "22004",
            EventIdError::Empty | EventIdError::TooLong(_) => "22023",
        }
    }
}

/// The id to deduplicate on, exactly as given (ids are compared byte for
/// byte: `A1` and `a1` are two events), or why it is refused.
pub fn validate_event_id(id: Option<&str>) -> Result<&str, EventIdError> {
    let id = id.ok_or(EventIdError::Null)?;
    if id.trim().is_empty() {
        return Err(EventIdError::Empty);
    }
    if id.len() > MAX_EVENT_ID_BYTES {
        return Err(EventIdError::TooLong(id.len()));
    }
    Ok(id)
}

/// Where an inbox event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting to be processed (again).
    Pending,
    /// Processed.
    Done,
    /// Failed `max_attempts` times: kept for an operator, never retried.
    Dead,
}

impl Status {
    /// How it is stored.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Done => "done",
            Status::Dead => "dead",
        }
    }
}

/// After one more failed attempt (the event has failed `attempts` times
/// before): the new count and status. An event fails at most
/// `max_attempts` times; the last failure makes it dead.
pub fn after_failure(attempts: u32, max_attempts: u32) -> (u32, Status) {
    let attempts = attempts.saturating_add(1);
    let status = if attempts >= max_attempts.max(1) {
        Status::Dead
    } else {
        Status::Pending
    };
    (attempts, status)
}

/// With order kept per aggregate key: the pending events (by arrival
/// sequence) that may be processed now. An event waits while an earlier
/// event of its key is pending; an event without a key never waits; a dead
/// event does not hold its key (it is the operator's now), and neither does
/// a done one. `events` is (sequence, key, status) in any order.
pub fn ready(events: &[(u64, Option<&str>, Status)]) -> Vec<u64> {
    let mut sorted: Vec<&(u64, Option<&str>, Status)> = events.iter().collect();
    sorted.sort_by_key(|e| e.0);
    let mut blocked = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (seq, key, status) in sorted {
        if *status != Status::Pending {
            continue;
        }
        match key {
            None => out.push(*seq),
            Some(k) => {
                if blocked.insert(*k) {
                    out.push(*seq);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_refused_by_what_is_wrong_and_kept_exactly() {
        assert_eq!(validate_event_id(None), Err(EventIdError::Null));
        assert_eq!(validate_event_id(Some("")), Err(EventIdError::Empty));
        assert_eq!(validate_event_id(Some(" \t")), Err(EventIdError::Empty));
        let long = "x".repeat(MAX_EVENT_ID_BYTES + 1);
        assert_eq!(
            validate_event_id(Some(&long)),
            Err(EventIdError::TooLong(MAX_EVENT_ID_BYTES + 1))
        );
        assert_eq!(validate_event_id(Some(" a ")), Ok(" a "));
        assert_eq!(EventIdError::Null.sqlstate(), "22004");
    }

    #[test]
    fn the_last_allowed_failure_makes_an_event_dead() {
        assert_eq!(after_failure(0, 3), (1, Status::Pending));
        assert_eq!(after_failure(1, 3), (2, Status::Pending));
        assert_eq!(after_failure(2, 3), (3, Status::Dead));
        assert_eq!(after_failure(0, 0), (1, Status::Dead));
    }

    #[test]
    fn an_earlier_pending_event_holds_its_key() {
        use Status::*;
        let e = [
            (1, Some("a"), Pending),
            (2, Some("a"), Pending),
            (3, Some("b"), Dead),
            (4, Some("b"), Pending),
            (5, None, Pending),
            (6, None, Pending),
            (7, Some("c"), Done),
            (8, Some("c"), Pending),
        ];
        assert_eq!(ready(&e), vec![1, 4, 5, 6, 8]);
    }

    proptest! {
        /// Ingesting a stream with duplicates keeps each id's first event
        /// and counts the rest, whatever the order.
        #[test]
        fn duplicates_are_counted_and_ignored(ids in proptest::collection::vec(0u8..10, 0..60)) {
            let mut kept: Vec<u8> = Vec::new();
            let mut duplicates = 0;
            for id in &ids {
                if kept.contains(id) { duplicates += 1 } else { kept.push(*id) }
            }
            let distinct: std::collections::BTreeSet<u8> = ids.iter().copied().collect();
            prop_assert_eq!(kept.len(), distinct.len());
            prop_assert_eq!(duplicates, ids.len() - distinct.len());
        }

        /// An event is dead exactly after `max` failures, and never before.
        #[test]
        fn failures_count_up_to_dead(max in 1u32..20, failures in 0u32..40) {
            let mut attempts = 0;
            let mut status = Status::Pending;
            for _ in 0..failures {
                if status == Status::Dead { break; }
                (attempts, status) = after_failure(attempts, max);
            }
            prop_assert_eq!(status == Status::Dead, failures >= max);
            prop_assert_eq!(attempts, failures.min(max));
        }

        /// Order per key: at most one ready event per key, it is that key's
        /// earliest pending one, and every pending keyless event is ready.
        #[test]
        fn ready_events_are_each_keys_earliest_pending(
            events in proptest::collection::vec((0u8..4, 0u8..3, any::<bool>()), 0..40)
        ) {
            let keys = ["a", "b", "c"];
            let evs: Vec<(u64, Option<&str>, Status)> = events
                .iter()
                .enumerate()
                .map(|(i, (k, s, keyed))| {
                    let status = [Status::Pending, Status::Done, Status::Dead][(*s as usize) % 3];
                    (i as u64, keyed.then(|| keys[(*k as usize) % 3]), status)
                })
                .collect();
            let r = ready(&evs);
            for (seq, key, status) in &evs {
                let earliest = evs.iter().filter(|e| e.1 == *key && e.2 == Status::Pending).map(|e| e.0).min();
                let expected = *status == Status::Pending && (key.is_none() || earliest == Some(*seq));
                prop_assert_eq!(r.contains(seq), expected, "event {}", seq);
            }
        }
    }
}
