//! `junit.xml`, for CI systems: one `testsuite` per suite, one `testcase`
//! per case.

use std::fmt::Write as _;

use oracles::outcome::{Outcome, Tally};

use super::{full_text, Report};

impl Report {
    /// JUnit XML: one `testsuite` per suite, one `testcase` per case; a
    /// mismatch is a `failure`, an engine or harness error an `error`, a
    /// skipped case `skipped` with its reason.
    pub fn junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        // `tests` (every case, skipped ones too), `failures`, `errors` and
        // `skipped` attributes from case outcomes.
        let counts = |t: Tally, skipped: usize| {
            format!(
                "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{skipped}\"",
                t.total() + skipped,
                t.mismatch,
                t.engine_error + t.harness_error
            )
        };
        let _ = writeln!(
            out,
            "<testsuites name=\"harness {}\" {} time=\"{:.3}\">",
            xml(&self.command),
            counts(self.cases(), self.skipped()),
            self.seconds
        );
        for s in &self.suites {
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" {} time=\"{:.3}\">",
                xml(&s.name),
                counts(s.outcomes(), s.skipped()),
                s.seconds
            );
            for c in &s.cases {
                let _ = write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                    xml(&s.name),
                    xml(&c.name),
                    c.millis as f64 / 1000.0
                );
                if let Some(reason) = &c.skipped {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(reason)
                    );
                    continue;
                }
                let tag = match c.outcome {
                    Outcome::Pass => {
                        out.push_str("/>\n");
                        continue;
                    }
                    Outcome::Mismatch => "failure",
                    Outcome::EngineError | Outcome::HarnessError => "error",
                };
                let _ = writeln!(
                    out,
                    ">\n      <{tag} type=\"{}\" message=\"{}\">{}</{tag}>\n    </testcase>",
                    c.outcome.name(),
                    xml(c.message.as_deref().unwrap_or("")),
                    xml(&full_text(c))
                );
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

/// Escape text for XML and HTML (and drop characters XML 1.0 forbids).
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}
