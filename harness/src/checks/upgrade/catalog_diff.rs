//! The extension's objects in one database, as comparable text: functions
//! with their arguments, results, attributes, bodies, security (definer,
//! pinned settings) and privileges; catalog tables with their columns,
//! constraints and privileges; schema privileges; indexes; triggers; event
//! triggers; and, per captured source, its capture function (none since
//! 0.40.0), buffer and triggers (oids written as `<oid>`, owners as whether they are the
//! extension's). An upgraded database must show exactly what a fresh
//! install shows, given the same stream tables.

use std::collections::{BTreeMap, BTreeSet};

use postgres::Client;

/// Object key to its definition.
pub type Snapshot = BTreeMap<String, String>;

const QUERIES: &[&str] = &[
    "SELECT 'function ' || p.proname || '(' || pg_get_function_arguments(p.oid) || ')', \
     pg_get_function_result(p.oid) || CASE p.provolatile WHEN 'i' THEN ' immutable' WHEN 's' THEN ' stable' ELSE ' volatile' END \
     || CASE WHEN p.proisstrict THEN ' strict' ELSE '' END || ' language ' || coalesce(l.lanname, '') \
     || CASE WHEN p.prosecdef THEN ' security definer' ELSE '' END || coalesce(' set ' || p.proconfig::text, '') \
     || ' acl ' || coalesce(p.proacl::text, 'default') \
     || CASE WHEN l.lanname = 'c' THEN '' ELSE ' body ' || md5(p.prosrc) END \
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace LEFT JOIN pg_language l ON l.oid = p.prolang \
     WHERE n.nspname = 'pgtrickle'",
    "SELECT 'schema ' || nspname, coalesce(nspacl::text, 'default') FROM pg_namespace \
     WHERE nspname IN ('pgtrickle', 'pgtrickle_changes')",
    "SELECT 'privileges ' || c.relname, coalesce(c.relacl::text, 'default') FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgtrickle' AND c.relkind IN ('r', 'S', 'v')",
    // Since 0.40.0 no source has a capture function of its own (the
    // triggers share pgtrickle._capture_row): one left over shows here.
    "SELECT 'capture of ' || b.source_relid::regclass::text, \
     CASE WHEN p.oid IS NULL THEN 'no capture function' \
     ELSE replace(pg_get_functiondef(p.oid), b.source_relid::text, '<oid>') \
     || ' function owned by the extension owner: ' || (p.proowner = e.extowner)::text \
     || ', function acl: ' || coalesce(replace(p.proacl::text, e.extowner::regrole::text, '<owner>'), 'default') END \
     || ', buffer owned by the extension owner: ' || (c.relowner = e.extowner)::text \
     || ', buffer acl: ' || coalesce(replace(c.relacl::text, e.extowner::regrole::text, '<owner>'), 'default') \
     FROM pgtrickle.pgt_change_buffers b \
     JOIN pg_namespace cn ON cn.nspname = 'pgtrickle_changes' \
     LEFT JOIN pg_proc p ON p.pronamespace = cn.oid AND p.proname = 'capture_' || b.source_relid::text \
     LEFT JOIN pg_class c ON c.relnamespace = cn.oid AND c.relname = 'changes_' || b.source_relid::text \
     CROSS JOIN pg_extension e WHERE e.extname = 'pg_trickle'",
    "SELECT 'stored statements of ' || st.name, regexp_replace(concat_ws(E'\\n-- full\\n', \
     coalesce(st.diff_sql, '(no differential statement)'), st.full_sql, st.populate_sql, \
     coalesce(st.all_changed_sql, '(not specialised to every source)')), 'changes_[0-9]+', 'changes_<oid>', 'g') \
     FROM pgtrickle.pgt_stream_tables st",
    "SELECT 'trigger ' || regexp_replace(t.tgname, '[0-9]{4,}', '<oid>', 'g') || ' on ' || t.tgrelid::regclass::text, \
     regexp_replace(pg_get_triggerdef(t.oid), '[0-9]{4,}', '<oid>', 'g') \
     || CASE t.tgenabled WHEN 'D' THEN ' (disabled)' WHEN 'A' THEN ' (always)' WHEN 'R' THEN ' (replica)' ELSE '' END \
     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE NOT t.tgisinternal AND t.tgname LIKE 'pgt\\_%' AND n.nspname <> 'pgtrickle'",
    "SELECT 'column ' || c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod) || \
     CASE WHEN a.attnotnull THEN ' not null' ELSE '' END || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid \
     LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
     WHERE n.nspname = 'pgtrickle' AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped",
    // Change buffers' columns, by source (a buffer's name holds an oid).
    "SELECT 'buffer column of ' || b.source_relid::regclass::text || '.' || a.attname, \
     format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END \
     || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') \
     FROM pgtrickle.pgt_change_buffers b \
     JOIN pg_class c ON c.relname = 'changes_' || b.source_relid::text \
     JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'pgtrickle_changes' \
     JOIN pg_attribute a ON a.attrelid = c.oid LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
     WHERE a.attnum > 0 AND NOT a.attisdropped",
    // How a buffer numbers its changes: one draw of its identity sequence
    // numbers a block of rows since 0.40.0 (the increment).
    "SELECT 'buffer change ids of ' || b.source_relid::regclass::text, \
     'identity ' || a.attidentity::text || ' increment ' || coalesce(s.seqincrement::text, 'no sequence') \
     FROM pgtrickle.pgt_change_buffers b \
     JOIN pg_class c ON c.relname = 'changes_' || b.source_relid::text \
     JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'pgtrickle_changes' \
     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'change_id' \
     LEFT JOIN pg_sequence s ON s.seqrelid = \
       pg_get_serial_sequence('pgtrickle_changes.' || quote_ident(c.relname), 'change_id')::regclass",
    "SELECT 'index ' || c.relname, pg_get_indexdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = 'pgtrickle' AND c.relkind = 'i'",
    "SELECT 'constraint ' || c.conrelid::regclass::text || ' ' || c.conname, pg_get_constraintdef(c.oid) \
     FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'pgtrickle'",
    "SELECT 'event trigger ' || evtname, evtevent || ' ' || evtfoid::regproc::text || ' ' || coalesce(evttags::text, '') \
     || ' ' || evtenabled::text FROM pg_event_trigger",
    "SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass::text, pg_get_triggerdef(oid) FROM pg_trigger \
     WHERE NOT tgisinternal AND tgrelid::regclass::text LIKE 'pgtrickle.%'",
    "SELECT 'setting ' || name, coalesce(boot_val, '') || ' ' || coalesce(min_val, '') || ' ' || coalesce(max_val, '') \
     || ' ' || context FROM pg_settings WHERE name LIKE 'pg\\_trickle.%'",
];

/// The extension's objects in the database `db` is connected to.
pub fn snapshot(db: &mut Client) -> Result<Snapshot, postgres::Error> {
    let mut out = BTreeMap::new();
    for q in QUERIES {
        for r in db.query(*q, &[])? {
            out.insert(r.get(0), r.get(1));
        }
    }
    Ok(out)
}

/// A readable difference, one entry per object that differs.
pub fn differences(fresh: &Snapshot, upgraded: &Snapshot) -> Vec<String> {
    let keys: BTreeSet<&String> = fresh.keys().chain(upgraded.keys()).collect();
    keys.into_iter()
        .filter_map(|k| match (fresh.get(k), upgraded.get(k)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(match first_difference(a, b) {
                Some((line, fa, fb)) => format!(
                    "{k} (line {line} of the definition)\n    fresh install: {fa}\n    upgraded:      {fb}"
                ),
                None => format!("{k}\n    fresh install: {a}\n    upgraded:      {b}"),
            }),
            (Some(a), None) => Some(format!(
                "{k}\n    fresh install: {a}\n    upgraded:      (missing)"
            )),
            (None, Some(b)) => Some(format!(
                "{k}\n    fresh install: (missing)\n    upgraded:      {b}"
            )),
            (None, None) => None,
        })
        .collect()
}

/// For definitions of several lines, the first line where they differ
/// (1-based) and both versions of it.
fn first_difference<'a>(a: &'a str, b: &'a str) -> Option<(usize, &'a str, &'a str)> {
    if !a.contains('\n') && !b.contains('\n') {
        return None;
    }
    let (mut la, mut lb) = (a.lines(), b.lines());
    for n in 1.. {
        match (la.next(), lb.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (x, y) => return Some((n, x.unwrap_or("(ends)"), y.unwrap_or("(ends)"))),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_missing_extra_and_changed_objects() {
        let a: Snapshot = [("f", "1"), ("g", "2"), ("h", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let b: Snapshot = [("f", "1"), ("g", "X"), ("i", "4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = differences(&a, &b);
        assert_eq!(d.len(), 3);
        assert!(d[0].starts_with("g\n") && d[0].contains("upgraded:      X"));
        assert!(d[1].contains("h") && d[1].contains("(missing)"));
        assert!(d[2].starts_with("i\n"));
    }

    #[test]
    fn multi_line_definitions_show_their_first_differing_line() {
        let one = |v: &str| -> Snapshot { [("capture of a".to_string(), v.to_string())].into() };
        let d = differences(
            &one("CREATE FUNCTION f()\nSET search_path TO pg_catalog\nBEGIN"),
            &one("CREATE FUNCTION f()\nBEGIN"),
        );
        assert_eq!(d.len(), 1);
        assert!(
            d[0].contains("(line 2 of the definition)")
                && d[0].contains("fresh install: SET search_path TO pg_catalog")
                && d[0].contains("upgraded:      BEGIN"),
            "{}",
            d[0]
        );
    }
}
