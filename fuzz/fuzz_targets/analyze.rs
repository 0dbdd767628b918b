//! Fuzz target `analyze`: the property `pg_trickle_core::fuzzing::analyze` checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pg_trickle_core::fuzzing::analyze(data));
