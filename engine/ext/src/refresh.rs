//! The refresh executor shared by manual refreshes, creation and the scheduler.
//!
//! A refresh locks its catalog row (so a manual refresh and the scheduler never
//! refresh the same stream table at once), runs one generated statement that
//! applies the delta (or the full recompute) and returns the new frontier,
//! then records the frontier, the history row and prunes consumed changes,
//! all in the caller's transaction: a crash applies all of it or none.
//!
//! The executor itself runs as the extension (catalog, change buffers); the
//! generated statements run as the stream table's owner (see `security`),
//! and a DIFFERENTIAL one reads its change buffers through a one-shot grant
//! (see `buffer_access`) after a probe has checked, as the owner, that the
//! owner may still read everything the defining query reads.

use pg_trickle_core::adaptive::{self, Choice};
use pg_trickle_core::ir::{Mode, RequestedMode};
use pg_trickle_core::plan_reuse;
use pgrx::pg_sys;

use crate::capture;
use crate::catalog::stream_tables::{stored_statement, Stored};
use crate::catalog::{change_buffers, history, sources, stream_tables};
use crate::operations;
use crate::security;
use crate::spi::{raise, refresh_row, run, with_setting, Planning};

pub use crate::catalog::history::Initiator;

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The mode that actually ran.
    pub mode: Mode,
    /// Rows deleted from the stream table.
    pub deleted: i64,
    /// Rows inserted into the stream table.
    pub inserted: i64,
}

fn num(v: &Option<String>) -> i64 {
    v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Refresh stream table `id`. With `skip_locked`, returns `None` when another
/// session is refreshing it right now, or holds one of its sources against
/// reading (DDL), instead of waiting.
pub fn refresh_by_id(id: i64, initiator: Initiator, skip_locked: bool) -> Option<Outcome> {
    refresh_with(id, initiator, skip_locked, None)
}

/// [`refresh_by_id`], with the sources that have changes to consume given
/// instead of checked (`assume_pending`): tests use it to stand for a change
/// that commits between the check and the statement.
///
/// With exporting on (`pg_trickle.otel_enabled`), the refresh is recorded
/// as a span, a failed one with its SQLSTATE (the error goes on as it was).
pub fn refresh_with(
    id: i64,
    initiator: Initiator,
    skip_locked: bool,
    assume_pending: Option<Vec<u32>>,
) -> Option<Outcome> {
    use crate::telemetry::recorder::{self, Ending};
    if !recorder::active() {
        return perform_refresh(id, initiator, skip_locked, assume_pending, None);
    }
    recorder::begin(initiator.name());
    pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(move || {
        let outcome = perform_refresh(id, initiator, skip_locked, assume_pending, None);
        recorder::finish(match &outcome {
            Some(o) => Ending::Ran(o.mode.name(), o.deleted, o.inserted),
            None => Ending::Nothing,
        });
        outcome
    }))
    .catch_others(|e| {
        let (state, message) = crate::telemetry::failure(&e);
        recorder::finish(Ending::Failed(state, &message));
        e.rethrow()
    })
    .execute()
}

/// AUTO's choice of FULL failed in this refresh: why (as recorded), and
/// when the refresh started.
struct FullFailed {
    why: String,
    started: Option<String>,
}

/// The refresh itself; [`refresh_with`] records it when exporting is on.
/// With `full_failed`, the changes are applied without choosing again.
fn perform_refresh(
    id: i64,
    initiator: Initiator,
    skip_locked: bool,
    assume_pending: Option<Vec<u32>>,
    full_failed: Option<FullFailed>,
) -> Option<Outcome> {
    use crate::telemetry::recorder;
    use pg_trickle_core::telemetry::span::PhaseKind;
    let (full_failed, started) = match full_failed {
        Some(f) => (Some(f.why), f.started),
        None => (None, Some(clock_text())),
    };
    // Read before anything here assigns this transaction an id (the row
    // lock below does): see `record_own_changes`.
    let wrote_before = transaction_has_written();
    // The sources before the row (see refresh_locks).
    let st = crate::refresh_locks::lock_for_refresh_in_order(id, !skip_locked)?;
    let name = st.name.clone();
    recorder::note_stream_table(&name);
    let owner = st.owner.clone();
    if st.held {
        match initiator {
            // A held stream table waits for resume; capture goes on.
            Initiator::Scheduler => return None,
            _ => operations::refuse_if_held(id, &name),
        }
    }
    // With capture discarded on a source there is a gap in its changes:
    // every refresh is FULL until capture resumes, and the mark stays.
    let discarding = change_buffers::first_discarding_of(id);
    let needs_reinit = st.needs_reinit || discarding.is_some();
    let differential = st.effective_mode == Some(Mode::Differential);
    let mut reason: Option<String>;

    let own_xid = Some(own_xact_id().to_string());
    let captured = sources::captured_in_param_order(id);
    let relids: Vec<u32> = captured.iter().map(|s| s.relid).collect();
    // Sources sharded across nodes: the buffer must hold exactly the
    // nodes' transactions this transaction's reads of them will see.
    let drained = crate::remote_capture::before_read(&relids, &owner);
    // A drain just now may have met a TRUNCATE of a shard (it marks the
    // readers for reinitialisation): read the mark again.
    let needs_reinit = needs_reinit || crate::remote_capture::marked_for_reinit(id, &relids);
    // Sources captured from the WAL: this transaction's own writes to them
    // are decoded only after it commits, so a refresh in it recomputes;
    // their undecoded changes are read by this refresh alone, with its token.
    let wal_sources = crate::catalog::wal_capture::among(&relids);
    let own_wal_write = crate::wal_capture::written_wal_source(&wal_sources);
    let token = (!wal_sources.is_empty()).then(crate::wal_capture::ReadToken::issue);
    let token_text = token.as_ref().map(|t| t.0.clone());

    let use_diff = initiator != Initiator::Create
        && differential
        && !needs_reinit
        && st.frontier.is_some()
        && own_wal_write.is_none();
    if use_diff {
        // Row-level security that applies to the owner now (enabled, forced,
        // or the owner lost BYPASSRLS since creation): the change buffer
        // would bypass the policies. Re-plan (AUTO falls back to FULL,
        // DIFFERENTIAL raises 0A000) and refresh by the new plan.
        if let Some(source) = relids
            .iter()
            .find(|r| security::row_security_applies(**r, owner.role))
        {
            let source = crate::spi::relation_name(*source).unwrap_or_default();
            crate::replan::replan(id, None, &format!("row-level security on source {source}"));
            let retry = full_failed.map(|why| FullFailed {
                why,
                started: started.clone(),
            });
            return perform_refresh(id, initiator, skip_locked, None, retry);
        }
    }
    // AUTO weighs a large backlog: counting its changes (only as far as
    // the choice needs) and comparing with what earlier refreshes took.
    let auto = st.requested_mode == Some(RequestedMode::Auto);
    let adaptive = crate::auto_choice::settings(use_diff && auto);
    // After a FULL the choice made failed, the changes are applied without
    // choosing again, and FULL is not chosen until one succeeds.
    let start = match full_failed {
        Some(_) => adaptive::after_failed_full(&st.estimates),
        None => st.estimates,
    };
    // Without the choice, counting goes one past the changes a kept plan
    // is used for (see `plan_reuse`).
    let limit = if adaptive.enabled {
        adaptive::count_limit(&adaptive, &start)
    } else {
        plan_reuse::COUNT_LIMIT
    };
    // Sources with changes to consume (checked again inside the statement).
    let (pending, mut backlog) = if let Some(assumed) = assume_pending {
        let unknown = adaptive::Pending {
            changes: 0,
            complete: false,
            source_rows: None,
        };
        (assumed, unknown)
    } else if use_diff {
        let token = token_text.as_deref();
        let counts = capture::pending_counts(id, relids.iter().copied(), token, limit);
        let backlog = crate::auto_choice::backlog(&counts);
        let pending = counts.iter().filter(|c| c.changes > 0).map(|c| c.relid);
        (pending.collect::<Vec<u32>>(), backlog)
    } else {
        let none = adaptive::Pending {
            changes: 0,
            complete: true,
            source_rows: None,
        };
        (Vec::new(), none)
    };
    // From the first count, as the choice's recount may widen it.
    let planning = if use_diff && plan_reuse::reuses_plan(&backlog) {
        Planning::Kept
    } else {
        Planning::Afresh
    };
    if adaptive::needs_rows(&adaptive, &start, &backlog) {
        backlog.source_rows = crate::auto_choice::source_rows(&relids);
        if !backlog.complete {
            let limit = adaptive::recount_limit(&adaptive, backlog.source_rows);
            let token = token_text.as_deref();
            let counts = capture::pending_counts(id, pending.iter().copied(), token, limit);
            backlog = adaptive::Pending {
                source_rows: backlog.source_rows,
                ..crate::auto_choice::backlog(&counts)
            };
        }
    }
    if use_diff && initiator == Initiator::Scheduler {
        let idle = pending.is_empty();
        if idle {
            // Nothing to consume: note the check, skip the statement and the history row.
            stream_tables::note_idle_refresh(id);
            return Some(Outcome {
                mode: Mode::Differential,
                deleted: 0,
                inserted: 0,
            });
        }
    }
    let choice = if use_diff && full_failed.is_none() {
        adaptive::choose(&adaptive, &start, &backlog)
    } else {
        Choice::Differential { reason: None }
    };
    let (chose_full, mut estimates) = match &choice {
        Choice::Full { reason: why } => {
            reason = Some(why.clone());
            (true, adaptive::after_full_choice(&start))
        }
        Choice::Differential { reason: why } => {
            reason = why.clone().or_else(|| full_failed.clone());
            (false, start)
        }
    };
    // Whether `sql` is the stored general statement (it guards nothing).
    let mut general = false;
    let (mode, sql, args) = if initiator == Initiator::Create {
        (Mode::Full, stored_statement(id, Stored::Populate), vec![])
    } else if use_diff && !chose_full {
        let mut args = vec![st.frontier.clone(), st.frontier_xid.clone()];
        args.extend(captured.iter().map(|s| Some(s.own_change_id.to_string())));
        if token_text.is_some() {
            args.push(token_text.clone());
        }
        let target = crate::specialise::Target {
            id,
            fingerprint: st.plan_fingerprint.as_deref(),
            query: &st.query,
            owner: &owner,
            relid: st.relid,
            storage: &name,
        };
        // Every captured source has changes (always so for one source):
        // the statement specialised to all of them was stored with the plan.
        let every_source_pending = relids.iter().all(|r| pending.contains(r));
        let sql = match &st.all_changed_sql {
            Some(all) if every_source_pending && st.plan_fingerprint.is_some() => all.clone(),
            _ => match crate::specialise::specialised(&target, &pending) {
                Some(specialised) => specialised.sql,
                None => {
                    general = true;
                    stored_statement(id, Stored::Differential)
                }
            },
        };
        (Mode::Differential, sql, args)
    } else if chose_full {
        (Mode::Full, stored_statement(id, Stored::Full), vec![])
    } else {
        if let (true, Some(src)) = (
            differential && initiator != Initiator::Create,
            own_wal_write,
        ) {
            reason = Some(crate::wal_capture::own_write_reason(src));
        } else if differential {
            reason = Some(match &discarding {
                Some(src) => {
                    format!("capture discarded on source {src}: FULL until capture resumes")
                }
                None => st
                    .reinit_reason
                    .clone()
                    .map(|r| format!("reinitialisation after {r}"))
                    .unwrap_or_else(|| "reinitialisation".into()),
            });
        }
        (Mode::Full, stored_statement(id, Stored::Full), vec![])
    };
    // Generated statements are large and their row estimates pessimistic:
    // JIT compilation would cost far more than the refresh itself. They run
    // as the owner, with names resolving as they did at creation; only a
    // DIFFERENTIAL statement may read the change buffers of its sources.
    let extension = security::caller();
    let run_refresh = |sql: &str, args: &[Option<String>], buffers: Vec<u32>| {
        with_setting("jit", "off", || {
            owner.run(|| {
                let _grant = (!buffers.is_empty())
                    .then(|| crate::buffer_access::allow(sql, buffers, owner.role, extension));
                let _applying = crate::readonly::Applying::begin();
                refresh_row(sql, args, planning)
            })
        })
        .unwrap_or_else(|| raise("XX000", "refresh statement returned no row", None))
    };
    let buffers: Vec<u32> = if mode == Mode::Differential {
        // The statement may not read the sources themselves: check that the
        // owner still may, as the owner, before reading their changes.
        owner.run(|| require_read_privileges(&st.query));
        change_buffers::buffer_oids(&relids)
    } else {
        Vec::new()
    };
    recorder::note_mode(mode.name());
    if mode == Mode::Differential && recorder::recording() {
        // What the statement is about to consume, with the writers' trace
        // contexts (changes that commit from here on are consumed too, but
        // not linked).
        for relid in &pending {
            let seen = capture::consumed_trace_context(id, *relid);
            recorder::note_changes(seen.rows, seen.distinct, &seen.first);
        }
    }
    recorder::phase(if mode == Mode::Differential {
        PhaseKind::DeltaApply
    } else {
        PhaseKind::FullRecompute
    });
    let guarded = |r: &Vec<Option<String>>| r.get(4).cloned().flatten().as_deref() == Some("true");
    let differential = || {
        if general {
            return run_refresh(&sql, &args, buffers.clone());
        }
        // A specialised statement guards the sources it assumed unchanged.
        // When one had changes committed between the check and the
        // statement, its result is incomplete: undo it and run the general
        // statement, which reads every source's changes.
        let (r, kept) = crate::spi::in_subtransaction_kept_if(|| {
            let r = run_refresh(&sql, &args, buffers.clone());
            let complete = !guarded(&r);
            (r, complete)
        });
        if kept {
            r
        } else {
            run_refresh(
                &stored_statement(id, Stored::Differential),
                &args,
                buffers.clone(),
            )
        }
    };
    // A data error of the delta may come from values the query itself
    // never evaluates: FULL decides (and raises the query's own error).
    let mut delta_error = None;
    let statement_started = std::time::Instant::now();
    let result = if mode == Mode::Differential {
        match crate::spi::in_subtransaction_handling(
            std::panic::AssertUnwindSafe(differential),
            pg_trickle_core::sqlstate::full_may_succeed,
        ) {
            Ok(r) => r,
            Err(f) => {
                delta_error = Some(f);
                vec![None; 4]
            }
        }
    } else if chose_full {
        // A FULL the choice made may fail where applying the changes would
        // not (out of memory or disk for a large recompute): the choice
        // would fail the same way at every refresh, so apply them instead.
        match crate::spi::in_subtransaction_handling(
            std::panic::AssertUnwindSafe(|| run_refresh(&sql, &args, buffers)),
            pg_trickle_core::sqlstate::differential_may_succeed_after_full,
        ) {
            Ok(r) => r,
            Err(f) => {
                let why = format!(
                    "AUTO chose FULL, which failed with SQLSTATE {} ({}); applied the changes instead",
                    f.sqlstate, f.message
                );
                pgrx::warning!("stream table {name}: {why}");
                let retry = FullFailed { why, started };
                return perform_refresh(id, initiator, skip_locked, None, Some(retry));
            }
        }
    } else {
        run_refresh(&sql, &args, buffers)
    };
    let statement_ms = statement_started.elapsed().as_secs_f64() * 1000.0;
    let (mut deleted, mut inserted, expected) = (num(&result[0]), num(&result[1]), num(&result[2]));
    let mut frontier = result[3].clone();
    let mut mode = mode;
    let delta_failed = delta_error.as_ref().map(|f| {
        let why = format!(
            "the differential statement raised {} ({}) on values the query may not evaluate; recomputed FULL",
            f.sqlstate, f.message
        );
        pgrx::warning!("stream table {name}: {why}");
        why
    });
    let recompute_because = if mode != Mode::Differential {
        None
    } else if let Some(why) = delta_failed.as_deref() {
        Some(why)
    } else if guarded(&result) {
        // The general statement guards nothing: only a statement that
        // lost its general form gets here. Recompute.
        Some("changes arrived on a source while the refresh was being planned; recomputed FULL")
    } else if deleted != expected {
        // The stored rows did not hold what the delta expected to delete: the
        // stream table was changed behind the engine's back. Recompute.
        pgrx::warning!(
            "stream table {name} was out of sync (expected to delete {expected} rows, found {deleted}); recomputing with FULL refresh"
        );
        Some("stream table was out of sync with its sources")
    } else {
        None
    };
    // What this refresh measured, for AUTO's next choices (population at
    // creation writes into an empty table: it is no FULL refresh).
    let track = auto && initiator != Initiator::Create;
    if track && mode == Mode::Full {
        estimates = adaptive::learn_full(&estimates, statement_ms);
    } else if mode == Mode::Differential && recompute_because.is_none() && backlog.complete {
        estimates =
            adaptive::learn_differential(&adaptive, &estimates, backlog.changes, statement_ms);
    }
    if let Some(why) = recompute_because {
        recorder::phase(PhaseKind::FullRecompute);
        let full_started = std::time::Instant::now();
        let full = run_refresh(&stored_statement(id, Stored::Full), &[], Vec::new());
        if track {
            let ms = full_started.elapsed().as_secs_f64() * 1000.0;
            estimates = adaptive::learn_full(&estimates, ms);
        }
        deleted += num(&full[0]);
        inserted = num(&full[1]);
        frontier = full[3].clone();
        mode = Mode::Full;
        reason = Some(why.into());
    }
    recorder::phase(PhaseKind::Record);

    record_own_changes(
        id,
        &captured,
        &wal_sources,
        wrote_before,
        &drained,
        &own_xid,
    );
    let still_reinit = discarding
        .as_ref()
        .map(|src| format!("capture discarded on source {src}"));
    let learned = track.then_some(&estimates);
    stream_tables::store_refresh(id, frontier, own_xid, mode, still_reinit, learned);
    // With an outbox: its message, in this transaction.
    crate::outbox::publish::after_refresh(id, st.relid, &name, mode.name());
    history::append(&history::Entry {
        st_id: id,
        started_at: started,
        mode: mode.name(),
        initiator,
        rows_changed: Some((deleted, inserted)),
        reason: reason.as_deref(),
        error: None,
    });
    // Prune in oid order so concurrent refreshes lock buffers in one order.
    let mut prune_order = relids;
    prune_order.sort_unstable();
    for relid in &prune_order {
        capture::prune(*relid);
    }
    // The backlog just shrank: backpressure may release.
    operations::evaluate_captured(prune_order);
    Some(Outcome {
        mode,
        deleted,
        inserted,
    })
}

/// Record, per source, how far this refresh consumed its own
/// transaction's changes (read as `own_change_id` by the next refresh,
/// whose frontier is this transaction).
///
/// A buffer is read for that only where it may hold rows of this
/// transaction: every one when it had written before the refresh
/// (`wrote_before`), otherwise those of `drained`. A transaction that had
/// written nothing when the refresh began had no id (any write assigns
/// one, and capture stamps each row with its writer's), so before the
/// statement only the buffers the refresh drained a sharded source into
/// may hold its rows; every other source's own position is 0, recorded
/// only where another is stored. That spares a scan of each buffer in
/// every refresh that is a transaction of its own (the scheduler's,
/// autocommit). A row that the statement's own writes add to a source (a
/// trigger on the stream table) is not read by the statement: it stays
/// unconsumed on this path, and the scan counts it as consumed.
///
/// A source captured from the WAL records the WAL position, its rows'
/// ids; one switching back to triggers is recorded like a trigger source,
/// since its new rows, this transaction's included, come from the trigger.
fn record_own_changes(
    id: i64,
    captured: &[sources::CapturedSource],
    wal_sources: &[u32],
    wrote_before: bool,
    drained: &[u32],
    own_xid: &Option<String>,
) {
    for s in captured {
        // A source switching back to triggers has its new rows, this
        // transaction's included, from the trigger, numbered by the
        // buffer's sequence: a WAL position says nothing about those ids.
        // Read once: a switch back that finished since the refresh began
        // left no row, and the source is then a trigger source.
        let from_wal = wal_sources.contains(&s.relid)
            && crate::catalog::wal_capture::of(s.relid).is_some_and(|w| w.stop_lsn.is_none());
        if from_wal {
            sources::store_own_change_lsn(id, s.relid);
        } else if wrote_before || drained.contains(&s.relid) {
            sources::store_own_change_id(id, s.relid, own_xid.clone());
        } else if s.own_change_id != 0 {
            sources::store_no_own_change(id, s.relid);
        }
    }
    // Rows this transaction captures from here on must come after the
    // positions just stored: their ids come from new draws.
    crate::capture_row::forget_change_id_blocks();
}

/// Whether the current transaction has a transaction id, that is, has
/// written something (or locked a row).
fn transaction_has_written() -> bool {
    // SAFETY: reads the backend's transaction state.
    unsafe { pg_sys::GetTopTransactionIdIfAny() != pg_sys::InvalidTransactionId }
}

/// The time now, as `clock_timestamp()` reads it, in ISO form with its
/// offset (what a `timestamptz` parameter reads back in any `DateStyle`).
/// Called directly: a statement for it cost about 1% of a warm refresh.
fn clock_text() -> String {
    // SAFETY: both are plain calls inside a transaction; the string is a
    // static buffer of PostgreSQL's, copied before anything else runs.
    unsafe {
        let text = pg_sys::timestamptz_to_str(pg_sys::GetCurrentTimestamp());
        std::ffi::CStr::from_ptr(text)
            .to_string_lossy()
            .into_owned()
    }
}

/// This transaction's id, assigned now if it has none, as
/// `pg_current_xact_id()` returns it (a refresh always writes).
fn own_xact_id() -> u64 {
    // SAFETY: called inside a transaction, outside recovery (a refresh
    // writes), as `pg_current_xact_id()` itself calls it.
    unsafe { pg_sys::GetTopFullTransactionId() }.value
}

/// Raise (42501 when a privilege is missing) unless the current role may
/// read everything `query` reads: every relation and column, through views,
/// subqueries and CTEs, and execute every function it calls. The query is
/// planned and started with `LIMIT 0`, which runs PostgreSQL's own
/// permission checks and no row; the plan is kept per backend and role
/// (see `spi::rows`), and the checks made at start run at every start.
/// Call it as the owner.
pub fn require_read_privileges(query: &str) {
    run(&probe_sql(query), &[]);
}

fn probe_sql(query: &str) -> String {
    format!("SELECT 1 FROM ({query}) __pgt_probe LIMIT 0")
}
