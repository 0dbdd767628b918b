//! Backpressure with hysteresis: when a source's backlog of unconsumed
//! changes grows past a high watermark, backpressure engages; it releases
//! only once the backlog is below a lower watermark, so the state cannot
//! flap while the backlog hovers between the two.

/// How far behind the readers of one source are.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lag {
    /// Unconsumed change rows.
    pub rows: i64,
    /// Bytes those rows take in the change buffer.
    pub bytes: i64,
    /// Age of the oldest unconsumed change, in seconds.
    pub age_seconds: f64,
}

/// High and low watermarks for one signal; a high of 0 disables the signal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Watermark {
    /// Engage at or above this.
    pub high: f64,
    /// Release below this (at most `high`).
    pub low: f64,
}

impl Watermark {
    fn enabled(&self) -> bool {
        self.high > 0.0
    }
}

/// The watermarks of every signal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Watermarks {
    /// On pending change rows.
    pub rows: Watermark,
    /// On pending bytes.
    pub bytes: Watermark,
    /// On the age of the oldest pending change, in seconds.
    pub age_seconds: Watermark,
}

/// Whether backpressure is engaged for a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Writes proceed normally.
    Released,
    /// The configured action applies to writes.
    Engaged,
}

impl State {
    /// Lower-case name for status output.
    pub fn name(self) -> &'static str {
        match self {
            State::Released => "released",
            State::Engaged => "engaged",
        }
    }

    /// Parse a name written by [`State::name`].
    pub fn parse(s: &str) -> State {
        if s == "engaged" {
            State::Engaged
        } else {
            State::Released
        }
    }
}

/// What engaged backpressure does to a write to the lagging source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The writing statement fails with SQLSTATE 53400.
    RejectWrites,
    /// The write proceeds with a WARNING.
    WarnOnly,
}

impl Action {
    /// Parse a setting value.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "reject" => Some(Action::RejectWrites),
            "warn" => Some(Action::WarnOnly),
            _ => None,
        }
    }

    /// The setting value.
    pub fn name(self) -> &'static str {
        match self {
            Action::RejectWrites => "reject",
            Action::WarnOnly => "warn",
        }
    }
}

fn signals(lag: &Lag, w: &Watermarks) -> [(&'static str, f64, Watermark); 3] {
    [
        ("pending rows", lag.rows as f64, w.rows),
        ("pending bytes", lag.bytes as f64, w.bytes),
        (
            "oldest pending change age (s)",
            lag.age_seconds,
            w.age_seconds,
        ),
    ]
}

/// The next state from `state` given the measured `lag`, and the reason
/// when it changes. Engages when any enabled signal reaches its high
/// watermark; releases only when every enabled signal is below its low one.
pub fn next(state: State, lag: &Lag, w: &Watermarks) -> (State, Option<String>) {
    let sig = signals(lag, w);
    match state {
        State::Released => {
            let over: Vec<String> = sig
                .iter()
                .filter(|(_, v, m)| m.enabled() && *v >= m.high)
                .map(|(n, v, m)| format!("{n} {v} >= high watermark {}", m.high))
                .collect();
            if over.is_empty() {
                (State::Released, None)
            } else {
                (State::Engaged, Some(over.join("; ")))
            }
        }
        State::Engaged => {
            let enabled = sig.iter().any(|(_, _, m)| m.enabled());
            let all_low = sig
                .iter()
                .filter(|(_, _, m)| m.enabled())
                .all(|(_, v, m)| *v < m.low.min(m.high));
            if !enabled || all_low {
                let why = if enabled {
                    "every signal below its low watermark".to_string()
                } else {
                    "backpressure thresholds disabled".to_string()
                };
                (State::Released, Some(why))
            } else {
                (State::Engaged, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(high: f64, low: f64) -> Watermarks {
        Watermarks {
            rows: Watermark { high, low },
            ..Watermarks::default()
        }
    }

    fn lag(r: i64) -> Lag {
        Lag {
            rows: r,
            ..Lag::default()
        }
    }

    #[test]
    fn engages_at_high_and_releases_below_low() {
        let w = rows(100.0, 20.0);
        assert_eq!(next(State::Released, &lag(99), &w).0, State::Released);
        let (s, why) = next(State::Released, &lag(100), &w);
        assert_eq!(s, State::Engaged);
        assert!(why
            .unwrap()
            .contains("pending rows 100 >= high watermark 100"));
        assert_eq!(next(State::Engaged, &lag(50), &w), (State::Engaged, None));
        assert_eq!(next(State::Engaged, &lag(20), &w).0, State::Engaged);
        assert_eq!(next(State::Engaged, &lag(19), &w).0, State::Released);
    }

    #[test]
    fn disabled_signals_never_engage_and_release_engaged_state() {
        let w = Watermarks::default();
        assert_eq!(next(State::Released, &lag(1 << 40), &w).0, State::Released);
        assert_eq!(next(State::Engaged, &lag(1 << 40), &w).0, State::Released);
    }

    #[test]
    fn any_signal_engages_and_all_must_release() {
        let w = Watermarks {
            rows: Watermark {
                high: 100.0,
                low: 10.0,
            },
            bytes: Watermark {
                high: 1000.0,
                low: 100.0,
            },
            age_seconds: Watermark::default(),
        };
        let l = Lag {
            rows: 1,
            bytes: 5000,
            age_seconds: 0.0,
        };
        assert_eq!(next(State::Released, &l, &w).0, State::Engaged);
        let l = Lag {
            rows: 1,
            bytes: 500,
            age_seconds: 0.0,
        };
        assert_eq!(next(State::Engaged, &l, &w).0, State::Engaged);
        let l = Lag {
            rows: 1,
            bytes: 50,
            age_seconds: 0.0,
        };
        assert_eq!(next(State::Engaged, &l, &w).0, State::Released);
    }

    proptest! {
        /// Between the watermarks the state never changes, whatever it was.
        #[test]
        fn no_flapping_between_watermarks(low in 1i64..1000, gap in 1i64..1000, seq in proptest::collection::vec(0i64..1000, 1..50)) {
            let high = low + gap;
            let w = rows(high as f64, low as f64);
            for start in [State::Released, State::Engaged] {
                let mut s = start;
                for x in &seq {
                    let v = low + x % gap; // in [low, high)
                    let (n, why) = next(s, &lag(v), &w);
                    prop_assert_eq!(n, s);
                    prop_assert!(why.is_none());
                    s = n;
                }
            }
        }
    }
}
