//! The 0.39.0 SQL surface against a real cluster: explain formats, the
//! generated-SQL listing (whose read-only phases run as they are), and an
//! upgrade from 0.38.0 that ends with the same catalog as a fresh install.

use std::collections::BTreeMap;

use harness::checks::upgrade::catalog_diff::{differences as catalog_differences, snapshot};
use harness::testkit::{database, first_column, shared_cluster};
use postgres::Client;

fn setup(db: &mut Client) {
    db.batch_execute(
        "CREATE TABLE a (k int, v int);
         CREATE TABLE b (k int, w int);
         INSERT INTO a VALUES (1, 10), (2, 20), (NULL, 5);
         INSERT INTO b VALUES (1, 7), (2, 8);
         SELECT pgtrickle.create_stream_table('j', 'SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('g', 'SELECT k, count(*) AS n, sum(v) AS s FROM a GROUP BY k', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('w', 'SELECT DISTINCT ON (k) k, v AS r FROM a', NULL, 'AUTO');",
    )
    .expect("setup");
}

/// The general differential statement stored at creation (the catalog,
/// read as the superuser: what `stream_table_sql` lists is specialised).
fn stored_diff_sql(db: &mut Client, st: &str) -> String {
    db.query_one(
        "SELECT diff_sql FROM pgtrickle.pgt_stream_tables WHERE relid = $1::text::regclass",
        &[&st],
    )
    .unwrap()
    .get(0)
}

fn explain(db: &mut Client, st: &str, format: &str) -> Result<String, postgres::Error> {
    db.query_one(
        "SELECT pgtrickle.explain_stream_table($1, $2)",
        &[&st, &format],
    )
    .map(|r| r.get(0))
}

/// Whether the specialised statement `sql` guards no source: its result
/// row's fifth column, after the frontier, is the constant `'false'`.
fn assumes_nothing(sql: &str) -> bool {
    let result_row = sql.lines().last().unwrap_or_default();
    result_row.contains("pg_catalog.pg_current_snapshot()::text, 'false'")
}

#[test]
fn explain_formats_text_dot_and_json() {
    let mut db = database("explain_formats");
    setup(&mut db);
    let text = explain(&mut db, "g", "text").unwrap();
    assert!(
        text.starts_with("Stream table public.g (requested DIFFERENTIAL, effective DIFFERENTIAL)"),
        "{text}"
    );
    assert!(
        text.contains("->  Aggregate") && text.contains("rows by group key"),
        "{text}"
    );
    let text = explain(&mut db, "w", "TEXT").unwrap();
    assert!(
        text.contains("FULL because:") && text.contains("DISTINCT ON"),
        "{text}"
    );
    let dot = explain(&mut db, "j", "dot").unwrap();
    assert!(
        dot.starts_with("digraph \"public.j\"") && dot.contains(" -> n"),
        "{dot}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&explain(&mut db, "j", "json").unwrap()).unwrap();
    assert_eq!(json["effective_mode"], "DIFFERENTIAL");
    assert_eq!(json["operator_tree"]["row_id_sensitive"], true);
    assert!(json["phases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["phase"] == "delta"));
    let err = explain(&mut db, "j", "yaml").unwrap_err();
    let db_err = err.as_db_error().expect("db error");
    assert_eq!(db_err.code().code(), "22023");
    assert!(db_err.message().contains("yaml") && db_err.message().contains('j'));
    // The 0.38.0 one-argument form still returns jsonb.
    let v: serde_json::Value = db
        .query_one("SELECT pgtrickle.explain_stream_table('g')::text", &[])
        .map(|r| serde_json::from_str(&r.get::<_, String>(0)).unwrap())
        .unwrap();
    assert_eq!(v["name"], "public.g");
}

/// One row of `stream_table_sql`: phase, sql, hash, writes, parameters.
type Phase = (String, String, String, bool, Option<Vec<Option<String>>>);

#[test]
fn generated_sql_lists_every_phase_and_read_only_phases_run_as_listed() {
    let mut db = database("sql_phases");
    setup(&mut db);
    let phases = |db: &mut Client, st: &str| -> Vec<Phase> {
        db.query(
            "SELECT phase, sql, hash, writes, parameters FROM pgtrickle.stream_table_sql($1)",
            &[&st],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    };
    let j = phases(&mut db, "j");
    let names: Vec<&str> = j.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names,
        ["populate", "full_recompute", "delta", "differential"]
    );
    assert!(j
        .iter()
        .all(|p| p.2.len() == 16 && p.2.chars().all(|c| c.is_ascii_hexdigit())));
    assert_eq!(j, phases(&mut db, "j"), "listing is stable");
    let stored = stored_diff_sql(&mut db, "j");
    // The listed differential statement is what the next refresh runs:
    // specialised to the sources with pending changes (none yet, so it
    // reads no delta and only checks that none arrived), unlike the
    // general statement stored at creation, which reads old states.
    assert!(stored.contains("__pgt_o1"), "{stored}");
    assert!(
        !j[3].1.contains("__pgt_d0 AS") && !j[3].1.contains("__pgt_d1 AS"),
        "{}",
        j[3].1
    );
    assert_eq!(
        j[3].1
            .matches("EXISTS (SELECT 1 FROM pgtrickle_changes.")
            .count(),
        2,
        "{}",
        j[3].1
    );

    // Pending changes show in the read-only delta phase, bound to the listed parameters.
    db.batch_execute("INSERT INTO a VALUES (1, 11); DELETE FROM b WHERE k = 2")
        .unwrap();
    let listed = phases(&mut db, "j");
    let diff = &listed.iter().find(|p| p.0 == "differential").unwrap().1;
    assert!(
        diff.contains("__pgt_d0 AS \"a\" JOIN __pgt_d1 AS \"b\"") && !diff.contains("__pgt_o"),
        "both sources changed: inclusion-exclusion over new states\n{diff}"
    );
    // A re-planned stream table (it names its storage as regclass prints
    // it) is specialised too.
    db.batch_execute("SELECT pgtrickle.alter_stream_table('g', refresh_mode => 'DIFFERENTIAL')")
        .unwrap();
    let g_diff = phases(&mut db, "g")
        .into_iter()
        .find(|p| p.0 == "differential")
        .unwrap()
        .1;
    assert!(
        g_diff.contains("EXISTS (SELECT 1 FROM pgtrickle_changes.") || assumes_nothing(&g_diff),
        "not specialised after a re-plan\n{g_diff}"
    );
    let delta = listed.into_iter().find(|p| p.0 == "delta").unwrap();
    assert!(!delta.3, "delta does not write");
    let params = delta.4.expect("parameterized phase lists its parameters");
    let types = vec!["text"; params.len()].join(", ");
    db.batch_execute(&format!("PREPARE d({types}) AS {}", delta.1))
        .unwrap();
    let args = params
        .iter()
        .map(|p| {
            p.as_ref()
                .map(|v| format!("'{v}'"))
                .unwrap_or_else(|| "NULL".into())
        })
        .collect::<Vec<_>>()
        .join(", ");
    let out = db.query(&format!("EXECUTE d({args})"), &[]).unwrap();
    let net: i64 = out.iter().map(|r| r.get::<_, i64>("__pgt_n")).sum();
    assert_eq!(out.len(), 2, "one row in, one row out");
    assert_eq!(net, 0);
    let plan: Vec<String> = first_column(
        &mut db,
        &format!("EXPLAIN (ANALYZE, BUFFERS) EXECUTE d({args})"),
        &[],
    );
    assert!(
        plan.iter().any(|l| l.contains("Execution Time")),
        "{plan:?}"
    );

    // count and sum are kept algebraically: one read-only phase, the
    // delta summed per group beside the stored groups.
    let g: Vec<String> = phases(&mut db, "g").into_iter().map(|p| p.0).collect();
    assert_eq!(g, ["populate", "full_recompute", "delta", "differential"]);
    // max of text is not (its order is a collation's): the touched groups
    // are recomputed.
    db.batch_execute(
        "SELECT pgtrickle.create_stream_table('gm', 'SELECT k, max(v::text) AS hi FROM a GROUP BY k', NULL, 'DIFFERENTIAL')",
    )
    .unwrap();
    let gm: Vec<String> = phases(&mut db, "gm").into_iter().map(|p| p.0).collect();
    assert_eq!(
        gm,
        [
            "populate",
            "full_recompute",
            "affected_groups",
            "group_recompute",
            "differential"
        ]
    );
    let w: Vec<String> = phases(&mut db, "w").into_iter().map(|p| p.0).collect();
    assert_eq!(
        w,
        ["populate", "full_recompute"],
        "a FULL stream table lists no differential phases"
    );
}

/// Specialisation is keyed by the fingerprint stored with the plan: a
/// stream table whose stored fingerprint does not match a fresh analysis
/// (or has none, as before 0.40.0's regeneration) runs its stored general
/// statement, and stays exact.
#[test]
fn a_plan_whose_fingerprint_does_not_match_runs_the_stored_statement() {
    let mut db = database("sql_fingerprint");
    setup(&mut db);
    let query = "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k";
    let listed_diff = |db: &mut Client| -> String {
        db.query_one(
            "SELECT sql FROM pgtrickle.stream_table_sql('j') WHERE phase = 'differential'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let stored = stored_diff_sql(&mut db, "j");
    assert_ne!(
        listed_diff(&mut db),
        stored,
        "specialised while the fingerprint matches"
    );
    for (n, fingerprint) in [Some("0000000000000000"), None].into_iter().enumerate() {
        db.execute(
            "UPDATE pgtrickle.pgt_stream_tables SET plan_fingerprint = $1 WHERE relid = 'j'::regclass",
            &[&fingerprint],
        )
        .unwrap();
        assert_eq!(
            listed_diff(&mut db),
            stored,
            "fingerprint {fingerprint:?}: the stored statement is what runs"
        );
        let n = n as i32;
        db.batch_execute(&format!(
            "INSERT INTO a VALUES (2, {n}); DELETE FROM b WHERE k = 1; INSERT INTO b VALUES (1, {n}); \
             SELECT pgtrickle.refresh_stream_table('j')"
        ))
        .unwrap();
        assert_eq!(
            oracles::engine_api::last_refresh_mode(&mut db, "j")
                .unwrap()
                .as_deref(),
            Some("DIFFERENTIAL")
        );
        assert_eq!(
            oracles::compare::differences(&mut db, "j", query).unwrap(),
            None,
            "fingerprint {fingerprint:?}: the stored statement kept j exact"
        );
    }
}

#[test]
fn upgrading_from_0_38_0_gives_the_catalog_of_a_fresh_install() {
    // Stream tables carried across an upgrade (built from the old source)
    // are `harness upgrade`'s job; here the 0.38.0 SQL meets this library.
    let cluster = shared_cluster();
    let mut fresh = database("fresh_039");
    let mut upgraded = cluster.fresh_database("t_upgraded_038").unwrap();
    upgraded
        .batch_execute(
            "DROP EXTENSION pg_trickle; CREATE EXTENSION pg_trickle VERSION '0.38.0'; \
             CREATE TABLE a (k int, v int); INSERT INTO a VALUES (1, 1);",
        )
        .expect("a 0.38.0 database");
    // Old SQL definitions over the new library fail clearly instead of misbehaving.
    for (sql, needle) in [
        ("SELECT * FROM pgtrickle.stream_table_status()", "older pg_trickle"),
        (
            "SELECT pgtrickle.create_stream_table('g', 'SELECT k, count(*) AS n FROM a GROUP BY k')",
            "version 0.38.0",
        ),
    ] {
        let err = upgraded.batch_execute(sql).unwrap_err();
        let db_err = err.as_db_error().expect("db error");
        assert_eq!(db_err.code().code(), "0A000", "{sql}");
        assert!(db_err.message().contains(needle), "{}", db_err.message());
        assert_eq!(db_err.hint(), Some("Run ALTER EXTENSION pg_trickle UPDATE."));
    }
    upgraded
        .batch_execute("ALTER EXTENSION pg_trickle UPDATE")
        .expect("upgrade");
    let version = harness::checks::upgrade::installed_version(&mut upgraded).unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let (a, b) = (
        snapshot(&mut fresh).unwrap(),
        snapshot(&mut upgraded).unwrap(),
    );
    let diff = catalog_differences(&a, &b);
    assert!(
        diff.is_empty(),
        "upgraded catalog differs from a fresh install:\n{}",
        diff.join("\n")
    );
    // The upgraded database works: a stream table, a change, a DIFFERENTIAL refresh.
    upgraded
        .batch_execute(
            "SELECT pgtrickle.create_stream_table('g', 'SELECT k, count(*) AS n FROM a GROUP BY k', NULL, 'DIFFERENTIAL'); \
             INSERT INTO a VALUES (1, 2), (2, 3); SELECT pgtrickle.refresh_stream_table('g');",
        )
        .unwrap();
    let rows: Vec<(i32, i64)> = upgraded
        .query("SELECT k, n FROM g ORDER BY k", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(1, 2), (2, 1)]);
    let mode: String = upgraded
        .query_one(
            "SELECT mode FROM pgtrickle.pgt_refresh_history ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(mode, "DIFFERENTIAL");
}

/// A setting as pg_settings shows it: boot value, min, max, unit, context.
type SettingFacts = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// What a running server reports for every `pg_trickle.*` setting equals
/// the one declaration in `engine/core` (name, default, bounds, unit, context).
#[test]
fn the_server_reports_exactly_the_declared_settings() {
    use pg_trickle_core::settings::{SettingContext, SettingKind, SETTINGS};
    let mut db = database("settings_drift");
    let reported: BTreeMap<String, SettingFacts> = db
        .query(
            "SELECT name, boot_val, min_val, max_val, unit, context FROM pg_settings WHERE name LIKE 'pg\\_trickle.%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
        .collect();
    let mut declared = BTreeMap::new();
    for s in SETTINGS {
        let (boot, min, max) = match s.kind {
            SettingKind::Bool { default } => {
                (if default { "on" } else { "off" }.to_string(), None, None)
            }
            SettingKind::Int { default, min, max } => (
                default.to_string(),
                Some(min.to_string()),
                Some(max.to_string()),
            ),
            SettingKind::Real { default, min, max } => (
                default.to_string(),
                Some(min.to_string()),
                Some(max.to_string()),
            ),
            SettingKind::Text { default } => (default.to_string(), None, None),
        };
        let context = match s.context {
            SettingContext::Restart => "postmaster",
            SettingContext::Reload => "sighup",
            SettingContext::Session => "user",
        };
        let unit = (!s.unit.is_empty()).then(|| s.unit.to_string());
        declared.insert(
            format!("pg_trickle.{}", s.name),
            (boot, min, max, unit, context.to_string()),
        );
    }
    assert_eq!(reported, declared);
}

/// Every `pg_trickle.*` setting and `pgtrickle.*` object the docs name exists.
#[test]
fn the_docs_name_only_settings_and_objects_that_exist() {
    use pg_trickle_core::settings::SETTINGS;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            files.push(e.path());
        }
    }
    let mut db = database("docs_drift");
    let objects: std::collections::BTreeSet<String> = first_column::<String>(&mut db, "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgtrickle' \
             UNION SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgtrickle'",
            &[])
        .into_iter()
        .collect();
    let mut missing = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (prefix, known) in [("pg_trickle.", true), ("pgtrickle.", false)] {
            for (i, _) in text.match_indices(prefix) {
                // Only where the prefix starts a name (not inside another word).
                if i > 0
                    && text[..i]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                {
                    continue;
                }
                // Span names are dotted (`pg_trickle.refresh.plan`): keep
                // the dots, not a sentence's full stop.
                let name: String = text[i + prefix.len()..]
                    .chars()
                    .take_while(|c| {
                        c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || *c == '_'
                            || (known && *c == '.')
                    })
                    .collect();
                let name = name.trim_end_matches('.').to_string();
                if name.is_empty() {
                    continue;
                }
                let exists = if known {
                    SETTINGS.iter().any(|s| s.name == name)
                        || pg_trickle_otlp::convert::EXPORTED_NAMES
                            .iter()
                            .any(|n| n[prefix.len()..] == name)
                } else {
                    objects.contains(&name)
                };
                if !exists {
                    missing.push(format!("{}: {prefix}{name}", f.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs name things that do not exist:\n{}",
        missing.join("\n")
    );
}

/// The statement specialised to every captured source having changes is
/// stored with the plan, so that a new connection runs it without
/// analysing the query: a refresh with every source changed runs what is
/// stored (shown here by storing one that applies nothing), a refresh
/// with only some changed specialises afresh, and a re-plan stores it
/// again.
#[test]
fn the_statement_for_every_source_changed_is_stored_with_the_plan() {
    let mut db = database("sql_all_changed");
    setup(&mut db);
    db.batch_execute(
        "SELECT pgtrickle.create_stream_table('full_g', 'SELECT k, v FROM a', NULL, 'FULL')",
    )
    .unwrap();
    let stored = |db: &mut Client, st: &str| -> Option<String> {
        db.query_one(
            "SELECT all_changed_sql FROM pgtrickle.pgt_stream_tables WHERE relid = $1::text::regclass",
            &[&st],
        )
        .unwrap()
        .get(0)
    };
    for st in ["j", "g"] {
        let all = stored(&mut db, st).unwrap_or_else(|| panic!("{st}: nothing stored"));
        assert_ne!(all, stored_diff_sql(&mut db, st), "{st}");
        assert!(
            assumes_nothing(&all),
            "{st}: no source is assumed unchanged\n{all}"
        );
    }
    assert_eq!(stored(&mut db, "full_g"), None, "a FULL stream table");

    // A stored statement that applies nothing: what a refresh runs shows.
    let nothing = "SELECT '0', '0', '0', pg_catalog.pg_current_snapshot()::text, 'false'";
    db.execute(
        "UPDATE pgtrickle.pgt_stream_tables SET all_changed_sql = $1 WHERE relid IN ('g'::regclass, 'j'::regclass)",
        &[&nothing],
    )
    .unwrap();
    db.batch_execute("INSERT INTO a VALUES (1, 11); SELECT pgtrickle.refresh_stream_table('g')")
        .unwrap();
    assert!(
        oracles::compare::differences(
            &mut db,
            "g",
            "SELECT k, count(*) AS n, sum(v) AS s FROM a GROUP BY k"
        )
        .unwrap()
        .is_some(),
        "g's one source changed: the stored statement ran"
    );
    // j: only a changed, so its statement is specialised afresh (and j
    // is right); then both changed, so the stored one runs.
    let j = "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k";
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('j')")
        .unwrap();
    assert_eq!(
        oracles::compare::differences(&mut db, "j", j).unwrap(),
        None
    );
    db.batch_execute(
        "INSERT INTO a VALUES (2, 21); INSERT INTO b VALUES (2, 9); SELECT pgtrickle.refresh_stream_table('j')",
    )
    .unwrap();
    assert!(
        oracles::compare::differences(&mut db, "j", j)
            .unwrap()
            .is_some(),
        "both of j's sources changed: the stored statement ran"
    );
    // A re-plan stores the real statement again, and the next refresh
    // (FULL, as after every re-plan) and the ones after it are right.
    db.batch_execute(
        "SELECT pgtrickle.alter_stream_table('j', refresh_mode => 'DIFFERENTIAL');
         SELECT pgtrickle.refresh_stream_table('j');
         INSERT INTO a VALUES (2, 22); INSERT INTO b VALUES (2, 10);
         SELECT pgtrickle.refresh_stream_table('j');",
    )
    .unwrap();
    assert_ne!(stored(&mut db, "j").as_deref(), Some(nothing));
    assert_eq!(
        oracles::compare::differences(&mut db, "j", j).unwrap(),
        None
    );
    assert_eq!(
        oracles::engine_api::last_refresh_mode(&mut db, "j")
            .unwrap()
            .as_deref(),
        Some("DIFFERENTIAL")
    );
}
