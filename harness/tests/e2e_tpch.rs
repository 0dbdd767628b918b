//! TPC-H against a real cluster: the schema builds, every one of the 22
//! queries is valid PostgreSQL and becomes an AUTO stream table, and at
//! scale factor 0.01 every stream table stays equal to its query through
//! seeded refresh cycles (RF1, RF2, updates), in the mode the engine chose.

use harness::testkit::{database, shared_cluster};
use harness::tpch_suite::{tpch_suite, TpchOptions};
use oracles::outcome::Outcome;

#[test]
fn the_22_queries_are_valid_and_become_stream_tables() {
    let mut db = database("tpch_schema");
    for ddl in tpch::schema::ddl() {
        db.batch_execute(ddl)
            .unwrap_or_else(|e| panic!("{ddl}: {e:?}"));
    }
    for q in tpch::queries::queries(0.01) {
        db.prepare(&q.sql)
            .unwrap_or_else(|e| panic!("{} is not valid PostgreSQL: {e:?}\n{}", q.name, q.sql));
    }
}

#[test]
fn tpch_stream_tables_stay_equal_to_their_queries_through_refresh_cycles() {
    let opts = TpchOptions {
        sf: 0.01,
        cycles: 2,
        fraction: 0.001,
        seed: 1,
        only: Vec::new(),
    };
    let (suite, figures) = tpch_suite(shared_cluster(), &opts);
    for c in &suite.cases {
        assert_eq!(
            c.outcome,
            Outcome::Pass,
            "{}: {:?}\n{:?}",
            c.name,
            c.message,
            c.details
        );
    }
    assert_eq!(figures.len(), 22);
    // The simplest ones are maintained differentially.
    for simple in [
        "q01", "q03", "q05", "q06", "q07", "q08", "q09", "q12", "q14", "q19",
    ] {
        let f = figures.iter().find(|f| f.query == simple).unwrap();
        assert_eq!(f.mode, "DIFFERENTIAL", "{simple}: {:?}", f.fallback_reason);
    }
    for f in figures.iter().filter(|f| f.mode == "FULL") {
        assert!(
            f.fallback_reason.is_some(),
            "{} is FULL without a reason",
            f.query
        );
    }
}
