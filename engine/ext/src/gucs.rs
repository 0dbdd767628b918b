//! Settings registration. Names, defaults, bounds and descriptions come from
//! `pg_trickle_core::settings::SETTINGS`, the single declaration.

use std::ffi::{CStr, CString};

use pg_trickle_core::settings::{SettingContext, SettingKind, SETTINGS};
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `pg_trickle.enabled`.
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pg_trickle.scheduler_interval_ms`.
pub static SCHEDULER_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pg_trickle.database`.
pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

fn leak(s: String) -> &'static CStr {
    Box::leak(
        CString::new(s)
            .expect("no NUL in setting text")
            .into_boxed_c_str(),
    )
}

fn context(c: SettingContext) -> GucContext {
    match c {
        SettingContext::Restart => GucContext::Postmaster,
        SettingContext::Reload => GucContext::Sighup,
        SettingContext::Session => GucContext::Userset,
    }
}

fn flags(unit: &str) -> GucFlags {
    match unit {
        "ms" => GucFlags::UNIT_MS,
        "s" => GucFlags::UNIT_S,
        _ => GucFlags::default(),
    }
}

/// Register every setting from the core's table.
pub fn register() {
    for s in SETTINGS {
        let name = leak(format!("pg_trickle.{}", s.name));
        let short = leak(if s.experimental {
            format!("(experimental) {}", s.description)
        } else {
            s.description.to_string()
        });
        let long = leak(String::new());
        match (s.name, s.kind) {
            ("enabled", SettingKind::Bool { .. }) => GucRegistry::define_bool_guc(
                name,
                short,
                long,
                &ENABLED,
                context(s.context),
                flags(s.unit),
            ),
            ("scheduler_interval_ms", SettingKind::Int { min, max, .. }) => {
                GucRegistry::define_int_guc(
                    name,
                    short,
                    long,
                    &SCHEDULER_INTERVAL_MS,
                    min,
                    max,
                    context(s.context),
                    flags(s.unit),
                )
            }
            ("database", SettingKind::Text { .. }) => GucRegistry::define_string_guc(
                name,
                short,
                long,
                &DATABASE,
                context(s.context),
                flags(s.unit),
            ),
            (other, _) => panic!("setting pg_trickle.{other} has no storage in the extension"),
        }
    }
}
