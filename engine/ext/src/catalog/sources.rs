//! `pgt_sources`: which relations each stream table reads, which of them
//! it captures (their parameter position in its differential statement),
//! and how far it consumed their changes. Also who reads a relation: the
//! readers a drop, an ALTER, a discard or backpressure concern, and the
//! edges the scheduler orders refreshes by.

use pg_trickle_core::catalog::SourceTable;
use pgrx::prelude::*;

use super::{arg, decoded, decoded_row, OWNED_BY_CALLER};
use crate::spi::{first_column, run};

/// Record that stream table `st_id` reads `source`, captured or not, at
/// parameter `position` of its differential statement.
pub fn insert(st_id: i64, source: &SourceTable, position: Option<i32>, captured: bool) {
    run(
        "INSERT INTO pgtrickle.pgt_sources (st_id, source_relid, source_name, param_position, captured) \
         VALUES ($1::text::bigint, $2::text::oid, $3, $4::int, $5::boolean)",
        &[
            arg(st_id),
            arg(source.oid),
            arg(source.qualified()),
            position.map(|p| p.to_string()),
            arg(captured),
        ],
    );
}

/// Forget every source of stream table `st_id`; the relations it read.
pub fn delete_of(st_id: i64) -> Vec<u32> {
    first_column(
        "DELETE FROM pgtrickle.pgt_sources WHERE st_id = $1::text::bigint RETURNING source_relid::text",
        &[arg(st_id)],
    )
}

/// Every source stream table `st_id` reads (captured or not), in oid order.
pub fn all_of(st_id: i64) -> Vec<u32> {
    let mut all: Vec<u32> = of(st_id).iter().map(|r| r.num(0)).collect();
    all.sort_unstable();
    all
}

/// Stream table `st_id`'s rows, read by key (see `direct`): source oid,
/// captured, own change id, parameter position.
fn of(st_id: i64) -> Vec<super::Fields> {
    super::by_key(
        c"pgt_sources",
        &[(c"st_id", super::direct::Key::Int8(st_id))],
        &[
            c"source_relid",
            c"captured",
            c"own_change_id",
            c"param_position",
        ],
    )
}

/// The sources stream table `st_id` captures, in oid order.
pub fn captured_of(st_id: i64) -> Vec<u32> {
    let mut captured: Vec<u32> = of(st_id)
        .iter()
        .filter(|r| r.flag(1))
        .map(|r| r.num(0))
        .collect();
    captured.sort_unstable();
    captured
}

/// A source a stream table captures, as its differential statement binds it.
pub struct CapturedSource {
    /// The source relation's oid.
    pub relid: u32,
    /// The last change id the stream table's own transaction wrote to the
    /// source's buffer by the time it last refreshed (0: none).
    pub own_change_id: i64,
    /// Its parameter (`$n`) in the differential statement.
    pub param_position: Option<i32>,
}

/// The sources stream table `st_id` captures, in parameter order.
pub fn captured_in_param_order(st_id: i64) -> Vec<CapturedSource> {
    let mut captured: Vec<CapturedSource> = of(st_id)
        .iter()
        .filter(|r| r.flag(1))
        .map(|r| CapturedSource {
            relid: r.num(0),
            own_change_id: r.num(2),
            param_position: r.parsed(3),
        })
        .collect();
    // As ORDER BY param_position: NULLs last.
    captured.sort_by_key(|s| (s.param_position.is_none(), s.param_position, s.relid));
    captured
}

/// Record the last change id the current refresh's own transaction
/// (`own_xid`) wrote to `source`'s buffer, for stream table `st_id`.
pub fn store_own_change_id(st_id: i64, source: u32, own_xid: Option<String>) {
    // The buffer is named per source, so the statement is generated.
    run(
        &format!(
            "UPDATE pgtrickle.pgt_sources SET own_change_id = coalesce((SELECT max(change_id) \
             FROM pgtrickle_changes.changes_{source} WHERE xid = $1::xid8), 0) \
             WHERE st_id = $2::text::bigint AND source_relid = $3::text::oid"
        ),
        &[own_xid, arg(st_id), arg(source)],
    );
}

/// Record that the current refresh's own transaction wrote nothing to
/// `source`'s buffer before it (for stream table `st_id`).
pub fn store_no_own_change(st_id: i64, source: u32) {
    run(
        "UPDATE pgtrickle.pgt_sources SET own_change_id = 0 \
         WHERE st_id = $1::text::bigint AND source_relid = $2::text::oid",
        &[arg(st_id), arg(source)],
    );
}

/// For stream table `st_id` and `source`, captured from the WAL (whose
/// change ids are WAL positions), record the current WAL insert position:
/// this transaction's changes before it were consumed by this refresh,
/// those after it were not.
pub fn store_own_change_lsn(st_id: i64, source: u32) {
    run(
        "UPDATE pgtrickle.pgt_sources SET own_change_id = \
         (pg_current_wal_insert_lsn() OPERATOR(pg_catalog.-) '0/0'::pg_lsn)::bigint \
         WHERE st_id = $1::text::bigint AND source_relid = $2::text::oid",
        &[arg(st_id), arg(source)],
    );
}

/// A relation a stream table reads, as explain lists it.
pub struct ListedSource {
    /// The relation as `regclass` prints it.
    pub relation: Option<String>,
    /// Whether the stream table captures it.
    pub captured: bool,
}

/// Every relation stream table `st_id` reads, by name.
pub fn listed_of(st_id: i64) -> Vec<ListedSource> {
    decoded(
        "SELECT source_relid::regclass::text, captured::text FROM pgtrickle.pgt_sources \
         WHERE st_id = $1::text::bigint ORDER BY 1",
        &[arg(st_id)],
    )
    .into_iter()
    .map(|r| ListedSource {
        relation: r.opt(0),
        captured: r.flag(1),
    })
    .collect()
}

/// Whether any stream table captures `source`.
pub fn captured_by_any(source: u32) -> bool {
    crate::spi::value(
        "SELECT count(*)::text FROM pgtrickle.pgt_sources WHERE source_relid = $1::text::oid AND captured",
        &[arg(source)],
    )
    .as_deref()
        != Some("0")
}

/// The ids of the stream tables that capture `source`, in id order.
pub fn capturing_reader_ids(source: u32) -> Vec<i64> {
    first_column(
        "SELECT st_id::text FROM pgtrickle.pgt_sources WHERE source_relid = $1::text::oid AND captured ORDER BY 1",
        &[arg(source)],
    )
}

/// The ids of the stream tables that read `relation`, captured or not, in id order.
pub fn reader_ids(relation: u32) -> Vec<i64> {
    first_column(
        "SELECT st_id::text FROM pgtrickle.pgt_sources WHERE source_relid = $1::text::oid ORDER BY 1",
        &[arg(relation)],
    )
}

/// The names of the stream tables that read `relation`, in name order.
pub fn reader_names(relation: u32) -> Vec<String> {
    first_column(
        "SELECT st.name FROM pgtrickle.pgt_sources s JOIN pgtrickle.pgt_stream_tables st ON st.id = s.st_id \
         WHERE s.source_relid = $1::text::oid ORDER BY 1",
        &[arg(relation)],
    )
}

/// A reader that recorded a relation under another name than it has now.
pub struct RenamedSource {
    /// The reading stream table's name.
    pub reader: String,
    /// The name it recorded for the relation.
    pub recorded_name: String,
}

/// The readers of `relation` that recorded it under another name than
/// `current`, by reader name.
pub fn renamed(relation: u32, current: &str) -> Vec<RenamedSource> {
    decoded(
        "SELECT st.name, s.source_name FROM pgtrickle.pgt_sources s JOIN pgtrickle.pgt_stream_tables st ON st.id = s.st_id \
         WHERE s.source_relid = $1::text::oid AND s.source_name <> $2 ORDER BY 1",
        &[arg(relation), arg(current)],
    )
    .into_iter()
    .map(|r| RenamedSource {
        reader: r.text(0),
        recorded_name: r.text(1),
    })
    .collect()
}

/// A stream table that captures a source.
pub struct Reader {
    /// Catalog id.
    pub id: i64,
    /// Name as recorded.
    pub name: String,
    /// Whether it is held.
    pub held: bool,
}

/// The stream tables that capture `source`, by name.
pub fn capturing_readers(source: u32) -> Vec<Reader> {
    decoded(
        "SELECT st.id::text, st.name, st.held::text FROM pgtrickle.pgt_stream_tables st \
         JOIN pgtrickle.pgt_sources s ON s.st_id = st.id \
         WHERE s.source_relid = $1::text::oid AND s.captured ORDER BY st.name",
        &[arg(source)],
    )
    .into_iter()
    .map(|r| Reader {
        id: r.num(0),
        name: r.text(1),
        held: r.flag(2),
    })
    .collect()
}

/// Who else relies on the capture of a source, as a discard checks it.
pub struct OtherReaders {
    /// The source as `regclass` prints it.
    pub source: String,
    /// Whether the role asking owns the source (or is a member of its owner).
    pub owns_source: bool,
    /// The stream tables capturing it that the role does not own, by
    /// name, comma-separated (None: there are none).
    pub names: Option<String>,
}

/// The capture of `source` as seen by `role`: whether it owns the source
/// and which other roles' stream tables capture it (None when the
/// relation does not exist).
pub fn other_readers(role: pg_sys::Oid, source: u32) -> Option<OtherReaders> {
    let r = decoded_row(
        &format!(
            "SELECT $2::text::oid::regclass::text, pg_has_role($1::text::oid, c.relowner, 'USAGE')::text, \
             (SELECT string_agg(st.name, ', ' ORDER BY st.name) FROM pgtrickle.pgt_sources s \
              JOIN pgtrickle.pgt_stream_tables st ON st.id = s.st_id \
              WHERE s.source_relid = c.oid AND s.captured AND NOT {OWNED_BY_CALLER}) \
             FROM pg_class c WHERE c.oid = $2::text::oid"
        ),
        &[arg(role.to_u32()), arg(source)],
    )?;
    Some(OtherReaders {
        source: r.text(0),
        owns_source: r.flag(1),
        names: r.opt(2),
    })
}

/// One dependency between stream tables: `downstream` reads `upstream`'s storage.
pub struct Edge {
    /// The stream table read.
    pub upstream: i64,
    /// The stream table reading it.
    pub downstream: i64,
}

/// Every dependency between stream tables.
pub fn edges() -> Vec<Edge> {
    decoded(
        "SELECT up.id::text, s.st_id::text FROM pgtrickle.pgt_sources s \
         JOIN pgtrickle.pgt_stream_tables up ON up.relid = s.source_relid",
        &[],
    )
    .into_iter()
    .filter_map(|r| {
        Some(Edge {
            upstream: r.parsed(0)?,
            downstream: r.parsed(1)?,
        })
    })
    .collect()
}
