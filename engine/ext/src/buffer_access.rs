//! Change buffers read with the extension's rights inside the owner's
//! refresh statement, the way a view's query reads its tables with the
//! view owner's rights.
//!
//! A DIFFERENTIAL refresh is one statement that reads the change buffers
//! and the sources together, in one snapshot. It runs as the stream
//! table's owner (see `security`), yet no role but the extension owner may
//! read a change buffer: buffers hold every row image of a source,
//! including deleted ones and columns the owner may not be granted.
//!
//! Before running such a statement the refresh registers a one-shot
//! [`Grant`]: the statement's exact text, the buffers it may read and the
//! role it runs as. An `ExecutorStart` hook looks for the first statement
//! started by that role with that text, and marks its range-table entries
//! for those buffers (only entries that merely read, and are not already
//! checked as another role) to be checked as the extension owner, exactly
//! as PostgreSQL marks the tables under a view. It marks copies (of the
//! plan's top node, its list of entries and the entries it marks), which
//! the run uses: the plan itself may be kept for later runs
//! (`spi::refresh_row`), and carries no mark into them. Every other entry of the
//! statement (the sources, functions, the storage) is still checked as the
//! owner. The grant is consumed by that statement and removed when the
//! refresh returns, so no other statement (in particular nothing the
//! defining query's functions run) can use it.

use std::cell::RefCell;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgList;

/// A one-shot permission for one statement to read some change buffers.
struct Grant {
    sql: String,
    buffers: Vec<pg_sys::Oid>,
    runs_as: pg_sys::Oid,
    check_as: pg_sys::Oid,
}

thread_local! {
    static PENDING: RefCell<Option<Grant>> = const { RefCell::new(None) };
}

static mut PREVIOUS_HOOK: pg_sys::ExecutorStart_hook_type = None;

/// Install the hook; called once from `_PG_init`.
pub fn install() {
    // SAFETY: _PG_init runs once per process, before any statement of ours.
    unsafe {
        PREVIOUS_HOOK = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
    }
}

/// Removes the grant when the refresh statement returns (or fails).
pub struct GrantScope;

impl Drop for GrantScope {
    fn drop(&mut self) {
        PENDING.with(|p| p.borrow_mut().take());
    }
}

/// Let the next statement with text `sql`, started by `runs_as`, read the
/// change buffers `buffers` (relation oids) as `check_as`.
#[must_use = "the grant lasts as long as the returned scope"]
pub fn allow(
    sql: &str,
    buffers: Vec<u32>,
    runs_as: pg_sys::Oid,
    check_as: pg_sys::Oid,
) -> GrantScope {
    PENDING.with(|p| {
        *p.borrow_mut() = Some(Grant {
            sql: sql.to_string(),
            buffers: buffers.into_iter().map(pg_sys::Oid::from).collect(),
            runs_as,
            check_as,
        })
    });
    GrantScope
}

/// Take the pending grant if `query_desc` is the statement it was made for.
unsafe fn take_matching(query_desc: *mut pg_sys::QueryDesc) -> Option<Grant> {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let grant = p.as_ref()?;
        let text = (*query_desc).sourceText;
        if text.is_null() || pg_sys::GetUserId() != grant.runs_as {
            return None;
        }
        if CStr::from_ptr(text).to_bytes() != grant.sql.as_bytes() {
            return None;
        }
        p.take()
    })
}

/// Whether the entry that reads `relid` with `perms` as `check_as` is
/// one the grant marks: a buffer it names, only read, checked as no one
/// else already.
fn marks(grant: &Grant, relid: pg_sys::Oid, perms: pg_sys::AclMode, check_as: pg_sys::Oid) -> bool {
    grant.buffers.contains(&relid)
        && check_as == pg_sys::InvalidOid
        && perms == pg_sys::ACL_SELECT as pg_sys::AclMode
}

/// A new list (in the current memory context) holding, for each element
/// of `list`, what `replace` returns for it, or the element itself where
/// it returns `None`: unreplaced elements are shared, not copied.
///
/// # Safety
/// `list` is a valid pointer list.
unsafe fn with_replaced<T>(
    list: *mut pg_sys::List,
    mut replace: impl FnMut(*mut T) -> Option<*mut T>,
) -> *mut pg_sys::List {
    // SAFETY: caller.
    let old = unsafe { PgList::<T>::from_pg(list) };
    let mut new = PgList::<T>::new();
    for element in old.iter_ptr() {
        new.push(replace(element).unwrap_or(element));
    }
    new.into_pg()
}

/// Mark, in `stmt`, the grant's buffers to be checked as the extension
/// owner: the marked entries are copies in a new list, so the plan `stmt`
/// was copied from still shares every other part and carries no mark.
#[cfg(feature = "pg15")]
unsafe fn apply(stmt: *mut pg_sys::PlannedStmt, grant: &Grant) {
    // SAFETY: the range table of a valid plan; a marked entry is copied
    // before it is changed.
    unsafe {
        (*stmt).rtable = with_replaced((*stmt).rtable, |rte: *mut pg_sys::RangeTblEntry| {
            let hit = (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
                && marks(
                    grant,
                    (*rte).relid,
                    (*rte).requiredPerms,
                    (*rte).checkAsUser,
                );
            hit.then(|| {
                let copy = pg_sys::copyObjectImpl(rte.cast()).cast::<pg_sys::RangeTblEntry>();
                (*copy).checkAsUser = grant.check_as;
                copy
            })
        });
    }
}

/// As for PostgreSQL 15, on the plan's permission entries.
#[cfg(any(feature = "pg16", feature = "pg17"))]
unsafe fn apply(stmt: *mut pg_sys::PlannedStmt, grant: &Grant) {
    // SAFETY: as above.
    unsafe {
        (*stmt).permInfos =
            with_replaced((*stmt).permInfos, |info: *mut pg_sys::RTEPermissionInfo| {
                marks(
                    grant,
                    (*info).relid,
                    (*info).requiredPerms,
                    (*info).checkAsUser,
                )
                .then(|| {
                    let copy =
                        pg_sys::copyObjectImpl(info.cast()).cast::<pg_sys::RTEPermissionInfo>();
                    (*copy).checkAsUser = grant.check_as;
                    copy
                })
            });
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    if let Some(grant) = take_matching(query_desc) {
        // The marks go on a copy, made in the memory of this run: the plan
        // may be a kept generic one (see `spi::refresh_row`), which must
        // not read a buffer in a later run that no grant allowed. Only the
        // statement's top node and the entries marked are copied; the
        // rest (the plan tree) is shared, as the executor only reads a
        // plan, which is how PostgreSQL runs its own cached plans.
        // Copying the whole plan was a twentieth of a warm refresh.
        let copy = pg_sys::palloc(std::mem::size_of::<pg_sys::PlannedStmt>())
            .cast::<pg_sys::PlannedStmt>();
        std::ptr::copy_nonoverlapping((*query_desc).plannedstmt, copy, 1);
        apply(copy, &grant);
        (*query_desc).plannedstmt = copy;
    }
    match PREVIOUS_HOOK {
        Some(previous) => previous(query_desc, eflags),
        None => pg_sys::standard_ExecutorStart(query_desc, eflags),
    }
}
