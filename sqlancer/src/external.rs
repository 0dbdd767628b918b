//! The real SQLancer, run as an external program: its command line, and
//! its statement log turned into oracle workloads.
//!
//! SQLancer writes every statement it sends to `logs/<dbms>/<db>-cur.log`
//! (with `--log-each-select`, its default): one statement per line ending
//! in `;`, optionally followed by an execution-time comment such as
//! `-- 3ms;`, and comment lines starting with `--`. We keep its schema
//! statements, its data changes and its SELECTs; each SELECT becomes an
//! AUTO stream table over the logged schema, with the first half of the
//! logged data changes as seed data and the rest as DML steps.

use std::path::Path;

use oracles::workload::{Mode, Step, StreamTableDef, Workload};

/// Statements from a SQLancer log, by role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log {
    /// CREATE TABLE / CREATE INDEX.
    pub schema: Vec<String>,
    /// INSERT / UPDATE / DELETE.
    pub changes: Vec<String>,
    /// SELECT statements (distinct, in order).
    pub queries: Vec<String>,
    /// Statements of any other kind, which are ignored.
    pub ignored: usize,
}

/// Strip an execution-time comment (`-- 12ms;`) from the end of a line.
fn strip_time_comment(line: &str) -> &str {
    if let Some(pos) = line.rfind("; --") {
        let tail = line[pos + 4..].trim();
        let tail = tail.trim_end_matches(';').trim();
        if tail.ends_with("ms")
            && tail[..tail.len() - 2]
                .trim()
                .chars()
                .all(|c| c.is_ascii_digit())
        {
            return &line[..pos + 1];
        }
    }
    line
}

/// Split a SQLancer log into statements (without their final `;`).
pub fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        if current.is_empty() && (line.trim_start().starts_with("--") || line.trim().is_empty()) {
            continue;
        }
        let line = strip_time_comment(line);
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
        if line.ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').trim().to_string();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            current.clear();
        }
    }
    out
}

fn starts_with_word(stmt: &str, words: &[&str]) -> bool {
    let upper: String = stmt
        .split_whitespace()
        .take(words.len())
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    upper == words.join(" ")
}

/// Sort a log's statements by role.
pub fn parse_log(text: &str) -> Log {
    let mut log = Log::default();
    for s in statements(text) {
        if starts_with_word(&s, &["CREATE", "TABLE"])
            || starts_with_word(&s, &["CREATE", "INDEX"])
            || starts_with_word(&s, &["CREATE", "UNIQUE", "INDEX"])
        {
            log.schema.push(s);
        } else if starts_with_word(&s, &["INSERT"])
            || starts_with_word(&s, &["UPDATE"])
            || starts_with_word(&s, &["DELETE"])
        {
            log.changes.push(s);
        } else if starts_with_word(&s, &["SELECT"]) {
            if !log.queries.contains(&s) {
                log.queries.push(s);
            }
        } else {
            log.ignored += 1;
        }
    }
    log
}

/// Oracle workloads from a log: one AUTO stream table per logged SELECT
/// (at most `max`), named `<prefix>_<n>`.
pub fn workloads(log: &Log, prefix: &str, max: usize) -> Vec<Workload> {
    let half = log.changes.len() / 2;
    let steps: Vec<Step> = log.changes[half..]
        .chunks(3)
        .map(|c| Step {
            dml: c.to_vec(),
            ..Step::default()
        })
        .collect();
    log.queries
        .iter()
        .take(max)
        .enumerate()
        .map(|(i, q)| Workload {
            name: format!("{prefix}_{i}"),
            seed: 0,
            setup: log.schema.clone(),
            seed_rows: log.changes[..half].to_vec(),
            stream_tables: vec![StreamTableDef {
                name: "q".into(),
                query: q.clone(),
                mode: Mode::Auto,
                schedule: None,
            }],
            steps: steps.clone(),
            connections: Vec::new(),
            scheduler: false,
            capture: Default::default(),
        })
        .collect()
}

/// Connection and budget for an external SQLancer run.
#[derive(Debug, Clone)]
pub struct ExternalRun<'a> {
    /// The SQLancer jar.
    pub jar: &'a Path,
    /// Its random seed.
    pub seed: u64,
    /// Its time budget.
    pub seconds: u64,
    /// Server port on 127.0.0.1.
    pub port: u16,
    /// Database user.
    pub user: &'a str,
}

/// The `java` arguments that run SQLancer's PostgreSQL provider against a
/// cluster with one thread, a seed and a time budget, logging every statement.
pub fn java_args(run: &ExternalRun<'_>) -> Vec<String> {
    [
        "-jar",
        &run.jar.display().to_string(),
        "--random-seed",
        &run.seed.to_string(),
        "--num-threads",
        "1",
        "--timeout-seconds",
        &run.seconds.to_string(),
        "--host",
        "127.0.0.1",
        "--port",
        &run.port.to_string(),
        "--username",
        run.user,
        "--password",
        "unused",
        "--log-each-select",
        "true",
        "--print-progress-summary",
        "true",
        "postgres",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../tests/fixtures/database0-cur.log");

    #[test]
    fn the_fixture_log_splits_into_schema_changes_and_queries() {
        let log = parse_log(FIXTURE);
        assert_eq!(log.schema.len(), 3, "{:?}", log.schema);
        assert!(log.schema[0].starts_with("CREATE TABLE t0"));
        assert_eq!(log.changes.len(), 8, "{:?}", log.changes);
        assert_eq!(log.queries.len(), 3, "{:?}", log.queries);
        assert!(log
            .queries
            .iter()
            .all(|q| !q.ends_with(';') && !q.contains("ms")));
        // The multi-line INSERT is one statement.
        assert!(log.changes.iter().any(|c| c.contains('\n')));
        assert!(log.ignored >= 2);
    }

    #[test]
    fn workloads_use_every_change_once() {
        let log = parse_log(FIXTURE);
        let w = workloads(&log, "ext", 10);
        assert_eq!(w.len(), 3);
        let steps: usize = w[0].steps.iter().map(|s| s.dml.len()).sum();
        assert_eq!(w[0].seed_rows.len() + steps, log.changes.len());
        assert_eq!(w[0].stream_tables[0].mode, Mode::Auto);
        assert_eq!(workloads(&log, "ext", 1).len(), 1);
    }

    #[test]
    fn time_comments_are_stripped() {
        assert_eq!(strip_time_comment("SELECT 1; -- 12ms;"), "SELECT 1;");
        assert_eq!(strip_time_comment("SELECT '; -- x';"), "SELECT '; -- x';");
    }

    #[test]
    fn java_arguments_name_the_seed_budget_and_server() {
        let args = java_args(&ExternalRun {
            jar: Path::new("/x/sqlancer.jar"),
            seed: 9,
            seconds: 30,
            port: 5555,
            user: "postgres",
        });
        let joined = args.join(" ");
        assert!(joined.contains("--random-seed 9"));
        assert!(joined.contains("--timeout-seconds 30"));
        assert!(joined.contains("--port 5555"));
        assert!(joined.ends_with("postgres"));
    }
}
