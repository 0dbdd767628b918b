//! Change buffers on a small filesystem that fills up.

use std::time::Duration;

use postgres::Client;
use rand::Rng;

use super::*;

/// The size of the small filesystem the change buffers are moved to.
pub const SMALL_KIB: u64 = 384;

/// Move the change buffers (still nearly empty) to a tablespace on the
/// small filesystem, before the load starts.
pub fn buffers_to_small_filesystem(db: &mut Client, fs: &SmallFilesystem) -> Result<(), String> {
    db.batch_execute(&format!(
        "CREATE TABLESPACE chaos_small LOCATION '{}'",
        fs.mount.display()
    ))
    .map_err(|e| format!("creating the tablespace: {}", describe(&e)))?;
    let moves: Vec<String> = db
        .query(
            "SELECT format('ALTER %s %s SET TABLESPACE chaos_small', \
                           CASE WHEN c.relkind = 'i' THEN 'INDEX' ELSE 'TABLE' END, c.oid::regclass) \
             FROM pg_class c WHERE c.relnamespace = 'pgtrickle_changes'::regnamespace AND c.relkind IN ('r', 'i') \
             ORDER BY c.relkind DESC",
            &[],
        )
        .map_err(|e| describe(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if moves.is_empty() {
        return Err("no change buffer to move: pgtrickle_changes is empty".into());
    }
    for m in &moves {
        db.batch_execute(m)
            .map_err(|e| format!("{m}: {}", describe(&e)))?;
    }
    Ok(())
}

/// The change buffers fill the small filesystem: writes that need buffer
/// space fail (and roll back with their source rows), the scheduler goes
/// on, and once the filesystem grows everything flows again.
pub fn disk_full_change_buffers(ctx: &mut Ctx, fs: &SmallFilesystem) -> Result<(), String> {
    if ctx.capture == oracles::workload::Capture::Wal {
        return wal_drain_meets_full_disk(ctx, fs);
    }
    // A capture far larger than the filesystem must fail with disk full,
    // and take its source rows with it.
    let bulk = ctx.db.batch_execute(
        "INSERT INTO chaos_orders (id, cust, amount) \
         SELECT g, g % 100, 2 FROM generate_series(800000000, 800050000) g",
    );
    match bulk {
        Err(e) if e.code().map(|c| c.code()) == Some("53100") => {}
        Err(e) => return Err(format!("the 50,001-row insert failed with {} instead of 53100 (disk full)", describe(&e))),
        Ok(()) => {
            return Err(format!(
                "a 50,001-row insert was captured on a {SMALL_KIB} KiB filesystem: the change buffers did not fill it"
            ))
        }
    }
    ctx.injected.note(
        format!("change buffers on a {SMALL_KIB} KiB filesystem: a 50,001-row insert refused with 53100"),
        true,
    );
    // The writers meet the full disk for a while, then it grows.
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(1000..2500)));
    fs.resize(256 * 1024)?;
    ctx.injected.note(
        "the filesystem grown to 256 MiB while the writers went on".into(),
        true,
    );
    Ok(())
}

/// Captured from the WAL, a write never touches the buffer: a 50,001-row
/// insert commits, and the scheduler's drain of it must fail with 53100
/// (shown in `wal_capture_status()`) until the filesystem grows.
fn wal_drain_meets_full_disk(ctx: &mut Ctx, fs: &SmallFilesystem) -> Result<(), String> {
    ctx.db
        .batch_execute(
            "INSERT INTO chaos_orders (id, cust, amount) \
             SELECT g, g % 100, 2 FROM generate_series(800000000, 800050000) g",
        )
        .map_err(|e| format!("the 50,001-row insert: {}", describe(&e)))?;
    let started = std::time::Instant::now();
    let error = loop {
        let e: Option<String> = ctx
            .db
            .query_one(
                "SELECT max(last_error) FROM pgtrickle.wal_capture_status() \
                 WHERE to_regclass(source) = 'chaos_orders'::regclass",
                &[],
            )
            .map_err(|e| describe(&e))?
            .get(0);
        match e {
            Some(e) if e.starts_with("53100") => break e,
            _ if started.elapsed() > faults::REACH_LIMIT => {
                return Err(format!(
                    "the drain of a 50,001-row insert into buffers on a {SMALL_KIB} KiB filesystem reported no 53100 (last error: {e:?})"
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    ctx.injected.note(
        format!(
            "change buffers on a {SMALL_KIB} KiB filesystem: the drain failed with \"{error}\""
        ),
        true,
    );
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(1000..2500)));
    fs.resize(256 * 1024)?;
    ctx.injected.note(
        "the filesystem grown to 256 MiB while the writers went on".into(),
        true,
    );
    Ok(())
}

/// Move the change buffers back and drop the tablespace, so the small
/// filesystem can go.
pub fn leave_small_filesystem(db: &mut Client) -> Result<(), String> {
    db.batch_execute(
        "DO $$DECLARE r record; BEGIN \
           FOR r IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c \
                    JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE t.spcname = 'chaos_small' \
                    AND c.relkind IN ('r', 'i') AND c.relnamespace <> 'pg_toast'::regnamespace LOOP \
             EXECUTE format('ALTER %s %s SET TABLESPACE pg_default', \
                            CASE WHEN r.relkind = 'i' THEN 'INDEX' ELSE 'TABLE' END, r.rel); \
           END LOOP; END$$",
    )
    .and_then(|()| db.batch_execute("DROP TABLESPACE IF EXISTS chaos_small"))
    .map_err(|e| format!("leaving the small filesystem: {}", describe(&e)))
}
