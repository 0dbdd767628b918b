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
