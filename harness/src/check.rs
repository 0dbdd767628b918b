//! Checks against a live database: is a stream table equal, as a multiset,
//! to its query recomputed from scratch, and did its last refresh really run
//! the mode we expect?

use postgres::Client;

/// A stream table that differs from its recomputed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Rows only in the stream table (as text, with multiplicity).
    pub only_in_stream_table: Vec<String>,
    /// Rows only in the recomputed query.
    pub only_in_query: Vec<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "stream table differs from its query recomputed:")?;
        for r in &self.only_in_stream_table {
            writeln!(f, "  - {r}   (stream table only)")?;
        }
        for r in &self.only_in_query {
            writeln!(f, "  + {r}   (query only)")?;
        }
        Ok(())
    }
}

/// The visible column names of a stream table, in order.
pub fn visible_columns(client: &mut Client, st: &str) -> Result<Vec<String>, postgres::Error> {
    let rows = client.query(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 \
         AND NOT attisdropped AND attname NOT LIKE '\\_\\_pgt\\_%' ORDER BY attnum",
        &[&st],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn text_rows(client: &mut Client, sql: &str) -> Result<Vec<String>, postgres::Error> {
    let rows = client.query(sql, &[])?;
    let mut out: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    out.sort();
    Ok(out)
}

/// Multiset difference of two sorted lists.
fn diff_sorted(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut i, mut j) = (0, 0);
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                only_a.push(x.clone());
                i += 1;
            }
            (Some(_), Some(y)) => {
                only_b.push(y.clone());
                j += 1;
            }
            (Some(x), None) => {
                only_a.push(x.clone());
                i += 1;
            }
            (None, Some(y)) => {
                only_b.push(y.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (only_a, only_b)
}

/// Compare stream table `st` with `query` recomputed, row by row as text.
pub fn compare(
    client: &mut Client,
    st: &str,
    query: &str,
) -> Result<Option<Mismatch>, postgres::Error> {
    let cols = visible_columns(client, st)?;
    let list = cols
        .iter()
        .map(|c| format!("s.\"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let stored = text_rows(client, &format!("SELECT ROW({list})::text FROM {st} s"))?;
    let fresh = text_rows(client, &format!("SELECT ROW(q.*)::text FROM ({query}) q"))?;
    let (only_st, only_q) = diff_sorted(&stored, &fresh);
    Ok(if only_st.is_empty() && only_q.is_empty() {
        None
    } else {
        Some(Mismatch {
            only_in_stream_table: only_st,
            only_in_query: only_q,
        })
    })
}

/// The mode the most recent refresh of `st` actually ran.
pub fn last_refresh_mode(client: &mut Client, st: &str) -> Result<Option<String>, postgres::Error> {
    let row = client.query_opt(
        "SELECT h.mode FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s ON s.id = h.st_id \
         WHERE s.relid = to_regclass($1) ORDER BY h.id DESC LIMIT 1",
        &[&st],
    )?;
    Ok(row.map(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiset_difference_counts_duplicates() {
        let a: Vec<String> = ["1", "1", "2"].iter().map(|s| s.to_string()).collect();
        let b: Vec<String> = ["1", "2", "3"].iter().map(|s| s.to_string()).collect();
        let (x, y) = diff_sorted(&a, &b);
        assert_eq!(x, vec!["1".to_string()]);
        assert_eq!(y, vec!["3".to_string()]);
    }
}
