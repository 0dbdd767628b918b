//! Whether a refresh's span is exported: a deterministic decision by trace
//! id (OpenTelemetry's trace-id-ratio rule), so that every node and every
//! retry decides alike for one trace, and a writer's sampled flag is
//! followed when the refresh continues its trace.

use super::traceparent::TraceParent;

/// The sampling rule, from `pg_trickle.otel_sampling_ratio`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Fraction of traces kept, 0.0 to 1.0.
    pub ratio: f64,
}

impl Sampler {
    /// Keep a trace of id `trace_id`: its lower 8 bytes, as a number, fall
    /// below `ratio` of the range. 0 keeps nothing, 1 keeps everything.
    pub fn keeps(&self, trace_id: &[u8; 16]) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        if self.ratio.is_nan() || self.ratio <= 0.0 {
            return false;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        let x = u64::from_be_bytes(low);
        // ratio * 2^64, computed without overflow.
        let bound = (self.ratio * (u64::MAX as f64)) as u64;
        x < bound
    }

    /// The decision for a refresh that continues `parent` (the trace of a
    /// change it consumed), or starts its own trace `own` when it has none:
    /// a parent's sampled flag is followed, so that a trace the
    /// application kept is never cut at the database.
    pub fn decide(&self, parent: Option<&TraceParent>, own: &[u8; 16]) -> bool {
        match parent {
            Some(p) => p.sampled(),
            None => self.keeps(own),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_ends_of_the_range_keep_nothing_and_everything() {
        let id = [0xab; 16];
        assert!(!Sampler { ratio: 0.0 }.keeps(&id));
        assert!(!Sampler { ratio: f64::NAN }.keeps(&id));
        assert!(Sampler { ratio: 1.0 }.keeps(&id));
        assert!(Sampler { ratio: 7.0 }.keeps(&id));
    }

    #[test]
    fn a_parents_flag_is_followed() {
        let sampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let unsampled = TraceParent {
            flags: 0,
            ..sampled
        };
        let s = Sampler { ratio: 0.0 };
        assert!(s.decide(Some(&sampled), &[1; 16]));
        assert!(!Sampler { ratio: 1.0 }.decide(Some(&unsampled), &[1; 16]));
        assert!(!s.decide(None, &[1; 16]));
    }

    proptest! {
        /// A trace kept at one ratio is kept at every higher ratio.
        #[test]
        fn keeping_is_monotonic_in_the_ratio(id in any::<[u8; 16]>(), a in 0.0f64..1.0, b in 0.0f64..1.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (low, high) = (Sampler { ratio: lo }, Sampler { ratio: hi });
            if low.keeps(&id) {
                prop_assert!(high.keeps(&id), "kept at {} but not at {}", lo, hi);
            }
        }

        /// Over many ids, the share kept is near the ratio.
        #[test]
        fn the_share_kept_follows_the_ratio(seed in any::<u64>(), ratio in 0.05f64..0.95) {
            let s = Sampler { ratio };
            let mut x = seed | 1;
            let n = 4000;
            let mut kept = 0;
            for _ in 0..n {
                // xorshift64: a seeded spread of ids.
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&x.to_be_bytes());
                if s.keeps(&id) { kept += 1; }
            }
            let share = kept as f64 / n as f64;
            prop_assert!((share - ratio).abs() < 0.05, "kept {} at ratio {}", share, ratio);
        }
    }
}
