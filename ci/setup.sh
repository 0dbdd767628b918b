#!/usr/bin/env bash
# Idempotent set-up shared by the README commands and CI: Debian packages,
# cargo-pgrx at the pinned version, `cargo pgrx init` against the system
# PostgreSQL 15, then build and install pg_trickle into it. Quiet when there
# is nothing to do; a failing step stops the script and prints its log.
set -euo pipefail

PGRX_VERSION=0.18.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_DIR="${ROOT}/target/setup-logs"
mkdir -p "$LOG_DIR"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

quietly() { # quietly NAME CMD...: run, keep the log, show it on failure
    local name="$1"; shift
    if ! "$@" >"$LOG_DIR/$name.log" 2>&1; then
        echo "setup: '$name' failed; its log ($LOG_DIR/$name.log) follows" >&2
        tail -n 60 "$LOG_DIR/$name.log" >&2
        exit 2
    fi
}

packages=(postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo locales chromium python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    quietly apt-update as_root apt-get update -qq
    quietly apt-install as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# A non-English locale, so tests can check that no decision depends on message text.
if ! locale -a 2>/dev/null | grep -qix 'de_DE.utf8'; then
    echo "setup: generating the de_DE.UTF-8 locale"
    quietly locale-de as_root localedef -i de_DE -c -f UTF-8 de_DE.UTF-8
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
    echo "setup: installing cargo-pgrx ${PGRX_VERSION} (a few minutes)"
    quietly cargo-pgrx cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

PG_CONFIG="${PG_CONFIG:-$(command -v pg_config)}"
PGRX_HOME="${PGRX_HOME:-$HOME/.pgrx}"
if ! grep -qs "^pg15 = \"${PG_CONFIG}\"" "$PGRX_HOME/config.toml"; then
    echo "setup: cargo pgrx init --pg15 ${PG_CONFIG}"
    quietly pgrx-init cargo pgrx init --pg15 "$PG_CONFIG"
fi

# The OTLP receiver the telemetry tests export to (a real collector from
# PyPI, on loopback), in a venv of the system Python so that any user may run it.
OTELTAP_VERSION=1.0.0
OTEL_VENV="${ROOT}/target/otel-venv"
if ! "$OTEL_VENV/bin/pip" show oteltap 2>/dev/null | grep -q "^Version: ${OTELTAP_VERSION}\$"; then
    echo "setup: installing the OTLP receiver oteltap ${OTELTAP_VERSION} into ${OTEL_VENV}"
    quietly otel-venv /usr/bin/python3 -m venv "$OTEL_VENV"
    quietly oteltap "$OTEL_VENV/bin/pip" install --quiet "oteltap==${OTELTAP_VERSION}"
fi

install_args=(--pg-config "$PG_CONFIG")
[ "${PGT_RELEASE:-0}" = 1 ] && install_args+=(--release)
[ "$(id -u)" = 0 ] || install_args+=(--sudo)
echo "setup: building and installing pg_trickle into $("$PG_CONFIG" --pkglibdir)"
(cd "$ROOT/engine/ext" && quietly pgrx-install cargo pgrx install "${install_args[@]}")

# Released install scripts, so a database can be created at an older version
# and upgraded (`CREATE EXTENSION pg_trickle VERSION '0.38.0'`). cargo pgrx
# install copies the upgrade scripts itself.
EXTDIR="$("$PG_CONFIG" --sharedir)/extension"
for script in "$ROOT"/engine/ext/sql/pg_trickle--[0-9]*.sql; do
    case "$(basename "$script")" in
        *--*--*) ;;
        *) as_root install -m 644 "$script" "$EXTDIR/" ;;
    esac
done
