//! The upgrade matrix: for every released version, build it from the
//! commit it was released from, create stream tables of every mode over
//! data with changes pending and one marked for reinitialisation, swap in
//! the current build, run `ALTER EXTENSION pg_trickle UPDATE`, and require
//! the catalog of a fresh install and every stream table to refresh
//! correctly, with nothing lost or applied twice.
//!
//! Building an old version is the only place the runner shells out to
//! `git` and `cargo pgrx`. The installation named by `--pg-config` is
//! never written: builds are packaged (`cargo pgrx package` against its
//! `pg_config`) and go into a private copy of it beside the run's
//! clusters ([`crate::checks::upgrade::installation`]), whose programs run the matrix's
//! clusters.

pub mod catalog_diff;
pub mod command;
pub mod installation;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use oracles::compare::differences;
use oracles::engine_api::{last_refresh, Ran};
use oracles::outcome::{Outcome, Tally};
use pg_trickle_core::ir::Mode;

use crate::checks::upgrade::installation::PrivateInstallation;
use crate::cluster::{Cluster, ClusterOptions};
use crate::report::{CaseReport, Suite};

/// The version of pg_trickle installed in the database `db` is connected to.
pub fn installed_version(db: &mut postgres::Client) -> Result<String, postgres::Error> {
    db.query_one(
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_trickle'",
        &[],
    )
    .map(|r| r.get(0))
}
/// A released version and the commit it was released from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Version, e.g. `0.38.0`.
    pub version: String,
    /// Full commit hash.
    pub commit: String,
}

/// The releases recorded in `engine/ext/sql/RELEASES`, oldest first.
pub fn releases(root: &Path) -> Result<Vec<Release>, String> {
    let path = root.join("engine/ext/sql/RELEASES");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some(Release {
                version: parts.next()?.to_string(),
                commit: parts.next()?.to_string(),
            })
        })
        .collect())
}

/// Which upgrade paths a change needs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// `(from, to)` versions to check; empty to skip.
    pub paths: Vec<(String, String)>,
    /// Why, in one line.
    pub reason: String,
}

/// Files whose change can alter what an upgrade must produce.
const UPGRADE_RELEVANT: &[&str] = &[
    "engine/ext/sql/",
    "engine/ext/src/catalog.sql",
    "engine/ext/src/api.rs",
    "engine/ext/src/status.rs",
    "engine/ext/src/operations.rs",
    "engine/ext/src/capture.rs",
    "engine/ext/src/gucs.rs",
    "engine/ext/src/compat.rs",
    "engine/ext/src/wake.rs",
    "engine/ext/src/lib.rs",
    "engine/ext/src/privileges.sql",
    "engine/ext/src/regenerate.rs",
    "engine/ext/src/security.rs",
    "engine/ext/pg_trickle.control",
    "engine/ext/Cargo.toml",
    "engine/core/src/settings.rs",
    "Cargo.toml",
];

/// Decide, from the files a change touches, which upgrade paths to run:
/// changes to SQL scripts, the catalog, change capture, settings or the
/// SQL-facing API select the path from the newest release to `current`
/// (and every release, when a released script itself changed); anything
/// else skips the slice.
pub fn slice(changed: &[String], released: &[String], current: &str) -> Slice {
    let relevant: Vec<&String> = changed
        .iter()
        .filter(|f| UPGRADE_RELEVANT.iter().any(|p| f.starts_with(p)))
        .collect();
    let Some(newest) = released.iter().rfind(|v| v.as_str() != current) else {
        return Slice {
            paths: Vec::new(),
            reason: "no released version to upgrade from".into(),
        };
    };
    if relevant.is_empty() {
        return Slice {
            paths: Vec::new(),
            reason: format!(
                "skipped: none of the {} changed file(s) touches SQL scripts, the catalog, capture, settings or the SQL-facing API",
                changed.len()
            ),
        };
    }
    let released_script_changed = relevant.iter().any(|f| {
        released
            .iter()
            .any(|v| f.as_str() == format!("engine/ext/sql/pg_trickle--{v}.sql"))
    });
    let froms: Vec<&String> = if released_script_changed {
        released.iter().filter(|v| v.as_str() != current).collect()
    } else {
        vec![newest]
    };
    Slice {
        paths: froms
            .into_iter()
            .map(|f| (f.clone(), current.to_string()))
            .collect(),
        reason: format!(
            "selected by {}",
            relevant
                .iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Files changed since `base` (committed, staged and not).
pub fn changed_files(root: &Path, base: &str) -> Result<Vec<String>, String> {
    let merge_base = git(root, &["merge-base", base, "HEAD"])?;
    let out = git(root, &["diff", "--name-only", merge_base.trim()])?;
    Ok(out.lines().map(str::to_string).collect())
}

fn git(root: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Build the extension in `tree` (with `target_dir` as its cargo target
/// directory, so builds stay cached) and package it into `out` with `cargo
/// pgrx package` against `pg_config`: its files land below `out` at the
/// installation's absolute paths, and nothing is written to the installation.
pub fn package_build(
    tree: &Path,
    pg_config: &Path,
    target_dir: &Path,
    out: &Path,
    log: &Path,
) -> Result<(), String> {
    // pgrx adds to an existing output directory: start it empty, so a
    // package holds exactly one build.
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| format!("removing {}: {e}", out.display()))?;
    }
    // The debug profile, as `cargo pgrx install` and ci/setup.sh build:
    // the same cached artifacts serve both.
    let out = Command::new("cargo")
        .args(["pgrx", "package", "--debug", "--pg-config"])
        .arg(pg_config)
        .arg("--out-dir")
        .arg(out)
        .current_dir(tree.join("engine/ext"))
        .env("CARGO_TARGET_DIR", target_dir)
        // Older trees predate the workspace's lean debug profile; the same
        // setting keeps their builds as small (and matches the current
        // tree's profile, so its cached artifacts still serve).
        .env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")
        .output()
        .map_err(|e| format!("cargo pgrx package in {}: {e}", tree.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::write(log, &text);
    if out.status.success() {
        Ok(())
    } else {
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        Err(format!(
            "building {} failed (log {}):\n{}",
            tree.display(),
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

/// Where the matrix works: the repository, PostgreSQL, scratch space.
pub struct Matrix<'a> {
    /// Repository root (the current build).
    pub root: &'a Path,
    /// `pg_config` of the installation to copy; only read, never written.
    pub pg_config: &'a Path,
    /// Scratch directory (worktrees, logs).
    pub work: PathBuf,
    /// The run's directory for clusters; the private installation is
    /// made in its `installation-<pid>/` (where the server account can
    /// read it when the runner is root).
    pub clusters: PathBuf,
    /// Keep the private installation even when every path passed.
    pub keep: bool,
}

/// The workload an upgrade must carry across: stream tables of every mode
/// with changes pending, and one marked for reinitialisation.
const BEFORE: &str = "
CREATE TABLE a (k int, v int, s text);
CREATE TABLE b (k int, w int);
CREATE TABLE t (x int);
INSERT INTO a SELECT i % 5, i, 'r' || (i % 3) FROM generate_series(1, 200) i;
INSERT INTO b SELECT i % 7, i * 2 FROM generate_series(1, 50) i;
INSERT INTO t SELECT i FROM generate_series(1, 20) i;
SELECT pgtrickle.create_stream_table('j', 'SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k', NULL, 'DIFFERENTIAL');
-- g keeps recomputing its groups in 0.40.0 too (max of text), so a fresh
-- install makes it as the upgrade leaves it; alg checks the algebraic form
SELECT pgtrickle.create_stream_table('g', 'SELECT k, count(*) AS n, sum(v) AS total, max(s) AS hi FROM a GROUP BY k', NULL, 'DIFFERENTIAL');
SELECT pgtrickle.create_stream_table('top', 'SELECT k, count(*) AS n FROM j GROUP BY k', NULL, 'DIFFERENTIAL');
SELECT pgtrickle.create_stream_table('f', 'SELECT k, v FROM a ORDER BY v LIMIT 10', NULL, 'AUTO');
CREATE TABLE u (k int, v int);
INSERT INTO u SELECT i % 4, i FROM generate_series(1, 30) i;
SELECT pgtrickle.create_stream_table('sub', 'SELECT k, count(*) AS n FROM u WHERE EXISTS (SELECT 1 FROM b WHERE b.k = u.k) GROUP BY k', NULL, 'AUTO');
SELECT pgtrickle.create_stream_table('nest', 'SELECT n, count(*) AS c FROM (SELECT k, count(*) AS n FROM u GROUP BY k) s GROUP BY n', NULL, 'AUTO');
SELECT pgtrickle.create_stream_table('ord', 'SELECT k, array_agg(v ORDER BY v) AS vs FROM u GROUP BY k', NULL, 'AUTO');
SELECT pgtrickle.create_stream_table('alg', 'SELECT k, sum(v) AS total, avg(v) AS mean, min(v) AS lo FROM u GROUP BY k', NULL, 'DIFFERENTIAL');
SELECT pgtrickle.create_stream_table('full_t', 'SELECT x, x * 2 AS y FROM t', NULL, 'FULL');
SELECT pgtrickle.create_stream_table('tr', 'SELECT x FROM t WHERE x > 3', NULL, 'DIFFERENTIAL');
-- pending changes, not yet refreshed
INSERT INTO a VALUES (1, 1000, 'new'), (9, 9, 'new');
UPDATE a SET v = v + 1 WHERE k = 2;
DELETE FROM b WHERE k = 3;
-- a stream table marked for reinitialisation
TRUNCATE t;
INSERT INTO t VALUES (4), (5);
-- stream tables versions before 0.40.0 kept wrongly or could not refresh:
-- an inheritance parent (a child's change was missed), a partitioned
-- table, and a json column (refreshes failed once it had rows)
CREATE TABLE par (k int, v text);
CREATE TABLE par_c () INHERITS (par);
INSERT INTO par VALUES (1, 'p'); INSERT INTO par_c VALUES (2, 'c');
SELECT pgtrickle.create_stream_table('inh', 'SELECT k, v FROM par', NULL, 'DIFFERENTIAL');
INSERT INTO par_c VALUES (3, 'missed before 0.40.0');
CREATE TABLE pt (k int) PARTITION BY RANGE (k);
CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (100);
INSERT INTO pt VALUES (1);
SELECT pgtrickle.create_stream_table('pst', 'SELECT k FROM pt', NULL, 'DIFFERENTIAL');
INSERT INTO pt VALUES (2);
CREATE TABLE js (id int, j json);
SELECT pgtrickle.create_stream_table('jst', 'SELECT id, j FROM js', NULL, 'DIFFERENTIAL');
INSERT INTO js VALUES (1, '[1]');
";

/// A query released versions refresh FULL and this one DIFFERENTIALLY,
/// over a source (`u`) nothing else reads: keeping it FULL must not set
/// up capture there (the catalog diff would show it).
const SUB_QUERY: &str =
    "SELECT k, count(*) AS n FROM u WHERE EXISTS (SELECT 1 FROM b WHERE b.k = u.k) GROUP BY k";

/// Another such query (a top-k), over sources other stream tables read.
const TOP_QUERY: &str = "SELECT k, v FROM a ORDER BY v LIMIT 10";

/// Another (an aggregate of an aggregated subquery, TPC-H Q13's shape).
const NEST_QUERY: &str =
    "SELECT n, count(*) AS c FROM (SELECT k, count(*) AS n FROM u GROUP BY k) s GROUP BY n";

/// Another (an ordered aggregate).
const ORDERED_QUERY: &str = "SELECT k, array_agg(v ORDER BY v) AS vs FROM u GROUP BY k";

/// A grouped query kept algebraically since 0.40.0 (count, sum and avg
/// over support columns): a stream table created earlier has none, keeps
/// recomputing its groups across the upgrade, and gains them when
/// reinitialised.
const ALGEBRAIC_QUERY: &str =
    "SELECT k, sum(v) AS total, avg(v) AS mean, min(v) AS lo FROM u GROUP BY k";

/// The stream tables of [`BEFORE`] released versions refresh FULL and this
/// one maintains DIFFERENTIALLY: the upgrade keeps them FULL, says so, and
/// `alter_stream_table` moves them; `(name, query, a statement changing
/// what it reads)`.
const KEPT_FULL: &[(&str, &str, &str)] = &[
    ("sub", SUB_QUERY, "INSERT INTO u VALUES (1, 99)"),
    ("f", TOP_QUERY, "INSERT INTO a VALUES (0, -5, 'lowest')"),
    ("nest", NEST_QUERY, "INSERT INTO u VALUES (1, 98)"),
    ("ord", ORDERED_QUERY, "INSERT INTO u VALUES (2, 97)"),
];

/// Stream tables of [`BEFORE`], their queries and the mode their first
/// refresh after the upgrade must run (the next one runs DIFFERENTIAL
/// wherever the stream table is DIFFERENTIAL).
const EXPECT: &[(&str, &str, Mode)] = &[
    (
        "j",
        "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k",
        Mode::Differential,
    ),
    (
        "g",
        "SELECT k, count(*) AS n, sum(v) AS total, max(s) AS hi FROM a GROUP BY k",
        Mode::Differential,
    ),
    (
        "top",
        "SELECT k, count(*) AS n FROM j GROUP BY k",
        Mode::Differential,
    ),
    // FULL before the upgrade (a top-k and a subquery in an expression),
    // maintainable DIFFERENTIALLY after it: stay FULL until altered
    // (checked below).
    ("f", TOP_QUERY, Mode::Full),
    ("sub", SUB_QUERY, Mode::Full),
    ("nest", NEST_QUERY, Mode::Full),
    ("ord", ORDERED_QUERY, Mode::Full),
    ("alg", ALGEBRAIC_QUERY, Mode::Differential),
    ("full_t", "SELECT x, x * 2 AS y FROM t", Mode::Full),
    ("tr", "SELECT x FROM t WHERE x > 3", Mode::Full),
    ("inh", "SELECT k, v FROM par", Mode::Full),
    ("pst", "SELECT k FROM pt", Mode::Full),
    ("jst", "SELECT id, j FROM js", Mode::Differential),
];

/// Stream tables whose first refresh after the upgrade is FULL only
/// because of it; later refreshes are DIFFERENTIAL.
const REINIT_BY_UPGRADE: &[&str] = &["tr", "inh", "pst"];

/// The private installation and the current build's package in it.
struct Private {
    install: PrivateInstallation,
    current: PathBuf,
}

/// Copy the installation and package the current build.
fn prepare(m: &Matrix<'_>, current: &str) -> Result<Private, String> {
    // Named like the run's clusters, so a copy kept by an earlier run with
    // the same run directory stays as it was.
    let dir = m
        .clusters
        .join(format!("installation-{}", std::process::id()));
    let install = PrivateInstallation::create(m.pg_config, &dir)
        .map_err(|e| format!("making a private copy of the installation: {e}"))?;
    println!(
        "upgrade: private installation in {} ({} itself is not changed)",
        install.dir.display(),
        m.pg_config.display()
    );
    println!("upgrade: packaging the current build ({current})");
    let pkg = install.package_dir("current");
    package_build(
        m.root,
        m.pg_config,
        &m.root.join("target"),
        &pkg,
        &m.work.join("build-current.log"),
    )?;
    Ok(Private {
        install,
        current: pkg,
    })
}

fn start(m: &Matrix<'_>, p: &Private, name: &str) -> Result<Cluster, String> {
    std::fs::create_dir_all(&m.clusters).map_err(|e| e.to_string())?;
    Cluster::start(
        &m.clusters,
        &ClusterOptions {
            pg_config: p.install.pg_config(),
            name: name.into(),
            settings: vec!["pg_trickle.scheduler_interval_ms = 600000".into()],
            ..ClusterOptions::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// Whether `version` has holds (0.39.0 and later).
fn has_hold(version: &str) -> bool {
    let v: Vec<u64> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    v >= vec![0, 39, 0]
}

/// Check one path `from -> current`; every problem found, empty when it passed.
fn check_path(
    m: &Matrix<'_>,
    p: &Private,
    from: &Release,
    current: &str,
) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    // 1. The old version, from its own source.
    let tree = m.work.join(format!("src-{}", from.version));
    if !tree.join("engine/ext").is_dir() {
        let _ = git(
            m.root,
            &["worktree", "remove", "--force", &tree.display().to_string()],
        );
        git(
            m.root,
            &[
                "worktree",
                "add",
                "--detach",
                &tree.display().to_string(),
                &from.commit,
            ],
        )?;
    }
    // Its own target directory: the two builds' libraries share a file
    // name, and one directory would let either pass for the other.
    let old_target = m.root.join("target/upgrade").join(&from.version);
    println!(
        "upgrade: building {} from {}",
        from.version,
        &from.commit[..12]
    );
    let old_pkg = p.install.package_dir(&from.version);
    package_build(
        &tree,
        m.pg_config,
        &old_target,
        &old_pkg,
        &m.work.join(format!("build-{}.log", from.version)),
    )?;
    p.install.install_package(&old_pkg)?;
    println!(
        "upgrade: {} installed into the private installation",
        from.version
    );
    let cluster = start(m, p, &format!("upgrade-{}", from.version))?;
    let mut cluster = cluster;
    {
        let mut db = cluster
            .fresh_database("upgrade_me")
            .map_err(|e| e.to_string())?;
        let v = installed_version(&mut db).map_err(|e| e.to_string())?;
        if v != from.version {
            return Err(format!(
                "the old build installed version {v}, not {}",
                from.version
            ));
        }
        db.batch_execute(BEFORE).map_err(|e| {
            format!(
                "setting up on {}: {}",
                from.version,
                crate::cluster::describe(&e)
            )
        })?;
    }
    // A hold, where the old version has holds.
    let hold = has_hold(&from.version);
    if hold {
        let mut db = cluster.connect("upgrade_me").map_err(|e| e.to_string())?;
        db.batch_execute("SELECT pgtrickle.hold_stream_table('g', 'upgrade check')")
            .map_err(|e| crate::cluster::describe(&e))?;
    }
    // 2. Swap in the current build; restart, since the library is preloaded.
    cluster.stop().map_err(|e| e.to_string())?;
    println!("upgrade: installing the current build ({current}) into the private installation");
    p.install.install_package(&p.current)?;
    cluster.start_again().map_err(|e| e.to_string())?;
    let (mut db, notices) = cluster
        .connect_collecting_notices("upgrade_me")
        .map_err(|e| e.to_string())?;
    let sql = |e: postgres::Error| crate::cluster::describe(&e);
    // 3. Upgrade.
    if let Err(e) = db.batch_execute("ALTER EXTENSION pg_trickle UPDATE") {
        return Ok(vec![format!(
            "ALTER EXTENSION pg_trickle UPDATE failed: {}",
            sql(e)
        )]);
    }
    let v = installed_version(&mut db).map_err(sql)?;
    if v != current {
        problems.push(format!(
            "after the update the extension is {v}, not {current}"
        ));
    }
    // 3b. A grouped stream table made before algebraic maintenance keeps
    // recomputing its groups, then gains support columns when reinitialised
    // (before the comparison: a fresh install creates it with them).
    problems.extend(support_columns_on_reinit(&mut db).map_err(sql)?);
    // 4. The catalog equals a fresh install's with the same stream tables
    // (so capture made by the old version, brought up to date by the
    // upgrade, must equal capture made by the new one).
    let mut fresh = cluster
        .fresh_database("fresh_install")
        .map_err(|e| e.to_string())?;
    fresh.batch_execute(BEFORE).map_err(|e| {
        format!(
            "setting up a fresh install of {current}: {}",
            crate::cluster::describe(&e)
        )
    })?;
    if hold {
        fresh
            .batch_execute("SELECT pgtrickle.hold_stream_table('g', 'upgrade check')")
            .map_err(sql)?;
    }
    // The upgrade keeps `sub`, `f` and `nest` FULL (their queries are newly
    // maintained DIFFERENTIALLY): so are the fresh install's, for the
    // comparison.
    // `alg` was re-planned by its reinitialisation, which names its
    // storage as the stream table's search_path prints it: so is the fresh
    // install's.
    fresh
        .batch_execute("SELECT pgtrickle.reinitialize_stream_table('alg')")
        .map_err(sql)?;
    for (st, query, _) in KEPT_FULL {
        fresh
            .batch_execute(&format!(
                "SELECT pgtrickle.drop_stream_table('{st}'); \
                 SELECT pgtrickle.create_stream_table('{st}', '{query}', NULL, 'FULL')"
            ))
            .map_err(sql)?;
    }
    let diff = catalog_diff::differences(
        &catalog_diff::snapshot(&mut fresh).map_err(sql)?,
        &catalog_diff::snapshot(&mut db).map_err(sql)?,
    );
    if !diff.is_empty() {
        problems.push(format!(
            "the upgraded catalog differs from a fresh install of {current} in {} object(s):\n{}",
            diff.len(),
            diff.join("\n")
        ));
    }
    // 4b. What earlier versions kept wrongly is reported, in a WARNING (an
    // extension script cannot send NOTICEs) and in status.
    let said = notices.lock().map(|n| n.join("\n")).unwrap_or_default();
    for (st, ..) in KEPT_FULL {
        if !said.contains(&format!(
            "stream table public.{st} was kept FULL across the upgrade"
        )) {
            problems.push(format!(
                "the upgrade did not say that {st} was kept FULL although its query is now maintained DIFFERENTIALLY; it said:\n{said}"
            ));
        }
    }
    for st in ["inh", "pst"] {
        if !said.contains(&format!("stream table public.{st} is recomputed")) {
            problems.push(format!(
                "the upgrade did not report stream table {st} in a WARNING; it said:\n{said}"
            ));
        }
        let reason: Option<String> = db
            .query_one(
                "SELECT reinit_reason FROM pgtrickle.stream_table_status() WHERE name = $1",
                &[&format!("public.{st}")],
            )
            .map_err(sql)?
            .get(0);
        if !reason
            .as_deref()
            .unwrap_or("")
            .contains("partitions or inheritance children")
        {
            problems.push(format!(
                "stream table {st} is not marked in status after the upgrade (reinit_reason {reason:?})"
            ));
        }
    }
    // 5. States survive: the reinit mark (and the hold, below).
    let reinit: bool = db
        .query_one(
            "SELECT needs_reinit FROM pgtrickle.stream_table_status() WHERE name = 'public.tr'",
            &[],
        )
        .map_err(sql)?
        .get(0);
    if !reinit {
        problems.push("the needs-reinit mark of tr was lost".into());
    }
    if hold {
        let held: bool = db
            .query_one(
                "SELECT cdc_state = 'holding' FROM pgtrickle.stream_table_status() WHERE name = 'public.g'",
                &[],
            )
            .map_err(sql)?
            .get(0);
        if !held {
            problems.push("the hold on g was lost".into());
        }
        db.batch_execute("SELECT pgtrickle.resume_stream_table('g')")
            .map_err(sql)?;
    }
    // 6. Pending changes apply exactly once; every stream table refreshes correctly.
    for (st, query, mode) in EXPECT {
        if let Err(e) = db.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{st}')"))
        {
            problems.push(format!("refreshing {st} failed: {}", sql(e)));
            continue;
        }
        let ran = last_refresh(&mut db, st).map_err(sql)?.map(|r| r.ran);
        if ran != Some(Ran::Mode(*mode)) {
            problems.push(format!(
                "{st}: the first refresh ran {ran:?}, expected {mode}"
            ));
        }
        if let Some(d) = differences(&mut db, st, query).map_err(sql)? {
            problems.push(format!("{st} differs from its query after the upgrade (changes lost or applied twice):\n{d}"));
        }
    }
    // New changes after the upgrade flow DIFFERENTIALLY.
    db.batch_execute(
        "INSERT INTO a VALUES (2, 7, 'after'); INSERT INTO t VALUES (42); \
         INSERT INTO par_c VALUES (4, 'after'); INSERT INTO pt VALUES (3); \
         INSERT INTO js VALUES (2, '[1, 2]')",
    )
    .map_err(sql)?;
    for (st, query, mode) in EXPECT {
        db.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{st}')"))
            .map_err(sql)?;
        let want = if REINIT_BY_UPGRADE.contains(st) {
            Mode::Differential
        } else {
            *mode
        };
        let ran = last_refresh(&mut db, st).map_err(sql)?.map(|r| r.ran);
        if ran != Some(Ran::Mode(want)) {
            problems.push(format!(
                "{st}: a refresh after the upgrade ran {ran:?}, expected {want}"
            ));
        }
        if let Some(d) = differences(&mut db, st, query).map_err(sql)? {
            problems.push(format!("{st} is wrong after a post-upgrade change:\n{d}"));
        }
    }
    // A stream table the new version maintains DIFFERENTIALLY moves there
    // only when its owner asks: its next refresh reinitialises it, the one
    // after runs DIFFERENTIAL.
    for (st, query, change) in KEPT_FULL {
        for step in [
            format!("SELECT pgtrickle.alter_stream_table('{st}', refresh_mode => 'AUTO')"),
            format!("SELECT pgtrickle.refresh_stream_table('{st}')"),
            change.to_string(),
            format!("SELECT pgtrickle.refresh_stream_table('{st}')"),
        ] {
            db.batch_execute(&step).map_err(sql)?;
        }
        let ran = last_refresh(&mut db, st).map_err(sql)?.map(|r| r.ran);
        if ran != Some(Ran::Mode(Mode::Differential)) {
            problems.push(format!(
                "{st}: after alter_stream_table(refresh_mode => 'AUTO') a refresh ran {ran:?}, expected DIFFERENTIAL"
            ));
        }
        if let Some(d) = differences(&mut db, st, query).map_err(sql)? {
            problems.push(format!(
                "{st} is wrong after it moved to DIFFERENTIAL:\n{d}"
            ));
        }
    }
    problems.extend(adaptive_choice_after_upgrade(&mut db).map_err(sql)?);
    // 7. Downgrade is refused, clearly.
    match db.batch_execute(&format!(
        "ALTER EXTENSION pg_trickle UPDATE TO '{}'",
        from.version
    )) {
        Ok(()) => problems.push(format!("a downgrade to {} was accepted", from.version)),
        Err(e) => println!("upgrade: downgrade refused as it should be: {}", sql(e)),
    }
    if !problems.is_empty() {
        cluster.keep();
    }
    Ok(problems)
}

/// What 3b checks of stream table `alg` ([`ALGEBRAIC_QUERY`]): without
/// support columns after the upgrade, refreshed DIFFERENTIALLY and right;
/// with them after `reinitialize_stream_table`, its stored statement the
/// algebraic one, and right after a change.
fn support_columns_on_reinit(db: &mut postgres::Client) -> Result<Vec<String>, postgres::Error> {
    let mut problems = Vec::new();
    let has_support = |db: &mut postgres::Client| -> Result<(bool, bool), postgres::Error> {
        let row = db.query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'public.alg'::regclass \
             AND attname = '__pgt_count' AND NOT attisdropped), \
             coalesce((SELECT sql LIKE '%__pgt_mg%' FROM pgtrickle.stream_table_sql('alg') \
             WHERE phase = 'differential'), false)",
            &[],
        )?;
        Ok((row.get(0), row.get(1)))
    };
    if has_support(db)? != (false, false) {
        problems.push(
            "alg: a stream table created before 0.40.0 has support columns or an algebraic statement right after the upgrade".into(),
        );
    }
    for step in [
        "INSERT INTO u VALUES (3, 40)",
        "SELECT pgtrickle.refresh_stream_table('alg')",
        "SELECT pgtrickle.reinitialize_stream_table('alg')",
        "INSERT INTO u VALUES (3, 41), (7, NULL), (2, -5)",
        "DELETE FROM u WHERE k = 0 OR v = -5",
        "SELECT pgtrickle.refresh_stream_table('alg')",
    ] {
        db.batch_execute(step)?;
        if step.starts_with("SELECT pgtrickle.refresh") {
            let ran = last_refresh(db, "alg")?.map(|r| r.ran);
            if ran != Some(Ran::Mode(Mode::Differential)) {
                problems.push(format!(
                    "alg: after `{step}` the refresh ran {ran:?}, expected DIFFERENTIAL"
                ));
            }
            if let Some(d) = differences(db, "alg", ALGEBRAIC_QUERY)? {
                problems.push(format!("alg differs from its query after `{step}`:\n{d}"));
            }
        }
    }
    if has_support(db)? != (true, true) {
        problems.push(
            "alg: reinitialize_stream_table did not add the support columns and the algebraic statement".into(),
        );
    }
    Ok(problems)
}

/// An AUTO stream table created before 0.40.0 (`ord`, moved to
/// DIFFERENTIAL above) gains the estimates its adaptive choice reads: its
/// reinitialising refresh measured a FULL, and a backlog far past
/// `pg_trickle.adaptive_full_fraction` of its source is recomputed, with
/// the reason recorded.
fn adaptive_choice_after_upgrade(
    db: &mut postgres::Client,
) -> Result<Vec<String>, postgres::Error> {
    let mut problems = Vec::new();
    let full_ms: Option<f64> = db
        .query_one(
            "SELECT full_ms_estimate FROM pgtrickle.pgt_stream_tables WHERE name = 'public.ord'",
            &[],
        )?
        .get(0);
    if full_ms.is_none() {
        problems.push(
            "ord: no FULL refresh measured after the upgrade (full_ms_estimate is NULL)".into(),
        );
    }
    db.batch_execute(
        "ANALYZE u; INSERT INTO u SELECT i % 4, i FROM generate_series(1, 1500) i; \
         SELECT pgtrickle.refresh_stream_table('ord')",
    )?;
    let last = last_refresh(db, "ord")?;
    let chose = last
        .as_ref()
        .and_then(|r| r.reason.as_deref())
        .unwrap_or("");
    if last.as_ref().map(|r| &r.ran) != Some(&Ran::Mode(Mode::Full))
        || !chose.starts_with("AUTO chose FULL: at least 1,001 pending changes")
    {
        problems.push(format!(
            "ord: 1,500 changes to a 30-row source were not recomputed by AUTO's choice after the upgrade: {}",
            last.map(|r| r.describe()).unwrap_or_else(|| "no refresh recorded".into())
        ));
    }
    if let Some(d) = differences(db, "ord", ORDERED_QUERY)? {
        problems.push(format!("ord is wrong after AUTO recomputed it:\n{d}"));
    }
    Ok(problems)
}

/// Run the matrix for `paths`; one case per path. The private
/// installation is removed at the end, or kept (and its path printed) when
/// a path failed or `keep` is set.
pub fn run(m: &Matrix<'_>, paths: &[(Release, String)]) -> Suite {
    let started = Instant::now();
    let mut cases = Vec::new();
    let Some(current) = paths.first().map(|(_, to)| to.clone()) else {
        return Suite::new("upgrade", cases, started.elapsed().as_secs_f64(), None);
    };
    let t = Instant::now();
    let mut private = match prepare(m, &current) {
        Ok(p) => p,
        Err(e) => {
            let mut tally = Tally::default();
            tally.add(Outcome::HarnessError);
            let mut c = CaseReport::new(
                "private installation",
                Outcome::HarnessError,
                tally,
                t.elapsed().as_millis(),
            );
            c.message = e.lines().next().map(str::to_string);
            c.details = Some(e);
            cases.push(c);
            return Suite::new("upgrade", cases, started.elapsed().as_secs_f64(), None);
        }
    };
    for (from, to) in paths {
        let t = Instant::now();
        let name = format!("{} -> {to}", from.version);
        let (outcome, message) = match check_path(m, &private, from, to) {
            Ok(p) if p.is_empty() => (Outcome::Pass, None),
            Ok(p) => (Outcome::Mismatch, Some(p.join("\n"))),
            Err(e) => (Outcome::HarnessError, Some(e)),
        };
        let mut tally = Tally::default();
        tally.add(outcome);
        let mut c = CaseReport::new(&name, outcome, tally, t.elapsed().as_millis());
        if let Some(m) = message {
            c.message = m.lines().next().map(str::to_string);
            c.details = Some(m);
        }
        cases.push(c);
    }
    if m.keep || cases.iter().any(|c| c.outcome != Outcome::Pass) {
        // Kept clusters need the programs and builds they ran with.
        private.install.keep();
    }
    Suite::new("upgrade", cases, started.elapsed().as_secs_f64(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    fn released() -> Vec<String> {
        files(&["0.38.0", "0.39.0"])
    }

    #[test]
    fn docs_or_harness_changes_skip_the_slice_and_say_why() {
        let s = slice(
            &files(&["README.md", "harness/src/main.rs", "oracles/src/gen.rs"]),
            &released(),
            "0.40.0",
        );
        assert!(s.paths.is_empty());
        assert!(
            s.reason.contains("none of the 3 changed file(s)"),
            "{}",
            s.reason
        );
    }

    #[test]
    fn sql_settings_capture_and_api_changes_select_the_newest_path() {
        for f in [
            "engine/ext/sql/pg_trickle--0.39.0--0.40.0.sql",
            "engine/core/src/settings.rs",
            "engine/ext/src/capture.rs",
            "engine/ext/src/catalog.sql",
            "engine/ext/src/api.rs",
        ] {
            let s = slice(&files(&[f, "README.md"]), &released(), "0.40.0");
            assert_eq!(
                s.paths,
                vec![("0.39.0".to_string(), "0.40.0".to_string())],
                "{f}"
            );
            assert!(s.reason.contains(f));
        }
    }

    #[test]
    fn a_changed_released_script_selects_every_path() {
        let s = slice(
            &files(&["engine/ext/sql/pg_trickle--0.38.0.sql"]),
            &released(),
            "0.40.0",
        );
        assert_eq!(s.paths.len(), 2);
    }

    #[test]
    fn nothing_released_means_nothing_to_run() {
        let s = slice(
            &files(&["engine/ext/src/api.rs"]),
            &files(&["0.40.0"]),
            "0.40.0",
        );
        assert!(s.paths.is_empty());
        assert!(s.reason.contains("no released version"));
    }

    #[test]
    fn holds_exist_from_0_39_0() {
        assert!(!has_hold("0.38.0"));
        assert!(has_hold("0.39.0") && has_hold("0.40.1") && has_hold("1.0.0"));
    }

    #[test]
    fn the_recorded_releases_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let r = releases(&root).unwrap();
        assert!(r
            .iter()
            .any(|x| x.version == "0.38.0" && x.commit.len() == 40));
    }

    #[test]
    fn every_expected_stream_table_is_created_before_the_upgrade() {
        for (name, query, _) in EXPECT {
            assert!(BEFORE.contains(&format!("'{name}', '{query}'")), "{name}");
        }
    }
}
