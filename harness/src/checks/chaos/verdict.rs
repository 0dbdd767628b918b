//! How a chaos run is judged once the load has stopped: the scheduler
//! catches up on its own, every stream table equals its query recomputed
//! (the DIFF-vs-FULL oracle's comparison: a row only in the query is a
//! lost change, a row only in the stream table one applied twice or never
//! undone), no refresh ran FULL that nobody asked for, and pg_trickle's
//! own objects agree with what exists.

use std::time::{Duration, Instant};

use oracles::compare;
use oracles::engine_api::{self, Ran};
use pg_trickle_core::ir::Mode;
use postgres::Client;

use crate::cluster::describe;

/// How long the scheduler may take to consume everything after the load stops.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// A stream table of the chaos schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTable {
    /// Its name.
    pub name: &'static str,
    /// Its defining query.
    pub query: &'static str,
    /// Its schedule (None: refreshed only by hand).
    pub schedule: Option<&'static str>,
    /// The source it reads first (the one a lost capture shows on).
    pub source: &'static str,
}

/// Wait until no stream table of `names` has a change left to consume or
/// a reinitialisation pending; the ones without a schedule are refreshed
/// by the runner meanwhile.
pub fn catch_up(db: &mut Client, sts: &[&StreamTable]) -> Result<(), String> {
    let started = Instant::now();
    let names: Vec<String> = sts.iter().map(|s| s.name.to_string()).collect();
    // Changes captured from the WAL count as pending only once drained:
    // first wait for every slot to be drained past the WAL written so far
    // (in a statement of its own, as the oracle does).
    let wal_end: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .map_err(|e| describe(&e))?
        .get(0);
    loop {
        let undrained: Vec<String> = db
            .query(
                "SELECT c.source || ' at ' || coalesce(c.drained_lsn, 'nothing') || coalesce(' (' || c.last_error || ')', '') \
                 FROM pgtrickle.wal_capture_status() c \
                 WHERE c.source IS NOT NULL AND coalesce(c.drained_lsn::pg_lsn < $1::text::pg_lsn, true)",
                &[&wal_end],
            )
            .map_err(|e| describe(&e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if undrained.is_empty() {
            break;
        }
        if started.elapsed() > CATCH_UP_LIMIT {
            return Err(format!(
                "the scheduler did not drain the WAL captures to {wal_end} within {} s after the load stopped: {}",
                CATCH_UP_LIMIT.as_secs(),
                undrained.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    loop {
        for st in sts.iter().filter(|s| s.schedule.is_none()) {
            db.batch_execute(&format!(
                "SELECT pgtrickle.refresh_stream_table('{}')",
                st.name
            ))
            .map_err(|e| {
                format!(
                    "refreshing {} by hand to catch up: {}",
                    st.name,
                    describe(&e)
                )
            })?;
        }
        let rows = db
            .query(
                "SELECT s.name, s.pending_changes, s.needs_reinit, s.last_error_sqlstate, s.last_error_message \
                 FROM pgtrickle.stream_table_status() s \
                 WHERE to_regclass(s.name) IN (SELECT to_regclass(n) FROM unnest($1::text[]) n)",
                &[&names],
            )
            .map_err(|e| describe(&e))?;
        let behind: Vec<String> = rows
            .iter()
            .filter(|r| r.get::<_, i64>(1) > 0 || r.get::<_, bool>(2))
            .map(|r| {
                format!(
                    "{}: {} changes pending, reinit {}, last error {:?} {:?}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, bool>(2),
                    r.get::<_, Option<String>>(3),
                    r.get::<_, Option<String>>(4)
                )
            })
            .collect();
        if behind.is_empty() && rows.len() == names.len() {
            return Ok(());
        }
        if started.elapsed() > CATCH_UP_LIMIT {
            return Err(format!(
                "the scheduler did not catch up within {} s after the load stopped: {} (status rows: {} of {})",
                CATCH_UP_LIMIT.as_secs(),
                behind.join("; "),
                rows.len(),
                names.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the comparison of one stream table found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Compared {
    /// Rows the recomputed query has and the stream table lacks.
    pub lost: usize,
    /// Rows the stream table has and the recomputed query lacks.
    pub extra: usize,
    /// Rows compared (the recomputed side).
    pub rows: usize,
}

/// Compare `st` with its query recomputed; a mismatch is an error with the row diff.
pub fn compare_with_query(
    db: &mut Client,
    st: &StreamTable,
) -> Result<Compared, (Compared, String)> {
    let fail = |e: postgres::Error| (Compared::default(), describe(&e));
    let cols = compare::stream_table_columns(db, st.name).map_err(fail)?;
    let (stored, fresh) = compare::both_sides(db, st.name, &cols, st.query).map_err(fail)?;
    let (extra, lost) = compare::multiset_difference(&stored, &fresh);
    let c = Compared {
        lost: lost.len(),
        extra: extra.len(),
        rows: fresh.len(),
    };
    if lost.is_empty() && extra.is_empty() {
        Ok(c)
    } else {
        let diff = compare::row_diff(&stored, &fresh);
        Err((
            c.clone(),
            format!(
                "{} differs from its query recomputed: {} rows missing (lost changes), {} rows extra (applied twice or never undone)\n{diff}",
                st.name, c.lost, c.extra
            ),
        ))
    }
}

/// What `st`'s refresh history recorded since refresh `mark`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Refreshes {
    /// DIFFERENTIAL refreshes.
    pub differential: usize,
    /// FULL refreshes (with their reasons).
    pub full: Vec<String>,
    /// Failed refreshes, as `SQLSTATE: message`.
    pub errors: Vec<String>,
}

/// Read `st`'s refreshes since `mark`.
pub fn refreshes_since(db: &mut Client, st: &str, mark: i64) -> Result<Refreshes, String> {
    let mut r = Refreshes::default();
    for h in engine_api::refreshes_after(db, st, mark).map_err(|e| describe(&e))? {
        match &h.ran {
            Ran::Mode(Mode::Differential) => r.differential += 1,
            Ran::Mode(Mode::Full) if h.initiated_by == "create" => {}
            Ran::Mode(_) => r
                .full
                .push(format!("{} by {}", h.describe(), h.initiated_by)),
            Ran::Error => r.errors.push(format!(
                "{}: {}",
                h.sqlstate.unwrap_or_default(),
                h.message.unwrap_or_default()
            )),
            Ran::Unknown(t) => r.full.push(format!("unknown mode {t:?}")),
        }
    }
    Ok(r)
}

/// pg_trickle's objects for `source`: its capture triggers and whether
/// its change buffer exists.
pub fn capture_objects(db: &mut Client, source: &str) -> Result<(Vec<String>, bool), String> {
    let row = db
        .query_one(
            "SELECT coalesce(array_agg(t.tgname::text ORDER BY t.tgname) \
                        FILTER (WHERE t.tgname IS NOT NULL), '{}'), \
                    to_regclass('pgtrickle_changes.changes_' || c.oid) IS NOT NULL \
             FROM pg_class c LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname LIKE 'pgt\\_%' \
             WHERE c.oid = $1::text::regclass GROUP BY c.oid",
            &[&source],
        )
        .map_err(|e| describe(&e))?;
    Ok((row.get(0), row.get(1)))
}

/// Whether stream table `name` exists as the API sees it, and whether its
/// storage relation exists; an error when the two disagree.
pub fn exists_consistently(db: &mut Client, name: &str) -> Result<bool, String> {
    let row = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pgtrickle.stream_table_status() s \
                            WHERE to_regclass(s.name) = to_regclass($1)), \
                    to_regclass($1) IS NOT NULL",
            &[&name],
        )
        .map_err(|e| describe(&e))?;
    let (listed, relation): (bool, bool) = (row.get(0), row.get(1));
    if listed != relation {
        return Err(format!(
            "{name}: stream_table_status() {} it but its table {}",
            if listed { "lists" } else { "does not list" },
            if relation { "exists" } else { "does not exist" }
        ));
    }
    Ok(listed)
}
