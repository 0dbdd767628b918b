//! Refreshes ended by the server without a crash: statement cancels,
//! statement timeouts and lock timeouts, on a session's refresh and on
//! the scheduler's.

use std::time::Duration;

use super::*;

/// Run `sql` on a fresh session with `setting`, expecting it to fail with
/// `sqlstate` while another session holds `st`.
fn refresh_refused(ctx: &mut Ctx, st: &str, setting: &str, sqlstate: &str) -> Result<(), String> {
    let locker = ctx.locker(&format!("LOCK TABLE {st} IN EXCLUSIVE MODE"))?;
    let mut s = ctx.cluster.connect("postgres").map_err(|e| e.to_string())?;
    s.batch_execute(setting).map_err(|e| describe(&e))?;
    let r = s.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{st}')"));
    drop(locker);
    match r {
        Err(e) if e.code().map(|c| c.code()) == Some(sqlstate) => {
            ctx.injected.note(
                format!("{setting} on a refresh of {st} waiting to apply: {sqlstate}"),
                true,
            );
            Ok(())
        }
        Err(e) => Err(format!(
            "a refresh of {st} with {setting} failed with {} instead of {sqlstate}",
            describe(&e)
        )),
        Ok(()) => Err(format!(
            "a refresh of {st} with {setting} succeeded while another session held the stream table"
        )),
    }
}

/// The scheduler's refresh of `st`, waiting to apply, is ended by
/// `action` (run on the monitor with the scheduler's pid); it must be
/// recorded as failed with `sqlstate`, and the scheduler must live on.
fn scheduler_refresh_fails(
    ctx: &mut Ctx,
    st: &str,
    action: Option<&str>,
    sqlstate: &str,
) -> Result<(), String> {
    let mark = oracles::engine_api::last_refresh_id(&mut ctx.db, st).map_err(|e| describe(&e))?;
    let locker = ctx.locker(&format!("LOCK TABLE {st} IN EXCLUSIVE MODE"))?;
    let a = ctx.wait_scheduler(
        &format!("the scheduler waiting to apply {st}"),
        Some(st),
        faults::waits_for_lock,
    )?;
    if let Some(action) = action {
        ctx.db
            .batch_execute(&action.replace("$pid", &a.pid.to_string()))
            .map_err(|e| describe(&e))?;
    }
    let started = std::time::Instant::now();
    let recorded = loop {
        let after = verdict::refreshes_since(&mut ctx.db, st, mark)?;
        if let Some(e) = after.errors.iter().find(|e| e.starts_with(sqlstate)) {
            break e.clone();
        }
        if started.elapsed() > faults::REACH_LIMIT {
            return Err(format!(
                "the scheduler's refresh of {st} was not recorded as failing with {sqlstate} \
                 (history since: {after:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(locker);
    let now = faults::scheduler(&mut ctx.db)?;
    if now.as_ref().map(|n| n.pid) != Some(a.pid) {
        return Err(format!(
            "the scheduler (pid {}) did not survive its failed refresh of {st} (now: {now:?})",
            a.pid
        ));
    }
    ctx.injected.note(
        format!(
            "{} on the scheduler's refresh of {st} waiting to apply: recorded \"{recorded}\"",
            action
                .map(|_| "pg_cancel_backend")
                .unwrap_or("lock_timeout")
        ),
        true,
    );
    Ok(())
}

/// Statement cancels: of the scheduler mid-refresh, of a backend
/// mid-refresh, and a statement_timeout on a refresh.
pub fn cancel_during_refresh(ctx: &mut Ctx) -> Result<(), String> {
    scheduler_refresh_fails(
        ctx,
        "chaos_totals",
        Some("SELECT pg_cancel_backend($pid)"),
        "57014",
    )?;
    let st = REFRESHED_BY_HAND;
    let locker = ctx.locker(&format!("LOCK TABLE {st} IN EXCLUSIVE MODE"))?;
    let pid = ctx.refresher_pid()?;
    faults::wait_for(
        &mut ctx.db,
        "the refresher waiting to apply",
        &format!("pid = {pid}"),
        faults::waits_for_lock,
    )?;
    ctx.db
        .batch_execute(&format!("SELECT pg_cancel_backend({pid})"))
        .map_err(|e| describe(&e))?;
    drop(locker);
    ctx.injected.note(
        format!("pg_cancel_backend of a backend (pid {pid}) waiting to apply {st}'s delta"),
        true,
    );
    refresh_refused(ctx, st, "SET statement_timeout = '300ms'", "57014")
}

/// Lock timeouts: on a manual refresh, and on the scheduler's (set for
/// the whole server and reloaded, then reset).
pub fn lock_timeout_during_refresh(ctx: &mut Ctx) -> Result<(), String> {
    refresh_refused(
        ctx,
        REFRESHED_BY_HAND,
        "SET lock_timeout = '200ms'",
        "55P03",
    )?;
    for set in [
        "ALTER SYSTEM SET lock_timeout = '300ms'",
        "SELECT pg_reload_conf()",
    ] {
        ctx.db.batch_execute(set).map_err(|e| describe(&e))?;
    }
    // The scheduler reads the reloaded file at its next tick.
    std::thread::sleep(Duration::from_millis(1500));
    let r = scheduler_refresh_fails(ctx, "chaos_regions", None, "55P03");
    for reset in ["ALTER SYSTEM RESET lock_timeout", "SELECT pg_reload_conf()"] {
        ctx.db.batch_execute(reset).map_err(|e| describe(&e))?;
    }
    r
}
