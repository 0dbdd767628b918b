//! SQLSTATE classification: which failures the scheduler retries.
//!
//! Decisions use the SQLSTATE code and its class only, never message text,
//! so they hold under any `lc_messages`.

/// What the scheduler does after a refresh fails with a given SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Transient: try again on the next tick.
    Retry,
    /// The stream table or its sources need attention: record and keep going.
    Permanent,
}

/// Classify a five-character SQLSTATE.
pub fn classify(sqlstate: &str) -> RetryClass {
    let class = sqlstate.get(0..2).unwrap_or("");
    match (class, sqlstate) {
        // serialization_failure, deadlock_detected
        (_, "40001") | (_, "40P01") => RetryClass::Retry,
        // lock_not_available, query_canceled
        (_, "55P03") | (_, "57014") => RetryClass::Retry,
        // insufficient resources, connection exceptions, operator intervention
        ("53", _) | ("08", _) | ("57", _) => RetryClass::Retry,
        _ => RetryClass::Permanent,
    }
}

/// Whether a DIFFERENTIAL refresh that raised `sqlstate` is recomputed
/// FULL instead of failing: a data exception (class 22: a division by
/// zero, a failed cast, ...) or a cardinality violation (class 21: a
/// scalar subquery with two rows) can come from values a delta evaluates
/// that the query itself never does (rows a subquery predicate filters
/// out, an old row joined with a new one), so only FULL can tell whether
/// the query fails; if it does, FULL raises the query's own error.
pub fn full_may_succeed(sqlstate: &str) -> bool {
    matches!(sqlstate.get(0..2), Some("22") | Some("21"))
}

/// Whether a FULL refresh that AUTO's adaptive choice made, failing with
/// `sqlstate`, should give way to applying the changes: a recompute can
/// run out of memory or disk (class 53) or past a program limit (54)
/// where the smaller differential statement does not, and a data error
/// (22, 21) can come from rows the changes never touch. Anything else
/// (a cancellation, a lock or serialization failure) is raised as it is.
pub fn differential_may_succeed_after_full(sqlstate: &str) -> bool {
    matches!(
        sqlstate.get(0..2),
        Some("53") | Some("54") | Some("22") | Some("21")
    )
}

/// Consecutive transient failures retried on the next scheduler tick before
/// a stream table waits for its schedule like after a permanent failure.
pub const MAX_QUICK_RETRIES: u32 = 3;

/// What the scheduler does after a failed refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Retry on the next tick instead of waiting for the schedule.
    pub retry_next_tick: bool,
    /// The decision in words, recorded in the refresh history.
    pub reason: String,
}

/// Decide from the SQLSTATE alone, given how many transient failures in a
/// row came before this one.
pub fn decide(sqlstate: &str, previous_transient: u32) -> Decision {
    let class = sqlstate.get(0..2).unwrap_or("??");
    match classify(sqlstate) {
        RetryClass::Retry if previous_transient < MAX_QUICK_RETRIES => Decision {
            retry_next_tick: true,
            reason: format!(
                "transient failure (SQLSTATE {sqlstate}, class {class}): retrying on the next tick, attempt {} of {MAX_QUICK_RETRIES}",
                previous_transient + 1
            ),
        },
        RetryClass::Retry => Decision {
            retry_next_tick: false,
            reason: format!(
                "transient failure (SQLSTATE {sqlstate}, class {class}) persisted through {MAX_QUICK_RETRIES} retries: next attempt when the schedule is due"
            ),
        },
        RetryClass::Permanent => Decision {
            retry_next_tick: false,
            reason: format!(
                "permanent failure (SQLSTATE {sqlstate}, class {class}): next attempt when the schedule is due"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify("40001"), RetryClass::Retry);
        assert_eq!(classify("40P01"), RetryClass::Retry);
        assert_eq!(classify("55P03"), RetryClass::Retry);
        assert_eq!(classify("53100"), RetryClass::Retry);
        assert_eq!(classify("42P01"), RetryClass::Permanent);
        assert_eq!(classify("0A000"), RetryClass::Permanent);
        assert_eq!(classify(""), RetryClass::Permanent);
    }

    #[test]
    fn transient_failures_retry_quickly_a_bounded_number_of_times() {
        for n in 0..MAX_QUICK_RETRIES {
            let d = decide("57014", n);
            assert!(d.retry_next_tick, "{d:?}");
            assert!(d.reason.contains(&format!("attempt {} of 3", n + 1)));
        }
        let d = decide("57014", MAX_QUICK_RETRIES);
        assert!(!d.retry_next_tick && d.reason.contains("persisted"));
        let d = decide("42P01", 0);
        assert!(!d.retry_next_tick && d.reason.starts_with("permanent"));
    }

    #[test]
    fn data_errors_of_a_delta_are_left_to_full() {
        assert!(full_may_succeed("22012"));
        assert!(full_may_succeed("22P02"));
        assert!(full_may_succeed("21000"));
        for other in ["40001", "57014", "42501", "53100", "XX000", "23505", ""] {
            assert!(!full_may_succeed(other), "{other}");
        }
    }
}
