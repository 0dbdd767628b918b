//! The W3C Trace Context `traceparent` header
//! (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), parsed
//! strictly: a value that does not parse is refused with what is wrong,
//! never half-used, so a typo in a session setting cannot attach a
//! refresh to some other trace.

use std::fmt;

use thiserror::Error;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace the writing transaction belongs to.
    pub trace_id: [u8; 16],
    /// The span (in the application) the write happened in.
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

/// Why a `traceparent` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TraceParentError {
    /// Not four dash-separated fields of the right lengths.
    #[error("a traceparent is 00-<32 hex digits>-<16 hex digits>-<2 hex digits>, not {0:?}")]
    Shape(String),
    /// A field holds something other than lowercase hex digits.
    #[error("the {0} of a traceparent must be lowercase hex digits")]
    NotHex(&'static str),
    /// Version `ff`, which the standard forbids.
    #[error("traceparent version ff is invalid")]
    Version,
    /// Version 00 with something after the flags.
    #[error("a version 00 traceparent ends after its flags")]
    Trailing,
    /// An all-zero trace or parent id.
    #[error("the {0} of a traceparent may not be all zeros")]
    Zero(&'static str),
}

fn hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], TraceParentError> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(TraceParentError::NotHex(what));
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| TraceParentError::NotHex(what))?;
    }
    Ok(out)
}

impl TraceParent {
    /// Parse a `traceparent` value. Versions above 00 are read as 00, as
    /// the standard asks, and may carry more fields after the flags.
    pub fn parse(text: &str) -> Result<TraceParent, TraceParentError> {
        let shape = || TraceParentError::Shape(text.chars().take(80).collect());
        let mut parts = text.splitn(5, '-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        let rest = parts.next();
        if version.len() != 2 || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
            return Err(shape());
        }
        let [v] = hex::<1>(version, "version")?;
        if v == 0xff {
            return Err(TraceParentError::Version);
        }
        if v == 0 && rest.is_some() {
            return Err(TraceParentError::Trailing);
        }
        let trace_id = hex::<16>(trace, "trace id")?;
        let parent_id = hex::<8>(parent, "parent id")?;
        let [flags] = hex::<1>(flags, "flags")?;
        if trace_id == [0; 16] {
            return Err(TraceParentError::Zero("trace id"));
        }
        if parent_id == [0; 8] {
            return Err(TraceParentError::Zero("parent id"));
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Whether the writer's trace is sampled (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        self.trace_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for TraceParent {
    /// The version 00 form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-", self.trace_id_hex())?;
        for b in self.parent_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_standards_example_parses_and_prints_back() {
        let t = TraceParent::parse(GOOD).unwrap();
        assert!(t.sampled());
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.to_string(), GOOD);
    }

    #[test]
    fn bad_values_are_refused_by_what_is_wrong() {
        use TraceParentError::*;
        let p = |s: &str| TraceParent::parse(s).unwrap_err();
        assert!(matches!(p(""), Shape(_)));
        assert!(matches!(p("00-4bf92f35-00f067aa0ba902b7-01"), Shape(_)));
        assert_eq!(p(&GOOD.to_uppercase()), NotHex("trace id"));
        assert_eq!(p(&GOOD.replace("4bf9", "4BF9")), NotHex("trace id"));
        assert_eq!(p(&GOOD.replace("00f0", "00g0")), NotHex("parent id"));
        assert_eq!(p(&GOOD.replacen("00-", "ff-", 1)), Version);
        assert_eq!(p(&format!("{GOOD}-extra")), Trailing);
        assert_eq!(
            p("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Zero("trace id")
        );
        assert_eq!(
            p("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Zero("parent id")
        );
    }

    #[test]
    fn a_later_version_is_read_as_version_00_with_its_extra_fields_ignored() {
        let t = TraceParent::parse(&format!(
            "{}-what-comes-next",
            GOOD.replacen("00-", "01-", 1)
        ))
        .unwrap();
        assert_eq!(t.to_string(), GOOD);
    }

    proptest! {
        /// Every valid value prints back to itself.
        #[test]
        fn valid_values_round_trip(trace in any::<[u8; 16]>(), parent in any::<[u8; 8]>(), flags in any::<u8>()) {
            prop_assume!(trace != [0; 16] && parent != [0; 8]);
            let t = TraceParent { trace_id: trace, parent_id: parent, flags };
            prop_assert_eq!(TraceParent::parse(&t.to_string()), Ok(t));
        }

        /// Arbitrary text never panics, and whatever parses prints back
        /// to the same version 00 value it was read as.
        #[test]
        fn any_text_is_parsed_or_refused(s in ".{0,70}") {
            if let Ok(t) = TraceParent::parse(&s) {
                prop_assert_eq!(TraceParent::parse(&t.to_string()), Ok(t));
            }
        }
    }
}
