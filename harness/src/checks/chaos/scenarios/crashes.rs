//! Crashes of a process mid-refresh or mid-capture: kill -9 of a backend
//! or of the scheduler, and immediate shutdown.

use std::time::Duration;

use rand::Rng;

use super::*;

/// Kill -9 of a backend running `refresh_stream_table`: once waiting to
/// apply, once at a seeded moment.
pub fn kill_backend_mid_refresh(ctx: &mut Ctx) -> Result<(), String> {
    let st = REFRESHED_BY_HAND;
    let locker = ctx.locker(&format!("LOCK TABLE {st} IN EXCLUSIVE MODE"))?;
    let pid = ctx.refresher_pid()?;
    faults::wait_for(
        &mut ctx.db,
        "the refresher waiting to apply",
        &format!("pid = {pid}"),
        faults::waits_for_lock,
    )?;
    ctx.crash(Crash::Kill, pid)?;
    drop(locker);
    ctx.injected.note(
        format!("kill -9 of a backend (pid {pid}) waiting to apply {st}'s delta"),
        true,
    );
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(300..1500)));
    let pid = ctx.refresher_pid()?;
    faults::wait_for(
        &mut ctx.db,
        "the refresher refreshing",
        &format!("pid = {pid}"),
        |a| a.state == "active",
    )?;
    let delay = Duration::from_micros(ctx.rng.gen_range(0..20_000));
    let mid = faults::kill_after(&mut ctx.db, pid, delay)?;
    ctx.db = faults::crash_recovered(&mut ctx.db, ctx.cluster)?;
    ctx.injected.note(
        format!(
            "kill -9 of a backend (pid {pid}) {} µs into refresh_stream_table('{st}')",
            delay.as_micros()
        ),
        mid,
    );
    Ok(())
}

/// Kill -9 of the scheduler mid-refresh: waiting to apply, then at a seeded moment.
pub fn kill_scheduler_mid_refresh(ctx: &mut Ctx) -> Result<(), String> {
    ctx.crash_scheduler_at_apply(Crash::Kill)?;
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(300..1500)));
    ctx.crash_scheduler_anytime(Crash::Kill)
}

/// Immediate shutdown while the scheduler refreshes: waiting to apply,
/// then at a seeded moment.
pub fn immediate_shutdown_mid_refresh(ctx: &mut Ctx) -> Result<(), String> {
    ctx.crash_scheduler_at_apply(Crash::ImmediateShutdown)?;
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(300..1500)));
    ctx.crash_scheduler_anytime(Crash::ImmediateShutdown)
}

/// Immediate shutdown while a large insert is being captured row by row
/// (and the writers' transactions are in flight).
pub fn immediate_shutdown_mid_capture(ctx: &mut Ctx) -> Result<(), String> {
    let mut bulk = ctx.cluster.connect("postgres").map_err(|e| e.to_string())?;
    let pid: i32 = bulk
        .query_one("SELECT pg_backend_pid()", &[])
        .map_err(|e| describe(&e))?
        .get(0);
    let insert = std::thread::spawn(move || {
        bulk.batch_execute(
            "INSERT INTO chaos_orders (id, cust, amount) \
             SELECT g, g % 100, 1 FROM generate_series(900000000, 900400000) g",
        )
    });
    faults::wait_for(
        &mut ctx.db,
        "the large insert running",
        &format!("pid = {pid}"),
        |a| a.state == "active",
    )?;
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(50..400)));
    let mid =
        faults::activities(&mut ctx.db, &format!("pid = {pid} AND state = 'active'"))?.len() == 1;
    ctx.db = faults::immediate_restart(ctx.cluster)?;
    let finished = insert.join().map_err(|_| "the insert thread panicked")?;
    if finished.is_ok() {
        return Err("the 400,001-row insert committed before the immediate shutdown: the fault did not land mid-capture".into());
    }
    ctx.injected.note(
        format!("immediate shutdown while a 400,001-row insert (pid {pid}) was being captured"),
        mid,
    );
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(300..1500)));
    ctx.db = faults::immediate_restart(ctx.cluster)?;
    ctx.injected.note(
        "immediate shutdown at a seeded moment of the writers' transactions".into(),
        true,
    );
    Ok(())
}
