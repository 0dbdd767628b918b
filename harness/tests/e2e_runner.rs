//! The runner binary as a user runs it: exit codes, the run directory's
//! contents, clusters removed on success, stopped on Ctrl-C, and a
//! multi-node topology.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::cluster::{ClusterOptions, Topology, TopologySpec};
use harness::testkit::{pg_config, test_root};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

fn run_dir(name: &str) -> PathBuf {
    let dir = test_root().join(format!("runner-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Where the runner puts the clusters of the run in `dir`.
fn cluster_root(dir: &Path) -> PathBuf {
    std::env::temp_dir()
        .join("pg_trickle-runs")
        .join(dir.file_name().expect("run dir name"))
}

fn harness(dir: &Path) -> Command {
    let mut c = Command::new(HARNESS);
    c.arg("--pg-config")
        .arg(pg_config())
        .arg("--run-dir")
        .arg(dir);
    c
}

#[test]
fn a_passing_run_writes_its_reports_and_removes_its_cluster() {
    let dir = run_dir("pass");
    let out = harness(&dir)
        .args(["oracle", "--workload", "select_star", "--steps", "3"])
        .output()
        .expect("run harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["report.json", "junit.xml", "report.html", "logs/node.log"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    assert!(
        stdout.contains(&dir.display().to_string()),
        "run directory not printed:\n{stdout}"
    );
    let left: Vec<_> = std::fs::read_dir(cluster_root(&dir))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "cluster files left behind: {left:?}");
}

#[test]
fn exit_code_two_when_the_runner_cannot_run_and_for_unknown_workloads() {
    let dir = run_dir("cannot");
    let out = Command::new(HARNESS)
        .args(["--pg-config", "/nonexistent/pg_config", "--run-dir"])
        .arg(&dir)
        .args(["oracle", "--workload", "select_star"])
        .output()
        .expect("run harness");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not run"));
    let out = harness(&dir)
        .args(["oracle", "--workload", "no_such_workload"])
        .output()
        .expect("run harness");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--list"));
}

fn postmaster_running(data: &Path) -> bool {
    let Ok(pid_file) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return false;
    };
    let pid: i32 = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

#[test]
fn ctrl_c_stops_the_cluster_and_keeps_its_files() {
    let dir = run_dir("interrupt");
    let mut child = harness(&dir)
        .args(["oracle", "--steps", "400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn harness");
    // Keep draining stdout in a thread so the runner never writes to a closed pipe.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut cluster_dir = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if let Some(rest) = line
            .split(" in ")
            .nth(1)
            .filter(|_| line.contains("cluster on port"))
        {
            cluster_dir = rest.split(" (").next().map(PathBuf::from);
        }
        if line.contains("[ 1/") {
            break;
        }
    }
    let cluster_dir = cluster_dir.expect("the runner printed its cluster directory");
    assert!(postmaster_running(&cluster_dir.join("data")));
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "runner did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    assert!(
        !postmaster_running(&cluster_dir.join("data")),
        "server still running"
    );
    assert!(
        cluster_dir.join("data").is_dir(),
        "files should be kept after an interrupt"
    );
    let _ = std::fs::remove_dir_all(cluster_root(&dir));
}

#[test]
fn a_topology_starts_a_coordinator_and_workers() {
    let opts = ClusterOptions {
        pg_config: pg_config(),
        ..ClusterOptions::default()
    };
    let topo =
        Topology::start(&test_root(), &opts, TopologySpec { workers: 1 }).expect("start topology");
    let ports: Vec<u16> = topo.nodes().map(|n| n.port).collect();
    assert_eq!(ports.len(), 2);
    assert_ne!(ports[0], ports[1]);
    let names: Vec<&str> = topo.nodes().map(|n| n.name()).collect();
    assert_eq!(names, ["coordinator", "worker1"]);
    for node in topo.nodes() {
        let mut c = node.connect("postgres").expect("connect");
        let v: String = c
            .query_one("SHOW shared_preload_libraries", &[])
            .expect("show")
            .get(0);
        assert_eq!(v, "pg_trickle");
    }
}

#[test]
fn external_sqlancer_without_a_jar_is_a_clear_could_not_run() {
    let dir = run_dir("nojar");
    let out = harness(&dir)
        .args([
            "sqlancer",
            "--external",
            "/nonexistent/sqlancer.jar",
            "--time",
            "5",
        ])
        .output()
        .expect("run harness");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SQLancer jar"));
}

#[test]
fn notices_are_collected() {
    let cluster = harness::testkit::shared_cluster();
    let (mut db, notices) = cluster.connect_collecting_notices("postgres").unwrap();
    db.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
        .unwrap();
    let got = notices.lock().unwrap().join("\n");
    assert!(got.contains("NOTICE: hello from the server"), "{got:?}");
}
