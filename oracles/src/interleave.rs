//! Seeded interleavings of several connections' transactions.
//!
//! A differential engine's first guarantee is about transactions that
//! interleave with its refreshes: a change taken before a refresh and
//! committed after it must still be applied, a rolled-back one never, and
//! an aborted subtransaction's changes never. One connection running
//! statements one after another cannot produce any of that. This module
//! generates steps whose statements are spread over several connections:
//! transactions that open, write, set and roll back savepoints, refresh
//! from inside, prepare for two-phase commit, and stay open across the
//! step's own refresh.
//!
//! The generator keeps a model of which connections have a transaction
//! open and which transactions are prepared, so that its output is always a valid script, whatever the seed;
//! the runner needs no knowledge of it.

use crate::gen::{DmlGen, TableSpec};
use crate::workload::Action;

/// Where an interleaving draws its random choices and its DML from.
pub trait Source {
    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize;
    /// One random DML statement.
    fn statement(&mut self) -> String;
}

/// The corpus generator's DML over a set of tables.
pub struct TableDml<'a> {
    /// The generator.
    pub gen: &'a mut DmlGen,
    /// The tables it writes.
    pub tables: &'a [TableSpec],
}

impl Source for TableDml<'_> {
    fn below(&mut self, n: usize) -> usize {
        self.gen.below(n)
    }

    fn statement(&mut self) -> String {
        let t = &self.tables[self.gen.below(self.tables.len())];
        self.gen.statement(t)
    }
}

/// The generator's model of the connections: which have a transaction
/// open, and which prepared transactions are waiting to be finished.
#[derive(Debug, Clone)]
pub struct Interleaver {
    gid_prefix: String,
    open: Vec<bool>,
    prepared: Vec<String>,
    next_gid: usize,
}

impl Interleaver {
    /// A model of connections 0..=`conns`, all idle. Prepared transactions
    /// are named `<gid_prefix>_<n>` (their names are unique in a cluster,
    /// so the prefix names the workload).
    pub fn new(conns: usize, gid_prefix: &str) -> Interleaver {
        assert!(
            conns > 0,
            "an interleaving needs connections besides connection 0"
        );
        Interleaver {
            gid_prefix: gid_prefix.to_string(),
            open: vec![false; conns + 1],
            prepared: Vec::new(),
            next_gid: 1,
        }
    }

    /// The statements of one random step: actions of connections 1..N
    /// (and refreshes and the finishing of prepared transactions on
    /// connection 0) in the order they are started.
    ///
    /// A connection that refreshed inside its transaction always commits
    /// or rolls it back within the step (never prepares it), so that the
    /// step's own refresh, which takes the same lock, never waits for a
    /// later step.
    pub fn step(&mut self, gen: &mut dyn Source, stream_tables: &[String]) -> Vec<Action> {
        let refreshes: Vec<String> = stream_tables
            .iter()
            .map(|st| format!("SELECT pgtrickle.refresh_stream_table('{st}')"))
            .collect();
        let conns = self.open.len() - 1;
        let mut out = Vec::new();
        // Connections whose transaction holds a lock a refresh needs (it
        // refreshed, or locked stream table rows): they end it in the step.
        let mut refreshed_inside = vec![false; self.open.len()];
        let n = 3 + gen.below(6);
        for _ in 0..n {
            let roll = gen.below(100);
            if roll < 12 && !refreshes.is_empty() {
                // A refresh from another connection while transactions are open.
                let r = &refreshes[gen.below(refreshes.len())];
                out.push(Action::on(0, r));
                continue;
            }
            if roll < 17 && !self.prepared.is_empty() {
                let gid = self.prepared.remove(gen.below(self.prepared.len()));
                let verb = if gen.below(3) == 0 {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                out.push(Action::on(0, &format!("{verb} PREPARED '{gid}'")));
                continue;
            }
            let c = 1 + gen.below(conns);
            if !self.open[c] {
                if gen.below(100) < 45 {
                    out.push(Action::on(c, "BEGIN"));
                    self.open[c] = true;
                } else {
                    out.push(Action::on(c, &gen.statement()));
                }
                continue;
            }
            match gen.below(100) {
                0..=49 => out.push(Action::on(c, &gen.statement())),
                50..=61 => {
                    // A subtransaction that writes, then aborts or is released.
                    let end = if gen.below(2) == 0 {
                        "ROLLBACK TO SAVEPOINT s"
                    } else {
                        "RELEASE SAVEPOINT s"
                    };
                    out.push(Action::on(c, "SAVEPOINT s"));
                    out.push(Action::on(c, &gen.statement()));
                    out.push(Action::on(c, end));
                }
                62..=67 if !refreshes.is_empty() => {
                    // Write, refresh and write again inside one transaction.
                    let r = &refreshes[gen.below(refreshes.len())];
                    out.push(Action::on(c, r));
                    refreshed_inside[c] = true;
                }
                68..=69 if !stream_tables.is_empty() => {
                    // A reader locking stream table rows: a refresh that
                    // must change them waits, between its delta and its end.
                    let st = &stream_tables[gen.below(stream_tables.len())];
                    let strength = ["UPDATE", "SHARE", "NO KEY UPDATE"][gen.below(3)];
                    out.push(Action::on(c, &format!("SELECT * FROM {st} FOR {strength}")));
                    refreshed_inside[c] = true;
                }
                70..=75 if !refreshed_inside[c] => {
                    let gid = format!("{}_{}", self.gid_prefix, self.next_gid);
                    self.next_gid += 1;
                    out.push(Action::on(c, &format!("PREPARE TRANSACTION '{gid}'")));
                    self.prepared.push(gid);
                    self.open[c] = false;
                }
                76..=87 => {
                    out.push(Action::on(c, "COMMIT"));
                    self.open[c] = false;
                    refreshed_inside[c] = false;
                }
                _ => {
                    out.push(Action::on(c, "ROLLBACK"));
                    self.open[c] = false;
                    refreshed_inside[c] = false;
                }
            }
        }
        for (c, refreshed) in refreshed_inside.iter().enumerate() {
            if *refreshed {
                let end = if gen.below(3) == 0 {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                out.push(Action::on(c, end));
                self.open[c] = false;
            }
        }
        out
    }

    /// Statements that end every open and prepared transaction (committing
    /// them), so that the last check sees everything.
    pub fn closing(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        for (c, open) in self.open.iter_mut().enumerate() {
            if *open {
                out.push(Action::on(c, "COMMIT"));
                *open = false;
            }
        }
        for gid in self.prepared.drain(..) {
            out.push(Action::on(0, &format!("COMMIT PREPARED '{gid}'")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::ColSpec;

    fn steps(seed: u64) -> (Vec<Vec<Action>>, Vec<bool>) {
        let t = TableSpec::new("t", vec![ColSpec::int("k", 4, 10)]);
        let mut g = DmlGen::new(seed);
        let mut model = Interleaver::new(3, "t");
        let sts = vec!["s".to_string()];
        let mut all: Vec<Vec<Action>> = (0..40)
            .map(|_| {
                let mut src = TableDml {
                    gen: &mut g,
                    tables: std::slice::from_ref(&t),
                };
                model.step(&mut src, &sts)
            })
            .collect();
        all.push(model.closing());
        (all, model.open)
    }

    #[test]
    fn interleavings_are_deterministic_in_the_seed() {
        assert_eq!(steps(3), steps(3));
        assert_ne!(steps(3).0, steps(4).0);
    }

    #[test]
    fn transactions_are_well_formed_and_refreshing_ones_end_in_their_step() {
        for seed in 0..30 {
            let (all, left_open) = steps(seed);
            assert!(
                left_open.iter().all(|o| !o),
                "seed {seed}: closing left one open"
            );
            let mut open = [false; 4];
            let mut prepared = std::collections::BTreeSet::new();
            for step in &all {
                let mut refreshed = [false; 4];
                for a in step {
                    let c = a.conn;
                    match a.sql.as_str() {
                        "BEGIN" => {
                            assert!(!open[c], "seed {seed}: BEGIN inside a transaction");
                            open[c] = true;
                        }
                        "COMMIT" | "ROLLBACK" => {
                            assert!(open[c], "seed {seed}: {} outside a transaction", a.sql);
                            open[c] = false;
                            refreshed[c] = false;
                        }
                        s if s.starts_with("PREPARE TRANSACTION") => {
                            assert!(open[c] && !refreshed[c], "seed {seed}: {s}");
                            open[c] = false;
                            prepared.insert(s.split('\'').nth(1).unwrap().to_string());
                        }
                        s if s.contains(" PREPARED '") => {
                            assert_eq!(c, 0, "seed {seed}: {s}");
                            let gid = s.split('\'').nth(1).unwrap();
                            assert!(prepared.remove(gid), "seed {seed}: {s} was never prepared");
                        }
                        s if s.contains("SAVEPOINT") => assert!(open[c], "seed {seed}"),
                        s if (s.contains("refresh_stream_table") || s.contains(" FOR "))
                            && c > 0 =>
                        {
                            assert!(open[c], "seed {seed}");
                            refreshed[c] = true;
                        }
                        _ => {}
                    }
                }
                assert!(
                    refreshed.iter().all(|r| !r),
                    "seed {seed}: a transaction that refreshed stays open after its step"
                );
            }
            assert!(
                prepared.is_empty(),
                "seed {seed}: {prepared:?} never finished"
            );
        }
    }

    #[test]
    fn some_transactions_stay_open_across_a_step() {
        let spans = (0..10u64)
            .filter(|seed| {
                let (all, _) = steps(*seed);
                let mut open = [false; 4];
                all.iter().any(|step| {
                    let was = open;
                    for a in step {
                        match a.sql.as_str() {
                            "BEGIN" => open[a.conn] = true,
                            "COMMIT" | "ROLLBACK" => open[a.conn] = false,
                            _ => {}
                        }
                    }
                    was.iter().zip(open.iter()).any(|(a, b)| *a && *b)
                })
            })
            .count();
        assert!(
            spans >= 5,
            "only {spans} of 10 seeds keep a transaction open"
        );
    }
}
