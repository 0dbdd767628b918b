//! Stream tables are read-only to everyone but the engine.
//!
//! A row written into a stream table by hand would survive every later
//! DIFFERENTIAL refresh (which only applies the delta of the sources), so
//! the stream table would silently stop equalling its query. Every stream
//! table therefore carries `pgt_readonly`, a statement-level BEFORE
//! INSERT, UPDATE, DELETE and TRUNCATE trigger that refuses the statement
//! unless it is a refresh statement of pg_trickle itself, which the
//! refresh executor marks while it runs them ([`Applying`]). A stream
//! table that drifted anyway (its trigger disabled, or
//! `session_replication_role = replica`) is repaired by
//! `pgtrickle.reinitialize_stream_table(name)`.

use std::cell::Cell;

use pgrx::prelude::*;

thread_local! {
    /// How many pg_trickle refresh statements are running in this backend.
    static APPLYING: Cell<u32> = const { Cell::new(0) };
}

/// Marks pg_trickle's own refresh statements while they run.
pub struct Applying;

impl Applying {
    /// Mark the statements run until the value is dropped.
    pub fn begin() -> Applying {
        APPLYING.with(|a| a.set(a.get() + 1));
        Applying
    }
}

/// Whether one of pg_trickle's own refresh statements is running in this
/// backend.
pub fn applying() -> bool {
    APPLYING.with(Cell::get) > 0
}

impl Drop for Applying {
    fn drop(&mut self) {
        APPLYING.with(|a| a.set(a.get().saturating_sub(1)));
    }
}

/// Statement trigger on every stream table: refuse writes that are not
/// pg_trickle's own refresh statements (SQLSTATE 42809, as PostgreSQL
/// refuses writes to a materialized view).
#[pg_trigger]
fn refuse_direct_write<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    if APPLYING.with(Cell::get) == 0 {
        let name = trigger
            .table_name()
            .map(|t| {
                let schema = trigger.table_schema().unwrap_or_default();
                format!("{}.{}", crate::spi::qi(&schema), crate::spi::qi(&t))
            })
            .unwrap_or_else(|_| "a stream table".into());
        let literal = name.replace('\'', "''");
        let op = match trigger.op() {
            Ok(PgTriggerOperation::Insert) => "INSERT into",
            Ok(PgTriggerOperation::Update) => "UPDATE of",
            Ok(PgTriggerOperation::Delete) => "DELETE from",
            Ok(PgTriggerOperation::Truncate) => "TRUNCATE of",
            _ => "a write to",
        };
        crate::spi::raise(
            "42809",
            format!("cannot {op} stream table {name}: only its refreshes change it"),
            Some(format!(
                "Change its sources and refresh it. To recompute it from scratch, SELECT pgtrickle.reinitialize_stream_table('{literal}')."
            )),
        );
    }
    Ok(None)
}

/// Put the read-only trigger on a stream table's storage (idempotent). It
/// fires in every `session_replication_role`, so a logical replication
/// apply worker cannot write a stream table either.
pub fn install(storage_sql: &str) {
    let _own = crate::triggers::OwnDdl::begin();
    crate::spi::run(
        &format!(
            "CREATE OR REPLACE TRIGGER pgt_readonly BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {storage_sql} \
             FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.refuse_direct_write()"
        ),
        &[],
    );
    crate::spi::run(
        &format!("ALTER TABLE {storage_sql} ENABLE ALWAYS TRIGGER pgt_readonly"),
        &[],
    );
}
