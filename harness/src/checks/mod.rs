//! The runner's checks, one folder each: the check itself and the
//! subcommand that runs it alone. The jobs that combine them live in
//! [`crate::plans`].

pub mod chaos;
pub mod exactness;
pub mod fuzz;
pub mod oracle;
pub mod sqlancer;
pub mod tpch;
pub mod upgrade;
pub mod versions;
