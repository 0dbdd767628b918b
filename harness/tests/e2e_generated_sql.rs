//! Golden test of the SQL the engine generates, through the public SQL
//! API (`pgtrickle.stream_table_sql`), for every stream table of the
//! oracle corpus and the 22 TPC-H queries, general and specialised to
//! every subset of changed sources. A restructuring that claims to leave
//! behaviour unchanged must leave this file unchanged; any other change to
//! generated SQL shows here, statement by statement, for review.
//!
//! The golden file holds one line per statement: where it comes from, the
//! changed sources, the phase and a hash of its text (change buffers'
//! oids written `changes_N` and oid literals `N::pg_catalog.oid`, so it
//! does not depend on the database or on what the cluster created
//! before). On a
//! difference the test writes the statements it generated, in full, beside
//! the golden file's name under the test root, and names every line that
//! moved. `PGT_BLESS=1 cargo test -p harness --test e2e_generated_sql`
//! rewrites the golden file in place.

use std::collections::BTreeMap;
use std::path::PathBuf;

use harness::testkit::{database, test_root};
use oracles::corpus::entries;

/// The golden file, next to this test.
fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/generated_sql.txt")
}

/// 64-bit FNV-1a: stable across platforms and releases.
fn fnv(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `changes_16508` → `changes_N` and `16508::pg_catalog.oid` →
/// `N::pg_catalog.oid`: the text without database-specific oids. Which
/// oid a table gets depends on everything the cluster created before it,
/// background work included, so a hash over an oid fails by timing.
fn normalise(sql: &str) -> String {
    normalise_oid_literals(&normalise_buffer_names(sql))
}

fn normalise_buffer_names(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find("changes_") {
        out.push_str(&rest[..i + "changes_".len()]);
        rest = &rest[i + "changes_".len()..];
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            out.push('N');
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

fn normalise_oid_literals(sql: &str) -> String {
    const CAST: &str = "::pg_catalog.oid";
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find(CAST) {
        let before = &rest[..i];
        let digits = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .count();
        out.push_str(&before[..before.len() - digits]);
        if digits > 0 {
            out.push('N');
        }
        out.push_str(CAST);
        rest = &rest[i + CAST.len()..];
    }
    out.push_str(rest);
    out
}

#[test]
fn oids_are_written_as_n() {
    assert_eq!(
        normalise(
            "SELECT 48899::pg_catalog.oid, x::pg_catalog.oid FROM pgtrickle_changes.changes_16508"
        ),
        "SELECT N::pg_catalog.oid, x::pg_catalog.oid FROM pgtrickle_changes.changes_N"
    );
}

/// Statements generated for one stream table, keyed by
/// `<origin> [<changed sources>] <phase>`.
type Generated = BTreeMap<String, String>;

/// Every statement of stream table `st` in `db`, general and specialised
/// to every subset of its captured sources that are plain tables (a
/// stream table cannot be written to make a change).
fn generate(db: &mut postgres::Client, origin: &str, st: &str) -> Generated {
    let explained: serde_json::Value = db
        .query_one(
            "SELECT pgtrickle.explain_stream_table($1)::text::json",
            &[&st],
        )
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("{origin}: explain {st}: {e:?}"));
    let mode = explained["effective_mode"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let sources: Vec<String> = explained["sources"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| s["captured"].as_bool() == Some(true))
                .filter_map(|s| s["relation"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            // A stream table (its read-only trigger says so) cannot be written.
            !db.query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::text::regclass \
                 AND tgname = 'pgt_readonly')",
                &[r],
            )
            .map(|row| row.get::<_, bool>(0))
            .unwrap_or_else(|e| panic!("{origin}: is {r} a stream table: {e:?}"))
        })
        .collect();
    let subsets: Vec<Vec<String>> = if mode == "FULL" {
        vec![Vec::new()]
    } else {
        (0u32..(1 << sources.len()))
            .map(|mask| {
                (0..sources.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| sources[i].clone())
                    .collect()
            })
            .collect()
    };
    let mut out = Generated::new();
    for subset in subsets {
        db.batch_execute("BEGIN").expect("begin");
        let mut label = subset.join(",");
        for source in &subset {
            let column: String = db
                .query_one(
                    "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::text::regclass \
                     AND attnum > 0 AND NOT attisdropped AND attgenerated = '' AND attidentity = '' \
                     ORDER BY attnum LIMIT 1",
                    &[source],
                )
                .map(|r| r.get(0))
                .unwrap_or_else(|e| panic!("{origin}: a column of {source}: {e:?}"));
            let changed = db
                .execute(
                    &format!(
                        "UPDATE {source} SET {column} = {column} WHERE ctid = (SELECT ctid FROM {source} LIMIT 1)"
                    ),
                    &[],
                )
                .unwrap_or_else(|e| panic!("{origin}: change {source}: {e:?}"));
            if changed == 0 {
                label = format!("{label} (empty: {source})");
            }
        }
        let rows = db
            .query(
                "SELECT phase, sql FROM pgtrickle.stream_table_sql($1)",
                &[&st],
            )
            .unwrap_or_else(|e| {
                panic!("{origin}: stream_table_sql({st}) changed [{label}]: {e:?}")
            });
        db.batch_execute("ROLLBACK").expect("rollback");
        for r in rows {
            let (phase, sql): (String, String) = (r.get(0), r.get(1));
            out.insert(
                format!("{origin}/{st} {mode} [{label}] {phase}"),
                normalise(&sql),
            );
        }
    }
    out
}

/// The corpus's stream tables, each workload in a database of its own.
fn corpus() -> Generated {
    let mut out = Generated::new();
    for e in entries() {
        let w = (e.build)(e.seed, 0).without_steps();
        let mut db = database(&format!("gs_{}", e.name));
        for sql in w.setup.iter().chain(&w.seed_rows) {
            db.batch_execute(sql)
                .unwrap_or_else(|err| panic!("{}: {sql}: {err:?}", e.name));
        }
        for st in &w.stream_tables {
            if let Err(err) = db.batch_execute(&st.create_sql()) {
                // A refused definition has no statements; the refusal is
                // the oracle's business.
                out.insert(
                    format!("corpus/{}/{} refused", e.name, st.name),
                    err.as_db_error()
                        .map(|d| d.code().code().to_string())
                        .unwrap_or_default(),
                );
                continue;
            }
            out.extend(generate(&mut db, &format!("corpus/{}", e.name), &st.name));
        }
    }
    out
}

/// The 22 TPC-H queries over SF 0.01 data.
fn tpch_queries() -> Generated {
    let mut db = database("gs_tpch");
    for ddl in tpch::schema::ddl() {
        db.batch_execute(ddl).expect("tpch schema");
    }
    tpch::data::load(&mut db, 0.01).expect("tpch data");
    db.batch_execute("ANALYZE").expect("analyze");
    let mut out = Generated::new();
    for q in tpch::queries::queries(0.01) {
        db.execute(
            "SELECT pgtrickle.create_stream_table($1, $2, NULL, 'AUTO')",
            &[&q.name, &q.sql],
        )
        .unwrap_or_else(|e| panic!("{}: {e:?}", q.name));
        out.extend(generate(&mut db, "tpch", q.name));
    }
    out
}

#[test]
fn generated_sql_matches_the_golden_file() {
    let mut generated = corpus();
    generated.extend(tpch_queries());
    let lines: Vec<String> = generated
        .iter()
        .map(|(k, sql)| format!("{k} {}", fnv(sql)))
        .collect();
    let text = format!(
        "# Generated SQL, one statement per line: origin/stream table, mode, [changed sources], phase, FNV-1a of the text.\n\
         # Rewrite with PGT_BLESS=1 cargo test -p harness --test e2e_generated_sql (see the test's doc).\n{}\n",
        lines.join("\n")
    );
    let path = golden_path();
    if std::env::var("PGT_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, &text).expect("write golden");
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with PGT_BLESS=1 cargo test -p harness --test e2e_generated_sql",
            path.display()
        )
    });
    if golden == text {
        return;
    }
    let full = test_root().join("generated_sql.actual.sql");
    let dump: Vec<String> = generated
        .iter()
        .map(|(k, sql)| format!("-- {k}\n{sql};\n"))
        .collect();
    let _ = std::fs::create_dir_all(test_root());
    let _ = std::fs::write(&full, dump.join("\n"));
    let want: std::collections::BTreeSet<&str> =
        golden.lines().filter(|l| !l.starts_with('#')).collect();
    let got: std::collections::BTreeSet<&str> =
        text.lines().filter(|l| !l.starts_with('#')).collect();
    let gone: Vec<&&str> = want.difference(&got).take(40).collect();
    let new: Vec<&&str> = got.difference(&want).take(40).collect();
    panic!(
        "generated SQL differs from {} ({} golden lines not generated, {} generated lines not golden; \
         up to 40 of each below). Every statement generated now is in {}. If the change is meant, \
         rewrite the file with PGT_BLESS=1 and review its diff.\nnot generated any more:\n  {}\nnew:\n  {}",
        path.display(),
        want.difference(&got).count(),
        got.difference(&want).count(),
        full.display(),
        gone.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("\n  "),
        new.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("\n  "),
    );
}
