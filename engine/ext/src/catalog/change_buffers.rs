//! `pgt_change_buffers`: one row per captured source, shared by every
//! stream table that captures it: its buffer table and the columns it was
//! built for, whether capture runs or discards, backpressure and the write
//! block, and the members (partitions, inheritance children) its triggers
//! were last set on.

use pg_trickle_core::backpressure::State;
use pgrx::prelude::*;

use super::{arg, decoded, decoded_row, oid_array};
use crate::spi::{first_column, run, value};

/// Record `source`'s new buffer table `buffer_name`, built for `columns`
/// (`name type` each).
pub fn insert(source: u32, buffer_name: &str, columns: &[String]) {
    run(
        "INSERT INTO pgtrickle.pgt_change_buffers (source_relid, buffer_name, columns) \
         VALUES ($1::text::oid, $2, ARRAY(SELECT jsonb_array_elements_text($3::jsonb)))",
        &[
            arg(source),
            arg(buffer_name),
            arg(serde_json::Value::from(columns.to_vec())),
        ],
    );
}

/// Forget `source`'s buffer; its buffer table's name, if it had one.
pub fn delete(source: u32) -> Option<String> {
    value(
        "DELETE FROM pgtrickle.pgt_change_buffers WHERE source_relid = $1::text::oid RETURNING buffer_name",
        &[arg(source)],
    )
}

/// The columns `source`'s buffer was built for, comma-separated (None: it
/// has no buffer).
pub fn recorded_columns(source: u32) -> Option<String> {
    value(
        "SELECT array_to_string(columns, ',') FROM pgtrickle.pgt_change_buffers WHERE source_relid = $1::text::oid",
        &[arg(source)],
    )
}

/// Every captured source, in oid order.
pub fn all_sources() -> Vec<u32> {
    first_column(
        "SELECT b.source_relid::text FROM pgtrickle.pgt_change_buffers b ORDER BY b.source_relid",
        &[],
    )
}

/// The captured sources that are, or are above, one of `relations` in
/// the inheritance tree, or have one of them as a recorded member, in oid
/// order: those a structure change of `relations` may concern.
pub fn sources_above(relations: &[u32]) -> Vec<u32> {
    first_column(
        "WITH RECURSIVE up(oid) AS (SELECT unnest($1::text::oid[]) \
           UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid) \
         SELECT b.source_relid::text FROM pgtrickle.pgt_change_buffers b \
         WHERE b.source_relid IN (SELECT oid FROM up) OR b.members && $1::text::oid[] \
         ORDER BY b.source_relid",
        &[oid_array(relations)],
    )
}

/// The oids of the buffer tables of `sources`.
pub fn buffer_oids(sources: &[u32]) -> Vec<u32> {
    let mut unique = sources.to_vec();
    unique.sort_unstable();
    unique.dedup();
    unique
        .into_iter()
        .filter_map(|source| buffer_row(source, c"buffer_name")?.opt(0))
        .filter_map(|name| super::direct::to_regclass(&name))
        .collect()
}

/// Column `column` of `source`'s buffer row, read by key (see `direct`).
fn buffer_row(source: u32, column: &std::ffi::CStr) -> Option<super::Fields> {
    super::by_key(
        c"pgt_change_buffers",
        &[(c"source_relid", super::direct::Key::Oid(source))],
        &[column],
    )
    .into_iter()
    .next()
}

/// The members recorded for `source` when its triggers were last set.
pub fn members(source: u32) -> Vec<u32> {
    first_column(
        "SELECT unnest(members)::text FROM pgtrickle.pgt_change_buffers WHERE source_relid = $1::text::oid",
        &[arg(source)],
    )
}

/// Record `members` as the members `source`'s triggers are set on.
pub fn record_members(source: u32, members: &[u32]) {
    run(
        "UPDATE pgtrickle.pgt_change_buffers SET members = $2::text::oid[] WHERE source_relid = $1::text::oid",
        &[arg(source), oid_array(members)],
    );
}

/// Mark `source`'s capture as discarding with `reason` (releasing
/// backpressure and any write block); its buffer table's name, or None
/// when it was already discarding or has no buffer.
pub fn set_discarding(source: u32, reason: &str) -> Option<String> {
    value(
        "UPDATE pgtrickle.pgt_change_buffers SET capture_state = 'discarding', capture_reason = $2, \
         capture_changed_at = now(), backpressure = 'released', backpressure_reason = NULL, write_block = NULL \
         WHERE source_relid = $1::text::oid AND capture_state <> 'discarding' RETURNING buffer_name",
        &[arg(source), arg(reason)],
    )
}

/// Whether `source`'s capture is discarding.
pub fn is_discarding(source: u32) -> bool {
    value(
        "SELECT (capture_state = 'discarding')::text FROM pgtrickle.pgt_change_buffers WHERE source_relid = $1::text::oid",
        &[arg(source)],
    )
    .as_deref()
        == Some("true")
}

/// Mark `source`'s capture as capturing again; false when it was not discarding.
pub fn set_capturing(source: u32) -> bool {
    value(
        "UPDATE pgtrickle.pgt_change_buffers SET capture_state = 'capturing', capture_reason = NULL, \
         capture_changed_at = now() WHERE source_relid = $1::text::oid AND capture_state = 'discarding' \
         RETURNING buffer_name",
        &[arg(source)],
    )
    .is_some()
}

/// The first (by name) source stream table `st_id` captures whose capture
/// is discarding, as `regclass` prints it.
pub fn first_discarding_of(st_id: i64) -> Option<String> {
    // Read by key first (see `direct`): the statement orders the names,
    // and runs only when some source discards.
    let discarding = super::sources::captured_of(st_id)
        .into_iter()
        .any(|source| {
            buffer_row(source, c"capture_state")
                .and_then(|r| r.opt(0))
                .as_deref()
                == Some("discarding")
        });
    if !discarding {
        return None;
    }
    value(
        "SELECT b.source_relid::regclass::text FROM pgtrickle.pgt_change_buffers b \
         JOIN pgtrickle.pgt_sources s ON s.source_relid = b.source_relid \
         WHERE s.st_id = $1::text::bigint AND s.captured AND b.capture_state = 'discarding' \
         ORDER BY 1 LIMIT 1",
        &[arg(st_id)],
    )
}

/// A source's backpressure as last evaluated.
pub struct Backpressure {
    /// Engaged or released.
    pub state: State,
    /// The source as `regclass` prints it.
    pub source: String,
}

/// `source`'s backpressure, if it has a buffer.
pub fn backpressure_of(source: u32) -> Option<Backpressure> {
    let r = decoded_row(
        "SELECT backpressure, source_relid::regclass::text FROM pgtrickle.pgt_change_buffers \
         WHERE source_relid = $1::text::oid",
        &[arg(source)],
    )?;
    Some(Backpressure {
        state: State::parse(r.opt(0).as_deref().unwrap_or("released")),
        source: r.text(1),
    })
}

/// Record a backpressure transition of `source` to `state`, with `reason`
/// while engaged.
pub fn set_backpressure(source: u32, state: State, reason: Option<String>) {
    run(
        "UPDATE pgtrickle.pgt_change_buffers SET backpressure = $2, backpressure_reason = $3, \
         backpressure_since = now(), backpressure_transitions = backpressure_transitions + 1 \
         WHERE source_relid = $1::text::oid",
        &[arg(source), arg(state.name()), reason],
    );
}

/// Block writes to `source` with `block` as the reason (None: allow
/// them); the row is written only when that changes.
pub fn set_write_block(source: u32, block: Option<String>) {
    run(
        "UPDATE pgtrickle.pgt_change_buffers SET write_block = $2 \
         WHERE source_relid = $1::text::oid AND write_block IS DISTINCT FROM $2",
        &[arg(source), block],
    );
}

/// Whether `source` has backpressure engaged or writes blocked, read by
/// key (see `direct`): a refresh asks this of each source it consumed,
/// with no statement to parse or plan.
pub fn is_engaged_or_blocked(source: u32) -> bool {
    super::by_key(
        c"pgt_change_buffers",
        &[(c"source_relid", super::direct::Key::Oid(source))],
        &[c"backpressure", c"write_block"],
    )
    .into_iter()
    .any(|row| row.opt(0).as_deref() == Some("engaged") || row.opt(1).is_some())
}

/// The sources with backpressure engaged or writes blocked.
pub fn engaged_or_blocked() -> Vec<u32> {
    first_column(
        "SELECT source_relid::text FROM pgtrickle.pgt_change_buffers \
         WHERE backpressure = 'engaged' OR write_block IS NOT NULL",
        &[],
    )
}

/// The capture of one of a stream table's sources, as its status shows it.
pub struct CaptureOfSource {
    /// The source's oid.
    pub relid: u32,
    /// The source as `regclass` prints it.
    pub name: String,
    /// Whether its capture is discarding.
    pub discarding: bool,
    /// Why capture is in its state.
    pub capture_reason: Option<String>,
    /// Whether backpressure is engaged on it.
    pub engaged: bool,
    /// Why backpressure is in its state.
    pub backpressure_reason: Option<String>,
    /// Why writes to it are blocked, if they are.
    pub write_block: Option<String>,
}

/// The capture of every source stream table `st_id` captures, by name.
pub fn capture_of_sources(st_id: i64) -> Vec<CaptureOfSource> {
    decoded(
        "SELECT s.source_relid::text, s.source_relid::regclass::text, b.capture_state, b.capture_reason, \
         b.backpressure, b.backpressure_reason, b.write_block FROM pgtrickle.pgt_sources s \
         JOIN pgtrickle.pgt_change_buffers b ON b.source_relid = s.source_relid \
         WHERE s.st_id = $1::text::bigint AND s.captured ORDER BY 2",
        &[arg(st_id)],
    )
    .into_iter()
    .map(|r| CaptureOfSource {
        relid: r.num(0),
        name: r.text(1),
        discarding: r.opt(2).as_deref() == Some("discarding"),
        capture_reason: r.opt(3),
        engaged: r.opt(4).as_deref() == Some("engaged"),
        backpressure_reason: r.opt(5),
        write_block: r.opt(6),
    })
    .collect()
}

/// One buffer as `change_buffer_status()` lists it.
pub struct Listing {
    /// The source's oid.
    pub relid: u32,
    /// The source as `regclass` prints it.
    pub source: String,
    /// The buffer table's name.
    pub buffer_name: String,
    /// `capturing` or `discarding`.
    pub capture_state: String,
    /// Why capture is in its state.
    pub capture_reason: Option<String>,
    /// How many stream tables capture the source.
    pub readers: i64,
    /// `engaged` or `released`.
    pub backpressure: String,
    /// Why backpressure is in its state.
    pub backpressure_reason: Option<String>,
    /// Since when (`timestamptz` text).
    pub backpressure_since: Option<String>,
    /// How many times it changed.
    pub backpressure_transitions: i64,
    /// Why writes to the source are blocked, if they are.
    pub write_block: Option<String>,
}

/// The buffers of the sources `role` may read (every one with `all`), by source name.
pub fn listing_visible_to(role: pg_sys::Oid, all: bool) -> Vec<Listing> {
    decoded(
        "SELECT b.source_relid::text, b.source_relid::regclass::text, b.buffer_name, b.capture_state, \
         b.capture_reason, (SELECT count(*) FROM pgtrickle.pgt_sources s WHERE s.source_relid = b.source_relid \
         AND s.captured)::text, b.backpressure, b.backpressure_reason, b.backpressure_since::text, \
         b.backpressure_transitions::text, b.write_block FROM pgtrickle.pgt_change_buffers b \
         WHERE $2::boolean OR has_table_privilege($1::text::oid, b.source_relid, 'SELECT') ORDER BY 2",
        &[arg(role.to_u32()), arg(all)],
    )
    .into_iter()
    .map(|r| Listing {
        relid: r.num(0),
        source: r.text(1),
        buffer_name: r.text(2),
        capture_state: r.text(3),
        capture_reason: r.opt(4),
        readers: r.num(5),
        backpressure: r.text(6),
        backpressure_reason: r.opt(7),
        backpressure_since: r.opt(8),
        backpressure_transitions: r.num(9),
        write_block: r.opt(10),
    })
    .collect()
}
