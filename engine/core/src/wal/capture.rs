//! What capture from the WAL needs besides the decoder: the 64-bit form of
//! a decoded 32-bit transaction id, MVCC visibility of a transaction in a
//! `pg_snapshot`, LSN text, and the change-buffer row a decoded change
//! becomes, as a composite literal PostgreSQL reads with the buffer's own
//! row type (every value goes through its type's input function, exactly
//! as pgoutput printed it with the output function).

use super::{Change, ChangeKind, Relation};

/// The full (epoch-extended) transaction id of `xid`, a transaction that
/// was assigned its id before `next_full`, the next full transaction id to
/// be assigned (`ReadNextFullTransactionId()`; not a snapshot's xmax, which
/// a transaction whose commit is already in the WAL can still be at or
/// above). None when `xid` cannot be such a transaction: it is not within
/// the 2^31 ids before `next_full`, which PostgreSQL's wraparound
/// protection keeps every live transaction in.
pub fn widen_xid(xid: u32, next_full: u64) -> Option<u64> {
    let back = u64::from((next_full as u32).wrapping_sub(xid));
    ((1..=1 << 31).contains(&back) && back <= next_full).then(|| next_full - back)
}

/// A `pg_snapshot` (`xmin:xmax:xip,...`): which transactions it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every transaction below it had finished.
    pub xmin: u64,
    /// No transaction from it on had finished.
    pub xmax: u64,
    /// Transactions in between still running when it was taken.
    pub running: Vec<u64>,
}

impl Snapshot {
    /// Parse `pg_snapshot` text; None when it is not one.
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = parts.next()?;
        let running = if xip.is_empty() {
            Vec::new()
        } else {
            xip.split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?
        };
        (xmin <= xmax).then_some(Snapshot {
            xmin,
            xmax,
            running,
        })
    }

    /// Whether a *committed* transaction `xid` is visible in the snapshot,
    /// as `pg_visible_in_snapshot` answers.
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.running.contains(&xid))
    }

    /// Whether this snapshot sees every transaction `older` sees (it was
    /// taken later, or is the same). Conservative: an id below `older`'s
    /// xmax that this snapshot does not see, and that `older` did not
    /// list as running, counts as seen by `older`.
    pub fn includes(&self, older: &Snapshot) -> bool {
        let older_sees = |x: u64| older.sees(x);
        if self.running.iter().any(|x| older_sees(*x)) {
            return false;
        }
        if self.xmax < older.xmax {
            return (self.xmax..older.xmax).all(|x| !older_sees(x));
        }
        true
    }
}

/// Parse an LSN as PostgreSQL prints it (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

/// An LSN as PostgreSQL prints it.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// A pgoutput timestamp (microseconds since 2000-01-01 UTC) as
/// `timestamptz` input text.
pub fn timestamp_text(micros_since_2000: i64) -> String {
    const SECONDS_1970_TO_2000: i64 = 946_684_800;
    let micros = micros_since_2000.rem_euclid(1_000_000);
    let seconds = micros_since_2000.div_euclid(1_000_000) + SECONDS_1970_TO_2000;
    let days = seconds.div_euclid(86_400);
    let in_day = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}+00",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Why a decoded change cannot become a buffer row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The buffer has a column the relation's description lacks.
    #[error("relation {relation}: column {column} of the change buffer is not in the decoded row")]
    MissingColumn {
        /// The relation as described.
        relation: String,
        /// The column.
        column: String,
    },
    /// A change kind that has no buffer row (truncate).
    #[error("a {0:?} has no change-buffer row")]
    NoRow(ChangeKind),
}

/// For each buffer column (`columns`, the source's in attribute order), its
/// index in the relation's decoded rows.
pub fn column_map(columns: &[String], relation: &Relation) -> Result<Vec<usize>, RecordError> {
    columns
        .iter()
        .map(|c| {
            relation
                .columns
                .iter()
                .position(|rc| &rc.name == c)
                .ok_or_else(|| RecordError::MissingColumn {
                    relation: format!("{}.{}", relation.namespace, relation.name),
                    column: c.clone(),
                })
        })
        .collect()
}

/// The change-buffer row of `change` as a composite literal of the
/// buffer's row type: `change_id` (None: NULL, the buffer assigns it),
/// `xid`, `op`, `captured_at` (the commit time), the old image, the new
/// image, each image's values in buffer column order (`map`), and a NULL
/// `traceparent` (the WAL carries no session's trace context).
pub fn buffer_record(
    change_id: Option<i64>,
    xid: u64,
    change: &Change,
    map: &[usize],
) -> Result<String, RecordError> {
    let op = match change.kind {
        ChangeKind::Insert => "I",
        ChangeKind::Update => "U",
        ChangeKind::Delete => "D",
        ChangeKind::Truncate => return Err(RecordError::NoRow(ChangeKind::Truncate)),
    };
    let id = change_id.map(|i| i.to_string());
    let xid = xid.to_string();
    let at = timestamp_text(change.commit_time);
    let mut fields: Vec<Option<&str>> = vec![id.as_deref(), Some(&xid), Some(op), Some(&at)];
    for image in [&change.old, &change.new] {
        for &i in map {
            fields.push(
                image
                    .as_ref()
                    .and_then(|row| row.get(i))
                    .and_then(|v| v.as_deref()),
            );
        }
    }
    fields.push(None);
    Ok(record_literal(&fields))
}

/// A composite literal: NULL as nothing, every value double-quoted with
/// `"` and `\` escaped.
pub fn record_literal(fields: &[Option<&str>]) -> String {
    let mut out = String::from("(");
    for (k, f) in fields.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        if let Some(v) = f {
            out.push('"');
            for ch in v.chars() {
                if ch == '"' || ch == '\\' {
                    out.push('\\');
                }
                out.push(ch);
            }
            out.push('"');
        }
    }
    out.push(')');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_snapshot_includes_an_earlier_one_and_not_the_reverse() {
        let early = Snapshot::parse("100:105:101,103").unwrap();
        let later = Snapshot::parse("103:110:103,107").unwrap();
        assert!(later.includes(&early));
        assert!(
            !early.includes(&later),
            "104, 105, 106, 108, 109 and 101 are seen by the later one only"
        );
        assert!(early.includes(&early));
        // Still running in the later one though the earlier one saw it.
        let odd = Snapshot::parse("100:110:102").unwrap();
        assert!(!odd.includes(&early));
    }

    #[test]
    fn widening_keeps_the_epoch_and_crosses_it() {
        assert_eq!(widen_xid(700, 1000), Some(700));
        assert_eq!(widen_xid(999, 1000), Some(999));
        let next = (5u64 << 32) | 10;
        assert_eq!(widen_xid(4, next), Some((5 << 32) | 4));
        assert_eq!(
            widen_xid(u32::MAX - 5, next),
            Some((4 << 32) | (u32::MAX as u64 - 5))
        );
    }

    /// Regression: the scheduler once widened with a snapshot's xmax,
    /// which a just-committed transaction can be at or above; its changes
    /// were then written with xid 0 and counted as already consumed.
    #[test]
    fn an_xid_at_or_after_next_is_refused_not_wrapped() {
        assert_eq!(widen_xid(1000, 1000), None);
        assert_eq!(widen_xid(1001, 1000), None);
        assert_eq!(widen_xid(5, 3), None);
        let next = (5u64 << 32) | 10;
        assert_eq!(widen_xid((1 << 31) + 9, next), None, "more than 2^31 back");
        assert!(
            widen_xid((1 << 31) + 11, next).is_some(),
            "just under 2^31 back"
        );
    }

    #[test]
    fn snapshot_visibility_matches_postgres() {
        let s = Snapshot::parse("100:110:103,105").unwrap();
        assert!(s.sees(99) && s.sees(104) && s.sees(109));
        assert!(!s.sees(103) && !s.sees(105) && !s.sees(110) && !s.sees(200));
        assert_eq!(Snapshot::parse("5:5:").unwrap().running, Vec::<u64>::new());
        assert!(Snapshot::parse("9:5:").is_none());
        assert!(Snapshot::parse("x").is_none());
    }

    #[test]
    fn lsn_round_trips() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(lsn_text(0), "0/0");
        assert!(parse_lsn("1/1/1").is_none());
    }

    #[test]
    fn timestamps_print_as_postgres_reads_them() {
        assert_eq!(timestamp_text(0), "2000-01-01 00:00:00.000000+00");
        assert_eq!(timestamp_text(-1), "1999-12-31 23:59:59.999999+00");
        // 2026-11-28 18:25:51.5 UTC
        assert_eq!(
            timestamp_text(849_205_551_500_000),
            "2026-11-28 18:25:51.500000+00"
        );
        assert_eq!(
            timestamp_text(5_097_600_000_000),
            "2000-02-29 00:00:00.000000+00"
        );
    }

    #[test]
    fn record_literals_quote_every_value() {
        assert_eq!(
            record_literal(&[None, Some("a\"b\\c"), Some(""), Some("x,y")]),
            "(,\"a\\\"b\\\\c\",\"\",\"x,y\")"
        );
    }
}
