//! The rows of `__pgt_d<s>`: a source's consumed row images netted per
//! exact value, without comparing every image with every other one.
//!
//! Images are netted before anything evaluates them: a row changed several
//! times between refreshes leaves only its first old and last new image, so
//! no expression of the query ever sees a value that neither state held (it
//! could fail where FULL succeeds). Netting every image (a window over all
//! of them, partitioned by every column) cost about 2.5 µs per image,
//! three quarters of a TPC-H Q6 refresh.
//!
//! Most refreshes have no image that can cancel with another: two images
//! of the same value have the same value in every column, so in particular
//! in a few cheap *prefix* columns (the source's primary key, or a few
//! columns of types whose equality is exact). One hash aggregate over the
//! prefixes finds those that two change buffer rows share. When none is
//! shared, every image can only cancel with the other image of its own
//! row, which happens exactly when an UPDATE left every column as it was:
//! the images are emitted as they are, but for such UPDATEs, and the window
//! is not scanned. When a few prefixes are shared, only the images whose
//! prefix may be one of them go through the window (an image can cancel
//! only with an image of its own value, whose prefix is its own); the
//! others pass as they are, again but for UPDATEs that changed nothing.
//! When many are, every image goes through the window. Which case holds
//! is a one-time filter: PostgreSQL runs the branches of one case only.
//! The consumed images are read from the buffer once (`__pgt_i<s>`), and
//! the shared prefixes and every branch read them from there: a statement
//! that named the buffer and its consumed predicate at every branch was
//! mostly netting, which a new connection parsed and planned and every
//! refresh started (a one-table aggregate's refresh spent more time
//! starting its plan than running it).
//! The aggregate groups NULLs together, as the window partitions do; a
//! comparison a NULL makes unknown sends an image through the window.
//!
//! Which prefixes are shared is looked up in a hashed subplan. A first
//! split joined every image with the shared prefixes, which PostgreSQL
//! planned as a nested loop and was slower than the window alone.

use crate::catalog::{Capture, ImageEquality, SourceTable};
use crate::sql::quote_ident;

/// Most prefix columns taken from a source without a usable primary key
/// (more columns tell more rows apart; each costs a little hashing).
const MAX_PREFIX: usize = 6;

/// Most shared prefixes for which only the images sharing one go through
/// the window; with more, every image does. A thousand prefixes of six
/// wide columns still hash within the smallest `work_mem`.
const MAX_SPLIT_SHARED: usize = 1000;

/// The elements that put two row images together exactly when they are
/// the same values, from the columns themselves (`col(k)` spells column
/// `k`): `None` when some column's values can only be told apart by their
/// text (or the kinds are not known).
fn image_partition(kinds: &[ImageEquality], cols: &[String]) -> Option<Vec<String>> {
    if kinds.len() != cols.len() || cols.is_empty() {
        return None;
    }
    let mut parts = Vec::with_capacity(cols.len());
    for (kind, col) in kinds.iter().zip(cols) {
        match kind {
            ImageEquality::Exact => parts.push(col.clone()),
            ImageEquality::Bytes => parts.push(format!("{col} COLLATE pg_catalog.\"C\"")),
            ImageEquality::Padded => {
                parts.push(format!("{col} COLLATE pg_catalog.\"C\""));
                parts.push(format!("pg_catalog.octet_length({col})"));
            }
            ImageEquality::NumericScale => {
                parts.push(col.clone());
                parts.push(format!("pg_catalog.scale({col})"));
            }
            ImageEquality::Text => return None,
        }
    }
    Some(parts)
}

/// The same-value elements of an image whose columns are `cols`: the
/// columns themselves where their kinds allow, otherwise the row's text.
fn same_value_elements(kinds: &[ImageEquality], cols: &[String]) -> Vec<String> {
    image_partition(kinds, cols)
        .unwrap_or_else(|| vec![format!("ROW({})::pg_catalog.text", cols.join(", "))])
}

/// The indexes (into the source's columns) of the prefix columns: the
/// primary key when every column of it has a known kind, otherwise up to
/// [`MAX_PREFIX`] columns whose equality is exact; empty when there are
/// none (every image then goes through the window).
///
/// Only a trigger-captured buffer has a prefix. A WAL-captured source's
/// changes are a union with a function that decodes what the buffer does
/// not hold yet, which the branches here would call several times.
fn prefix_columns(src: &SourceTable) -> Vec<usize> {
    let kinds = &src.image_equality;
    if kinds.len() != src.columns.len() || src.capture != Capture::Trigger {
        return Vec::new();
    }
    let key: Option<Vec<usize>> = src
        .key
        .iter()
        .map(|k| {
            src.columns
                .iter()
                .position(|c| c == k)
                .filter(|&i| kinds[i] != ImageEquality::Text)
        })
        .collect();
    match key {
        Some(key) if !key.is_empty() => key,
        _ => (0..kinds.len())
            .filter(|&i| kinds[i] == ImageEquality::Exact)
            .take(MAX_PREFIX)
            .collect(),
    }
}

/// What the netted images of one source are read from.
pub(super) struct Buffer<'a> {
    /// The source's index, naming `__pgt_dk<s>`.
    pub s: usize,
    /// The source.
    pub src: &'a SourceTable,
    /// The change buffer's qualified name (alias `b` in `consumed`).
    pub buffer: &'a str,
    /// The predicate (over alias `b`) selecting the consumed changes.
    pub consumed: &'a str,
}

/// `b.__n1, ...` or `b.__o1, ...`: buffer column `k` of an image.
fn image_col(image: char, k: usize) -> String {
    format!("b.__{image}{}", k + 1)
}

/// The CTEs defining `__pgt_d<s>(cols, __pgt_m)`: the consumed images,
/// netted (see the module comment). `cols` is the quoted column list.
pub(super) fn netted_images_ctes(b: &Buffer<'_>, cols: &str) -> Vec<String> {
    let Buffer {
        s,
        src,
        buffer,
        consumed,
    } = b;
    let n = src.columns.len();
    let new_img: Vec<String> = (0..n).map(|k| image_col('n', k)).collect();
    let old_img: Vec<String> = (0..n).map(|k| image_col('o', k)).collect();
    let i_cols: Vec<String> = src
        .columns
        .iter()
        .map(|c| format!("i.{}", quote_ident(c)))
        .collect();
    // Both images of the consumed changes, the new one meeting `also_new`
    // and the old one `also_old`: `new` of every change but a DELETE,
    // `old` of every change but an INSERT.
    let each = |new: &str, old: &str, also_new: &str, also_old: &str| {
        format!(
            "SELECT {new} FROM {buffer} b WHERE b.op <> 'D' AND {consumed}{also_new} \
             UNION ALL SELECT {old} FROM {buffer} b WHERE b.op <> 'I' AND {consumed}{also_old}"
        )
    };
    let signed = |also: &str| {
        each(
            &format!("{}, 1::bigint", new_img.join(", ")),
            &format!("{}, -1::bigint", old_img.join(", ")),
            also,
            also,
        )
    };
    // The first row of each value is kept by `__pgt_r < 2`, not `= 1`:
    // PostgreSQL has no statistics for a window's output and estimates
    // `= 1` at half a per cent of the rows, so every delta looked like one
    // row and joins of two deltas ran as nested loops rescanning one of
    // them per row of the other (TPC-H Q12: 53 ms of a 60 ms refresh); an
    // inequality is estimated at a third.
    let window = |images: String| {
        format!(
            "SELECT {cols}, __pgt_n FROM (SELECT i.*, \
             (pg_catalog.sum(i.__pgt_m) OVER __pgt_w)::bigint AS __pgt_n, \
             pg_catalog.row_number() OVER __pgt_w AS __pgt_r FROM ({images}\
             ) i({cols}, __pgt_m) WINDOW __pgt_w AS (PARTITION BY {})) n \
             WHERE n.__pgt_r < 2 AND n.__pgt_n <> 0",
            same_value_elements(&src.image_equality, &i_cols).join(", "),
        )
    };
    let prefix = prefix_columns(src);
    if prefix.is_empty() {
        return vec![format!(
            "__pgt_d{s}({cols}, __pgt_m) AS MATERIALIZED ({})",
            window(signed(""))
        )];
    }
    let images = format!("__pgt_i{s}");
    let shared = format!("__pgt_dk{s}");
    let k_names: Vec<String> = (1..=prefix.len()).map(|j| format!("k{j}")).collect();
    let i_col = |k: usize| format!("__pgt_c{}", k + 1);
    let all_cols: Vec<String> = (0..n).map(i_col).collect();
    let prefix_cols: Vec<String> = prefix.iter().map(|&k| i_col(k)).collect();
    let same_values: Vec<String> = same_value_elements(&src.image_equality, &old_img)
        .into_iter()
        .zip(same_value_elements(&src.image_equality, &new_img))
        .map(|(o, n)| {
            format!("COALESCE({o} OPERATOR(pg_catalog.=) {n}, {o} IS NULL AND {n} IS NULL)")
        })
        .collect();
    let unchanged = format!("(b.op = 'U' AND {})", same_values.join(" AND "));
    // Every consumed image, read from the buffer once: signed, with the
    // position of its buffer row and whether it is an image of an UPDATE
    // that left every value as it was (never NULL). Everything below
    // reads this instead of the buffer, so the statement names the
    // consumed predicate twice rather than at every branch (it was most of
    // a one-table refresh statement's text, which a new connection parses
    // and plans, and most of the plan every refresh starts).
    let images_cte = format!(
        "{images}({}, __pgt_m, __pgt_pos, __pgt_same) AS MATERIALIZED ({})",
        all_cols.join(", "),
        each(
            &format!("{}, 1::bigint, b.ctid, {unchanged}", new_img.join(", ")),
            &format!("{}, -1::bigint, b.ctid, {unchanged}", old_img.join(", ")),
            "",
            "",
        )
    );
    // A prefix is shared when two buffer rows have it. Rows are told apart
    // by their position, not their change id: rows decoded from the WAL
    // before a source went back to triggers carry WAL positions as ids,
    // and every row of one multi-row insert record has the same one.
    let shared_cte = format!(
        "{shared}({keys}) AS MATERIALIZED (SELECT {prefix} FROM {images} \
         GROUP BY {prefix} \
         HAVING pg_catalog.min(__pgt_pos) OPERATOR(pg_catalog.<>) pg_catalog.max(__pgt_pos))",
        keys = k_names.join(", "),
        prefix = prefix_cols.join(", "),
    );
    // Whether an image's prefix is one no other buffer row has: true, or
    // not true where a NULL makes the comparison unknown (such an image
    // then goes through the window, which is exact for every image). A
    // hashed subplan: a join of every image with the shared prefixes was
    // planned as a nested loop. It is used only while the shared prefixes
    // are few, and its LIMIT (never reached then) keeps PostgreSQL's
    // estimate of them small enough to hash them at any `work_mem`. With
    // none shared it is true for every image.
    let alone = format!(
        "(NOT (({}) OPERATOR(pg_catalog.=) ANY (SELECT {} FROM {shared} LIMIT {MAX_SPLIT_SHARED})))",
        prefix_cols.join(", "),
        k_names.join(", ")
    );
    // Few prefixes shared (none included): every image whose prefix is not
    // one of them as it is, but an UPDATE's that changed no value (it can
    // only cancel with the other image of its own row, and has the same
    // prefix as that image when it does), and only the others through the
    // window, which then sorts a few rows instead of all (TPC-H Q19 at
    // SF 1: 15,185 images sorted on disk when seven prefixes were shared).
    // Many shared: every image through the window. Each condition on the
    // shared prefixes is a one-time filter: PostgreSQL skips the branches
    // it rules out.
    let count = format!("(SELECT pg_catalog.count(*) FROM {shared})");
    let read = |filter: String| {
        format!(
            "SELECT {}, __pgt_m FROM {images} WHERE {filter}",
            all_cols.join(", ")
        )
    };
    let direct = read(format!(
        "{count} <= {MAX_SPLIT_SHARED} AND NOT __pgt_same AND {alone} IS TRUE"
    ));
    let windowed = format!(
        "{} UNION ALL {}",
        read(format!("{count} > {MAX_SPLIT_SHARED}")),
        read(format!(
            "{count} BETWEEN 1 AND {MAX_SPLIT_SHARED} AND {alone} IS NOT TRUE"
        )),
    );
    vec![
        images_cte,
        shared_cte,
        format!(
            "__pgt_d{s}({cols}, __pgt_m) AS MATERIALIZED ({direct} UNION ALL {})",
            window(windowed),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SourceKind;
    use ImageEquality::{Bytes, Exact, NumericScale, Padded, Text};

    fn source(columns: &[&str], kinds: &[ImageEquality], key: &[&str]) -> SourceTable {
        SourceTable {
            oid: 1,
            schema: "public".into(),
            name: "t".into(),
            kind: SourceKind::Table,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            capture_problem: None,
            capture: Capture::Trigger,
            key: key.iter().map(|c| c.to_string()).collect(),
            image_equality: kinds.to_vec(),
        }
    }

    /// The netting CTEs of `src` as source `s` read from `buffer`.
    fn ctes_of(src: &SourceTable, s: usize, buffer: &str, cols: &str) -> Vec<String> {
        let b = Buffer {
            s,
            src,
            buffer,
            consumed: "C",
        };
        netted_images_ctes(&b, cols)
    }

    #[test]
    fn rows_are_netted_by_their_columns_only_when_every_column_says_what_is_the_same_value() {
        let cols = vec!["i.k".to_string(), "i.n".to_string()];
        assert_eq!(
            image_partition(&[Exact, NumericScale], &cols).map(|p| p.join(", ")),
            Some("i.k, i.n, pg_catalog.scale(i.n)".to_string())
        );
        assert_eq!(
            image_partition(&[Bytes, Padded], &cols).map(|p| p.join(", ")),
            Some(
                "i.k COLLATE pg_catalog.\"C\", i.n COLLATE pg_catalog.\"C\", \
                 pg_catalog.octet_length(i.n)"
                    .to_string()
            )
        );
        assert_eq!(image_partition(&[Exact, Text], &cols), None);
        assert_eq!(image_partition(&[], &cols), None, "not known");
        assert_eq!(image_partition(&[Exact], &cols), None, "not one per column");
    }

    #[test]
    fn the_prefix_is_the_key_or_else_a_few_exactly_compared_columns() {
        let kinds = [Text, Exact, Bytes, Exact, Exact, Exact];
        let cols = ["f", "a", "name", "b", "c", "d"];
        assert_eq!(
            prefix_columns(&source(&cols, &kinds, &["name", "a"])),
            vec![2, 1]
        );
        assert_eq!(
            prefix_columns(&source(&cols, &kinds, &["f"])),
            vec![1, 3, 4, 5],
            "a key compared by text only is no prefix"
        );
        assert_eq!(
            prefix_columns(&source(&cols, &kinds, &[])),
            vec![1, 3, 4, 5]
        );
        assert!(
            prefix_columns(&source(&cols, &[], &["a"])).is_empty(),
            "kinds unknown"
        );
        assert!(prefix_columns(&source(&["f"], &[Text], &[])).is_empty());
        let mut wal = source(&cols, &kinds, &["a"]);
        wal.capture = Capture::Wal;
        assert!(prefix_columns(&wal).is_empty(), "WAL capture");
    }

    #[test]
    fn images_skip_the_window_unless_their_prefix_is_shared() {
        let src = source(&["id", "v"], &[Exact, NumericScale], &["id"]);
        let ctes = ctes_of(&src, 2, "pgtrickle_changes.changes_9", "id, v");
        assert_eq!(ctes.len(), 3);
        // The consumed images, read once: signed, positioned, and marked
        // when an UPDATE changed no value (a numeric's scale counts).
        let i = &ctes[0];
        assert!(i.starts_with(
            "__pgt_i2(__pgt_c1, __pgt_c2, __pgt_m, __pgt_pos, __pgt_same) AS MATERIALIZED (\
             SELECT b.__n1, b.__n2, 1::bigint, b.ctid, (b.op = 'U' AND COALESCE(b.__o1 \
             OPERATOR(pg_catalog.=) b.__n1, b.__o1 IS NULL AND b.__n1 IS NULL) AND "
        ));
        assert!(
            i.contains("pg_catalog.scale(b.__o2) OPERATOR(pg_catalog.=) pg_catalog.scale(b.__n2)")
        );
        assert!(i.contains(
            "FROM pgtrickle_changes.changes_9 b WHERE b.op <> 'D' AND C UNION ALL \
             SELECT b.__o1, b.__o2, -1::bigint, b.ctid, (b.op = 'U' AND "
        ));
        assert!(i.ends_with("FROM pgtrickle_changes.changes_9 b WHERE b.op <> 'I' AND C)"));
        assert_eq!(
            i.matches("pgtrickle_changes.changes_9").count(),
            2,
            "the buffer is read once per image kind"
        );
        assert_eq!(
            ctes[1],
            "__pgt_dk2(k1) AS MATERIALIZED (SELECT __pgt_c1 FROM __pgt_i2 GROUP BY __pgt_c1 \
             HAVING pg_catalog.min(__pgt_pos) OPERATOR(pg_catalog.<>) pg_catalog.max(__pgt_pos))"
        );
        let d = &ctes[2];
        assert!(!d.contains("changes_9"), "{d}");
        let unshared =
            "(NOT ((__pgt_c1) OPERATOR(pg_catalog.=) ANY (SELECT k1 FROM __pgt_dk2 LIMIT 1000)))";
        let count = "(SELECT pg_catalog.count(*) FROM __pgt_dk2)";
        let read = "SELECT __pgt_c1, __pgt_c2, __pgt_m FROM __pgt_i2 WHERE ";
        // Few or none shared: as they are, those whose prefix is not (but
        // UPDATEs that changed nothing); then the window's: every image
        // when many are shared, else those whose prefix may be (a NULL
        // making it unknown).
        let selects: Vec<&str> = d.split(" UNION ALL ").collect();
        assert_eq!(selects.len(), 3, "{d}");
        assert_eq!(
            selects[0],
            format!(
                "__pgt_d2(id, v, __pgt_m) AS MATERIALIZED ({read}{count} <= 1000 \
                 AND NOT __pgt_same AND {unshared} IS TRUE"
            )
        );
        assert!(
            selects[1].ends_with(&format!("({read}{count} > 1000")),
            "{}",
            selects[1]
        );
        assert!(selects[2].starts_with(&format!(
            "{read}{count} BETWEEN 1 AND 1000 AND {unshared} IS NOT TRUE)"
        )));
        assert!(selects[2].contains("PARTITION BY i.id, i.v, pg_catalog.scale(i.v)"));
    }

    #[test]
    fn a_prefix_of_several_columns_is_looked_up_as_a_row() {
        let src = source(&["a", "b", "f"], &[Exact, Exact, Text], &[]);
        let ctes = ctes_of(&src, 0, "buf", "a, b, f");
        assert!(ctes[1].starts_with(
            "__pgt_dk0(k1, k2) AS MATERIALIZED (SELECT __pgt_c1, __pgt_c2 FROM __pgt_i0 \
             GROUP BY __pgt_c1, __pgt_c2"
        ));
        assert!(ctes[2].contains(
            "(NOT ((__pgt_c1, __pgt_c2) OPERATOR(pg_catalog.=) ANY (SELECT k1, k2 FROM __pgt_dk0 LIMIT 1000))) IS TRUE"
        ));
        assert!(ctes[2].contains("PARTITION BY ROW(i.a, i.b, i.f)::pg_catalog.text"));
    }

    #[test]
    fn without_a_prefix_every_image_is_netted_by_its_text() {
        let ctes = ctes_of(&source(&["f"], &[Text], &[]), 0, "buf", "f");
        assert_eq!(ctes.len(), 1);
        assert!(ctes[0].contains("PARTITION BY ROW(i.f)::pg_catalog.text"));
        assert!(!ctes[0].contains("__pgt_dk"));
    }

    #[test]
    fn only_types_whose_equal_values_print_alike_compare_by_value() {
        // int4, date, timestamptz, uuid.
        for t in [23, 1082, 1184, 2950] {
            assert_eq!(ImageEquality::of(t), Exact, "{t}");
        }
        for t in [19, 25, 1043] {
            assert_eq!(ImageEquality::of(t), Bytes, "{t}");
        }
        assert_eq!(ImageEquality::of(1042), Padded, "bpchar");
        assert_eq!(ImageEquality::of(1700), NumericScale);
        // float8 (-0 = 0), interval ('1 day' = '24 hours'), jsonb, a domain.
        for t in [701, 1186, 3802, 16_384] {
            assert_eq!(ImageEquality::of(t), Text, "{t}");
        }
    }
}
