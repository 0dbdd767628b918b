//! Who runs what: the one place where the extension changes identity.
//!
//! The SQL API runs as its caller, who may be an ordinary role. Three
//! identities are involved in every call:
//!
//! * the **caller**, whose rights decide what it may do (it must own, or
//!   be a member of the owner of, a stream table it controls);
//! * the **extension owner** (the superuser who ran `CREATE EXTENSION`),
//!   which owns the catalog, the change buffers and the capture functions:
//!   catalog reads and writes and capture set-up run as it, with
//!   `search_path` pinned to `pg_catalog, pg_temp` so that nothing a caller
//!   put on its path can be resolved while the extension's rights are in
//!   force ([`as_extension`]);
//! * the stream table's **owner** (the owner of its storage table): the
//!   defining query, and every statement built from it, runs as the owner
//!   inside a security-restricted operation with the search_path recorded
//!   at creation, as `REFRESH MATERIALIZED VIEW` runs a view's query as
//!   its owner ([`as_owner`]).
//!
//! Switching is done with `SetUserIdAndSecContext` and a GUC nest level,
//! and undone when the closure returns. When an error unwinds through a
//! switch, the (sub)transaction abort that follows restores both, as it
//! does for PostgreSQL's own switches.

use std::ffi::CString;

use pgrx::pg_sys;

use crate::spi::raise;

/// The search_path the extension runs its own statements under.
pub const PINNED_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// The role the current statement runs as: the caller, when read before
/// any switch (inside [`as_extension`] it is the extension owner).
pub fn caller() -> pg_sys::Oid {
    // SAFETY: reads a backend global; valid in any initialised backend.
    unsafe { pg_sys::GetUserId() }
}

/// A role's name, for messages.
pub fn role_name(role: pg_sys::Oid) -> String {
    // SAFETY: GetUserNameFromId with noerr=true returns NULL for a missing role.
    unsafe {
        let p = pg_sys::GetUserNameFromId(role, true);
        if p.is_null() {
            format!("role {}", role.to_u32())
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// Whether `member` has the privileges of `role` (is it, is a member of
/// it with inheritance, or is a superuser): PostgreSQL's ownership test.
pub fn has_privs_of(member: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup with no preconditions beyond a transaction.
    unsafe { pg_sys::has_privs_of_role(member, role) }
}

/// Whether `role` is a superuser.
pub fn is_superuser(role: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup.
    unsafe { pg_sys::superuser_arg(role) }
}

/// Whether `role` may read every stream table's status and definition:
/// superusers and members of `pg_read_all_stats` (and so `pg_monitor`),
/// as for other sessions' query text in `pg_stat_activity`.
pub fn is_monitor(role: pg_sys::Oid) -> bool {
    has_privs_of(role, pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS))
}

/// Raise 42501 unless `me` (the caller, read before any switch) has the
/// privileges of `owner`.
pub fn require_owner(me: pg_sys::Oid, owner: pg_sys::Oid, what: &str) {
    if !has_privs_of(me, owner) {
        raise(
            "42501",
            format!("must be owner of {what}"),
            Some(format!(
                "{what} is owned by {}; {} is not a member of that role.",
                role_name(owner),
                role_name(me)
            )),
        );
    }
}

/// Raise 42501 unless the caller is a superuser.
pub fn require_superuser(what: &str) {
    if !is_superuser(caller()) {
        raise(
            "42501",
            format!("permission denied: {what} acts on every stream table and is reserved to superusers"),
            Some("Use the per-stream-table function on the stream tables you own.".into()),
        );
    }
}

/// The owner of pg_trickle in this database, or `None` when it is not installed.
pub fn extension_owner() -> Option<pg_sys::Oid> {
    crate::catalog::direct::extension_column(c"extowner")
        .and_then(|v| v.parse::<u32>().ok())
        .map(pg_sys::Oid::from)
}

/// A switched identity and search_path, undone on drop.
struct Switch {
    user: pg_sys::Oid,
    sec_context: i32,
    nest_level: i32,
}

impl Switch {
    fn enter(user: pg_sys::Oid, extra_sec: u32, search_path: &str) -> Switch {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_sec = 0;
        let path = CString::new(search_path)
            .unwrap_or_else(|_| raise("22021", "a recorded search_path contains a NUL byte", None));
        // SAFETY: the documented way to switch identity and settings for a
        // stretch of code, as RefreshMatViewByOid does; undone in Drop or by
        // the (sub)transaction abort that follows an error.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_sec);
            pg_sys::SetUserIdAndSecContext(
                user,
                saved_sec | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | extra_sec as i32,
            );
            let nest_level = pg_sys::NewGUCNestLevel();
            set_in_switch(c"search_path", &path);
            // Row images are compared by their text (netting changes,
            // matching stored rows): floats must print exactly, whatever
            // the session that runs the refresh set.
            set_in_switch(c"extra_float_digits", c"1");
            Switch {
                user: saved_user,
                sec_context: saved_sec,
                nest_level,
            }
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // An error is unwinding: the abort of the (sub)transaction it
            // ends in restores the identity and the settings.
            return;
        }
        // SAFETY: undoes exactly what `enter` did, in reverse order.
        unsafe {
            pg_sys::AtEOXact_GUC(false, self.nest_level);
            pg_sys::SetUserIdAndSecContext(self.user, self.sec_context);
        }
    }
}

/// Run `f` as the extension owner with the search_path pinned to
/// `pg_catalog, pg_temp`. When pg_trickle is not installed here (the
/// scheduler between a DROP and a CREATE EXTENSION), only the path is pinned.
pub fn as_extension<R>(f: impl FnOnce() -> R) -> R {
    // The owner lookup itself runs pinned.
    let owner = {
        let _pin = Switch::enter(caller(), 0, PINNED_SEARCH_PATH);
        extension_owner()
    };
    let _switch = Switch::enter(owner.unwrap_or_else(caller), 0, PINNED_SEARCH_PATH);
    keep_ddl_local();
    f()
}

/// With Citus loaded, keep pg_trickle's own objects (buffers, capture
/// functions, stream table storage) on this node: Citus would otherwise
/// create them on every node, inside the transaction that also sets up
/// capture there, which then waits on itself. Undone with the enclosing
/// [`Switch`]'s settings.
fn keep_ddl_local() {
    set_citus_ddl_propagation(false);
}

/// Set `citus.enable_ddl_propagation` for the rest of the enclosing
/// [`Switch`], when Citus is loaded (nothing otherwise).
pub fn set_citus_ddl_propagation(on: bool) {
    // SAFETY: reading a setting by name; missing_ok returns NULL when the
    // setting does not exist (Citus not loaded).
    let exists = unsafe {
        !pg_sys::GetConfigOption(c"citus.enable_ddl_propagation".as_ptr(), true, false).is_null()
    };
    if !exists {
        return;
    }
    let value = if on { c"on" } else { c"off" };
    set_in_switch(c"citus.enable_ddl_propagation", value);
}

/// Set a setting until the enclosing [`Switch`]'s GUC nest level closes
/// (or the abort of an error restores it).
fn set_in_switch(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    // SAFETY: saved at the nest level the switch opened (GUC_ACTION_SAVE)
    // and restored by `AtEOXact_GUC` in its Drop, or by the abort.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}

/// The search_path a stream table's statements run under: the one
/// recorded at its creation, with `pg_temp` searched last so that no
/// temporary object shadows what the defining query names.
pub fn owner_search_path(recorded: &str) -> String {
    if recorded.split(',').any(|p| p.trim() == "pg_temp") {
        recorded.to_string()
    } else if recorded.trim().is_empty() {
        "pg_temp".to_string()
    } else {
        format!("{recorded}, pg_temp")
    }
}

/// Run `f` as `owner` inside a security-restricted operation with the
/// stream table's recorded search_path (see [`owner_search_path`]): how the
/// defining query and every statement built from it run.
pub fn as_owner<R>(owner: pg_sys::Oid, recorded_search_path: &str, f: impl FnOnce() -> R) -> R {
    let _switch = Switch::enter(
        owner,
        pg_sys::SECURITY_RESTRICTED_OPERATION,
        &owner_search_path(recorded_search_path),
    );
    f()
}

/// The owner of relation `relid` (a stream table's storage).
pub fn relation_owner(relid: u32) -> pg_sys::Oid {
    crate::spi::read_value(
        "SELECT relowner::pg_catalog.text FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.oid",
        &[Some(relid.to_string())],
    )
    .and_then(|v| v.parse::<u32>().ok())
    .map(pg_sys::Oid::from)
    .unwrap_or_else(|| raise("42P01", format!("relation with oid {relid} does not exist"), None))
}

/// Whether row-level security applies to `role` reading `relid` (the
/// table has it on, and `role` is neither a superuser, nor BYPASSRLS, nor
/// its owner without FORCE ROW LEVEL SECURITY). Then the change buffer,
/// which holds every row, must not feed the role's stream tables. Decided
/// from the catalog alone, so `row_security = off` in a session cannot hide it.
pub fn row_security_applies(relid: u32, role: pg_sys::Oid) -> bool {
    // From the caches, without SQL: this runs at every refresh.
    let Some(rel) = crate::catalog::direct::relation_facts(relid) else {
        return false;
    };
    // SAFETY: role lookups in the system caches; a missing role is a
    // superuser of nothing, bypasses nothing and is a member of nothing.
    unsafe {
        let role_exists = pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::AUTHOID as i32,
            pg_sys::Datum::from(role),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        );
        role_exists
            && rel.row_security
            && !pg_sys::superuser_arg(role)
            && !pg_sys::has_bypassrls_privilege(role)
            && (rel.force_row_security || !pg_sys::has_privs_of_role(role, rel.owner))
    }
}

/// Run `f` with the search_path set to `search_path` but the identity
/// unchanged: for resolving the names a defining query wrote, with
/// statements that are themselves fully schema-qualified.
pub fn with_search_path<R>(search_path: &str, f: impl FnOnce() -> R) -> R {
    let _switch = Switch::enter(caller(), 0, &owner_search_path(search_path));
    f()
}

/// The identity and search_path a stream table's own statements (its
/// defining query and everything generated from it) run under.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The stream table's owner (its storage table's owner).
    pub role: pg_sys::Oid,
    /// The search_path recorded when the stream table was created.
    pub search_path: String,
}

impl Owner {
    /// Run `f` as this owner (see [`as_owner`]).
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        as_owner(self.role, &self.search_path, f)
    }

    /// Resolve names as the defining query does (see [`with_search_path`]).
    pub fn resolve_names<R>(&self, f: impl FnOnce() -> R) -> R {
        with_search_path(&self.search_path, f)
    }
}
