//! Symbols that released install scripts name but whose SQL function
//! changed shape in a later version. A database still on the old SQL
//! definitions (the library was replaced but `ALTER EXTENSION pg_trickle
//! UPDATE` has not run yet) gets a clear error instead of a function that
//! reads or returns the wrong shape; the symbols also let an old install
//! script be created over this library before it is upgraded.

use pgrx::prelude::*;

/// Define `$wrapper` (and its V1 info function `$finfo`) so that calling
/// the retired SQL function raises 0A000 naming the upgrade.
macro_rules! retired {
    ($wrapper:ident, $finfo:ident, $sql:literal, $since:literal) => {
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        #[doc(hidden)]
        #[pg_guard]
        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $wrapper(
            _fcinfo: pg_sys::FunctionCallInfo,
        ) -> pg_sys::Datum {
            crate::spi::raise(
                "0A000",
                concat!(
                    "pgtrickle.",
                    $sql,
                    " has the SQL definition of an older pg_trickle; this library is ",
                    $since,
                    " or later"
                ),
                Some("Run ALTER EXTENSION pg_trickle UPDATE.".into()),
            )
        }
    };
}

retired!(
    stream_table_status_wrapper,
    pg_finfo_stream_table_status_wrapper,
    "stream_table_status()",
    "0.39.0"
);

/// The extension version installed in this database, if any.
pub fn installed_sql_version() -> Option<String> {
    crate::catalog::direct::extension_column(c"extversion")
}

/// Whether this database's SQL definitions are this library's version.
pub fn sql_matches_library() -> bool {
    installed_sql_version().as_deref() == Some(env!("CARGO_PKG_VERSION"))
}

/// Refuse to work against SQL definitions of another version (SQLSTATE
/// 0A000): the catalog the library expects may not exist yet.
pub fn require_current_sql() {
    if let Some(v) = installed_sql_version().filter(|v| v != env!("CARGO_PKG_VERSION")) {
        crate::spi::raise(
            "0A000",
            format!(
                "the pg_trickle SQL objects in this database are version {v}, but the library is {}",
                env!("CARGO_PKG_VERSION")
            ),
            Some("Run ALTER EXTENSION pg_trickle UPDATE.".into()),
        );
    }
}
