//! Publishing: the refresh that changed a stream table writes its outbox
//! message in its own transaction, so a message exists exactly when the
//! change committed.
//!
//! Statement triggers with transition tables on the stream table's storage
//! (installed by `enable_outbox`) stage every row a refresh statement
//! deleted or inserted. The trigger turns the rows into JSON as the
//! stream table's owner (whose statement fired it: a cast to `json` the
//! owner created runs as the owner, never with the extension's rights),
//! and only then writes them into the staging table as the extension. At the end of the refresh the staged rows are
//! netted (a FULL refresh deletes and re-inserts every row; only the rows
//! that really came or went remain, compared by their exact JSON text),
//! and one message is written: the rows inline while they fit under the
//! outbox's inline limit, a claim-check otherwise. Consumers are told by
//! `NOTIFY pgtrickle_outbox`, which PostgreSQL delivers only at commit.

use pg_trickle_core::outbox::envelope::{fits_inline, Envelope, Payload};
use pgrx::prelude::*;

use crate::spi::{internal, row, rows, run, value};
use crate::wal_capture::text_array;

/// Statement trigger on a stream table with an outbox: stage the rows in
/// the statement's transition tables (`pgt_new`, `pgt_old`), without the
/// hidden columns named by the trigger's arguments. Only pg_trickle's own
/// refresh and restore statements reach it (direct writes are refused
/// before it by `pgt_readonly`). Not executable by anyone: it only fires.
#[pg_trigger]
fn _outbox_stage<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    if !crate::readonly::applying() {
        return Ok(None);
    }
    let hidden = text_array(&trigger.extra_args().unwrap_or_default());
    let relid = trigger
        .relid()
        .unwrap_or_else(|e| internal(format!("outbox trigger: {e}")))
        .to_u32();
    let td = trigger.trigger_data() as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
    let sides = [
        ('I', trigger.new_transition_table_name().ok().flatten()),
        ('D', trigger.old_transition_table_name().ok().flatten()),
    ];
    for (op, table) in sides {
        let Some(table) = table else { continue };
        // As the owner: the rows as JSON text.
        let rows: Vec<String> = Spi::connect(|client| {
            // SAFETY: registers this trigger's transition tables with the
            // SPI connection just opened; `td` is the live TriggerData of
            // the call we are in.
            unsafe { pg_sys::SPI_register_trigger_data(td) };
            let sql = format!(
                "SELECT (pg_catalog.to_jsonb(__pgt_staged.*) OPERATOR(pg_catalog.-) $1::pg_catalog.text[])::pg_catalog.text \
                   FROM {} AS __pgt_staged",
                crate::spi::qi(table)
            );
            client
                .select(&sql, None, &[hidden.as_str().into()])
                .unwrap_or_else(|e| internal(format!("reading the transition table: {e}")))
                .filter_map(|r| r.get::<String>(1).ok().flatten())
                .collect()
        });
        if rows.is_empty() {
            continue;
        }
        // As the extension: into the staging table.
        crate::security::as_extension(|| {
            run(
                "INSERT INTO pgtrickle.pgt_outbox_staging (st_relid, op, row_data) \
                 SELECT $1::pg_catalog.oid, $2::\"char\", r::pg_catalog.jsonb \
                   FROM pg_catalog.unnest($3::pg_catalog.text[]) r",
                &[
                    Some(relid.to_string()),
                    Some(op.to_string()),
                    Some(text_array(&rows)),
                ],
            )
        });
    }
    Ok(None)
}

/// Hidden storage columns left out of published rows.
pub const HIDDEN_PREFIX: &str = "__pgt_";

/// Put (or put again, with the current hidden columns) the triggers that
/// stage a stream table's changes.
pub fn install_triggers(storage_sql: &str, hidden: &[String]) {
    let args = hidden
        .iter()
        .map(|h| format!("'{}'", h.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    // Fired in every session_replication_role, like pgt_readonly: a
    // refresh run in replica mode changes the stream table too.
    let _own = crate::triggers::OwnDdl::begin();
    for (name, event, referencing) in [
        ("pgt_outbox_ins", "INSERT", "NEW TABLE AS pgt_new"),
        ("pgt_outbox_del", "DELETE", "OLD TABLE AS pgt_old"),
        (
            "pgt_outbox_upd",
            "UPDATE",
            "OLD TABLE AS pgt_old NEW TABLE AS pgt_new",
        ),
    ] {
        run(
            &format!(
                "CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {storage_sql} REFERENCING {referencing} \
                 FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle._outbox_stage({args})"
            ),
            &[],
        );
        run(
            &format!("ALTER TABLE {storage_sql} ENABLE ALWAYS TRIGGER {name}"),
            &[],
        );
    }
}

/// Drop the staging triggers (idempotent).
pub fn drop_triggers(storage_sql: &str) {
    let _own = crate::triggers::OwnDdl::begin();
    for name in ["pgt_outbox_ins", "pgt_outbox_del", "pgt_outbox_upd"] {
        run(
            &format!("DROP TRIGGER IF EXISTS {name} ON {storage_sql}"),
            &[],
        );
    }
}

/// The staged rows of storage `$1` netted: `e(ins, row_text)`, one row
/// per row that really came (`ins`) or went, as exact JSON text (so a
/// numeric whose scale changed counts as changed, as FULL would print it).
const NET: &str = "WITH n AS (SELECT row_data::pg_catalog.text AS r, \
        pg_catalog.sum(CASE WHEN op OPERATOR(pg_catalog.=) 'I' THEN 1 ELSE -1 END) AS k \
      FROM pgtrickle.pgt_outbox_staging WHERE st_relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid GROUP BY 1), \
    e AS (SELECT n.k OPERATOR(pg_catalog.>) 0 AS ins, n.r AS row_text FROM n, \
        pg_catalog.generate_series(1, pg_catalog.abs(n.k)::pg_catalog.int8) \
      WHERE n.k OPERATOR(pg_catalog.<>) 0)";

fn clear_staged(relid: u32) {
    run(
        "DELETE FROM pgtrickle.pgt_outbox_staging WHERE st_relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
        &[Some(relid.to_string())],
    );
}

/// After a refresh of stream table `id` (storage `relid`, printed `name`)
/// in mode `mode`: write its outbox message when the outbox is enabled and
/// the stream table changed. Returns the message number written.
pub fn after_refresh(id: i64, relid: u32, name: &str, mode: &str) -> Option<u64> {
    // Read by key, without SQL (see `catalog::direct`): every refresh asks.
    let limit: u64 = crate::catalog::direct::lookup(
        c"pgtrickle",
        c"pgt_outboxes",
        &[(c"st_id", crate::catalog::direct::Key::Int8(id))],
        &[c"inline_limit_bytes"],
    )
    .into_iter()
    .next()?
    .into_iter()
    .next()
    .flatten()
    .and_then(|v| v.parse().ok())
    .unwrap_or(0);
    let relid_arg = Some(relid.to_string());
    let stats = row(
        &format!(
            "{NET} SELECT pg_catalog.count(*) FILTER (WHERE ins)::pg_catalog.text, \
                    pg_catalog.count(*) FILTER (WHERE NOT ins)::pg_catalog.text, \
                    COALESCE(pg_catalog.sum(pg_catalog.octet_length(row_text) OPERATOR(pg_catalog.+) 1), 0)::pg_catalog.text \
               FROM e"
        ),
        std::slice::from_ref(&relid_arg),
    )
    .unwrap_or_default();
    let num = |i: usize| -> u64 {
        stats
            .get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (inserted, deleted, bytes) = (num(0), num(1), num(2));
    if inserted == 0 && deleted == 0 {
        clear_staged(relid);
        return None;
    }
    // The head counter's row lock is held to commit: messages are numbered
    // in commit order, without gaps, and a reader that sees head N sees
    // every message up to N.
    let message: u64 = value(
        "UPDATE pgtrickle.pgt_outboxes SET head = head OPERATOR(pg_catalog.+) 1 \
          WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 RETURNING head::pg_catalog.text",
        &[Some(id.to_string())],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| internal(format!("outbox of stream table {name} vanished")));
    let payload = if fits_inline(bytes, limit) {
        // Both sides in one pass over the netted rows, each in row order.
        let (mut came, mut went) = (Vec::new(), Vec::new());
        for r in rows(
            &format!("{NET} SELECT ins::pg_catalog.text, row_text FROM e ORDER BY row_text"),
            std::slice::from_ref(&relid_arg),
        ) {
            let text = r[1].clone().unwrap_or_default();
            if r[0].as_deref() == Some("true") {
                came.push(text);
            } else {
                went.push(text);
            }
        }
        Payload::Inline {
            inserted: came,
            deleted: went,
        }
    } else {
        Payload::ClaimCheck { inserted, deleted }
    };
    let envelope = Envelope {
        stream_table: name.to_string(),
        message,
        mode: mode.to_string(),
        payload,
    };
    run(
        "INSERT INTO pgtrickle.pgt_outbox_messages (st_id, message, inserted, deleted, envelope) \
         VALUES ($1::pg_catalog.int8, $2::pg_catalog.int8, $3::pg_catalog.int8, $4::pg_catalog.int8, $5::pg_catalog.jsonb)",
        &[
            Some(id.to_string()),
            Some(message.to_string()),
            Some(inserted.to_string()),
            Some(deleted.to_string()),
            Some(envelope.encode()),
        ],
    );
    if matches!(envelope.payload, Payload::ClaimCheck { .. }) {
        run(
                &format!(
                    "{NET} INSERT INTO pgtrickle.pgt_outbox_rows (st_id, message, op, ordinal, row_data) \
                     SELECT $2::pg_catalog.int8, $3::pg_catalog.int8, CASE WHEN ins THEN 'I' ELSE 'D' END::\"char\", \
                            pg_catalog.row_number() OVER (PARTITION BY ins ORDER BY row_text), row_text::pg_catalog.jsonb \
                       FROM e"
                ),
                &[relid_arg.clone(), Some(id.to_string()), Some(message.to_string())],
            );
    }
    clear_staged(relid);
    let note = serde_json::json!({"stream_table": name, "message": message}).to_string();
    run(
        "SELECT pg_catalog.pg_notify('pgtrickle_outbox', $1)",
        &[Some(note)],
    );
    super::prune(id);
    Some(message)
}
