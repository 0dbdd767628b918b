//! The report model and its renderings, checked without a cluster.

use super::*;

fn passing(name: &str, checks: usize) -> CaseReport {
    let t = Tally {
        pass: checks,
        ..Tally::default()
    };
    CaseReport::new(name, Outcome::Pass, t, 12)
}

/// A passing oracle suite, an upgrade suite of one skipped case, and a
/// suite with a pass and a skipped case.
fn report_with_skips() -> Report {
    let mut slice = CaseReport::skip(
        "slice",
        "none of the 3 changed file(s) touches SQL scripts <&>",
    );
    // Checks on a skipped case never count, however they got there.
    slice.checks.pass = 7;
    Report {
        command: "pr".into(),
        version: "0".into(),
        started_unix: 0,
        seconds: 1.0,
        run_dir: PathBuf::from("runs/test"),
        suites: vec![
            Suite::new("oracle", vec![passing("select_star", 4)], 0.5, None),
            Suite::new("upgrade", vec![slice], 0.0, None),
            Suite::new(
                "mixed",
                vec![
                    passing("a", 2),
                    CaseReport::skip("operator_coverage", "--workload given"),
                ],
                0.1,
                None,
            ),
        ],
    }
}

#[test]
fn a_skipped_case_is_neither_a_pass_nor_a_failure() {
    let r = report_with_skips();
    let c = &r.suites[1].cases[0];
    assert!(c.is_skipped() && !c.failed());
    assert_eq!(c.status(), "skipped");
    assert_eq!((r.suites[1].failed(), r.suites[1].skipped()), (0, 1));
    assert_eq!(r.suites[1].outcomes(), Tally::default());
    assert_eq!(r.suites[1].checks(), Tally::default());
    // Cases that ran: select_star and a; two skipped.
    assert_eq!((r.cases().pass, r.cases().total(), r.skipped()), (2, 2, 2));
    assert_eq!(r.checks().pass, 6);
    assert!(r.passed(), "a skip does not fail the run");
    let mut failing = r.clone();
    failing.suites[0].cases[0].outcome = Outcome::Mismatch;
    assert!(!failing.passed(), "nor does it hide a failure");
}

#[test]
fn the_summary_shows_skipped_suites_with_their_reason_and_no_checks() {
    let text = report_with_skips().summary();
    let line = |suite: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(suite))
            .unwrap_or_else(|| panic!("no {suite} line in:\n{text}"))
            .to_string()
    };
    let upgrade = line("upgrade");
    assert!(
            upgrade.contains(
                "1 cases,   0 failed, 1 skipped (none of the 3 changed file(s) touches SQL scripts <&>); checks: none run;"
            ),
            "{upgrade}"
        );
    assert!(!upgrade.contains("pass"), "{upgrade}");
    let mixed = line("mixed");
    assert!(
        mixed.contains(
            "2 cases,   0 failed, 1 skipped (operator_coverage: --workload given); checks: 2 pass,"
        ),
        "{mixed}"
    );
    let oracle = line("oracle");
    assert!(
        oracle.contains("1 cases,   0 failed; checks: 4 pass,"),
        "{oracle}"
    );
    assert!(
        text.contains("cases:  2 pass, 0 mismatch, 0 engine error, 0 harness error, 2 skipped"),
        "{text}"
    );
    assert!(text.contains("checks: 6 pass,"), "{text}");
    assert!(text.contains("PASSED (2 skipped); reports in"), "{text}");
}

#[test]
fn a_run_of_skipped_suites_passes_without_passing_checks() {
    let r = Report {
        suites: vec![
            Suite::skip("tpch", "--no-tpch given"),
            Suite::skip("upgrade", "--no-upgrade given"),
        ],
        ..report_with_skips()
    };
    assert!(r.passed());
    let text = r.summary();
    assert!(!text.contains("checks: 0 pass"), "{text}");
    assert!(text.contains("  checks: none run\n"), "{text}");
    assert!(
        text.contains("  cases:  0 pass, 0 mismatch, 0 engine error, 0 harness error, 2 skipped\n"),
        "{text}"
    );
    assert!(
            text.contains("tpch                   1 cases,   0 failed, 1 skipped (--no-tpch given); checks: none run;"),
            "{text}"
        );
    assert!(text.contains("PASSED (2 skipped)"), "{text}");
    assert!(r.html().contains("checks: none run; run directory"));
}

#[test]
fn report_json_names_the_reason_and_counts_skipped_cases() {
    let json = serde_json::to_value(report_with_skips()).expect("serializes");
    assert_eq!(json["skipped"], 2);
    let upgrade = &json["suites"][1];
    assert_eq!(upgrade["skipped"], 1);
    let slice = &upgrade["cases"][0];
    assert_eq!(slice["outcome"], "skipped");
    assert_eq!(slice["checks"]["pass"], 0);
    assert_eq!(
        slice["skipped"],
        "none of the 3 changed file(s) touches SQL scripts <&>"
    );
    assert_eq!(json["suites"][0]["skipped"], 0);
    let ran = &json["suites"][0]["cases"][0];
    assert_eq!(ran["outcome"], "pass");
    assert!(ran.get("skipped").is_none(), "{ran}");
    assert_eq!(ran["checks"]["pass"], 4);
}

#[test]
fn junit_marks_skipped_cases_skipped_with_their_reason() {
    let report = report_with_skips();
    let text = report.junit();
    assert!(text.contains("<skipped message=\"none of the 3 changed file(s) touches SQL scripts &lt;&amp;&gt;\"/>"), "{text}");
    let doc = roxmltree::Document::parse(&text).expect("junit.xml is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("4"));
    assert_eq!(root.attribute("failures"), Some("0"));
    assert_eq!(root.attribute("errors"), Some("0"));
    assert_eq!(root.attribute("skipped"), Some("2"));
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 3);
    let upgrade = suites[1];
    assert_eq!(upgrade.attribute("name"), Some("upgrade"));
    assert_eq!(upgrade.attribute("tests"), Some("1"));
    assert_eq!(upgrade.attribute("skipped"), Some("1"));
    assert_eq!(upgrade.attribute("failures"), Some("0"));
    let case = upgrade
        .children()
        .find(|n| n.has_tag_name("testcase"))
        .expect("a testcase");
    assert_eq!(case.attribute("name"), Some("slice"));
    let skipped = case
        .children()
        .find(|n| n.has_tag_name("skipped"))
        .expect("a skipped element");
    assert_eq!(
        skipped.attribute("message"),
        Some("none of the 3 changed file(s) touches SQL scripts <&>")
    );
    assert!(!case
        .children()
        .any(|n| n.has_tag_name("failure") || n.has_tag_name("error")));
    assert_eq!(suites[0].attribute("skipped"), Some("0"));
    let passing = suites[0]
        .children()
        .find(|n| n.has_tag_name("testcase"))
        .expect("a testcase");
    assert!(passing.children().all(|n| !n.is_element()));
}

#[test]
fn html_labels_skipped_cases_with_their_reason() {
    let html = report_with_skips().html();
    assert!(
            html.contains("<td class=\"skip\">skipped: none of the 3 changed file(s) touches SQL scripts &lt;&amp;&gt;</td><td>not run</td>"),
            "{html}"
        );
    assert!(html.contains("checks: none run"), "{html}");
    assert!(
        html.contains("<span class=\"skip\">(2 skipped)</span>"),
        "{html}"
    );
    assert!(html.contains("passed") && !html.contains("FAILED"));
    assert!(
        !html.contains("<details"),
        "a skip is not a failure: {html}"
    );
}

#[test]
fn xml_escapes_markup_and_drops_control_characters() {
    assert_eq!(
        xml("a<b & \"c\" 'd'>\u{1}"),
        "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
    );
}
