//! The outbox message format. A refresh that changed a stream table
//! publishes one message: the rows it inserted and deleted, inline as JSON
//! while they fit under the outbox's inline limit, and otherwise a
//! claim-check (the counts, and where the rows are kept) so that one big
//! refresh never makes one huge message. Encoding and decoding live here so
//! that the extension, the tests and consumers written in Rust agree on it.
//!
//! ```json
//! {"version":1,"stream_table":"public.totals","message":7,"mode":"DIFFERENTIAL",
//!  "inserted":[{"k":1,"n":3}],"deleted":[{"k":1,"n":2}]}
//! {"version":1,"stream_table":"public.totals","message":8,"mode":"FULL",
//!  "claim_check":{"table":"pgtrickle.pgt_outbox_rows","inserted":90000,"deleted":90000}}
//! ```

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use thiserror::Error;

/// The format version this code writes and reads.
pub const ENVELOPE_VERSION: u64 = 1;

/// Where claim-checked rows are kept: one row per changed row, keyed by
/// (stream table, message, op, ordinal); `pgtrickle.outbox_rows(name,
/// message)` reads them back.
pub const CLAIM_CHECK_TABLE: &str = "pgtrickle.pgt_outbox_rows";

/// One outbox message.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The stream table, as its name is printed (`schema.name`).
    pub stream_table: String,
    /// The message's number: 1, 2, ... per stream table in commit order.
    pub message: u64,
    /// The refresh mode that ran (`DIFFERENTIAL` or `FULL`).
    pub mode: String,
    /// The changed rows, or where they are.
    pub payload: Payload,
}

/// A message's rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The rows themselves: one JSON object per row, column name to value
    /// (SQL NULL is JSON null), each kept as its exact text (so that a
    /// numeric keeps the scale PostgreSQL printed: `1.50` is not `1.5`).
    Inline {
        /// Rows the refresh added.
        inserted: Vec<String>,
        /// Rows the refresh removed.
        deleted: Vec<String>,
    },
    /// Too large to carry: how many rows, kept in [`CLAIM_CHECK_TABLE`].
    ClaimCheck {
        /// Rows the refresh added.
        inserted: u64,
        /// Rows the refresh removed.
        deleted: u64,
    },
}

/// Why a message does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// Not JSON, or not an object.
    #[error("an outbox message is a JSON object: {0}")]
    NotAnObject(String),
    /// A field is missing or has the wrong type.
    #[error("an outbox message's field {0} is missing or not {1}")]
    Field(&'static str, &'static str),
    /// Written by a format this code does not know.
    #[error(
        "outbox message version {0} is not supported (this code reads version {ENVELOPE_VERSION})"
    )]
    Version(u64),
    /// Both or neither of inline rows and a claim-check.
    #[error("an outbox message carries either inline rows or a claim-check, exactly one")]
    Payload,
    /// An inline row is not a JSON object.
    #[error("an inline row of an outbox message is not a JSON object")]
    Row,
}

/// Whether rows whose JSON takes `bytes` bytes travel inline under
/// `limit` (a limit of 0 claim-checks every message that has rows).
pub fn fits_inline(bytes: u64, limit: u64) -> bool {
    bytes <= limit
}

/// The row lists of a message, each row's text kept exactly.
#[derive(Deserialize)]
struct RawRows<'a> {
    #[serde(borrow, default)]
    inserted: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    deleted: Option<Vec<&'a RawValue>>,
}

fn array_text(rows: &[String]) -> String {
    format!("[{}]", rows.join(","))
}

impl Envelope {
    /// The message as JSON text.
    pub fn encode(&self) -> String {
        let mut o = Map::new();
        o.insert("version".into(), Value::from(ENVELOPE_VERSION));
        o.insert(
            "stream_table".into(),
            Value::from(self.stream_table.clone()),
        );
        o.insert("message".into(), Value::from(self.message));
        o.insert("mode".into(), Value::from(self.mode.clone()));
        match &self.payload {
            Payload::Inline { .. } => {}
            Payload::ClaimCheck { inserted, deleted } => {
                let mut c = Map::new();
                c.insert("table".into(), Value::from(CLAIM_CHECK_TABLE));
                c.insert("inserted".into(), Value::from(*inserted));
                c.insert("deleted".into(), Value::from(*deleted));
                o.insert("claim_check".into(), Value::Object(c));
            }
        }
        let head = Value::Object(o).to_string();
        match &self.payload {
            Payload::Inline { inserted, deleted } => format!(
                "{},\"inserted\":{},\"deleted\":{}}}",
                &head[..head.len() - 1],
                array_text(inserted),
                array_text(deleted)
            ),
            Payload::ClaimCheck { .. } => head,
        }
    }

    /// Read a message back, checking every field.
    pub fn decode(text: &str) -> Result<Envelope, EnvelopeError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| EnvelopeError::NotAnObject(e.to_string()))?;
        let o = v
            .as_object()
            .ok_or_else(|| EnvelopeError::NotAnObject("not an object".into()))?;
        let uint = |k: &'static str| {
            o.get(k)
                .and_then(Value::as_u64)
                .ok_or(EnvelopeError::Field(k, "an unsigned integer"))
        };
        let string = |k: &'static str| {
            o.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or(EnvelopeError::Field(k, "a string"))
        };
        let version = uint("version")?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(version));
        }
        for k in ["inserted", "deleted"] {
            match o.get(k) {
                None => {}
                Some(Value::Array(a)) if a.iter().all(Value::is_object) => {}
                Some(Value::Array(_)) => return Err(EnvelopeError::Row),
                Some(_) => return Err(EnvelopeError::Field(k, "an array")),
            }
        }
        let raw: RawRows =
            serde_json::from_str(text).map_err(|e| EnvelopeError::NotAnObject(e.to_string()))?;
        let texts = |v: Option<Vec<&RawValue>>| {
            v.map(|rows| {
                rows.into_iter()
                    .map(|r| r.get().to_string())
                    .collect::<Vec<_>>()
            })
        };
        let payload = match (
            texts(raw.inserted),
            texts(raw.deleted),
            o.get("claim_check"),
        ) {
            (Some(inserted), Some(deleted), None) => Payload::Inline { inserted, deleted },
            (None, None, Some(c)) => {
                let count = |k: &'static str| {
                    c.get(k)
                        .and_then(Value::as_u64)
                        .ok_or(EnvelopeError::Field(k, "an unsigned integer"))
                };
                if c.get("table").and_then(Value::as_str) != Some(CLAIM_CHECK_TABLE) {
                    return Err(EnvelopeError::Field("claim_check.table", CLAIM_CHECK_TABLE));
                }
                Payload::ClaimCheck {
                    inserted: count("inserted")?,
                    deleted: count("deleted")?,
                }
            }
            _ => return Err(EnvelopeError::Payload),
        };
        Ok(Envelope {
            stream_table: string("stream_table")?,
            message: uint("message")?,
            mode: string("mode")?,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_message_round_trips_with_null_columns_and_empty_sides() {
        let e = Envelope {
            stream_table: "public.\"Totals\"".into(),
            message: 3,
            mode: "DIFFERENTIAL".into(),
            payload: Payload::Inline {
                inserted: vec![json!({"k": null, "n": 1}).to_string(), "{}".into()],
                deleted: vec![r#"{"total": 1.50}"#.into()],
            },
        };
        let text = e.encode();
        assert!(
            text.contains(r#"{"total": 1.50}"#),
            "rows are spliced verbatim: {text}"
        );
        assert_eq!(Envelope::decode(&text), Ok(e));
    }

    #[test]
    fn malformed_messages_are_refused_by_what_is_wrong() {
        use EnvelopeError::*;
        let d = |s: &str| Envelope::decode(s).unwrap_err();
        assert!(matches!(d("[1]"), NotAnObject(_)));
        assert_eq!(
            d(
                r#"{"version":2,"stream_table":"s","message":1,"mode":"FULL","inserted":[],"deleted":[]}"#
            ),
            Version(2)
        );
        assert_eq!(
            d(r#"{"version":1,"stream_table":"s","message":1,"mode":"FULL","inserted":[]}"#),
            Payload
        );
        assert_eq!(
            d(
                r#"{"version":1,"stream_table":"s","message":1,"mode":"FULL","inserted":[1],"deleted":[]}"#
            ),
            Row
        );
        assert_eq!(
            d(
                r#"{"version":1,"stream_table":"s","message":-1,"mode":"FULL","inserted":[],"deleted":[]}"#
            ),
            Field("message", "an unsigned integer")
        );
        assert_eq!(
            d(
                r#"{"version":1,"stream_table":"s","message":1,"mode":"FULL","claim_check":{"table":"x","inserted":1,"deleted":0}}"#
            ),
            Field("claim_check.table", CLAIM_CHECK_TABLE)
        );
    }

    #[test]
    fn the_inline_limit_is_inclusive() {
        assert!(fits_inline(100, 100));
        assert!(!fits_inline(101, 100));
        assert!(!fits_inline(1, 0));
    }

    /// A column value as the JSON text PostgreSQL prints: NULL, booleans,
    /// integers, numerics with trailing zeros, any text.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            "-?(0|[1-9][0-9]{0,5})\\.[0-9]{0,3}0{1,3}",
            ".{0,40}".prop_map(|t| Value::from(t).to_string()),
        ]
    }

    fn row() -> impl Strategy<Value = String> {
        proptest::collection::btree_map("[a-z_\"' ]{1,8}", scalar(), 0..6).prop_map(|m| {
            let cols: Vec<String> = m
                .into_iter()
                .map(|(k, v)| format!("{}: {v}", Value::from(k)))
                .collect();
            format!("{{{}}}", cols.join(", "))
        })
    }

    fn payload() -> impl Strategy<Value = Payload> {
        prop_oneof![
            (
                proptest::collection::vec(row(), 0..30),
                proptest::collection::vec(row(), 0..30)
            )
                .prop_map(|(inserted, deleted)| Payload::Inline { inserted, deleted }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(inserted, deleted)| Payload::ClaimCheck { inserted, deleted }),
        ]
    }

    proptest! {
        /// Every message decodes to what was encoded: NULLs, quotes,
        /// any text, empty and large row lists, and claim-checks.
        #[test]
        fn every_message_round_trips(
            name in ".{1,30}",
            message in 1u64..,
            full in any::<bool>(),
            payload in payload(),
        ) {
            let e = Envelope {
                stream_table: name,
                message,
                mode: if full { "FULL" } else { "DIFFERENTIAL" }.into(),
                payload,
            };
            prop_assert_eq!(Envelope::decode(&e.encode()), Ok(e));
        }
    }
}
