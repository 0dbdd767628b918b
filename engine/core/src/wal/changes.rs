//! From a stream of pgoutput messages to row changes, the shape capture
//! writes into a change buffer: each change carries its transaction, its
//! relation and whole old and new rows in text form, with unchanged
//! TOASTed values taken from the old row. Capture from the WAL sets
//! `REPLICA IDENTITY FULL` on its sources, so an old row that is only a
//! key, or a TOASTed value with no old row to take it from, is an error
//! that names the relation, never a guess.

use std::collections::HashMap;

use super::{Datum, Message, OldTuple, Relation, Tuple};

/// A row's values in its relation's column order, in text form (NULL as
/// `None`).
pub type Row = Vec<Option<String>>;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Inserted: `new` only.
    Insert,
    /// Updated: `old` and `new`.
    Update,
    /// Deleted: `old` only.
    Delete,
    /// The relation was truncated: no rows.
    Truncate,
}

/// One row change of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The transaction's id.
    pub xid: u32,
    /// LSN of its commit record.
    pub commit_lsn: u64,
    /// Its commit time, microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    /// Relation oid.
    pub relation: u32,
    /// What happened.
    pub kind: ChangeKind,
    /// The old row (update, delete).
    pub old: Option<Row>,
    /// The new row (insert, update).
    pub new: Option<Row>,
}

/// Why a message stream does not make changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// A change, or a commit, outside a transaction.
    #[error("{0} outside a transaction")]
    OutsideTransaction(&'static str),
    /// A transaction began inside another.
    #[error("a transaction began before transaction {0} committed")]
    NestedBegin(u32),
    /// A change to a relation with no Relation message before it.
    #[error("a change to relation {0}, which was not described first")]
    UnknownRelation(u32),
    /// A row with another number of columns than its relation.
    #[error("relation {relation}: a row has {got} columns, the relation {expected}")]
    ColumnCount {
        /// The relation.
        relation: String,
        /// Its columns.
        expected: usize,
        /// The row's.
        got: usize,
    },
    /// Only the key of the old row was sent.
    #[error("relation {0}: the old row is only its key (capture from the WAL needs REPLICA IDENTITY FULL)")]
    OldKeyOnly(String),
    /// An update or delete without the old row.
    #[error("relation {0}: a change without its old row (capture from the WAL needs REPLICA IDENTITY FULL)")]
    NoOldRow(String),
    /// An unchanged TOASTed value with no old value to take.
    #[error("relation {relation}: column {column} is an unchanged TOASTed value with no old value to take")]
    UnresolvedToast {
        /// The relation.
        relation: String,
        /// The column.
        column: String,
    },
    /// A value in binary form (capture asks for text).
    #[error("relation {relation}: column {column} came in binary form")]
    Binary {
        /// The relation.
        relation: String,
        /// The column.
        column: String,
    },
    /// A value that is not UTF-8 text.
    #[error("relation {relation}: column {column} is not UTF-8 text")]
    NotUtf8 {
        /// The relation.
        relation: String,
        /// The column.
        column: String,
    },
}

/// Turns messages into changes, one at a time; remembers relations
/// across transactions (pgoutput describes each once per session).
#[derive(Debug, Default)]
pub struct Assembler {
    relations: HashMap<u32, Relation>,
    open: Option<(u32, u64, i64)>,
}

impl Assembler {
    /// A new assembler that knows no relation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take one message; the changes it makes (none for most messages).
    pub fn push(&mut self, m: &Message) -> Result<Vec<Change>, ChangeError> {
        match m {
            Message::Begin {
                final_lsn,
                xid,
                commit_time,
            } => {
                if let Some((open, _, _)) = self.open {
                    return Err(ChangeError::NestedBegin(open));
                }
                self.open = Some((*xid, *final_lsn, *commit_time));
                Ok(Vec::new())
            }
            Message::Commit { .. } => {
                self.open
                    .take()
                    .ok_or(ChangeError::OutsideTransaction("a commit"))?;
                Ok(Vec::new())
            }
            Message::Relation(r) => {
                self.relations.insert(r.oid, r.clone());
                Ok(Vec::new())
            }
            Message::Origin { .. } | Message::Type { .. } | Message::LogicalMessage { .. } => {
                Ok(Vec::new())
            }
            Message::Insert { relation, new } => {
                let rel = self.described(*relation, "an insert")?;
                let new = row(rel, new, None)?;
                Ok(vec![self.change(
                    *relation,
                    ChangeKind::Insert,
                    None,
                    Some(new),
                )?])
            }
            Message::Update { relation, old, new } => {
                let rel = self.described(*relation, "an update")?;
                let old = full_old(rel, old.as_ref())?;
                let new = row(rel, new, Some(&old))?;
                Ok(vec![self.change(
                    *relation,
                    ChangeKind::Update,
                    Some(old),
                    Some(new),
                )?])
            }
            Message::Delete { relation, old } => {
                let rel = self.described(*relation, "a delete")?;
                let old = full_old(rel, Some(old))?;
                Ok(vec![self.change(
                    *relation,
                    ChangeKind::Delete,
                    Some(old),
                    None,
                )?])
            }
            Message::Truncate { relations, .. } => relations
                .iter()
                .map(|r| self.change(*r, ChangeKind::Truncate, None, None))
                .collect(),
        }
    }

    /// The relation `oid` as last described, if it was.
    pub fn relation(&self, oid: u32) -> Option<&Relation> {
        self.relations.get(&oid)
    }

    fn described(&self, oid: u32, what: &'static str) -> Result<&Relation, ChangeError> {
        if self.open.is_none() {
            return Err(ChangeError::OutsideTransaction(what));
        }
        self.relations
            .get(&oid)
            .ok_or(ChangeError::UnknownRelation(oid))
    }

    fn change(
        &self,
        relation: u32,
        kind: ChangeKind,
        old: Option<Row>,
        new: Option<Row>,
    ) -> Result<Change, ChangeError> {
        let (xid, commit_lsn, commit_time) = self
            .open
            .ok_or(ChangeError::OutsideTransaction("a truncate"))?;
        Ok(Change {
            xid,
            commit_lsn,
            commit_time,
            relation,
            kind,
            old,
            new,
        })
    }
}

/// Every change a message stream makes, in order.
pub fn assemble(messages: &[Message]) -> Result<Vec<Change>, ChangeError> {
    let mut a = Assembler::new();
    let mut out = Vec::new();
    for m in messages {
        out.extend(a.push(m)?);
    }
    Ok(out)
}

fn qualified(rel: &Relation) -> String {
    format!("{}.{}", rel.namespace, rel.name)
}

fn full_old(rel: &Relation, old: Option<&OldTuple>) -> Result<Row, ChangeError> {
    match old {
        Some(OldTuple::Full(t)) => row(rel, t, None),
        Some(OldTuple::Key(_)) => Err(ChangeError::OldKeyOnly(qualified(rel))),
        None => Err(ChangeError::NoOldRow(qualified(rel))),
    }
}

/// A tuple as text values; an unchanged TOASTed value comes from `old`.
fn row(rel: &Relation, t: &Tuple, old: Option<&Row>) -> Result<Row, ChangeError> {
    if t.0.len() != rel.columns.len() {
        return Err(ChangeError::ColumnCount {
            relation: qualified(rel),
            expected: rel.columns.len(),
            got: t.0.len(),
        });
    }
    t.0.iter()
        .enumerate()
        .map(|(i, d)| {
            let column = || rel.columns[i].name.clone();
            match d {
                Datum::Null => Ok(None),
                Datum::Text(v) => {
                    String::from_utf8(v.clone())
                        .map(Some)
                        .map_err(|_| ChangeError::NotUtf8 {
                            relation: qualified(rel),
                            column: column(),
                        })
                }
                Datum::UnchangedToast => {
                    old.map(|o| o[i].clone())
                        .ok_or_else(|| ChangeError::UnresolvedToast {
                            relation: qualified(rel),
                            column: column(),
                        })
                }
                Datum::Binary(_) => Err(ChangeError::Binary {
                    relation: qualified(rel),
                    column: column(),
                }),
            }
        })
        .collect()
}
