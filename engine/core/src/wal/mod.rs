//! The logical replication messages of PostgreSQL's built-in `pgoutput`
//! plugin (protocol version 1), as typed values: what WAL capture reads
//! from a slot with `pg_logical_slot_get_binary_changes(...,
//! 'proto_version', '1', 'publication_names', ...)`, one message per row.
//!
//! [`decode`] reads one message from bytes and returns it or a typed
//! [`DecodeError`], never a panic; it never allocates more than the input
//! could fill, so a corrupt length cannot ask for gigabytes. [`encode`]
//! writes the same format back (for tests, fuzzing and benchmarks), and
//! `decode(encode(m)) == m` for every message. [`changes`] turns a stream
//! of messages into row changes with column names and unchanged TOASTed
//! values resolved.
//!
//! The format is PostgreSQL's ("Logical Replication Message Formats"):
//! big-endian integers, NUL-terminated strings, a tag byte per message.

pub mod capture;
mod changes;
mod decode;
mod encode;
pub mod remote;

pub use changes::{assemble, Assembler, Change, ChangeError, ChangeKind, Row};
pub use decode::{decode, DecodeError};
pub use encode::encode;

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A transaction starts (`B`).
    Begin {
        /// LSN of the commit record.
        final_lsn: u64,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
        /// Transaction id.
        xid: u32,
    },
    /// A transaction commits (`C`).
    Commit {
        /// Flags (unused, 0).
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: u64,
        /// End LSN of the transaction.
        end_lsn: u64,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
    },
    /// The transaction came from another node (`O`).
    Origin {
        /// LSN of the commit on the origin server.
        lsn: u64,
        /// Origin name.
        name: String,
    },
    /// A relation's description, sent before its first change (`R`).
    Relation(Relation),
    /// A data type's name, sent before a relation that uses it (`Y`).
    Type {
        /// Type oid.
        oid: u32,
        /// Its schema.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A row inserted (`I`).
    Insert {
        /// Relation oid.
        relation: u32,
        /// The new row.
        new: Tuple,
    },
    /// A row updated (`U`).
    Update {
        /// Relation oid.
        relation: u32,
        /// The old key or old row, when the replica identity sends one.
        old: Option<OldTuple>,
        /// The new row.
        new: Tuple,
    },
    /// A row deleted (`D`).
    Delete {
        /// Relation oid.
        relation: u32,
        /// The old key or old row.
        old: OldTuple,
    },
    /// Relations truncated (`T`).
    Truncate {
        /// Bit 1: CASCADE; bit 2: RESTART IDENTITY.
        options: u8,
        /// The relations truncated.
        relations: Vec<u32>,
    },
    /// A logical decoding message written with `pg_logical_emit_message` (`M`).
    LogicalMessage {
        /// Bit 1: transactional.
        flags: u8,
        /// LSN of the message.
        lsn: u64,
        /// Its prefix.
        prefix: String,
        /// Its content.
        content: Vec<u8>,
    },
}

/// A relation as pgoutput describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Relation oid.
    pub oid: u32,
    /// Its schema.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `relreplident`: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// Its columns, in order.
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Type oid.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`).
    pub type_modifier: i32,
}

/// The old side of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// Only the replica identity key columns (`K`); the others are NULL.
    Key(Tuple),
    /// The whole old row (`O`, replica identity FULL).
    Full(Tuple),
}

/// A row's values, in column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple(pub Vec<Datum>);

/// One column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// NULL (`n`).
    Null,
    /// A TOASTed value the update did not change, so it is not sent (`u`).
    UnchangedToast,
    /// The value in its text form (`t`).
    Text(Vec<u8>),
    /// The value in its binary form (`b`, protocol 2 with `binary`).
    Binary(Vec<u8>),
}
