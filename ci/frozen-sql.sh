#!/usr/bin/env bash
# The install script of the current version is frozen under engine/ext/sql/.
#   ci/frozen-sql.sh check   fail when the SQL the build generates differs from it
#   ci/frozen-sql.sh write   regenerate it (only before that version is released)
# Comment lines are ignored: pgrx writes source locations into them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/engine/ext"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)"
FROZEN="$ROOT/engine/ext/sql/pg_trickle--${VERSION}.sql"
GENERATED="$ROOT/target/pg_trickle--${VERSION}.generated.sql"
PG_CONFIG="${PG_CONFIG:-$(command -v pg_config)}"
cargo pgrx schema pg15 --pg-config "$PG_CONFIG" -o "$GENERATED" >"$ROOT/target/frozen-sql.log" 2>&1 \
    || { cat "$ROOT/target/frozen-sql.log" >&2; exit 2; }
case "${1:-check}" in
    write)
        cp "$GENERATED" "$FROZEN"
        echo "wrote $FROZEN"
        ;;
    check)
        if [ ! -f "$FROZEN" ]; then
            echo "frozen-sql: $FROZEN is missing; run ci/frozen-sql.sh write" >&2
            exit 1
        fi
        if ! diff -u <(grep -v '^--' "$FROZEN") <(grep -v '^--' "$GENERATED"); then
            echo "frozen-sql: the generated install script of ${VERSION} differs from $FROZEN" >&2
            echo "frozen-sql: a released script is never edited: bump the version and add an upgrade script" >&2
            exit 1
        fi
        echo "frozen-sql: install script of ${VERSION} matches $FROZEN"
        ;;
    *)
        echo "usage: ci/frozen-sql.sh [check|write]" >&2
        exit 2
        ;;
esac
