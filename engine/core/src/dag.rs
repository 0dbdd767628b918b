//! The stream-table dependency graph: refresh order and cycle detection.
//!
//! Nodes are stream table ids; an edge `a -> b` means `b` reads `a`, so `a`
//! refreshes first.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::CoreError;

/// Order `nodes` so every stream table comes after those it reads.
/// `edges` are `(upstream, downstream)` pairs; edges to unknown nodes are ignored.
pub fn refresh_order(nodes: &[i64], edges: &[(i64, i64)]) -> Result<Vec<i64>, CoreError> {
    let known: BTreeSet<i64> = nodes.iter().copied().collect();
    let mut indegree: BTreeMap<i64, usize> = known.iter().map(|n| (*n, 0)).collect();
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for &(up, down) in edges {
        if known.contains(&up) && known.contains(&down) {
            out.entry(up).or_default().push(down);
            *indegree.entry(down).or_default() += 1;
        }
    }
    let mut ready: BTreeSet<i64> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut order = Vec::with_capacity(known.len());
    while let Some(n) = ready.pop_first() {
        order.push(n);
        for d in out.get(&n).cloned().unwrap_or_default() {
            let e = indegree.get_mut(&d).expect("known node");
            *e -= 1;
            if *e == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() != known.len() {
        let stuck: Vec<String> = indegree
            .iter()
            .filter(|(_, d)| **d > 0)
            .map(|(n, _)| n.to_string())
            .collect();
        return Err(CoreError::Cycle(format!(
            "stream tables {} depend on each other",
            stuck.join(", ")
        )));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chain_orders_upstream_first() {
        assert_eq!(
            refresh_order(&[3, 1, 2], &[(1, 2), (2, 3)]).unwrap(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn cycle_is_rejected() {
        let err = refresh_order(&[1, 2], &[(1, 2), (2, 1)]).unwrap_err();
        assert_eq!(err.sqlstate(), "42P17");
    }

    proptest! {
        #[test]
        fn every_edge_respected(edges in proptest::collection::vec((0i64..8, 0i64..8), 0..20)) {
            // Keep only forward edges so the graph is acyclic.
            let edges: Vec<(i64, i64)> = edges.into_iter().filter(|(a, b)| a < b).collect();
            let nodes: Vec<i64> = (0..8).collect();
            let order = refresh_order(&nodes, &edges).unwrap();
            prop_assert_eq!(order.len(), 8);
            let pos = |n: i64| order.iter().position(|x| *x == n).unwrap();
            for (a, b) in edges {
                prop_assert!(pos(a) < pos(b));
            }
        }
    }
}
