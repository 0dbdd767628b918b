//! The extension's objects in one database, as comparable text: functions
//! with their arguments, results and attributes; catalog tables with their
//! columns and constraints; indexes; triggers; event triggers. An upgraded
//! database must show exactly what a fresh install shows.

use std::collections::{BTreeMap, BTreeSet};

use postgres::Client;

/// Object key to its definition.
pub type Snapshot = BTreeMap<String, String>;

const QUERIES: &[&str] = &[
    "SELECT 'function ' || p.proname || '(' || pg_get_function_arguments(p.oid) || ')', \
     pg_get_function_result(p.oid) || CASE p.provolatile WHEN 'i' THEN ' immutable' WHEN 's' THEN ' stable' ELSE ' volatile' END \
     || CASE WHEN p.proisstrict THEN ' strict' ELSE '' END || ' language ' || coalesce(l.lanname, '') \
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace LEFT JOIN pg_language l ON l.oid = p.prolang \
     WHERE n.nspname = 'pgtrickle'",
    "SELECT 'column ' || c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod) || \
     CASE WHEN a.attnotnull THEN ' not null' ELSE '' END || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid \
     LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
     WHERE n.nspname = 'pgtrickle' AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped",
    "SELECT 'index ' || c.relname, pg_get_indexdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = 'pgtrickle' AND c.relkind = 'i'",
    "SELECT 'constraint ' || c.conrelid::regclass::text || ' ' || c.conname, pg_get_constraintdef(c.oid) \
     FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'pgtrickle'",
    "SELECT 'event trigger ' || evtname, evtevent || ' ' || evtfoid::regproc::text FROM pg_event_trigger",
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
            (Some(a), Some(b)) => Some(format!(
                "{k}\n    fresh install: {a}\n    upgraded:      {b}"
            )),
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
}
