//! Plans over sources captured from the WAL: every read of such a source's
//! changes keeps only the buffered changes of transactions the statement
//! sees as committed and also reads `pgtrickle_changes.wal_changes_<oid>`
//! with the read token, which is one parameter after the change ids; a plan over trigger
//! sources only has no token and reads the buffers alone; the capture mode
//! is an input of the plan fingerprint.

mod common;

use common::{catalog, columns, table};
use pg_trickle_core::analyze::analyze;
use pg_trickle_core::catalog::{Capture, Catalog, SourceKind};
use pg_trickle_core::delta::{plan_fingerprint, plan_refresh, plan_refresh_for_changes};

const JOIN: &str = "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k";

/// The test catalog with table `b` (oid 2) captured from the WAL.
fn b_from_the_wal() -> Catalog {
    let mut c = catalog();
    let mut b = table(2, "b", SourceKind::Table, &["k", "w"]);
    b.capture = Capture::Wal;
    c.insert("b", b);
    c
}

/// How a plan reads `b`'s changes: the buffered ones of transactions the
/// statement's snapshot sees as committed, and the undecoded ones.
const B_LATE: &str = "(SELECT * FROM pgtrickle_changes.changes_2 __pgt_w \
     WHERE pg_catalog.pg_visible_in_snapshot(__pgt_w.xid, pg_catalog.pg_current_snapshot()) \
     UNION ALL SELECT * FROM pgtrickle_changes.wal_changes_2($5::text, pg_catalog.pg_current_snapshot()))";

#[test]
fn a_wal_source_is_read_with_the_token_after_the_change_ids() {
    let analysis = analyze(JOIN, &b_from_the_wal()).expect("analyses");
    let plan = plan_refresh(&analysis, JOIN, "public.j", &columns(&["k", "v", "w"]));
    assert_eq!(plan.diff_sources.len(), 2);
    assert_eq!(plan.token_param, Some(5));
    assert_eq!(plan.diff_nargs(), 5);
    let sql = plan.diff_sql.expect("differential");
    assert!(sql.contains(B_LATE), "{sql}");
    // The trigger-captured source is read from its buffer alone.
    assert!(!sql.contains("wal_changes_1"), "{sql}");
    assert!(sql.contains("FROM pgtrickle_changes.changes_1 b"), "{sql}");
}

#[test]
fn a_specialised_plan_guards_an_unchanged_wal_source_through_the_slot_too() {
    let analysis = analyze(JOIN, &b_from_the_wal()).expect("analyses");
    let a_only = analysis
        .sources
        .iter()
        .position(|s| s.oid == 1)
        .expect("a is a source");
    let plan = plan_refresh_for_changes(
        &analysis,
        JOIN,
        "public.j",
        &columns(&["k", "v", "w"]),
        &[a_only],
    );
    assert_eq!(plan.token_param, Some(5));
    let sql = plan.diff_sql.expect("differential");
    assert!(
        sql.contains(&format!("EXISTS (SELECT 1 FROM {B_LATE} b WHERE")),
        "{sql}"
    );
}

#[test]
fn trigger_plans_take_no_token() {
    let analysis = analyze(JOIN, &catalog()).expect("analyses");
    let plan = plan_refresh(&analysis, JOIN, "public.j", &columns(&["k", "v", "w"]));
    assert_eq!(plan.token_param, None);
    assert_eq!(plan.diff_nargs(), 4);
    assert!(!plan.diff_sql.expect("differential").contains("wal_changes"));
}

#[test]
fn the_capture_mode_moves_the_fingerprint() {
    let cols = columns(&["k", "v", "w"]);
    let by_trigger = analyze(JOIN, &catalog()).expect("analyses");
    let from_wal = analyze(JOIN, &b_from_the_wal()).expect("analyses");
    assert_ne!(
        plan_fingerprint(&by_trigger, JOIN, "public.j", &cols),
        plan_fingerprint(&from_wal, JOIN, "public.j", &cols)
    );
}
