//! Reading `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` output: execution
//! time, temp blocks, and a plan-shape fingerprint (node types and
//! relations in join order) that changes when the planner changes its mind.

use serde::Serialize;
use serde_json::Value;

/// What one EXPLAIN says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanFacts {
    /// Execution time, ms (0 without ANALYZE).
    pub execution_ms: f64,
    /// Temp blocks read by the whole plan.
    pub temp_read_blocks: u64,
    /// Temp blocks written by the whole plan.
    pub temp_written_blocks: u64,
    /// Node types and relations, nested in plan order.
    pub fingerprint: String,
}

/// CPU time and elapsed time of one statement's executor, from the detail
/// of PostgreSQL's `EXECUTOR STATISTICS` report (`log_executor_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ExecutorUsage {
    /// User plus system CPU time of the backend, ms: what the statement
    /// cost, whatever else the machine was doing.
    pub cpu_ms: f64,
    /// Elapsed time, ms (includes waiting for a CPU on a busy machine).
    pub elapsed_ms: f64,
}

/// Read `!\t0.003828 s user, 0.000000 s system, 0.003828 s elapsed` from an
/// `EXECUTOR STATISTICS` detail; None when the line is absent.
pub fn executor_usage(detail: &str) -> Option<ExecutorUsage> {
    let line = detail
        .lines()
        .find(|l| l.contains(" s user,") && l.contains(" s elapsed"))?;
    let mut seconds = line
        .trim_start_matches(['!', '\t', ' '])
        .split(',')
        .map(|part| part.split_whitespace().next()?.parse::<f64>().ok());
    let (user, system, elapsed) = (seconds.next()??, seconds.next()??, seconds.next()??);
    Some(ExecutorUsage {
        cpu_ms: (user + system) * 1000.0,
        elapsed_ms: elapsed * 1000.0,
    })
}

/// A relation name without the oid that change buffers carry
/// (`changes_16508` is `changes_N`), so shapes compare across databases.
fn relation(rel: &str) -> String {
    match rel.strip_prefix("changes_") {
        Some(oid) if oid.chars().all(|c| c.is_ascii_digit()) => "changes_N".into(),
        _ => rel.to_string(),
    }
}

fn node_fingerprint(n: &Value) -> String {
    let mut s = n["Node Type"].as_str().unwrap_or("?").to_string();
    if let Some(rel) = n["Relation Name"].as_str() {
        s.push_str(&format!("[{}]", relation(rel)));
    }
    if let Some(children) = n["Plans"].as_array() {
        let inner: Vec<String> = children.iter().map(node_fingerprint).collect();
        s.push_str(&format!("({})", inner.join(",")));
    }
    s
}

/// Facts from the JSON EXPLAIN document (`[ { "Plan": ..., "Execution Time": ... } ]`).
pub fn facts(explain: &Value) -> PlanFacts {
    let top = &explain[0];
    let plan = &top["Plan"];
    let num = |k: &str| plan[k].as_u64().unwrap_or(0);
    PlanFacts {
        execution_ms: top["Execution Time"].as_f64().unwrap_or(0.0),
        temp_read_blocks: num("Temp Read Blocks"),
        temp_written_blocks: num("Temp Written Blocks"),
        fingerprint: node_fingerprint(plan),
    }
}

/// Where two plan shapes first differ, as two short excerpts.
pub fn shape_difference(baseline: &str, measured: &str) -> (String, String) {
    let p = baseline
        .char_indices()
        .zip(measured.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(baseline.len().min(measured.len()));
    let excerpt = |s: &str| {
        let start = s[..p.min(s.len())]
            .char_indices()
            .rev()
            .nth(30)
            .map(|(i, _)| i)
            .unwrap_or(0);
        let end = s[p.min(s.len())..]
            .char_indices()
            .nth(70)
            .map(|(i, _)| p + i)
            .unwrap_or(s.len());
        format!(
            "{}{}{}",
            if start > 0 { "…" } else { "" },
            &s[start..end],
            if end < s.len() { "…" } else { "" }
        )
    };
    (excerpt(baseline), excerpt(measured))
}

#[cfg(test)]
mod tests {
    #[test]
    fn executor_statistics_give_cpu_and_elapsed_time() {
        let detail = "! system usage stats:\n!\t0.003828 s user, 0.000100 s system, 0.009000 s elapsed\n!\t[0.019705 s user, 0.011907 s system total]\n";
        let u = executor_usage(detail).expect("usage");
        assert!((u.cpu_ms - 3.928).abs() < 1e-9, "{u:?}");
        assert!((u.elapsed_ms - 9.0).abs() < 1e-9, "{u:?}");
        assert_eq!(executor_usage("! system usage stats:\n"), None);
    }

    use super::*;

    #[test]
    fn facts_read_time_temp_blocks_and_shape() {
        let doc = serde_json::json!([{
            "Plan": {
                "Node Type": "Hash Join", "Temp Read Blocks": 12, "Temp Written Blocks": 12,
                "Plans": [
                    {"Node Type": "Seq Scan", "Relation Name": "lineitem"},
                    {"Node Type": "Seq Scan", "Relation Name": "changes_16508"},
                    {"Node Type": "Hash", "Plans": [{"Node Type": "Index Scan", "Relation Name": "orders"}]}
                ]
            },
            "Execution Time": 3.5
        }]);
        let f = facts(&doc);
        assert_eq!(f.execution_ms, 3.5);
        assert_eq!((f.temp_read_blocks, f.temp_written_blocks), (12, 12));
        assert_eq!(
            f.fingerprint,
            "Hash Join(Seq Scan[lineitem],Seq Scan[changes_N],Hash(Index Scan[orders]))"
        );
    }
}
