#!/usr/bin/env bash
# The README's test command: set up, check formatting and lints, run the
# pure and end-to-end tests, then the pgrx tests inside PostgreSQL.
# Any failing step fails the whole script.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/ci/setup.sh"

echo "== frozen install script"
"$ROOT/ci/frozen-sql.sh" check

echo "== the gate's mutants still apply (ci/mutants.sh runs them; a stale one would fail only there)"
for patch in "$ROOT"/ci/mutants/*.patch; do
    git -C "$ROOT" apply --check "$patch" || { echo "ci/mutants/$(basename "$patch") no longer applies: refresh it" >&2; exit 1; }
done

echo "== the drop-in GitHub Actions workflows (ci/workflows/): actionlint and zizmor"
"$ROOT/ci/lint-workflows.sh"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --features pg_trickle/pg15 -- -D warnings

echo "== cargo test (core unit/property tests, harness end-to-end tests against real clusters)"
cargo test --workspace --exclude pg_trickle

echo "== harness upgrade (each released version built from its commit, upgraded in place in a private copy of the installation, checked)"
cargo run -q -p harness -- --run-dir target/ci-upgrade-run upgrade

echo "== harness chaos (every single-node fault scenario once, fixed seed: kill -9, immediate shutdown, crashes during DDL, cancels, lock timeouts, a full disk)"
cargo run -q -p harness -- --run-dir target/ci-chaos-run chaos --runs 1 --seed 20261129
echo "== harness chaos --capture wal (the scenarios where a crash meets a slot, a drain or a full buffer disk)"
cargo run -q -p harness -- --run-dir target/ci-chaos-wal-run chaos --runs 1 --seed 20261129 --capture wal \
    --scenario kill_scheduler_mid_refresh --scenario immediate_shutdown_mid_capture \
    --scenario crash_during_drop --scenario disk_full_change_buffers
echo "== harness chaos --topology sharding (a coordinator and two workers: a worker killed mid-refresh, the coordinator restarted holding leases, a lease lapsing under a second drainer, a node dropped, a partition moved, a link cut mid-refresh, a slow link)"
cargo run -q -p harness -- --run-dir target/ci-chaos-sharding-run chaos --topology sharding --runs 1 --seed 20261129
echo "== harness chaos --topology citus (the same scenarios on Citus; runs only with Citus installed, and its skip is reported)"
cargo run -q -p harness -- --run-dir target/ci-chaos-citus-run chaos --topology citus --runs 1 --seed 20261129

echo "== cargo pgrx test (glue tests inside PostgreSQL)"
PGRX_TEST_DIR="${TMPDIR:-/tmp}/pg_trickle-pgrx-test"
mkdir -p "$PGRX_TEST_DIR"
runas=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$PGRX_TEST_DIR"
    runas=(--runas postgres --pgdata "$PGRX_TEST_DIR/data")
fi
(cd engine/ext && cargo pgrx test pg15 "${runas[@]}")

# `cargo pgrx test` installs a test build; put the regular build back.
"$ROOT/ci/setup.sh" >/dev/null
echo "== all tests passed"
