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
}
