//! Query analysis and delta-SQL generation, without a server.

mod common;

use common::{catalog, columns};
use pg_trickle_core::analyze::{analyze, referenced_tables, Model, SubLink};
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
fn outer_joins_are_kept_by_the_rows_they_reach() {
    // Without grouping: by their rows' values, as a bag.
    for sql in [
        "SELECT a.k, b.w FROM a LEFT JOIN b ON a.k = b.k",
        "SELECT a.k, b.w FROM a RIGHT JOIN b ON a.k = b.k AND b.w > 1",
        "SELECT a.k, b.w FROM a FULL JOIN b ON a.k = b.k WHERE b.w IS NULL",
        "SELECT s.k FROM (SELECT a.k FROM a LEFT JOIN b ON a.k = b.k) s JOIN c ON s.k = c.x",
    ] {
        assert!(
            matches!(supported(sql), Model::Grouped { bag: true, .. }),
            "{sql}"
        );
    }
    // Grouped: by their groups.
    let Model::Grouped { block, bag, .. } = supported(
        "SELECT a.k, count(b.w), count(c.x) FROM a LEFT JOIN b ON a.k = b.k \
         LEFT JOIN c ON b.w = c.x JOIN a a2 ON a2.k = a.k GROUP BY a.k",
    ) else {
        panic!("grouped")
    };
    assert!(!bag);
    let sides: Vec<_> = block
        .outer
        .iter()
        .map(|o| {
            (
                o.join,
                o.left.clone(),
                o.right.clone(),
                o.keeps_left,
                o.keeps_right,
            )
        })
        .collect();
    assert_eq!(
        sides,
        vec![(0, 0..1, 1..2, true, false), (1, 0..2, 2..3, true, false)]
    );
    // A parenthesised join counts before the join holding it.
    let Model::Grouped { block, .. } =
        supported("SELECT count(*) FROM a JOIN (b FULL JOIN c ON b.w = c.x) ON a.k = b.k")
    else {
        panic!("grouped")
    };
    let o = &block.outer[0];
    assert_eq!((o.join, o.left.clone(), o.right.clone()), (0, 1..2, 2..3));
    assert!(o.keeps_left && o.keeps_right);
    // The condition is kept with its unqualified names qualified by the
    // side that has them: outside the join, `v` would also name a2.v.
    let Model::Grouped { block, .. } = supported(
        "SELECT a.k, b.w FROM a LEFT JOIN b ON b.k = a.k AND v > 0 JOIN a a2 ON a2.k = b.w",
    ) else {
        panic!("kept by rows")
    };
    assert_eq!(
        block.outer[0].on.to_string(),
        "b.k = a.k AND \"a\".\"v\" > 0"
    );
}

#[test]
fn bags_are_kept_by_the_outputs_a_change_can_name() {
    let by = |sql: &str| match supported(sql) {
        Model::Grouped {
            keys, bag: true, ..
        } => keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        other => panic!("{sql}: not a bag: {other:?}"),
    };
    // A select-list subquery may change a row whose FROM row did not:
    // the row's other outputs name it.
    assert_eq!(by("SELECT k, (SELECT max(w) FROM b) AS m FROM a"), ["k"]);
    // The stored row's subquery value is its old one, which no delta can
    // name (SQLancer light, seed 20261129, case 157): every row is
    // recomputed when the subquery's sources change.
    assert!(by("SELECT DISTINCT (SELECT count(*) FROM b WHERE b.k = a.k) AS n FROM a").is_empty());
    assert_eq!(
        by("SELECT DISTINCT s, (SELECT count(*) FROM b WHERE b.k = a.k) AS n FROM a"),
        ["s"]
    );
    // A union with a branch that is not exact: by every output, over
    // the union as one subquery in FROM.
    assert_eq!(
        by("SELECT a.k, a.k FROM a LEFT JOIN b ON a.k = b.k UNION ALL SELECT x, x FROM c"),
        ["__pgt_u.__pgt_c1", "__pgt_u.__pgt_c2"]
    );
    assert_eq!(
        by("SELECT k FROM a WHERE EXISTS (SELECT 1 FROM b) UNION ALL SELECT k FROM b"),
        ["__pgt_u.__pgt_c1"]
    );
    // DISTINCT over groups: by the outputs that are group keys.
    assert_eq!(
        by("SELECT DISTINCT k, count(*) FROM a GROUP BY k, s"),
        ["k"]
    );
    assert!(by("SELECT DISTINCT count(*) FROM a GROUP BY k").is_empty());
}

#[test]
fn a_limited_query_keeps_its_first_rows_by_output_columns() {
    let top = |sql: &str| match supported(sql) {
        Model::Grouped {
            top: Some(t), bag, ..
        } => (t, bag),
        other => panic!("{sql}: no top-k: {other:?}"),
    };
    // By output name, position and expression, with directions.
    let (t, bag) =
        top("SELECT k, sum(v) AS total FROM a GROUP BY k ORDER BY total DESC, 1 LIMIT 3");
    assert!(!bag);
    assert_eq!((t.limit, t.offset), (3, 0));
    assert_eq!(t.order_by(&["x".into(), "y".into()]), "y DESC, x");
    let (t, bag) = top("SELECT k, v + 1 FROM a ORDER BY v + 1 NULLS FIRST LIMIT 5 OFFSET 2");
    assert!(bag, "rows without grouping are kept as a bag");
    assert_eq!((t.limit, t.offset), (5, 2));
    assert_eq!(t.order_by(&["x".into(), "y".into()]), "y NULLS FIRST");
    let (t, _) =
        top("SELECT k FROM a UNION ALL SELECT k FROM b ORDER BY k FETCH FIRST 2 ROWS ONLY");
    assert_eq!(t.limit, 2);
}

#[test]
fn window_functions_are_kept_by_the_partitions_every_window_shares() {
    let by = |sql: &str| match supported(sql) {
        Model::Grouped {
            keys, bag: true, ..
        } => keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        other => panic!("{sql}: not a bag: {other:?}"),
    };
    assert_eq!(
        by("SELECT k, v, sum(v) OVER (PARTITION BY k ORDER BY v) AS run FROM a"),
        ["k"]
    );
    assert_eq!(
        by("SELECT k, s, rank() OVER (PARTITION BY k, s ORDER BY v), count(*) OVER (PARTITION BY s, k) FROM a"),
        ["k", "s"]
    );
    // A key holding a subquery is left out: its old value is not known.
    assert!(
        by("SELECT k, v, count(*) OVER (PARTITION BY (SELECT max(w) FROM b)) AS n FROM a")
            .is_empty()
    );
    assert_eq!(
        by("SELECT k, count(*) OVER (PARTITION BY k, (SELECT w FROM b WHERE b.k = a.k)) FROM a"),
        ["k"]
    );
    // A window over everything: every change recomputes the query.
    assert!(by("SELECT k, row_number() OVER (ORDER BY k, v, s) FROM a").is_empty());
    assert!(by(
        "SELECT k, rank() OVER (PARTITION BY k ORDER BY v), rank() OVER (ORDER BY v) FROM a"
    )
    .is_empty());
}

#[test]
fn set_operations_are_groups_of_their_rows_with_the_side_they_came_from() {
    for (sql, having) in [
        ("SELECT k FROM a UNION SELECT x FROM c", None),
        (
            "SELECT k, v FROM a INTERSECT SELECT k, w FROM b",
            Some(
                "pg_catalog.min(__pgt_u.__pgt_side) = 1 AND pg_catalog.max(__pgt_u.__pgt_side) = 2",
            ),
        ),
        (
            "SELECT k FROM a EXCEPT SELECT k FROM b",
            Some("pg_catalog.max(__pgt_u.__pgt_side) = 1"),
        ),
    ] {
        let Model::Grouped {
            block, keys, bag, ..
        } = supported(sql)
        else {
            panic!("{sql}: not grouped")
        };
        assert!(!bag, "{sql}");
        assert_eq!(keys.len(), block.outputs.len(), "{sql}");
        assert_eq!(
            block
                .select
                .having
                .as_ref()
                .map(|h| h.to_string())
                .as_deref(),
            having,
            "{sql}"
        );
    }
    // Ranked, too.
    assert!(matches!(
        supported("SELECT k FROM a EXCEPT SELECT k FROM b ORDER BY k DESC LIMIT 2"),
        Model::Grouped { top: Some(_), .. }
    ));
}

/// How each subquery of a grouped query's top block reaches its rows.
fn links(sql: &str) -> Vec<String> {
    let Model::Grouped { block, .. } = supported(sql) else {
        panic!("{sql}: not grouped");
    };
    block
        .subs
        .iter()
        .map(|s| match &s.link {
            SubLink::Equal { inner, outer } => format!(
                "{} equal {}",
                s.kind,
                inner
                    .iter()
                    .zip(outer)
                    .map(|(i, o)| format!("{i}={o}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            SubLink::In { inner, outer } => format!("{} in {outer}<-{inner}", s.kind),
            SubLink::Every => format!("{} every", s.kind),
        })
        .collect()
}

#[test]
fn a_subquery_correlated_by_its_equalities_alone_is_told_apart() {
    let only_equalities = |sql: &str| -> Vec<bool> {
        let Model::Grouped { block, .. } = supported(sql) else {
            panic!("{sql}: not grouped");
        };
        block.subs.iter().map(|s| s.only_equalities).collect()
    };
    // Its own conjuncts and equalities, either way round: its result for a
    // row depends on the row's correlated values alone.
    assert_eq!(
        only_equalities(
            "SELECT k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND a.v = b.w AND b.w > 0) GROUP BY k"
        ),
        [true]
    );
    assert_eq!(
        only_equalities(
            "SELECT k, sum(v) FROM a WHERE v > (SELECT avg(w) FROM b WHERE b.k = a.k) GROUP BY k"
        ),
        [true]
    );
    // Another correlated conjunct, an outer column in its select list, a
    // nested subquery or no equality at all: more than the values decide.
    for sql in [
        "SELECT k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w < a.v) GROUP BY k",
        "SELECT k, sum(v) FROM a WHERE v > (SELECT avg(w) + a.v FROM b WHERE b.k = a.k) GROUP BY k",
        "SELECT k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k \
         AND EXISTS (SELECT 1 FROM c WHERE c.x = b.w)) GROUP BY k",
        "SELECT k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.w > 0) GROUP BY k",
    ] {
        assert_eq!(only_equalities(sql), [false], "{sql}");
    }
    // An equality under a COLLATE of its own links nothing: the values a
    // change reached are collected under the subquery side's collation.
    assert_eq!(
        links("SELECT k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k COLLATE \"C\") GROUP BY k"),
        ["EXISTS every"]
    );
}

#[test]
fn both_sides_of_a_filters_equalities_are_probed_and_marked() {
    let mut a = analyze(
        "SELECT k, count(*) FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND a.v = b.w) \
         AND v > (SELECT avg(w) FROM b) GROUP BY k",
        &catalog(),
    )
    .unwrap();
    let probes = pg_trickle_core::probes::filter_link_probes(&a);
    // One block; its uncorrelated subquery has no equality to probe.
    let [block] = probes.as_slice() else {
        panic!("{probes:?}");
    };
    let [(sub, inner, outer)] = block.as_slice() else {
        panic!("{block:?}");
    };
    assert_eq!(*sub, 0);
    assert_eq!(inner.keys, ["b.k", "b.w"]);
    assert_eq!(outer.keys, ["a.k", "a.v"]);
    assert!(
        inner.types_sql().contains("FROM b"),
        "{}",
        inner.types_sql()
    );
    assert!(
        outer.types_sql().contains("FROM a"),
        "{}",
        outer.types_sql()
    );
    pg_trickle_core::probes::mark_link_types(&mut a, &[vec![(0, true)]]);
    let Ok(Model::Grouped { block, .. }) = &a.model else {
        panic!("grouped");
    };
    let marked: Vec<Option<bool>> = block.subs.iter().map(|s| s.same_link_types).collect();
    assert_eq!(marked, [Some(true), None]);
}

#[test]
fn filter_links_are_probed_only_where_equalities_alone_correlate() {
    // Without grouping, a query whose rows subqueries filter is kept by
    // its rows' values: a grouped model over a bag, whose filters are
    // probed as a grouped block's are (a linear model holds none).
    let mut a = analyze(
        "SELECT a.k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k) \
         AND NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w <> a.v)",
        &catalog(),
    )
    .unwrap();
    assert!(
        matches!(a.model, Ok(Model::Grouped { bag: true, .. })),
        "{:?}",
        a.model
    );
    let probes = pg_trickle_core::probes::filter_link_probes(&a);
    let subs: Vec<Vec<usize>> = probes
        .iter()
        .map(|b| b.iter().map(|(i, _, _)| *i).collect())
        .collect();
    // The second subquery is correlated by `<>` too: no lookup reads it,
    // so nothing is asked about it.
    assert_eq!(subs, [vec![0]]);
    pg_trickle_core::probes::mark_link_types(&mut a, &[vec![(0, true)]]);
    let mut marked = Vec::new();
    pg_trickle_core::probes::for_each_filter_block_mut(&mut a, &mut |block| {
        marked.extend(block.subs.iter().map(|s| s.same_link_types));
    });
    assert_eq!(marked, [Some(true), None]);
}

#[test]
fn subqueries_under_a_grouped_query_are_linked_to_its_rows() {
    // Correlating equalities, either way round, qualified or not; other
    // correlated conjuncts are only dropped.
    assert_eq!(
        links("SELECT k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w <> a.v) GROUP BY k"),
        ["EXISTS equal b.k=a.k"]
    );
    assert_eq!(
        links(
            "SELECT k, count(*) FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE a.v = w) GROUP BY k"
        ),
        ["NOT EXISTS equal w=a.v"]
    );
    // An unqualified name resolves in the nearest scope that has it.
    assert_eq!(
        links(
            "SELECT k, sum(v) FROM a WHERE v > (SELECT avg(v) FROM a a2 WHERE a2.k = k) GROUP BY k"
        ),
        ["scalar every"]
    );
    assert_eq!(
        links("SELECT k, sum(v) FROM a WHERE v > (SELECT avg(v) FROM a a2 WHERE a2.k = a.k) GROUP BY k"),
        ["scalar equal a2.k=a.k"]
    );
    // IN without a correlating equality links its tested value; not
    // through a LIMIT, nor an output of a grouped subquery that is not a key.
    assert_eq!(
        links("SELECT k, count(*) FROM a WHERE v NOT IN (SELECT w FROM b) GROUP BY k"),
        ["NOT IN in v<-w"]
    );
    assert_eq!(
        links("SELECT k, count(*) FROM a WHERE k IN (SELECT k FROM b GROUP BY k HAVING sum(w) > 2) GROUP BY k"),
        ["IN in k<-k"]
    );
    assert_eq!(
        links("SELECT k, count(*) FROM a WHERE v IN (SELECT max(w) FROM b GROUP BY k) GROUP BY k"),
        ["IN every"]
    );
    assert_eq!(
        links(
            "SELECT k, count(*) FROM a WHERE v IN (SELECT w FROM b ORDER BY w LIMIT 2) GROUP BY k"
        ),
        ["IN every"]
    );
    // Uncorrelated scalar subqueries, in HAVING and the select list too.
    assert_eq!(
        links("SELECT k, sum(v), (SELECT count(*) FROM c) FROM a GROUP BY k HAVING sum(v) > (SELECT max(w) FROM b)"),
        ["scalar every", "scalar every"]
    );
    // A query without grouping whose rows subqueries filter (directly or
    // in a subquery in FROM) is kept by its rows' values, as a bag.
    for sql in [
        "SELECT k FROM a WHERE k IN (SELECT k FROM b)",
        "SELECT k, v FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)",
        "SELECT s.k FROM (SELECT k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k)) s",
    ] {
        assert!(
            matches!(supported(sql), Model::Grouped { bag: true, ref keys, .. } if !keys.is_empty()),
            "{sql}"
        );
    }
    // A CTE named inside a subquery is inlined there (it shadows the
    // table of the same name), so its sources are what the CTE reads.
    let a = analyze(
        "WITH b AS (SELECT x AS k, amount FROM c) SELECT a.k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k) GROUP BY a.k",
        &catalog(),
    )
    .unwrap();
    let Ok(Model::Grouped { block, .. }) = &a.model else {
        panic!("{:?}", a.model);
    };
    let read: Vec<&str> = block.subs[0]
        .sources
        .iter()
        .map(|s| a.sources[*s].name.as_str())
        .collect();
    assert_eq!(read, ["c"]);
    assert!(
        !block.select.to_string().contains("FROM b"),
        "{}",
        block.select
    );
    // A column list renaming a table's columns is the scope names resolve in:
    // here `k` is not bb's (renamed x), so it is the outer a.k.
    assert_eq!(
        links("SELECT a.k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b AS bb(x, y) WHERE k = a.v) GROUP BY a.k"),
        ["EXISTS every"]
    );
    assert_eq!(
        links("SELECT a.k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b AS bb(x, y) WHERE x = a.v) GROUP BY a.k"),
        ["EXISTS equal x=a.v"]
    );
    // A subquery in FROM holding subqueries, under a grouped query.
    assert!(matches!(
        supported("SELECT s.k, count(*) FROM (SELECT k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k) UNION ALL SELECT k FROM b) s GROUP BY s.k"),
        Model::Grouped { .. }
    ));
    // A DISTINCT query, and a subquery's own correlated subquery.
    let Model::Grouped { block, .. } = supported(
        "SELECT DISTINCT k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND EXISTS (SELECT 1 FROM c WHERE c.x = b.w))",
    ) else {
        panic!("not grouped");
    };
    let body = &block.subs[0].body;
    assert_eq!(
        body.select.selection, None,
        "the correlated conjunct and the nested subquery leave the body's own WHERE"
    );
    assert!(
        matches!(&body.subs[0].link, SubLink::Equal { inner, .. } if inner[0].to_string() == "c.x")
    );
    assert_eq!(block.subs[0].sources.len(), 2, "b and c");
}

#[test]
fn unsupported_constructs_are_named() {
    // The reasons are what users read in fallback_reason and in the 0A000
    // error: pinned word for word.
    let cases = [
        (
            "SELECT a.k FROM a LEFT JOIN b USING (k)",
            "LEFT JOIN with USING or NATURAL (write it with ON)",
        ),
        (
            "SELECT a.k FROM a JOIN b ON a.k = b.k RIGHT JOIN c ON b.w = c.x",
            "RIGHT JOIN whose padded side joins several relations (write that side as a subquery in FROM)",
        ),
        (
            "SELECT a.k FROM a FULL JOIN (b JOIN c ON b.w = c.x) ON a.k = b.k",
            "FULL JOIN whose padded side joins several relations (write that side as a subquery in FROM)",
        ),
        (
            "SELECT a.k FROM a LEFT JOIN b ON a.k = (SELECT max(w) FROM b)",
            "subquery in a JOIN condition",
        ),
        (
            // The alias j hides the inner a, so the outer a would capture
            // the condition once it leaves the join.
            "SELECT j.v, j.w, a.s FROM (a LEFT JOIN b ON a.k = b.k) AS j JOIN a ON a.k = j.v",
            "a parenthesised join with an alias in a FROM with outer joins",
        ),
        (
            "SELECT a1.k FROM a a1 LEFT JOIN b ON a1.k = b.k, a a2, a a3, a a4, a a5, a a6",
            "an outer join in a FROM clause of more than 6 relations",
        ),
        (
            // Delta terms add a multiplicity column to every changed
            // relation, which NATURAL would join on as well.
            "SELECT b.k, c.amount FROM b NATURAL JOIN c",
            "NATURAL JOIN (write it with USING or ON)",
        ),
        (
            "SELECT k FROM a LIMIT 3",
            "LIMIT without ORDER BY (which rows it keeps is unspecified)",
        ),
        (
            "SELECT k FROM a ORDER BY v LIMIT 3",
            "ORDER BY v with LIMIT, which is not a column of the select list",
        ),
        ("SELECT k FROM a ORDER BY k OFFSET 3", "OFFSET without LIMIT"),
        (
            "SELECT k FROM a ORDER BY k FETCH FIRST 3 ROWS WITH TIES",
            "FETCH ... WITH TIES",
        ),
        (
            "SELECT s.k FROM (SELECT k FROM a ORDER BY k LIMIT 3) s",
            "LIMIT / OFFSET / FETCH inside a subquery in FROM or a UNION ALL branch",
        ),
        (
            "SELECT k, count(*), rank() OVER (ORDER BY count(*)) FROM a GROUP BY k",
            "a window function over GROUP BY, aggregates or DISTINCT",
        ),
        (
            "SELECT k, string_agg(s, ',') OVER (PARTITION BY k) FROM a",
            "aggregate string_agg over a window",
        ),
        (
            "SELECT k, sum(v) OVER w FROM a WINDOW w AS (PARTITION BY k)",
            "a SELECT clause outside the supported grammar",
        ),
        (
            "SELECT s.m, count(*) FROM (SELECT k, (SELECT max(w) FROM b) AS m FROM a) s GROUP BY s.m",
            "a subquery in the select list of a subquery in FROM or a UNION ALL branch",
        ),
        (
            "SELECT a.k, count(*) FROM a JOIN b ON a.k = b.k AND EXISTS (SELECT 1 FROM c) GROUP BY a.k",
            "subquery in a JOIN condition",
        ),
        (
            "SELECT k, count(*) FROM a WHERE v = ANY (ARRAY(SELECT w FROM b)) GROUP BY k",
            "a subquery as the argument of ARRAY (such as ARRAY(SELECT ...))",
        ),
        (
            "SELECT (SELECT max(w) FROM b) > v AS above, count(*) FROM a GROUP BY 1",
            "a subquery in a GROUP BY key",
        ),
        (
            "SELECT k, count(*) FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k LIMIT (SELECT count(*) FROM c)) GROUP BY k",
            "an expression other than a constant in the LIMIT, OFFSET or FETCH of a subquery in an expression",
        ),
        (
            "SELECT k, count(*) FROM a WHERE v = (SELECT w FROM b ORDER BY random() LIMIT 1) GROUP BY k",
            "function random, which is not IMMUTABLE (its result can change without a change to the data)",
        ),
        (
            "SELECT k, count(*) FROM a WHERE v IN (SELECT w FROM b UNION SELECT x FROM c) GROUP BY k",
            "a set operation or VALUES as a subquery in an expression",
        ),
        (
            "SELECT k, count(*) FROM a WHERE v > (SELECT max(w) FROM b WHERE random() > 0.5) GROUP BY k",
            "function random, which is not IMMUTABLE (its result can change without a change to the data)",
        ),
        (
            "SELECT random() FROM a",
            "function random, which is not IMMUTABLE (its result can change without a change to the data)",
        ),
        (
            "SELECT now() FROM a",
            "function now, which is not IMMUTABLE (its result can change without a change to the data)",
        ),
        (
            "SELECT k FROM va",
            "source public.va is a view, whose changes cannot be captured",
        ),
        (
            "SELECT DISTINCT ON (k) k, v FROM a ORDER BY k, (SELECT max(w) FROM b WHERE b.k = a.k)",
            "a subquery in the ORDER BY of DISTINCT ON",
        ),
        (
            "SELECT DISTINCT ON (k) k, v FROM a ORDER BY k, count(*) OVER (PARTITION BY v)",
            "a window function in the ORDER BY of DISTINCT ON",
        ),
        (
            "SELECT DISTINCT ON (k) k, v FROM a ORDER BY k, random()",
            "function random, which is not IMMUTABLE (its result can change without a change to the data)",
        ),
        (
            "SELECT k FROM a INTERSECT ALL SELECT k FROM b INTERSECT ALL SELECT k FROM b \
             INTERSECT ALL SELECT k FROM b EXCEPT ALL SELECT k FROM b EXCEPT ALL SELECT x FROM c",
            "more than 4 INTERSECT ALL / EXCEPT ALL in one query",
        ),
        (
            "SELECT DISTINCT k, count(*) FROM a GROUP BY ROLLUP (k)",
            "DISTINCT over GROUPING SETS / ROLLUP / CUBE",
        ),
        (
            "SELECT DISTINCT ON (k) k, v FROM a",
            "DISTINCT ON without ORDER BY, or with LIMIT (which row of each key it keeps is not determined)",
        ),
        (
            "SELECT DISTINCT ON (k) k, v FROM a ORDER BY k, v LIMIT 3",
            "DISTINCT ON without ORDER BY, or with LIMIT (which row of each key it keeps is not determined)",
        ),
        (
            "SELECT s.k FROM (SELECT DISTINCT ON (k) k, v FROM a ORDER BY k, v) s",
            "DISTINCT ON inside a subquery or a set operation",
        ),
        (
            "SELECT DISTINCT ON (k) k, count(*) FROM a GROUP BY k ORDER BY k",
            "DISTINCT ON over GROUP BY or aggregates",
        ),
        (
            "SELECT s.r FROM (SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v) AS r FROM a) s",
            "window function row_number in a subquery (its value for rows tied in its ORDER BY depends on the order they are read; rank, dense_rank and aggregates without a frame clause do not)",
        ),
        (
            "SELECT s.t FROM (SELECT k, sum(v) OVER (PARTITION BY k ORDER BY v ROWS 1 PRECEDING) AS t FROM a) s",
            "window function sum in a subquery (its value for rows tied in its ORDER BY depends on the order they are read; rank, dense_rank and aggregates without a frame clause do not)",
        ),
        (
            "SELECT k, string_agg(s, ',') FROM a GROUP BY k",
            "aggregate string_agg",
        ),
        (
            "WITH RECURSIVE r AS (SELECT 1 AS n) SELECT n FROM r",
            "WITH RECURSIVE",
        ),
        ("SELECT 1", "a query without a FROM relation"),
        ("SELECT k FROM a FOR UPDATE", "FOR UPDATE / FOR SHARE"),
        (
            "SELECT k FROM mv",
            "source public.mv is a materialized view, whose changes cannot be captured",
        ),
        (
            "SELECT k FROM ft",
            "source public.ft is a foreign table, whose changes cannot be captured",
        ),
        (
            "SELECT k FROM ul",
            "source public.ul, which cannot be captured exactly: it is unlogged",
        ),
        (
            "SELECT k FROM ONLY par",
            "FROM ONLY par (the rows of one table of an inheritance tree)",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(reason(sql), expected, "{sql}");
    }
}

#[test]
fn subqueries_that_group_are_kept_by_keys_in_the_enclosing_query() {
    use pg_trickle_core::analyze::{Occ, Rel};
    // Grouped, DISTINCT and windowed subqueries in FROM, in a CTE and in
    // UNION ALL branches: the enclosing query is kept by keys.
    for sql in [
        "SELECT s.k FROM (SELECT k, count(*) FROM a GROUP BY k) s",
        "SELECT n, count(*) FROM (SELECT k, count(v) AS n FROM a GROUP BY k) s GROUP BY n",
        "WITH t AS (SELECT k, sum(v) AS total FROM a GROUP BY k) \
         SELECT b.w, t.total FROM b JOIN t ON t.k = b.k WHERE t.total = (SELECT max(total) FROM t)",
        "SELECT s.r FROM (SELECT k, rank() OVER (PARTITION BY k ORDER BY v) AS r FROM a) s",
        "SELECT s.k, s.n FROM (SELECT k, row_number() OVER (PARTITION BY k) AS n FROM a) s",
        "SELECT d.k FROM (SELECT DISTINCT k FROM a) d JOIN b ON b.k = d.k",
        "SELECT k, count(*) FROM a GROUP BY k UNION ALL SELECT k, 1 FROM b",
        "SELECT k FROM (SELECT k, count(*) FROM a GROUP BY k) s UNION SELECT k FROM b",
        "SELECT s.c FROM (SELECT count(*) AS c FROM a) s",
        // Set operations at any depth, with and without ALL.
        "SELECT k FROM a UNION SELECT k FROM b UNION ALL SELECT x FROM c",
        "SELECT k FROM a INTERSECT ALL SELECT k FROM b",
        "SELECT k FROM a EXCEPT ALL SELECT k FROM b",
        "SELECT k FROM a UNION SELECT k FROM b EXCEPT SELECT x FROM c",
        "SELECT s.k FROM (SELECT k FROM a INTERSECT SELECT k FROM b) s JOIN b ON b.k = s.k",
    ] {
        let Model::Grouped { block, .. } = supported(sql) else {
            panic!("{sql}: not kept by keys");
        };
        let keyed = block.occs.iter().any(|o| match o {
            Occ::Sub { rel, .. } => matches!(**rel, Rel::Keyed(_)) || rel.reached_only(),
            Occ::Source { .. } | Occ::Invariant => false,
        });
        assert!(keyed, "{sql}: no keyed subquery");
    }
    // The old state replaces every table the subquery names, at any depth.
    let Model::Grouped { block, .. } = supported(
        "SELECT n, count(*) FROM (SELECT a.k, count(b.w) AS n FROM a LEFT JOIN b ON b.k = a.k \
         WHERE EXISTS (SELECT 1 FROM c WHERE c.x = a.k) GROUP BY a.k) s GROUP BY n",
    ) else {
        panic!("not grouped");
    };
    let Occ::Sub { rel, .. } = &block.occs[0] else {
        panic!("not a subquery");
    };
    let Rel::Keyed(keyed) = &**rel else {
        panic!("not keyed");
    };
    let names: Vec<&str> = keyed.tables.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn distinct_on_keys_resolve_output_names_first() {
    // As in ORDER BY: a bare name that is an output's name is that output.
    let Model::Grouped { keys, .. } =
        supported("SELECT DISTINCT ON (s) lower(s) AS s, v FROM a ORDER BY s, v DESC")
    else {
        panic!("not kept by keys");
    };
    assert_eq!(keys[0].to_string(), "lower(s)");
    let Model::Grouped { keys, .. } = supported("SELECT DISTINCT ON (2) k, v FROM a ORDER BY v, k")
    else {
        panic!("not kept by keys");
    };
    assert_eq!(keys[0].to_string(), "v");
}

#[test]
fn values_and_set_returning_functions_are_read_as_written() {
    for sql in [
        "SELECT a.k, v.label FROM a JOIN (VALUES (1, 'one'), (2, 'two')) AS v(k, label) ON v.k = a.k",
        "SELECT a.k, g FROM a, generate_series(1, a.v) g",
        "SELECT a.k, u.x, u.n FROM a CROSS JOIN LATERAL unnest(ARRAY[a.k, a.v]) WITH ORDINALITY AS u(x, n)",
        "SELECT g, count(*) FROM a, generate_series(1, 3) g GROUP BY g",
        "VALUES (1, 'a'), (2, 'b')",
        // Grouping sets: one grouped query per set, as a UNION ALL.
        "SELECT k, s, count(*), sum(v) FROM a GROUP BY ROLLUP (k, s)",
        "SELECT k, s, grouping(k, s) AS g, count(*) FROM a GROUP BY CUBE (k, s)",
        "SELECT k, s, count(*) FROM a GROUP BY GROUPING SETS ((k), (s), ())",
        "SELECT k, count(*) FROM a GROUP BY k, ROLLUP (s) HAVING count(*) > 1",
        "SELECT k, count(*) FROM a GROUP BY GROUPING SETS ((k), ROLLUP (s))",
        // DISTINCT ON, kept by its keys with the query's ORDER BY.
        "SELECT DISTINCT ON (k) k, v, s FROM a ORDER BY k, v DESC, s",
        "SELECT DISTINCT ON (a.k) a.k, b.w FROM a JOIN b ON b.k = a.k WHERE a.v > 0 ORDER BY a.k, b.w",
        "SELECT column1 FROM (VALUES (1), (2)) AS v",
    ] {
        supported(sql);
    }
    let cases = [
        (
            "SELECT a.k, j.key FROM a, json_each('{}') j",
            "table function json_each, which returns several columns (give it a column list only if it returns one)",
        ),
        (
            "SELECT a.k, g FROM a, generate_series(1, 3) g WHERE EXISTS (SELECT 1 FROM b WHERE b.k = g)",
            "VALUES or a table function in a FROM whose query holds subqueries in expressions",
        ),
        (
            "SELECT a.k, x FROM a, unnest(ARRAY[a.k], ARRAY[a.v]) x",
            "table function unnest, which returns several columns (give it a column list only if it returns one)",
        ),
        (
            "SELECT a.k, g FROM a, generate_series(1, (random() * 3)::int) g",
            "function random, which is not IMMUTABLE (its result can change without a change to the data)",
        ),
        (
            "SELECT a.k, g FROM a LEFT JOIN generate_series(1, 3) g ON g = a.k",
            "VALUES or a table function in a FROM with an outer join",
        ),
        (
            "SELECT k FROM a WHERE EXISTS (SELECT 1 FROM generate_series(1, 3) g WHERE g = a.k)",
            "VALUES or a table function in the FROM of a subquery in an expression",
        ),
        (
            "SELECT v.x FROM (VALUES ((SELECT max(k) FROM b))) AS v(x)",
            "a subquery inside VALUES or a table function's arguments in FROM",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(reason(sql), expected, "{sql}");
    }
}

#[test]
fn an_inheritance_parent_is_maintained_with_its_children() {
    assert!(matches!(supported("SELECT k FROM par"), Model::Linear(_)));
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
    // LIMIT 0 under a LEFT JOIN to one row: the types, and no row read.
    let input = "(SELECT k AS __pgt_k1, s AS __pgt_k2 FROM a WHERE v > 1 LIMIT 0)";
    assert_eq!(
        probe.types_sql(),
        format!(
            "SELECT pg_catalog.pg_typeof(q.__pgt_k1)::pg_catalog.oid::pg_catalog.text, \
             pg_catalog.pg_typeof(q.__pgt_k2)::pg_catalog.oid::pg_catalog.text \
             FROM (VALUES (1)) AS __pgt_one(x) LEFT JOIN {input} AS q ON true"
        )
    );
    assert_eq!(
        probe.collations_sql(&[1]),
        format!(
            "SELECT pg_catalog.pg_collation_for(q.__pgt_k2)::pg_catalog.regcollation::pg_catalog.oid::pg_catalog.text \
             FROM (VALUES (1)) AS __pgt_one(x) LEFT JOIN {input} AS q ON true"
        )
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
    let a = analyze("SELECT a.k FROM a LEFT JOIN b USING (k)", &catalog()).unwrap();
    assert!(!a.tree.diff_supported);
    let a = analyze("SELECT k, sum(v) FROM a GROUP BY k", &catalog()).unwrap();
    let ops = |n: &pg_trickle_core::OpNode| (n.op.clone(), n.detail.clone());
    assert_eq!(ops(&a.tree), ("Project".to_string(), "k, sum".to_string()));
    let agg = &a.tree.children[0];
    assert_eq!(
        ops(agg),
        (
            "Aggregate".to_string(),
            "keys: [k] aggregates: [sum(v)]".to_string()
        )
    );
    assert_eq!(
        ops(&agg.children[0]),
        ("Scan".to_string(), "public.a".to_string())
    );
    assert!(a.tree.diff_supported && agg.diff_supported);
}

fn plan(sql: &str, cols: &[&str]) -> pg_trickle_core::RefreshPlan {
    let a = analyze(sql, &catalog()).unwrap();
    plan_refresh(&a, sql, "public.st", &columns(cols))
}

// The SQL of each delta rule is pinned by the golden files
// (tests/delta_golden.rs); these tests check what a plan says about itself.

fn specialised(sql: &str, cols: &[&str], changed: &[usize]) -> pg_trickle_core::RefreshPlan {
    let a = analyze(sql, &catalog()).unwrap();
    plan_refresh_for_changes(&a, sql, "public.st", &columns(cols), changed)
}

#[test]
fn a_specialised_plan_guards_exactly_the_sources_it_assumes_unchanged() {
    let sql = "SELECT a.k, b.w FROM a JOIN b ON a.k = b.k";
    let general = plan(sql, &["k", "w"]);
    assert_eq!(general.diff_sources, [0, 1]);
    assert!(general.guarded_sources.is_empty());
    for (changed, guarded) in [
        (vec![], vec![0, 1]),
        (vec![0], vec![1]),
        (vec![1], vec![0]),
        (vec![0, 1], vec![]),
    ] {
        let p = specialised(sql, &["k", "w"], &changed);
        assert_eq!(p.guarded_sources, guarded, "changed {changed:?}");
        // Parameters keep the general plan's numbering.
        assert_eq!(p.diff_sources, general.diff_sources, "changed {changed:?}");
    }
    let grouped = specialised(
        "SELECT k, count(*) AS n FROM a GROUP BY k",
        &["k", "n"],
        &[],
    );
    assert_eq!(grouped.guarded_sources, [0]);
    let self_join = plan("SELECT x.k FROM a x JOIN a y ON x.k = y.k", &["k"]);
    assert_eq!(
        self_join.diff_sources,
        [0],
        "one buffer for both occurrences"
    );
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

    let full_only = plan("SELECT k, random() AS r FROM a", &["k", "r"]);
    let names: Vec<&str> = full_only.phases.iter().map(|p| p.name).collect();
    assert_eq!(names, ["populate", "full_recompute"]);
}

#[test]
fn ordered_aggregates_are_recomputed_by_group_when_their_order_by_fixes_them() {
    for sql in [
        "SELECT k, string_agg(s, ',' ORDER BY s) FROM a GROUP BY k",
        "SELECT k, array_agg(v ORDER BY v DESC NULLS LAST) FILTER (WHERE v > 0) FROM a GROUP BY k",
        "SELECT k, string_agg(DISTINCT s, ';' ORDER BY s), count(*) FROM a GROUP BY k HAVING count(*) > 1",
        "SELECT string_agg(s || 'x', ',' ORDER BY v, s || 'x') FROM a",
        "SELECT k, array_agg(s ORDER BY v, s) FROM a GROUP BY k",
        "SELECT k, string_agg(s, ','::text ORDER BY s) FROM a GROUP BY k HAVING array_agg(v ORDER BY v) <> '{}'",
    ] {
        assert!(
            matches!(supported(sql), Model::Grouped { .. } | Model::Linear(_)),
            "{sql}"
        );
    }
    for (sql, want) in [
        (
            "SELECT k, array_agg(s ORDER BY v) FROM a GROUP BY k",
            "ordered aggregate array_agg whose ORDER BY leaves the order of rows with equal keys and different s open (order by every argument, for example ORDER BY ..., s)",
        ),
        (
            "SELECT k, string_agg(s, ',') FROM a GROUP BY k",
            "aggregate string_agg",
        ),
        (
            "SELECT k, string_agg(s, upper(s) ORDER BY lower(s)) FROM a GROUP BY k",
            "ordered aggregate string_agg whose ORDER BY leaves the order of rows with equal keys and different s open (order by every argument, for example ORDER BY ..., s)",
        ),
        (
            "SELECT x.k, x.l FROM (SELECT k, string_agg(s, ',' ORDER BY s) AS l FROM a GROUP BY k) x",
            "ordered aggregate string_agg inside a subquery, a CTE or a set-operation branch (only the query's own groups are recomputed as written)",
        ),
        (
            "SELECT k, string_agg(s, ',' ORDER BY s) FROM a GROUP BY k UNION ALL SELECT k, s FROM b",
            "ordered aggregate string_agg inside a subquery, a CTE or a set-operation branch (only the query's own groups are recomputed as written)",
        ),
        (
            "SELECT k, string_agg(s, ',' ORDER BY s) FROM a GROUP BY k UNION SELECT k, 'x' FROM b",
            "ordered aggregate string_agg inside a subquery, a CTE or a set-operation branch (only the query's own groups are recomputed as written)",
        ),
        (
            // A subquery in an expression of a subquery kept by keys is
            // recomputed over old states too.
            "SELECT x.k, x.l FROM (SELECT b.k, (SELECT string_agg(a.s, ',' ORDER BY a.s) FROM a \
             WHERE a.k = b.k) AS l FROM b GROUP BY b.k) x",
            "ordered aggregate string_agg inside a subquery, a CTE or a set-operation branch (only the query's own groups are recomputed as written)",
        ),
        (
            "SELECT b.k, (SELECT string_agg(a.s, ',' ORDER BY a.s) FROM a WHERE a.k = b.k) FROM b",
            "ordered aggregate string_agg inside a subquery, a CTE or a set-operation branch (only the query's own groups are recomputed as written)",
        ),
        (
            "SELECT k, string_agg(s, ',' ORDER BY s) FROM a GROUP BY ROLLUP (k)",
            "ordered aggregate string_agg with GROUPING SETS / ROLLUP / CUBE",
        ),
    ] {
        assert!(reason(sql).contains(want), "{sql}: {}", reason(sql));
    }
}
