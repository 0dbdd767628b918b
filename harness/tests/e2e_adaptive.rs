//! AUTO's adaptive choice between DIFFERENTIAL and FULL, end to end: what
//! it chooses for a backlog, what it records and learns, and that neither
//! mode's result differs from the query's.

use harness::testkit::database;
use oracles::compare::differences;
use oracles::engine_api::last_refresh;
use postgres::Client;

const QUERY: &str = "SELECT k, count(*) AS n, sum(v) AS total FROM src GROUP BY k";

/// A database with `src` (20,000 rows in 100 groups, analysed) and AUTO
/// and DIFFERENTIAL stream tables over the same query.
fn setup(name: &str) -> Client {
    let mut db = database(name);
    db.batch_execute(&format!(
        "CREATE TABLE src (id int PRIMARY KEY, k int NOT NULL, v int NOT NULL);
         INSERT INTO src SELECT i, i % 100, i FROM generate_series(1, 20000) i;
         ANALYZE src;
         SELECT pgtrickle.create_stream_table('auto_st', '{QUERY}', NULL, 'AUTO');
         SELECT pgtrickle.create_stream_table('diff_st', '{QUERY}', NULL, 'DIFFERENTIAL');"
    ))
    .unwrap();
    db
}

/// Refresh both stream tables; return what the AUTO one ran and why.
fn refresh_both(db: &mut Client) -> (String, Option<String>) {
    db.batch_execute(
        "SELECT pgtrickle.refresh_stream_table('auto_st');
         SELECT pgtrickle.refresh_stream_table('diff_st');",
    )
    .unwrap();
    for st in ["auto_st", "diff_st"] {
        if let Some(m) = differences(db, st, QUERY).unwrap() {
            panic!("{st} differs from its query: {m}");
        }
    }
    let diff = last_refresh(db, "diff_st").unwrap().unwrap();
    assert_eq!(
        diff.ran.to_string(),
        "DIFFERENTIAL",
        "a DIFFERENTIAL stream table never adapts: {}",
        diff.describe()
    );
    let auto = last_refresh(db, "auto_st").unwrap().unwrap();
    (auto.ran.to_string(), auto.reason)
}

fn estimates(db: &mut Client) -> (Option<f64>, Option<f64>) {
    let r = db
        .query_one(
            "SELECT full_ms_estimate, diff_ms_per_change_estimate FROM pgtrickle.pgt_stream_tables \
             WHERE name = 'public.auto_st'",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

#[test]
fn a_backlog_past_the_fraction_of_the_source_is_recomputed_and_says_why() {
    let mut db = setup("adaptive_fraction");
    assert_eq!(
        estimates(&mut db),
        (None, None),
        "populating at creation is no FULL refresh"
    );

    db.batch_execute("UPDATE src SET v = v + 1").unwrap();
    let (ran, reason) = refresh_both(&mut db);
    assert_eq!(ran, "FULL", "20,000 changes to 20,000 rows");
    assert!(estimates(&mut db).0.is_some(), "the FULL was measured");
    assert_eq!(
        reason.as_deref(),
        Some(
            "AUTO chose FULL: at least 1,001 pending changes, more than 2.00% \
             (pg_trickle.adaptive_full_fraction) of the sources' 20,000 rows; not measured enough yet to estimate"
        )
    );

    // A handful of changes is applied, without weighing.
    db.batch_execute("UPDATE src SET v = v + 1 WHERE id <= 5")
        .unwrap();
    assert_eq!(refresh_both(&mut db), ("DIFFERENTIAL".into(), None));

    // Off: the same backlog is applied.
    db.batch_execute("SET pg_trickle.adaptive_auto = off; UPDATE src SET v = v + 1")
        .unwrap();
    assert_eq!(refresh_both(&mut db), ("DIFFERENTIAL".into(), None));
    assert_eq!(estimates(&mut db).1, None, "nothing is learned while off");

    // On, with a fraction no backlog reaches: a large differential refresh
    // is measured, and from then on the estimates decide, and say so.
    // The fixed part the 5-change refresh measured includes building its
    // plan, and may come out above this small FULL (then AUTO rightly
    // recomputes): state it, so that this step's choice rests on the
    // fraction alone and not on this machine's speed.
    db.batch_execute(
        "SET pg_trickle.adaptive_auto = on; SET pg_trickle.adaptive_full_fraction = 1;
         UPDATE pgtrickle.pgt_stream_tables SET diff_fixed_ms_estimate = 0
          WHERE name = 'public.auto_st';
         UPDATE src SET v = v + 1 WHERE id <= 5000",
    )
    .unwrap();
    assert_eq!(refresh_both(&mut db), ("DIFFERENTIAL".into(), None));
    let (_, per_change) = estimates(&mut db);
    assert!(
        per_change.is_some_and(|p| p > 0.0),
        "a 5,000-change refresh is measured: {per_change:?}"
    );
    db.batch_execute("UPDATE src SET v = v + 1 WHERE id <= 5000")
        .unwrap();
    let (ran, reason) = refresh_both(&mut db);
    let reason = reason.unwrap_or_default();
    assert!(
        reason.starts_with(&format!("AUTO chose {ran}: "))
            && reason.contains(" pending changes: DIFFERENTIAL estimated at "),
        "{ran}: {reason}"
    );
}

/// State `auto_st`'s estimates outright (no fixed part), so that the
/// choice does not depend on this machine's speed, then change the first
/// `changed` rows.
fn state_estimates(db: &mut Client, full_ms: f64, per_change_ms: f64, changed: i32) {
    db.execute(
        "UPDATE pgtrickle.pgt_stream_tables SET full_ms_estimate = $1, diff_fixed_ms_estimate = 0, \
         diff_ms_per_change_estimate = $2 WHERE name = 'public.auto_st'",
        &[&full_ms, &per_change_ms],
    )
    .unwrap();
    db.execute("UPDATE src SET v = v + 1 WHERE id <= $1", &[&changed])
        .unwrap();
}

#[test]
fn the_estimates_decide_and_a_full_choice_lowers_the_differential_one() {
    let mut db = setup("adaptive_estimates");
    state_estimates(&mut db, 1.0, 1.0, 2000);
    let (ran, reason) = refresh_both(&mut db);
    assert_eq!(ran, "FULL");
    assert_eq!(
        reason.as_deref(),
        Some(
            "AUTO chose FULL: at least 1,001 pending changes: DIFFERENTIAL estimated at 1001 ms or more \
             against 1.0 ms for FULL"
        )
    );
    let (full_ms, per_change) = estimates(&mut db);
    assert_eq!(per_change, Some(0.95), "a FULL choice lowers the estimate");
    assert!(
        full_ms.is_some_and(|ms| ms != 1.0),
        "the FULL was measured: {full_ms:?}"
    );

    state_estimates(&mut db, 100_000_000.0, 0.001, 2000);
    let (ran, reason) = refresh_both(&mut db);
    assert_eq!(ran, "DIFFERENTIAL");
    assert_eq!(
        reason.as_deref(),
        Some("AUTO chose DIFFERENTIAL: 2,000 pending changes: DIFFERENTIAL estimated at 2.0 ms against 100000000 ms for FULL")
    );
    let (_, per_change) = estimates(&mut db);
    assert!(
        per_change.is_some_and(|p| p != 0.001),
        "the differential refresh was measured: {per_change:?}"
    );

    // Below pg_trickle.adaptive_min_changes the per-change estimate is not
    // weighed, however high.
    state_estimates(&mut db, 1.0, 1.0, 999);
    assert_eq!(refresh_both(&mut db), ("DIFFERENTIAL".into(), None));
}

/// State `auto_st`'s FULL time and the fixed part of its differential
/// refreshes (no per-change figure), then change 5 rows.
fn state_fixed_part(db: &mut Client, full_ms: f64, fixed_ms: f64) {
    db.execute(
        "UPDATE pgtrickle.pgt_stream_tables SET full_ms_estimate = $1, diff_fixed_ms_estimate = $2, \
         diff_ms_per_change_estimate = NULL WHERE name = 'public.auto_st'",
        &[&full_ms, &fixed_ms],
    )
    .unwrap();
    db.batch_execute("UPDATE src SET v = v + 1 WHERE id <= 5")
        .unwrap();
}

#[test]
fn a_differential_refresh_slower_than_full_even_when_small_recomputes_a_few_changes() {
    let mut db = setup("adaptive_fixed_part");
    // Small differential refreshes measured 50 ms, FULL 20 ms.
    state_fixed_part(&mut db, 20.0, 50.0);
    let (ran, reason) = refresh_both(&mut db);
    assert_eq!(ran, "FULL");
    assert_eq!(
        reason.as_deref(),
        Some(
            "AUTO chose FULL: 5 pending changes; DIFFERENTIAL refreshes of fewer than 1,000 changes \
             took 50.0 ms, more than FULL at 20.0 ms"
        )
    );
    let fixed: Option<f64> = db
        .query_one(
            "SELECT diff_fixed_ms_estimate FROM pgtrickle.pgt_stream_tables WHERE name = 'public.auto_st'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fixed, Some(47.5), "a FULL choice lowers the fixed part too");

    // A FULL of a few milliseconds (a small source): applied.
    state_fixed_part(&mut db, 5.0, 50.0);
    assert_eq!(refresh_both(&mut db), ("DIFFERENTIAL".into(), None));

    // With a fixed part below FULL, a few changes are applied again.
    state_fixed_part(&mut db, 100_000.0, 50.0);
    assert_eq!(refresh_both(&mut db), ("DIFFERENTIAL".into(), None));
}

#[test]
fn a_partitioned_source_is_weighed_by_its_partitions_rows() {
    let mut db = database("adaptive_partitions");
    db.batch_execute(&format!(
        "CREATE TABLE src (id int, k int NOT NULL, v int NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE src_a PARTITION OF src FOR VALUES FROM (1) TO (10001);
         CREATE TABLE src_b PARTITION OF src FOR VALUES FROM (10001) TO (20001);
         INSERT INTO src SELECT i, i % 100, i FROM generate_series(1, 20000) i;
         ANALYZE src_a; ANALYZE src_b;
         SELECT pgtrickle.create_stream_table('auto_st', '{QUERY}', NULL, 'AUTO');
         UPDATE src SET v = v + 1 WHERE id <= 3000;
         SELECT pgtrickle.refresh_stream_table('auto_st');"
    ))
    .unwrap();
    let last = last_refresh(&mut db, "auto_st").unwrap().unwrap();
    assert_eq!(
        last.reason.as_deref(),
        Some(
            "AUTO chose FULL: at least 1,001 pending changes, more than 2.00% \
             (pg_trickle.adaptive_full_fraction) of the sources' 20,000 rows; not measured enough yet to estimate"
        ),
        "{}",
        last.describe()
    );
    if let Some(m) = differences(&mut db, "auto_st", QUERY).unwrap() {
        panic!("auto_st differs from its query: {m}");
    }
}

#[test]
fn a_full_choice_that_fails_gives_way_to_applying_the_changes() {
    let mut db = database("adaptive_full_fails");
    // `f` fails on 7 while `adaptive.fail` is on: only a recompute
    // evaluates the row holding 7, which no change touches.
    let query = "SELECT k, sum(f(v)) AS total FROM src GROUP BY k";
    db.batch_execute(&format!(
        "CREATE FUNCTION f(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
         BEGIN
           IF x = 7 AND current_setting('adaptive.fail', true) = 'on' THEN
             RAISE division_by_zero USING MESSAGE = 'f met 7';
           END IF;
           RETURN x;
         END $$;
         CREATE TABLE src (id int PRIMARY KEY, k int NOT NULL, v int NOT NULL);
         INSERT INTO src SELECT i, i % 100, i FROM generate_series(1, 20000) i;
         ANALYZE src;
         SELECT pgtrickle.create_stream_table('auto_st', '{query}', NULL, 'AUTO');
         SET adaptive.fail = on;
         UPDATE src SET v = v + 100000 WHERE v > 7;
         SELECT pgtrickle.refresh_stream_table('auto_st');"
    ))
    .unwrap();
    let last = last_refresh(&mut db, "auto_st").unwrap().unwrap();
    assert_eq!(last.ran.to_string(), "DIFFERENTIAL", "{}", last.describe());
    assert_eq!(
        last.reason.as_deref(),
        Some(
            "AUTO chose FULL, which failed with SQLSTATE 22012 (f met 7); applied the changes instead"
        )
    );
    // FULL is not chosen again (it would fail again) until one succeeds.
    let full_ms: Option<f64> = db
        .query_one(
            "SELECT full_ms_estimate FROM pgtrickle.pgt_stream_tables WHERE name = 'public.auto_st'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(full_ms, Some(f64::INFINITY));
    db.batch_execute(
        "UPDATE src SET v = v + 1 WHERE v > 7;
         SELECT pgtrickle.refresh_stream_table('auto_st');",
    )
    .unwrap();
    let last = last_refresh(&mut db, "auto_st").unwrap().unwrap();
    assert_eq!(
        (last.ran.to_string(), last.reason.as_deref()),
        (
            "DIFFERENTIAL".to_string(),
            Some(
                "AUTO chose DIFFERENTIAL: at least 1,001 pending changes; FULL failed when last chosen \
                 (it is weighed again after a FULL refresh succeeds)"
            )
        )
    );
    // The query itself fails while `adaptive.fail` is on.
    db.batch_execute("RESET adaptive.fail").unwrap();
    if let Some(m) = differences(&mut db, "auto_st", query).unwrap() {
        panic!("auto_st differs from its query: {m}");
    }
}
