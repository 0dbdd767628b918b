//! The `apply_sql` property: the statements that populate and apply
//! changes to a stream table, generated for arbitrary column names (quotes,
//! spaces, capitals, Unicode, reserved words, the 63-byte limit, names
//! that look like the engine's own), types and row-identity kinds, and an
//! arbitrary schema-qualified storage name. Every statement parses as one
//! statement, and the populate statement inserts into exactly the storage
//! table, each output column once, in order, quoted as needed.

use std::ops::ControlFlow;

use arbitrary::{Result as ArbResult, Unstructured};

use crate::analyze::analyze;
use crate::catalog::{Capture, Catalog, ColumnIdentity, OutputColumn, SourceKind, SourceTable};
use crate::delta::{plan_refresh, plan_refresh_for_changes, RefreshPlan, ROW_ID};
use crate::sql::quote_ident;

/// PostgreSQL keeps the first 63 bytes of an identifier.
const NAMEDATALEN: usize = 63;

/// Names that need care, mixed into the generated ones.
const AWKWARD: &[&str] = &[
    "select",
    "from",
    "order",
    "user",
    "K",
    "my col",
    "a\"b",
    "é",
    "__pgt_m",
    "__pgt_row_id_2",
    "1st",
    "",
];

fn identifier(u: &mut Unstructured<'_>) -> ArbResult<String> {
    let base = if u.ratio(1, 3)? {
        (*u.choose(AWKWARD)?).to_string()
    } else {
        let s: String = u.arbitrary()?;
        s.replace('\0', "")
    };
    let mut name = if base.is_empty() {
        "c".to_string()
    } else {
        base
    };
    while name.len() > NAMEDATALEN {
        name.pop();
    }
    Ok(name)
}

fn identity(u: &mut Unstructured<'_>) -> ArbResult<(String, ColumnIdentity)> {
    Ok(match u.int_in_range(0..=3)? {
        0 => ("integer".into(), ColumnIdentity::Hash),
        1 => ("text".into(), ColumnIdentity::Hash),
        2 => (
            "point".into(),
            ColumnIdentity::Send("pg_catalog.point_send".into()),
        ),
        _ => ("json".into(), ColumnIdentity::Text),
    })
}

/// Check the property for the input; panics when it fails.
pub fn apply_sql(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(case) = build(&mut u) else { return };
    let (query, columns, parts, catalog) = case;
    let storage = format!("{}.{}", quote_ident(&parts[0]), quote_ident(&parts[1]));
    let Ok(analysis) = analyze(&query, &catalog) else {
        panic!("the generated query does not analyse: {query}");
    };
    if analysis.model.is_err() {
        return;
    }
    let general = plan_refresh(&analysis, &query, &storage, &columns);
    let outputs: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    check_plan(&query, (&storage, &parts), &outputs, &general);
    for changed in [vec![], vec![0]] {
        let p = plan_refresh_for_changes(&analysis, &query, &storage, &columns, &changed);
        check_plan(&query, (&storage, &parts), &outputs, &p);
        check_token(&analysis, &p);
    }
    check_token(&analysis, &general);
    let mut every_column: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    every_column.push(ROW_ID.to_string());
    check_snapshot(&parts, &every_column);
}

/// The snapshot copy of a stream table `storage` (unquoted schema and
/// name) with `columns`, and the restore back: each parses as one
/// statement that inserts into the target exactly `columns`, in order,
/// from a SELECT of exactly `columns`, in order, from the source, so every
/// column goes to itself; the default snapshot name fits PostgreSQL's
/// identifier length.
fn check_snapshot(storage: &[String; 2], columns: &[String]) {
    use crate::snapshot::{copy_rows_sql, default_name, qualified, MAX_IDENTIFIER_BYTES};
    let snapshot_name = default_name(&storage[1], 1);
    assert!(
        snapshot_name.len() <= MAX_IDENTIFIER_BYTES,
        "default snapshot name {snapshot_name:?} is longer than {MAX_IDENTIFIER_BYTES} bytes"
    );
    let snapshot = [storage[0].clone(), snapshot_name];
    for (from, to) in [(storage, &snapshot), (&snapshot, storage)] {
        let sql = copy_rows_sql(
            &qualified(&from[0], &from[1]),
            &qualified(&to[0], &to[1]),
            columns,
        );
        let copied = read_copy(&sql);
        assert_eq!(
            copied,
            Some((
                to.to_vec(),
                columns.to_vec(),
                from.to_vec(),
                columns.to_vec()
            )),
            "the copy from {from:?} to {to:?} does not move each of {columns:?} to itself:\n{sql}"
        );
    }
}

/// The parts of a name as the parser reads them back (quotes removed,
/// doubled quotes undone), so a check does not depend on how anything
/// prints them.
fn name_parts(name: &sqlparser::ast::ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| i.value.clone())
                .unwrap_or_else(|| p.to_string())
        })
        .collect()
}

/// What a copy statement does, as the parser reads it back: the insert's
/// target and columns, and its SELECT's source and plain column names.
type Copy = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn read_copy(sql: &str) -> Option<Copy> {
    use sqlparser::ast::{Expr, SelectItem, SetExpr, Statement, TableFactor, TableObject};
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let statements = sqlparser::parser::Parser::parse_sql(&dialect, sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let mut found = None;
    let _ = sqlparser::ast::visit_statements(&statements, |s| {
        if let Statement::Insert(i) = s {
            let TableObject::TableName(target) = &i.table else {
                return ControlFlow::Break(());
            };
            let inserted: Vec<String> = i.columns.iter().flat_map(name_parts).collect();
            let Some(SetExpr::Select(select)) = i.source.as_ref().map(|q| q.body.as_ref()) else {
                return ControlFlow::Break(());
            };
            let selected: Vec<String> = select
                .projection
                .iter()
                .map(|item| match item {
                    SelectItem::UnnamedExpr(Expr::Identifier(id)) => id.value.clone(),
                    other => format!("<{other}>"),
                })
                .collect();
            let source = match select.from.first().map(|f| &f.relation) {
                Some(TableFactor::Table { name, .. }) if select.from.len() == 1 => name_parts(name),
                _ => return ControlFlow::Break(()),
            };
            found = Some((name_parts(target), inserted, source, selected));
        }
        ControlFlow::Continue(())
    });
    found
}

/// A plan over a source captured from the WAL reads its undrained changes
/// with the read token, one parameter after the change ids; any other plan
/// takes no token.
fn check_token(analysis: &crate::Analysis, plan: &crate::RefreshPlan) {
    let Some(sql) = &plan.diff_sql else { return };
    let wal = analysis.sources.iter().any(|s| s.capture == Capture::Wal);
    if wal {
        let k = 3 + plan.diff_sources.len();
        assert_eq!(plan.token_param, Some(k));
        assert!(
            sql.contains(&format!("pgtrickle_changes.wal_changes_1(${k}::text, ")),
            "a plan over a WAL-captured source does not read it with token ${k}:\n{sql}"
        );
    } else {
        assert_eq!(plan.token_param, None);
        assert!(!sql.contains("wal_changes_"), "{sql}");
    }
}

type Case = (String, Vec<OutputColumn>, [String; 2], Catalog);

fn build(u: &mut Unstructured<'_>) -> ArbResult<Case> {
    let n = u.int_in_range(1..=5)?;
    let mut names: Vec<String> = Vec::new();
    while names.len() < n {
        let name = identifier(u)?;
        if !names.contains(&name) && name != ROW_ID {
            names.push(name);
        }
        if u.is_empty() && names.len() < n {
            names.push(format!("c{}", names.len()));
        }
    }
    let mut columns = Vec::with_capacity(n);
    for name in &names {
        let (type_sql, identity) = identity(u)?;
        columns.push(OutputColumn {
            name: name.clone(),
            type_sql,
            identity,
            nondeterministic: false,
        });
    }
    let schema = identifier(u)?;
    let table = identifier(u)?;
    let storage = [schema, table];
    // Drawn last, so inputs that end before it keep their meaning.
    let capture = if u.arbitrary::<bool>().unwrap_or(false) {
        Capture::Wal
    } else {
        Capture::Trigger
    };
    let mut catalog = Catalog::new();
    catalog.insert(
        "src",
        SourceTable {
            oid: 1,
            schema: "public".into(),
            name: "src".into(),
            kind: SourceKind::Table,
            columns: names.clone(),
            capture_problem: None,
            capture,
            key: Vec::new(),
            image_equality: Vec::new(),
        },
    );
    let list = names
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let query = format!("SELECT {list} FROM src");
    Ok((query, columns, storage, catalog))
}

/// What every generated plan must satisfy, for `analyze` and `apply_sql`
/// alike: each statement parses as one statement, and the populate
/// statement inserts into exactly `storage` (whose unquoted parts are
/// `storage_parts`) each of `outputs` once, in order, then the row id.
pub(super) fn check_plan(
    query: &str,
    (storage, storage_parts): (&str, &[String]),
    outputs: &[String],
    plan: &RefreshPlan,
) {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let texts = [&plan.populate_sql, &plan.full_sql]
        .into_iter()
        .chain(plan.diff_sql.as_ref())
        .chain(plan.phases.iter().map(|p| &p.sql));
    for text in texts {
        let parsed = sqlparser::parser::Parser::parse_sql(&dialect, text);
        assert!(
            parsed.as_ref().map(|s| s.len()) == Ok(1),
            "generated SQL for {query} into {storage} does not parse as one statement: {parsed:?}\n{text}"
        );
    }
    let statements =
        sqlparser::parser::Parser::parse_sql(&dialect, &plan.populate_sql).expect("parsed above");
    let mut inserts = Vec::new();
    let _ = sqlparser::ast::visit_statements(&statements, |s| {
        if let sqlparser::ast::Statement::Insert(i) = s {
            let table = match &i.table {
                sqlparser::ast::TableObject::TableName(n) => name_parts(n),
                other => vec![other.to_string()],
            };
            let columns: Vec<String> = i.columns.iter().flat_map(name_parts).collect();
            inserts.push((table, columns));
        }
        ControlFlow::<()>::Continue(())
    });
    let mut expected = outputs.to_vec();
    expected.push(ROW_ID.to_string());
    assert_eq!(
        inserts,
        vec![(storage_parts.to_vec(), expected)],
        "populate for {query} does not insert each column once, in order, into {storage}:\n{}",
        plan.populate_sql
    );
}
