//! The plan fingerprint a refresh compares before it specialises: equal
//! for equal inputs, different when any input of the generated SQL moves.

mod common;

use common::{catalog, columns};
use pg_trickle_core::analyze::analyze;
use pg_trickle_core::delta::plan_fingerprint;

const JOIN: &str = "SELECT a.k, b.w FROM a JOIN b ON a.k = b.k";

fn print(query: &str, storage: &str, cols: &[&str]) -> String {
    let analysis = analyze(query, &catalog()).expect("analyses");
    plan_fingerprint(&analysis, query, storage, &columns(cols))
}

#[test]
fn analysing_the_same_query_again_gives_the_same_fingerprint() {
    assert_eq!(
        print(JOIN, "public.j", &["k", "w"]),
        print(JOIN, "public.j", &["k", "w"])
    );
}

#[test]
fn every_input_of_the_generated_sql_moves_the_fingerprint() {
    let base = print(JOIN, "public.j", &["k", "w"]);
    let other_storage = print(JOIN, "j", &["k", "w"]);
    let other_columns = print(JOIN, "public.j", &["k", "x"]);
    let other_query = print(
        "SELECT a.k, b.w FROM a JOIN b ON a.k = b.w",
        "public.j",
        &["k", "w"],
    );
    for (what, print) in [
        ("storage", other_storage),
        ("columns", other_columns),
        ("query", other_query),
    ] {
        assert_ne!(base, print, "a different {what} kept the fingerprint");
    }
    // A source whose columns changed (the catalog as analysis saw it).
    let mut changed = catalog();
    changed.insert(
        "b",
        common::table(
            2,
            "b",
            pg_trickle_core::catalog::SourceKind::Table,
            &["k", "w", "z"],
        ),
    );
    let analysis = analyze(JOIN, &changed).expect("analyses");
    assert_ne!(
        base,
        plan_fingerprint(&analysis, JOIN, "public.j", &columns(&["k", "w"])),
        "a source with another column list kept the fingerprint"
    );
}
