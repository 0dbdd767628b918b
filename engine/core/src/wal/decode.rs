//! Reading one pgoutput message from bytes: a cursor that checks every
//! length against what is left before it reads or allocates, and a typed
//! error that says which message and which field ran out.

use super::{Datum, Message, OldTuple, Relation, RelationColumn, Tuple};

/// Why bytes are not a pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty pgoutput message")]
    Empty,
    /// A tag byte no message has.
    #[error("unknown pgoutput message tag {0:#04x}")]
    UnknownMessage(u8),
    /// The message ended before a field.
    #[error("{message} message truncated: {field} needs {needed} more byte(s) at offset {at}")]
    Truncated {
        /// Which message.
        message: &'static str,
        /// Which field.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Where it starts.
        at: usize,
    },
    /// A string without its terminating NUL.
    #[error("{message} message: {field} has no terminating NUL")]
    UnterminatedString {
        /// Which message.
        message: &'static str,
        /// Which field.
        field: &'static str,
    },
    /// A string that is not UTF-8.
    #[error("{message} message: {field} is not UTF-8")]
    NotUtf8 {
        /// Which message.
        message: &'static str,
        /// Which field.
        field: &'static str,
    },
    /// A count or length below zero.
    #[error("{message} message: {field} is negative ({value})")]
    Negative {
        /// Which message.
        message: &'static str,
        /// Which field.
        field: &'static str,
        /// The value read.
        value: i64,
    },
    /// A tuple marker other than `N`, `K` or `O` where one is expected.
    #[error("{message} message: unexpected tuple marker {marker:#04x}")]
    UnexpectedTupleMarker {
        /// Which message.
        message: &'static str,
        /// The byte found.
        marker: u8,
    },
    /// A column kind other than `n`, `u`, `t` or `b`.
    #[error("{message} message: unknown column kind {kind:#04x}")]
    UnknownDatumKind {
        /// Which message.
        message: &'static str,
        /// The byte found.
        kind: u8,
    },
    /// Bytes left over after a complete message.
    #[error("{message} message: {count} trailing byte(s)")]
    TrailingBytes {
        /// Which message.
        message: &'static str,
        /// How many.
        count: usize,
    },
}

/// Decode one pgoutput message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (&tag, _) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let message = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    let mut c = Cursor {
        bytes,
        at: 1,
        message,
    };
    let m = match tag {
        b'B' => Message::Begin {
            final_lsn: c.u64("final LSN")?,
            commit_time: c.i64("commit time")?,
            xid: c.u32("xid")?,
        },
        b'C' => Message::Commit {
            flags: c.u8("flags")?,
            commit_lsn: c.u64("commit LSN")?,
            end_lsn: c.u64("end LSN")?,
            commit_time: c.i64("commit time")?,
        },
        b'O' => Message::Origin {
            lsn: c.u64("LSN")?,
            name: c.string("origin name")?,
        },
        b'R' => Message::Relation(relation(&mut c)?),
        b'Y' => Message::Type {
            oid: c.u32("type oid")?,
            namespace: c.string("namespace")?,
            name: c.string("type name")?,
        },
        b'I' => {
            let relation = c.u32("relation oid")?;
            match c.u8("tuple marker")? {
                b'N' => Message::Insert {
                    relation,
                    new: c.tuple()?,
                },
                marker => return Err(DecodeError::UnexpectedTupleMarker { message, marker }),
            }
        }
        b'U' => {
            let relation = c.u32("relation oid")?;
            let (old, marker) = match c.u8("tuple marker")? {
                b'K' => (Some(OldTuple::Key(c.tuple()?)), c.u8("tuple marker")?),
                b'O' => (Some(OldTuple::Full(c.tuple()?)), c.u8("tuple marker")?),
                marker => (None, marker),
            };
            if marker != b'N' {
                return Err(DecodeError::UnexpectedTupleMarker { message, marker });
            }
            Message::Update {
                relation,
                old,
                new: c.tuple()?,
            }
        }
        b'D' => {
            let relation = c.u32("relation oid")?;
            let old = match c.u8("tuple marker")? {
                b'K' => OldTuple::Key(c.tuple()?),
                b'O' => OldTuple::Full(c.tuple()?),
                marker => return Err(DecodeError::UnexpectedTupleMarker { message, marker }),
            };
            Message::Delete { relation, old }
        }
        b'T' => {
            let n = c.count32("relation count", 4)?;
            let options = c.u8("options")?;
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(c.u32("relation oid")?);
            }
            Message::Truncate { options, relations }
        }
        b'M' => {
            let flags = c.u8("flags")?;
            let lsn = c.u64("LSN")?;
            let prefix = c.string("prefix")?;
            let len = c.count32("content length", 1)?;
            Message::LogicalMessage {
                flags,
                lsn,
                prefix,
                content: c.take(len, "content")?.to_vec(),
            }
        }
        _ => unreachable!("tags are matched above"),
    };
    let count = bytes.len() - c.at;
    if count > 0 {
        return Err(DecodeError::TrailingBytes { message, count });
    }
    Ok(m)
}

fn relation(c: &mut Cursor<'_>) -> Result<Relation, DecodeError> {
    let oid = c.u32("relation oid")?;
    let namespace = c.string("namespace")?;
    let name = c.string("relation name")?;
    let replica_identity = c.u8("replica identity")?;
    // Each column takes at least 1 + 1 + 4 + 4 bytes.
    let n = c.count16("column count", 10)?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        columns.push(RelationColumn {
            key: c.u8("column flags")? & 1 == 1,
            name: c.string("column name")?,
            type_oid: c.u32("column type oid")?,
            type_modifier: c.i32("column type modifier")?,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

/// A read position in one message.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    message: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let left = self.bytes.len() - self.at;
        if n > left {
            return Err(DecodeError::Truncated {
                message: self.message,
                field,
                needed: n - left,
                at: self.at,
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// A non-negative count of items each at least `min_item` bytes long,
    /// checked against what is left (so no allocation outgrows the input).
    fn count(
        &mut self,
        value: i64,
        field: &'static str,
        min_item: usize,
    ) -> Result<usize, DecodeError> {
        let n = usize::try_from(value).map_err(|_| DecodeError::Negative {
            message: self.message,
            field,
            value,
        })?;
        let left = self.bytes.len() - self.at;
        let needed = n.saturating_mul(min_item);
        if needed > left {
            return Err(DecodeError::Truncated {
                message: self.message,
                field,
                needed: needed - left,
                at: self.at,
            });
        }
        Ok(n)
    }

    fn count16(&mut self, field: &'static str, min_item: usize) -> Result<usize, DecodeError> {
        let v = self.i16(field)?;
        self.count(i64::from(v), field, min_item)
    }

    fn count32(&mut self, field: &'static str, min_item: usize) -> Result<usize, DecodeError> {
        let v = self.i32(field)?;
        self.count(i64::from(v), field, min_item)
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(DecodeError::UnterminatedString {
                message: self.message,
                field,
            })?;
        let text = std::str::from_utf8(&rest[..end]).map_err(|_| DecodeError::NotUtf8 {
            message: self.message,
            field,
        })?;
        self.at += end + 1;
        Ok(text.to_string())
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        // Each column takes at least its kind byte.
        let n = self.count16("tuple column count", 1)?;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(match self.u8("column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' => {
                    let len = self.count32("text length", 1)?;
                    Datum::Text(self.take(len, "text value")?.to_vec())
                }
                b'b' => {
                    let len = self.count32("binary length", 1)?;
                    Datum::Binary(self.take(len, "binary value")?.to_vec())
                }
                kind => {
                    return Err(DecodeError::UnknownDatumKind {
                        message: self.message,
                        kind,
                    })
                }
            });
        }
        Ok(Tuple(values))
    }
}
