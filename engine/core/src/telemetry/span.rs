//! One refresh's span as the refresh leaves it for the exporter: plain
//! values in a fixed number of bytes, so that it fits a shared-memory slot
//! that a refresh fills under a lock without allocating and the exporter
//! copies out. Text is cut at a character boundary to its field's limit,
//! and only the first [`MAX_LINKS`] links are kept (the rest are counted).
//! Decoding checks every length, so a torn or foreign slot is refused,
//! never misread.

use thiserror::Error;

/// Bytes of one encoded span (one shared-memory slot).
pub const SLOT_BYTES: usize = 1024;
/// Links kept per span (to the traces of the changes it consumed).
pub const MAX_LINKS: usize = 8;
/// Phases recorded per span.
pub const MAX_PHASES: usize = 4;
/// Longest stream table name kept, in bytes.
pub const MAX_NAME: usize = 160;
/// Longest error message kept, in bytes.
pub const MAX_MESSAGE: usize = 240;

/// A step of a refresh, exported as a child span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    /// Locking, checking pending changes and choosing the statement.
    Plan,
    /// The DIFFERENTIAL statement: computes the delta and applies it.
    DeltaApply,
    /// The FULL recompute (asked for, or after a DIFFERENTIAL statement).
    FullRecompute,
    /// Recording the frontier and history, publishing, pruning buffers.
    Record,
}

impl PhaseKind {
    const ALL: [PhaseKind; 4] = [
        PhaseKind::Plan,
        PhaseKind::DeltaApply,
        PhaseKind::FullRecompute,
        PhaseKind::Record,
    ];

    /// The child span's name.
    pub const fn span_name(self) -> &'static str {
        match self {
            PhaseKind::Plan => "pg_trickle.refresh.plan",
            PhaseKind::DeltaApply => "pg_trickle.refresh.delta_apply",
            PhaseKind::FullRecompute => "pg_trickle.refresh.full_recompute",
            PhaseKind::Record => "pg_trickle.refresh.record",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> Option<PhaseKind> {
        PhaseKind::ALL.get(c as usize).copied()
    }
}

/// One phase: its own span id and its times (Unix nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    /// Which step.
    pub kind: PhaseKind,
    /// The child span's id.
    pub span_id: [u8; 8],
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
}

/// A link to the trace a consumed change was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The writer's trace.
    pub trace_id: [u8; 16],
    /// The writer's span.
    pub span_id: [u8; 8],
    /// The writer's trace flags.
    pub flags: u8,
}

/// A refresh span, ready to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// The trace: the first consumed change's, or a new one.
    pub trace_id: [u8; 16],
    /// The refresh span's id.
    pub span_id: [u8; 8],
    /// The writer's span this refresh continues, all zeros for a root span.
    pub parent_span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// The stream table, schema-qualified.
    pub stream_table: String,
    /// The mode that ran (`DIFFERENTIAL`, `FULL`), empty when it failed first.
    pub mode: String,
    /// Who asked (`manual`, `scheduler`, ...).
    pub initiator: String,
    /// Change rows consumed from the buffers (DIFFERENTIAL).
    pub changes_in: i64,
    /// Rows inserted into the stream table.
    pub rows_inserted: i64,
    /// Rows deleted from the stream table.
    pub rows_deleted: i64,
    /// The SQLSTATE of a failed refresh.
    pub sqlstate: Option<[u8; 5]>,
    /// The failed refresh's message.
    pub message: String,
    /// The steps, in order.
    pub phases: Vec<Phase>,
    /// The traces of consumed changes, first [`MAX_LINKS`].
    pub links: Vec<Link>,
    /// Links beyond [`MAX_LINKS`] that were left out.
    pub links_dropped: u32,
}

/// Why a slot does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpanDecodeError {
    /// The slot ends before a field.
    #[error("span slot ends at byte {0} inside a field")]
    Short(usize),
    /// A count or length over its limit.
    #[error("span slot field {0} is over its limit")]
    Limit(&'static str),
    /// Text that is not UTF-8.
    #[error("span slot field {0} is not UTF-8")]
    Utf8(&'static str),
    /// An unknown phase code.
    #[error("span slot holds unknown phase code {0}")]
    Phase(u8),
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Writer<'a> {
    out: &'a mut [u8; SLOT_BYTES],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.out[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
    fn text(&mut self, s: &str, max: usize) {
        let s = truncate(s, max);
        self.bytes(&(s.len() as u16).to_le_bytes());
        self.bytes(s.as_bytes());
    }
}

struct Reader<'a> {
    slot: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], SpanDecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.slot.len())
            .ok_or(SpanDecodeError::Short(self.at))?;
        let b = &self.slot[self.at..end];
        self.at = end;
        Ok(b)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SpanDecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, SpanDecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u64(&mut self) -> Result<u64, SpanDecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn text(&mut self, max: usize, what: &'static str) -> Result<String, SpanDecodeError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        if n > max {
            return Err(SpanDecodeError::Limit(what));
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| SpanDecodeError::Utf8(what))
    }
}

impl SpanRecord {
    /// The spans this record is exported as: the refresh and one child per phase.
    pub fn span_count(&self) -> u64 {
        1 + self.phases.len() as u64
    }

    /// Write the span into a slot. Text over its limit is cut and links
    /// beyond [`MAX_LINKS`] are counted in `links_dropped`; phases beyond
    /// [`MAX_PHASES`] are left out (a refresh has at most four).
    pub fn encode(&self, out: &mut [u8; SLOT_BYTES]) {
        let mut w = Writer { out, at: 0 };
        w.bytes(&self.trace_id);
        w.bytes(&self.span_id);
        w.bytes(&self.parent_span_id);
        w.bytes(&[self.flags]);
        w.bytes(&self.start_ns.to_le_bytes());
        w.bytes(&self.end_ns.to_le_bytes());
        w.text(&self.stream_table, MAX_NAME);
        w.text(&self.mode, 16);
        w.text(&self.initiator, 16);
        w.bytes(&self.changes_in.to_le_bytes());
        w.bytes(&self.rows_inserted.to_le_bytes());
        w.bytes(&self.rows_deleted.to_le_bytes());
        match self.sqlstate {
            Some(s) => {
                w.bytes(&[1]);
                w.bytes(&s);
            }
            None => w.bytes(&[0; 6]),
        }
        w.text(&self.message, MAX_MESSAGE);
        let phases = &self.phases[..self.phases.len().min(MAX_PHASES)];
        w.bytes(&[phases.len() as u8]);
        for p in phases {
            w.bytes(&[p.kind.code()]);
            w.bytes(&p.span_id);
            w.bytes(&p.start_ns.to_le_bytes());
            w.bytes(&p.end_ns.to_le_bytes());
        }
        let links = &self.links[..self.links.len().min(MAX_LINKS)];
        w.bytes(&[links.len() as u8]);
        for l in links {
            w.bytes(&l.trace_id);
            w.bytes(&l.span_id);
            w.bytes(&[l.flags]);
        }
        let dropped = self
            .links_dropped
            .saturating_add((self.links.len() - links.len()) as u32);
        w.bytes(&dropped.to_le_bytes());
    }

    /// Read a span back from a slot.
    pub fn decode(slot: &[u8]) -> Result<SpanRecord, SpanDecodeError> {
        let mut r = Reader { slot, at: 0 };
        let trace_id = r.array()?;
        let span_id = r.array()?;
        let parent_span_id = r.array()?;
        let flags = r.u8()?;
        let start_ns = r.u64()?;
        let end_ns = r.u64()?;
        let stream_table = r.text(MAX_NAME, "stream_table")?;
        let mode = r.text(16, "mode")?;
        let initiator = r.text(16, "initiator")?;
        let changes_in = r.u64()? as i64;
        let rows_inserted = r.u64()? as i64;
        let rows_deleted = r.u64()? as i64;
        let has_state = r.u8()?;
        let state: [u8; 5] = r.array()?;
        let sqlstate = (has_state == 1).then_some(state);
        let message = r.text(MAX_MESSAGE, "message")?;
        let n = r.u8()? as usize;
        if n > MAX_PHASES {
            return Err(SpanDecodeError::Limit("phases"));
        }
        let mut phases = Vec::with_capacity(n);
        for _ in 0..n {
            let code = r.u8()?;
            let kind = PhaseKind::from_code(code).ok_or(SpanDecodeError::Phase(code))?;
            phases.push(Phase {
                kind,
                span_id: r.array()?,
                start_ns: r.u64()?,
                end_ns: r.u64()?,
            });
        }
        let n = r.u8()? as usize;
        if n > MAX_LINKS {
            return Err(SpanDecodeError::Limit("links"));
        }
        let mut links = Vec::with_capacity(n);
        for _ in 0..n {
            links.push(Link {
                trace_id: r.array()?,
                span_id: r.array()?,
                flags: r.u8()?,
            });
        }
        let links_dropped = u32::from_le_bytes(r.array()?);
        Ok(SpanRecord {
            trace_id,
            span_id,
            parent_span_id,
            flags,
            start_ns,
            end_ns,
            stream_table,
            mode,
            initiator,
            changes_in,
            rows_inserted,
            rows_deleted,
            sqlstate,
            message,
            phases,
            links,
            links_dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn phase() -> impl Strategy<Value = Phase> {
        (0u8..4, any::<[u8; 8]>(), any::<u64>(), any::<u64>()).prop_map(|(k, id, s, e)| Phase {
            kind: PhaseKind::from_code(k).unwrap(),
            span_id: id,
            start_ns: s,
            end_ns: e,
        })
    }

    fn link() -> impl Strategy<Value = Link> {
        (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>()).prop_map(|(t, s, f)| Link {
            trace_id: t,
            span_id: s,
            flags: f,
        })
    }

    prop_compose! {
        fn record()(
            ids in (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<[u8; 8]>(), any::<u8>()),
            times in (any::<u64>(), any::<u64>()),
            stream_table in ".{0,200}",
            mode in "[A-Z]{0,20}",
            initiator in "[a-z]{0,20}",
            rows in (any::<i64>(), any::<i64>(), any::<i64>()),
            sqlstate in proptest::option::of("[0-9A-Z]{5}"),
            message in ".{0,300}",
            phases in proptest::collection::vec(phase(), 0..=MAX_PHASES),
            links in proptest::collection::vec(link(), 0..20),
            links_dropped in 0u32..1000,
        ) -> SpanRecord {
            SpanRecord {
                trace_id: ids.0, span_id: ids.1, parent_span_id: ids.2, flags: ids.3,
                start_ns: times.0, end_ns: times.1,
                stream_table, mode, initiator,
                changes_in: rows.0, rows_inserted: rows.1, rows_deleted: rows.2,
                sqlstate: sqlstate.map(|s| s.as_bytes().try_into().unwrap()),
                message, phases, links, links_dropped,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every span fits a slot and comes back as written, with text cut
        /// at its limit and links over the limit counted.
        #[test]
        fn a_span_round_trips_through_a_slot(rec in record()) {
            let mut slot = [0u8; SLOT_BYTES];
            rec.encode(&mut slot);
            let back = SpanRecord::decode(&slot).unwrap();
            let mut expected = rec.clone();
            expected.stream_table = truncate(&rec.stream_table, MAX_NAME).to_string();
            expected.mode = truncate(&rec.mode, 16).to_string();
            expected.initiator = truncate(&rec.initiator, 16).to_string();
            expected.message = truncate(&rec.message, MAX_MESSAGE).to_string();
            expected.links.truncate(MAX_LINKS);
            expected.links_dropped += (rec.links.len() - expected.links.len()) as u32;
            prop_assert_eq!(back, expected);
        }

        /// Whatever bytes a slot holds, decoding answers (a span or a
        /// refusal) and never panics.
        #[test]
        fn any_slot_decodes_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..SLOT_BYTES)) {
            let _ = SpanRecord::decode(&bytes);
        }
    }

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("€€", 4), "€");
    }

    #[test]
    fn an_empty_slot_decodes_to_an_empty_root_span_and_a_short_one_is_refused() {
        let slot = [0u8; SLOT_BYTES];
        let r = SpanRecord::decode(&slot).unwrap();
        assert_eq!(r.parent_span_id, [0; 8]);
        assert!(r.phases.is_empty() && r.links.is_empty() && r.sqlstate.is_none());
        assert_eq!(
            SpanRecord::decode(&slot[..20]),
            Err(SpanDecodeError::Short(16))
        );
        let mut bad = [0u8; SLOT_BYTES];
        bad[49] = 0xff; // the stream table name's length, after ids, flags and times
        bad[50] = 0x7f;
        assert_eq!(
            SpanRecord::decode(&bad),
            Err(SpanDecodeError::Limit("stream_table"))
        );
    }
}
