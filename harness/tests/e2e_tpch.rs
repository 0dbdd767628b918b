//! The TPC-H groundwork against a real cluster: the schema builds, every
//! one of the 22 queries is valid PostgreSQL over it, and each becomes an
//! AUTO stream table whose mode (and fallback reason) the engine reports.

use harness::testkit::database;

#[test]
fn the_22_queries_are_valid_and_become_stream_tables() {
    let mut db = database("tpch_schema");
    for ddl in tpch::schema::ddl() {
        db.batch_execute(ddl)
            .unwrap_or_else(|e| panic!("{ddl}: {e:?}"));
    }
    let mut modes = Vec::new();
    for q in tpch::queries::queries(0.01) {
        db.prepare(&q.sql)
            .unwrap_or_else(|e| panic!("{} is not valid PostgreSQL: {e:?}\n{}", q.name, q.sql));
        db.execute(
            "SELECT pgtrickle.create_stream_table($1, $2, NULL, 'AUTO')",
            &[&q.name, &q.sql],
        )
        .unwrap_or_else(|e| panic!("{} did not become a stream table: {e:?}", q.name));
        let r = db
            .query_one(
                "SELECT effective_mode, coalesce(fallback_reason, '') FROM pgtrickle.pgt_stream_tables \
                 WHERE relid = to_regclass($1)",
                &[&q.name],
            )
            .unwrap();
        modes.push((q.name, r.get::<_, String>(0), r.get::<_, String>(1)));
    }
    for (name, mode, reason) in &modes {
        eprintln!("{name}: {mode} {reason}");
    }
    // The simplest ones are maintained differentially.
    for simple in [
        "q01", "q03", "q05", "q06", "q07", "q08", "q09", "q12", "q14", "q19",
    ] {
        let (_, mode, reason) = modes.iter().find(|m| m.0 == simple).unwrap();
        assert_eq!(mode, "DIFFERENTIAL", "{simple}: {reason}");
    }
}
