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
    let both = |new: &str, old: &str, also: &str| each(new, old, also, also);
    let signed_each = |also_new: &str, also_old: &str| {
        each(
            &format!("{}, 1::bigint", new_img.join(", ")),
            &format!("{}, -1::bigint", old_img.join(", ")),
            also_new,
            also_old,
        )
    };
    let signed = |also: &str| signed_each(also, also);
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
    let shared = format!("__pgt_dk{s}");
    let k_names: Vec<String> = (1..=prefix.len()).map(|j| format!("k{j}")).collect();
    let prefix_of =
        |image: char| -> Vec<String> { prefix.iter().map(|&k| image_col(image, k)).collect() };
    // A prefix is shared when two buffer rows have it. Rows are told apart
    // by their position, not their change id: rows decoded from the WAL
    // before a source went back to triggers carry WAL positions as ids,
    // and every row of one multi-row insert record has the same one.
    let shared_cte = format!(
        "{shared}({keys}) AS MATERIALIZED (SELECT {keys} FROM ({}\
         ) x({keys}, c) GROUP BY {keys} \
         HAVING pg_catalog.min(x.c) OPERATOR(pg_catalog.<>) pg_catalog.max(x.c))",
        both(
            &format!("{}, b.ctid", prefix_of('n').join(", ")),
            &format!("{}, b.ctid", prefix_of('o').join(", ")),
            "",
        ),
        keys = k_names.join(", "),
    );
    let same_values: Vec<String> = same_value_elements(&src.image_equality, &old_img)
        .into_iter()
        .zip(same_value_elements(&src.image_equality, &new_img))
        .map(|(o, n)| {
            format!("COALESCE({o} OPERATOR(pg_catalog.=) {n}, {o} IS NULL AND {n} IS NULL)")
        })
        .collect();
    let changed = format!("NOT (b.op = 'U' AND {})", same_values.join(" AND "));
    // Whether an image's prefix is one no other buffer row has: true, or
    // not true where a NULL makes the comparison unknown (such an image
    // then goes through the window, which is exact for every image). A
    // hashed subplan: a join of every image with the shared prefixes was
    // planned as a nested loop. It is used only while the shared prefixes
    // are few, and its LIMIT (never reached then) keeps PostgreSQL's
    // estimate of them small enough to hash them at any `work_mem`.
    let unshared = |image: char| -> String {
        format!(
            "(NOT (({}) OPERATOR(pg_catalog.=) ANY (SELECT {} FROM {shared} LIMIT {MAX_SPLIT_SHARED})))",
            prefix_of(image).join(", "),
            k_names.join(", ")
        )
    };
    // Unless many prefixes are shared, every image whose prefix is not one
    // of them (every image when none is) passes as it is, but an UPDATE's
    // that changed no value: it can only cancel with the other image of
    // its own row, and has the same prefix as that image when it does. The
    // lookup costs nothing when none is shared (PostgreSQL answers a hashed
    // subplan with no rows without evaluating the image). When some are,
    // the window takes every other image (only those whose prefix may be
    // shared while they are few), so it sorts a few rows instead of all
    // (TPC-H Q19 at SF 1: 15,185 images sorted on disk when seven prefixes
    // were shared). The conditions that read the shared prefixes alone
    // (`few_or_none`, `some`) are one-time filters: PostgreSQL skips the
    // branches they rule out (`many` sits beside a per-image test). Four
    // reads of the buffer (not eight, one pair per case): every read is
    // planned and started at every run, most of a single-row refresh.
    let (alone_new, alone_old) = (unshared('n'), unshared('o'));
    let count = format!("(SELECT pg_catalog.count(*) FROM {shared})");
    let few_or_none = format!("{count} <= {MAX_SPLIT_SHARED}");
    let some = format!("EXISTS (SELECT FROM {shared})");
    let many = format!("{count} > {MAX_SPLIT_SHARED}");
    let windowed = signed_each(
        &format!(" AND {some} AND ({many} OR {alone_new} IS NOT TRUE)"),
        &format!(" AND {some} AND ({many} OR {alone_old} IS NOT TRUE)"),
    );
    vec![
        shared_cte,
        format!(
            "__pgt_d{s}({cols}, __pgt_m) AS MATERIALIZED ({} UNION ALL {})",
            signed_each(
                &format!(" AND {few_or_none} AND {changed} AND {alone_new} IS TRUE"),
                &format!(" AND {few_or_none} AND {changed} AND {alone_old} IS TRUE"),
            ),
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
        assert_eq!(ctes.len(), 2);
        assert!(ctes[0]
            .starts_with("__pgt_dk2(k1) AS MATERIALIZED (SELECT k1 FROM (SELECT b.__n1, b.ctid"));
        assert!(ctes[0].ends_with(
            "GROUP BY k1 HAVING pg_catalog.min(x.c) OPERATOR(pg_catalog.<>) pg_catalog.max(x.c))"
        ));
        let d = &ctes[1];
        assert!(d.starts_with(
            "__pgt_d2(id, v, __pgt_m) AS MATERIALIZED (SELECT b.__n1, b.__n2, 1::bigint"
        ));
        // An UPDATE that changed nothing, where a numeric's scale counts as
        // a change.
        let changed = "NOT (b.op = 'U' AND COALESCE(b.__o1 OPERATOR(pg_catalog.=) b.__n1, b.__o1 IS NULL AND b.__n1 IS NULL) AND ";
        assert!(
            d.contains("pg_catalog.scale(b.__o2) OPERATOR(pg_catalog.=) pg_catalog.scale(b.__n2)")
        );
        let image = |new: bool| {
            if new {
                "b.__n1, b.__n2, 1::bigint FROM pgtrickle_changes.changes_9 b WHERE b.op <> 'D' AND C AND "
            } else {
                "b.__o1, b.__o2, -1::bigint FROM pgtrickle_changes.changes_9 b WHERE b.op <> 'I' AND C AND "
            }
        };
        // Each image is looked up by its own prefix.
        let unshared = |new: bool| {
            format!(
                "(NOT ((b.__{}1) OPERATOR(pg_catalog.=) ANY (SELECT k1 FROM __pgt_dk2 LIMIT 1000)))",
                if new { "n" } else { "o" }
            )
        };
        let few_or_none = "(SELECT pg_catalog.count(*) FROM __pgt_dk2) <= 1000";
        let some = "EXISTS (SELECT FROM __pgt_dk2)";
        let many = "(SELECT pg_catalog.count(*) FROM __pgt_dk2) > 1000";
        let selects: Vec<&str> = d.split(" UNION ALL SELECT ").collect();
        // Unless many are shared, every image whose prefix is not (all of
        // them when none is), as it is; then the window's when some are
        // shared: every image when many are, else those whose prefix may
        // be (a NULL making it unknown).
        let expected: Vec<(bool, String)> = vec![
            (true, format!("{few_or_none} AND {changed}")),
            (false, format!("{few_or_none} AND {changed}")),
            (
                true,
                format!("{some} AND ({many} OR {} IS NOT TRUE)", unshared(true)),
            ),
            (
                false,
                format!("{some} AND ({many} OR {} IS NOT TRUE)", unshared(false)),
            ),
        ];
        assert_eq!(selects.len(), expected.len(), "{d}");
        for (k, ((new, filter), select)) in expected.iter().zip(&selects).enumerate() {
            assert!(
                select.contains(&format!("{}{filter}", image(*new))),
                "select {k}: {select}"
            );
        }
        for (k, new) in [(0, true), (1, false)] {
            assert!(
                selects[k].ends_with(&format!("AND {} IS TRUE", unshared(new))),
                "select {k}: {}",
                selects[k]
            );
        }
        // The buffer is read by the shared-prefix aggregate and these four.
        assert_eq!(
            ctes.concat()
                .matches("FROM pgtrickle_changes.changes_9 b")
                .count(),
            6
        );
        assert!(selects[3].contains("PARTITION BY i.id, i.v, pg_catalog.scale(i.v)"));
    }

    #[test]
    fn a_prefix_of_several_columns_is_looked_up_as_a_row() {
        let src = source(&["a", "b", "f"], &[Exact, Exact, Text], &[]);
        let d = &ctes_of(&src, 0, "buf", "a, b, f")[1];
        assert!(d.contains(
            "(NOT ((b.__o1, b.__o2) OPERATOR(pg_catalog.=) ANY (SELECT k1, k2 FROM __pgt_dk0 LIMIT 1000))) IS TRUE"
        ));
        assert!(d.contains("PARTITION BY ROW(i.a, i.b, i.f)::pg_catalog.text"));
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
