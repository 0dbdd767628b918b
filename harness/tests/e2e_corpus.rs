//! The workload corpus under the DIFF-vs-FULL oracle, one test per
//! workload, against a real cluster; plus the corpus's operator coverage.
//! A failing test prints the shrunk failure, its replay file and the
//! commands that reproduce it. The workloads live in `oracles::corpus`.

use std::collections::BTreeSet;

use harness::testkit::{check_workload, database};
use oracles::corpus::{entries, REQUIRED_COVERAGE};
use oracles::diff_vs_full::run;

macro_rules! corpus_tests {
    ($($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                check_workload(stringify!($name));
            }
        )*

        /// The same workloads with every source that can be captured from
        /// the WAL switched to it after creation.
        mod wal {
            $(
                #[test]
                fn $name() {
                    harness::testkit::check_workload_captured(
                        stringify!($name),
                        oracles::workload::Capture::Wal,
                    );
                }
            )*
        }

        /// Every corpus workload has a test above, and nothing else does.
        #[test]
        fn every_corpus_workload_has_a_test() {
            let tested: BTreeSet<&str> = [$(stringify!($name)),*].into_iter().collect();
            let corpus: BTreeSet<&str> = entries().iter().map(|e| e.name).collect();
            assert_eq!(tested, corpus);
        }
    };
}

corpus_tests! {
    select_star,
    filter_project_expressions,
    filter_null_logic,
    keyed_source,
    inner_equi_join,
    inner_non_equi_join,
    join_on_expression_and_filters,
    three_way_comma_join,
    self_join,
    group_by_aggregates,
    group_by_having_and_expressions,
    having_on_min_max,
    numeric_sum_and_avg,
    scalar_aggregate,
    boolean_aggregates,
    group_by_text_and_int,
    distinct,
    distinct_over_join,
    union_all,
    union_all_same_source_twice,
    subquery_in_from,
    cte_then_aggregate,
    subquery_joined_with_table,
    aggregate_over_join,
    aggregate_over_three_way_join,
    stream_table_over_stream_table,
    three_level_stream_tables,
    full_mode_window_function,
    null_join_keys,
    null_group_keys,
    duplicates_delete_one_of_many,
    groups_empty_and_refill,
    update_moves_rows_between_groups,
    update_changes_join_key,
    delete_min_max_with_ties,
    several_changes_to_one_row,
    insert_then_delete_nets_to_nothing,
    multi_row_statements,
    rolled_back_transactions,
    truncate_source,
    truncate_under_stream_table_chain,
    sum_over_only_nulls_is_null,
    scalar_aggregate_over_empty_table,
    join_both_sides_change_in_one_step,
    self_join_row_changes,
    distinct_copies_appear_and_disappear,
    numeric_avg_scale,
    union_all_branches_change_together,
    stream_table_chain_with_netting,
    union_all_equal_values_with_different_scale,
    exists_and_not_exists,
    in_and_not_in_with_nulls,
    scalar_subqueries,
    nested_and_self_subqueries,
    subquery_in_from_with_subqueries,
    rows_filtered_by_subqueries,
    filters_kept_algebraically,
    aggregate_filters_kept_algebraically,
    filters_in_from_and_uncorrelated,
    bags_by_plain_outputs,
    left_join_rows,
    right_and_full_joins,
    grouped_outer_joins,
    top_k_rows,
    top_k_groups,
    window_functions,
    set_operations,
    grouped_subqueries,
    grouped_subqueries_keyed,
    aggregates_over_grouped_subqueries,
    set_operations_all_and_nested,
    values_and_table_functions,
    distinct_on,
    grouping_sets,
    ordered_aggregates,
    algebraic_aggregates,
    hold_then_catch_up,
    discard_then_reinitialise,
    snapshot_then_restore,
    partitioned_source,
    inheritance_source,
    columns_without_hash,
    replica_role_writes,
    late_commit,
    long_transaction,
    refresh_inside_transaction,
    writers_during_refresh,
    rollback_after_refresh_looked,
    aborted_subtransactions,
    two_phase_commit,
    isolation_levels,
    readers_at_different_frontiers,
    scheduler_racing_manual_refresh,
    scheduler_with_writers,
}

/// The stream tables of the whole corpus, as the engine reports their
/// operator trees, cover every operator and aggregate it maintains.
#[test]
fn corpus_covers_every_differential_operator() {
    let mut seen = BTreeSet::new();
    for e in entries() {
        let w = (e.build)(e.seed, 0).without_steps();
        let mut db = database("coverage");
        let r = run(&mut db, &w);
        assert!(r.passed(), "{}: {:?}", e.name, r.failure());
        seen.extend(r.operators);
    }
    let missing: Vec<&&str> = REQUIRED_COVERAGE
        .iter()
        .filter(|op| !seen.contains(**op))
        .collect();
    assert!(
        missing.is_empty(),
        "not covered: {missing:?}; seen {seen:?}"
    );
}
