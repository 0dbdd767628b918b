//! OpenTelemetry against a live OTLP receiver (`oteltap`, installed by
//! ci/setup.sh) and against collectors that misbehave: a writer's trace
//! context reaches the refresh that consumes its change, the refresh's
//! span arrives with its parent, attributes, links and phase children, a
//! failed refresh carries its SQLSTATE, and a refused, silent, failing or
//! restarted collector never slows a refresh, never takes the backend
//! down, is counted and logged at a bounded rate, and is exported to
//! again once it is back.

use std::time::{Duration, Instant};

use harness::cluster::Cluster;
use harness::otel::{attribute, free_port, BadCollector, Misbehaviour, Receiver};
use harness::testkit::{code, dedicated_cluster};
use postgres::Client;
use serde_json::Value;

/// The tests of this binary run one at a time: the failure test compares
/// refresh latencies, which other clusters' work on a 2-core machine would
/// disturb.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const WRITER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const WRITER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

fn setup(db: &mut Client) {
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL);
         INSERT INTO orders VALUES (1, 10);
         SELECT pgtrickle.create_stream_table('totals',
             'SELECT count(*) AS n, sum(amount) AS total FROM orders', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
}

fn refresh_span(rx: &Receiver, trace: &str) -> Value {
    rx.wait_for(Duration::from_secs(20), |s| {
        s["name"] == "pg_trickle.refresh" && s["traceId"] == trace
    })
    .unwrap_or_else(|| {
        panic!(
            "the receiver got no refresh span in trace {trace} within 20 s; it got: {:?}",
            rx.spans()
        )
    })
}

fn children_of(rx: &Receiver, span: &Value) -> Vec<String> {
    let id = span["spanId"].as_str().unwrap().to_string();
    // Children come in the same request as their parent.
    let mut names: Vec<String> = rx
        .spans()
        .into_iter()
        .filter(|s| s["parentSpanId"] == id.as_str())
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

fn link_traces(span: &Value) -> Vec<String> {
    span["links"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|l| l["traceId"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A live receiver, a cluster of its own exporting to it (with `extra`
/// settings), and a fresh database there.
fn exporting_cluster(name: &str, extra: &[&str]) -> (Receiver, Cluster, Client) {
    let rx = Receiver::start(0).unwrap_or_else(|e| panic!("{e}"));
    let endpoint = format!("pg_trickle.otel_endpoint = '{}'", rx.endpoint());
    let mut settings = vec!["pg_trickle.otel_enabled = on", endpoint.as_str()];
    settings.extend_from_slice(extra);
    let cluster = dedicated_cluster(name, &settings);
    let db = cluster.fresh_database("otel").unwrap();
    (rx, cluster, db)
}

#[test]
fn a_refresh_continues_the_writers_trace_with_its_phases_and_links() {
    let _serial = serial();
    let (rx, _cluster, mut db) = exporting_cluster("otel_live", &[]);
    setup(&mut db);
    db.batch_execute(&format!(
        "SET pg_trickle.traceparent = '{}';
         INSERT INTO orders VALUES (2, 20), (3, 30);
         RESET pg_trickle.traceparent;
         INSERT INTO orders VALUES (4, 40);
         SELECT pgtrickle.refresh_stream_table('totals');",
        traceparent(WRITER_TRACE, WRITER_SPAN)
    ))
    .unwrap();
    let span = refresh_span(&rx, WRITER_TRACE);
    assert_eq!(span["parentSpanId"], WRITER_SPAN, "{span}");
    for (key, want) in [
        ("pg_trickle.stream_table", "public.totals"),
        ("pg_trickle.mode", "DIFFERENTIAL"),
        ("pg_trickle.initiator", "manual"),
        ("pg_trickle.changes_in", "3"),
        ("pg_trickle.rows_inserted", "1"),
        ("pg_trickle.rows_deleted", "1"),
    ] {
        assert_eq!(
            attribute(&span, key).as_deref(),
            Some(want),
            "{key}: {span}"
        );
    }
    assert_eq!(link_traces(&span), vec![WRITER_TRACE.to_string()], "{span}");
    assert_eq!(
        children_of(&rx, &span),
        vec![
            "pg_trickle.refresh.delta_apply",
            "pg_trickle.refresh.plan",
            "pg_trickle.refresh.record"
        ]
    );

    // Two writers' traces consumed by one refresh: it continues the
    // earlier one and links to both.
    let (t1, t2) = (
        "11111111111111111111111111111111",
        "22222222222222222222222222222222",
    );
    db.batch_execute(&format!(
        "SET pg_trickle.traceparent = '{}'; INSERT INTO orders VALUES (5, 50);
         SET pg_trickle.traceparent = '{}'; UPDATE orders SET amount = 11 WHERE id = 1;
         RESET pg_trickle.traceparent;
         SELECT pgtrickle.refresh_stream_table('totals');",
        traceparent(t1, "1111111111111111"),
        traceparent(t2, "2222222222222222"),
    ))
    .unwrap();
    let span = refresh_span(&rx, t1);
    assert_eq!(span["parentSpanId"], "1111111111111111");
    let mut links = link_traces(&span);
    links.sort();
    assert_eq!(links, vec![t1.to_string(), t2.to_string()], "{span}");

    // A FULL refresh with no traced change starts its own trace.
    db.batch_execute("SELECT pgtrickle.alter_stream_table('totals', refresh_mode => 'FULL')")
        .unwrap();
    let before = rx.spans().len();
    db.batch_execute(
        "INSERT INTO orders VALUES (6, 60); SELECT pgtrickle.refresh_stream_table('totals');",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let own = loop {
        // Only spans received after the FULL refresh, and only a manual
        // one (creating the stream table exported a FULL span too).
        let received = rx.spans();
        let found = received[before..].iter().find(|s| {
            s["name"] == "pg_trickle.refresh"
                && s["parentSpanId"] == ""
                && attribute(s, "pg_trickle.initiator").as_deref() == Some("manual")
        });
        if let Some(s) = found {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no root refresh span; got {:?}",
            &rx.spans()[before..]
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        attribute(&own, "pg_trickle.mode").as_deref(),
        Some("FULL"),
        "{own}"
    );
    assert_eq!(
        children_of(&rx, &own),
        vec![
            "pg_trickle.refresh.full_recompute",
            "pg_trickle.refresh.plan",
            "pg_trickle.refresh.record"
        ]
    );

    // Nothing was lost on the way.
    let (dropped, failed): (i64, i64) = {
        let r = db
            .query_one(
                "SELECT spans_dropped, spans_failed FROM pgtrickle.telemetry_status()",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((dropped, failed), (0, 0));
}

#[test]
fn a_failed_refresh_exports_its_sqlstate_and_the_error_goes_on() {
    let _serial = serial();
    let (rx, _cluster, mut db) = exporting_cluster("otel_fail", &[]);
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL);
         INSERT INTO orders VALUES (1, 10);
         SELECT pgtrickle.create_stream_table('ratios',
             'SELECT id, 100 / amount AS r FROM orders', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    let trace = "33333333333333333333333333333333";
    db.batch_execute(&format!(
        "SET pg_trickle.traceparent = '{}'; INSERT INTO orders VALUES (2, 0); RESET pg_trickle.traceparent;",
        traceparent(trace, "3333333333333333")
    ))
    .unwrap();
    let (state, message) =
        code(db.batch_execute("SELECT pgtrickle.refresh_stream_table('ratios')"));
    assert_eq!(state, "22012", "{message}");
    let span = refresh_span(&rx, trace);
    assert_eq!(
        attribute(&span, "db.response.status_code").as_deref(),
        Some("22012"),
        "{span}"
    );
    assert_eq!(span["status"]["code"], 2, "an error status: {span}");
    assert!(
        span["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("division by zero"),
        "{span}"
    );
    // Nothing of the failed refresh was applied.
    let rows: i64 = db
        .query_one("SELECT count(*) FROM ratios", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[test]
fn malformed_trace_contexts_and_protocols_are_refused_by_name() {
    let _serial = serial();
    let cluster = dedicated_cluster("otel_refuse", &[]);
    let mut db = cluster.fresh_database("otel").unwrap();
    db.batch_execute("LOAD 'pg_trickle'").unwrap();
    for (value, why) in [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-<32 hex digits>",
        ),
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "lowercase hex",
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "all zeros",
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "version ff",
        ),
    ] {
        let (state, message) =
            code(db.batch_execute(&format!("SET pg_trickle.traceparent = '{value}'")));
        assert_eq!(state, "22023", "{value}: {message}");
        assert!(message.contains("pg_trickle.traceparent"), "{message}");
        let detail = db
            .batch_execute(&format!("SET pg_trickle.traceparent = '{value}'"))
            .unwrap_err();
        let detail = detail
            .as_db_error()
            .and_then(|e| e.detail())
            .unwrap_or_default()
            .to_string();
        assert!(
            detail.contains(why),
            "{value}: detail {detail:?} should say {why:?}"
        );
    }
    // A valid one is kept exactly, and empty means none.
    let tp = traceparent(WRITER_TRACE, WRITER_SPAN);
    db.batch_execute(&format!("SET pg_trickle.traceparent = '{tp}'"))
        .unwrap();
    let shown: String = db
        .query_one("SHOW pg_trickle.traceparent", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, tp);
    db.batch_execute("SET pg_trickle.traceparent = ''").unwrap();
    let (state, message) =
        code(db.batch_execute("ALTER SYSTEM SET pg_trickle.otel_protocol = 'grpc'"));
    assert_eq!(state, "22023", "{message}");
    db.batch_execute("ALTER SYSTEM SET pg_trickle.otel_protocol = 'http/json'")
        .unwrap();
    db.batch_execute("ALTER SYSTEM RESET pg_trickle.otel_protocol")
        .unwrap();
}

/// Set `settings` and wait until the session and the worker use them.
fn reconfigure(db: &mut Client, settings: &[(&str, String)]) {
    harness::otel::reload_settings(db, settings).unwrap_or_else(|e| panic!("{e}"));
}

/// `n` refreshes of one changed row each, client-side milliseconds.
fn refreshes(db: &mut Client, n: usize, first_id: i32) -> Vec<f64> {
    (0..n)
        .map(|i| {
            db.execute(
                "INSERT INTO orders VALUES ($1, 1)",
                &[&(first_id + i as i32)],
            )
            .unwrap();
            let t = Instant::now();
            db.batch_execute("SELECT pgtrickle.refresh_stream_table('totals')")
                .unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Status {
    dropped: i64,
    failed_requests: i64,
    exported: i64,
    last_error: Option<String>,
    worker_running: bool,
}

fn status(db: &mut Client) -> Status {
    let r = db
        .query_one(
            "SELECT spans_dropped, failed_requests, spans_exported, last_error, worker_running \
             FROM pgtrickle.telemetry_status()",
            &[],
        )
        .unwrap();
    Status {
        dropped: r.get(0),
        failed_requests: r.get(1),
        exported: r.get(2),
        last_error: r.get(3),
        worker_running: r.get(4),
    }
}

/// Wait until the exporter has failed more than `before` requests, the
/// last with an error that says `why`.
fn wait_failures(db: &mut Client, before: i64, why: &str) -> Status {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(db);
        if s.failed_requests > before && s.last_error.as_deref().unwrap_or_default().contains(why) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no failed export saying {why:?} was counted within 30 s (failed {}, last error {:?})",
            s.failed_requests,
            s.last_error
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn failure_lines(cluster: &Cluster) -> usize {
    std::fs::read_to_string(cluster.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("pg_trickle telemetry: exporting spans failed"))
        .count()
}

/// Refreshes under each misbehaving collector keep the latency they have
/// with exporting off (measured in this run), the backend stays up,
/// failures are counted and logged at a bounded rate, a full queue drops
/// and counts, and export resumes once the collector is back.
#[test]
fn a_refused_silent_failing_or_restarted_collector_never_slows_a_refresh() {
    let _serial = serial();
    const N: usize = 20;
    let cluster = dedicated_cluster("otel_faults", &["pg_trickle.otel_queue_size = 16"]);
    let started = Instant::now();
    let mut db = cluster.fresh_database("otel").unwrap();
    setup(&mut db);
    let off = median(refreshes(&mut db, N, 1000));
    // Generous against noise; a refresh that waited on the network would
    // take the whole timeout (5 s) or a connect attempt each time.
    let bound = 3.0 * off + 50.0;
    let mut next_id = 2000;
    let mut phase = |db: &mut Client, name: &str, n: usize| {
        let lat = refreshes(db, n, next_id);
        next_id += 1000;
        let (med, max) = (median(lat.clone()), lat.iter().cloned().fold(0.0, f64::max));
        println!(
            "{name}: refresh median {med:.1} ms, max {max:.1} ms (exporting off: {off:.1} ms)"
        );
        assert!(
            med <= bound && max < 2500.0,
            "{name}: refresh median {med:.1} ms, max {max:.1} ms, against {off:.1} ms with exporting off"
        );
        let one: i32 = db.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1);
    };

    // A port nothing listens on.
    let closed = free_port();
    reconfigure(
        &mut db,
        &[
            ("pg_trickle.otel_endpoint", harness::otel::endpoint(closed)),
            ("pg_trickle.otel_enabled", "on".into()),
            ("pg_trickle.otel_timeout_ms", "5000".into()),
        ],
    );
    phase(&mut db, "closed port", N);
    let s = wait_failures(&mut db, 0, "network error");
    assert!(s.worker_running);

    // A collector that accepts and never answers: one request hangs for
    // the timeout, spans queue behind it, and the 16-slot queue overflows.
    let silent = BadCollector::start(Misbehaviour::Silent);
    reconfigure(&mut db, &[("pg_trickle.otel_endpoint", silent.endpoint())]);
    // More refreshes than the first batch and the queue together hold.
    phase(&mut db, "silent collector", 4 * N);
    let s = wait_failures(&mut db, s.failed_requests, "no answer within 5000 ms");
    assert!(
        s.dropped > 0,
        "a full queue drops and counts (dropped {})",
        s.dropped
    );
    assert!(silent.requests() >= 1);

    // A collector that answers 503.
    let failing = BadCollector::start(Misbehaviour::Status(503));
    reconfigure(&mut db, &[("pg_trickle.otel_endpoint", failing.endpoint())]);
    phase(&mut db, "503 collector", N);
    wait_failures(&mut db, s.failed_requests, "503");

    // A live receiver, restarted mid-run on the same port.
    let rx = Receiver::start(0).unwrap_or_else(|e| panic!("{e}"));
    let port = rx.port;
    reconfigure(&mut db, &[("pg_trickle.otel_endpoint", rx.endpoint())]);
    phase(&mut db, "live receiver", N);
    rx.wait_for(Duration::from_secs(20), |s| {
        s["name"] == "pg_trickle.refresh"
    })
    .expect("the live receiver got refresh spans");
    rx.stop();
    let before = status(&mut db).failed_requests;
    phase(&mut db, "receiver stopped", N);
    let s = wait_failures(&mut db, before, "network error");
    let rx = Receiver::start(port).unwrap_or_else(|e| panic!("{e}"));
    let trace = "44444444444444444444444444444444";
    db.batch_execute(&format!(
        "SET pg_trickle.traceparent = '{}'; INSERT INTO orders VALUES (99999, 1); RESET pg_trickle.traceparent;
         SELECT pgtrickle.refresh_stream_table('totals');",
        traceparent(trace, "4444444444444444")
    ))
    .unwrap();
    refresh_span(&rx, trace);
    // The worker publishes its counters on its next round.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&mut db).exported <= s.exported {
        assert!(
            Instant::now() < deadline,
            "the status never counted the resumed export"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Failures were logged, at most one line per 30 s (and one to start).
    let lines = failure_lines(&cluster);
    let windows = 1 + (started.elapsed().as_secs() / 30) as usize;
    let failed = status(&mut db).failed_requests;
    assert!(
        lines >= 1 && lines <= windows + 1 && (lines as i64) < failed,
        "{lines} log lines for {failed} failed requests over {} s",
        started.elapsed().as_secs()
    );
}

/// A refresh whose transaction rolls back is exported as failed (40000):
/// a span never reports a change that did not stay. Changes captured from
/// the WAL are consumed with telemetry on, and carry no trace context.
#[test]
fn a_rolled_back_refresh_is_exported_failed_and_wal_captured_changes_flow() {
    let _serial = serial();
    let (rx, _cluster, mut db) = exporting_cluster("otel_rollback", &["wal_level = logical"]);
    setup(&mut db);
    let trace = "55555555555555555555555555555555";
    db.batch_execute(&format!(
        "SET pg_trickle.traceparent = '{}'; INSERT INTO orders VALUES (2, 20); RESET pg_trickle.traceparent;
         BEGIN; SELECT pgtrickle.refresh_stream_table('totals'); ROLLBACK;",
        traceparent(trace, "5555555555555555")
    ))
    .unwrap();
    let span = refresh_span(&rx, trace);
    assert_eq!(
        attribute(&span, "db.response.status_code").as_deref(),
        Some("40000"),
        "{span}"
    );
    assert_eq!(span["status"]["code"], 2, "{span}");

    // The same in a savepoint rolled back inside a transaction that commits.
    let trace = "57575757575757575757575757575757";
    db.batch_execute(&format!(
        "SET pg_trickle.traceparent = '{}'; INSERT INTO orders VALUES (3, 30); RESET pg_trickle.traceparent;
         BEGIN; SAVEPOINT s; SELECT pgtrickle.refresh_stream_table('totals'); ROLLBACK TO SAVEPOINT s; COMMIT;",
        traceparent(trace, "5757575757575757")
    ))
    .unwrap();
    let span = refresh_span(&rx, trace);
    assert_eq!(
        attribute(&span, "db.response.status_code").as_deref(),
        Some("40000"),
        "{span}"
    );
    // And a savepoint released: the refresh stays, its span is a success.
    // It consumes the change the rolled-back one left too, so it continues
    // that (earlier) trace and links to both.
    let later = "58585858585858585858585858585858";
    db.batch_execute(&format!(
        "SET pg_trickle.traceparent = '{}'; INSERT INTO orders VALUES (4, 40); RESET pg_trickle.traceparent;
         BEGIN; SAVEPOINT s; SELECT pgtrickle.refresh_stream_table('totals'); RELEASE SAVEPOINT s; COMMIT;",
        traceparent(later, "5858585858585858")
    ))
    .unwrap();
    let span = rx
        .wait_for(Duration::from_secs(20), |s| {
            s["name"] == "pg_trickle.refresh" && link_traces(s).contains(&later.to_string())
        })
        .unwrap_or_else(|| panic!("no refresh span linking {later}: {:?}", rx.spans()));
    assert_eq!(span["traceId"], trace, "{span}");
    assert_eq!(span["status"]["code"], 0, "{span}");
    assert_eq!(attribute(&span, "db.response.status_code"), None, "{span}");
    assert_eq!(
        attribute(&span, "pg_trickle.changes_in").as_deref(),
        Some("2"),
        "{span}"
    );

    // The same change, consumed for real this time; then a source captured
    // from the WAL.
    db.batch_execute(
        "SELECT pgtrickle.refresh_stream_table('totals');
         CREATE TABLE events (id int PRIMARY KEY, kind text NOT NULL);
         SELECT pgtrickle.create_stream_table('kinds',
             'SELECT kind, count(*) AS n FROM events GROUP BY kind', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    db.batch_execute("SELECT pgtrickle.set_capture_mode('events', 'wal')")
        .unwrap();
    // The drain runs in a session with a trace context of its own (each
    // statement its own transaction): the drained changes must not take it.
    db.batch_execute(&format!(
        "SET pg_trickle.traceparent = '{}'",
        traceparent("66666666666666666666666666666666", "6666666666666666")
    ))
    .unwrap();
    db.batch_execute("INSERT INTO events VALUES (1, 'a'), (2, 'b')")
        .unwrap();
    db.batch_execute("SELECT pgtrickle.drain_wal_capture()")
        .unwrap();
    db.batch_execute(
        "RESET pg_trickle.traceparent; SELECT pgtrickle.refresh_stream_table('kinds')",
    )
    .unwrap();
    let kinds: i64 = db
        .query_one("SELECT count(*) FROM kinds", &[])
        .unwrap()
        .get(0);
    assert_eq!(kinds, 2);
    let kinds_span = rx
        .wait_for(Duration::from_secs(20), |s| {
            s["name"] == "pg_trickle.refresh"
                && attribute(s, "pg_trickle.stream_table").as_deref() == Some("public.kinds")
                && attribute(s, "pg_trickle.initiator").as_deref() == Some("manual")
        })
        .unwrap_or_else(|| {
            panic!(
                "no span for the WAL-captured stream table: {:?}",
                rx.spans()
            )
        });
    assert_eq!(
        kinds_span["parentSpanId"], "",
        "WAL changes carry no trace context: {kinds_span}"
    );
}
