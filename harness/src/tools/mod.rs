//! Subcommands that are not checks: the scheduler [`demo`], the settings
//! reference generated into the docs ([`docs`]) and the benchmarks
//! ([`bench`]).

pub mod bench;
pub mod demo;
pub mod docs;
