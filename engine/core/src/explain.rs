//! Renderings of a stream table's operator tree for
//! `explain_stream_table(name, format)`: JSON (the tree itself), text that
//! reads like PostgreSQL's own EXPLAIN, and Graphviz dot.

use crate::ir::OpNode;

/// The explain formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// Indented text, like EXPLAIN.
    Text,
    /// Graphviz dot.
    Dot,
}

impl Format {
    /// Parse a format name (case-insensitive).
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "text" => Some(Format::Text),
            "dot" => Some(Format::Dot),
            _ => None,
        }
    }
}

/// What explain says about a stream table besides its tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// Stream table name.
    pub name: &'a str,
    /// Requested mode.
    pub requested: &'a str,
    /// Effective mode.
    pub effective: &'a str,
    /// Why it is FULL, when it is.
    pub fallback_reason: Option<&'a str>,
}

fn flags(n: &OpNode) -> String {
    let mut f = vec![if n.diff_supported {
        "differential".to_string()
    } else {
        "FULL only".to_string()
    }];
    f.push(if n.row_id_sensitive {
        "rows by content hash".into()
    } else {
        "rows by group key".into()
    });
    f.join(", ")
}

fn text_node(n: &OpNode, depth: usize, out: &mut String) {
    let indent = if depth == 0 {
        String::new()
    } else {
        format!("{}->  ", " ".repeat(6 * depth - 4))
    };
    out.push_str(&format!("{indent}{}", n.op));
    if !n.detail.is_empty() {
        out.push_str(&format!(" ({})", n.detail));
    }
    out.push_str(&format!("  [{}]\n", flags(n)));
    if let Some(r) = &n.reason {
        out.push_str(&format!("{}  Not maintained: {r}\n", " ".repeat(6 * depth)));
    }
    for c in &n.children {
        text_node(c, depth + 1, out);
    }
}

/// The tree as indented text, EXPLAIN style.
pub fn text(h: &Header<'_>, tree: &OpNode) -> String {
    let mut out = format!(
        "Stream table {} (requested {}, effective {})\n",
        h.name, h.requested, h.effective
    );
    if let Some(r) = h.fallback_reason {
        out.push_str(&format!("FULL because: {r}\n"));
    }
    text_node(tree, 0, &mut out);
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot_node(n: &OpNode, next: &mut usize, out: &mut String) -> usize {
    let id = *next;
    *next += 1;
    let mut label = n.op.clone();
    if !n.detail.is_empty() {
        label.push_str(&format!("\\n{}", dot_escape(&n.detail)));
    }
    if let Some(r) = &n.reason {
        label.push_str(&format!("\\nFULL: {}", dot_escape(r)));
    }
    let color = if n.diff_supported { "black" } else { "red" };
    let style = if n.row_id_sensitive {
        "solid"
    } else {
        "rounded"
    };
    out.push_str(&format!(
        "  n{id} [label=\"{label}\", color={color}, style={style}];\n"
    ));
    for c in &n.children {
        let child = dot_node(c, next, out);
        out.push_str(&format!("  n{child} -> n{id};\n"));
    }
    id
}

/// The tree as a Graphviz digraph; data flows from leaves to the root,
/// nodes that are not maintained differentially are red.
pub fn dot(h: &Header<'_>, tree: &OpNode) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  label=\"{} ({} -> {})\";\n  node [shape=box];\n",
        dot_escape(h.name),
        dot_escape(h.name),
        h.requested,
        h.effective
    );
    let mut next = 0;
    dot_node(tree, &mut next, &mut out);
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> OpNode {
        OpNode::new(
            "Project",
            "k, n",
            vec![OpNode::new(
                "Aggregate",
                "keys: [k] aggregates: [count(*)]",
                vec![OpNode::new("Scan", "public.a", vec![]).unsupported("a \"view\"")],
            )],
        )
    }

    fn header() -> Header<'static> {
        Header {
            name: "st",
            requested: "AUTO",
            effective: "FULL",
            fallback_reason: Some("a view"),
        }
    }

    #[test]
    fn text_reads_like_explain() {
        let t = text(&header(), &tree());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Stream table st (requested AUTO, effective FULL)");
        assert_eq!(lines[1], "FULL because: a view");
        assert!(lines[2].starts_with("Project (k, n)  [differential, rows by content hash]"));
        assert!(lines[3].starts_with("  ->  Aggregate (keys: [k]"), "{t}");
        assert!(
            lines[3].ends_with("[differential, rows by group key]"),
            "{t}"
        );
        assert!(
            lines[4].starts_with("        ->  Scan (public.a)  [FULL only"),
            "{t}"
        );
        assert!(lines[5].contains("Not maintained: a \"view\""), "{t}");
    }

    #[test]
    fn dot_is_a_digraph_with_escaped_labels() {
        let d = dot(&header(), &tree());
        assert!(d.starts_with("digraph \"st\" {"));
        assert!(d.trim_end().ends_with('}'));
        assert_eq!(d.matches("->").count() - 1, 2, "{d}"); // two edges plus the label arrow
        assert!(d.contains("color=red"));
        assert!(d.contains("a \\\"view\\\""), "{d}");
    }

    #[test]
    fn formats_parse_case_insensitively() {
        assert_eq!(Format::parse("JSON"), Some(Format::Json));
        assert_eq!(Format::parse("dot"), Some(Format::Dot));
        assert_eq!(Format::parse("yaml"), None);
    }
}
