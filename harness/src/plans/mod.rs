//! The jobs that combine checks into one run and one report: the PR gate
//! ([`pr`]) and the long nightly job ([`nightly`]).

pub mod nightly;
pub mod pr;
