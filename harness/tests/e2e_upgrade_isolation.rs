//! The upgrade matrix never changes the installation it is pointed at:
//! `harness upgrade` runs while another cluster of the same installation
//! creates and drops the extension in a loop, and every iteration must get
//! the version that installation offered before the run, and its
//! pg_trickle files must be byte-identical (and not rewritten) afterwards.
//! The old runner, which installed builds into it and put the current
//! build back at the end, failed most rounds ("CREATE EXTENSION made
//! version 0.39.1, not 0.40.0"). Also: a private
//! installation finds its own files, takes packages and is removed when
//! dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use harness::checks::upgrade::installation::{is_extension_file, Layout, PrivateInstallation};
use harness::cluster::{describe, Cluster, ClusterOptions};
use harness::testkit::{dedicated_cluster, pg_config, test_root};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// `sha256sum` and modification time of every pg_trickle file in the
/// library and extension directories of `layout`, by path. The time
/// matters too: a runner that installs other builds and puts the same
/// build back at the end leaves the same bytes.
fn extension_files(layout: &Layout) -> BTreeMap<PathBuf, (String, SystemTime)> {
    let mut out = BTreeMap::new();
    for dir in [layout.pkglibdir.clone(), layout.extension_dir()] {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.expect("directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !is_extension_file(&name) {
                continue;
            }
            let sum = Command::new("sha256sum")
                .arg(&path)
                .output()
                .expect("run sha256sum");
            assert!(sum.status.success(), "sha256sum {}", path.display());
            let text = String::from_utf8_lossy(&sum.stdout);
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let sum = text.split_whitespace().next().unwrap_or("").to_string();
            out.insert(path, (sum, modified));
        }
    }
    out
}

/// One round on the original installation: create the extension, check
/// its version, maintain a stream table, drop it all again.
fn round(db: &mut postgres::Client, expected: &str) -> Result<(), String> {
    let sql = |e: postgres::Error| describe(&e);
    db.batch_execute("CREATE EXTENSION pg_trickle")
        .map_err(sql)?;
    let v = harness::checks::upgrade::installed_version(db).map_err(sql)?;
    if v != expected {
        return Err(format!("CREATE EXTENSION made version {v}, not {expected}"));
    }
    db.batch_execute(
        "CREATE TABLE src (k int);
         INSERT INTO src VALUES (1), (2);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k, count(*) AS n FROM src GROUP BY k', NULL, 'DIFFERENTIAL');
         INSERT INTO src VALUES (2);
         SELECT pgtrickle.refresh_stream_table('st');",
    )
    .map_err(sql)?;
    let n: i64 = db
        .query_one("SELECT n FROM st WHERE k = 2", &[])
        .map_err(sql)?
        .get(0);
    if n != 2 {
        return Err(format!("the stream table counts {n} rows for k = 2, not 2"));
    }
    db.batch_execute(
        "SELECT pgtrickle.drop_stream_table('st'); DROP TABLE src; DROP EXTENSION pg_trickle",
    )
    .map_err(sql)
}

/// What the loop saw: each round's start and end, and every failure.
#[derive(Default)]
struct Rounds {
    spans: Vec<(Instant, Instant)>,
    failures: Vec<String>,
}

#[test]
fn the_upgrade_matrix_leaves_the_installation_it_was_given_alone() {
    let root = workspace_root();
    let original = Layout::of(&pg_config()).expect("pg_config");
    let current = harness::checks::versions::workspace_version(&root).expect("workspace version");
    let from = harness::checks::upgrade::releases(&root)
        .expect("releases")
        .into_iter()
        .rfind(|r| r.version != current)
        .expect("a released version older than the current one")
        .version;

    // Another user of the same installation, started before the run, in a
    // database of its own (not the one its scheduler watches).
    let other = dedicated_cluster("isolation_loop", &[]);
    let mut admin = other.connect("postgres").expect("connect");
    admin
        .batch_execute("CREATE DATABASE isolation_loop")
        .expect("create the loop's database");
    let expected: String = admin
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_trickle'",
            &[],
        )
        .expect("pg_trickle is installed (run ci/setup.sh)")
        .get(0);
    let before = extension_files(&original);
    assert!(
        before
            .keys()
            .any(|p| p.extension().is_some_and(|e| e == "so"))
            && before
                .keys()
                .any(|p| p.extension().is_some_and(|e| e == "control")),
        "no pg_trickle library or control file in the installation: {before:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(Mutex::new(Rounds::default()));
    let looper = {
        let (stop, rounds, expected) = (stop.clone(), rounds.clone(), expected.clone());
        let conninfo = other.conninfo("isolation_loop");
        std::thread::spawn(move || {
            let mut db = postgres::Client::connect(&conninfo, postgres::NoTls).expect("connect");
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = round(&mut db, &expected);
                let mut seen = rounds.lock().unwrap();
                seen.spans.push((t, Instant::now()));
                if let Err(e) = r {
                    seen.failures.push(e);
                    let _ = db.batch_execute(
                        "DROP TABLE IF EXISTS st; DROP TABLE IF EXISTS src; \
                         DROP EXTENSION IF EXISTS pg_trickle CASCADE",
                    );
                }
            }
        })
    };

    let run_dir = test_root().join(format!("upgrade-isolation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    let started = Instant::now();
    let mut child = Command::new(HARNESS)
        .arg("--pg-config")
        .arg(pg_config())
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["upgrade", "--from", &from, "--root"])
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start harness upgrade");
    let stderr = {
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    };
    // When the old build went into the private installation and when the
    // current one replaced it: the window the loop must have run through.
    let mut stdout = String::new();
    let (mut old_in, mut current_in) = (None, None);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("harness output");
        if line.contains(&format!("{from} installed into the private installation")) {
            old_in = Some(Instant::now());
        }
        if line.contains("installing the current build") {
            current_in.get_or_insert(Instant::now());
        }
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let status = child.wait().expect("harness upgrade");
    let took = started.elapsed();
    // One more round after the run, then stop the loop.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    looper.join().expect("loop thread");
    let stderr = stderr.join().expect("stderr reader");
    println!("harness upgrade --from {from} took {took:?}");

    assert_eq!(
        status.code(),
        Some(0),
        "harness upgrade failed:\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains("private installation in"),
        "the run did not say where its private installation is:\n{stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("report.json")).expect("report.json"),
    )
    .expect("report.json parses");
    let cases: Vec<(String, String)> = report["suites"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["cases"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        cases,
        vec![(format!("{from} -> {current}"), "pass".to_string())],
        "{stdout}"
    );

    let seen = rounds.lock().unwrap();
    assert!(
        seen.failures.is_empty(),
        "{} of {} rounds on the original installation failed during the run:\n{}",
        seen.failures.len(),
        seen.spans.len(),
        seen.failures.join("\n")
    );
    let (old_in, current_in) = (
        old_in.expect("the run never said it installed the old build"),
        current_in.expect("the run never said it installed the current build"),
    );
    let during = seen
        .spans
        .iter()
        .filter(|(s, e)| *s < current_in && *e > old_in)
        .count();
    assert!(
        during >= 1 && seen.spans.len() >= 3,
        "the loop ran {} round(s), {during} while {from} was installed in the private copy",
        seen.spans.len()
    );
    println!(
        "{} rounds on the original installation, {during} while {from} was in the private copy",
        seen.spans.len()
    );

    let after = extension_files(&original);
    assert_eq!(
        before, after,
        "the run changed or rewrote pg_trickle's files in the original installation"
    );
    // A passing run removes its private installation (and its clusters).
    let clusters = std::env::temp_dir()
        .join("pg_trickle-runs")
        .join(run_dir.file_name().unwrap());
    let left: Vec<PathBuf> = std::fs::read_dir(&clusters)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind after a passing run: {left:?}");
    let _ = std::fs::remove_dir(&clusters);
    let _ = std::fs::remove_dir_all(&run_dir);
}

/// `pg_config` of the server behind `c`, as it reports its own directories.
fn server_dir(c: &Cluster, name: &str) -> String {
    c.connect("postgres")
        .expect("connect")
        .query_one("SELECT setting FROM pg_config WHERE name = $1", &[&name])
        .expect("pg_config view")
        .get(0)
}

#[test]
fn a_private_installation_runs_its_own_files_and_packages() {
    let original = Layout::of(&pg_config()).expect("pg_config");
    let originals = extension_files(&original);
    let dir = test_root().join(format!("private-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let inst = PrivateInstallation::create(&pg_config(), &dir).expect("private installation");
    let copy = inst.layout().clone();
    assert!(copy
        .dirs()
        .iter()
        .all(|d| d.starts_with(&inst.dir) && d.is_dir()));
    assert!(
        extension_files(&copy).is_empty(),
        "the copy took pg_trickle files from the original"
    );

    // A package of a made-up version: only the copy offers it.
    let pkg = inst.package_dir("fake");
    let place = |abs: &Path, body: &str| {
        let p = harness::checks::upgrade::installation::mirrored(&pkg, abs);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    place(
        &original.extension_dir().join("pg_trickle.control"),
        "default_version = '9.9.9'\nrelocatable = false\nsuperuser = true\n",
    );
    place(
        &original.extension_dir().join("pg_trickle--9.9.9.sql"),
        "CREATE TABLE made_by_the_fake_package ();\n",
    );
    // Never loaded: the control file names no module and nothing preloads it.
    place(&original.pkglibdir.join("pg_trickle.so"), "");
    let installed = inst.install_package(&pkg).expect("install the package");
    assert_eq!(installed.len(), 3, "{installed:?}");

    let c = Cluster::start(
        &test_root(),
        &ClusterOptions {
            pg_config: inst.pg_config(),
            preload: false,
            name: "private".into(),
            ..ClusterOptions::default()
        },
    )
    .expect("a cluster from the private installation");
    assert_eq!(
        server_dir(&c, "SHAREDIR"),
        copy.sharedir.display().to_string()
    );
    assert_eq!(
        server_dir(&c, "PKGLIBDIR"),
        copy.pkglibdir.display().to_string()
    );
    let mut db = c.connect("postgres").expect("connect");
    db.batch_execute("CREATE EXTENSION pg_trickle")
        .expect("create the fake extension");
    let v = harness::checks::upgrade::installed_version(&mut db).unwrap();
    assert_eq!(v, "9.9.9");
    drop(db);
    drop(c);

    // A package holding anything else is refused.
    place(&original.bindir.join("postgres"), "not a server");
    let err = inst.install_package(&pkg).unwrap_err();
    assert!(err.contains("neither"), "{err}");
    // And so is one without a control file, leaving the copy as it was.
    std::fs::remove_file(harness::checks::upgrade::installation::mirrored(
        &pkg,
        &original.bindir.join("postgres"),
    ))
    .unwrap();
    std::fs::remove_file(harness::checks::upgrade::installation::mirrored(
        &pkg,
        &original.extension_dir().join("pg_trickle.control"),
    ))
    .unwrap();
    let err = inst.install_package(&pkg).unwrap_err();
    assert!(err.contains("lacks"), "{err}");
    assert_eq!(
        extension_files(&copy).len(),
        3,
        "the refused package changed the copy"
    );

    assert_eq!(
        extension_files(&original),
        originals,
        "the original installation changed"
    );
    let kept = inst.dir.clone();
    drop(inst);
    assert!(!kept.exists(), "{} was not removed", kept.display());
    let _ = std::fs::remove_dir_all(&dir);
}
