#!/usr/bin/env bash
# The README's main command: set up, then run the PR gate (`harness pr`)
# against real PostgreSQL clusters. Extra arguments go to `harness pr`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/ci/setup.sh"
cargo build --quiet -p harness
exec "$ROOT/target/debug/harness" pr "$@"
