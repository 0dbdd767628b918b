//! Fuzz target `dag`: the property `pg_trickle_core::fuzzing::dag` checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pg_trickle_core::fuzzing::dag(data));
