//! Golden files of the delta rules, without a server: for each rule family
//! and shape, every statement the core generates, general and specialised
//! to every subset of changed sources, checked in under `tests/golden/`.
//! A change to generated SQL shows here as a diff to review with the
//! change; `PGT_BLESS=1 cargo test -p pg_trickle_core --test delta_golden`
//! rewrites the files in place. (`harness`'s `e2e_generated_sql` does the
//! same through a real server for the corpus and TPC-H.)

mod common;

use std::path::PathBuf;

use common::{catalog, columns};
use pg_trickle_core::analyze::analyze;
use pg_trickle_core::catalog::{ColumnIdentity, OutputColumn};
use pg_trickle_core::delta::algebraic::ArgType;
use pg_trickle_core::delta::{plan_refresh, plan_refresh_for_changes};

/// (file name: the rule family and shape; defining query; output columns).
const SHAPES: &[(&str, &str, &[&str])] = &[
    (
        "linear_filter_project",
        "SELECT k, v + 1 AS w FROM a WHERE v > 0",
        &["k", "w"],
    ),
    (
        "linear_inner_join",
        "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k",
        &["k", "v", "w"],
    ),
    (
        "linear_three_way_join",
        "SELECT a.k, b.w, c.amount FROM a JOIN b ON a.k = b.k JOIN c ON c.x = a.v",
        &["k", "w", "amount"],
    ),
    (
        "linear_self_join",
        "SELECT x.k, y.v FROM a x JOIN a y ON x.k = y.v",
        &["k", "v"],
    ),
    (
        // More changed occurrences than inclusion-exclusion combines: the
        // specialised plans telescope over the changed ones.
        "linear_four_way_self_join",
        "SELECT x.k FROM a x, a y, a z, a w WHERE x.k = y.k AND y.k = z.k AND z.k = w.k",
        &["k"],
    ),
    (
        "linear_union_all",
        "SELECT k, v FROM a UNION ALL SELECT k, w FROM b",
        &["k", "v"],
    ),
    (
        "linear_subquery_in_from",
        "SELECT s.k, b.w FROM (SELECT k FROM a WHERE v > 0) s JOIN b ON s.k = b.k",
        &["k", "w"],
    ),
    (
        "grouped_ordered_aggregate",
        "SELECT k, string_agg(s, ',' ORDER BY s DESC) AS names FROM a GROUP BY k",
        &["k", "names"],
    ),
    (
        "grouped_one_key",
        "SELECT k, count(*) AS n, sum(v) AS total FROM a GROUP BY k",
        &["k", "n", "total"],
    ),
    (
        "grouped_two_keys",
        "SELECT k, s, count(*) AS n FROM a GROUP BY k, s",
        &["k", "s", "n"],
    ),
    (
        "grouped_scalar_aggregate",
        "SELECT count(*) AS n, max(v) AS hi FROM a",
        &["n", "hi"],
    ),
    ("grouped_distinct", "SELECT DISTINCT k FROM a", &["k"]),
    (
        "grouped_over_join",
        "SELECT a.k, sum(b.w) AS total FROM a JOIN b ON a.k = b.k GROUP BY a.k",
        &["k", "total"],
    ),
    (
        // A correlated subquery: b's changes reach the groups of the rows
        // of a whose k they name.
        "grouped_exists_correlated",
        "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w > 0) GROUP BY k",
        &["k", "n"],
    ),
    (
        // An IN over a grouped subquery: the reached groups are
        // recomputed with the IN correlated (its item equal to the tested
        // value), reading one group of the subquery per row.
        "grouped_in_over_groups",
        "SELECT a.k, count(*) AS n FROM a WHERE a.k IN \
         (SELECT b.k FROM b GROUP BY b.k HAVING sum(b.w) > 2) GROUP BY a.k",
        &["k", "n"],
    ),
    (
        // The recomputation probes the key that leads a primary key (c.x),
        // not the first.
        "grouped_probe_by_primary_key",
        "SELECT c.amount, c.x, count(*) AS n FROM c JOIN b ON b.w = c.x GROUP BY c.amount, c.x",
        &["amount", "x", "n"],
    ),
    (
        // NOT IN without correlation: NULLs and emptiness reach further.
        "grouped_not_in",
        "SELECT k, count(*) AS n FROM a WHERE v NOT IN (SELECT w FROM b) GROUP BY k",
        &["k", "n"],
    ),
    (
        // A subquery in FROM whose rows a subquery filters: what its
        // changes may reach stands in for its delta.
        "grouped_over_subquery_with_exists",
        "SELECT s.k, count(*) AS n FROM (SELECT k, v FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)) s GROUP BY s.k",
        &["k", "n"],
    ),
    (
        // No grouping: rows are kept by their values, as a bag, and the
        // values a change reaches are recomputed.
        "rows_filtered_by_in",
        "SELECT k, v FROM a WHERE k IN (SELECT k FROM b WHERE w > 0)",
        &["k", "v"],
    ),
    (
        // An outer join without grouping: kept by its rows' values; a
        // change to b reaches a's rows as matches, or as rows whose
        // padding may have come or gone.
        "rows_of_a_left_join",
        "SELECT a.k, b.w FROM a LEFT JOIN b ON a.k = b.k",
        &["k", "w"],
    ),
    (
        // A FULL join under grouping: each side's delta pads the other's rows.
        "grouped_over_full_join",
        "SELECT a.k, count(b.w) AS n FROM a FULL JOIN b ON a.k = b.k AND b.w > 0 GROUP BY a.k",
        &["k", "n"],
    ),
    (
        // EXCEPT: groups of both sides' rows tagged with their side.
        "set_operation_except",
        "SELECT k FROM a EXCEPT SELECT k FROM b",
        &["k"],
    ),
    (
        // Window functions: the partitions the changes reach are recomputed.
        "rows_by_window_partition",
        "SELECT k, v, rank() OVER (PARTITION BY k ORDER BY v) AS r FROM a",
        &["k", "v", "r"],
    ),
    (
        // Top-k over groups: the recomputed groups merge with the stored
        // rows of the others; too few certain rows recompute the query.
        "top_k_of_groups",
        "SELECT k, sum(v) AS total FROM a GROUP BY k ORDER BY total DESC, k LIMIT 3",
        &["k", "total"],
    ),
    (
        // Top-k of rows with an OFFSET: any reached change recomputes it.
        "top_k_of_rows_with_offset",
        "SELECT k, v FROM a ORDER BY v DESC NULLS LAST LIMIT 5 OFFSET 1",
        &["k", "v"],
    ),
    (
        // An uncorrelated scalar subquery: any change to c revisits every group.
        "grouped_scalar_subquery_uncorrelated",
        "SELECT k, sum(v) AS total FROM a GROUP BY k HAVING sum(v) > (SELECT max(amount) FROM c)",
        &["k", "total"],
    ),
    (
        // TPC-H Q13's shape: groups keyed by an aggregate of a grouped
        // subquery, whose reached keys are recomputed new and old.
        "grouped_by_an_aggregate_of_a_subquery",
        "SELECT n, count(*) AS c FROM (SELECT a.k, count(b.w) AS n FROM a LEFT JOIN b ON b.k = a.k GROUP BY a.k) s GROUP BY n",
        &["n", "c"],
    ),
    (
        // DISTINCT ON: kept by its keys, each recomputed with ORDER BY.
        "first_row_per_key",
        "SELECT DISTINCT ON (k) k, v FROM a ORDER BY k, v DESC",
        &["k", "v"],
    ),
];

/// Shapes kept algebraically (count, sum, avg over support columns), with
/// the type class of each aggregate argument the extension would probe.
const ALGEBRAIC_SHAPES: &[(&str, &str, &[&str], &[ArgType])] = &[
    (
        "algebraic_grouped",
        "SELECT k, count(*) AS n, sum(v) AS total, avg(v) AS mean FROM a GROUP BY k",
        &["k", "n", "total", "mean"],
        &[ArgType::Numeric],
    ),
    (
        "algebraic_scalar_over_join",
        "SELECT 100.00 * sum(a.v) / sum(b.w) AS ratio, count(b.w) AS c FROM a JOIN b ON a.k = b.k",
        &["ratio", "c"],
        &[ArgType::Numeric, ArgType::Int],
    ),
    (
        // Variances from sums of squares; a standard deviation rounded
        // as PostgreSQL rounds it.
        "algebraic_variance",
        "SELECT a.k, var_samp(a.v) AS vs, stddev_pop(a.v) AS sp, variance(b.w) AS vw \
         FROM a JOIN b ON b.k = a.k GROUP BY a.k",
        &["k", "vs", "sp", "vw"],
        &[ArgType::Numeric, ArgType::Int],
    ),
    (
        // EXISTS and NOT EXISTS filters: changed rows pass filtered as
        // now, reached rows count in or out where a filter flipped.
        "algebraic_over_filters",
        "SELECT k, count(*) AS n, sum(v) AS total FROM a WHERE v > 0 \
         AND EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w < a.v) \
         AND NOT EXISTS (SELECT 1 FROM c WHERE c.x = a.v) GROUP BY k",
        &["k", "n", "total"],
        &[ArgType::Numeric],
    ),
    (
        // A comparison with a correlated aggregate (TPC-H Q17): its old
        // value is the aggregate over the old rows, rebuilt from the
        // signed old state by the text of its argument.
        "algebraic_over_aggregate_filter",
        "SELECT sum(v) AS total FROM a WHERE v < (SELECT 0.2 * avg(b.w) FROM b WHERE b.k = a.k)",
        &["total"],
        &[ArgType::Numeric],
    ),
    (
        // TPC-H Q13's shape: the grouped subquery's delta is its rows of
        // the reached keys, new ones counted in and old ones out.
        "algebraic_over_a_grouped_subquery",
        "SELECT n, count(*) AS c, sum(t) AS total FROM (SELECT a.k, count(b.w) AS n, sum(a.v) AS t \
         FROM a LEFT JOIN b ON b.k = a.k GROUP BY a.k) s GROUP BY n",
        &["n", "c", "total"],
        &[ArgType::Numeric],
    ),
    (
        // min and max kept in their output columns; a group whose extreme
        // may have left is recomputed.
        "algebraic_extremes",
        "SELECT k, min(v) AS lo, max(v) AS hi, count(*) AS n FROM a GROUP BY k",
        &["k", "lo", "hi", "n"],
        &[ArgType::Ordered],
    ),
];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// A shape whose columns have no hash function: a row's identity takes
/// them by their binary send form or their text.
const IDENTITY_SHAPE: (&str, &str) = ("linear_identity_by_send_and_text", "SELECT k, v, s FROM a");

fn identity_columns() -> Vec<OutputColumn> {
    let column = |name: &str, type_sql: &str, identity| OutputColumn {
        name: name.into(),
        type_sql: type_sql.into(),
        identity,
        nondeterministic: false,
    };
    vec![
        column("k", "integer", ColumnIdentity::Hash),
        column(
            "v",
            "point",
            ColumnIdentity::Send("pg_catalog.point_send".into()),
        ),
        column("s", "json", ColumnIdentity::Text),
    ]
}

/// Every statement of one shape, as the golden file holds it.
fn render(query: &str, columns: &[OutputColumn], arg_types: Option<&[ArgType]>) -> String {
    let mut analysis = analyze(query, &catalog()).expect("analysis");
    // As the extension marks keys it found not to be arrays (the
    // catalog's columns are none).
    pg_trickle_core::probes::for_each_keyed_mut(&mut analysis, &mut |keyed| {
        keyed.key_arrays = vec![false; keyed.keys.len()];
    });
    // As the extension marks correlating equalities of same-typed sides.
    pg_trickle_core::probes::for_each_filter_block_mut(&mut analysis, &mut |block| {
        for sub in &mut block.subs {
            sub.same_link_types = Some(true);
        }
    });
    if let Some(types) = arg_types {
        analysis.aggregate_arg_types = types.to_vec();
        // As the extension marks a subquery sum's numeric argument.
        if let Ok(pg_trickle_core::analyze::Model::Grouped { block, .. }) = &mut analysis.model {
            for sub in &mut block.subs {
                sub.exact_sums = Some(true);
            }
        }
        analysis.support_stored = true;
        assert!(
            pg_trickle_core::delta::algebraic::support_columns(&analysis).is_some(),
            "{query} has no algebraic form"
        );
    }
    let mut out = format!("-- query: {query}\n");
    let general = plan_refresh(&analysis, query, "public.st", columns);
    for p in &general.phases {
        out.push_str(&format!("\n-- general, phase {}\n{};\n", p.name, p.sql));
    }
    let n = analysis.sources.len();
    for mask in 0u32..(1 << n) {
        let changed: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
        let names: Vec<&str> = changed
            .iter()
            .map(|i| analysis.sources[*i].name.as_str())
            .collect();
        let plan = plan_refresh_for_changes(&analysis, query, "public.st", columns, &changed);
        if let Some(diff) = &plan.diff_sql {
            out.push_str(&format!(
                "\n-- specialised to changes in [{}], differential statement\n{diff};\n",
                names.join(", ")
            ));
        }
    }
    out
}

#[test]
fn delta_rules_generate_the_golden_sql() {
    let bless = std::env::var("PGT_BLESS").as_deref() == Ok("1");
    let mut differ = Vec::new();
    let shapes = SHAPES
        .iter()
        .map(|(file, query, cols)| (*file, *query, columns(cols), None))
        .chain([(IDENTITY_SHAPE.0, IDENTITY_SHAPE.1, identity_columns(), None)])
        .chain(
            ALGEBRAIC_SHAPES
                .iter()
                .map(|(file, query, cols, types)| (*file, *query, columns(cols), Some(*types))),
        );
    for (file, query, cols, types) in shapes {
        let text = render(query, &cols, types);
        let path = golden_dir().join(format!("{file}.sql"));
        if bless {
            std::fs::create_dir_all(golden_dir()).expect("golden dir");
            std::fs::write(&path, &text).expect("write golden");
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        if golden != text {
            let first = golden
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| golden.lines().count().min(text.lines().count()));
            differ.push(format!(
                "{} (first difference at line {}):\n  golden: {}\n  now:    {}",
                path.display(),
                first + 1,
                golden.lines().nth(first).unwrap_or("<end>"),
                text.lines().nth(first).unwrap_or("<end>")
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "generated SQL differs from its golden file; if the change is meant, rewrite them with \
         PGT_BLESS=1 cargo test -p pg_trickle_core --test delta_golden and review the diff:\n{}",
        differ.join("\n")
    );
}
