//! The SQL of stream table snapshots: the copy of a stream table's rows
//! into a snapshot table, the restore back, and the default snapshot
//! name. Column lists are written out in full, every identifier quoted, so
//! that a copy never loses, reorders or renames a column whatever the
//! names are (quotes, spaces, Unicode, reserved words). Fuzzed by the
//! `apply_sql` target.

use crate::sql::quote_ident;

/// PostgreSQL's longest identifier, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// `schema.name`, both quoted.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Copy every row of `from` into `to` (both qualified SQL names), column
/// by column in `columns` order; returns the number of rows copied as
/// text. Used both ways: stream table to snapshot, snapshot to stream
/// table.
pub fn copy_rows_sql(from: &str, to: &str, columns: &[String]) -> String {
    let list = column_list(columns);
    format!(
        "WITH __pgt_copied AS (INSERT INTO {to} ({list}) SELECT {list} FROM {from} RETURNING 1) \
         SELECT pg_catalog.count(*)::pg_catalog.text FROM __pgt_copied"
    )
}

/// The default name of snapshot `n` of stream table `name`:
/// `<name>_snapshot_<n>`, the stream table's name cut at a character
/// boundary so that the whole fits in [`MAX_IDENTIFIER_BYTES`].
pub fn default_name(name: &str, n: u32) -> String {
    let suffix = format!("_snapshot_{n}");
    let mut base = name.to_string();
    while base.len() + suffix.len() > MAX_IDENTIFIER_BYTES {
        base.pop();
    }
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_names_every_column_quoted_in_order() {
        let cols = vec!["k".to_string(), "Group \"A\"".into(), "select".into()];
        assert_eq!(
            copy_rows_sql("\"s\".\"st\"", "\"a b\".\"snap\"", &cols),
            "WITH __pgt_copied AS (INSERT INTO \"a b\".\"snap\" (k, \"Group \"\"A\"\"\", \"select\") \
             SELECT k, \"Group \"\"A\"\"\", \"select\" FROM \"s\".\"st\" RETURNING 1) \
             SELECT pg_catalog.count(*)::pg_catalog.text FROM __pgt_copied"
        );
    }

    #[test]
    fn default_names_fit_in_63_bytes_at_a_character_boundary() {
        assert_eq!(default_name("sales", 1), "sales_snapshot_1");
        let long = "ü".repeat(40);
        let name = default_name(&long, 12);
        assert!(name.len() <= MAX_IDENTIFIER_BYTES, "{name}");
        assert!(name.ends_with("_snapshot_12"));
        assert_eq!(name.len(), 2 * 25 + "_snapshot_12".len());
    }
}
