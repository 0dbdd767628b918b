//! Comparing a stream table with its query recomputed from scratch: rows
//! as a multiset (each row rendered as PostgreSQL's own row text), column
//! names and types, and the mode of the refresh that just ran. A mismatch
//! renders as a unified diff of the sorted rows, produced by `similar`.

use postgres::Client;
use similar::TextDiff;

/// Most diff lines shown in a report; the rest are counted.
const MAX_DIFF_LINES: usize = 60;

/// A column as `name type`.
pub type Column = (String, String);

/// The visible columns of stream table `st` (hidden `__pgt_` columns left out).
pub fn stream_table_columns(client: &mut Client, st: &str) -> Result<Vec<Column>, postgres::Error> {
    let rows = client.query(
        "SELECT a.attname::text, t.typname::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
         AND a.attname NOT LIKE '\\_\\_pgt\\_%' ORDER BY a.attnum",
        &[&st],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The result columns PostgreSQL reports for `query`.
pub fn query_columns(client: &mut Client, query: &str) -> Result<Vec<Column>, postgres::Error> {
    let stmt = client.prepare(query)?;
    Ok(stmt
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().name().to_string()))
        .collect())
}

fn sorted_text_rows(client: &mut Client, sql: &str) -> Result<Vec<String>, postgres::Error> {
    let rows = client.query(sql, &[])?;
    let mut out: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    out.sort();
    Ok(out)
}

/// The stream table's rows and the recomputed query's rows, each sorted,
/// as row text.
pub fn both_sides(
    client: &mut Client,
    st: &str,
    columns: &[Column],
    query: &str,
) -> Result<(Vec<String>, Vec<String>), postgres::Error> {
    // Columns whose spelling the plan chooses compare in a canonical one
    // (see `spelling`); every other column as PostgreSQL prints it.
    let plan_spelled = crate::spelling::plan_spelled_columns(query);
    let list = |alias: &str| {
        columns
            .iter()
            .map(|(c, ty)| {
                crate::spelling::canonical(alias, c, ty, plan_spelled.contains(&c.to_lowercase()))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let stored = sorted_text_rows(
        client,
        &format!("SELECT ROW({})::text FROM {st} s", list("s")),
    )?;
    let fresh = if plan_spelled.is_empty() {
        sorted_text_rows(client, &format!("SELECT ROW(q.*)::text FROM ({query}) q"))?
    } else {
        sorted_text_rows(
            client,
            &format!("SELECT ROW({})::text FROM ({query}) q", list("q")),
        )?
    };
    if stored != fresh {
        // Under ORDER BY ... LIMIT, rows tied at a kept boundary may be
        // kept either way (see `ties`).
        let names: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
        if let Some(ranked) = crate::ties::ranked(query, &names) {
            if crate::ties::tie_equivalent(client, st, columns, query, &ranked, &list)? {
                return Ok((stored.clone(), stored));
            }
        }
    }
    Ok((stored, fresh))
}

/// Multiset difference of two sorted lists: (only in `a`, only in `b`).
pub fn multiset_difference(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
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

/// A unified diff of two sorted row lists: `-` rows only in the stream
/// table, `+` rows only in the recomputed query, with two rows of context.
pub fn row_diff(stream_table: &[String], query: &[String]) -> String {
    let lines = |rows: &[String]| rows.iter().map(|r| format!("{r}\n")).collect::<String>();
    let (a, b) = (lines(stream_table), lines(query));
    let diff = TextDiff::from_lines(&a, &b);
    let text = diff
        .unified_diff()
        .context_radius(2)
        .header("stream table", "query recomputed")
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= MAX_DIFF_LINES {
        return text;
    }
    let mut out = lines[..MAX_DIFF_LINES].join("\n");
    out.push_str(&format!(
        "\n... {} more diff lines\n",
        lines.len() - MAX_DIFF_LINES
    ));
    out
}

/// Compare stream table `st` with `query` recomputed: None when equal as
/// multisets, else a row diff.
pub fn differences(
    client: &mut Client,
    st: &str,
    query: &str,
) -> Result<Option<String>, postgres::Error> {
    let cols = stream_table_columns(client, st)?;
    let (stored, fresh) = both_sides(client, st, &cols, query)?;
    Ok((stored != fresh).then(|| row_diff(&stored, &fresh)))
}

/// Render a column list as `name type, ...`.
pub fn render_columns(cols: &[Column]) -> String {
    cols.iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn multiset_difference_counts_duplicates() {
        let (x, y) = multiset_difference(&v(&["1", "1", "2"]), &v(&["1", "2", "3"]));
        assert_eq!(x, v(&["1"]));
        assert_eq!(y, v(&["3"]));
    }

    #[test]
    fn row_diff_marks_each_side() {
        let d = row_diff(&v(&["(1,a)", "(2,b)"]), &v(&["(1,a)", "(2,c)"]));
        assert!(d.contains("-(2,b)"), "{d}");
        assert!(d.contains("+(2,c)"), "{d}");
        assert!(d.contains("--- stream table"), "{d}");
    }

    #[test]
    fn row_diff_of_an_empty_side_has_no_blank_row() {
        let d = row_diff(&[], &v(&["(1)"]));
        assert!(!d.lines().any(|l| l == "-"), "{d}");
        assert!(d.contains("+(1)"), "{d}");
    }

    #[test]
    fn row_diff_is_capped() {
        let a: Vec<String> = (0..500).map(|i| format!("({i})")).collect();
        let d = row_diff(&a, &[]);
        assert!(d.lines().count() <= MAX_DIFF_LINES + 1);
        assert!(d.contains("more diff lines"));
    }
}
