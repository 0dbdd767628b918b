//! Reads of catalog rows by key, through an index scan instead of SQL.
//!
//! A refresh reads a dozen catalog rows by key (its sources, their buffers,
//! how each is captured, the extension's owner). Through SPI, each read is
//! a statement that a new backend parses, analyses and plans the first time
//! (0.1 to 0.4 ms apiece, most of what a refresh on a new connection costs
//! over a warm one) and that every backend then runs through the executor.
//! Read here, a lookup is a scan of the table's btree index on the key: no
//! parse, plan or executor, in a new backend or an old one.
//!
//! Rows are seen as a statement run at this point would see them: the
//! transaction's own earlier writes included (the command counter is
//! advanced first, as SPI does before a statement), under a snapshot taken
//! now in READ COMMITTED and the transaction's in REPEATABLE READ and above.
//! Locks are kept to the end of the transaction, as a statement's are.
//!
//! Only equality on the leading columns of a btree index is served here;
//! every other read, and every write, stays SQL in its table's module. The
//! index is found by its columns, not its name, so a catalog built by any
//! upgrade path serves alike (without one, the heap is scanned).

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::{IntoDatum, PgList};

use crate::spi::{internal, Row};

/// A key value, in the types pg_trickle's catalog keys have.
#[derive(Debug, Clone, Copy)]
pub enum Key {
    /// A `bigint` key (stream table ids).
    Int8(i64),
    /// An `oid` key (relations, extensions).
    Oid(u32),
}

impl Key {
    /// The equality function comparing a key column with this value, and
    /// the value as a datum.
    fn equality(self) -> (pg_sys::Oid, pg_sys::Datum) {
        match self {
            Key::Int8(v) => (pg_sys::Oid::from(pg_sys::F_INT8EQ), pg_sys::Datum::from(v)),
            Key::Oid(v) => (
                pg_sys::Oid::from(pg_sys::F_OIDEQ),
                pg_sys::Datum::from(pg_sys::Oid::from(v)),
            ),
        }
    }
}

/// The rows of `schema.table` whose key columns equal `keys` (in index
/// order), each as the text of `columns`: what `SELECT columns::text
/// FROM schema.table WHERE key = value ...` returns, booleans as `true`
/// and `false`. A missing table or column is an internal error.
pub fn lookup(schema: &CStr, table: &CStr, keys: &[(&CStr, Key)], columns: &[&CStr]) -> Vec<Row> {
    let name = || format!("{}.{}", schema.to_string_lossy(), table.to_string_lossy());
    // SAFETY: catalog calls raise ERROR (turned into a Rust panic by
    // pgrx's guard) rather than return invalid pointers; the relation, the
    // scan and the snapshot are released below or by the (sub)transaction
    // abort that follows an error.
    unsafe {
        // What SPI does before a statement: earlier commands become visible.
        pg_sys::CommandCounterIncrement();
        let namespace = pg_sys::get_namespace_oid(schema.as_ptr(), true);
        let relid = if namespace == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            pg_sys::get_relname_relid(table.as_ptr(), namespace)
        };
        if relid == pg_sys::InvalidOid {
            internal(format!("catalog table {} does not exist", name()));
        }
        let attnum = |column: &CStr| {
            let n = pg_sys::get_attnum(relid, column.as_ptr());
            // 0: no such column; below 0: a system column, not served.
            if n <= 0 {
                internal(format!(
                    "catalog table {} has no column {}",
                    name(),
                    column.to_string_lossy()
                ));
            }
            n
        };
        let key_columns: Vec<pg_sys::AttrNumber> = keys.iter().map(|(c, _)| attnum(c)).collect();
        let wanted: Vec<pg_sys::AttrNumber> = columns.iter().map(|c| attnum(c)).collect();
        let rel = pg_sys::table_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let index = index_on(rel, &key_columns);
        let mut scan_keys: Vec<pg_sys::ScanKeyData> = keys
            .iter()
            .zip(&key_columns)
            .map(|((_, key), attnum)| {
                let (equals, datum) = key.equality();
                let mut k = std::mem::zeroed::<pg_sys::ScanKeyData>();
                // The relation's column number: systable_beginscan maps
                // it to the index's.
                pg_sys::ScanKeyInit(
                    &mut k,
                    *attnum,
                    pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                    equals,
                    datum,
                );
                k
            })
            .collect();
        let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot());
        // Without a usable index, the heap is scanned with the same keys.
        let scan = pg_sys::systable_beginscan(
            rel,
            index.unwrap_or(pg_sys::InvalidOid),
            index.is_some(),
            snapshot,
            scan_keys.len() as i32,
            scan_keys.as_mut_ptr(),
        );
        let desc = (*rel).rd_att;
        let mut rows = Vec::new();
        loop {
            let tuple = pg_sys::systable_getnext(scan);
            if tuple.is_null() {
                break;
            }
            rows.push(wanted.iter().map(|a| text_of(tuple, desc, *a)).collect());
        }
        pg_sys::systable_endscan(scan);
        pg_sys::UnregisterSnapshot(snapshot);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        rows
    }
}

/// Column `column` of pg_trickle's row in `pg_extension`, as text; `None`
/// when the extension is not installed in this database.
pub fn extension_column(column: &CStr) -> Option<String> {
    // SAFETY: get_extension_oid with missing_ok=true returns InvalidOid when absent.
    let ext = unsafe { pg_sys::get_extension_oid(c"pg_trickle".as_ptr(), true) };
    if ext == pg_sys::InvalidOid {
        return None;
    }
    lookup(
        c"pg_catalog",
        c"pg_extension",
        &[(c"oid", Key::Oid(ext.to_u32()))],
        &[column],
    )
    .into_iter()
    .next()
    .and_then(|row| row.into_iter().next().flatten())
}

/// A valid btree index of `rel` without predicate whose leading key
/// columns are `columns`, in that order, and which any snapshot may use
/// (not one built concurrently with transactions still older than it,
/// `indcheckxmin`, which the planner would not use either).
///
/// # Safety
/// `rel` is an open relation.
unsafe fn index_on(rel: pg_sys::Relation, columns: &[pg_sys::AttrNumber]) -> Option<pg_sys::Oid> {
    // SAFETY: the index list and each index's descriptor are valid while
    // the relation is open; each index is closed before the next.
    unsafe {
        let list = PgList::<std::ffi::c_void>::from_pg(pg_sys::RelationGetIndexList(rel));
        for oid in list.iter_oid() {
            let index = pg_sys::index_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let form = &*(*index).rd_index;
            let nkeys = form.indnkeyatts as usize;
            let fits = (*(*index).rd_rel).relam == pg_sys::BTREE_AM_OID
                && form.indisvalid
                && !form.indcheckxmin
                && nkeys >= columns.len()
                && form.indkey.values.as_slice(nkeys)[..columns.len()] == *columns
                && pg_sys::heap_attisnull(
                    (*index).rd_indextuple,
                    pg_sys::Anum_pg_index_indpred as i32,
                    std::ptr::null_mut(),
                );
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
            if fits {
                return Some(oid);
            }
        }
        None
    }
}

/// Column `attnum` of `tuple` as text (its type's output, booleans as
/// `true`/`false` as a `::text` cast prints them), NULL as `None`.
///
/// # Safety
/// `tuple` is a valid tuple of a relation described by `desc`.
unsafe fn text_of(
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
    attnum: pg_sys::AttrNumber,
) -> Option<String> {
    // SAFETY: as the caller promises; the output function's result is a
    // palloc'd C string, copied out right away.
    unsafe {
        let mut isnull = false;
        let datum = pg_sys::heap_getattr(tuple, attnum as i32, desc, &mut isnull);
        if isnull {
            return None;
        }
        let typid = (*(*desc).attrs.as_ptr().add(attnum as usize - 1)).atttypid;
        if typid == pg_sys::BOOLOID {
            return Some(if datum.value() != 0 { "true" } else { "false" }.to_string());
        }
        let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
        pg_sys::getTypeOutputInfo(typid, &mut output, &mut varlena);
        let text = pg_sys::OidOutputFunctionCall(output, datum);
        let owned = CStr::from_ptr(text).to_string_lossy().into_owned();
        pg_sys::pfree(text.cast());
        Some(owned)
    }
}

/// The oid of the relation `name` names (qualified, or resolved under the
/// current search_path), as `to_regclass(name)` returns it: `None` when
/// there is none. Called directly, without SQL.
pub fn to_regclass(name: &str) -> Option<u32> {
    // SAFETY: to_regclass takes one text argument and returns an oid or
    // NULL; it may raise (a malformed name before PostgreSQL 16, a schema
    // the caller may not use), as the SQL call did.
    unsafe { pgrx::direct_function_call::<pg_sys::Oid>(pg_sys::to_regclass, &[name.into_datum()]) }
        .map(|oid| oid.to_u32())
        .filter(|oid| *oid != 0)
}

/// What the relation cache knows of a relation that row-level security
/// and ownership checks need.
#[derive(Debug, Clone, Copy)]
pub struct RelationFacts {
    /// `pg_class.relowner`.
    pub owner: pg_sys::Oid,
    /// `pg_class.relrowsecurity`.
    pub row_security: bool,
    /// `pg_class.relforcerowsecurity`.
    pub force_row_security: bool,
}

/// [`RelationFacts`] of `relid` from the system cache, `None` when no
/// such relation exists.
pub fn relation_facts(relid: u32) -> Option<RelationFacts> {
    // SAFETY: a syscache lookup by oid; the tuple is read and released
    // right away.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(pg_sys::Oid::from(relid)),
        );
        if tuple.is_null() {
            return None;
        }
        let form = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple);
        let facts = RelationFacts {
            owner: form.relowner,
            row_security: form.relrowsecurity,
            force_row_security: form.relforcerowsecurity,
        };
        pg_sys::ReleaseSysCache(tuple);
        Some(facts)
    }
}
