//! `harness upgrade`: the upgrade matrix. Every released version (or those
//! given with `--from`, or with `--slice` those a change needs) is built
//! from its own source, upgraded to the current build and checked, in a
//! private copy of the `--pg-config` installation (which is never written).

use std::path::PathBuf;

use crate::checks::upgrade::{self, Matrix, Release};
use crate::report::Suite;
use clap::Args;

use crate::cli::{Common, Failure, Run};

/// Options of `harness upgrade`.
#[derive(Args, Clone)]
pub struct UpgradeArgs {
    /// Upgrade only from these released versions (repeatable).
    #[arg(long)]
    pub from: Vec<String>,
    /// Run only the paths the changes since `--base` need (the PR slice).
    #[arg(long)]
    pub slice: bool,
    /// Base of the change for `--slice`.
    #[arg(long, default_value = "origin/main")]
    pub base: String,
    /// Repository root.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
}

/// The paths to run and why; errors are the runner's.
pub fn plan(args: &UpgradeArgs) -> Result<(Vec<(Release, String)>, String), Failure> {
    let root = &args.root;
    let current = crate::checks::versions::workspace_version(root).map_err(Failure::CouldNotRun)?;
    let releases = upgrade::releases(root).map_err(Failure::CouldNotRun)?;
    let candidates: Vec<Release> = releases
        .iter()
        .filter(|r| r.version != current)
        .filter(|r| args.from.is_empty() || args.from.contains(&r.version))
        .cloned()
        .collect();
    if let Some(unknown) = args
        .from
        .iter()
        .find(|f| !releases.iter().any(|r| &r.version == *f))
    {
        return Err(Failure::CouldNotRun(format!(
            "{unknown} is not a released version (engine/ext/sql/RELEASES lists them)"
        )));
    }
    if !args.slice {
        let n = candidates.len();
        return Ok((
            candidates
                .into_iter()
                .map(|r| (r, current.clone()))
                .collect(),
            format!("full matrix: {n} path(s)"),
        ));
    }
    let released: Vec<String> = releases.iter().map(|r| r.version.clone()).collect();
    let (changed, note) = match upgrade::changed_files(root, &args.base) {
        Ok(c) => (c, String::new()),
        // Fail closed: unknown changes run the newest path.
        Err(e) => (
            vec!["engine/ext/sql/".to_string()],
            format!(" (changed files unknown: {e})"),
        ),
    };
    let s = upgrade::slice(&changed, &released, &current);
    let paths = s
        .paths
        .iter()
        .filter_map(|(from, to)| {
            candidates
                .iter()
                .find(|r| &r.version == from)
                .map(|r| (r.clone(), to.clone()))
        })
        .collect();
    Ok((paths, format!("{}{note}", s.reason)))
}

/// Run the matrix (used by `harness upgrade` and `harness pr`).
pub fn suite(common: &Common, run: &Run, args: &UpgradeArgs) -> Result<Suite, Failure> {
    let (paths, why) = plan(args)?;
    println!("upgrade: {why}");
    for (from, to) in &paths {
        println!("upgrade: path {} -> {to}", from.version);
    }
    let root =
        std::fs::canonicalize(&args.root).map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    let run_name = run
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let m = Matrix {
        root: &root,
        pg_config: &common.pg_config,
        work: root.join("target/upgrade-work"),
        clusters: std::env::temp_dir().join("pg_trickle-runs").join(run_name),
        keep: common.keep,
    };
    std::fs::create_dir_all(&m.work).map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    let mut s = upgrade::run(&m, &paths);
    if paths.is_empty() {
        // Nothing ran: a skipped case with the reason, not a pass.
        let name = if args.slice { "slice" } else { "matrix" };
        let reason = why.strip_prefix("skipped: ").unwrap_or(&why);
        s.cases.push(crate::report::CaseReport::skip(name, reason));
    }
    Ok(s)
}

/// Run `harness upgrade`.
pub fn run(common: &Common, args: &UpgradeArgs) -> Result<(), Failure> {
    let run = Run::begin(common, "upgrade")?;
    let s = suite(common, &run, args)?;
    run.finish(common, vec![s], None)
}
