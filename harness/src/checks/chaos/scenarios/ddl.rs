//! Crashes during create, alter and drop of a stream table: each must
//! end done or not done, never half.

use std::time::Duration;

use rand::Rng;

use super::*;

/// Run `sql` on a connection of its own and crash the server while it
/// runs: once it waits for `lock_sql` held by another session (None: at
/// a seeded moment). Returns whether it was still running when the
/// crash landed.
fn crash_during(
    ctx: &mut Ctx,
    what: &str,
    sql: &str,
    lock_sql: Option<&str>,
) -> Result<bool, String> {
    let how = ctx.seeded_crash();
    let locker = match lock_sql {
        Some(l) => Some(ctx.locker(l)?),
        None => None,
    };
    let mut conn = ctx.cluster.connect("postgres").map_err(|e| e.to_string())?;
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .map_err(|e| describe(&e))?
        .get(0);
    let statement = sql.to_string();
    // The thread hands the connection back, so the backend outlives the
    // statement and a late crash still finds its process.
    let running = std::thread::spawn(move || {
        let r = conn.batch_execute(&statement);
        (r, conn)
    });
    let mid = if lock_sql.is_some() {
        faults::wait_for(
            &mut ctx.db,
            &format!("{what} waiting for a lock"),
            &format!("pid = {pid}"),
            faults::waits_for_lock,
        )?;
        true
    } else {
        std::thread::sleep(Duration::from_micros(ctx.rng.gen_range(0..60_000)));
        faults::activities(&mut ctx.db, &format!("pid = {pid} AND state = 'active'"))?.len() == 1
    };
    ctx.crash(how, pid)?;
    drop(locker);
    let (result, _conn) = running
        .join()
        .map_err(|_| "the statement thread panicked")?;
    if let Err(e) = &result {
        if !e.is_closed() && e.code().is_some_and(|c| !c.code().starts_with("57P")) {
            return Err(format!("{what} failed before the crash: {}", describe(e)));
        }
    }
    ctx.injected.note(
        format!(
            "{} of the server at {what} ({})",
            how.name(),
            if lock_sql.is_some() {
                "waiting for a lock another session held"
            } else {
                "a seeded moment"
            }
        ),
        mid,
    );
    Ok(mid)
}

/// After a crash during create or drop: the stream table exists with its
/// capture, or neither exists. Returns whether it exists.
fn whole_or_absent(ctx: &mut Ctx) -> Result<bool, String> {
    let st = stream_table(COMING_AND_GOING);
    let exists = verdict::exists_consistently(&mut ctx.db, st.name)?;
    let (triggers, buffer) = verdict::capture_objects(&mut ctx.db, st.source)?;
    if exists && (triggers.is_empty() || !buffer) {
        return Err(format!(
            "{} exists but its source {} lost its capture (triggers {triggers:?}, change buffer {})",
            st.name,
            st.source,
            if buffer { "present" } else { "missing" }
        ));
    }
    if !exists && (!triggers.is_empty() || buffer) {
        return Err(format!(
            "{} does not exist but its source {} keeps pg_trickle's objects (triggers {triggers:?}, change buffer {})",
            st.name,
            st.source,
            if buffer { "present" } else { "absent" }
        ));
    }
    Ok(exists)
}

fn create_kinds(ctx: &mut Ctx) -> Result<(), String> {
    let sql = create_sql(stream_table(COMING_AND_GOING));
    ctx.db.batch_execute(&sql).map_err(|e| {
        format!(
            "creating {COMING_AND_GOING} again after the crash: {}",
            describe(&e)
        )
    })
}

/// A crash during `create_stream_table`: while it waits to install capture
/// on a source another transaction is writing, then at a seeded moment.
pub fn crash_during_create(ctx: &mut Ctx) -> Result<(), String> {
    let sql = create_sql(stream_table(COMING_AND_GOING));
    let lock = "INSERT INTO chaos_events (kind, qty) VALUES (0, 0)";
    for lock_sql in [Some(lock), None] {
        if whole_or_absent(ctx)? {
            ctx.db
                .batch_execute(&format!(
                    "SELECT pgtrickle.drop_stream_table('{COMING_AND_GOING}')"
                ))
                .map_err(|e| describe(&e))?;
        }
        crash_during(ctx, "create_stream_table", &sql, lock_sql)?;
        whole_or_absent(ctx)?;
        std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(200..800)));
    }
    if !whole_or_absent(ctx)? {
        create_kinds(ctx)?;
    }
    Ok(())
}

/// A crash during `drop_stream_table`: while it waits for a lock (a writer
/// of its source, or a reader of the stream table), then at a seeded moment.
pub fn crash_during_drop(ctx: &mut Ctx) -> Result<(), String> {
    let sql = format!("SELECT pgtrickle.drop_stream_table('{COMING_AND_GOING}')");
    let lock = if ctx.rng.gen_bool(0.5) {
        "INSERT INTO chaos_events (kind, qty) VALUES (0, 0)".to_string()
    } else {
        format!("SELECT count(*) FROM {COMING_AND_GOING}")
    };
    for lock_sql in [Some(lock.as_str()), None] {
        if !whole_or_absent(ctx)? {
            create_kinds(ctx)?;
        }
        crash_during(ctx, "drop_stream_table", &sql, lock_sql)?;
        whole_or_absent(ctx)?;
        std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(200..800)));
    }
    if !whole_or_absent(ctx)? {
        create_kinds(ctx)?;
    }
    Ok(())
}

fn requested_mode(ctx: &mut Ctx, st: &str) -> Result<String, String> {
    ctx.db
        .query_one(
            "SELECT requested_mode FROM pgtrickle.stream_table_status() WHERE to_regclass(name) = to_regclass($1)",
            &[&st],
        )
        .map(|r| r.get(0))
        .map_err(|e| format!("{st} after the crash: {}", describe(&e)))
}

/// Crashes during `alter_stream_table` switching a stream table between
/// DIFFERENTIAL and FULL: first while it waits for its source (another
/// session holds it exclusively), then twice at seeded moments; it ends
/// DIFFERENTIAL.
pub fn crash_during_alter(ctx: &mut Ctx) -> Result<(), String> {
    let lock = format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        stream_table(ALTERED).source
    );
    for lock_sql in [Some(lock.as_str()), None, None] {
        let now = requested_mode(ctx, ALTERED)?;
        let to = if now == "FULL" {
            "DIFFERENTIAL"
        } else {
            "FULL"
        };
        let sql =
            format!("SELECT pgtrickle.alter_stream_table('{ALTERED}', refresh_mode => '{to}')");
        crash_during(
            ctx,
            &format!("alter_stream_table(refresh_mode => '{to}')"),
            &sql,
            lock_sql,
        )?;
        let after = requested_mode(ctx, ALTERED)?;
        if after != now && after != to {
            return Err(format!(
                "{ALTERED} was {now}, a crash interrupted its change to {to}, and it is now {after}"
            ));
        }
        std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(200..800)));
    }
    ctx.db
        .batch_execute(&format!(
            "SELECT pgtrickle.alter_stream_table('{ALTERED}', refresh_mode => 'DIFFERENTIAL')"
        ))
        .map_err(|e| format!("switching {ALTERED} back to DIFFERENTIAL: {}", describe(&e)))
}
