#!/usr/bin/env bash
# The gate's own test: build each deliberately broken engine in
# ci/mutants/*.patch, run `harness pr` against it, and require the gate to
# fail. Each mutant is built in a scratch git worktree (your checkout is
# left alone), installed into the PostgreSQL on PATH, and the current
# checkout's build is installed again at the end.
#
#   ci/mutants.sh                  # every mutant
#   ci/mutants.sh frontier-after   # mutants whose file name contains this
#
# Exit 0 when every mutant was caught, 1 when one was not, 2 when it could
# not run. A long job (a few minutes per mutant): not part of CI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-$(command -v pg_config)}"
WORK="$ROOT/target/mutants"
TREE="$WORK/tree"
FILTER="${1:-}"
mkdir -p "$WORK"

"$ROOT/ci/setup.sh"
(cd "$ROOT" && cargo build -q -p harness)
HARNESS="$ROOT/target/debug/harness"

install_args=(--pg-config "$PG_CONFIG")
[ "$(id -u)" = 0 ] || install_args+=(--sudo)

# Remove the scratch worktree if there is one; a removal that fails fails
# the script (a stale tree would be built in place of the next mutant).
remove_tree() {
    git -C "$ROOT" worktree prune
    if git -C "$ROOT" worktree list --porcelain | grep -qxF "worktree $TREE"; then
        git -C "$ROOT" worktree remove --force "$TREE"
    fi
}

restore() {
    remove_tree
    echo "mutants: installing the checkout's own build again"
    "$ROOT/ci/setup.sh" >/dev/null
}
trap restore EXIT

missed=0
ran=0
for patch in "$ROOT"/ci/mutants/*.patch; do
    name="$(basename "$patch" .patch)"
    case "$name" in *"$FILTER"*) ;; *) continue ;; esac
    ran=$((ran + 1))
    remove_tree
    git -C "$ROOT" worktree add --quiet --detach "$TREE" HEAD
    if ! git -C "$TREE" apply "$patch"; then
        echo "mutants: $name no longer applies to this checkout; refresh the patch" >&2
        exit 2
    fi
    echo "mutants: $name: building and installing"
    if ! (cd "$TREE/engine/ext" && CARGO_TARGET_DIR="$ROOT/target" cargo pgrx install "${install_args[@]}" \
            >"$WORK/$name.build.log" 2>&1); then
        echo "mutants: $name did not build; see $WORK/$name.build.log" >&2
        exit 2
    fi
    run_dir="$WORK/runs/$name"
    rm -rf "$run_dir"
    # The gate must fail (exit 1) on a mutant: its exit status is the
    # verdict, judged below, so it may not stop the script here.
    set +e
    "$HARNESS" --pg-config "$PG_CONFIG" --run-dir "$run_dir" pr --no-tpch --no-upgrade "${@:2}" \
        >"$WORK/$name.log" 2>&1
    rc=$?
    set -e
    summary="$(grep -E '^  (oracle|negative_control|sqlancer) ' "$WORK/$name.log" | sed 's/^ */    /')"
    if [ "$rc" = 1 ]; then
        echo "mutants: $name: CAUGHT (harness pr exit 1; log $WORK/$name.log)"
    else
        echo "mutants: $name: MISSED (harness pr exit $rc; log $WORK/$name.log)"
        missed=$((missed + 1))
    fi
    echo "$summary"
    # Reproduce lines are shown when there are any (a missed mutant has none).
    grep -m3 '^reproduce: ' "$WORK/$name.log" | sed 's/^/    /' || true
done
if [ "$ran" = 0 ]; then
    echo "mutants: no mutant matches '$FILTER'" >&2
    exit 2
fi
[ "$missed" = 0 ]
