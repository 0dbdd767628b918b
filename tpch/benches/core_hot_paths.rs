//! The core's hot paths on the 22 TPC-H queries, without a server: query
//! analysis, refresh-plan generation (every statement a stream table
//! stores) and specialisation (the plan for one changed source, which a
//! backend makes on its first refresh after each kind of change). A slower
//! generator shows here before it reaches a refresh.
//!
//!   cargo bench -p tpch --bench core_hot_paths
//!
//! The catalog is built from the TPC-H DDL (columns and primary keys) with
//! the functions the queries call; every query must analyse as
//! DIFFERENTIAL, or the bench stops (it would measure the FULL path).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pg_trickle_core::analyze::analyze;
use pg_trickle_core::catalog::{Catalog, FunctionFacts, OutputColumn, SourceKind, SourceTable};
use pg_trickle_core::delta::{plan_refresh, plan_refresh_for_changes};
use pg_trickle_core::model::{Analysis, Model};
use sqlparser::ast::{ColumnDef, ColumnOption, Statement, TableConstraint};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The TPC-H tables with their columns and primary keys, read from the DDL.
fn catalog() -> Catalog {
    let mut c = Catalog::new();
    for (i, ddl) in tpch::schema::ddl().into_iter().enumerate() {
        let parsed = Parser::parse_sql(&PostgreSqlDialect {}, ddl).expect("the TPC-H DDL parses");
        let Some(Statement::CreateTable(t)) = parsed.into_iter().next() else {
            continue; // CREATE INDEX
        };
        let name = |c: &ColumnDef| c.name.value.clone();
        let mut key: Vec<String> = t
            .columns
            .iter()
            .filter(|c| {
                c.options
                    .iter()
                    .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
            })
            .map(name)
            .collect();
        for constraint in &t.constraints {
            if let TableConstraint::PrimaryKey(pk) = constraint {
                key = pk
                    .columns
                    .iter()
                    .map(|k| k.column.expr.to_string())
                    .collect();
            }
        }
        let table = t.name.to_string();
        c.insert(
            table.clone(),
            SourceTable {
                oid: 16_384 + i as u32,
                schema: "public".into(),
                name: table,
                kind: SourceKind::Table,
                columns: t.columns.iter().map(name).collect(),
                capture_problem: None,
                capture: Default::default(),
                key,
                image_equality: Vec::new(),
            },
        );
    }
    for f in ["count", "sum", "avg", "min", "max"] {
        c.insert_function(
            f,
            FunctionFacts {
                immutable: true,
                aggregate: true,
                ..Default::default()
            },
        );
    }
    for f in [
        "substring",
        "substr",
        "extract",
        "date_part",
        "coalesce",
        "round",
    ] {
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

/// The output columns of an analysed query (their types do not matter to
/// the generator's speed).
fn columns(analysis: &Analysis) -> Vec<OutputColumn> {
    let names: Vec<String> = match &analysis.model {
        Ok(Model::Linear(rel)) => rel.outputs().to_vec(),
        Ok(Model::Grouped { block, .. }) => block.outputs.clone(),
        Err(reason) => panic!("not DIFFERENTIAL: {reason}"),
    };
    names
        .into_iter()
        .map(|name| OutputColumn {
            name,
            type_sql: "numeric".into(),
            identity: Default::default(),
            nondeterministic: false,
        })
        .collect()
}

fn hot_paths(c: &mut Criterion) {
    let catalog = catalog();
    // The keys lead the old state of keyed subqueries: read them right.
    for (table, key) in [
        ("region", "r_regionkey"),
        ("lineitem", "l_orderkey,l_linenumber"),
    ] {
        assert_eq!(
            catalog.get(table).map(|t| t.key.join(",")),
            Some(key.into()),
            "{table}"
        );
    }
    let queries = tpch::queries::queries(1.0);
    let analysed: Vec<(String, Analysis, Vec<OutputColumn>)> = queries
        .iter()
        .map(|q| {
            let a = analyze(&q.sql, &catalog).unwrap_or_else(|e| panic!("{}: {e}", q.name));
            let cols = columns(&a);
            (q.sql.clone(), a, cols)
        })
        .collect();

    let mut group = c.benchmark_group("tpch_22");
    group.sample_size(20);
    group.bench_function("analyze", |b| {
        b.iter(|| {
            for q in &queries {
                black_box(analyze(black_box(&q.sql), &catalog).expect("analysis"));
            }
        })
    });
    group.bench_function("plan", |b| {
        b.iter(|| {
            for (sql, a, cols) in &analysed {
                black_box(plan_refresh(a, sql, "public.st", cols));
            }
        })
    });
    group.bench_function("specialise_one_changed_source", |b| {
        b.iter(|| {
            for (sql, a, cols) in &analysed {
                for s in 0..a.sources.len() {
                    black_box(plan_refresh_for_changes(a, sql, "public.st", cols, &[s]));
                }
            }
        })
    });
    group.finish();

    // The slowest shapes on their own: nested aggregation (Q13, Q15), a
    // correlated subquery (Q17), top-k over groups (Q18), many joins (Q8).
    let mut group = c.benchmark_group("tpch_query");
    group.sample_size(20);
    for name in ["q08", "q13", "q15", "q17", "q18"] {
        let q = queries.iter().find(|q| q.name == name).expect("query");
        let (sql, a, cols) = &analysed[queries.iter().position(|x| x.name == name).unwrap()];
        group.bench_function(format!("{name}/analyze"), |b| {
            b.iter(|| black_box(analyze(black_box(&q.sql), &catalog).expect("analysis")))
        });
        group.bench_function(format!("{name}/plan"), |b| {
            b.iter(|| black_box(plan_refresh(a, sql, "public.st", cols)))
        });
    }
    group.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
