//! SPI helpers and error raising shared by the extension's modules.
//!
//! Statements take text arguments and return text columns, which keeps the
//! glue small; SQL casts do the typing. Errors raised here always carry a
//! SQLSTATE. Plain queries and DML are prepared once per backend and their
//! plans kept ([`rows`]); generated refresh statements with arguments are
//! parsed and analysed once per backend and planned with their arguments
//! at every run, or run with a kept generic plan when few changes are
//! pending; those without arguments run once-off ([`refresh_row`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::rc::Rc;
use std::thread::LocalKey;

use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{datum::DatumWithOid, PgSqlErrorCode};

/// One result row, every column as text (NULL as `None`).
pub type Row = Vec<Option<String>>;

fn datums(args: &[Option<String>]) -> Vec<DatumWithOid<'static>> {
    args.iter().map(|a| a.clone().into()).collect()
}

/// Most statements whose plans a backend keeps; when full, the least
/// recently used half is dropped.
const MAX_KEPT: usize = 256;

/// Most generated refresh statements a backend keeps parsed and analysed
/// (each holds its query trees, some hundred kB for a large statement);
/// when full, the least recently used half is dropped.
const MAX_KEPT_REFRESH: usize = 32;

/// What a plan is kept under: its text, its number of arguments and the
/// role it is planned and run as. PostgreSQL checks most privileges when
/// a plan starts, but some when it plans (a SQL function it inlines, an
/// immutable call it folds), so one role never runs another's plan.
type KeptKey = (String, usize, pg_sys::Oid);

/// A kept plan, the tick of its last use and, for a generated refresh
/// statement, how many runs its generic plan has served.
struct KeptPlan {
    plan: Rc<OwnedPreparedStatement>,
    used: Cell<u64>,
    generic_runs: Cell<u32>,
}

thread_local! {
    /// Prepared statements per [`KeptKey`]. Parsing and planning the
    /// catalog statements of a refresh cost more than running them; a kept
    /// plan is parsed once per backend, and PostgreSQL plans it again only
    /// when what it reads changes (or keeps a generic plan).
    static KEPT: RefCell<HashMap<KeptKey, KeptPlan>> = RefCell::new(HashMap::new());
    /// Generated refresh statements per [`KeptKey`], apart from [`KEPT`]
    /// so that a scheduler refreshing many stream tables does not push the
    /// catalog statements out; see [`refresh_row`].
    static KEPT_REFRESH: RefCell<HashMap<KeptKey, KeptPlan>> = RefCell::new(HashMap::new());
    /// Ticks of [`KEPT`] and [`KEPT_REFRESH`] uses.
    static KEPT_CLOCK: Cell<u64> = const { Cell::new(0) };
}

/// The kept plan of `sql` with `nargs` text arguments for the current
/// role, prepared and kept the first time.
fn kept_plan(sql: &str, nargs: usize) -> Rc<OwnedPreparedStatement> {
    kept_in(&KEPT, MAX_KEPT, sql, nargs, false)
}

type KeptCache = RefCell<HashMap<KeptKey, KeptPlan>>;

/// [`kept_plan`] in `cache`, which holds at most `max` statements. With
/// `generic_run`, the statement is about to run its generic plan: that run
/// is counted, and at the last of `plan_reuse::MAX_RUNS` the statement is
/// dropped from the cache, so that the next run prepares and plans it
/// again (this one still runs it).
fn kept_in(
    cache: &'static LocalKey<KeptCache>,
    max: usize,
    sql: &str,
    nargs: usize,
    generic_run: bool,
) -> Rc<OwnedPreparedStatement> {
    // SAFETY: reads a backend global; valid in any initialised backend.
    let key = (sql.to_string(), nargs, unsafe { pg_sys::GetUserId() });
    let now = KEPT_CLOCK.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let hit = cache.with(|k| {
        let mut k = k.borrow_mut();
        let e = k.get(&key)?;
        e.used.set(now);
        let plan = e.plan.clone();
        if generic_run {
            e.generic_runs.set(e.generic_runs.get() + 1);
            if e.generic_runs.get() >= pg_trickle_core::plan_reuse::MAX_RUNS {
                k.remove(&key);
            }
        }
        Some(plan)
    });
    if let Some(plan) = hit {
        return plan;
    }
    let types = vec![PgOid::BuiltIn(pg_sys::BuiltinOid::TEXTOID); nargs];
    let plan = Spi::connect_mut(|client| client.prepare_mut(sql, &types).map(|p| p.keep()))
        .unwrap_or_else(|e| internal(format!("SPI failed: {e}")));
    let plan = Rc::new(plan);
    cache.with(|k| {
        let mut k = k.borrow_mut();
        if k.len() >= max {
            let mut ticks: Vec<u64> = k.values().map(|e| e.used.get()).collect();
            ticks.sort_unstable();
            let cut = ticks[ticks.len() / 2];
            k.retain(|_, e| e.used.get() > cut);
        }
        k.insert(
            key,
            KeptPlan {
                plan: plan.clone(),
                used: Cell::new(now),
                generic_runs: Cell::new(u32::from(generic_run)),
            },
        );
    });
    plan
}

/// Whether a statement's plan is kept: plain DML and queries. Recursive
/// queries are planned each time (their generic plans estimate the
/// recursion poorly), and so are utility statements.
fn keepable(sql: &str) -> bool {
    let head = sql.trim_start();
    let verb = head
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        verb.as_str(),
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "WITH"
    ) && !head.to_ascii_uppercase().contains("WITH RECURSIVE")
}

/// Run a statement with text arguments; every result column must be text.
/// Its plan is kept (see [`KEPT`]) when it is [`keepable`].
pub fn rows(sql: &str, args: &[Option<String>]) -> Vec<Row> {
    execute(sql, args, true)
}

/// Run `sql`, through its kept plan when it is [`keepable`], collecting
/// its rows when `collect` (a statement run for its effect may return
/// columns of any type).
fn execute(sql: &str, args: &[Option<String>], collect: bool) -> Vec<Row> {
    if !keepable(sql) {
        return execute_query(sql, args, collect);
    }
    // The plan is taken out of the cache before it runs: the statement
    // may fire code that runs (and keeps) statements of its own.
    let plan = kept_plan(sql, args.len());
    execute_query(&*plan, args, collect)
}

/// Run `query` (text or a prepared statement), collecting its rows as
/// text when `collect`.
fn execute_query<Q>(query: Q, args: &[Option<String>], collect: bool) -> Vec<Row>
where
    for<'c> Q: pgrx::spi::Query<'c>,
{
    let args = datums(args);
    Spi::connect_mut(|client| {
        let table = client
            .update(query, None, &args)
            .unwrap_or_else(|e| internal(format!("SPI failed: {e}")));
        if !collect {
            return Vec::new();
        }
        let ncols = table.columns().unwrap_or(0);
        table
            .map(|row| {
                (1..=ncols)
                    .map(|i| {
                        row.get::<String>(i)
                            .unwrap_or_else(|e| internal(format!("SPI column {i}: {e}")))
                    })
                    .collect()
            })
            .collect()
    })
}

/// Run a read-only statement and return the first column of its first
/// row. Unlike [`value`] it leaves the transaction without an xid, which
/// creating a logical replication slot requires of what runs before it.
pub fn read_value(sql: &str, args: &[Option<String>]) -> Option<String> {
    let args = datums(args);
    Spi::connect(|client| {
        let table = client
            .select(sql, Some(1), &args)
            .unwrap_or_else(|e| internal(format!("SPI failed: {e}")));
        table
            .into_iter()
            .next()
            .and_then(|row| row.get::<String>(1).ok().flatten())
    })
}

/// The oid of the relation a user named (resolved under the current
/// search_path, as the caller wrote it), or raise 42P01. Reads without
/// writing (see [`read_value`]).
pub fn relation_oid_of(name: &str) -> u32 {
    read_value(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid::pg_catalog.text",
        &[Some(name.to_string())],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| raise("42P01", format!("relation \"{name}\" does not exist"), None))
}

/// Run a statement and return its first row, if any.
pub fn row(sql: &str, args: &[Option<String>]) -> Option<Row> {
    rows(sql, args).into_iter().next()
}

/// Column `i` of `row` as a number; 0 when it is NULL, missing or not a number.
pub fn number_at(row: &[Option<String>], i: usize) -> f64 {
    row.get(i)
        .cloned()
        .flatten()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Run a statement and return the first column of its first row.
pub fn value(sql: &str, args: &[Option<String>]) -> Option<String> {
    row(sql, args).and_then(|r| r.into_iter().next().flatten())
}

/// Run a statement and parse the first column of every row (unparsable or NULL values are skipped).
pub fn first_column<T: std::str::FromStr>(sql: &str, args: &[Option<String>]) -> Vec<T> {
    rows(sql, args)
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten()?.parse().ok())
        .collect()
}

/// A relation as SQL text: `regclass` output, quoted as needed and
/// qualified unless visible on the current search_path (the statement is
/// fully qualified, so any path may be current); None when it is gone.
pub fn relation_name(relid: u32) -> Option<String> {
    value(
        "SELECT $1::pg_catalog.text::pg_catalog.oid::pg_catalog.regclass::pg_catalog.text",
        &[Some(relid.to_string())],
    )
}

/// Run a statement for its effect (its plan kept as [`rows`] keeps it).
pub fn run(sql: &str, args: &[Option<String>]) {
    execute(sql, args, false);
}

/// How a generated refresh statement with arguments is planned (see
/// `pg_trickle_core::plan_reuse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// A custom plan for this run, built from its arguments and the
    /// relations' current sizes, and dropped after it.
    Afresh,
    /// The statement's generic plan, built at its first such run and kept
    /// for up to `plan_reuse::MAX_RUNS` runs.
    Kept,
}

/// [`row`] for a generated refresh statement, which is large and run once
/// per refresh. Parsing and analysing it costs about as much as planning
/// it, so the analysed statement is kept per backend; it is planned as
/// `planning` says. A plan is never marked by the buffer grant (see
/// `buffer_access`, which marks a copy), so a kept one reads change
/// buffers only when a refresh grants it again.
/// PostgreSQL reuses the generic plan of a statement without arguments
/// whatever plan_cache_mode says: those (FULL, population) run once-off.
pub fn refresh_row(sql: &str, args: &[Option<String>], planning: Planning) -> Option<Row> {
    if args.is_empty() {
        return execute_query(sql, args, true).into_iter().next();
    }
    let kept = planning == Planning::Kept;
    let plan = kept_in(&KEPT_REFRESH, MAX_KEPT_REFRESH, sql, args.len(), kept);
    let mode = if kept {
        "force_generic_plan"
    } else {
        "force_custom_plan"
    };
    with_setting("plan_cache_mode", mode, || {
        execute_query(&*plan, args, true)
    })
    .into_iter()
    .next()
}

/// Convert a five-character SQLSTATE into PostgreSQL's packed error code.
pub fn errcode(sqlstate: &str) -> PgSqlErrorCode {
    let b = sqlstate.as_bytes();
    if b.len() != 5 {
        return PgSqlErrorCode::ERRCODE_INTERNAL_ERROR;
    }
    let six = |c: u8| ((c.wrapping_sub(b'0')) & 0x3F) as i32;
    let code =
        six(b[0]) | (six(b[1]) << 6) | (six(b[2]) << 12) | (six(b[3]) << 18) | (six(b[4]) << 24);
    PgSqlErrorCode::from(code)
}

/// The five-character SQLSTATE of a packed error code.
pub fn sqlstate_of(code: PgSqlErrorCode) -> String {
    let v = code as isize as i64;
    (0..5)
        .map(|i| (((v >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

/// The SQLSTATE and message of a caught error.
pub fn failure_of(caught: &CaughtError) -> (String, String) {
    match caught {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
            (sqlstate_of(r.sql_error_code()), r.message().to_string())
        }
        CaughtError::RustPanic { ereport, .. } => (
            sqlstate_of(ereport.sql_error_code()),
            ereport.message().to_string(),
        ),
    }
}

/// Raise an ERROR with a SQLSTATE, a message and an optional hint.
pub fn raise(sqlstate: &str, message: impl Into<String>, hint: Option<String>) -> ! {
    let mut report = ErrorReport::new(errcode(sqlstate), message.into(), "pg_trickle");
    if let Some(h) = hint {
        report = report.set_hint(h);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Raise an internal error (SQLSTATE XX000).
pub fn internal(message: String) -> ! {
    raise("XX000", message, None)
}

/// A caught error: its SQLSTATE and message.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Five-character SQLSTATE.
    pub sqlstate: String,
    /// The primary message.
    pub message: String,
}

/// Run `f` in an internal subtransaction; on ERROR roll it back and return
/// the failure instead of aborting the caller's transaction.
pub fn in_subtransaction<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, Failure> {
    subtransaction(f, true)
}

/// Run `f` in an internal subtransaction that is rolled back whether or
/// not it succeeds: what `f` returns (in Rust memory) is kept, and the
/// locks it took are released now instead of at the end of the caller's
/// transaction.
pub fn in_rolled_back_subtransaction<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
) -> Result<R, Failure> {
    subtransaction(f, false)
}

/// Run `f` in an internal subtransaction, keeping its work when it
/// succeeds. An ERROR rolls it back; when `handled` accepts its SQLSTATE
/// the failure is returned, otherwise it is raised again as it was
/// (detail, hint and context included).
pub fn in_subtransaction_handling<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
    handled: fn(&str) -> bool,
) -> Result<R, Failure> {
    let (result, _) = in_subtransaction_kept_if(|| {
        let r = PgTryBuilder::new(|| Ok(f()))
            .catch_others(|caught| {
                let (sqlstate, message) = failure_of(&caught);
                if handled(&sqlstate) {
                    Err(Failure { sqlstate, message })
                } else {
                    caught.rethrow()
                }
            })
            .execute();
        let keep = r.is_ok();
        (r, keep)
    });
    result
}

/// Run `f` in an internal subtransaction and keep its work only when `f`
/// says so (the `bool` it returns); an ERROR rolls it back and is raised
/// again as it was. What `f` returns in Rust memory is kept either way.
pub fn in_subtransaction_kept_if<R>(
    f: impl FnOnce() -> (R, bool) + std::panic::UnwindSafe,
) -> (R, bool) {
    let old_context = unsafe { pg_sys::CurrentMemoryContext };
    let old_owner = unsafe { pg_sys::CurrentResourceOwner };
    unsafe { pg_sys::BeginInternalSubTransaction(std::ptr::null()) };
    let end = |keep: bool| unsafe {
        if keep {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(old_context);
        pg_sys::CurrentResourceOwner = old_owner;
    };
    let result = PgTryBuilder::new(|| Ok(f()))
        .catch_others(|caught| Err(Box::new(caught)))
        .execute();
    match result {
        Ok((value, keep)) => {
            end(keep);
            (value, keep)
        }
        Err(caught) => {
            end(false);
            caught.rethrow()
        }
    }
}

fn subtransaction<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
    keep: bool,
) -> Result<R, Failure> {
    let old_context = unsafe { pg_sys::CurrentMemoryContext };
    let old_owner = unsafe { pg_sys::CurrentResourceOwner };
    unsafe { pg_sys::BeginInternalSubTransaction(std::ptr::null()) };
    let result = PgTryBuilder::new(|| Ok(f()))
        .catch_others(|caught| {
            let (sqlstate, message) = failure_of(&caught);
            Err(Failure { sqlstate, message })
        })
        .execute();
    unsafe {
        if keep && result.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(old_context);
        pg_sys::CurrentResourceOwner = old_owner;
    }
    result
}

impl Failure {
    /// Raise it again when it says nothing about the statement itself: a
    /// cancel, a lock or serialization failure, exhausted resources (the
    /// SQLSTATEs the scheduler retries). A validation must not turn those
    /// into a verdict on the SQL.
    pub fn reraise_if_transient(&self) {
        use pg_trickle_core::sqlstate::{classify, RetryClass};
        if classify(&self.sqlstate) == RetryClass::Retry {
            raise(&self.sqlstate, self.message.clone(), None);
        }
    }
}

/// Prepare (parse, analyse and plan, not run) `sql` with `nargs` text
/// parameters. Raises on failure; run it inside [`in_subtransaction`] to
/// get the failure back instead.
pub fn prepare_only(sql: &str, nargs: usize) {
    let types = vec![pgrx::PgOid::BuiltIn(pg_sys::BuiltinOid::TEXTOID); nargs];
    Spi::connect(|client| {
        client
            .prepare(sql, &types)
            .map(|_| ())
            .unwrap_or_else(|e| internal(e.to_string()))
    })
}

/// Quote an identifier with PostgreSQL's rules.
pub fn qi(name: &str) -> String {
    pg_trickle_core::sql::quote_ident(name)
}

/// Run `f` with a setting changed for the current transaction, restoring the
/// previous value afterwards (an error aborts the transaction, which restores it too).
/// As `set_config(name, value, true)` does, through the GUC functions
/// rather than statements: a refresh runs this every time.
pub fn with_setting<R>(name: &str, value_: &str, f: impl FnOnce() -> R) -> R {
    let name_c = CString::new(name).unwrap_or_else(|_| internal(format!("setting name {name:?}")));
    let value_c =
        CString::new(value_).unwrap_or_else(|_| internal(format!("setting value {value_:?}")));
    // SAFETY: GetConfigOption returns a string valid until the setting
    // changes (or NULL when unset); it is copied right away. An unknown
    // name raises an ERROR, which the boundary guard turns into a panic.
    let previous = unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            let p = pg_sys::GetConfigOption(name_c.as_ptr(), false, false);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_owned())
        })
    };
    set_local(&name_c, Some(&value_c));
    let result = f();
    set_local(&name_c, previous.as_deref());
    result
}

/// Set a setting for the current transaction, as `set_config(name,
/// value, true)` does (NULL resets it to its session value).
fn set_local(name: &CStr, value_: Option<&CStr>) {
    // SAFETY: both strings outlive the call; an invalid value raises an
    // ERROR, which the boundary guard turns into a panic.
    unsafe {
        let context = if pg_sys::superuser() {
            pg_sys::GucContext::PGC_SUSET
        } else {
            pg_sys::GucContext::PGC_USERSET
        };
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            pg_sys::set_config_option(
                name.as_ptr(),
                value_.map_or(std::ptr::null(), |v| v.as_ptr()),
                context,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_LOCAL,
                true,
                PgLogLevel::ERROR as i32,
                false,
            )
        });
    }
}
