//! Fuzz target `wal_decode`: the property `pg_trickle_core::fuzzing::wal_decode` checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pg_trickle_core::fuzzing::wal_decode(data));
