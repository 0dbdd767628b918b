//! Fuzz target `settings_and_schedules`: the property `pg_trickle_core::fuzzing::settings_and_schedules` checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pg_trickle_core::fuzzing::settings_and_schedules(data));
