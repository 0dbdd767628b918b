// pgrx tests for the glue, included into `mod tests` in lib.rs: they run inside
// a real PostgreSQL started by `cargo pgrx test`.

use pgrx::prelude::*;

#[pg_test]
fn create_refresh_and_drop() {
    Spi::run("CREATE TABLE t (k int, v int)").unwrap();
    Spi::run("INSERT INTO t VALUES (1, 10), (1, 20), (2, 5)").unwrap();
    Spi::run("SELECT pgtrickle.create_stream_table('s', 'SELECT k, sum(v) AS total FROM t GROUP BY k', NULL, 'DIFFERENTIAL')").unwrap();
    Spi::run("INSERT INTO t VALUES (2, 7)").unwrap();
    Spi::run("SELECT pgtrickle.refresh_stream_table('s')").unwrap();
    let total = Spi::get_one::<i64>("SELECT total FROM s WHERE k = 2").unwrap();
    assert_eq!(total, Some(12));
    let mode = Spi::get_one::<String>(
        "SELECT mode FROM pgtrickle.pgt_refresh_history ORDER BY id DESC LIMIT 1",
    )
    .unwrap();
    assert_eq!(mode.as_deref(), Some("DIFFERENTIAL"));
    Spi::run("SELECT pgtrickle.drop_stream_table('s')").unwrap();
    let left = Spi::get_one::<i64>("SELECT count(*) FROM pgtrickle.pgt_change_buffers").unwrap();
    assert_eq!(left, Some(0));
}

#[pg_test]
fn settings_match_the_core_table() {
    use pg_trickle_core::settings::{SettingKind, SETTINGS};
    for s in SETTINGS {
        let shown = Spi::get_one::<String>(&format!(
            "SELECT reset_val FROM pg_settings WHERE name = 'pg_trickle.{}'",
            s.name
        ))
        .unwrap();
        let expected = match s.kind {
            SettingKind::Bool { default } => if default { "on" } else { "off" }.to_string(),
            SettingKind::Int { default, .. } => default.to_string(),
            SettingKind::Real { default, .. } => default.to_string(),
            SettingKind::Text { default } => default.to_string(),
        };
        assert_eq!(
            shown.as_deref(),
            Some(expected.as_str()),
            "pg_trickle.{}",
            s.name
        );
    }
}

#[pg_test]
fn explain_reports_tree_modes_and_fallback() {
    Spi::run("CREATE TABLE e (k int, v int)").unwrap();
    Spi::run("SELECT pgtrickle.create_stream_table('e_st', 'SELECT k, v FROM e LIMIT 5')").unwrap();
    let explain = Spi::get_one::<pgrx::JsonB>("SELECT pgtrickle.explain_stream_table('e_st')")
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(explain["requested_mode"], "AUTO");
    assert_eq!(explain["effective_mode"], "FULL");
    assert!(explain["fallback_reason"].as_str().unwrap().contains("LIMIT"));
    assert_eq!(explain["operator_tree"]["diff_supported"], false);
}

#[pg_test]
fn sqlstates_round_trip_through_packed_codes() {
    for code in ["0A000", "42P01", "2BP01", "55P03", "XX000", "22023"] {
        assert_eq!(crate::spi::sqlstate_of(crate::spi::errcode(code)), code);
    }
}

#[pg_test]
fn status_counts_pending_changes() {
    Spi::run("CREATE TABLE p (k int)").unwrap();
    Spi::run("SELECT pgtrickle.create_stream_table('p_st', 'SELECT k FROM p', NULL, 'DIFFERENTIAL')").unwrap();
    Spi::run("INSERT INTO p VALUES (1), (2), (3)").unwrap();
    let pending = Spi::get_one::<i64>(
        "SELECT pending_changes FROM pgtrickle.stream_table_status() WHERE name = 'tests.p_st' OR name LIKE '%p_st'",
    )
    .unwrap();
    assert_eq!(pending, Some(3));
    Spi::run("SELECT pgtrickle.refresh_stream_table('p_st')").unwrap();
    let pending = Spi::get_one::<i64>(
        "SELECT pending_changes FROM pgtrickle.stream_table_status() WHERE name LIKE '%p_st'",
    )
    .unwrap();
    assert_eq!(pending, Some(0));
}

/// A source the specialised statement assumed unchanged, but which had
/// changes when the statement ran (a commit between the check and the
/// statement), is caught inside the statement: the refresh rolls the
/// specialised statement back, runs the general one, stays DIFFERENTIAL
/// and loses nothing.
#[pg_test]
fn a_change_the_specialised_statement_did_not_expect_runs_the_general_statement() {
    Spi::run("CREATE TABLE ga (k int, v int)").unwrap();
    Spi::run("CREATE TABLE gb (k int, w int)").unwrap();
    Spi::run("INSERT INTO ga VALUES (1, 10); INSERT INTO gb VALUES (1, 100)").unwrap();
    Spi::run("SELECT pgtrickle.create_stream_table('gj', 'SELECT ga.k, ga.v, gb.w FROM ga JOIN gb ON ga.k = gb.k', NULL, 'DIFFERENTIAL')").unwrap();
    Spi::run("INSERT INTO ga VALUES (2, 20); INSERT INTO gb VALUES (2, 200), (1, 101)").unwrap();
    let id = Spi::get_one::<i64>(
        "SELECT id FROM pgtrickle.pgt_stream_tables WHERE relid = 'gj'::regclass",
    )
    .unwrap()
    .unwrap();
    let ga = Spi::get_one::<pgrx::pg_sys::Oid>("SELECT 'ga'::regclass::oid")
        .unwrap()
        .unwrap();
    // Only ga is said to have changes (gb's are a surprise the first time).
    let refresh = || {
        crate::refresh::refresh_with(
            id,
            crate::refresh::Initiator::Manual,
            false,
            Some(vec![ga.to_u32()]),
        )
        .unwrap()
    };
    let rows_and_differences = || {
        Spi::get_two::<i64, i64>(
            "SELECT (SELECT count(*) FROM gj), (SELECT count(*) FROM \
             ((SELECT k, v, w FROM gj EXCEPT ALL SELECT ga.k, ga.v, gb.w FROM ga JOIN gb ON ga.k = gb.k) \
             UNION ALL (SELECT ga.k, ga.v, gb.w FROM ga JOIN gb ON ga.k = gb.k EXCEPT ALL SELECT k, v, w FROM gj)) d)",
        )
        .unwrap()
    };
    // The specialised statement's guard trips: its work is rolled back and
    // the general statement runs, DIFFERENTIAL, with gb's changes too.
    assert_eq!(refresh().mode, pg_trickle_core::ir::Mode::Differential);
    let reason = Spi::get_one::<String>(
        "SELECT coalesce(reason, '') FROM pgtrickle.pgt_refresh_history ORDER BY id DESC LIMIT 1",
    )
    .unwrap()
    .unwrap_or_default();
    assert!(!reason.contains("changes arrived"), "{reason}");
    assert_eq!(rows_and_differences(), (Some(3), Some(0)));
    // Told the truth, the next refresh is DIFFERENTIAL again.
    Spi::run("INSERT INTO ga VALUES (1, 11)").unwrap();
    assert_eq!(refresh().mode, pg_trickle_core::ir::Mode::Differential);
    assert_eq!(rows_and_differences(), (Some(5), Some(0)));
}

/// A kept plan belongs to the role it was planned as: PostgreSQL checks
/// EXECUTE on a SQL function it inlines while it plans, so a role that may
/// not call the function must never run another role's plan of it.
#[pg_test]
fn a_kept_plan_is_never_run_by_another_role() {
    for sql in [
        "CREATE ROLE kp_allowed",
        "CREATE ROLE kp_denied",
        "CREATE FUNCTION public.kp_one() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "REVOKE EXECUTE ON FUNCTION public.kp_one() FROM PUBLIC",
        "GRANT EXECUTE ON FUNCTION public.kp_one() TO kp_allowed",
    ] {
        Spi::run(sql).unwrap();
    }
    let role = |name: &str| {
        Spi::get_one::<pg_sys::Oid>(&format!("SELECT '{name}'::regrole::oid"))
            .unwrap()
            .unwrap()
    };
    let (allowed, denied) = (role("kp_allowed"), role("kp_denied"));
    let call = || crate::spi::value("SELECT public.kp_one()::text", &[]);
    for _ in 0..3 {
        let got = crate::security::as_owner(allowed, "public", call);
        assert_eq!(got.as_deref(), Some("1"));
    }
    let refused =
        crate::spi::in_subtransaction(move || crate::security::as_owner(denied, "public", call));
    match refused {
        Err(f) => assert_eq!(f.sqlstate, "42501", "{}", f.message),
        Ok(v) => panic!("a role without EXECUTE ran another role's plan and got {v:?}"),
    }
}

#[pg_test]
fn direct_catalog_reads_match_sql_and_see_the_transactions_own_writes() {
    use crate::catalog::direct;
    // db first: its oid is the lower, its parameter position the higher.
    Spi::run("CREATE TABLE db (k int PRIMARY KEY, w int)").unwrap();
    Spi::run("CREATE TABLE da (k int PRIMARY KEY, v int)").unwrap();
    Spi::run("SELECT pgtrickle.create_stream_table('dj', 'SELECT da.k, v, w FROM da JOIN db ON da.k = db.k', NULL, 'DIFFERENTIAL')").unwrap();
    let id = Spi::get_one::<i64>("SELECT id FROM pgtrickle.pgt_stream_tables WHERE name LIKE '%dj'")
        .unwrap()
        .unwrap();
    let sql_order = |order: &str| -> Vec<u32> {
        Spi::connect(|c| {
            c.select(
                &format!("SELECT source_relid::int8 FROM pgtrickle.pgt_sources WHERE st_id = {id} AND captured ORDER BY {order}"),
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<i64>(1).unwrap().unwrap() as u32)
            .collect()
        })
    };
    let by_param: Vec<u32> = crate::catalog::sources::captured_in_param_order(id)
        .iter()
        .map(|s| s.relid)
        .collect();
    assert_eq!(by_param, sql_order("param_position"));
    assert_eq!(crate::catalog::sources::captured_of(id), sql_order("source_relid"));
    assert_eq!(by_param.len(), 2);
    assert_ne!(by_param, sql_order("source_relid"), "the two orders differ here");
    // NULL positions sort last, as ORDER BY puts them.
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_sources SET param_position = NULL WHERE st_id = {id} AND source_relid = {}",
        by_param[0]
    ))
    .unwrap();
    let nulls_last: Vec<u32> = crate::catalog::sources::captured_in_param_order(id)
        .iter()
        .map(|s| s.relid)
        .collect();
    assert_eq!(nulls_last, vec![by_param[1], by_param[0]]);
    // A write earlier in this transaction is seen, as a statement sees it.
    Spi::run(&format!("UPDATE pgtrickle.pgt_sources SET own_change_id = 42 WHERE st_id = {id}")).unwrap();
    let own: Vec<i64> = crate::catalog::sources::captured_in_param_order(id)
        .iter()
        .map(|s| s.own_change_id)
        .collect();
    assert_eq!(own, vec![42, 42]);
    // The storage's row, with its owner from the relation cache.
    let relid = Spi::get_one::<i64>("SELECT 'dj'::regclass::oid::int8").unwrap().unwrap() as u32;
    let found = crate::catalog::stream_tables::by_relid(relid).expect("dj by its storage oid");
    assert_eq!(found.id, id);
    let owner = Spi::get_one::<i64>("SELECT relowner::int8 FROM pg_class WHERE oid = 'dj'::regclass")
        .unwrap()
        .unwrap() as u32;
    assert_eq!(found.owner.to_u32(), owner);
    assert!(crate::catalog::stream_tables::by_relid(1).is_none());
    // pg_extension, by oid.
    let version = Spi::get_one::<String>("SELECT extversion::text FROM pg_extension WHERE extname = 'pg_trickle'")
        .unwrap();
    assert_eq!(direct::extension_column(c"extversion"), version);
    assert_eq!(direct::to_regclass("public.da"), Some(Spi::get_one::<i64>("SELECT 'da'::regclass::oid::int8").unwrap().unwrap() as u32));
    assert_eq!(direct::to_regclass("public.no_such_table"), None);
    // Booleans print as a ::text cast prints them.
    let captured = direct::lookup(
        c"pgtrickle",
        c"pgt_sources",
        &[(c"st_id", direct::Key::Int8(id))],
        &[c"captured"],
    );
    assert_eq!(captured, vec![vec![Some("true".to_string())]; 2]);
    Spi::run(&format!("UPDATE pgtrickle.pgt_sources SET captured = false WHERE st_id = {id}")).unwrap();
    let captured = direct::lookup(
        c"pgtrickle",
        c"pgt_sources",
        &[(c"st_id", direct::Key::Int8(id))],
        &[c"captured"],
    );
    assert_eq!(captured, vec![vec![Some("false".to_string())]; 2]);
    assert!(crate::catalog::sources::captured_of(id).is_empty());
    // Row-level security, from the caches: the superuser running this
    // test bypasses it; an unknown relation has none.
    Spi::run("ALTER TABLE da ENABLE ROW LEVEL SECURITY").unwrap();
    let da = Spi::get_one::<i64>("SELECT 'da'::regclass::oid::int8").unwrap().unwrap() as u32;
    let me = unsafe { pgrx::pg_sys::GetUserId() };
    assert!(!crate::security::row_security_applies(da, me));
    assert!(!crate::security::row_security_applies(1, me));
    // A plain role that does not own it is subject to it.
    Spi::run(
        "DO $$ BEGIN CREATE ROLE pgt_direct_reader NOLOGIN; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    .unwrap();
    let reader = Spi::get_one::<i64>("SELECT 'pgt_direct_reader'::regrole::oid::int8")
        .unwrap()
        .unwrap() as u32;
    assert!(crate::security::row_security_applies(da, pgrx::pg_sys::Oid::from(reader)));
}
