//! `pgt_refresh_history`: what every refresh of a stream table did (the
//! mode that ran, or ERROR; who started it; rows changed; why FULL ran; a
//! failure's SQLSTATE and message), appended by the refresh executor and
//! the scheduler, pruned to the newest [`KEPT`] rows per stream table by
//! about one refresh in 32 (see `pg_trickle_core::history`), and read by
//! `refresh_history()`, which shows the newest [`KEPT`].

pub use pg_trickle_core::history::KEPT;

use super::{arg, decoded};
use crate::spi::{run, value};

/// Who started a refresh; recorded in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// `create_stream_table` populating the new table.
    Create,
    /// `refresh_stream_table`.
    Manual,
    /// The scheduler background worker.
    Scheduler,
}

impl Initiator {
    /// How the history records it: `create`, `manual` or `scheduler`.
    pub fn name(self) -> &'static str {
        match self {
            Initiator::Create => "create",
            Initiator::Manual => "manual",
            Initiator::Scheduler => "scheduler",
        }
    }
}

/// One refresh, as recorded.
pub struct Entry<'a> {
    /// The stream table refreshed.
    pub st_id: i64,
    /// When it started (`timestamptz` text; None: now).
    pub started_at: Option<String>,
    /// The mode that ran, or `ERROR`.
    pub mode: &'a str,
    /// Who started it.
    pub initiator: Initiator,
    /// Rows deleted and inserted (None for a failure).
    pub rows_changed: Option<(i64, i64)>,
    /// Why FULL ran, or what happens after a failure.
    pub reason: Option<&'a str>,
    /// A failure's SQLSTATE and message.
    pub error: Option<(&'a str, &'a str)>,
}

/// Append `entry`, finished now, and prune its stream table's older rows
/// when this refresh is the one in about 32 that does.
pub fn append(entry: &Entry) {
    let id = record(entry);
    if pg_trickle_core::history::prunes(id) {
        prune(entry.st_id);
    }
}

/// Append `entry`, finished now; the new row's id.
fn record(entry: &Entry) -> i64 {
    let id = value(
        "INSERT INTO pgtrickle.pgt_refresh_history (st_id, started_at, finished_at, mode, initiated_by, \
         rows_deleted, rows_inserted, reason, error_sqlstate, error_message) \
         VALUES ($1::text::bigint, coalesce($2::timestamptz, clock_timestamp()), clock_timestamp(), $3, $4, \
         $5::bigint, $6::bigint, $7, $8, $9) RETURNING id::text",
        &[
            arg(entry.st_id),
            entry.started_at.clone(),
            arg(entry.mode),
            arg(entry.initiator.name()),
            entry.rows_changed.map(|r| r.0.to_string()),
            entry.rows_changed.map(|r| r.1.to_string()),
            entry.reason.map(str::to_string),
            entry.error.map(|e| e.0.to_string()),
            entry.error.map(|e| e.1.to_string()),
        ],
    );
    id.and_then(|id| id.parse().ok())
        .expect("INSERT ... RETURNING id returns the new row's id")
}

/// Delete all but the newest [`KEPT`] rows of stream table `st_id`.
fn prune(st_id: i64) {
    run(
        "DELETE FROM pgtrickle.pgt_refresh_history WHERE st_id = $1::text::bigint AND id <= \
         (SELECT id FROM pgtrickle.pgt_refresh_history WHERE st_id = $1::text::bigint \
          ORDER BY id DESC OFFSET $2::int LIMIT 1)",
        &[arg(st_id), arg(KEPT)],
    );
}

/// One recorded refresh, as `refresh_history()` returns it.
pub struct HistoryRow {
    /// When it started (`timestamptz` text).
    pub started_at: String,
    /// When it finished (`timestamptz` text).
    pub finished_at: String,
    /// The mode that ran, or `ERROR`.
    pub mode: String,
    /// Who started it: `create`, `manual` or `scheduler`.
    pub initiated_by: String,
    /// Rows deleted (None for a failure).
    pub rows_deleted: Option<i64>,
    /// Rows inserted (None for a failure).
    pub rows_inserted: Option<i64>,
    /// Why FULL ran, or what happens after a failure.
    pub reason: Option<String>,
    /// A failure's SQLSTATE.
    pub error_sqlstate: Option<String>,
    /// A failure's message.
    pub error_message: Option<String>,
    /// The row's id: grows with every refresh recorded.
    pub refresh_id: i64,
}

/// Stream table `st_id`'s newest [`KEPT`] recorded refreshes, newest first.
pub fn of(st_id: i64) -> Vec<HistoryRow> {
    decoded(
        // Ordered by the column: `id` alone names the output `id::text`.
        "SELECT h.started_at::text, h.finished_at::text, h.mode, h.initiated_by, h.rows_deleted::text, \
         h.rows_inserted::text, h.reason, h.error_sqlstate, h.error_message, h.id::text \
         FROM pgtrickle.pgt_refresh_history h WHERE h.st_id = $1::text::bigint ORDER BY h.id DESC LIMIT $2::int",
        &[arg(st_id), arg(KEPT)],
    )
    .into_iter()
    .map(|r| HistoryRow {
        started_at: r.text(0),
        finished_at: r.text(1),
        mode: r.text(2),
        initiated_by: r.text(3),
        rows_deleted: r.parsed(4),
        rows_inserted: r.parsed(5),
        reason: r.opt(6),
        error_sqlstate: r.opt(7),
        error_message: r.opt(8),
        refresh_id: r.num(9),
    })
    .collect()
}
