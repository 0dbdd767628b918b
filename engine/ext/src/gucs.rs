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
/// `pg_trickle.enforce_backpressure`.
pub static ENFORCE_BACKPRESSURE: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pg_trickle.backpressure_action`.
pub static BACKPRESSURE_ACTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"reject"));
/// `pg_trickle.backpressure_high_rows`.
pub static BACKPRESSURE_HIGH_ROWS: GucSetting<i32> = GucSetting::<i32>::new(1_000_000);
/// `pg_trickle.backpressure_low_rows`.
pub static BACKPRESSURE_LOW_ROWS: GucSetting<i32> = GucSetting::<i32>::new(500_000);
/// `pg_trickle.backpressure_high_kb`.
pub static BACKPRESSURE_HIGH_KB: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `pg_trickle.backpressure_low_kb`.
pub static BACKPRESSURE_LOW_KB: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `pg_trickle.backpressure_high_age_s`.
pub static BACKPRESSURE_HIGH_AGE_S: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `pg_trickle.backpressure_low_age_s`.
pub static BACKPRESSURE_LOW_AGE_S: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `pg_trickle.event_driven_wake`.
pub static EVENT_DRIVEN_WAKE: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pg_trickle.max_held_backlog_rows`.
pub static MAX_HELD_BACKLOG_ROWS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// `pg_trickle.remote_lease_seconds`.
pub static REMOTE_LEASE_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(30);
/// `pg_trickle.remote_failed_ticks_warning`.
pub static REMOTE_FAILED_TICKS_WARNING: GucSetting<i32> = GucSetting::<i32>::new(5);

/// The integer settings and their storage.
fn int_storage(name: &str) -> Option<&'static GucSetting<i32>> {
    Some(match name {
        "scheduler_interval_ms" => &SCHEDULER_INTERVAL_MS,
        "backpressure_high_rows" => &BACKPRESSURE_HIGH_ROWS,
        "backpressure_low_rows" => &BACKPRESSURE_LOW_ROWS,
        "backpressure_high_kb" => &BACKPRESSURE_HIGH_KB,
        "backpressure_low_kb" => &BACKPRESSURE_LOW_KB,
        "backpressure_high_age_s" => &BACKPRESSURE_HIGH_AGE_S,
        "backpressure_low_age_s" => &BACKPRESSURE_LOW_AGE_S,
        "max_held_backlog_rows" => &MAX_HELD_BACKLOG_ROWS,
        "remote_failed_ticks_warning" => &REMOTE_FAILED_TICKS_WARNING,
        "remote_lease_seconds" => &REMOTE_LEASE_SECONDS,
        _ => return None,
    })
}

/// The boolean settings and their storage.
fn bool_storage(name: &str) -> Option<&'static GucSetting<bool>> {
    Some(match name {
        "enabled" => &ENABLED,
        "enforce_backpressure" => &ENFORCE_BACKPRESSURE,
        "event_driven_wake" => &EVENT_DRIVEN_WAKE,
        _ => return None,
    })
}

/// The text settings and their storage.
fn text_storage(name: &str) -> Option<&'static GucSetting<Option<CString>>> {
    Some(match name {
        "database" => &DATABASE,
        "backpressure_action" => &BACKPRESSURE_ACTION,
        _ => return None,
    })
}

/// A text setting's current value.
pub fn text(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

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
        "kB" => GucFlags::UNIT_KB,
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
        match s.kind {
            SettingKind::Bool { .. } => GucRegistry::define_bool_guc(
                name,
                short,
                long,
                bool_storage(s.name).unwrap_or_else(|| missing(s.name)),
                context(s.context),
                flags(s.unit),
            ),
            SettingKind::Int { min, max, .. } => GucRegistry::define_int_guc(
                name,
                short,
                long,
                int_storage(s.name).unwrap_or_else(|| missing(s.name)),
                min,
                max,
                context(s.context),
                flags(s.unit),
            ),
            SettingKind::Text { .. } => GucRegistry::define_string_guc(
                name,
                short,
                long,
                text_storage(s.name).unwrap_or_else(|| missing(s.name)),
                context(s.context),
                flags(s.unit),
            ),
        }
    }
}

fn missing(name: &str) -> ! {
    panic!("setting pg_trickle.{name} has no storage in the extension")
}
