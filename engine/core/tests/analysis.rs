//! Query analysis and delta-SQL generation, without a server.

mod common;

use common::{catalog, columns};
use pg_trickle_core::analyze::{analyze, referenced_tables, Model};
use pg_trickle_core::catalog::{ColumnIdentity, OutputColumn};
use pg_trickle_core::delta::{plan_refresh, plan_refresh_for_changes};
use proptest::prelude::*;

fn reason(sql: &str) -> String {
    analyze(sql, &catalog())
        .unwrap()
        .model
        .err()
        .unwrap_or_default()
}

fn supported(sql: &str) -> Model {
    let a = analyze(sql, &catalog()).unwrap();
    match a.model {
        Ok(m) => m,
        Err(r) => panic!("{sql}: unexpectedly unsupported: {r}"),
    }
}

#[test]
fn references_are_reported_for_resolution() {
    let refs = referenced_tables(
        "WITH x AS (SELECT * FROM a) SELECT upper(s) FROM x JOIN public.b ON true",
    )
    .unwrap();
    assert!(refs.tables.contains(&"a".to_string()));
    assert!(refs.tables.contains(&"public.b".to_string()));
    assert_eq!(refs.functions, vec!["upper".to_string()]);
}

#[test]
fn supported_shapes() {
    for sql in [
        "SELECT k, v FROM a WHERE v > 3",
        "SELECT * FROM a",
        "SELECT a.k, b.w FROM a JOIN b ON a.k = b.k",
        "SELECT a.k, b.w FROM a, b WHERE a.v < b.w",
        "SELECT x.k FROM a x JOIN a y ON x.k = y.k",
        "SELECT k FROM a UNION ALL SELECT k FROM b",
        "SELECT s.k FROM (SELECT k, v FROM a) s",
        "WITH t AS (SELECT k FROM a) SELECT k FROM t",
        "SELECT upper(s) AS u, CASE WHEN v > 1 THEN 'x' END AS c, v::text AS t FROM public.a",
    ] {
        assert!(matches!(supported(sql), Model::Linear(_)), "{sql}");
    }
    for sql in [
        "SELECT k, count(*), sum(v), avg(v), min(v), max(v) FROM a GROUP BY k",
        "SELECT count(*) FROM a",
        "SELECT DISTINCT k, s FROM a",
        "SELECT k, sum(v) FROM a GROUP BY k HAVING count(*) > 1",
        "SELECT a.k, count(*) FROM a JOIN b ON a.k = b.k GROUP BY 1",
    ] {
        assert!(matches!(supported(sql), Model::Grouped { .. }), "{sql}");
    }
}

#[test]
fn unsupported_constructs_are_named() {
    let cases = [
        ("SELECT a.k FROM a LEFT JOIN b ON a.k = b.k", "LEFT JOIN"),
        ("SELECT a.k FROM a FULL JOIN b ON a.k = b.k", "FULL JOIN"),
        ("SELECT k FROM a LIMIT 3", "LIMIT"),
        ("SELECT k, row_number() OVER () FROM a", "window function"),
        ("SELECT k FROM a WHERE k IN (SELECT k FROM b)", "subquery"),
        ("SELECT k FROM a WHERE EXISTS (SELECT 1 FROM b)", "subquery"),
        ("SELECT random() FROM a", "random"),
        ("SELECT now() FROM a", "now"),
        ("SELECT k FROM va", "view"),
        ("SELECT k FROM a UNION SELECT k FROM b", "UNION"),
        ("SELECT DISTINCT ON (k) k, v FROM a", "DISTINCT ON"),
        (
            "SELECT s.k FROM (SELECT k, count(*) FROM a GROUP BY k) s",
            "aggregate or DISTINCT inside",
        ),
        (
            "SELECT k, string_agg(s, ',') FROM a GROUP BY k",
            "string_agg",
        ),
        (
            "WITH RECURSIVE r AS (SELECT 1 AS n) SELECT n FROM r",
            "RECURSIVE",
        ),
        (
            "SELECT DISTINCT k, count(*) FROM a GROUP BY k",
            "DISTINCT combined",
        ),
        ("SELECT 1", "without a FROM"),
        ("SELECT k FROM a FOR UPDATE", "FOR UPDATE"),
        ("SELECT k FROM mv", "is a materialized view"),
        ("SELECT k FROM ft", "is a foreign table"),
        (
            "SELECT k FROM ul",
            "cannot be captured exactly: it is unlogged",
        ),
        ("SELECT k FROM ONLY par", "FROM ONLY par"),
    ];
    for (sql, expected) in cases {
        let r = reason(sql);
        assert!(
            r.contains(expected),
            "{sql}: reason {r:?} should mention {expected:?}"
        );
    }
}

#[test]
fn for_update_is_not_called_limit() {
    let r = reason("SELECT k FROM a FOR UPDATE");
    assert!(!r.contains("LIMIT"), "{r}");
}

#[test]
fn an_inheritance_parent_is_maintained_with_its_children() {
    assert!(matches!(supported("SELECT k FROM par"), Model::Linear(_)));
}

#[test]
fn columns_without_a_hash_enter_the_identity_by_send_or_text() {
    let a = analyze("SELECT k, v, s FROM a", &catalog()).unwrap();
    let cols = vec![
        OutputColumn {
            name: "k".into(),
            type_sql: "integer".into(),
            identity: ColumnIdentity::Hash,
            nondeterministic: false,
        },
        OutputColumn {
            name: "v".into(),
            type_sql: "point".into(),
            identity: ColumnIdentity::Send("pg_catalog.point_send".into()),
            nondeterministic: false,
        },
        OutputColumn {
            name: "s".into(),
            type_sql: "json".into(),
            identity: ColumnIdentity::Text,
            nondeterministic: false,
        },
    ];
    let p = plan_refresh(&a, "SELECT k, v, s FROM a", "public.st", &cols);
    let full = p.full_sql;
    assert!(
        full.contains("__pgt_q.k::integer, pg_catalog.point_send(__pgt_q.v::point), (__pgt_q.s::json)::pg_catalog.text"),
        "{full}"
    );
}

#[test]
fn the_key_probe_asks_for_every_group_key_and_reads_nothing() {
    let a = analyze(
        "SELECT k, s, count(*) FROM a WHERE v > 1 GROUP BY k, s",
        &catalog(),
    )
    .unwrap();
    let probe = pg_trickle_core::probes::key_probe(&a).expect("grouped");
    assert_eq!(probe.keys, ["k", "s"]);
    let sql = probe.types_sql();
    assert!(
        sql.contains("pg_typeof(q.__pgt_k2)") && sql.contains("LIMIT 0"),
        "{sql}"
    );
    assert!(
        sql.contains("WHERE v > 1") && !sql.contains("GROUP BY"),
        "{sql}"
    );
    let coll = probe.collations_sql(&[1]);
    assert!(
        coll.contains("pg_collation_for(q.__pgt_k2)") && !coll.contains("__pgt_k1)"),
        "{coll}"
    );
    let scalar = analyze("SELECT count(*) FROM a", &catalog()).unwrap();
    assert!(pg_trickle_core::probes::key_probe(&scalar).is_none());
    let linear = analyze("SELECT k FROM a", &catalog()).unwrap();
    assert!(pg_trickle_core::probes::key_probe(&linear).is_none());
}

#[test]
fn syntax_errors_and_non_selects_are_errors() {
    assert_eq!(
        analyze("SELEC 1", &catalog()).unwrap_err().sqlstate(),
        "42601"
    );
    assert!(analyze("DELETE FROM a", &catalog()).is_err());
    assert!(analyze("SELECT 1; SELECT 2", &catalog()).is_err());
}

#[test]
fn explain_tree_marks_the_unsupported_node() {
    let a = analyze("SELECT a.k FROM a LEFT JOIN b ON a.k = b.k", &catalog()).unwrap();
    assert!(!a.tree.diff_supported);
    let a = analyze("SELECT k, sum(v) FROM a GROUP BY k", &catalog()).unwrap();
    let json = serde_json::to_string(&a.tree).unwrap();
    assert!(
        json.contains("Aggregate") && json.contains("Scan"),
        "{json}"
    );
}

fn plan(sql: &str, cols: &[&str]) -> pg_trickle_core::RefreshPlan {
    let a = analyze(sql, &catalog()).unwrap();
    plan_refresh(&a, sql, "public.st", &columns(cols))
}

fn diff_sql(sql: &str, cols: &[&str]) -> String {
    plan(sql, cols).diff_sql.expect("differential")
}

#[test]
fn join_delta_is_telescoped_once_per_occurrence() {
    let sql = diff_sql("SELECT a.k, b.w FROM a JOIN b ON a.k = b.k", &["k", "w"]);
    // Term 1: dA joined with B's old state; term 2: A's new state joined with dB.
    assert!(
        sql.contains("FROM __pgt_d0 AS \"a\" JOIN __pgt_o1 AS \"b\""),
        "{sql}"
    );
    assert!(sql.contains("FROM a JOIN __pgt_d1 AS \"b\""), "{sql}");
    assert!(sql.contains("a.__pgt_m * b.__pgt_m"), "{sql}");
    // No term joins two deltas: the dA x dB product comes only through old states.
    assert!(!sql.contains("__pgt_d0 AS \"a\" JOIN __pgt_d1"), "{sql}");
    // Both buffers are read with their own parameter for the own-transaction change id.
    assert!(sql.contains("$3::bigint") && sql.contains("$4::bigint"));
}

#[test]
fn grouped_refresh_restricts_recompute_to_affected_keys() {
    let sql = diff_sql(
        "SELECT k, sum(v) AS total FROM a GROUP BY k",
        &["k", "total"],
    );
    assert!(sql.contains("__pgt_keys"), "{sql}");
    assert!(
        sql.contains("= ANY(ARRAY(SELECT DISTINCT k.__pgt_k1 FROM __pgt_keys k WHERE k.__pgt_k1 IS NOT NULL))"),
        "{sql}"
    );
    assert!(sql.contains("IS NOT DISTINCT FROM"), "{sql}");
    // A multi-column key is matched on the computed groups by its identity
    // hash, behind a fence, not by a semi-join that could reorder the joins.
    let sql = diff_sql(
        "SELECT k, s, count(*) AS n FROM a GROUP BY k, s",
        &["k", "s", "n"],
    );
    assert!(
        sql.contains("OFFSET 0) r WHERE r.__pgt_row_id = ANY (ARRAY(SELECT pg_catalog.hash_record_extended(ROW(k.__pgt_k1, k.__pgt_k2), 0) FROM __pgt_keys k"),
        "{sql}"
    );
    assert!(!sql.contains(") IN (SELECT"), "{sql}");
}

fn specialised(sql: &str, cols: &[&str], changed: &[usize]) -> pg_trickle_core::RefreshPlan {
    let a = analyze(sql, &catalog()).unwrap();
    plan_refresh_for_changes(&a, sql, "public.st", &columns(cols), changed)
}

#[test]
fn a_plan_specialised_to_one_changed_source_reads_the_other_as_a_plain_table() {
    let sql = "SELECT a.k, b.w FROM a JOIN b ON a.k = b.k";
    let p = specialised(sql, &["k", "w"], &[0]);
    let diff = p.diff_sql.clone().unwrap();
    assert!(diff.contains("FROM __pgt_d0 AS \"a\" JOIN b ON"), "{diff}");
    assert!(
        !diff.contains("__pgt_d1") && !diff.contains("__pgt_o"),
        "{diff}"
    );
    // b is assumed unchanged: the statement checks its buffer with b's own parameter.
    assert_eq!(p.guarded_sources, [1]);
    assert_eq!(p.diff_sources, plan(sql, &["k", "w"]).diff_sources);
    assert!(
        diff.contains("EXISTS (SELECT 1 FROM pgtrickle_changes.changes_2 b WHERE")
            && diff.contains("$4::bigint"),
        "{diff}"
    );
    assert!(diff.ends_with(")::text"), "{diff}");
}

#[test]
fn two_changed_sources_combine_by_inclusion_exclusion_over_new_states() {
    let p = specialised(
        "SELECT a.k, b.w FROM a JOIN b ON a.k = b.k",
        &["k", "w"],
        &[0, 1],
    );
    let diff = p.diff_sql.unwrap();
    assert!(diff.contains("FROM __pgt_d0 AS \"a\" JOIN b ON"), "{diff}");
    assert!(diff.contains("FROM a JOIN __pgt_d1 AS \"b\" ON"), "{diff}");
    assert!(
        diff.contains("FROM __pgt_d0 AS \"a\" JOIN __pgt_d1 AS \"b\"")
            && diff.contains("-(a.__pgt_m * b.__pgt_m)"),
        "{diff}"
    );
    assert!(!diff.contains("__pgt_o"), "{diff}");
    assert!(p.guarded_sources.is_empty());
    assert!(diff.ends_with(", 'false'"), "{diff}");
}

#[test]
fn many_changed_occurrences_telescope_and_no_change_reads_nothing() {
    let sql = "SELECT x.k FROM a x, a y, a z, a w WHERE x.k = y.k AND y.k = z.k AND z.k = w.k";
    let p = specialised(sql, &["k"], &[0]);
    let diff = p.diff_sql.unwrap();
    assert!(
        diff.contains("__pgt_o0"),
        "four changed occurrences telescope: {diff}"
    );
    assert_eq!(diff.matches("__pgt_d0 AS").count(), 4, "{diff}");
    let grouped = specialised(
        "SELECT k, count(*) AS n FROM a GROUP BY k",
        &["k", "n"],
        &[],
    );
    let diff = grouped.diff_sql.unwrap();
    assert!(diff.contains("WHERE false"), "{diff}");
    assert!(!diff.contains("__pgt_d0"), "{diff}");
    assert_eq!(grouped.guarded_sources, [0]);
}

#[test]
fn self_join_uses_one_buffer_twice() {
    let sql = diff_sql("SELECT x.k FROM a x JOIN a y ON x.k = y.k", &["k"]);
    assert_eq!(sql.matches("__pgt_d0(").count(), 1, "{sql}");
    assert!(sql.contains("__pgt_d0 AS \"x\""));
    assert!(sql.contains("__pgt_d0 AS \"y\""));
}

// A small grammar of supported queries over a(k, v, s) and b(k, w).
fn arb_query() -> impl Strategy<Value = (String, Vec<&'static str>, bool, usize)> {
    let occ = prop_oneof![Just(("a", "k", "v")), Just(("b", "k", "w"))];
    (proptest::collection::vec(occ, 1..4), any::<bool>(), any::<bool>(), 0u8..3).prop_map(
        |(occs, grouped, filtered, pred)| {
            let from: Vec<String> = occs.iter().enumerate().map(|(i, (t, _, _))| format!("{t} t{i}")).collect();
            let mut conds: Vec<String> =
                (1..occs.len()).map(|i| format!("t{}.k = t{i}.k", i - 1)).collect();
            if filtered {
                let (_, _, col) = occs[0];
                conds.push(match pred {
                    0 => format!("t0.{col} > 3"),
                    1 => format!("t0.{col} IS NOT NULL"),
                    _ => format!("(t0.{col} % 2 = 0 OR t0.k IS NULL)"),
                });
            }
            let (_, _, col) = occs[occs.len() - 1];
            let last = occs.len() - 1;
            let where_ = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
            if grouped {
                (
                    format!("SELECT t0.k, count(*) AS n, sum(t{last}.{col}) AS s FROM {}{where_} GROUP BY t0.k", from.join(", ")),
                    vec!["k", "n", "s"],
                    true,
                    occs.len(),
                )
            } else {
                (format!("SELECT t0.k, t{last}.{col} AS c FROM {}{where_}", from.join(", ")), vec!["k", "c"], false, occs.len())
            }
        },
    )
}

proptest! {
    #[test]
    fn generated_sql_parses_and_has_one_term_per_occurrence((sql, cols, grouped, occurrences) in arb_query()) {
        let a = analyze(&sql, &catalog()).unwrap();
        prop_assert!(a.model.is_ok(), "{} -> {:?}", sql, a.model.err());
        let plan = plan_refresh(&a, &sql, "public.st", &columns(&cols));
        let diff = plan.diff_sql.clone().unwrap();
        // Telescoping: exactly one term per FROM occurrence, each reading one delta.
        let delta_reads = diff.matches(" AS \"t").count();
        let delta_terms = (0..a.sources.len())
            .map(|s| diff.matches(format!("__pgt_d{s} AS \"t").as_str()).count())
            .sum::<usize>();
        prop_assert_eq!(delta_terms, occurrences);
        prop_assert!(delta_reads >= occurrences);
        for text in [&plan.populate_sql, &plan.full_sql, &diff] {
            let parsed = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, text);
            prop_assert!(parsed.as_ref().map(|s| s.len()) == Ok(1), "does not parse: {}\n{:?}", text, parsed.err());
        }
        prop_assert_eq!(plan.grouped, grouped);
        // Specialised to every subset of the sources, the SQL still parses.
        for mask in 0..(1usize << a.sources.len()) {
            let changed: Vec<usize> = (0..a.sources.len()).filter(|s| mask & (1 << s) != 0).collect();
            let p = plan_refresh_for_changes(&a, &sql, "public.st", &columns(&cols), &changed);
            let text = p.diff_sql.unwrap();
            let parsed = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &text);
            prop_assert!(parsed.as_ref().map(|s| s.len()) == Ok(1), "does not parse: {}\n{:?}", text, parsed.err());
            prop_assert_eq!(p.diff_sources.clone(), plan.diff_sources.clone());
        }
        // Each source's buffer CTE is defined once, however often it occurs.
        for s in 0..a.sources.len() {
            let def = format!("__pgt_d{s}(");
            prop_assert_eq!(diff.matches(def.as_str()).count(), 1);
        }
    }
}

#[test]
fn every_plan_lists_its_phases_with_stable_hashes() {
    let linear = plan("SELECT a.k, b.w FROM a JOIN b ON a.k = b.k", &["k", "w"]);
    let names: Vec<&str> = linear.phases.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        ["populate", "full_recompute", "delta", "differential"]
    );
    let delta = &linear.phases[2];
    assert!(delta.parameterized && !delta.writes);
    assert!(
        delta.sql.ends_with("SELECT * FROM __pgt_net"),
        "{}",
        delta.sql
    );
    assert!(!delta.sql.contains("DELETE") && !delta.sql.contains("INSERT"));
    assert_eq!(linear.phases[3].sql, linear.diff_sql.clone().unwrap());
    assert_eq!(
        delta.hash(),
        plan("SELECT a.k, b.w FROM a JOIN b ON a.k = b.k", &["k", "w"]).phases[2].hash()
    );

    let grouped = plan("SELECT k, count(*) AS n FROM a GROUP BY k", &["k", "n"]);
    let names: Vec<&str> = grouped.phases.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "populate",
            "full_recompute",
            "affected_groups",
            "group_recompute",
            "differential"
        ]
    );
    assert!(grouped
        .phases
        .iter()
        .filter(|p| !p.writes)
        .all(|p| !p.sql.contains("DELETE FROM")));

    let full_only = plan("SELECT k, row_number() OVER () AS r FROM a", &["k", "r"]);
    let names: Vec<&str> = full_only.phases.iter().map(|p| p.name).collect();
    assert_eq!(names, ["populate", "full_recompute"]);
}
