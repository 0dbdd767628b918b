//! One chaos run: its cluster, schema and load, the scenario's faults,
//! and the verdict once the load has stopped.

use std::path::Path;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::scenarios::{self, Ctx, Injected, STREAM_TABLES};
use super::writers::{Load, LoadOptions};
use super::{faults, verdict, ChaosOptions, RunFacts, Scenario};
use crate::cluster::{describe, Cluster, ClusterOptions};

/// Settings of a chaos cluster: a quick scheduler, autovacuum on.
fn cluster_settings() -> Vec<String> {
    vec![
        "pg_trickle.scheduler_interval_ms = 200".into(),
        "restart_after_crash = on".into(),
        "max_connections = 40".into(),
        "log_min_messages = warning".into(),
        "wal_level = logical".into(),
        "max_replication_slots = 20".into(),
        "max_wal_senders = 20".into(),
    ]
}

/// Create the chaos sources and stream tables (and switch the sources
/// `capture` names to the WAL).
fn setup(
    db: &mut postgres::Client,
    scenario: Scenario,
    capture: oracles::workload::Capture,
) -> Result<(), String> {
    db.batch_execute(scenarios::SCHEMA)
        .map_err(|e| format!("creating the chaos schema: {}", describe(&e)))?;
    for st in STREAM_TABLES {
        if st.name == scenarios::COMING_AND_GOING && !scenario.starts_with_kinds() {
            continue;
        }
        db.batch_execute(&scenarios::create_sql(st))
            .map_err(|e| format!("creating {}: {}", st.name, describe(&e)))?;
    }
    if capture == oracles::workload::Capture::Wal {
        for source in scenarios::WAL_CAPTURED {
            db.batch_execute(&format!(
                "SELECT pgtrickle.set_capture_mode('{source}', 'wal')"
            ))
            .map_err(|e| format!("capturing {source} from the WAL: {}", describe(&e)))?;
        }
    }
    Ok(())
}

/// One run of `scenario` on its own cluster.
pub(super) fn run_once(
    scenario: Scenario,
    seed: u64,
    opts: &ChaosOptions,
    parent: &Path,
    log_dir: &Path,
) -> (RunFacts, Result<(), String>, Option<Cluster>) {
    let mut facts = RunFacts {
        seed,
        ..RunFacts::default()
    };
    let copts = ClusterOptions {
        pg_config: opts.pg_config.clone(),
        settings: cluster_settings(),
        name: format!("chaos-{}-{seed}", scenario.name()),
        log_dir: Some(log_dir.to_path_buf()),
        ..ClusterOptions::default()
    };
    let cluster = match Cluster::start(parent, &copts) {
        Ok(c) => c,
        Err(e) => return (facts, Err(format!("could not start a cluster: {e}")), None),
    };
    let small = if scenario == Scenario::DiskFullChangeBuffers {
        match faults::SmallFilesystem::mount(
            &cluster.dir.join("small"),
            scenarios::SMALL_KIB,
            cluster.server_account(),
        ) {
            Ok(fs) => Some(fs),
            Err(e) => {
                return (
                    facts,
                    Err(format!("mounting the small filesystem: {e}")),
                    Some(cluster),
                )
            }
        }
    } else {
        None
    };
    let result = judge_run(scenario, seed, opts, &cluster, small.as_ref(), &mut facts);
    if small.is_some() {
        if let Ok(mut db) = cluster.connect("postgres") {
            if let Err(e) = scenarios::leave_small_filesystem(&mut db) {
                eprintln!("chaos: {e}");
            }
        }
    }
    drop(small);
    (facts, result, Some(cluster))
}

fn judge_run(
    scenario: Scenario,
    seed: u64,
    opts: &ChaosOptions,
    cluster: &Cluster,
    small: Option<&faults::SmallFilesystem>,
    facts: &mut RunFacts,
) -> Result<(), String> {
    let mut db = cluster
        .connect("postgres")
        .map_err(|e| format!("connecting: {e}"))?;
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trickle")
        .map_err(|e| describe(&e))?;
    setup(&mut db, scenario, opts.capture)?;
    if let Some(fs) = small {
        scenarios::buffers_to_small_filesystem(&mut db, fs)?;
    }
    let mut marks = Vec::new();
    for st in STREAM_TABLES {
        marks.push(oracles::engine_api::last_refresh_id(&mut db, st.name).unwrap_or(0));
    }
    let load = Load::start(&LoadOptions {
        conninfo: cluster.conninfo("postgres"),
        writers: opts.writers,
        seed,
        tolerated: scenario.tolerated(),
        refresh: Some(scenarios::REFRESHED_BY_HAND.into()),
    });
    let pause = Duration::from_secs_f64(opts.load_seconds);
    std::thread::sleep(pause);
    let mut ctx = Ctx {
        cluster,
        db,
        rng: ChaCha8Rng::seed_from_u64(seed),
        load: &load,
        injected: Injected::default(),
        capture: opts.capture,
    };
    let injected = match scenario {
        Scenario::KillBackendMidRefresh => scenarios::kill_backend_mid_refresh(&mut ctx),
        Scenario::KillSchedulerMidRefresh => scenarios::kill_scheduler_mid_refresh(&mut ctx),
        Scenario::ImmediateShutdownMidRefresh => {
            scenarios::immediate_shutdown_mid_refresh(&mut ctx)
        }
        Scenario::ImmediateShutdownMidCapture => {
            scenarios::immediate_shutdown_mid_capture(&mut ctx)
        }
        Scenario::CrashDuringCreate => scenarios::crash_during_create(&mut ctx),
        Scenario::CrashDuringAlter => scenarios::crash_during_alter(&mut ctx),
        Scenario::CrashDuringDrop => scenarios::crash_during_drop(&mut ctx),
        Scenario::CancelDuringRefresh => scenarios::cancel_during_refresh(&mut ctx),
        Scenario::LockTimeoutDuringRefresh => scenarios::lock_timeout_during_refresh(&mut ctx),
        Scenario::DiskFullChangeBuffers => match small {
            Some(fs) => scenarios::disk_full_change_buffers(&mut ctx, fs),
            None => Err("no small filesystem".into()),
        },
    };
    facts.injected = ctx.injected;
    if injected.is_ok() {
        std::thread::sleep(pause);
    }
    facts.load = load.stop();
    injected.map_err(|e| format!("injecting the fault: {e}"))?;
    if !facts.load.unexpected.is_empty() {
        return Err(format!(
            "the load met failures no fault explains: {}",
            facts.load.unexpected.join("; ")
        ));
    }
    if facts.injected.mid_operation == 0 {
        return Err("no fault landed while the operation it aimed at was running".into());
    }
    // A fresh monitor session: the last one may predate a crash.
    let mut db = faults::recovered(cluster)?;
    if faults::scheduler(&mut db)?.is_none() {
        std::thread::sleep(Duration::from_secs(6));
        if faults::scheduler(&mut db)?.is_none() {
            return Err("the scheduler is not running after the faults".into());
        }
    }
    let mut present = Vec::new();
    for st in STREAM_TABLES {
        if verdict::exists_consistently(&mut db, st.name)? {
            present.push(st);
        }
    }
    verdict::catch_up(&mut db, &present)?;
    let mut mismatches = Vec::new();
    let mut unasked = Vec::new();
    for (st, mark) in STREAM_TABLES.iter().zip(&marks) {
        if !present.contains(&st) {
            continue;
        }
        match verdict::compare_with_query(&mut db, st) {
            Ok(c) => facts.rows_compared += c.rows,
            Err((c, diff)) => {
                facts.lost += c.lost;
                facts.duplicated += c.extra;
                facts.rows_compared += c.rows;
                mismatches.push(diff);
            }
        }
        let h = verdict::refreshes_since(&mut db, st.name, *mark)?;
        facts.differential_refreshes += h.differential;
        facts
            .failed_refreshes
            .extend(h.errors.iter().map(|e| format!("{}: {e}", st.name)));
        for f in &h.full {
            facts.full_refreshes.push(format!("{}: {f}", st.name));
            if !scenario.full_asked_for().contains(&st.name) {
                unasked.push(format!("{}: {f}", st.name));
            }
        }
        let (triggers, buffer) = verdict::capture_objects(&mut db, st.source)?;
        if triggers.is_empty() || !buffer {
            mismatches.push(format!(
                "{} exists but its source {} has triggers {triggers:?} and change buffer {}",
                st.name,
                st.source,
                if buffer { "present" } else { "missing" }
            ));
        }
    }
    if !mismatches.is_empty() {
        return Err(mismatches.join("\n"));
    }
    if !unasked.is_empty() {
        return Err(format!(
            "refreshes ran FULL that nobody asked for: {}",
            unasked.join("; ")
        ));
    }
    Ok(())
}
