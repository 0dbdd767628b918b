#!/usr/bin/env bash
# Released SQL scripts are frozen under engine/ext/sql/ and never edited.
#   ci/frozen-sql.sh check   fail when a released script changed, when the
#                            generated install script of a released version
#                            differs from its frozen copy, or when the current
#                            unreleased version has no upgrade script from
#                            the newest released one
#   ci/frozen-sql.sh write   freeze the current version's install script
#                            (only when releasing it) and record its checksum
# Comment lines are ignored when comparing: pgrx writes source locations into them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SQL="$ROOT/engine/ext/sql"
cd "$ROOT/engine/ext"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)"
FROZEN="$SQL/pg_trickle--${VERSION}.sql"
GENERATED="$ROOT/target/pg_trickle--${VERSION}.generated.sql"
PG_CONFIG="${PG_CONFIG:-$(command -v pg_config)}"
mkdir -p "$ROOT/target"
generate() {
    cargo pgrx schema pg15 --pg-config "$PG_CONFIG" -o "$GENERATED" >"$ROOT/target/frozen-sql.log" 2>&1 \
        || { cat "$ROOT/target/frozen-sql.log" >&2; exit 2; }
}
case "${1:-check}" in
    write)
        generate
        cp "$GENERATED" "$FROZEN"
        (cd "$SQL" && sha256sum "pg_trickle--${VERSION}.sql" ./*--*--"${VERSION}.sql" 2>/dev/null \
            | sed 's# \./# #' >> SHA256SUMS && sort -u -k2 SHA256SUMS -o SHA256SUMS)
        echo "froze $FROZEN and recorded checksums in $SQL/SHA256SUMS"
        ;;
    check)
        # 1. Released scripts are byte-for-byte what was released.
        if ! (cd "$SQL" && sha256sum --quiet -c SHA256SUMS); then
            echo "frozen-sql: a released script under $SQL changed; released scripts are never edited" >&2
            exit 1
        fi
        if [ -f "$FROZEN" ]; then
            # 2a. The current version is released: the build must still generate it.
            generate
            if ! diff -u <(grep -v '^--' "$FROZEN") <(grep -v '^--' "$GENERATED"); then
                echo "frozen-sql: the generated install script of ${VERSION} differs from $FROZEN" >&2
                echo "frozen-sql: bump the version and add an upgrade script" >&2
                exit 1
            fi
            echo "frozen-sql: install script of ${VERSION} matches $FROZEN"
        else
            # 2b. Unreleased: an upgrade script must lead from the newest released version.
            NEWEST="$(ls "$SQL" | sed -n 's/^pg_trickle--\([0-9.]*\)\.sql$/\1/p' | sort -V | tail -n 1)"
            if [ ! -f "$SQL/pg_trickle--${NEWEST}--${VERSION}.sql" ]; then
                echo "frozen-sql: ${VERSION} is unreleased and there is no $SQL/pg_trickle--${NEWEST}--${VERSION}.sql" >&2
                exit 1
            fi
            echo "frozen-sql: released scripts unchanged; ${VERSION} is unreleased, upgrade script from ${NEWEST} present"
        fi
        ;;
    *)
        echo "usage: ci/frozen-sql.sh [check|write]" >&2
        exit 2
        ;;
esac
