//! The operator's controls against real clusters: hold and resume, discard
//! and resume capture, backpressure with hysteresis (reject and warn), the
//! held-backlog cap, and what status says about each.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::cluster::Cluster;
use harness::testkit::{code, database, dedicated_cluster};
use oracles::compare::differences;
use oracles::engine_api::last_refresh_mode;
use postgres::Client;

/// `stream_table_status()` columns for one stream table, by name.
fn status(db: &mut Client, st: &str) -> serde_json::Value {
    let r = db
        .query_one(
            "SELECT row_to_json(s)::text FROM pgtrickle.stream_table_status() s WHERE name = $1",
            &[&format!("public.{st}")],
        )
        .expect("status row");
    serde_json::from_str(&r.get::<_, String>(0)).unwrap()
}

fn buffer_status(db: &mut Client, source: &str) -> serde_json::Value {
    let r = db
        .query_one(
            "SELECT row_to_json(s)::text FROM pgtrickle.change_buffer_status() s WHERE to_regclass(source) = to_regclass($1)",
            &[&source],
        )
        .expect("buffer status row");
    serde_json::from_str(&r.get::<_, String>(0)).unwrap()
}

const QUERY: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM src GROUP BY k";

fn setup(db: &mut Client, schedule: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, v int);
         INSERT INTO src SELECT i % 3, i FROM generate_series(1, 10) i;
         SELECT pgtrickle.create_stream_table('st', '{QUERY}', {schedule}, 'DIFFERENTIAL');"
    ))
    .expect("setup");
}

#[test]
fn hold_pauses_refreshes_keeps_capturing_and_catches_up_differentially() {
    let mut db = database("hold");
    setup(&mut db, "NULL");
    db.batch_execute("SELECT pgtrickle.hold_stream_table('st', 'nightly load')")
        .unwrap();
    db.batch_execute("INSERT INTO src VALUES (1, 100), (5, 5); DELETE FROM src WHERE v = 3")
        .unwrap();
    let s = status(&mut db, "st");
    assert_eq!(s["cdc_state"], "holding", "{s}");
    assert!(
        s["cdc_reason"].as_str().unwrap().contains("nightly load"),
        "{s}"
    );
    assert_eq!(s["pending_changes"], 3, "{s}");
    assert!(s["pending_bytes"].as_i64().unwrap() > 0);
    let (c, m) = code(db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')"));
    assert_eq!(c, "55000", "{m}");
    assert!(
        m.contains("st") && m.contains("held") && m.contains("nightly load"),
        "{m}"
    );
    db.batch_execute("SELECT pgtrickle.resume_stream_table('st')")
        .unwrap();
    assert_eq!(status(&mut db, "st")["cdc_state"], "capturing");
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("DIFFERENTIAL")
    );
    assert_eq!(differences(&mut db, "st", QUERY).unwrap(), None);
    assert_eq!(status(&mut db, "st")["pending_changes"], 0);
}

#[test]
fn the_scheduler_skips_held_stream_tables() {
    // The scheduler watches one database ("postgres"); a cluster of its own
    // keeps this test's schedules away from the other tests.
    let cluster = dedicated_cluster(
        "hold-scheduler",
        &["pg_trickle.scheduler_interval_ms = 100"],
    );
    let mut db = cluster.connect("postgres").unwrap();
    db.batch_execute("CREATE EXTENSION pg_trickle").unwrap();
    setup(&mut db, "'1s'");
    db.batch_execute("SELECT pgtrickle.hold_all_stream_tables()")
        .unwrap();
    db.batch_execute("INSERT INTO src VALUES (7, 7)").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        differences(&mut db, "st", QUERY).unwrap().is_some(),
        "a held stream table was refreshed"
    );
    let n: i64 = db
        .query_one("SELECT pgtrickle.resume_all_stream_tables()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    wait_until(
        Duration::from_secs(20),
        "not refreshed after resume",
        || differences(&mut db, "st", QUERY).unwrap().is_none(),
    );
}

#[test]
fn discard_drops_changes_and_forces_full_until_capture_resumes() {
    let mut db = database("discard");
    setup(&mut db, "NULL");
    db.batch_execute("INSERT INTO src VALUES (1, 1)").unwrap();
    let n: i64 = db
        .query_one(
            "SELECT pgtrickle.discard_changes('st', 'disk pressure')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let s = status(&mut db, "st");
    assert_eq!(s["cdc_state"], "discarding", "{s}");
    assert!(
        s["cdc_reason"].as_str().unwrap().contains("disk pressure"),
        "{s}"
    );
    assert_eq!(s["needs_reinit"], true);
    let b = buffer_status(&mut db, "src");
    assert_eq!(b["capture_state"], "discarding");
    assert_eq!(b["pending_rows"], 0, "buffered changes are dropped: {b}");
    db.batch_execute("INSERT INTO src VALUES (2, 2)").unwrap();
    assert_eq!(
        buffer_status(&mut db, "src")["pending_rows"],
        0,
        "capture stopped"
    );
    for _ in 0..2 {
        db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
            .unwrap();
        assert_eq!(
            last_refresh_mode(&mut db, "st").unwrap().as_deref(),
            Some("FULL")
        );
        assert_eq!(differences(&mut db, "st", QUERY).unwrap(), None);
        assert_eq!(
            status(&mut db, "st")["needs_reinit"],
            true,
            "the mark stays while discarding"
        );
    }
    let n: i64 = db
        .query_one("SELECT pgtrickle.resume_capture('st')", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    db.batch_execute("INSERT INTO src VALUES (2, 3)").unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("FULL")
    );
    assert_eq!(status(&mut db, "st")["needs_reinit"], false);
    db.batch_execute("INSERT INTO src VALUES (2, 4); SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("DIFFERENTIAL")
    );
    assert_eq!(differences(&mut db, "st", QUERY).unwrap(), None);
    assert_eq!(status(&mut db, "st")["cdc_state"], "capturing");
}

fn backpressure_db(cluster: &Cluster, name: &str) -> Client {
    let mut db = cluster.fresh_database(name).unwrap();
    db.batch_execute(
        "CREATE TABLE src (k int, v int);
         SELECT pgtrickle.create_stream_table('a', 'SELECT k, count(*) AS n FROM src GROUP BY k', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('b', 'SELECT k, v FROM src', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    db
}

fn insert(db: &mut Client, n: usize) -> (String, String) {
    code(db.batch_execute(&format!(
        "INSERT INTO src SELECT 1, i FROM generate_series(1, {n}) i"
    )))
}

fn evaluate(db: &mut Client) -> Vec<(String, String)> {
    db.query(
        "SELECT source, backpressure FROM pgtrickle.evaluate_backpressure()",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[test]
fn backpressure_engages_above_high_rejects_writes_and_releases_only_below_low() {
    let cluster = dedicated_cluster(
        "backpressure",
        &[
            "pg_trickle.enforce_backpressure = on",
            "pg_trickle.backpressure_high_rows = 10",
            "pg_trickle.backpressure_low_rows = 4",
            "pg_trickle.scheduler_interval_ms = 600000",
        ],
    );
    let mut db = backpressure_db(&cluster, "bp");
    assert_eq!(insert(&mut db, 6).0, "ok");
    // Reader b consumes; reader a keeps 6 pending: below the high watermark.
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('b')")
        .unwrap();
    assert!(evaluate(&mut db).is_empty());
    assert_eq!(buffer_status(&mut db, "src")["backpressure"], "released");
    assert_eq!(insert(&mut db, 6).0, "ok");
    // a has 12 pending, b 6: engaged.
    assert_eq!(
        evaluate(&mut db),
        [("public.src".to_string(), "engaged".to_string())]
    );
    let s = status(&mut db, "a");
    assert_eq!(s["backpressure"], "engaged", "{s}");
    assert!(
        s["backpressure_reason"]
            .as_str()
            .unwrap()
            .contains("12 unconsumed change rows"),
        "{s}"
    );
    let (c, m) = insert(&mut db, 1);
    assert_eq!(c, "53400", "{m}");
    assert!(
        m.contains("src") && m.contains("12") && m.contains("enforce_backpressure"),
        "{m}"
    );
    let (c, _) = code(db.batch_execute("DELETE FROM src WHERE v = 1"));
    assert_eq!(c, "53400", "every write is refused");
    assert_eq!(
        buffer_status(&mut db, "src")["pending_rows"],
        12,
        "nothing captured is lost"
    );
    // a drains, b still has 6 pending: between the watermarks, no change.
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('a')")
        .unwrap();
    assert!(evaluate(&mut db).is_empty());
    assert_eq!(buffer_status(&mut db, "src")["backpressure"], "engaged");
    // b drains: below the low watermark, released (by the refresh itself).
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('b')")
        .unwrap();
    let b = buffer_status(&mut db, "src");
    assert_eq!(b["backpressure"], "released", "{b}");
    assert_eq!(b["backpressure_transitions"], 2);
    assert_eq!(insert(&mut db, 7).0, "ok");
    assert!(
        evaluate(&mut db).is_empty(),
        "7 is between the watermarks: stays released"
    );
    for st in ["a", "b"] {
        db.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{st}')"))
            .unwrap();
        assert_eq!(
            last_refresh_mode(&mut db, st).unwrap().as_deref(),
            Some("DIFFERENTIAL")
        );
    }
    assert_eq!(
        differences(&mut db, "b", "SELECT k, v FROM src").unwrap(),
        None
    );
}

/// A refresh releases what enforcement marked once enforcement is off
/// (it reads its sources' marks by key, not by scanning the buffers).
#[test]
fn a_refresh_after_enforcement_is_switched_off_releases_backpressure() {
    let cluster = dedicated_cluster(
        "backpressure-off",
        &[
            "pg_trickle.enforce_backpressure = on",
            "pg_trickle.backpressure_high_rows = 10",
            "pg_trickle.backpressure_low_rows = 4",
            "pg_trickle.scheduler_interval_ms = 600000",
        ],
    );
    let mut db = backpressure_db(&cluster, "bpoff");
    assert_eq!(insert(&mut db, 12).0, "ok");
    assert_eq!(evaluate(&mut db).len(), 1);
    assert_eq!(buffer_status(&mut db, "src")["backpressure"], "engaged");
    assert_eq!(insert(&mut db, 1).0, "53400", "engaged: writes refused");
    db.batch_execute("ALTER SYSTEM SET pg_trickle.enforce_backpressure = off")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(
        Duration::from_secs(30),
        "the reload did not reach the session",
        || {
            db.query_one("SHOW pg_trickle.enforce_backpressure", &[])
                .unwrap()
                .get::<_, String>(0)
                == "off"
        },
    );
    assert_eq!(
        buffer_status(&mut db, "src")["backpressure"],
        "engaged",
        "switching enforcement off changes no mark by itself"
    );
    // Reader a consumes; b still has 12 pending, above the high mark.
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('a')")
        .unwrap();
    let b = buffer_status(&mut db, "src");
    assert_eq!(b["backpressure"], "released", "{b}");
    assert_eq!(insert(&mut db, 1).0, "ok");
}

#[test]
fn backpressure_warn_action_lets_writes_through_with_a_warning() {
    let cluster = dedicated_cluster(
        "backpressure-warn",
        &[
            "pg_trickle.enforce_backpressure = on",
            "pg_trickle.backpressure_action = 'warn'",
            "pg_trickle.backpressure_high_rows = 3",
            "pg_trickle.backpressure_low_rows = 1",
            "pg_trickle.scheduler_interval_ms = 600000",
        ],
    );
    drop(backpressure_db(&cluster, "bpw"));
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = notices.clone();
    let mut cfg: postgres::Config = cluster.conninfo("bpw").parse().unwrap();
    cfg.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()));
    let mut db = cfg.connect(postgres::NoTls).unwrap();
    assert_eq!(insert(&mut db, 5).0, "ok");
    assert_eq!(evaluate(&mut db).len(), 1);
    assert_eq!(insert(&mut db, 1).0, "ok", "warn does not reject");
    let seen = notices.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|n| n.contains("backpressure on public.src")),
        "{seen:?}"
    );
    assert_eq!(buffer_status(&mut db, "src")["pending_rows"], 6);
}

#[test]
fn the_held_backlog_cap_refuses_writes_until_the_hold_is_resolved() {
    let cluster = dedicated_cluster(
        "held-cap",
        &[
            "pg_trickle.max_held_backlog_rows = 5",
            "pg_trickle.scheduler_interval_ms = 600000",
        ],
    );
    let mut db = backpressure_db(&cluster, "cap");
    db.batch_execute("SELECT pgtrickle.hold_stream_table('a', 'cap test')")
        .unwrap();
    assert_eq!(insert(&mut db, 4).0, "ok");
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('b')")
        .unwrap();
    assert_eq!(status(&mut db, "a")["backpressure"], "released");
    assert_eq!(insert(&mut db, 2).0, "ok");
    db.batch_execute("SELECT * FROM pgtrickle.evaluate_backpressure()")
        .unwrap();
    let s = status(&mut db, "a");
    assert_eq!(s["backpressure"], "writes blocked", "{s}");
    assert!(
        s["backpressure_reason"]
            .as_str()
            .unwrap()
            .contains("max_held_backlog_rows = 5"),
        "{s}"
    );
    let (c, m) = insert(&mut db, 1);
    assert_eq!(c, "53400", "{m}");
    assert!(m.contains("held stream table") && m.contains("src"), "{m}");
    db.batch_execute(
        "SELECT pgtrickle.resume_stream_table('a'); SELECT pgtrickle.refresh_stream_table('a')",
    )
    .unwrap();
    assert_eq!(status(&mut db, "a")["backpressure"], "released");
    assert_eq!(insert(&mut db, 1).0, "ok");
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('a')")
        .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "a").unwrap().as_deref(),
        Some("DIFFERENTIAL")
    );
    assert_eq!(
        differences(&mut db, "a", "SELECT k, count(*) AS n FROM src GROUP BY k").unwrap(),
        None,
        "nothing lost across the hold and the refused writes"
    );
}

/// A scheduler that polls every ten minutes, with event-driven wake on or off,
/// and a due stream table in database "postgres" (the one it watches).
fn wake_cluster(name: &str, wake: bool) -> (Cluster, Client) {
    wake_cluster_with(
        name,
        if wake {
            "pg_trickle.event_driven_wake = on"
        } else {
            "pg_trickle.event_driven_wake = off"
        },
    )
}

/// [`wake_cluster`] with `setting` in place of the wake setting.
fn wake_cluster_with(name: &str, setting: &str) -> (Cluster, Client) {
    let cluster = dedicated_cluster(
        name,
        &["pg_trickle.scheduler_interval_ms = 600000", setting],
    );
    let mut db = cluster.connect("postgres").unwrap();
    db.batch_execute("CREATE EXTENSION pg_trickle").unwrap();
    setup(&mut db, "'1s'");
    std::thread::sleep(Duration::from_millis(1200)); // the schedule is now due
    (cluster, db)
}

fn last_refresh(db: &mut Client) -> String {
    db.query_one(
        "SELECT last_refresh_at::text FROM pgtrickle.pgt_stream_tables",
        &[],
    )
    .unwrap()
    .get(0)
}

/// Time from a committed change until the stream table shows it, if within `limit`.
fn fresh_within(db: &mut Client, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    db.batch_execute("INSERT INTO src VALUES (9, 9)").unwrap();
    while t.elapsed() < limit {
        if differences(db, "st", QUERY).unwrap().is_none() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_commit_wakes_the_scheduler_and_a_rollback_does_not() {
    let (_cluster, mut db) = wake_cluster("wake-on", true);
    let before = last_refresh(&mut db);
    db.batch_execute("BEGIN; INSERT INTO src VALUES (8, 8); ROLLBACK")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        last_refresh(&mut db),
        before,
        "a rolled-back transaction woke the scheduler"
    );
    let latency = fresh_within(&mut db, Duration::from_secs(10)).expect(
        "a committed change was not refreshed within 10 s although the poll interval is 10 min",
    );
    assert!(latency < Duration::from_secs(5), "wake latency {latency:?}");
    eprintln!("event-driven wake: refreshed {latency:?} after the commit");
}

#[test]
fn without_event_driven_wake_the_scheduler_only_polls() {
    let (_cluster, mut db) = wake_cluster("wake-off", false);
    assert_eq!(
        fresh_within(&mut db, Duration::from_secs(4)),
        None,
        "refreshed before the next poll although event-driven wake is off"
    );
}

/// Commit wakes start scheduler runs no closer together than
/// `pg_trickle.wake_min_interval_ms` (here 5 s): a commit that comes 1.2 s
/// after a run waits for the rest of the interval (at least 3.6 s; at
/// least 2 s is asserted). Any run counts, whatever set the latch, so only
/// this lower bound is exact; `a_commit_wakes_the_scheduler...` checks that
/// at the default a commit is picked up at once.
#[test]
fn commit_wakes_start_runs_no_closer_than_the_minimum_interval() {
    let (_cluster, mut db) =
        wake_cluster_with("wake-spaced", "pg_trickle.wake_min_interval_ms = 5000");
    fresh_within(&mut db, Duration::from_secs(15))
        .expect("a committed change was not refreshed within 15 s");
    std::thread::sleep(Duration::from_millis(1200)); // the schedule is due again
    let latency = fresh_within(&mut db, Duration::from_secs(15))
        .expect("a committed change was not refreshed within 15 s");
    assert!(
        latency >= Duration::from_secs(2),
        "a commit 1.2 s after a run was refreshed {latency:?} later although runs are 5 s apart"
    );
}

/// What the scheduler recorded for a refresh cancelled while it waited for
/// a lock, on a cluster whose messages are in `locale`:
/// (decision, SQLSTATE, message).
fn cancelled_scheduled_refresh(locale: &str) -> (String, String, String) {
    let cluster = dedicated_cluster(
        &format!("retry-{}", locale.replace('.', "-")),
        &[
            "pg_trickle.scheduler_interval_ms = 200",
            &format!("lc_messages = '{locale}'"),
        ],
    );
    let mut db = cluster.connect("postgres").unwrap();
    db.batch_execute("CREATE EXTENSION pg_trickle").unwrap();
    setup(&mut db, "'1s'");
    let mut locker = cluster.connect("postgres").unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE st IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    db.batch_execute("INSERT INTO src VALUES (1, 1)").unwrap();
    let started = Instant::now();
    loop {
        let waiting: bool = db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_trickle scheduler' \
                 AND wait_event_type = 'Lock')",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the scheduler never waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    db.batch_execute(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_trickle scheduler'",
    )
    .unwrap();
    let recorded = loop {
        if let Some(r) = db
            .query_opt(
                "SELECT reason, error_sqlstate, error_message FROM pgtrickle.pgt_refresh_history \
                 WHERE mode = 'ERROR' ORDER BY id LIMIT 1",
                &[],
            )
            .unwrap()
        {
            break (r.get(0), r.get(1), r.get(2));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no failed refresh was recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    locker.batch_execute("ROLLBACK").unwrap();
    // Transient: the next tick retries (without waiting for the schedule) and succeeds.
    while differences(&mut db, "st", QUERY).unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "not retried after a transient failure"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    recorded
}

#[test]
fn retry_decisions_follow_the_sqlstate_in_any_message_language() {
    let (en_reason, en_code, en_message) = cancelled_scheduled_refresh("C");
    let (de_reason, de_code, de_message) = cancelled_scheduled_refresh("de_DE.UTF-8");
    assert_eq!((en_code.as_str(), de_code.as_str()), ("57014", "57014"));
    assert_ne!(
        en_message, de_message,
        "the second cluster's messages should be German: {de_message}"
    );
    assert!(
        en_reason.starts_with("transient failure (SQLSTATE 57014"),
        "{en_reason}"
    );
    assert!(
        en_reason.contains("retrying on the next tick"),
        "{en_reason}"
    );
    assert_eq!(en_reason, de_reason);
}

/// The scheduler's backend pid, waiting for it to be up.
fn scheduler_pid(db: &mut Client) -> i32 {
    let started = Instant::now();
    loop {
        let r = db
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_trickle scheduler'",
                &[],
            )
            .unwrap();
        if let Some(r) = r {
            return r.get(0);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no scheduler running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_refresh_whose_commit_fails_is_rolled_back_and_the_scheduler_goes_on() {
    // A deferred trigger on the refresh history fails the scheduled
    // refresh's commit while `fail_commit` says so (as Citus fails a
    // commit when a node goes away): the refresh is rolled back and
    // logged, and the same scheduler process refreshes once the cause is
    // gone. Before, the scheduler exited and was restarted 5 s later.
    let cluster = dedicated_cluster(
        "commit-failure-scheduler",
        &["pg_trickle.scheduler_interval_ms = 100"],
    );
    let mut db = cluster.connect("postgres").unwrap();
    db.batch_execute(
        "CREATE EXTENSION pg_trickle; CREATE TABLE src (k int); INSERT INTO src VALUES (1), (2);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k FROM src', '1s', 'DIFFERENTIAL');
         CREATE TABLE public.fail_commit (fail bool NOT NULL);
         INSERT INTO public.fail_commit VALUES (true);
         CREATE FUNCTION public.fail_if_asked() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF (SELECT fail FROM public.fail_commit) THEN
               RAISE EXCEPTION 'injected commit failure';
             END IF;
             RETURN NULL;
           END $$;
         CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON pgtrickle.pgt_refresh_history
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.fail_if_asked();",
    )
    .unwrap();
    let pid = scheduler_pid(&mut db);
    db.batch_execute("INSERT INTO src VALUES (3)").unwrap();
    // Several ticks whose refresh fails at commit.
    std::thread::sleep(Duration::from_millis(3000));
    let query = "SELECT k FROM src";
    assert!(
        differences(&mut db, "st", query).unwrap().is_some(),
        "a refresh whose commit failed left its rows"
    );
    assert_eq!(
        scheduler_pid(&mut db),
        pid,
        "the scheduler exited on a failed commit"
    );
    db.batch_execute("UPDATE public.fail_commit SET fail = false")
        .unwrap();
    let started = Instant::now();
    while differences(&mut db, "st", query).unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not refreshed after the cause was removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(scheduler_pid(&mut db), pid, "the same scheduler refreshed");
}

/// Poll `done` until it holds; panic with `failure` after `limit`.
fn wait_until(limit: Duration, failure: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{failure}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `sql` (`what`) in a new session of database `dbname` on a thread,
/// and return once that session waits for a lock (`db` watches it).
fn run_until_it_waits(
    db: &mut Client,
    dbname: &str,
    sql: &'static str,
    what: &str,
) -> std::thread::JoinHandle<Result<(), String>> {
    let mut other = harness::testkit::shared_cluster().connect(dbname).unwrap();
    let pid: i32 = other
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let ran = std::thread::spawn(move || {
        other
            .batch_execute(sql)
            .map_err(|e| harness::cluster::describe(&e))
    });
    wait_until(
        Duration::from_secs(20),
        &format!("{what} never waited for a lock"),
        || {
            db.query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)",
                &[&pid],
            )
            .unwrap()
            .get(0)
        },
    );
    ran
}

/// Partitioned source `src` (two partitions) and `src_2` to attach; a
/// stream table `st` (`mode`) over it. One session locks `src` as an
/// operator moving a partition does; another runs `sql` (`what`), which
/// must wait for it; then the first attaches `src_2` and commits. Both
/// must succeed, and `st` end up exact.
fn ddl_holding_a_source_meets(name: &str, mode: &str, what: &str, sql: &'static str) {
    let mut db = database(name);
    db.batch_execute(
        "CREATE TABLE src (k int, v int) PARTITION BY LIST (k);
         CREATE TABLE src_0 PARTITION OF src FOR VALUES IN (0);
         CREATE TABLE src_1 PARTITION OF src FOR VALUES IN (1);
         INSERT INTO src SELECT i % 2, i FROM generate_series(1, 10) i;
         CREATE TABLE src_2 (k int, v int);
         INSERT INTO src_2 VALUES (2, 100);",
    )
    .unwrap();
    db.execute(
        &format!("SELECT pgtrickle.create_stream_table('st', '{QUERY}', NULL, '{mode}')"),
        &[],
    )
    .unwrap();
    db.batch_execute("INSERT INTO src VALUES (1, 1)").unwrap();
    let cluster = harness::testkit::shared_cluster();
    let dbname = format!("t_{name}");
    let mut mover = cluster.connect(&dbname).unwrap();
    mover
        .batch_execute("BEGIN; LOCK TABLE src IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let ran = run_until_it_waits(&mut db, &dbname, sql, what);
    let attached =
        mover.batch_execute("ALTER TABLE src ATTACH PARTITION src_2 FOR VALUES IN (2); COMMIT");
    let ran = ran.join().unwrap();
    assert!(
        attached.is_ok(),
        "the ATTACH failed: {}",
        harness::cluster::describe(&attached.unwrap_err())
    );
    assert_eq!(ran, Ok(()), "{what} failed");
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_eq!(differences(&mut db, "st", QUERY).unwrap(), None);
}

/// A refresh that meets DDL holding a source (here: a partition attached
/// in a transaction that locked the table first, as an operator moving a
/// partition does) waits for the DDL before it locks its stream table's
/// catalog row; the DDL's event trigger, which marks that row for
/// reinitialisation, must not find it locked by the waiting refresh. Both
/// used to wait for each other and one was killed with 40P01.
#[test]
fn ddl_holding_a_source_and_a_refresh_waiting_for_it_do_not_deadlock() {
    ddl_holding_a_source_meets(
        "ddl_refresh_deadlock",
        "DIFFERENTIAL",
        "the refresh",
        "SELECT pgtrickle.refresh_stream_table('st')",
    );
}

/// The scheduler does not queue behind DDL holding a source: it skips the
/// stream table (holding nothing) and refreshes it on a later tick, once
/// the DDL is done.
#[test]
fn the_scheduler_skips_a_stream_table_whose_source_ddl_holds() {
    let cluster = dedicated_cluster(
        "skip-locked-source",
        &["pg_trickle.scheduler_interval_ms = 100"],
    );
    let mut db = cluster.connect("postgres").unwrap();
    db.batch_execute("CREATE EXTENSION pg_trickle").unwrap();
    setup(&mut db, "'1s'");
    // The scheduler runs and refreshes this stream table on its schedule.
    scheduler_pid(&mut db);
    db.batch_execute("INSERT INTO src VALUES (1, 1)").unwrap();
    wait_until(
        Duration::from_secs(20),
        "the scheduler never refreshed",
        || differences(&mut db, "st", QUERY).unwrap().is_none(),
    );
    db.batch_execute("INSERT INTO src VALUES (2, 2)").unwrap();
    let mut locker = cluster.connect("postgres").unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE src IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    // Several ticks and more than one schedule period with the lock held.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let waiting: bool = db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_trickle scheduler' \
                 AND wait_event_type = 'Lock')",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(!waiting, "the scheduler queued for the source's lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    locker.batch_execute("COMMIT").unwrap();
    wait_until(
        Duration::from_secs(30),
        "not refreshed after the DDL was done",
        || differences(&mut db, "st", QUERY).unwrap().is_none(),
    );
}

/// The other order: a session holds the stream table's row and then needs
/// the source exclusively (a refresh-mode change drops the source's
/// capture trigger). A refresh waiting for that row must not hold the
/// source meanwhile, or each waits for the other.
#[test]
fn a_refresh_waiting_for_its_row_holds_no_source_a_mode_change_needs() {
    let name = "row_holder_needs_source";
    let mut db = database(name);
    setup(&mut db, "NULL");
    db.batch_execute("INSERT INTO src VALUES (1, 1)").unwrap();
    let cluster = harness::testkit::shared_cluster();
    let dbname = format!("t_{name}");
    // Stands for a session in the middle of alter_stream_table.
    let mut holder = cluster.connect(&dbname).unwrap();
    holder
        .batch_execute(
            "BEGIN; SELECT 1 FROM pgtrickle.pgt_stream_tables WHERE name = 'public.st' FOR UPDATE",
        )
        .unwrap();
    let refresh = run_until_it_waits(
        &mut db,
        &dbname,
        "SELECT pgtrickle.refresh_stream_table('st')",
        "the refresh",
    );
    let changed = holder
        .batch_execute("SELECT pgtrickle.alter_stream_table('st', refresh_mode => 'FULL'); COMMIT");
    let refreshed = refresh.join().unwrap();
    assert!(
        changed.is_ok(),
        "the mode change failed: {}",
        harness::cluster::describe(&changed.unwrap_err())
    );
    assert_eq!(refreshed, Ok(()), "the refresh failed");
    assert_eq!(differences(&mut db, "st", QUERY).unwrap(), None);
}

/// `alter_stream_table` locks the stream table's row and re-plans, which
/// reads the sources: it takes them before the row too, so DDL holding a
/// source (whose event trigger marks the row) does not meet it holding
/// the row.
#[test]
fn a_mode_change_takes_the_sources_before_the_row() {
    ddl_holding_a_source_meets(
        "alter_lock_order",
        "AUTO",
        "the mode change",
        "SELECT pgtrickle.alter_stream_table('st', refresh_mode => 'FULL')",
    );
}

/// The history's newest row id and its rows for stream table `st_id`:
/// (newest id, rows stored, rows `refresh_history()` shows).
fn history_counts(db: &mut Client, st_id: i64) -> (i64, i64, i64) {
    let r = db
        .query_one(
            "SELECT max(id), count(*), \
             (SELECT count(*) FROM pgtrickle.refresh_history('st')) \
             FROM pgtrickle.pgt_refresh_history WHERE st_id = $1",
            &[&st_id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[test]
fn the_refresh_history_shows_its_newest_thousand_rows_and_is_pruned_within_a_few_hundred_refreshes()
{
    use pg_trickle_core::history::{prunes, KEPT};
    let mut db = database("history_pruned");
    setup(&mut db, "NULL");
    let st_id: i64 = db
        .query_one(
            "SELECT id FROM pgtrickle.pgt_stream_tables WHERE name = 'public.st'",
            &[],
        )
        .unwrap()
        .get(0);
    // A long-refreshed stream table: 1,100 older rows.
    db.execute(
        "INSERT INTO pgtrickle.pgt_refresh_history (st_id, started_at, finished_at, mode, initiated_by) \
         SELECT $1, now(), now(), 'DIFFERENTIAL', 'manual' FROM generate_series(1, 1100)",
        &[&st_id],
    )
    .unwrap();
    let (_, before, _) = history_counts(&mut db, st_id);
    let mut stored = before;
    for step in 1..=600 {
        db.batch_execute(&format!(
            "INSERT INTO src VALUES (1, {step}); SELECT pgtrickle.refresh_stream_table('st')"
        ))
        .unwrap();
        let (id, now_stored, shown) = history_counts(&mut db, st_id);
        assert_eq!(
            shown, KEPT as i64,
            "refresh_history() rows after refresh {step}"
        );
        if prunes(id) {
            assert_eq!(
                now_stored, KEPT as i64,
                "rows stored after the pruning refresh {id}"
            );
            return;
        }
        assert_eq!(
            now_stored,
            stored + 1,
            "refresh {id} (step {step}) does not prune"
        );
        stored = now_stored;
    }
    panic!("600 refreshes and none pruned the history ({stored} rows stored)");
}
