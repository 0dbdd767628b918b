//! The operator tree that `explain_stream_table` shows, and the refresh mode
//! decision.
//!
//! The tree is built during analysis from the parsed query. Every node says
//! whether DIFFERENTIAL refresh supports it and, when it does not, why; the
//! first such reason becomes the stream table's FULL fallback reason.

use serde::{Deserialize, Serialize};

/// A refresh mode: the one the engine chose for a stream table (its
/// effective mode) or the one a refresh ran. The only place its names are
/// spelled is here: [`Mode::name`] renders, [`Mode::parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Changes flow through generated delta SQL.
    Differential,
    /// The query is recomputed.
    Full,
}

impl Mode {
    /// `DIFFERENTIAL` or `FULL`, as the catalog and the SQL API spell it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Differential => "DIFFERENTIAL",
            Mode::Full => "FULL",
        }
    }

    /// Read a mode as the catalog stores it; None for anything else.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "DIFFERENTIAL" => Some(Mode::Differential),
            "FULL" => Some(Mode::Full),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The refresh mode a user asks for. (Saved workloads of the harness
/// spelled it `Differential`, `Full`, `Auto`; those spellings still read.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestedMode {
    /// Always differential; unsupported queries are rejected.
    #[serde(alias = "Differential")]
    Differential,
    /// Always full recompute.
    #[serde(alias = "Full")]
    Full,
    /// Differential when supported, else full with the reason recorded.
    #[serde(alias = "Auto")]
    Auto,
}

impl RequestedMode {
    /// Parse a user-supplied mode, case-insensitively.
    pub fn parse(input: &str) -> Result<Self, crate::CoreError> {
        match input.trim().to_ascii_uppercase().as_str() {
            "DIFFERENTIAL" => Ok(RequestedMode::Differential),
            "FULL" => Ok(RequestedMode::Full),
            "AUTO" => Ok(RequestedMode::Auto),
            _ => Err(crate::CoreError::InvalidMode(input.to_string())),
        }
    }

    /// The canonical upper-case name.
    pub fn name(self) -> &'static str {
        match self {
            RequestedMode::Differential => "DIFFERENTIAL",
            RequestedMode::Full => "FULL",
            RequestedMode::Auto => "AUTO",
        }
    }
}

/// One operator of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpNode {
    /// Operator name: Scan, Filter, Project, InnerJoin, Aggregate, Distinct, UnionAll, Subquery, ...
    pub op: String,
    /// Operator detail: table name, predicate, group keys, ...
    pub detail: String,
    /// Whether DIFFERENTIAL refresh maintains this operator.
    pub diff_supported: bool,
    /// Whether its output rows are identified by a hash of their whole
    /// contents (a changed row is a delete plus an insert, duplicates are
    /// counted), rather than by a group key (updated in place).
    pub row_id_sensitive: bool,
    /// Why not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Inputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<OpNode>,
}

impl OpNode {
    /// A supported node.
    pub fn new(op: &str, detail: impl Into<String>, children: Vec<OpNode>) -> Self {
        OpNode {
            op: op.to_string(),
            detail: detail.into(),
            diff_supported: true,
            row_id_sensitive: !matches!(op, "Aggregate" | "Distinct" | "Window"),
            reason: None,
            children,
        }
    }

    /// Mark this node unsupported with a reason.
    pub fn unsupported(mut self, reason: impl Into<String>) -> Self {
        self.diff_supported = false;
        self.reason = Some(reason.into());
        self
    }

    /// The first unsupported reason in pre-order, if any.
    pub fn first_reason(&self) -> Option<&str> {
        if let Some(r) = &self.reason {
            return Some(r);
        }
        self.children.iter().find_map(|c| c.first_reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_modes() {
        assert_eq!(RequestedMode::parse("auto").unwrap(), RequestedMode::Auto);
        assert_eq!(
            RequestedMode::parse(" Differential ").unwrap(),
            RequestedMode::Differential
        );
        assert!(RequestedMode::parse("incremental").is_err());
    }

    #[test]
    fn modes_parse_and_render_in_one_place() {
        for m in [Mode::Differential, Mode::Full] {
            assert_eq!(Mode::parse(m.name()), Some(m));
            assert_eq!(m.to_string(), m.name());
        }
        assert_eq!(Mode::parse("AUTO"), None);
        for r in [
            RequestedMode::Differential,
            RequestedMode::Full,
            RequestedMode::Auto,
        ] {
            let json = serde_json::to_string(&r).expect("serialize");
            assert_eq!(json, format!("\"{}\"", r.name()));
            assert_eq!(serde_json::from_str::<RequestedMode>(&json).ok(), Some(r));
        }
        // Workloads the harness saved before the mode was the engine's own
        // still read.
        assert_eq!(
            serde_json::from_str::<RequestedMode>("\"Differential\"").ok(),
            Some(RequestedMode::Differential)
        );
    }

    #[test]
    fn first_reason_is_preorder() {
        let tree = OpNode::new(
            "Project",
            "",
            vec![
                OpNode::new("Scan", "a", vec![]).unsupported("first"),
                OpNode::new("Scan", "b", vec![]).unsupported("second"),
            ],
        );
        assert_eq!(tree.first_reason(), Some("first"));
    }
}
