//! The oracle's own machinery against a real cluster: the negative control
//! catches every tampering; a failing workload is shrunk to a smaller one
//! whose replay file reproduces the failure in `psql`, and a failing
//! interleaving to one `harness replay` reproduces; the reports parse
//! (junit.xml read back as JUnit).

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::checks::oracle::{
    corpus_suite, negative_control_suite, run_one, Databases, OracleOptions,
};
use harness::cluster::bindir;
use harness::report::{Report, Suite};
use harness::testkit::{pg_config, shared_cluster, test_root};
use oracles::corpus;
use oracles::outcome::Outcome;
use oracles::tamper::{self, Tamper};

fn scratch(name: &str) -> PathBuf {
    let dir = test_root().join(format!("scratch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn negative_control_reports_every_tampering_as_a_mismatch() {
    let dir = scratch("negative");
    let suite = negative_control_suite(shared_cluster(), &dir, None, "harness");
    assert_eq!(suite.cases.len(), tamper::cases());
    for c in &suite.cases {
        assert_eq!(c.outcome, Outcome::Pass, "{}: {:?}", c.name, c.message);
        assert_eq!(c.facts["oracle_outcome"], "mismatch", "{}", c.name);
    }
}

/// A tampered workload with many steps: the failure is in the last one.
fn failing_workload() -> oracles::workload::Workload {
    let e = corpus::entry("group_by_aggregates").expect("corpus entry");
    let w = (e.build)(e.seed, 12);
    tamper::apply(&w, Tamper::DropRow, &tamper::TARGETS[2], 12)
}

fn psql(sql_file: &Path, db: &str) -> String {
    let cluster = shared_cluster();
    let psql = bindir(&pg_config()).expect("bindir").join("psql");
    let out = Command::new(psql)
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            &cluster.user,
            "-d",
            db,
            "-f",
        ])
        .arg(sql_file)
        .output()
        .expect("run psql");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_failure_is_shrunk_and_its_replay_file_reproduces_it_in_psql() {
    let dir = scratch("shrink");
    let w = failing_workload();
    let opts = OracleOptions::default();
    let c = run_one(
        shared_cluster(),
        &dir,
        &opts,
        &w,
        "harness oracle --workload group_by_aggregates".into(),
    );
    assert_eq!(c.outcome, Outcome::Mismatch, "{:?}", c.message);
    let shrink = &c.facts["shrink"];
    let (from, to) = (
        shrink["from_statements"].as_u64().expect("shrunk"),
        shrink["to_statements"].as_u64().expect("shrunk"),
    );
    assert!(to * 2 < from, "shrunk only from {from} to {to} statements");
    let details = c.details.as_deref().unwrap_or("");
    for needed in [
        "seed",
        "query of g",
        "rows differ",
        "statement trace",
        "--- stream table",
    ] {
        assert!(
            details.contains(needed),
            "report lacks {needed:?}:\n{details}"
        );
    }
    let shrunk = dir.join(format!("replay/group_by_aggregates.seed{}.sql", w.seed));
    let full = dir.join(format!(
        "replay/group_by_aggregates.seed{}.full.sql",
        w.seed
    ));
    for f in [&full, &shrunk] {
        assert!(
            c.replay_files.contains(f),
            "{f:?} not in {:?}",
            c.replay_files
        );
        assert!(
            c.replay_files.contains(&f.with_extension("workload.json")),
            "no workload file beside {f:?}: {:?}",
            c.replay_files
        );
    }

    for file in [&shrunk, &full] {
        // A fresh database with the extension, as a maintainer would make it.
        drop(
            shared_cluster()
                .fresh_database("t_replay")
                .expect("replay db"),
        );
        shared_cluster()
            .connect("t_replay")
            .expect("connect")
            .batch_execute("DROP EXTENSION pg_trickle")
            .expect("start without the extension: the file creates it");
        let out = psql(file, "t_replay");
        assert!(
            out.contains("only in query") || out.contains("only in stream table"),
            "replaying {} did not show the mismatch:\n{out}",
            file.display()
        );
        assert!(!out.contains("ERROR"), "replay failed:\n{out}");
    }
}

#[test]
fn a_failing_interleaving_is_shrunk_and_harness_replay_reproduces_it() {
    // late_commit leaves a transaction open after step 1; forgetting it in
    // the frontier loses its changes when it commits in step 2.
    let dir = scratch("interleaving");
    let e = corpus::entry("late_commit").expect("corpus entry");
    let mut w = (e.build)(e.seed, 2);
    w.steps.truncate(3);
    let (_, after) = tamper::statements(Tamper::ForgetInProgress, "g", "a");
    w.steps[0].after_refresh.extend(after);
    let c = run_one(
        shared_cluster(),
        &dir,
        &OracleOptions::default(),
        &w,
        "harness oracle --workload late_commit".into(),
    );
    assert_eq!(c.outcome, Outcome::Mismatch, "{:?}", c.message);
    let shrunk = dir.join(format!("replay/late_commit.seed{}.workload.json", w.seed));
    assert!(
        c.replay_files.contains(&shrunk),
        "{:?} {:?} {:?}",
        c.replay_files,
        c.message,
        c.reproduce
    );
    let reproduce = c.reproduce.clone().unwrap_or_default();
    assert!(
        reproduce.contains(&format!("replay {}", shrunk.display())),
        "the reproduce command must replay the shrunk interleaving: {reproduce}"
    );
    let sql = std::fs::read_to_string(shrunk.with_extension("").with_extension("sql"))
        .expect("shrunk .sql beside the workload file");
    assert!(sql.contains("psql cannot replay it"), "{sql}");
    assert!(sql.contains("--   c1: COMMIT"), "{sql}");

    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("--pg-config")
        .arg(pg_config())
        .arg("--run-dir")
        .arg(dir.join("replay-run"))
        .arg("replay")
        .arg(&shrunk)
        .output()
        .expect("run harness replay");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("1 mismatch"), "{text}");
    assert!(
        text.contains("/* c1 */ COMMIT"),
        "the trace names connections: {text}"
    );
}

/// Scheduler workloads share one database per cluster and take turns
/// (tests and suites run in parallel threads). A workload's turn covers
/// its whole run, the closing `DROP EXTENSION` that stops its scheduled
/// stream tables included: that statement once ran after the turn ended
/// and removed the extension the next workload had just created.
#[test]
fn a_scheduler_workload_has_stopped_its_stream_tables_when_its_turn_ends() {
    let dir = scratch("scheduler-turns");
    let workload = std::thread::spawn(move || {
        let e = corpus::entry("scheduler_with_writers").expect("corpus entry");
        let w = (e.build)(e.seed, 3);
        let opts = OracleOptions {
            shrink: false,
            ..OracleOptions::default()
        };
        run_one(
            shared_cluster(),
            &dir,
            &opts,
            &w,
            "harness oracle --workload scheduler_with_writers".into(),
        )
    });
    let name: String = shared_cluster()
        .connect("postgres")
        .expect("connect")
        .query_one(
            "SELECT coalesce(current_setting('pg_trickle.database', true), 'postgres')",
            &[],
        )
        .expect("scheduler database name")
        .get(0);
    let left = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE n.nspname = 'pgtrickle' AND c.relname = 'pgt_stream_tables'";
    let count = "SELECT count(*) FROM pgtrickle.pgt_stream_tables";
    let mut turns = 0;
    loop {
        let finished = workload.is_finished();
        {
            // Waits while the workload has its turn, and takes the next
            // without emptying the database.
            let mut turn = Databases::new(shared_cluster());
            turn.take_scheduler_turn();
            let mut db = shared_cluster().connect(&name).expect("connect");
            let catalog: i64 = db.query_one(left, &[]).expect("catalog").get(0);
            let n: i64 = if catalog == 0 {
                0
            } else {
                db.query_one(count, &[]).expect("stream tables left").get(0)
            };
            assert_eq!(
                n, 0,
                "{n} stream tables were still in the scheduler's database at turn {turns} of this test"
            );
            turns += 1;
        }
        if finished {
            break;
        }
        // Lets the workload take its turn.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let c = workload.join().expect("oracle thread");
    assert_eq!(c.outcome, Outcome::Pass, "{:?} {:?}", c.message, c.details);
    assert!(turns >= 2, "the test took {turns} turns");
}

#[test]
fn junit_xml_reads_back_as_junit_with_every_case() {
    let dir = scratch("junit");
    let opts = OracleOptions {
        only: vec!["select_star".into(), "distinct".into()],
        shrink: false,
        ..OracleOptions::default()
    };
    let passing = corpus_suite(shared_cluster(), &dir, &opts);
    let failing_case = run_one(
        shared_cluster(),
        &dir,
        &opts,
        &failing_workload(),
        "harness oracle".into(),
    );
    let failing = Suite::new("tampered", vec![failing_case], 0.0, None);
    let report = Report {
        command: "test <&>".into(),
        version: "0".into(),
        started_unix: 0,
        seconds: 1.0,
        run_dir: dir.clone(),
        suites: vec![passing, failing],
    };
    report.write().expect("write reports");
    let xml = std::fs::read_to_string(dir.join("junit.xml")).expect("junit.xml");
    let doc = roxmltree::Document::parse(&xml).expect("junit.xml is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 2);
    let cases: Vec<_> = root
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let expected = report.suites.iter().map(|s| s.cases.len()).sum::<usize>();
    assert_eq!(cases.len(), expected);
    assert_eq!(root.attribute("tests"), Some(expected.to_string().as_str()));
    assert_eq!(root.attribute("failures"), Some("1"));
    let failure = root
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .expect("a failure element");
    assert_eq!(
        failure.parent().and_then(|p| p.attribute("name")),
        Some("group_by_aggregates")
    );
    assert!(failure.text().unwrap_or("").contains("rows differ"));
    for c in &cases {
        assert!(c
            .attribute("time")
            .and_then(|t| t.parse::<f64>().ok())
            .is_some());
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("json"))
            .expect("parses");
    assert_eq!(json["suites"][1]["cases"][0]["outcome"], "mismatch");
    let html = std::fs::read_to_string(dir.join("report.html")).expect("html");
    assert!(html.contains("<svg") && html.contains("FAILED") && !html.contains("http"));
}
