//! The properties the fuzz targets check, as plain functions of bytes, so
//! that `fuzz/` (cargo-fuzz, nightly) calls them on what libFuzzer
//! generates and the committed corpora and crash reproducers replay them
//! as ordinary tests on stable (`tests/fuzz_corpora.rs`). The apply and
//! column-list property is in `apply_sql.rs`. Each function
//! panics when a property fails, and only then.
//!
//! Input bytes are read with `arbitrary::Unstructured`: the first byte
//! chooses between raw input (the bytes themselves) and structure-aware
//! input (a valid value built from the bytes), so one target covers both.

mod apply_sql;

pub use apply_sql::apply_sql;
use apply_sql::check_plan;

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Result as ArbResult, Unstructured};

use crate::analyze::analyze as analyze_query;
use crate::catalog::{Catalog, FunctionFacts, OutputColumn, SourceKind, SourceTable};
use crate::delta::{plan_refresh, plan_refresh_for_changes};
use crate::ir::{Mode, RequestedMode};
use crate::model::Model;
use crate::wal::{self, Datum, Message, OldTuple, Relation, RelationColumn, Tuple};

/// A property over one input; panics when it fails.
pub type Property = fn(&[u8]);

/// The targets, by name, for the corpus replay and the nightly runner.
pub const TARGETS: &[(&str, Property)] = &[
    ("wal_decode", wal_decode),
    ("analyze", analyze),
    ("dag", dag),
    ("settings_and_schedules", settings_and_schedules),
    ("apply_sql", apply_sql),
];

/// pgoutput decoding: never a panic; a decoded message encodes and decodes
/// back to itself; a built message round-trips; a built stream assembles
/// or fails with a typed error.
pub fn wal_decode(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if u.arbitrary::<bool>().unwrap_or(false) {
        let rest = u.take_rest();
        if let Ok(m) = wal::decode(rest) {
            assert_eq!(
                wal::decode(&wal::encode(&m)),
                Ok(m.clone()),
                "re-encoding changed {m:?}"
            );
        }
        return;
    }
    let mut stream = Vec::new();
    while !u.is_empty() && stream.len() < 32 {
        let Ok(m) = message(&mut u) else { break };
        assert_eq!(
            wal::decode(&wal::encode(&m)),
            Ok(m.clone()),
            "round trip of {m:?}"
        );
        stream.push(m);
    }
    let _ = wal::assemble(&stream);
}

fn text(u: &mut Unstructured<'_>) -> ArbResult<String> {
    let s: String = u.arbitrary()?;
    Ok(s.replace('\0', "").chars().take(16).collect())
}

fn tuple(u: &mut Unstructured<'_>) -> ArbResult<Tuple> {
    let n = u.int_in_range(0..=6)?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        values.push(match u.int_in_range(0..=3)? {
            0 => Datum::Null,
            1 => Datum::UnchangedToast,
            2 => Datum::Text(text(u)?.into_bytes()),
            _ => Datum::Binary(u.arbitrary::<Vec<u8>>()?.into_iter().take(16).collect()),
        });
    }
    Ok(Tuple(values))
}

fn old_tuple(u: &mut Unstructured<'_>) -> ArbResult<OldTuple> {
    Ok(if u.arbitrary()? {
        OldTuple::Full(tuple(u)?)
    } else {
        OldTuple::Key(tuple(u)?)
    })
}

/// One message; relation oids come from a small set so a stream's changes
/// meet the relations it describes.
fn message(u: &mut Unstructured<'_>) -> ArbResult<Message> {
    let oid = |u: &mut Unstructured<'_>| u.int_in_range(1u32..=3);
    Ok(match u.int_in_range(0..=9)? {
        0 => Message::Begin {
            final_lsn: u.arbitrary()?,
            commit_time: u.arbitrary()?,
            xid: u.arbitrary()?,
        },
        1 => Message::Commit {
            flags: u.arbitrary()?,
            commit_lsn: u.arbitrary()?,
            end_lsn: u.arbitrary()?,
            commit_time: u.arbitrary()?,
        },
        2 => Message::Origin {
            lsn: u.arbitrary()?,
            name: text(u)?,
        },
        3 => {
            let n = u.int_in_range(0..=4)?;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                columns.push(RelationColumn {
                    key: u.arbitrary()?,
                    name: text(u)?,
                    type_oid: u.arbitrary()?,
                    type_modifier: u.arbitrary()?,
                });
            }
            Message::Relation(Relation {
                oid: oid(u)?,
                namespace: text(u)?,
                name: text(u)?,
                replica_identity: u.arbitrary()?,
                columns,
            })
        }
        4 => Message::Type {
            oid: u.arbitrary()?,
            namespace: text(u)?,
            name: text(u)?,
        },
        5 => Message::Insert {
            relation: oid(u)?,
            new: tuple(u)?,
        },
        6 => Message::Update {
            relation: oid(u)?,
            old: if u.arbitrary()? {
                Some(old_tuple(u)?)
            } else {
                None
            },
            new: tuple(u)?,
        },
        7 => Message::Delete {
            relation: oid(u)?,
            old: old_tuple(u)?,
        },
        8 => Message::Truncate {
            options: u.arbitrary()?,
            relations: (0..u.int_in_range(0..=3)?)
                .map(|_| oid(u))
                .collect::<ArbResult<_>>()?,
        },
        _ => Message::LogicalMessage {
            flags: u.arbitrary()?,
            lsn: u.arbitrary()?,
            prefix: text(u)?,
            content: u.arbitrary::<Vec<u8>>()?.into_iter().take(32).collect(),
        },
    })
}

/// The catalog the analysis target resolves names in: two tables, a view
/// and the functions the corpus uses.
pub fn fuzz_catalog() -> Catalog {
    let table = |oid, name: &str, kind, cols: &[&str]| SourceTable {
        oid,
        schema: "public".into(),
        name: name.into(),
        kind,
        columns: cols.iter().map(|c| c.to_string()).collect(),
        capture_problem: None,
        capture: Default::default(),
        key: Vec::new(),
        image_equality: Vec::new(),
    };
    let mut c = Catalog::new();
    c.insert("a", table(1, "a", SourceKind::Table, &["k", "v", "s"]));
    c.insert("b", table(2, "b", SourceKind::Table, &["k", "w"]));
    c.insert("va", table(3, "va", SourceKind::View, &["k"]));
    for f in ["upper", "abs", "coalesce", "lower"] {
        c.insert_function(
            f,
            FunctionFacts {
                immutable: true,
                ..Default::default()
            },
        );
    }
    for f in ["count", "sum", "avg", "min", "max"] {
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
    c
}

/// Structure-aware queries: FROM occurrences of `a` and `b`, joined on
/// `k`, with an optional filter, projection or grouping.
fn query(u: &mut Unstructured<'_>) -> ArbResult<String> {
    let n = u.int_in_range(1..=4)?;
    let tables: Vec<&str> = (0..n)
        .map(|_| u.choose(&["a", "b"]).copied())
        .collect::<ArbResult<_>>()?;
    let from: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{t} t{i}"))
        .collect();
    let mut conds: Vec<String> = (1..n).map(|i| format!("t{}.k = t{i}.k", i - 1)).collect();
    if u.arbitrary()? {
        let value: i8 = u.arbitrary()?;
        conds.push(format!("t0.k > {value}"));
    }
    let where_ = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    Ok(match u.int_in_range(0..=2)? {
        0 => format!("SELECT t0.k FROM {}{where_}", from.join(", ")),
        1 => format!(
            "SELECT t0.k, count(*) AS n, sum(t{}.k) AS s FROM {}{where_} GROUP BY t0.k",
            n - 1,
            from.join(", ")
        ),
        _ => format!("SELECT DISTINCT t0.k FROM {}{where_}", from.join(", ")),
    })
}

/// Query analysis and SQL generation: never a panic; for a supported
/// query every generated statement (general, and specialised to every
/// subset of changed sources) parses as one statement, populates the
/// storage with each output column once, in order, and is the same when
/// generated again.
pub fn analyze(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let sql = if u.arbitrary::<bool>().unwrap_or(false) {
        String::from_utf8_lossy(u.take_rest()).into_owned()
    } else {
        match query(&mut u) {
            Ok(q) => q,
            Err(_) => return,
        }
    };
    let catalog = fuzz_catalog();
    let Ok(analysis) = analyze_query(&sql, &catalog) else {
        return;
    };
    let outputs: Vec<String> = match &analysis.model {
        Ok(Model::Linear(rel)) => rel.outputs().to_vec(),
        Ok(Model::Grouped { block, .. }) => block.outputs.clone(),
        Err(_) => return,
    };
    let columns: Vec<OutputColumn> = outputs
        .iter()
        .map(|name| OutputColumn {
            name: name.clone(),
            type_sql: "integer".into(),
            identity: Default::default(),
            nondeterministic: false,
        })
        .collect();
    let general = plan_refresh(&analysis, &sql, "public.st", &columns);
    let again = analyze_query(&sql, &catalog).expect("analysed once, so again");
    assert_eq!(
        general,
        plan_refresh(&again, &sql, "public.st", &columns),
        "generation is not deterministic for {sql}"
    );
    let storage = ("public.st", &["public".to_string(), "st".to_string()][..]);
    check_plan(&sql, storage, &outputs, &general);
    let n = analysis.sources.len().min(4);
    for mask in 0u32..(1 << n) {
        let changed: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
        let p = plan_refresh_for_changes(&analysis, &sql, "public.st", &columns, &changed);
        check_plan(&sql, storage, &outputs, &p);
    }
}

/// The dependency graph against a reference model: random additions and
/// removals of stream tables and edges; a cycle is always refused, an
/// order is always a topological order of exactly the nodes, and removing
/// a stream table leaves no edge to it.
pub fn dag(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut nodes: BTreeSet<i64> = BTreeSet::new();
    let mut edges: BTreeSet<(i64, i64)> = BTreeSet::new();
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        let Ok(op) = u.int_in_range(0..=3) else { break };
        let Ok(a) = u.int_in_range(0i64..=7) else {
            break;
        };
        let Ok(b) = u.int_in_range(0i64..=7) else {
            break;
        };
        match op {
            0 => {
                nodes.insert(a);
            }
            1 => {
                nodes.remove(&a);
                edges.retain(|(x, y)| *x != a && *y != a);
            }
            2 if nodes.contains(&a) && nodes.contains(&b) => {
                edges.insert((a, b));
            }
            3 => {
                edges.remove(&(a, b));
            }
            _ => {}
        }
        assert!(
            edges
                .iter()
                .all(|(x, y)| nodes.contains(x) && nodes.contains(y)),
            "a removal left a dangling edge"
        );
        let node_list: Vec<i64> = nodes.iter().copied().collect();
        let edge_list: Vec<(i64, i64)> = edges.iter().copied().collect();
        match crate::dag::refresh_order(&node_list, &edge_list) {
            Ok(order) => {
                assert!(
                    !has_cycle(&nodes, &edges),
                    "a cycle was accepted: {edge_list:?}"
                );
                let position: BTreeMap<i64, usize> =
                    order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
                assert_eq!(
                    position.len(),
                    nodes.len(),
                    "order {order:?} is not the nodes {node_list:?}"
                );
                assert!(order.iter().all(|n| nodes.contains(n)));
                for (x, y) in &edges {
                    assert!(
                        position[x] < position[y],
                        "{x} -> {y} out of order in {order:?}"
                    );
                }
            }
            Err(_) => assert!(
                has_cycle(&nodes, &edges),
                "refused a graph without a cycle: {edge_list:?}"
            ),
        }
    }
}

/// Whether the graph has a cycle, by repeatedly removing nodes without an
/// incoming edge (the reference, written independently of `dag`).
fn has_cycle(nodes: &BTreeSet<i64>, edges: &BTreeSet<(i64, i64)>) -> bool {
    let mut left = nodes.clone();
    loop {
        let free: Vec<i64> = left
            .iter()
            .copied()
            .filter(|n| !edges.iter().any(|(x, y)| y == n && left.contains(x)))
            .collect();
        if free.is_empty() {
            return !left.is_empty();
        }
        for n in free {
            left.remove(&n);
        }
    }
}

/// What the extension parses from users: schedules and modes never panic;
/// a parsed schedule is a positive number of seconds; a parsed mode reads
/// back from its own name.
pub fn settings_and_schedules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(seconds) = crate::schedule::parse_schedule(&text) {
        assert!(seconds > 0, "schedule {text:?} parsed to 0 seconds");
    }
    if let Ok(m) = RequestedMode::parse(&text) {
        assert_eq!(RequestedMode::parse(m.name()).ok(), Some(m));
    }
    if let Some(m) = Mode::parse(&text) {
        assert_eq!(Mode::parse(m.name()), Some(m));
    }
    if let Some(a) = crate::backpressure::Action::parse(&text) {
        assert_eq!(crate::backpressure::Action::parse(a.name()), Some(a));
    }
}
