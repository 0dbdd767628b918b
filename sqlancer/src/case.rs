//! A case: one schema, its seed data, one generated query as an AUTO
//! stream table, and a DML stream; all derived from the session seed and
//! the case number, so `--seed N` replays the same statements.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use oracles::workload::{Mode, Step, StreamTableDef, Workload};

use crate::grammar::{Construct, Query};
use crate::query::query;
use crate::schema::{schema, Layout, Writer};

/// DML steps per case.
pub const STEPS: usize = 8;

/// A generated case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The workload the oracle runs.
    pub workload: Workload,
    /// The query's AST (for shrinking by clauses).
    pub query: Query,
}

/// The seed of case `index` of a session seeded `seed` (SplitMix64 mixing).
pub fn case_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Case `index` of the session seeded `seed`.
pub fn case(seed: u64, index: u64) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(case_seed(seed, index));
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
    let mut steps = Vec::new();
    for _ in 0..STEPS {
        let mut step = Step {
            dml: writer.step(&mut rng, &schema),
            ..Step::default()
        };
        if rng.gen_ratio(1, 25) {
            // TRUNCATE breaks continuity: a reader of the table must reinitialise.
            q.constructs.insert(Construct::TruncateSource);
            let t = &schema.tables[rng.gen_range(0..schema.tables.len())].name;
            step.dml.insert(0, format!("TRUNCATE {t}"));
            if sql.contains(&format!(" {t} ")) {
                step.reinit.push("q".into());
            }
        }
        steps.push(step);
    }
    Case {
        workload: Workload {
            name: format!("sqlancer_{seed}_{index}"),
            seed,
            setup,
            seed_rows,
            stream_tables,
            steps,
            connections: Vec::new(),
            scheduler: false,
        },
        query: q,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn same_seed_same_case_and_different_seeds_differ() {
        for i in 0..20 {
            assert_eq!(case(7, i).workload, case(7, i).workload);
        }
        assert_ne!(case(7, 0).workload, case(8, 0).workload);
        assert_ne!(case(7, 0).workload, case(7, 1).workload);
    }

    #[test]
    fn the_generator_emits_every_construct_it_declares() {
        let mut seen = BTreeSet::new();
        for i in 0..3000 {
            seen.extend(case(1, i).query.constructs);
        }
        let missing: Vec<&Construct> = Construct::EMITTED
            .iter()
            .filter(|c| !seen.contains(c))
            .collect();
        assert!(missing.is_empty(), "never emitted: {missing:?}");
    }
}
