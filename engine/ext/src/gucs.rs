//! Settings registration. Names, defaults, bounds and descriptions come from
//! `pg_trickle_core::settings::SETTINGS`, the single declaration.

use std::ffi::{CStr, CString};

use pg_trickle_core::settings::{SettingContext, SettingKind, SETTINGS};
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `pg_trickle.enabled`.
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pg_trickle.scheduler_interval_ms`.
pub static SCHEDULER_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pg_trickle.wake_min_interval_ms`.
pub static WAKE_MIN_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(50);
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

/// `pg_trickle.adaptive_auto`.
pub static ADAPTIVE_AUTO: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pg_trickle.adaptive_min_changes`.
pub static ADAPTIVE_MIN_CHANGES: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pg_trickle.adaptive_full_fraction`.
pub static ADAPTIVE_FULL_FRACTION: GucSetting<f64> = GucSetting::<f64>::new(0.02);

/// `pg_trickle.remote_lease_seconds`.
pub static REMOTE_LEASE_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(30);
/// `pg_trickle.remote_failed_ticks_warning`.
pub static REMOTE_FAILED_TICKS_WARNING: GucSetting<i32> = GucSetting::<i32>::new(5);

/// `pg_trickle.traceparent`.
pub static TRACEPARENT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
/// `pg_trickle.otel_enabled`.
pub static OTEL_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pg_trickle.otel_endpoint`.
pub static OTEL_ENDPOINT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"http://127.0.0.1:4318/v1/traces"));
/// `pg_trickle.otel_protocol`.
pub static OTEL_PROTOCOL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"http/protobuf"));
/// `pg_trickle.otel_timeout_ms`.
pub static OTEL_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(2000);
/// `pg_trickle.otel_queue_size`.
pub static OTEL_QUEUE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1024);
/// `pg_trickle.otel_sampling_ratio`.
pub static OTEL_SAMPLING_RATIO: GucSetting<f64> = GucSetting::<f64>::new(1.0);

/// The integer settings and their storage.
fn int_storage(name: &str) -> Option<&'static GucSetting<i32>> {
    Some(match name {
        "scheduler_interval_ms" => &SCHEDULER_INTERVAL_MS,
        "wake_min_interval_ms" => &WAKE_MIN_INTERVAL_MS,
        "backpressure_high_rows" => &BACKPRESSURE_HIGH_ROWS,
        "backpressure_low_rows" => &BACKPRESSURE_LOW_ROWS,
        "backpressure_high_kb" => &BACKPRESSURE_HIGH_KB,
        "backpressure_low_kb" => &BACKPRESSURE_LOW_KB,
        "backpressure_high_age_s" => &BACKPRESSURE_HIGH_AGE_S,
        "backpressure_low_age_s" => &BACKPRESSURE_LOW_AGE_S,
        "max_held_backlog_rows" => &MAX_HELD_BACKLOG_ROWS,
        "adaptive_min_changes" => &ADAPTIVE_MIN_CHANGES,
        "remote_failed_ticks_warning" => &REMOTE_FAILED_TICKS_WARNING,
        "remote_lease_seconds" => &REMOTE_LEASE_SECONDS,
        "otel_timeout_ms" => &OTEL_TIMEOUT_MS,
        "otel_queue_size" => &OTEL_QUEUE_SIZE,
        _ => return None,
    })
}

/// The boolean settings and their storage.
fn bool_storage(name: &str) -> Option<&'static GucSetting<bool>> {
    Some(match name {
        "enabled" => &ENABLED,
        "enforce_backpressure" => &ENFORCE_BACKPRESSURE,
        "event_driven_wake" => &EVENT_DRIVEN_WAKE,
        "otel_enabled" => &OTEL_ENABLED,
        "adaptive_auto" => &ADAPTIVE_AUTO,
        _ => return None,
    })
}

/// The text settings and their storage.
fn text_storage(name: &str) -> Option<&'static GucSetting<Option<CString>>> {
    Some(match name {
        "database" => &DATABASE,
        "backpressure_action" => &BACKPRESSURE_ACTION,
        "traceparent" => &TRACEPARENT,
        "otel_endpoint" => &OTEL_ENDPOINT,
        "otel_protocol" => &OTEL_PROTOCOL,
        _ => return None,
    })
}

/// The floating-point settings and their storage.
fn real_storage(name: &str) -> Option<&'static GucSetting<f64>> {
    Some(match name {
        "otel_sampling_ratio" => &OTEL_SAMPLING_RATIO,
        "adaptive_full_fraction" => &ADAPTIVE_FULL_FRACTION,
        _ => return None,
    })
}

/// The text settings whose values are checked when set: a malformed value
/// is refused by `SET` (22023, naming what is wrong) instead of being kept.
fn text_check(name: &str) -> pg_sys::GucStringCheckHook {
    match name {
        "traceparent" => Some(check_traceparent),
        "otel_protocol" => Some(check_otel_protocol),
        _ => None,
    }
}

/// Refuse a value with `detail` as the reason (PostgreSQL reports 22023).
fn refuse_value(detail: &str) -> bool {
    let detail = CString::new(detail.replace('\0', " ")).unwrap_or_default();
    // SAFETY: GUC check hooks report their reason through this global,
    // which PostgreSQL reads right after the hook returns false.
    unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr()) };
    false
}

/// Check the text a string check hook is offered with `valid` (empty
/// means unset), refusing it with the validator's reason.
///
/// # Safety
/// `newval` is the pointer PostgreSQL passes to a string check hook.
unsafe fn check_text(
    newval: *mut *mut std::ffi::c_char,
    valid: impl FnOnce(&str) -> Result<(), String>,
) -> bool {
    // SAFETY: per the caller; a NULL value is an unset string setting.
    let value = unsafe {
        if newval.is_null() || (*newval).is_null() {
            std::borrow::Cow::Borrowed("")
        } else {
            CStr::from_ptr(*newval).to_string_lossy()
        }
    };
    match valid(&value) {
        Ok(()) => true,
        Err(why) => refuse_value(&why),
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_traceparent(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by PostgreSQL as a string check hook.
    unsafe {
        check_text(newval, |v| match v {
            "" => Ok(()),
            v => pg_trickle_core::telemetry::traceparent::TraceParent::parse(v)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        })
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_otel_protocol(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by PostgreSQL as a string check hook.
    unsafe {
        check_text(newval, |v| {
            pg_trickle_otlp::Protocol::parse(v)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
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

fn flags(name: &str, unit: &str) -> GucFlags {
    let unit = match unit {
        "ms" => GucFlags::UNIT_MS,
        "s" => GucFlags::UNIT_S,
        "kB" => GucFlags::UNIT_KB,
        _ => GucFlags::default(),
    };
    // A collector's URL may carry credentials: shown to superusers and
    // pg_read_all_settings members only.
    if name == "otel_endpoint" {
        unit | GucFlags::SUPERUSER_ONLY
    } else {
        unit
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
                flags(s.name, s.unit),
            ),
            SettingKind::Int { min, max, .. } => GucRegistry::define_int_guc(
                name,
                short,
                long,
                int_storage(s.name).unwrap_or_else(|| missing(s.name)),
                min,
                max,
                context(s.context),
                flags(s.name, s.unit),
            ),
            SettingKind::Real { min, max, .. } => GucRegistry::define_float_guc(
                name,
                short,
                long,
                real_storage(s.name).unwrap_or_else(|| missing(s.name)),
                min,
                max,
                context(s.context),
                flags(s.name, s.unit),
            ),
            // SAFETY: the check hooks are #[pg_guard]ed.
            SettingKind::Text { .. } => unsafe {
                GucRegistry::define_string_guc_with_hooks(
                    name,
                    short,
                    long,
                    text_storage(s.name).unwrap_or_else(|| missing(s.name)),
                    context(s.context),
                    flags(s.name, s.unit),
                    text_check(s.name),
                    None,
                    None,
                )
            },
        }
    }
}

fn missing(name: &str) -> ! {
    panic!("setting pg_trickle.{name} has no storage in the extension")
}
