//! The transactional outbox's delivery contract as pure code: lease
//! arithmetic ([`lease`]) and a consumer group's delivery state
//! ([`group`]), each stated by property tests (a model-based one for the
//! group). The SQL side (`enable_outbox`, `poll_outbox`, ...) implements
//! these rules on catalog rows; these functions are the reference it is
//! tested against.

pub mod group;
pub mod lease;
