//! Writing a pgoutput message in the server's format: the inverse of
//! [`super::decode`], for tests, fuzzing and the decoder's benchmark.

use super::{Datum, Message, OldTuple, Tuple};

/// Encode one message. Counts longer than the format holds (more than
/// `i16::MAX` columns, strings with a NUL) are the caller's to avoid: what
/// is written is then what PostgreSQL could never send.
pub fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    match m {
        Message::Begin {
            final_lsn,
            commit_time,
            xid,
        } => {
            out.push(b'B');
            out.extend(final_lsn.to_be_bytes());
            out.extend(commit_time.to_be_bytes());
            out.extend(xid.to_be_bytes());
        }
        Message::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
        } => {
            out.push(b'C');
            out.push(*flags);
            out.extend(commit_lsn.to_be_bytes());
            out.extend(end_lsn.to_be_bytes());
            out.extend(commit_time.to_be_bytes());
        }
        Message::Origin { lsn, name } => {
            out.push(b'O');
            out.extend(lsn.to_be_bytes());
            string(&mut out, name);
        }
        Message::Relation(r) => {
            out.push(b'R');
            out.extend(r.oid.to_be_bytes());
            string(&mut out, &r.namespace);
            string(&mut out, &r.name);
            out.push(r.replica_identity);
            out.extend((r.columns.len() as i16).to_be_bytes());
            for c in &r.columns {
                out.push(u8::from(c.key));
                string(&mut out, &c.name);
                out.extend(c.type_oid.to_be_bytes());
                out.extend(c.type_modifier.to_be_bytes());
            }
        }
        Message::Type {
            oid,
            namespace,
            name,
        } => {
            out.push(b'Y');
            out.extend(oid.to_be_bytes());
            string(&mut out, namespace);
            string(&mut out, name);
        }
        Message::Insert { relation, new } => {
            out.push(b'I');
            out.extend(relation.to_be_bytes());
            out.push(b'N');
            tuple(&mut out, new);
        }
        Message::Update { relation, old, new } => {
            out.push(b'U');
            out.extend(relation.to_be_bytes());
            if let Some(old) = old {
                old_tuple(&mut out, old);
            }
            out.push(b'N');
            tuple(&mut out, new);
        }
        Message::Delete { relation, old } => {
            out.push(b'D');
            out.extend(relation.to_be_bytes());
            old_tuple(&mut out, old);
        }
        Message::Truncate { options, relations } => {
            out.push(b'T');
            out.extend((relations.len() as i32).to_be_bytes());
            out.push(*options);
            for r in relations {
                out.extend(r.to_be_bytes());
            }
        }
        Message::LogicalMessage {
            flags,
            lsn,
            prefix,
            content,
        } => {
            out.push(b'M');
            out.push(*flags);
            out.extend(lsn.to_be_bytes());
            string(&mut out, prefix);
            out.extend((content.len() as i32).to_be_bytes());
            out.extend(content);
        }
    }
    out
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend(s.as_bytes());
    out.push(0);
}

fn old_tuple(out: &mut Vec<u8>, old: &OldTuple) {
    match old {
        OldTuple::Key(t) => {
            out.push(b'K');
            tuple(out, t);
        }
        OldTuple::Full(t) => {
            out.push(b'O');
            tuple(out, t);
        }
    }
}

fn tuple(out: &mut Vec<u8>, t: &Tuple) {
    out.extend((t.0.len() as i16).to_be_bytes());
    for d in &t.0 {
        match d {
            Datum::Null => out.push(b'n'),
            Datum::UnchangedToast => out.push(b'u'),
            Datum::Text(v) => {
                out.push(b't');
                out.extend((v.len() as i32).to_be_bytes());
                out.extend(v);
            }
            Datum::Binary(v) => {
                out.push(b'b');
                out.extend((v.len() as i32).to_be_bytes());
                out.extend(v);
            }
        }
    }
}
