//! A case: one schema, its seed data, one generated query as an AUTO
//! stream table (sometimes with a second generated query over the same
//! sources, and a stream table reading the first), and a DML stream; all
//! derived from the session seed and the case number, so `--seed N`
//! replays the same statements.
//!
//! A share of the cases (`concurrent_pct`) splits the DML stream over 2 to
//! 4 connections, in seeded interleavings of their transactions (see
//! `oracles::interleave`), with refreshes from another connection while
//! they are open.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use oracles::interleave::{Interleaver, Source};
use oracles::workload::{Isolation, Mode, Step, StreamTableDef, Workload};

use crate::grammar::{Construct, Query};
use crate::query::query;
use crate::schema::{schema, Layout, Schema, Writer};

/// DML steps per case.
pub const STEPS: usize = 8;

/// The name of the second generated stream table of a case.
pub const SECOND: &str = "r";

/// A generated case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The workload the oracle runs.
    pub workload: Workload,
    /// The query's AST (for shrinking by clauses).
    pub query: Query,
    /// The second generated query's AST, when the case has one (stream
    /// table [`SECOND`]; dropped from the workload when PostgreSQL
    /// rejects it).
    pub second: Option<Query>,
}

/// The seed of case `index` of a session seeded `seed` (SplitMix64 mixing).
pub fn case_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether case `index` of the session seeded `seed` is concurrent when
/// `concurrent_pct` percent of the cases are (drawn apart from the case's
/// own stream, so the share does not change the other cases).
pub fn is_concurrent(seed: u64, index: u64, concurrent_pct: u32) -> bool {
    let mut rng = ChaCha8Rng::seed_from_u64(case_seed(seed, index) ^ 0xC0C0_C0C0);
    rng.gen_range(0..100) < concurrent_pct
}

/// The generator's DML, one statement at a time, for an interleaving.
struct CaseDml<'a> {
    rng: &'a mut ChaCha8Rng,
    writer: &'a mut Writer,
    schema: &'a Schema,
}

impl Source for CaseDml<'_> {
    fn below(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n)
    }

    fn statement(&mut self) -> String {
        self.writer.statement(self.rng, self.schema)
    }
}

/// Mark the constructs of the sources `sql` reads.
fn source_constructs(q: &mut Query, schema: &Schema, sql: &str) {
    for t in &schema.tables {
        if !sql.contains(&format!(" {} ", t.name)) {
            continue;
        }
        match t.layout {
            Layout::Partitioned => {
                q.constructs.insert(Construct::PartitionedSource);
            }
            Layout::Inherited => {
                q.constructs.insert(Construct::InheritanceSource);
            }
            Layout::Plain => {}
        }
        if t.columns.iter().any(|c| !c.ty.comparable()) {
            q.constructs.insert(Construct::ColumnWithoutHash);
        }
    }
}

/// Whether `a` and `b` read a table in common.
fn share_a_source(schema: &Schema, a: &str, b: &str) -> bool {
    schema.tables.iter().any(|t| {
        let needle = format!(" {} ", t.name);
        a.contains(&needle) && b.contains(&needle)
    })
}

/// Case `index` of the session seeded `seed`; `concurrent_pct` percent of
/// the cases interleave their DML over several connections.
pub fn case(seed: u64, index: u64, concurrent_pct: u32) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(case_seed(seed, index));
    let concurrent = is_concurrent(seed, index, concurrent_pct);
    let schema = schema(&mut rng);
    let mut writer = Writer::new(&schema);
    let setup = schema.tables.iter().flat_map(|t| t.ddl()).collect();
    let mut seed_rows = Vec::new();
    for ti in 0..schema.tables.len() {
        for _ in 0..rng.gen_range(1..=4) {
            let n = rng.gen_range(1..=6);
            seed_rows.push(writer.insert(&mut rng, &schema, ti, n));
        }
    }
    let mut q = query(&mut rng, &schema);
    let sql = q.sql();
    source_constructs(&mut q, &schema, &sql);
    let mut stream_tables = vec![StreamTableDef {
        name: "q".into(),
        query: sql.clone(),
        mode: Mode::Auto,
        schedule: None,
    }];
    if rng.gen_ratio(1, 5) && q.first_comparable {
        // A stream table over the generated one.
        q.constructs.insert(Construct::StreamTableOverStreamTable);
        let first = &q.branches[0].items[0].1;
        stream_tables.push(StreamTableDef {
            name: "q2".into(),
            query: format!("SELECT {first}, count(*) AS n FROM q GROUP BY {first}"),
            mode: Mode::Auto,
            schedule: None,
        });
    }
    let mut second = None;
    if rng.gen_ratio(1, 3) {
        // Another query over (some of) the same sources: one change buffer,
        // two readers at different frontiers.
        for _ in 0..5 {
            let mut r = query(&mut rng, &schema);
            let r_sql = r.sql();
            if share_a_source(&schema, &sql, &r_sql) {
                source_constructs(&mut r, &schema, &r_sql);
                q.constructs.insert(Construct::SharedChangeBuffer);
                stream_tables.push(StreamTableDef {
                    name: SECOND.into(),
                    query: r_sql,
                    mode: Mode::Auto,
                    schedule: None,
                });
                second = Some(r);
                break;
            }
        }
    }
    let mut connections = Vec::new();
    let mut model = None;
    if concurrent {
        q.constructs.insert(Construct::ConcurrentWriters);
        let writers = rng.gen_range(2..=4);
        connections = (0..writers)
            .map(|_| match rng.gen_range(0..6) {
                0 => Isolation::RepeatableRead,
                1 => Isolation::Serializable,
                _ => Isolation::ReadCommitted,
            })
            .collect();
        model = Some(Interleaver::new(
            writers,
            &format!("s{}_{index}", seed % 100_000),
        ));
    }
    let names: Vec<String> = stream_tables.iter().map(|s| s.name.clone()).collect();
    let mut steps = Vec::new();
    for _ in 0..STEPS {
        let mut step = match model.as_mut() {
            Some(m) => {
                let mut src = CaseDml {
                    rng: &mut rng,
                    writer: &mut writer,
                    schema: &schema,
                };
                Step {
                    actions: m.step(&mut src, &names),
                    ..Step::default()
                }
            }
            None => Step {
                dml: writer.step(&mut rng, &schema),
                ..Step::default()
            },
        };
        if second.is_some() && rng.gen_bool(0.5) {
            // One of the two readers of the shared buffer stays behind.
            let behind = if rng.gen_bool(0.5) { "q" } else { SECOND };
            step.not_refreshed.push(behind.into());
        }
        if !concurrent && rng.gen_ratio(1, 25) {
            // TRUNCATE breaks continuity: a reader of the table must reinitialise.
            q.constructs.insert(Construct::TruncateSource);
            // Every reader refreshes in this step, so each reinitialises here.
            step.not_refreshed.clear();
            let t = &schema.tables[rng.gen_range(0..schema.tables.len())].name;
            step.dml.insert(0, format!("TRUNCATE {t}"));
            for st in &stream_tables {
                if st.query.contains(&format!(" {t} ")) {
                    step.reinit.push(st.name.clone());
                }
            }
        }
        steps.push(step);
    }
    if let Some(m) = model.as_mut() {
        let closing = m.closing();
        if !closing.is_empty() {
            steps.push(Step {
                actions: closing,
                ..Step::default()
            });
        }
    }
    Case {
        workload: Workload {
            name: format!("sqlancer_{seed}_{index}"),
            seed,
            setup,
            seed_rows,
            stream_tables,
            steps,
            connections,
            scheduler: false,
            capture: Default::default(),
        },
        query: q,
        second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn same_seed_same_case_and_different_seeds_differ() {
        for i in 0..20 {
            assert_eq!(case(7, i, 30).workload, case(7, i, 30).workload);
        }
        assert_ne!(case(7, 0, 30).workload, case(8, 0, 30).workload);
        assert_ne!(case(7, 0, 30).workload, case(7, 1, 30).workload);
    }

    #[test]
    fn the_concurrent_share_leaves_the_other_cases_alone() {
        for i in 0..40 {
            if !is_concurrent(7, i, 30) {
                assert_eq!(case(7, i, 30).workload, case(7, i, 0).workload, "case {i}");
            } else {
                let w = case(7, i, 30).workload;
                assert!((2..=4).contains(&w.connections.len()), "case {i}");
                assert!(w.steps.iter().all(|s| s.dml.is_empty()), "case {i}");
            }
        }
        let share = (0..1000).filter(|i| is_concurrent(7, *i, 30)).count();
        assert!(
            (220..=380).contains(&share),
            "{share} of 1000 concurrent at 30%"
        );
    }

    #[test]
    fn the_generator_emits_every_construct_it_declares() {
        let mut seen = BTreeSet::new();
        for i in 0..3000 {
            seen.extend(case(1, i, 30).query.constructs);
        }
        let missing: Vec<&Construct> = Construct::EMITTED
            .iter()
            .filter(|c| !seen.contains(c))
            .collect();
        assert!(missing.is_empty(), "never emitted: {missing:?}");
    }

    #[test]
    fn readers_of_a_shared_buffer_fall_behind_one_at_a_time() {
        let with_second: Vec<Workload> = (0..200)
            .map(|i| case(3, i, 0).workload)
            .filter(|w| w.stream_tables.iter().any(|s| s.name == SECOND))
            .collect();
        assert!(
            with_second.len() > 30,
            "{} cases with a second query",
            with_second.len()
        );
        for w in &with_second {
            for s in &w.steps {
                assert!(s.not_refreshed.len() <= 1, "{}", w.name);
                for r in &s.reinit {
                    assert!(!s.not_refreshed.contains(r), "{}", w.name);
                }
            }
        }
        assert!(with_second
            .iter()
            .any(|w| w.steps.iter().any(|s| !s.not_refreshed.is_empty())));
    }
}
