//! What the core's integration tests share: a catalog of small tables (and
//! of the relation kinds analysis treats specially) and output columns.
#![allow(dead_code)] // each test file uses what it needs

use pg_trickle_core::catalog::{
    Catalog, FunctionFacts, ImageEquality, OutputColumn, SourceKind, SourceTable,
};

pub fn table(oid: u32, name: &str, kind: SourceKind, cols: &[&str]) -> SourceTable {
    SourceTable {
        oid,
        schema: "public".into(),
        name: name.into(),
        kind,
        columns: cols.iter().map(|c| c.to_string()).collect(),
        capture_problem: None,
        capture: Default::default(),
        key: Vec::new(),
        image_equality: Vec::new(),
    }
}

/// Tables a, b, c (and a view, a materialized view, a foreign table, an
/// unlogged table and an inheritance parent) with a few functions.
pub fn catalog() -> Catalog {
    let mut c = Catalog::new();
    c.insert("a", table(1, "a", SourceKind::Table, &["k", "v", "s"]));
    c.insert("b", table(2, "b", SourceKind::Table, &["k", "w"]));
    // c says what tells its values apart (an integer, a numeric): its
    // changes are netted by its columns, a and b's by their text. Its
    // primary key is x.
    let mut typed = table(3, "c", SourceKind::Table, &["x", "amount"]);
    typed.image_equality = vec![ImageEquality::Exact, ImageEquality::NumericScale];
    typed.key = vec!["x".into()];
    c.insert("c", typed);
    c.insert("va", table(4, "va", SourceKind::View, &["k", "v", "s"]));
    c.insert("mv", table(5, "mv", SourceKind::MaterializedView, &["k"]));
    c.insert("ft", table(6, "ft", SourceKind::Foreign, &["k"]));
    let mut unlogged = table(7, "ul", SourceKind::Table, &["k"]);
    unlogged.capture_problem = Some("it is unlogged".into());
    c.insert("ul", unlogged);
    c.insert(
        "par",
        table(8, "par", SourceKind::InheritanceParent, &["k"]),
    );
    c.insert(
        "public.a",
        table(1, "a", SourceKind::Table, &["k", "v", "s"]),
    );
    for f in ["upper", "abs", "coalesce", "lower"] {
        c.insert_function(
            f,
            FunctionFacts {
                immutable: true,
                ..Default::default()
            },
        );
    }
    for f in ["count", "sum", "avg", "min", "max", "string_agg"] {
        c.insert_function(
            f,
            FunctionFacts {
                immutable: true,
                aggregate: true,
                window: false,
                single_column: false,
                immutable_arities: Vec::new(),
            },
        );
    }
    // As in PostgreSQL: rank and dense_rank are also hypothetical-set
    // aggregates.
    for (f, aggregate) in [("rank", true), ("dense_rank", true), ("lag", false)] {
        c.insert_function(
            f,
            FunctionFacts {
                immutable: true,
                aggregate,
                window: true,
                single_column: false,
                immutable_arities: Vec::new(),
            },
        );
    }
    c.insert_function(
        "row_number",
        FunctionFacts {
            immutable: true,
            aggregate: false,
            window: true,
            single_column: false,
            immutable_arities: Vec::new(),
        },
    );
    c.insert_function("random", FunctionFacts::default());
    c.insert_function(
        "generate_series",
        FunctionFacts {
            immutable: true,
            single_column: true,
            ..Default::default()
        },
    );
    for f in ["unnest", "json_each"] {
        c.insert_function(
            f,
            FunctionFacts {
                immutable: true,
                ..Default::default()
            },
        );
    }
    c
}

/// Integer output columns with these names.
pub fn columns(names: &[&str]) -> Vec<OutputColumn> {
    names
        .iter()
        .map(|n| OutputColumn {
            name: n.to_string(),
            type_sql: "integer".into(),
            identity: Default::default(),
            nondeterministic: false,
        })
        .collect()
}
