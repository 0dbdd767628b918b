//! Lease arithmetic for outbox consumers: a batch of messages is leased
//! to one worker until an expiry; the holder may extend it while it is
//! live; anyone may take it over once it has lapsed. Times are
//! microseconds since the epoch as the database reports them, and every
//! step is overflow-checked: a lease never wraps around and never
//! shortens.

use thiserror::Error;

/// The longest lease a poll or an extension may ask for, in seconds.
pub const MAX_LEASE_SECONDS: i64 = 86_400;

/// A batch's lease: who holds it and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The worker holding it.
    pub holder: String,
    /// When it was taken (microseconds).
    pub acquired_at: i64,
    /// When it lapses (microseconds); live while `now < expires_at`.
    pub expires_at: i64,
}

/// Why a lease cannot be taken or extended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeaseError {
    /// The requested length is not in 1..=[`MAX_LEASE_SECONDS`].
    #[error("a lease lasts 1 to {MAX_LEASE_SECONDS} seconds, not {0}")]
    BadLength(i64),
    /// The holder's name is empty.
    #[error("a lease needs a holder name")]
    NoHolder,
    /// Someone else holds the lease.
    #[error("the lease is held by {0}")]
    NotHolder(String),
    /// The lease lapsed: its batch may already be another worker's.
    #[error("the lease lapsed at {0}")]
    Lapsed(i64),
    /// `now` plus the length does not fit.
    #[error("the lease's expiry does not fit in a timestamp")]
    Overflow,
}

/// `seconds` in microseconds, after checking the length.
fn length(seconds: i64) -> Result<i64, LeaseError> {
    if !(1..=MAX_LEASE_SECONDS).contains(&seconds) {
        return Err(LeaseError::BadLength(seconds));
    }
    Ok(seconds * 1_000_000)
}

impl Lease {
    /// A new lease for `holder` from `now` for `seconds`.
    pub fn take(holder: &str, now: i64, seconds: i64) -> Result<Lease, LeaseError> {
        if holder.is_empty() {
            return Err(LeaseError::NoHolder);
        }
        let expires_at = now
            .checked_add(length(seconds)?)
            .ok_or(LeaseError::Overflow)?;
        Ok(Lease {
            holder: holder.to_string(),
            acquired_at: now,
            expires_at,
        })
    }

    /// Whether the lease still holds at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        now < self.expires_at
    }

    /// The lease extended by its holder at `now` to `now + seconds`, or
    /// kept as it is when that would shorten it (a clock that stepped
    /// back never takes time away from a holder).
    pub fn extend(&self, holder: &str, now: i64, seconds: i64) -> Result<Lease, LeaseError> {
        if holder != self.holder {
            return Err(LeaseError::NotHolder(self.holder.clone()));
        }
        if !self.is_live(now) {
            return Err(LeaseError::Lapsed(self.expires_at));
        }
        let until = now
            .checked_add(length(seconds)?)
            .ok_or(LeaseError::Overflow)?;
        Ok(Lease {
            expires_at: until.max(self.expires_at),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_lease_is_live_until_its_expiry_exactly() {
        let l = Lease::take("w1", 1_000, 2).unwrap();
        assert!(l.is_live(1_000));
        assert!(l.is_live(2_000_999));
        assert!(!l.is_live(2_001_000));
    }

    #[test]
    fn bad_lengths_holders_and_overflow_are_refused() {
        assert_eq!(Lease::take("w", 0, 0), Err(LeaseError::BadLength(0)));
        assert_eq!(
            Lease::take("w", 0, MAX_LEASE_SECONDS + 1),
            Err(LeaseError::BadLength(MAX_LEASE_SECONDS + 1))
        );
        assert_eq!(Lease::take("", 0, 5), Err(LeaseError::NoHolder));
        assert_eq!(
            Lease::take("w", i64::MAX - 10, 5),
            Err(LeaseError::Overflow)
        );
    }

    #[test]
    fn only_a_live_holder_extends() {
        let l = Lease::take("w1", 0, 10).unwrap();
        assert_eq!(
            l.extend("w2", 1, 10),
            Err(LeaseError::NotHolder("w1".into()))
        );
        assert_eq!(
            l.extend("w1", 10_000_000, 10),
            Err(LeaseError::Lapsed(10_000_000))
        );
        assert_eq!(
            l.extend("w1", 5_000_000, 10).unwrap().expires_at,
            15_000_000
        );
    }

    proptest! {
        #[test]
        fn an_extension_never_shortens_a_lease(
            now in -1_000_000_000_000i64..1_000_000_000_000,
            first in 1i64..=MAX_LEASE_SECONDS,
            back in 0i64..100_000_000,
            second in 1i64..=MAX_LEASE_SECONDS,
        ) {
            let l = Lease::take("w", now, first).unwrap();
            // The clock may have stepped back since the lease was taken.
            let later = now - back;
            let e = l.extend("w", later, second).unwrap();
            prop_assert!(e.expires_at >= l.expires_at);
            prop_assert_eq!(e.acquired_at, l.acquired_at);
            prop_assert_eq!(e.holder, l.holder);
        }
    }
}
