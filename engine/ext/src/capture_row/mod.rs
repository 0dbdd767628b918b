//! The row capture trigger: one changed row of a source becomes one row of
//! its change buffer, written straight into the buffer's heap.
//!
//! Every captured source, its partitions (by cloning) and its inheritance
//! children fire `pgtrickle._capture_row('<source oid>')` AFTER each
//! inserted, updated or deleted row. It is a plain C-ABI function, not
//! PL/pgSQL: a PL/pgSQL trigger that ran one `INSERT` per row as a
//! `SECURITY DEFINER` function with a pinned `search_path` cost a writer
//! about 10 µs per row, most of it in switching settings and interpreting
//! the function. This one forms the buffer tuple from the row images and
//! inserts it with `simple_heap_insert`, as `COPY` does without indexes.
//!
//! It needs no rights of its own: the insert goes below the permission
//! checks (a writer may not touch a buffer through SQL), and it resolves
//! no name at write time. The only privileged step is drawing change ids
//! from the buffer's identity sequence, done as the buffer's owner: one
//! draw numbers a block of rows of the transaction (see
//! `pg_trickle_core::change_ids`).
//! Only the extension owner may execute the function, so only pg_trickle
//! creates triggers with it; even so, a trigger fires only for the source
//! its argument names or for one of that source's partitions or children.
//!
//! What it needs to know about a (source, firing relation) pair, the
//! [`Layout`], is read from the live relation descriptors once per backend
//! and kept until a relcache invalidation of one of the relations involved
//! (see `layout`). Column types are checked when the layout is built: a
//! buffer column whose type no longer matches the source column refuses
//! the write (55000) rather than storing a datum of another type.

mod layout;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;

use pg_trickle_core::change_ids::{self, IdBlock};

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::spi::raise;
use layout::{Layout, Slot};

/// The version-1 calling convention record of [`pgtrickle_capture_row`].
#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_pgtrickle_capture_row() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// `pgtrickle._capture_row()`: the AFTER row trigger of every captured
/// source (see the module comment). Its one argument is the source's oid.
///
/// # Safety
/// Called by PostgreSQL's function manager as a trigger.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pgtrickle_capture_row(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the function manager passes a valid fcinfo.
    unsafe {
        capture(crate::triggers::trigger_data(
            fcinfo,
            "pgtrickle._capture_row()",
        ))
    };
    pg_sys::Datum::from(0)
}

/// The source oid a capture trigger names as its argument.
///
/// # Safety
/// `td` is the TriggerData of a running trigger.
unsafe fn source_argument(td: &pg_sys::TriggerData) -> u32 {
    // SAFETY: tg_trigger and its tgargs array are valid while it fires.
    let arg = unsafe {
        let trigger = &*td.tg_trigger;
        (trigger.tgnargs == 1)
            .then(|| CStr::from_ptr(*trigger.tgargs).to_str().ok())
            .flatten()
    };
    arg.and_then(|a| a.parse::<u32>().ok()).unwrap_or_else(|| {
        raise(
            "39P01",
            "pgtrickle._capture_row() takes the captured source's oid as its one argument",
            None,
        )
    })
}

/// Write one buffer row for the change `td` fires for.
///
/// # Safety
/// `td` is the TriggerData of a running trigger.
unsafe fn capture(td: &pg_sys::TriggerData) {
    let event = td.tg_event;
    if event & pg_sys::TRIGGER_EVENT_ROW == 0 || event & pg_sys::TRIGGER_EVENT_TIMINGMASK != 0 {
        raise(
            "39P01",
            "pgtrickle._capture_row() must fire AFTER each row",
            None,
        );
    }
    // SAFETY: td is valid (caller).
    let source = unsafe { source_argument(td) };
    let firing_rel = td.tg_relation;
    // SAFETY: the firing relation is open while its trigger fires.
    let (firing, relkind, firing_desc) = unsafe {
        (
            (*firing_rel).rd_id.to_u32(),
            (*(*firing_rel).rd_rel).relkind as u8,
            (*firing_rel).rd_att,
        )
    };
    // Rows of a foreign partition are captured on its node, from the WAL
    // (see `remote_capture`), not by the trigger cloned onto it.
    if firing != source && relkind == pg_sys::RELKIND_FOREIGN_TABLE {
        return;
    }
    let (old, new, op) = match event & pg_sys::TRIGGER_EVENT_OPMASK {
        pg_sys::TRIGGER_EVENT_INSERT => (std::ptr::null_mut(), td.tg_trigtuple, b'I'),
        pg_sys::TRIGGER_EVENT_UPDATE => (td.tg_trigtuple, td.tg_newtuple, b'U'),
        pg_sys::TRIGGER_EVENT_DELETE => (td.tg_trigtuple, std::ptr::null_mut(), b'D'),
        _ => raise(
            "39P01",
            "pgtrickle._capture_row() fires on INSERT, UPDATE and DELETE only",
            None,
        ),
    };
    let (layout, buffer) = layout::open(source, firing, firing_desc);
    // SAFETY: firing_desc describes the tuples the trigger passed; the
    // buffer is open and locked, and its descriptor has one slot per
    // attribute as the layout was built against it (checked there).
    unsafe {
        let old_image = deform(old, firing_desc);
        let new_image = deform(new, firing_desc);
        let desc = (*buffer).rd_att;
        let natts = (*desc).natts as usize;
        if natts != layout.slots.len() {
            raise(
                "55000",
                format!("the change buffer of source {source} changed while it was written"),
                None,
            );
        }
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        for (i, slot) in layout.slots.iter().enumerate() {
            let value = match *slot {
                Slot::ChangeId => Some(pg_sys::Datum::from(next_change_id(&layout))),
                Slot::Xid => Some(pg_sys::Datum::from(pg_sys::GetTopFullTransactionId().value)),
                Slot::Op => Some(pg_sys::Datum::from(op as i8)),
                Slot::CapturedAt => Some(pg_sys::Datum::from(
                    pg_sys::GetCurrentTransactionStartTimestamp(),
                )),
                Slot::TraceParent => trace_parent(),
                Slot::Old(a) => old_image.as_ref().and_then(|img| img.get(a)),
                Slot::New(a) => new_image.as_ref().and_then(|img| img.get(a)),
                Slot::Null => None,
            };
            if let Some(v) = value {
                values[i] = v;
                nulls[i] = false;
            }
        }
        let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::simple_heap_insert(buffer, tuple);
        pg_sys::heap_freetuple(tuple);
        // The lock is kept until the transaction ends, as for any write.
        pg_sys::relation_close(buffer, pg_sys::NoLock as i32);
    }
}

/// A row image's attribute values, by attribute number minus one.
struct Image {
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Image {
    fn get(&self, attribute: usize) -> Option<pg_sys::Datum> {
        (!self.nulls[attribute]).then(|| self.values[attribute])
    }
}

/// Deform `tuple` (described by `desc`), or `None` for no tuple.
///
/// # Safety
/// `tuple`, when not null, is a valid heap tuple of descriptor `desc`.
unsafe fn deform(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc) -> Option<Image> {
    if tuple.is_null() {
        return None;
    }
    // SAFETY: caller; heap_deform_tuple fills natts entries (attributes
    // the tuple predates get their missing value or NULL).
    unsafe {
        let natts = (*desc).natts as usize;
        let mut image = Image {
            values: vec![pg_sys::Datum::from(0); natts],
            nulls: vec![true; natts],
        };
        pg_sys::heap_deform_tuple(
            tuple,
            desc,
            image.values.as_mut_ptr(),
            image.nulls.as_mut_ptr(),
        );
        Some(image)
    }
}

thread_local! {
    /// The change-id blocks this transaction drew, by sequence (see
    /// `pg_trickle_core::change_ids`).
    static ID_BLOCKS: RefCell<HashMap<u32, Option<IdBlock>>> = RefCell::new(HashMap::new());
    /// Whether [`forget_blocks_at_transaction_end`] is registered here.
    static ID_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Forget every change-id block this backend drew: the next captured row
/// of each buffer draws anew, past every id handed out so far. A refresh
/// calls this around recording its own-change positions (the ids its
/// transaction writes afterwards must come after them); the end of every
/// transaction does too.
pub fn forget_change_id_blocks() {
    ID_BLOCKS.with(|b| b.borrow_mut().clear());
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_blocks_at_transaction_end(
    _event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    forget_change_id_blocks();
}

/// The next change id of the buffer `layout` writes: from this
/// transaction's block of its sequence, or from a new draw.
fn next_change_id(layout: &Layout) -> i64 {
    if !ID_CALLBACK.with(Cell::get) {
        // SAFETY: registers a callback that lives as long as the library.
        unsafe {
            pg_sys::RegisterXactCallback(
                Some(forget_blocks_at_transaction_end),
                std::ptr::null_mut(),
            )
        };
        ID_CALLBACK.with(|c| c.set(true));
    }
    let key = layout.sequence.to_u32();
    let mut block = ID_BLOCKS.with(|b| b.borrow_mut().remove(&key).flatten());
    let before = layout::generation();
    let id = change_ids::next_id(&mut block, layout.increment, || draw_change_ids(layout));
    if layout::generation() != before {
        // An invalidation arrived while the sequence was locked for the
        // draw (an ALTER of it committed since the layout was read): the
        // increment it was drawn with is not known, so only the drawn id
        // itself is taken.
        block = None;
    }
    ID_BLOCKS.with(|b| b.borrow_mut().insert(key, block));
    id
}

/// One `nextval` of the buffer's change-id sequence, drawn as the buffer's
/// owner (writers have no rights on the sequence).
fn draw_change_ids(layout: &Layout) -> i64 {
    let mut user = pg_sys::InvalidOid;
    let mut sec = 0;
    // SAFETY: the switch PostgreSQL's own code makes around privileged
    // steps; undone right after, or by the abort that follows an error.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut sec);
        pg_sys::SetUserIdAndSecContext(
            layout.owner,
            sec | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        // nextval(regclass), a built-in found without a catalog lookup.
        let id = pg_sys::OidFunctionCall1Coll(
            pg_sys::Oid::from(pg_sys::F_NEXTVAL),
            pg_sys::InvalidOid,
            pg_sys::Datum::from(layout.sequence),
        );
        pg_sys::SetUserIdAndSecContext(user, sec);
        id.value() as i64
    }
}

/// `pg_trickle.traceparent` as a text datum, or `None` when unset.
fn trace_parent() -> Option<pg_sys::Datum> {
    let value = crate::gucs::TRACEPARENT.get()?;
    if value.as_bytes().is_empty() {
        return None;
    }
    // SAFETY: cstring_to_text copies the NUL-terminated string.
    Some(pg_sys::Datum::from(unsafe {
        pg_sys::cstring_to_text(value.as_ptr())
    }))
}
