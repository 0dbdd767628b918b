//! The transactional outbox's and the inbox's contracts as pure code:
//! the message format ([`envelope`]), lease arithmetic ([`lease`]), a
//! consumer group's delivery state ([`group`]) and the inbox's rules
//! ([`inbox`]), each stated by property tests (a model-based one for the
//! group). The SQL side (`enable_outbox`, `poll_outbox`, `create_inbox`,
//! ...) runs these functions on catalog rows.

pub mod envelope;
pub mod group;
pub mod inbox;
pub mod lease;
