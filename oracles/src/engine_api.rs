//! What the checks ask the engine, through its public SQL API only:
//! `stream_table_status()` for the mode the engine chose and why, and
//! `refresh_history(name)` for what each refresh ran. The catalog tables
//! behind them are the engine's own business; a check that read them
//! could pass while the API users read told a different story.
//!
//! Stream tables are named as a user names them (`st`, `app.totals`); the
//! status row is matched by the relation the name resolves to.

use pg_trickle_core::ir::Mode;
use postgres::Client;

/// What one recorded refresh ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// It ran in this mode.
    Mode(Mode),
    /// It failed (a scheduled refresh records its failure).
    Error,
    /// A spelling this runner does not know: never what a check wants.
    Unknown(String),
}

impl Ran {
    /// Read the history's `mode` column.
    pub fn parse(text: &str) -> Ran {
        match Mode::parse(text) {
            Some(m) => Ran::Mode(m),
            None if text == "ERROR" => Ran::Error,
            None => Ran::Unknown(text.to_string()),
        }
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ran::Mode(m) => write!(f, "{m}"),
            Ran::Error => f.write_str("ERROR"),
            Ran::Unknown(t) => write!(f, "{t:?}"),
        }
    }
}

/// One row of `refresh_history(name)`.
#[derive(Debug, Clone)]
pub struct Refresh {
    /// Grows with every refresh recorded in the database.
    pub id: i64,
    /// What it ran.
    pub ran: Ran,
    /// Why FULL ran, or the retry decision after a failure.
    pub reason: Option<String>,
    /// `create`, `manual` or `scheduler`.
    pub initiated_by: String,
    /// SQLSTATE of a failure.
    pub sqlstate: Option<String>,
    /// Message of a failure.
    pub message: Option<String>,
}

impl Refresh {
    /// What it ran, with the reason when there is one: `FULL (why)`.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(r) if !r.is_empty() => format!("{} ({r})", self.ran),
            _ => self.ran.to_string(),
        }
    }
}

const HISTORY: &str =
    "SELECT refresh_id, mode, reason, initiated_by, error_sqlstate, error_message \
     FROM pgtrickle.refresh_history($1)";

fn refresh(r: &postgres::Row) -> Refresh {
    Refresh {
        id: r.get(0),
        ran: Ran::parse(r.get(1)),
        reason: r.get(2),
        initiated_by: r.get(3),
        sqlstate: r.get(4),
        message: r.get(5),
    }
}

/// The id of `st`'s latest recorded refresh (0 when it has none): the
/// mark after which [`refreshes_after`] finds what ran next.
pub fn last_refresh_id(client: &mut Client, st: &str) -> Result<i64, postgres::Error> {
    let row = client.query_one(
        "SELECT coalesce(max(refresh_id), 0)::bigint FROM pgtrickle.refresh_history($1)",
        &[&st],
    )?;
    Ok(row.get(0))
}

/// `st`'s refreshes recorded after refresh `after_id`, oldest first.
pub fn refreshes_after(
    client: &mut Client,
    st: &str,
    after_id: i64,
) -> Result<Vec<Refresh>, postgres::Error> {
    let sql = format!("{HISTORY} WHERE refresh_id > $2 ORDER BY refresh_id");
    Ok(client
        .query(&sql, &[&st, &after_id])?
        .iter()
        .map(refresh)
        .collect())
}

/// `st`'s latest recorded refresh.
pub fn last_refresh(client: &mut Client, st: &str) -> Result<Option<Refresh>, postgres::Error> {
    let sql = format!("{HISTORY} ORDER BY refresh_id DESC LIMIT 1");
    Ok(client.query_opt(&sql, &[&st])?.as_ref().map(refresh))
}

/// The mode the most recent refresh of `st` actually ran, as the history
/// spells it (`DIFFERENTIAL`, `FULL` or `ERROR`).
pub fn last_refresh_mode(client: &mut Client, st: &str) -> Result<Option<String>, postgres::Error> {
    Ok(last_refresh(client, st)?.map(|r| r.ran.to_string()))
}

/// The mode the engine maintains `st` in, as status spells it, and why it
/// fell back to FULL when it did.
pub fn effective_mode(
    client: &mut Client,
    st: &str,
) -> Result<(String, Option<String>), postgres::Error> {
    let row = client.query_one(
        "SELECT s.effective_mode, s.fallback_reason FROM pgtrickle.stream_table_status() s \
         WHERE to_regclass(s.name) = to_regclass($1)",
        &[&st],
    )?;
    Ok((row.get(0), row.get(1)))
}

/// How many of `names` have no successful refresh that started at or after
/// `since` (a timestamp the server gave).
pub fn unrefreshed_since(
    client: &mut Client,
    names: &[String],
    since: &str,
) -> Result<i64, postgres::Error> {
    let row = client.query_one(
        "SELECT count(*) FROM unnest($1::text[]) n WHERE NOT EXISTS ( \
           SELECT 1 FROM pgtrickle.refresh_history(n) h \
           WHERE h.started_at::timestamptz >= $2::text::timestamptz AND h.mode <> 'ERROR')",
        &[&names, &since],
    )?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_modes_read_back_as_written() {
        for m in [Mode::Differential, Mode::Full] {
            assert_eq!(Ran::parse(m.name()), Ran::Mode(m));
            assert_eq!(Ran::parse(m.name()).to_string(), m.name());
        }
        assert_eq!(Ran::parse("ERROR"), Ran::Error);
        assert_eq!(Ran::parse("ERROR").to_string(), "ERROR");
        assert_eq!(Ran::parse("full"), Ran::Unknown("full".into()));
    }

    #[test]
    fn a_refresh_is_described_with_its_reason() {
        let r = Refresh {
            id: 7,
            ran: Ran::Mode(Mode::Full),
            reason: Some("reinitialised".into()),
            initiated_by: "manual".into(),
            sqlstate: None,
            message: None,
        };
        assert_eq!(r.describe(), "FULL (reinitialised)");
        let plain = Refresh { reason: None, ..r };
        assert_eq!(plain.describe(), "FULL");
    }
}
