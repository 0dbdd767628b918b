//! Fuzz target `apply_sql`: the property `pg_trickle_core::fuzzing::apply_sql` checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pg_trickle_core::fuzzing::apply_sql(data));
