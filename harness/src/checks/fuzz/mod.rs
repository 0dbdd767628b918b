//! The fuzz targets of `fuzz/` run for a bounded time each, as a check:
//! `cargo +nightly fuzz run -O <target> corpus/<target> -- -max_total_time=N
//! -seed=S`, with executions, coverage and corpus size read from
//! libFuzzer's output and any crash reported with its input and the
//! command that reproduces it. The targets are the ones
//! `pg_trickle_core::fuzzing::TARGETS` names, so a new property is run
//! without a change here. Missing tools (cargo-fuzz, a nightly toolchain)
//! fail the case with how to install them: a fuzz run that did not run is
//! not a pass.

pub mod command;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use oracles::outcome::{Outcome, Tally};

use crate::report::{CaseReport, Suite};

/// What one libFuzzer run printed, read from its output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FuzzFigures {
    /// Executions (`Done N runs`, or the last status line's `#N`).
    pub executions: u64,
    /// Coverage counter at the end (`cov:`).
    pub coverage: u64,
    /// Features at the end (`ft:`).
    pub features: u64,
    /// Inputs in the corpus at the end (`corp: N/...`).
    pub corpus: u64,
    /// The crashing input libFuzzer wrote, if it found one.
    pub crash: Option<String>,
}

/// Read libFuzzer's output.
pub fn parse_output(text: &str) -> FuzzFigures {
    let mut f = FuzzFigures::default();
    let number_after = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('#') {
            if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                f.executions = n;
            }
            f.coverage = number_after(line, "cov:").unwrap_or(f.coverage);
            f.features = number_after(line, "ft:").unwrap_or(f.features);
            f.corpus = number_after(line, "corp:").unwrap_or(f.corpus);
        }
        if let Some(n) = line
            .strip_prefix("Done ")
            .and_then(|r| r.split_whitespace().next())
        {
            f.executions = n.parse().unwrap_or(f.executions);
        }
        if let Some(i) = line.find("Test unit written to ") {
            f.crash = Some(line[i + "Test unit written to ".len()..].trim().to_string());
        }
    }
    f
}

/// Options of a fuzz run.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    /// The `fuzz/` folder.
    pub dir: PathBuf,
    /// Time per target.
    pub per_target: Duration,
    /// libFuzzer's seed.
    pub seed: u64,
    /// Only these targets (all when empty).
    pub only: Vec<String>,
}

/// Run every target for its time; one case per target.
pub fn fuzz_suite(opts: &FuzzOptions) -> Suite {
    let started = Instant::now();
    let mut cases = Vec::new();
    for (target, _) in pg_trickle_core::fuzzing::TARGETS {
        if !opts.only.is_empty() && !opts.only.iter().any(|o| o == target) {
            continue;
        }
        println!(
            "fuzz: {target} for {} s (seed {})",
            opts.per_target.as_secs(),
            opts.seed
        );
        let case = run_target(&opts.dir, target, opts);
        println!(
            "fuzz: {target}: {}",
            case.message.as_deref().unwrap_or(case.outcome.name())
        );
        cases.push(case);
    }
    // The budget is the time of the targets that ran, not of all of them.
    let budget = opts.per_target.as_secs_f64() * cases.len() as f64;
    Suite::new("fuzz", cases, started.elapsed().as_secs_f64(), Some(budget))
}

fn run_target(dir: &Path, target: &str, opts: &FuzzOptions) -> CaseReport {
    let started = Instant::now();
    let corpus = format!("corpus/{target}");
    let output = Command::new("cargo")
        .current_dir(dir)
        .args(["+nightly", "fuzz", "run", "-O", target, &corpus, "--"])
        .arg(format!("-max_total_time={}", opts.per_target.as_secs()))
        .arg(format!("-seed={}", opts.seed))
        .arg("-rss_limit_mb=2048")
        .output();
    let millis = started.elapsed().as_millis();
    let mut tally = Tally::default();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            tally.add(Outcome::HarnessError);
            let mut c = CaseReport::new(target, Outcome::HarnessError, tally, millis);
            c.message = Some(format!("could not run cargo: {e}"));
            return c;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let figures = parse_output(&text);
    let reproduce_run = format!(
        "cd {} && cargo +nightly fuzz run -O {target} {corpus} -- -max_total_time={} -seed={}",
        dir.display(),
        opts.per_target.as_secs(),
        opts.seed
    );
    let (outcome, message, reproduce) = if let Some(crash) = &figures.crash {
        (
            Outcome::EngineError,
            format!("{target} found a failing input: {crash}; keep it under fuzz/reproducers/{target}/ once fixed"),
            format!("cd {} && cargo +nightly fuzz run {target} {crash}", dir.display()),
        )
    } else if !output.status.success() || figures.executions == 0 {
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        (
            Outcome::HarnessError,
            format!(
                "{target} did not run (install with `cargo install cargo-fuzz` and a nightly toolchain): {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
            reproduce_run,
        )
    } else {
        (
            Outcome::Pass,
            format!(
                "{} executions, coverage {}, features {}, corpus {} inputs, no failure",
                figures.executions, figures.coverage, figures.features, figures.corpus
            ),
            reproduce_run,
        )
    };
    tally.add(outcome);
    let mut c = CaseReport::new(target, outcome, tally, millis);
    c.message = Some(message);
    c.reproduce = Some(reproduce);
    c.facts = serde_json::json!({
        "executions": figures.executions,
        "coverage": figures.coverage,
        "features": figures.features,
        "corpus": figures.corpus,
        "seconds": opts.per_target.as_secs(),
        "seed": opts.seed,
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_output_gives_executions_coverage_and_corpus() {
        let text = "INFO: Seed: 1\n\
            #2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
            #3300255\tREDUCE cov: 1427 ft: 7064 corp: 1616/256Kb lim: 4096 exec/s: 15641 rss: 532Mb L: 1151/2779 MS: 1 EraseBytes-\n\
            Done 3696334 runs in 241 second(s)\n";
        assert_eq!(
            parse_output(text),
            FuzzFigures {
                executions: 3_696_334,
                coverage: 1427,
                features: 7064,
                corpus: 1616,
                crash: None
            }
        );
    }

    #[test]
    fn a_crash_names_its_input() {
        let text = "#10\tNEW cov: 5 ft: 5 corp: 2/2b\n\
            ==1== ERROR: libFuzzer: deadly signal\n\
            artifact_prefix='/w/fuzz/artifacts/dag/'; Test unit written to /w/fuzz/artifacts/dag/crash-abc\n";
        let f = parse_output(text);
        assert_eq!(f.crash.as_deref(), Some("/w/fuzz/artifacts/dag/crash-abc"));
        assert_eq!(f.executions, 10);
    }
}
