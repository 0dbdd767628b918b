//! The inbox: idempotent ingestion of messages from other systems, keyed
//! by an event id, with retry counting, a dead-letter state and, when
//! asked for, order per aggregate key. An inbox is an ordinary table owned
//! by its creator (made by `create_inbox`, or an existing table adopted
//! with `adopt => true`) and three stream tables over it, maintained
//! DIFFERENTIALLY: `<name>_pending`, `<name>_dead_letters` and
//! `<name>_stats`.
//!
//! Every function runs its statements on the inbox table as the caller,
//! so the table's own privileges decide who may ingest and who may
//! process; only the catalog row (settings and the duplicate count) is
//! the extension's. The rules (valid ids, failures up to dead, readiness
//! with order per key) are `pg_trickle_core::outbox::inbox`.

use pg_trickle_core::outbox::inbox::{after_failure, validate_event_id};
use pg_trickle_core::sql::split_qualified_name;
use pgrx::prelude::*;

use crate::security::{self, as_extension};
use crate::spi::{qi, raise, rows, run, value};

/// The columns an inbox has, with their types, as created.
const COLUMNS: [(&str, &str); 10] = [
    ("event_id", "text"),
    ("event_type", "text"),
    ("aggregate_key", "text"),
    ("payload", "jsonb"),
    ("status", "text"),
    ("attempts", "integer"),
    ("last_error", "text"),
    ("received_seq", "bigint"),
    ("received_at", "timestamp with time zone"),
    ("processed_at", "timestamp with time zone"),
];

/// What each column is when created or added.
fn column_definition(name: &str) -> &'static str {
    match name {
        "event_id" => "text PRIMARY KEY",
        "event_type" => "text NOT NULL DEFAULT ''",
        "aggregate_key" => "text",
        "payload" => "jsonb",
        "status" => "text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead'))",
        "attempts" => "integer NOT NULL DEFAULT 0",
        "last_error" => "text",
        "received_seq" => "bigint GENERATED ALWAYS AS IDENTITY",
        "received_at" => "timestamptz NOT NULL DEFAULT pg_catalog.now()",
        _ => "timestamptz",
    }
}

/// An inbox as the catalog knows it.
struct Inbox {
    relid: u32,
    /// The table, as SQL text resolvable by the caller.
    table: String,
    max_attempts: u32,
    ordered: bool,
}

/// Find inbox `name` as the caller, or raise 42P01 / 42704.
fn resolve(name: &str) -> Inbox {
    let relid: u32 = value(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid::pg_catalog.text",
        &[Some(name.to_string())],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| raise("42P01", format!("inbox \"{name}\" does not exist"), None));
    let row = as_extension(|| {
        crate::compat::require_current_sql();
        rows(
            "SELECT max_attempts::pg_catalog.text, ordered::pg_catalog.text FROM pgtrickle.pgt_inboxes \
              WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
            &[Some(relid.to_string())],
        )
    });
    let Some(r) = row.into_iter().next() else {
        raise("42704", format!("\"{name}\" is not an inbox"), None)
    };
    Inbox {
        relid,
        table: crate::spi::relation_name(relid).unwrap_or_else(|| name.to_string()),
        max_attempts: r[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(1),
        ordered: r[1].as_deref() == Some("true"),
    }
}

/// The stream tables of inbox `table` (schema-qualified, quoted).
fn stream_table_names(schema: &str, name: &str) -> [(String, &'static str); 3] {
    [
        (
            format!("{}.{}", qi(schema), qi(&format!("{name}_pending"))),
            "pending",
        ),
        (
            format!("{}.{}", qi(schema), qi(&format!("{name}_dead_letters"))),
            "dead",
        ),
        (
            format!("{}.{}", qi(schema), qi(&format!("{name}_stats"))),
            "stats",
        ),
    ]
}

fn stream_table_query(table: &str, kind: &str) -> String {
    match kind {
        "pending" => format!(
            "SELECT event_id, event_type, aggregate_key, attempts, received_seq, received_at \
             FROM {table} WHERE status = 'pending'"
        ),
        "dead" => format!(
            "SELECT event_id, event_type, aggregate_key, attempts, last_error, received_at \
             FROM {table} WHERE status = 'dead'"
        ),
        _ => format!(
            "SELECT event_type, status, count(*) AS events, sum(attempts) AS attempts \
             FROM {table} GROUP BY event_type, status"
        ),
    }
}

/// Create inbox `name` (a table in the current or named schema, owned by
/// the caller) and its stream tables, refreshed on `schedule`. With
/// `adopt`, the existing table `name` becomes the inbox: it must have an
/// `event_id text` column with a unique index or key, and the other inbox
/// columns are added where missing. An event fails at most
/// `max_attempts` times before it is dead; with `ordered`, events of one
/// aggregate key are handed out one at a time, in arrival order.
#[pg_extern]
fn create_inbox(
    name: &str,
    max_attempts: default!(i32, 5),
    ordered: default!(bool, false),
    schedule: default!(Option<&str>, "'1s'"),
    adopt: default!(bool, false),
) {
    if max_attempts < 1 {
        raise(
            "22023",
            format!("max_attempts must be at least 1, not {max_attempts}"),
            None,
        );
    }
    let Some((schema, rel)) = split_qualified_name(name) else {
        raise("42602", format!("invalid inbox name \"{name}\""), None)
    };
    let schema = schema
        .or_else(|| value("SELECT pg_catalog.current_schema()::pg_catalog.text", &[]))
        .unwrap_or_else(|| raise("3F000", "no schema has been selected to create in", None));
    if rel.len() + "_dead_letters".len() > 63 {
        raise(
            "42622",
            format!("inbox name \"{rel}\" is too long: its stream table {rel}_dead_letters would exceed 63 bytes"),
            None,
        );
    }
    let table = format!("{}.{}", qi(&schema), qi(&rel));
    let exists = value(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.text",
        &[Some(table.clone())],
    )
    .is_some();
    match (exists, adopt) {
        (true, false) => raise(
            "42P07",
            format!("relation {table} already exists"),
            Some("Pass adopt => true to make an existing table an inbox.".into()),
        ),
        (false, true) => raise(
            "42P01",
            format!("table {table} does not exist: there is nothing to adopt"),
            None,
        ),
        (false, false) => {
            let cols: Vec<String> = COLUMNS
                .iter()
                .map(|(c, _)| format!("{c} {}", column_definition(c)))
                .collect();
            run(&format!("CREATE TABLE {table} ({})", cols.join(", ")), &[]);
        }
        (true, true) => adopt_table(&table),
    }
    let relid: u32 = value(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid::pg_catalog.text",
        &[Some(table.clone())],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| raise("XX000", "inbox table vanished", None));
    let me = security::caller();
    as_extension(|| {
        crate::compat::require_current_sql();
        security::require_owner(
            me,
            security::relation_owner(relid),
            &format!("table {table}"),
        );
        let inserted = value(
            "INSERT INTO pgtrickle.pgt_inboxes (relid, name, max_attempts, ordered) \
             VALUES ($1::pg_catalog.oid, $2, $3::pg_catalog.int4, $4::pg_catalog.bool) \
             ON CONFLICT DO NOTHING RETURNING 'x'",
            &[
                Some(relid.to_string()),
                Some(table.clone()),
                Some(max_attempts.to_string()),
                Some(ordered.to_string()),
            ],
        );
        if inserted.is_none() {
            raise("42710", format!("{table} is already an inbox"), None);
        }
    });
    // The stream tables are created as the caller, exactly as if the
    // caller had called create_stream_table.
    for (st, kind) in stream_table_names(&schema, &rel) {
        run(
            "SELECT pgtrickle.create_stream_table($1, $2, $3, 'DIFFERENTIAL')",
            &[
                Some(st),
                Some(stream_table_query(&table, kind)),
                schedule.map(str::to_string),
            ],
        );
    }
}

/// Check an existing table's inbox columns and add the missing ones.
fn adopt_table(table: &str) {
    let present: Vec<(String, String)> = rows(
        "SELECT attname::pg_catalog.text, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute \
          WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)::pg_catalog.oid \
            AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
        &[Some(table.to_string())],
    )
    .into_iter()
    .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default()))
    .collect();
    for (col, ty) in COLUMNS {
        match present.iter().find(|(c, _)| c == col) {
            Some((_, t)) if t != ty => raise(
                "42804",
                format!("column {col} of {table} is {t}; an inbox needs {ty}"),
                None,
            ),
            Some(_) => {}
            None if col == "event_id" => raise(
                "42703",
                format!("{table} has no event_id column: an inbox is keyed by event_id text"),
                None,
            ),
            None => run(
                &format!(
                    "ALTER TABLE {table} ADD COLUMN {col} {}",
                    column_definition(col)
                ),
                &[],
            ),
        }
    }
    let identity = value(
        "SELECT attidentity::pg_catalog.text FROM pg_catalog.pg_attribute \
          WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)::pg_catalog.oid \
            AND attname OPERATOR(pg_catalog.=) 'received_seq'",
        &[Some(table.to_string())],
    );
    if identity.as_deref().unwrap_or("").is_empty() {
        raise(
            "42804",
            format!("column received_seq of {table} is not an identity column; an inbox numbers arrivals with one"),
            Some(format!("ALTER TABLE {table} ALTER COLUMN received_seq ADD GENERATED ALWAYS AS IDENTITY")),
        );
    }
    // Rows an inbox could not process or tell apart are refused, not
    // adopted to be lost: a missing or empty id, an unknown status.
    let bad = value(
        &format!(
            "SELECT pg_catalog.format('event_id %s, status %s, attempts %s', \
                    pg_catalog.quote_nullable(event_id), pg_catalog.quote_nullable(status), \
                    pg_catalog.quote_nullable(attempts)) \
               FROM {table} WHERE event_id IS NULL OR pg_catalog.btrim(event_id) OPERATOR(pg_catalog.=) '' \
                  OR status IS NULL OR status OPERATOR(pg_catalog.<>) ALL (ARRAY['pending', 'done', 'dead']) \
                  OR attempts IS NULL \
              LIMIT 1"
        ),
        &[],
    );
    if let Some(bad) = bad {
        raise(
            "23514",
            format!("{table} has a row an inbox cannot hold ({bad}): ids must be set, status pending, done or dead, attempts set"),
            None,
        );
    }
    let unique = value(
        "SELECT 'x' FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a \
             ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) i.indkey[0] \
          WHERE i.indrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)::pg_catalog.oid \
            AND i.indisunique AND i.indnkeyatts OPERATOR(pg_catalog.=) 1 AND i.indpred IS NULL \
            AND a.attname OPERATOR(pg_catalog.=) 'event_id' LIMIT 1",
        &[Some(table.to_string())],
    );
    if unique.is_none() {
        raise(
            "42P10",
            format!("event_id of {table} has no unique index: duplicates could not be told apart"),
            Some(format!("ALTER TABLE {table} ADD UNIQUE (event_id)")),
        );
    }
}

/// Drop inbox `name`: its stream tables, its catalog row and, unless
/// `keep_table`, its table.
#[pg_extern]
fn drop_inbox(name: &str, keep_table: default!(bool, false)) {
    let inbox = resolve(name);
    let me = security::caller();
    as_extension(|| {
        security::require_owner(
            me,
            security::relation_owner(inbox.relid),
            &format!("inbox {}", inbox.table),
        );
    });
    let (schema, rel): (String, String) = rows(
        "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text FROM pg_catalog.pg_class c \
           JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
          WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
        &[Some(inbox.relid.to_string())],
    )
    .into_iter()
    .next()
    .map(|r| {
        (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
        )
    })
    .unwrap_or_default();
    for (st, _) in stream_table_names(&schema, &rel) {
        if value(
            "SELECT pg_catalog.to_regclass($1)::pg_catalog.text",
            &[Some(st.clone())],
        )
        .is_some()
        {
            run("SELECT pgtrickle.drop_stream_table($1)", &[Some(st)]);
        }
    }
    as_extension(|| {
        run(
            "DELETE FROM pgtrickle.pgt_inboxes WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
            &[Some(inbox.relid.to_string())],
        )
    });
    if !keep_table {
        run(&format!("DROP TABLE {}", inbox.table), &[]);
    }
}

// `pgtrickle.inbox_ingest(inbox, event_id, payload jsonb, event_type,
// aggregate_key)`: a SQL wrapper passes the payload as text, so that it
// reaches the table exactly as given (numerics keep their scale).
extension_sql!(
    r#"
CREATE FUNCTION pgtrickle.inbox_ingest(
    inbox text, event_id text, payload jsonb DEFAULT NULL,
    event_type text DEFAULT '', aggregate_key text DEFAULT NULL
) RETURNS boolean LANGUAGE sql
AS $$ SELECT pgtrickle.inbox_ingest_json(inbox, event_id, payload::pg_catalog.text, event_type, aggregate_key) $$;
COMMENT ON FUNCTION pgtrickle.inbox_ingest(text, text, jsonb, text, text) IS
    'Ingest one event into an inbox: true when new, false for a duplicate event id (ignored and counted)';
"#,
    name = "inbox_ingest_sql",
    requires = [inbox_ingest_json],
);

/// Ingest one event into inbox `inbox` (see `inbox_ingest`). Returns true
/// when it is new, false for a duplicate of an event id already there
/// (ignored and counted). A NULL event id raises 22004, an empty one 22023.
#[pg_extern]
fn inbox_ingest_json(
    inbox: Option<&str>,
    event_id: Option<&str>,
    payload: Option<&str>,
    event_type: Option<&str>,
    aggregate_key: Option<&str>,
) -> bool {
    let inbox = inbox.unwrap_or_else(|| raise("22004", "an inbox name is needed, not NULL", None));
    let id = validate_event_id(event_id)
        .unwrap_or_else(|e| raise(e.sqlstate(), format!("inbox {inbox}: {e}"), None));
    let ib = resolve(inbox);
    let payload_text = payload.map(str::to_string);
    let event_type = event_type.unwrap_or("");
    if let (true, Some(key)) = (ib.ordered, aggregate_key) {
        // One producer of a key at a time, to the end of its transaction:
        // arrival numbers of a key then follow commit order, so a later
        // event of a key is never claimable before an earlier one commits.
        run(
            "SELECT pg_catalog.pg_advisory_xact_lock(($1::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32) \
                    OPERATOR(pg_catalog.|) (pg_catalog.hashtext($2)::pg_catalog.int8 OPERATOR(pg_catalog.&) 4294967295))",
            &[Some(ib.relid.to_string()), Some(key.to_string())],
        );
    }
    let new = value(
        &format!(
            "INSERT INTO {} (event_id, event_type, aggregate_key, payload, status, attempts) \
             VALUES ($1, $2, $3, $4::pg_catalog.jsonb, 'pending', 0) ON CONFLICT (event_id) DO NOTHING RETURNING 'x'",
            ib.table
        ),
        &[
            Some(id.to_string()),
            Some(event_type.to_string()),
            aggregate_key.map(str::to_string),
            payload_text,
        ],
    )
    .is_some();
    if !new {
        as_extension(|| {
            run(
                "UPDATE pgtrickle.pgt_inboxes SET duplicates = duplicates OPERATOR(pg_catalog.+) 1 \
                  WHERE relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
                &[Some(ib.relid.to_string())],
            )
        });
    }
    new
}

/// Claim up to `batch_size` pending events of `inbox` for processing in
/// the caller's transaction: they stay locked (other workers skip them)
/// until it ends. With an ordered inbox, only the earliest pending event
/// of each aggregate key is handed out. Mark each with `inbox_done` or
/// `inbox_fail`; an event whose worker's transaction ends without either
/// is simply pending again.
#[pg_extern]
#[allow(clippy::type_complexity)] // pgrx needs the column list spelled out here
fn inbox_claim(
    inbox: &str,
    batch_size: default!(i32, 10),
) -> TableIterator<
    'static,
    (
        name!(event_id, String),
        name!(event_type, String),
        name!(aggregate_key, Option<String>),
        name!(payload, Option<crate::outbox::JsonbText>),
        name!(attempts, i32),
    ),
> {
    if !(1..=10_000).contains(&batch_size) {
        raise(
            "22023",
            format!("inbox {inbox}: a batch holds 1 to 10000 events, not {batch_size}"),
            None,
        );
    }
    let ib = resolve(inbox);
    let order = if ib.ordered {
        format!(
            " AND (t.aggregate_key IS NULL OR NOT EXISTS (SELECT 1 FROM {} e \
               WHERE e.aggregate_key OPERATOR(pg_catalog.=) t.aggregate_key \
                 AND e.status OPERATOR(pg_catalog.=) 'pending' \
                 AND e.received_seq OPERATOR(pg_catalog.<) t.received_seq))",
            ib.table
        )
    } else {
        String::new()
    };
    let out: Vec<_> = rows(
        &format!(
            "SELECT t.event_id, t.event_type, t.aggregate_key, t.payload::pg_catalog.text, t.attempts::pg_catalog.text \
               FROM {} t WHERE t.status OPERATOR(pg_catalog.=) 'pending'{order} \
              ORDER BY t.received_seq LIMIT $1::pg_catalog.int4 FOR UPDATE SKIP LOCKED",
            ib.table
        ),
        &[Some(batch_size.to_string())],
    )
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
            r[2].clone(),
            r[3].clone().map(crate::outbox::JsonbText),
            r[4].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
        )
    })
    .collect();
    TableIterator::new(out)
}

/// The locked row of event `event_id`, or raise 42704.
fn lock_event(ib: &Inbox, event_id: &str) -> (String, u32) {
    let r = rows(
        &format!(
            "SELECT status, attempts::pg_catalog.text FROM {} WHERE event_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
            ib.table
        ),
        &[Some(event_id.to_string())],
    )
    .into_iter()
    .next()
    .unwrap_or_else(|| {
        raise(
            "42704",
            format!("inbox {} has no event \"{event_id}\"", ib.table),
            None,
        )
    });
    (
        r[0].clone().unwrap_or_default(),
        r[1].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
    )
}

/// Mark event `event_id` of `inbox` processed.
#[pg_extern]
fn inbox_done(inbox: &str, event_id: &str) {
    let ib = resolve(inbox);
    let (status, _) = lock_event(&ib, event_id);
    if status == "dead" {
        raise(
            "55000",
            format!(
                "event \"{event_id}\" of inbox {} is dead: retry it first",
                ib.table
            ),
            None,
        );
    }
    run(
        &format!(
            "UPDATE {} SET status = 'done', processed_at = pg_catalog.clock_timestamp() \
              WHERE event_id OPERATOR(pg_catalog.=) $1",
            ib.table
        ),
        &[Some(event_id.to_string())],
    );
}

/// Record a failed attempt at event `event_id` of `inbox` with `error`:
/// it is pending again, or dead once it failed `max_attempts` times.
/// Returns its status (`pending` or `dead`).
#[pg_extern]
fn inbox_fail(inbox: &str, event_id: &str, error: default!(Option<&str>, "NULL")) -> String {
    let ib = resolve(inbox);
    let (status, attempts) = lock_event(&ib, event_id);
    if status != "pending" {
        raise(
            "55000",
            format!(
                "event \"{event_id}\" of inbox {} is {status}, not pending",
                ib.table
            ),
            None,
        );
    }
    let (attempts, status) = after_failure(attempts, ib.max_attempts);
    run(
        &format!(
            "UPDATE {} SET status = $2, attempts = $3::pg_catalog.int4, last_error = $4 \
              WHERE event_id OPERATOR(pg_catalog.=) $1",
            ib.table
        ),
        &[
            Some(event_id.to_string()),
            Some(status.name().to_string()),
            Some(attempts.to_string()),
            error.map(str::to_string),
        ],
    );
    status.name().to_string()
}

/// Put dead event `event_id` of `inbox` back to pending, its attempts
/// counted from zero again.
#[pg_extern]
fn inbox_retry(inbox: &str, event_id: &str) {
    let ib = resolve(inbox);
    let (status, _) = lock_event(&ib, event_id);
    if status != "dead" {
        raise(
            "55000",
            format!(
                "event \"{event_id}\" of inbox {} is {status}, not dead",
                ib.table
            ),
            None,
        );
    }
    run(
        &format!(
            "UPDATE {} SET status = 'pending', attempts = 0 WHERE event_id OPERATOR(pg_catalog.=) $1",
            ib.table
        ),
        &[Some(event_id.to_string())],
    );
}

/// Every inbox the caller owns (every one, for a monitor): its settings
/// and how many duplicates it ignored.
#[pg_extern]
fn inbox_status() -> TableIterator<
    'static,
    (
        name!(inbox, String),
        name!(max_attempts, i32),
        name!(ordered, bool),
        name!(duplicates, i64),
    ),
> {
    let me = security::caller();
    let monitor = security::is_monitor(me);
    let all = as_extension(|| {
        rows(
            "SELECT relid::pg_catalog.text, max_attempts::pg_catalog.text, ordered::pg_catalog.text, \
                    duplicates::pg_catalog.text FROM pgtrickle.pgt_inboxes ORDER BY name",
            &[],
        )
    });
    let out: Vec<_> = all
        .into_iter()
        .filter_map(|r| {
            let relid: u32 = r[0].as_deref()?.parse().ok()?;
            let owner = security::relation_owner(relid);
            if !(monitor || security::has_privs_of(me, owner)) {
                return None;
            }
            Some((
                crate::spi::relation_name(relid)?,
                r[1].as_deref()?.parse().ok()?,
                r[2].as_deref() == Some("true"),
                r[3].as_deref()?.parse().ok()?,
            ))
        })
        .collect();
    TableIterator::new(out)
}
