//! Where each column of a captured row comes from, per (source, firing
//! relation): the [`Layout`] the row trigger forms buffer tuples by.
//!
//! It is built from the live relation descriptors (the firing relation's,
//! the source's and the buffer's, the buffer locked first), never from a
//! statement's snapshot: under REPEATABLE READ a snapshot may predate the
//! partition a row was routed to or the buffer a re-plan rebuilt. Source
//! columns are matched to the firing relation's by name (a partition or
//! child may order them differently, or hold dropped or extra columns),
//! and every buffer column's type is checked against what fills it.
//!
//! Layouts are kept per backend. A relcache invalidation of the source,
//! the firing relation or the buffer (any DDL on them) forgets the layouts
//! that involve it; a layout is used only when no invalidation arrived
//! between reading it and holding the buffer's lock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::rc::Rc;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgTupleDesc;

use crate::spi::raise;

/// What one buffer column of a captured row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// `change_id`: the next value of the buffer's identity sequence.
    ChangeId,
    /// `xid`: the top-level transaction id, as `pg_current_xact_id()`.
    Xid,
    /// `op`: `I`, `U` or `D`.
    Op,
    /// `captured_at`: the transaction's start time, as `now()`.
    CapturedAt,
    /// `traceparent`: the session's `pg_trickle.traceparent`, or NULL.
    TraceParent,
    /// `__o<k>`: the old image's value of the firing relation's attribute
    /// (0-based index).
    Old(usize),
    /// `__n<k>`: the new image's value of the firing relation's attribute.
    New(usize),
    /// A dropped buffer column.
    Null,
}

/// How rows fired by one relation for one source are written to its buffer.
#[derive(Debug)]
pub(super) struct Layout {
    /// The source.
    source: pg_sys::Oid,
    /// The relation whose trigger fires.
    firing: pg_sys::Oid,
    /// The change buffer.
    pub buffer: pg_sys::Oid,
    /// Its owner, who may draw from its identity sequence.
    pub owner: pg_sys::Oid,
    /// Its `change_id` identity sequence.
    pub sequence: pg_sys::Oid,
    /// That sequence's increment: how many ids one draw numbers (see
    /// `pg_trickle_core::change_ids`).
    pub increment: i64,
    /// One slot per buffer attribute, dropped ones included.
    pub slots: Vec<Slot>,
}

impl Layout {
    fn involves(&self, relid: pg_sys::Oid) -> bool {
        relid == self.source
            || relid == self.firing
            || relid == self.buffer
            || relid == self.sequence
    }
}

thread_local! {
    /// Layouts by (source, firing relation).
    static LAYOUTS: RefCell<HashMap<(u32, u32), Rc<Layout>>> = RefCell::new(HashMap::new());
    /// Bumped whenever an invalidation forgets a layout.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// Whether [`forget_layouts`] is registered in this backend.
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Relcache invalidation callback: forget the layouts involving `relid`
/// (all of them for a cache reset, `relid` invalid).
#[pg_guard]
unsafe extern "C-unwind" fn forget_layouts(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let forgot = LAYOUTS.with(|l| match l.try_borrow_mut() {
        Ok(mut l) => {
            let before = l.len();
            if relid == pg_sys::InvalidOid {
                l.clear();
            } else {
                l.retain(|_, layout| !layout.involves(relid));
            }
            l.len() != before
        }
        // Not reachable (no borrow is held across a PostgreSQL call); if it
        // were, the generation below still makes the next write rebuild.
        Err(_) => true,
    });
    if forgot || relid == pg_sys::InvalidOid {
        GENERATION.with(|g| g.set(g.get() + 1));
        // A held block was sized by a forgotten layout's increment.
        super::forget_change_id_blocks();
    }
}

/// Bumped whenever an invalidation forgets a layout: a layout read before
/// a change of this is not known to be current.
pub(super) fn generation() -> u64 {
    GENERATION.with(Cell::get)
}

fn register_callback() {
    if !REGISTERED.with(Cell::get) {
        // SAFETY: registers a callback that lives as long as the library.
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(Some(forget_layouts), pg_sys::Datum::from(0))
        };
        REGISTERED.with(|r| r.set(true));
    }
}

/// The layout for (`source`, `firing`) and its buffer, opened with
/// RowExclusiveLock (the lock is kept until the transaction ends; close
/// the relation with `NoLock`).
pub(super) fn open(
    source: u32,
    firing: u32,
    firing_desc: pg_sys::TupleDesc,
) -> (Rc<Layout>, pg_sys::Relation) {
    register_callback();
    let cached = LAYOUTS.with(|l| l.borrow().get(&(source, firing)).cloned());
    if let Some(layout) = cached {
        let generation = GENERATION.with(Cell::get);
        // SAFETY: try_relation_open returns NULL for a relation that is gone.
        let rel =
            unsafe { pg_sys::try_relation_open(layout.buffer, pg_sys::RowExclusiveLock as i32) };
        if !rel.is_null() && GENERATION.with(Cell::get) == generation {
            return (layout, rel);
        }
        if !rel.is_null() {
            // SAFETY: opened just above; the lock is kept.
            unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as i32) };
        }
        LAYOUTS.with(|l| l.borrow_mut().remove(&(source, firing)));
    }
    // Built with the buffer locked, from descriptors as they are now.
    let buffer_oid = buffer_of(source);
    // SAFETY: as above.
    let rel = unsafe { pg_sys::try_relation_open(buffer_oid, pg_sys::RowExclusiveLock as i32) };
    if rel.is_null() {
        no_buffer(source);
    }
    // SAFETY: rel is open and locked; firing_desc is the firing relation's.
    let layout = Rc::new(unsafe { build(source, firing, firing_desc, rel) });
    LAYOUTS.with(|l| l.borrow_mut().insert((source, firing), layout.clone()));
    (layout, rel)
}

/// The oid of source `source`'s change buffer, from the syscache.
fn buffer_of(source: u32) -> pg_sys::Oid {
    let name = CString::new(format!("changes_{source}")).unwrap_or_default();
    // SAFETY: syscache lookups by name; missing_ok for the namespace.
    let oid = unsafe {
        let ns = pg_sys::get_namespace_oid(c"pgtrickle_changes".as_ptr(), true);
        if ns == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            pg_sys::get_relname_relid(name.as_ptr(), ns)
        }
    };
    if oid == pg_sys::InvalidOid {
        no_buffer(source);
    }
    oid
}

fn no_buffer(source: u32) -> ! {
    raise(
        "55000",
        format!(
            "source {} has a pg_trickle capture trigger but no change buffer",
            name_of(source)
        ),
        Some("Drop the trigger, or re-create the stream tables that read the table.".into()),
    )
}

/// A relation's name for messages (its oid when it has none).
fn name_of(relid: u32) -> String {
    crate::spi::relation_name(relid).unwrap_or_else(|| relid.to_string())
}

/// The live attributes of `desc`: (0-based index, name, base type) of each
/// column not dropped.
///
/// # Safety
/// `desc` is a valid tuple descriptor.
unsafe fn attributes(desc: pg_sys::TupleDesc) -> Vec<(usize, String, pg_sys::Oid)> {
    // SAFETY: caller; the descriptor is not freed here.
    let desc = unsafe { PgTupleDesc::from_pg_unchecked(desc) };
    desc.iter()
        .enumerate()
        .filter(|(_, a)| !a.attisdropped)
        // SAFETY: getBaseType reads the type cache.
        .map(|(i, a)| {
            (i, a.name().to_string(), unsafe {
                pg_sys::getBaseType(a.atttypid)
            })
        })
        .collect()
}

/// Build the layout (see the module comment).
///
/// # Safety
/// `buffer` is open and locked; `firing_desc` is the firing relation's.
unsafe fn build(
    source: u32,
    firing: u32,
    firing_desc: pg_sys::TupleDesc,
    buffer: pg_sys::Relation,
) -> Layout {
    let src = || name_of(source);
    if firing != source && !descends_from(firing, source) {
        raise(
            "42501",
            format!(
                "pg_trickle capture of source {} fired on {}, which is neither that table nor one of its partitions or children",
                src(),
                name_of(firing)
            ),
            None,
        );
    }
    // SAFETY: the buffer is open (caller).
    let (relam, has_index, owner, buffer_desc, buffer_oid) = unsafe {
        let form = &*(*buffer).rd_rel;
        (
            form.relam,
            form.relhasindex,
            form.relowner,
            (*buffer).rd_att,
            (*buffer).rd_id,
        )
    };
    if relam != pg_sys::HEAP_TABLE_AM_OID || has_index {
        raise(
            "55000",
            format!(
                "the change buffer of source {} is not a plain heap table without indexes, which row capture writes",
                src()
            ),
            Some("Drop and re-create the stream tables that read this table.".into()),
        );
    }
    // The source's captured columns, in order (the firing relation's own
    // descriptor when it is the source).
    let source_columns: Vec<(String, pg_sys::Oid)> = {
        let own = firing == source;
        // SAFETY: RelationIdGetRelation pins the relcache entry without a
        // lock (its columns cannot change while the firing member is
        // locked); released right after.
        let cols = unsafe {
            let rel = if own {
                std::ptr::null_mut()
            } else {
                pg_sys::RelationIdGetRelation(pg_sys::Oid::from(source))
            };
            if !own && rel.is_null() {
                no_buffer(source);
            }
            let cols = attributes(if own { firing_desc } else { (*rel).rd_att });
            if !own {
                pg_sys::RelationClose(rel);
            }
            cols
        };
        cols.into_iter()
            .filter(|(_, n, _)| !n.starts_with("__pgt_"))
            .map(|(_, n, t)| (n, t))
            .collect()
    };
    // SAFETY: firing_desc is valid (caller).
    let firing_columns: HashMap<String, (usize, pg_sys::Oid)> = unsafe { attributes(firing_desc) }
        .into_iter()
        .map(|(i, n, t)| (n, (i, t)))
        .collect();
    let recreate =
        || Some("Drop and re-create the stream tables that read this table.".to_string());
    // SAFETY: the buffer's descriptor is valid while it is open.
    let buffer_desc = unsafe { PgTupleDesc::from_pg_unchecked(buffer_desc) };
    let mut slots = Vec::with_capacity(buffer_desc.len());
    for att in buffer_desc.iter() {
        if att.attisdropped {
            slots.push(Slot::Null);
            continue;
        }
        let col = att.name();
        // SAFETY: the type cache.
        let ty = unsafe { pg_sys::getBaseType(att.atttypid) };
        let fixed = |slot: Slot, expected: pg_sys::Oid| {
            if ty != expected {
                raise(
                    "55000",
                    format!(
                        "the change buffer of source {} has column {col} of an unexpected type",
                        src()
                    ),
                    recreate(),
                );
            }
            slot
        };
        let image = |k: &str, old: bool| -> Slot {
            let Some((column, source_type)) = k
                .parse::<usize>()
                .ok()
                .and_then(|k| k.checked_sub(1))
                .and_then(|i| source_columns.get(i))
            else {
                raise(
                    "55000",
                    format!(
                        "the change buffer of source {} has column {col}, but the table has {} captured columns",
                        src(),
                        source_columns.len()
                    ),
                    recreate(),
                )
            };
            let Some(&(index, firing_type)) = firing_columns.get(column) else {
                raise(
                    "55000",
                    format!(
                        "{} has no column {column}, which the change buffer of source {} captures",
                        name_of(firing),
                        src()
                    ),
                    recreate(),
                )
            };
            if ty != firing_type || ty != *source_type {
                raise(
                    "55000",
                    format!(
                        "the change buffer of source {} holds column {column} as another type than {} has now",
                        src(),
                        name_of(firing)
                    ),
                    recreate(),
                );
            }
            if old {
                Slot::Old(index)
            } else {
                Slot::New(index)
            }
        };
        slots.push(match col {
            "change_id" => fixed(Slot::ChangeId, pg_sys::INT8OID),
            "xid" => fixed(Slot::Xid, pg_sys::XID8OID),
            "op" => fixed(Slot::Op, pg_sys::CHAROID),
            "captured_at" => fixed(Slot::CapturedAt, pg_sys::TIMESTAMPTZOID),
            "traceparent" => fixed(Slot::TraceParent, pg_sys::TEXTOID),
            n if n.starts_with("__o") => image(&n[3..], true),
            n if n.starts_with("__n") => image(&n[3..], false),
            _ => raise(
                "55000",
                format!(
                    "the change buffer of source {} has a column {col} that capture does not know",
                    src()
                ),
                recreate(),
            ),
        });
    }
    let olds = slots.iter().filter(|s| matches!(s, Slot::Old(_))).count();
    let news = slots.iter().filter(|s| matches!(s, Slot::New(_))).count();
    if olds != source_columns.len() || news != olds || !slots.contains(&Slot::ChangeId) {
        raise(
            "55000",
            format!(
                "the change buffer of source {} was made for {olds} columns, but the table has {}",
                src(),
                source_columns.len()
            ),
            recreate(),
        );
    }
    let (sequence, increment) = identity_sequence(source);
    Layout {
        source: pg_sys::Oid::from(source),
        firing: pg_sys::Oid::from(firing),
        buffer: buffer_oid,
        owner,
        sequence,
        increment,
        slots,
    }
}

/// The buffer's `change_id` sequence and its increment (looked up through
/// the catalog snapshot, which is current, not the statement's).
fn identity_sequence(source: u32) -> (pg_sys::Oid, i64) {
    let row = crate::spi::row(
        "SELECT s.seqrelid::pg_catalog.text, s.seqincrement::pg_catalog.text \
         FROM pg_catalog.pg_sequence s \
         WHERE s.seqrelid OPERATOR(pg_catalog.=) \
               pg_catalog.pg_get_serial_sequence($1, 'change_id')::pg_catalog.regclass::pg_catalog.oid",
        &[Some(format!("pgtrickle_changes.changes_{source}"))],
    );
    let parsed = row.and_then(|r| {
        let oid = r.first()?.as_deref()?.parse::<u32>().ok()?;
        let increment = r.get(1)?.as_deref()?.parse::<i64>().ok()?;
        Some((pg_sys::Oid::from(oid), increment))
    });
    parsed.unwrap_or_else(|| {
        raise(
            "55000",
            format!(
                "the change buffer of source {} has no change_id sequence",
                name_of(source)
            ),
            Some("Drop and re-create the stream tables that read this table.".into()),
        )
    })
}

/// Whether `relid` is a partition or inheritance descendant of `ancestor`,
/// read from `pg_inherits` under the latest snapshot (a REPEATABLE READ
/// writer's own snapshot may predate the link).
fn descends_from(relid: u32, ancestor: u32) -> bool {
    let sql = CString::new(format!(
        "WITH RECURSIVE up(r) AS (SELECT {relid}::pg_catalog.oid UNION \
         SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid OPERATOR(pg_catalog.=) up.r) \
         SELECT pg_catalog.bool_or(up.r OPERATOR(pg_catalog.=) {ancestor}::pg_catalog.oid)::pg_catalog.text FROM up"
    ))
    .unwrap_or_default();
    // SAFETY: a read-only SPI query run under a snapshot pushed for it and
    // popped after; an error aborts the (sub)transaction, which unwinds both.
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            raise("XX000", "SPI_connect failed in capture", None);
        }
        pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
        let rc = pg_sys::SPI_execute(sql.as_ptr(), true, 1);
        let answer = if rc == pg_sys::SPI_OK_SELECT as i32 && pg_sys::SPI_processed > 0 {
            let table = pg_sys::SPI_tuptable;
            let v = pg_sys::SPI_getvalue(*(*table).vals, (*table).tupdesc, 1);
            !v.is_null() && CStr::from_ptr(v).to_bytes() == b"true"
        } else {
            false
        };
        pg_sys::PopActiveSnapshot();
        pg_sys::SPI_finish();
        answer
    }
}
