-- pg_trickle 0.39.1 -> 0.40.0: exact or refused, more queries DIFFERENTIAL, WAL and
-- sharded capture, snapshots, outbox and inbox, OpenTelemetry.
-- Run by ALTER EXTENSION pg_trickle UPDATE (search_path is the extension's schema).
-- Every object here is created exactly as the 0.40.0 install script creates it;
-- the upgrade tests compare an upgraded catalog with a fresh install.

-- The identity of the plan the stored statements came from: a refresh
-- specialises a freshly analysed query only when its fingerprint matches
-- (filled in by the regeneration at the end of this script).
ALTER TABLE pgtrickle.pgt_stream_tables ADD COLUMN plan_fingerprint text;

-- The partitions and inheritance children (members) of each captured source,
-- as its triggers were last set.
ALTER TABLE pgtrickle.pgt_change_buffers ADD COLUMN members oid[] NOT NULL DEFAULT '{}';

-- Snapshots: archival copies of stream tables and the frontier each was
-- taken at (see engine/ext/src/snapshot.rs); created first, as the
-- event trigger replaced below forgets dropped snapshot tables.
CREATE TABLE pgtrickle.pgt_snapshots (
    snapshot_relid    oid PRIMARY KEY,
    st_id             bigint NOT NULL REFERENCES pgtrickle.pgt_stream_tables (id) ON DELETE CASCADE,
    frontier          pg_snapshot,
    frontier_xid      xid8,
    own_change_ids    jsonb NOT NULL,
    plan_fingerprint  text,
    reinit_generation bigint NOT NULL,
    taken_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgtrickle.pgt_snapshots IS 'Snapshot tables of stream tables, with the frontier a restore realigns to';
CREATE TABLE pgtrickle.pgt_pruned_xids (
    source_relid oid NOT NULL REFERENCES pgtrickle.pgt_change_buffers (source_relid) ON DELETE CASCADE,
    xid          xid8 NOT NULL,
    PRIMARY KEY (source_relid, xid)
);
COMMENT ON TABLE pgtrickle.pgt_pruned_xids IS 'Transactions pruned from a buffer that a snapshot of one of its readers may not have seen';

-- TRUNCATE of a member marks the source's readers; a dropped member, and
-- tables created, attached, detached, inheriting or not, are noticed.
CREATE OR REPLACE FUNCTION pgtrickle.on_source_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE pgtrickle.pgt_stream_tables st
       SET needs_reinit = true,
           reinit_reason = CASE WHEN EXISTS (SELECT 1 FROM pgtrickle.pgt_sources s
                                               WHERE s.source_relid OPERATOR(pg_catalog.=) TG_RELID)
                                THEN pg_catalog.format('TRUNCATE of source %s', TG_RELID::pg_catalog.regclass)
                                ELSE pg_catalog.format('TRUNCATE of %s, a partition or child of a source', TG_RELID::pg_catalog.regclass)
                           END
     WHERE st.id OPERATOR(pg_catalog.=) ANY (ARRAY(
           SELECT s.st_id FROM pgtrickle.pgt_sources s
            WHERE s.source_relid OPERATOR(pg_catalog.=) TG_RELID
               OR s.source_relid OPERATOR(pg_catalog.=) ANY (ARRAY(
                  SELECT b.source_relid FROM pgtrickle.pgt_change_buffers b
                   WHERE TG_RELID OPERATOR(pg_catalog.=) ANY (b.members)))));
    RETURN NULL;
END
$$;

-- Inboxes (0.40.0), created before the event trigger below reads the
-- table (this script's own DROPs fire it): tables made or adopted as inboxes, their settings and
-- how many duplicate events each ignored (see engine/ext/src/inbox.rs and
-- docs/INBOX.md). The table itself belongs to its creator.
CREATE TABLE pgtrickle.pgt_inboxes (
    relid        oid PRIMARY KEY,
    name         text NOT NULL,
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    ordered      boolean NOT NULL,
    duplicates   bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgtrickle.pgt_inboxes IS 'Inbox tables: retry limit, order per aggregate key, duplicates ignored';

CREATE OR REPLACE FUNCTION pgtrickle.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped oid[];
    r record;
BEGIN
    SELECT COALESCE(pg_catalog.array_agg(d.objid), '{}') INTO dropped
      FROM pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objsubid OPERATOR(pg_catalog.=) 0;
    FOR r IN
        SELECT d.object_identity, pg_catalog.string_agg(st.name, ', ' ORDER BY st.name) AS readers
          FROM pg_catalog.pg_event_trigger_dropped_objects() d
          JOIN pgtrickle.pgt_sources s ON s.source_relid OPERATOR(pg_catalog.=) d.objid
          JOIN pgtrickle.pgt_stream_tables st ON st.id OPERATOR(pg_catalog.=) s.st_id
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
           AND d.objsubid OPERATOR(pg_catalog.=) 0
           AND NOT st.relid OPERATOR(pg_catalog.=) ANY (dropped)
         GROUP BY d.object_identity
    LOOP
        RAISE EXCEPTION 'cannot drop %: stream table % reads it', r.object_identity, r.readers
            USING ERRCODE = '2BP01',
                  HINT = 'Drop the stream table first with pgtrickle.drop_stream_table().';
    END LOOP;
    PERFORM pgtrickle._forget_stream_table(st.id)
       FROM pgtrickle.pgt_stream_tables st
      WHERE st.relid OPERATOR(pg_catalog.=) ANY (dropped);
    -- A dropped snapshot table is no snapshot any more.
    DELETE FROM pgtrickle.pgt_snapshots WHERE snapshot_relid OPERATOR(pg_catalog.=) ANY (dropped);
    -- A dropped inbox table is no inbox any more.
    DELETE FROM pgtrickle.pgt_inboxes WHERE relid OPERATOR(pg_catalog.=) ANY (dropped);
    -- A dropped partition or child of a source took its rows with it.
    PERFORM pgtrickle._structure_changed(dropped, 'DROP TABLE');
END
$$;

CREATE OR REPLACE FUNCTION pgtrickle.on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    touched oid[];
BEGIN
    FOR r IN
        SELECT DISTINCT c.objid
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pgtrickle.pgt_sources s ON s.source_relid OPERATOR(pg_catalog.=) c.objid
         WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
    LOOP
        PERFORM pgtrickle._source_altered(r.objid);
    END LOOP;
    IF EXISTS (SELECT 1 FROM pgtrickle.pgt_change_buffers) THEN
        SELECT COALESCE(pg_catalog.array_agg(DISTINCT c.objid), '{}') INTO touched
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass;
        PERFORM pgtrickle._structure_changed(touched, TG_TAG);
    END IF;
END
$$;

DROP EVENT TRIGGER pgt_ddl_end;
CREATE EVENT TRIGGER pgt_ddl_end ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION pgtrickle.on_ddl_end();

-- _structure_changed(objids, tag): called by the event triggers.
CREATE FUNCTION "_structure_changed"(
	"objids" oid[],
	"tag" TEXT
) RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', '_structure_changed_wrapper';

-- reinitialize_stream_table(name): recompute from scratch now.
CREATE FUNCTION "reinitialize_stream_table"(
	"name" TEXT
) RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'reinitialize_stream_table_wrapper';

-- The read-only trigger function of every stream table.
CREATE FUNCTION "refuse_direct_write"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'refuse_direct_write_wrapper';

-- refresh_history(name) gains refresh_id: it grows with every refresh
-- recorded, so a reader can ask what ran after a point it noted even after
-- old rows were pruned. A function's result columns cannot be changed in
-- place; every role may execute it, as before.
DROP FUNCTION "refresh_history"(TEXT);
CREATE FUNCTION "refresh_history"(
	"name" TEXT
) RETURNS TABLE (
	"started_at" TEXT,
	"finished_at" TEXT,
	"mode" TEXT,
	"initiated_by" TEXT,
	"rows_deleted" bigint,
	"rows_inserted" bigint,
	"reason" TEXT,
	"error_sqlstate" TEXT,
	"error_message" TEXT,
	"refresh_id" bigint
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'refresh_history_wrapper';

-- Capture from the WAL (0.40.0): one row per source whose changes come
-- from a logical replication slot instead of its row trigger.
CREATE TABLE pgtrickle.pgt_wal_capture (
    source_relid   oid PRIMARY KEY REFERENCES pgtrickle.pgt_change_buffers (source_relid) ON DELETE CASCADE,
    slot_name      name NOT NULL UNIQUE,
    start_lsn      pg_lsn NOT NULL,
    stop_lsn       pg_lsn,
    prior_identity "char" NOT NULL,
    switched_at    timestamptz NOT NULL DEFAULT now(),
    last_drain_at  timestamptz,
    drain_end_lsn  pg_lsn,
    last_error     text
);
COMMENT ON TABLE pgtrickle.pgt_wal_capture IS 'Sources captured from the WAL: slot, the LSN capture by slot starts at and (switching back) stops at';
CREATE TABLE pgtrickle.pgt_wal_progress (
    source_relid  oid NOT NULL REFERENCES pgtrickle.pgt_wal_capture (source_relid) ON DELETE CASCADE,
    drained_upto  pg_lsn NOT NULL,
    drained_by    xid8 NOT NULL DEFAULT pg_current_xact_id(),
    drained_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pgt_wal_progress_source_idx ON pgtrickle.pgt_wal_progress (source_relid, drained_upto);
COMMENT ON TABLE pgtrickle.pgt_wal_progress IS 'How far each slot is decoded into its change buffer, written with the buffer rows';

-- Capture on other nodes (0.40.0): one row per (sharded source, node),
-- the slot on that node, how much of it is written into the source's
-- change buffer (settled position and the transactions written past it),
-- and the lease of whoever drains it on a schedule. The row is locked by
-- every drain of the slot; progress and lease are written in the same
-- transaction as the buffer rows.
CREATE TABLE pgtrickle.pgt_remote_capture (
    source_relid      oid NOT NULL REFERENCES pgtrickle.pgt_change_buffers (source_relid) ON DELETE CASCADE,
    node              text NOT NULL,
    node_label        text NOT NULL,
    server_oid        oid,
    slot_name         name NOT NULL,
    shard_tables      text NOT NULL DEFAULT '',
    settled_lsn       pg_lsn NOT NULL,
    written           text NOT NULL DEFAULT '',
    last_snapshot     text,
    confirmed_lsn     pg_lsn,
    lease_holder      text,
    lease_acquired_at timestamptz,
    lease_expires_at  timestamptz,
    last_drain_at     timestamptz,
    last_error        text,
    failed_ticks      integer NOT NULL DEFAULT 0,
    retry_after       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_relid, node)
);
COMMENT ON TABLE pgtrickle.pgt_remote_capture IS 'Sharded sources captured on the nodes that hold their rows: slot, written progress, lease, errors';
CREATE TABLE pgtrickle.pgt_remote_lease_history (
    id           bigserial PRIMARY KEY,
    source_relid oid NOT NULL,
    node         text NOT NULL,
    server_oid   oid,
    holder       text NOT NULL,
    acquired_at  timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    taken_from   text,
    taken_from_expired_at timestamptz,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgtrickle.pgt_remote_lease_history IS 'Every lease taken or taken over on a node slot, for checking that holders never overlapped';


-- What a restore checks: whether the stream table was reinitialised since
-- a snapshot (and, above, which transactions were pruned since).
ALTER TABLE pgtrickle.pgt_stream_tables ADD COLUMN reinit_generation bigint NOT NULL DEFAULT 0;

-- What an AUTO stream table's refreshes measured, for choosing between
-- DIFFERENTIAL and FULL before each refresh (see engine/core/src/adaptive.rs);
-- stream tables created earlier start with none and learn from their next
-- refreshes.
ALTER TABLE pgtrickle.pgt_stream_tables ADD COLUMN full_ms_estimate double precision;
ALTER TABLE pgtrickle.pgt_stream_tables ADD COLUMN diff_fixed_ms_estimate double precision;
ALTER TABLE pgtrickle.pgt_stream_tables ADD COLUMN diff_ms_per_change_estimate double precision;

-- The differential statement specialised to every captured source having
-- changes (every refresh of a stream table over one source): stored with
-- the plan, so that a new connection need not analyse and generate it
-- again (filled in by the regeneration at the end of this script).
ALTER TABLE pgtrickle.pgt_stream_tables ADD COLUMN all_changed_sql text;

-- The publication capture from the WAL reads. It exists from the start:
-- pgoutput on PostgreSQL 15 cannot decode through a publication created
-- after its slot. Without wal_level = logical PostgreSQL warns that it
-- publishes nothing yet, which is expected here.
CREATE FUNCTION pgtrickle._create_capture_publication() RETURNS void
    LANGUAGE plpgsql SET client_min_messages = error SET search_path = pg_catalog, pg_temp AS $pgt$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) 'pgtrickle_capture') THEN
        CREATE PUBLICATION pgtrickle_capture WITH (publish = 'insert, update, delete');
    END IF;
END
$pgt$;
SELECT pgtrickle._create_capture_publication();
DROP FUNCTION pgtrickle._create_capture_publication();

-- Capture from the WAL: switching a source, draining slots, status, and
-- the decoder a refresh reads undrained changes through.
CREATE FUNCTION "_wal_pending"(
	"token" TEXT,
	"source" oid,
	"snapshot" TEXT,
	"drained" TEXT,
	"stop" TEXT
) RETURNS TEXT[]
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_wal_pending_wrapper';

CREATE FUNCTION "drain_wal_capture"() RETURNS bigint
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'drain_wal_capture_wrapper';

CREATE FUNCTION "drop_orphaned_capture_slots"() RETURNS TEXT[]
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_orphaned_capture_slots_wrapper';

CREATE FUNCTION "set_capture_mode"(
	"source" TEXT,
	"mode" TEXT
) RETURNS TEXT
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'set_capture_mode_wrapper';

CREATE FUNCTION "wal_capture_status"() RETURNS TABLE (
	"source" TEXT,
	"slot_name" TEXT,
	"state" TEXT,
	"confirmed_lsn" TEXT,
	"drained_lsn" TEXT,
	"lag_bytes" bigint,
	"lag_seconds" double precision,
	"last_drain_at" TEXT,
	"last_error" TEXT
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'wal_capture_status_wrapper';

-- Capture on other nodes: sharded sources (postgres_fdw partitions).
CREATE FUNCTION "drain_remote_capture"() RETURNS bigint
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'drain_remote_capture_wrapper';

CREATE FUNCTION "drop_orphaned_remote_slots"() RETURNS TEXT[]
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_orphaned_remote_slots_wrapper';

CREATE FUNCTION "remote_capture_status"() RETURNS TABLE (
	"stream_table" TEXT,
	"source" TEXT,
	"node" TEXT,
	"slot_name" TEXT,
	"settled_lsn" TEXT,
	"confirmed_lsn" TEXT,
	"lease_holder" TEXT,
	"lease_expires_at" TEXT,
	"last_drain_at" TEXT,
	"failed_ticks" INT,
	"last_error" TEXT
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'remote_capture_status_wrapper';

-- Snapshots: archival copies of stream tables and their restore.
CREATE FUNCTION "restore_from_snapshot"(
	"name" TEXT,
	"source" TEXT
) RETURNS bigint
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'restore_from_snapshot_wrapper';

CREATE FUNCTION "snapshot_stream_table"(
	"name" TEXT,
	"target" TEXT DEFAULT NULL
) RETURNS TEXT
LANGUAGE c
AS 'MODULE_PATHNAME', 'snapshot_stream_table_wrapper';

REVOKE ALL ON pgtrickle.pgt_wal_capture, pgtrickle.pgt_wal_progress, pgtrickle.pgt_snapshots, pgtrickle.pgt_pruned_xids,
    pgtrickle.pgt_remote_capture, pgtrickle.pgt_remote_lease_history FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    pgtrickle._wal_pending(text, oid, text, text, text),
    pgtrickle.drain_wal_capture(),
    pgtrickle.drop_orphaned_capture_slots(),
    pgtrickle.drain_remote_capture(),
    pgtrickle.drop_orphaned_remote_slots()
FROM PUBLIC;
REVOKE ALL ON SEQUENCE pgtrickle.pgt_remote_lease_history_id_seq FROM PUBLIC;

REVOKE EXECUTE ON FUNCTION
    pgtrickle._structure_changed(oid[], text),
    pgtrickle.refuse_direct_write()
FROM PUBLIC;

-- Outboxes (0.40.0): a stream table's outbox, its messages (one per
-- refresh that changed it, numbered in commit order under the head
-- counter's row lock), the rows of claim-checked messages, the rows a
-- refresh statement staged for its message, and consumer groups with
-- their committed offset and leased deliveries (see
-- engine/ext/src/outbox and docs/OUTBOX.md).
CREATE TABLE pgtrickle.pgt_outboxes (
    st_id              bigint PRIMARY KEY REFERENCES pgtrickle.pgt_stream_tables (id) ON DELETE CASCADE,
    inline_limit_bytes integer NOT NULL CHECK (inline_limit_bytes >= 0),
    retention          interval NOT NULL,
    head               bigint NOT NULL DEFAULT 0,
    enabled_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgtrickle.pgt_outboxes IS 'Stream tables with an outbox: inline limit, retention, last message written';
CREATE TABLE pgtrickle.pgt_outbox_messages (
    st_id      bigint NOT NULL REFERENCES pgtrickle.pgt_outboxes (st_id) ON DELETE CASCADE,
    message    bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    inserted   bigint NOT NULL,
    deleted    bigint NOT NULL,
    envelope   jsonb NOT NULL,
    PRIMARY KEY (st_id, message)
);
COMMENT ON TABLE pgtrickle.pgt_outbox_messages IS 'One message per refresh that changed a stream table with an outbox';
CREATE TABLE pgtrickle.pgt_outbox_rows (
    st_id    bigint NOT NULL,
    message  bigint NOT NULL,
    op       "char" NOT NULL,
    ordinal  bigint NOT NULL,
    row_data jsonb NOT NULL,
    PRIMARY KEY (st_id, message, op, ordinal),
    FOREIGN KEY (st_id, message) REFERENCES pgtrickle.pgt_outbox_messages (st_id, message) ON DELETE CASCADE
);
COMMENT ON TABLE pgtrickle.pgt_outbox_rows IS 'The rows of claim-checked outbox messages (too large to carry inline)';
CREATE TABLE pgtrickle.pgt_outbox_staging (
    st_relid oid NOT NULL,
    op       "char" NOT NULL,
    row_data jsonb NOT NULL
);
CREATE INDEX pgt_outbox_staging_relid_idx ON pgtrickle.pgt_outbox_staging (st_relid);
COMMENT ON TABLE pgtrickle.pgt_outbox_staging IS 'Rows a refresh statement inserted or deleted, netted into its outbox message before it commits';
CREATE TABLE pgtrickle.pgt_consumer_groups (
    st_id         bigint NOT NULL REFERENCES pgtrickle.pgt_outboxes (st_id) ON DELETE CASCADE,
    group_name    text NOT NULL,
    committed     bigint NOT NULL,
    done          bigint[] NOT NULL DEFAULT '{}',
    last_delivery bigint NOT NULL DEFAULT 0,
    consumer_role oid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (st_id, group_name)
);
COMMENT ON TABLE pgtrickle.pgt_consumer_groups IS 'Outbox consumer groups: every message up to committed is done, done lists commits past a gap';
CREATE TABLE pgtrickle.pgt_outbox_leases (
    st_id         bigint NOT NULL,
    group_name    text NOT NULL,
    delivery      bigint NOT NULL,
    first_message bigint NOT NULL,
    last_message  bigint NOT NULL,
    holder        text NOT NULL,
    acquired_at   timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (st_id, group_name, delivery),
    FOREIGN KEY (st_id, group_name) REFERENCES pgtrickle.pgt_consumer_groups (st_id, group_name) ON DELETE CASCADE
);
COMMENT ON TABLE pgtrickle.pgt_outbox_leases IS 'Outbox deliveries handed to a worker of a consumer group and not committed';

-- After every refresh statement on a stream table with an outbox: stage
-- the rows it inserted and deleted, turned into JSON as the stream
-- table's owner (engine/ext/src/outbox/publish.rs).
CREATE FUNCTION "_outbox_stage"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', '_outbox_stage_wrapper';

-- The outbox's API (see docs/OUTBOX.md).
CREATE FUNCTION "enable_outbox"(
	"name" TEXT,
	"inline_limit_bytes" INT DEFAULT 65536,
	"retention" TEXT DEFAULT '1 day'
) RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'enable_outbox_wrapper';

CREATE FUNCTION "disable_outbox"(
	"name" TEXT
) RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'disable_outbox_wrapper';

CREATE FUNCTION "create_consumer_group"(
	"name" TEXT,
	"group_name" TEXT,
	"from_message" bigint DEFAULT NULL,
	"consumer_role" TEXT DEFAULT NULL
) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_consumer_group_wrapper';

CREATE FUNCTION "drop_consumer_group"(
	"name" TEXT,
	"group_name" TEXT
) RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_consumer_group_wrapper';

CREATE FUNCTION "poll_outbox"(
	"name" TEXT,
	"group_name" TEXT,
	"batch_size" INT DEFAULT 100,
	"lease_seconds" INT DEFAULT 30,
	"worker" TEXT DEFAULT NULL
) RETURNS TABLE (
	"delivery" bigint,
	"message" bigint,
	"created_at" timestamp with time zone,
	"envelope" jsonb
)
LANGUAGE c
AS 'MODULE_PATHNAME', 'poll_outbox_wrapper';

CREATE FUNCTION "commit_offset"(
	"name" TEXT,
	"group_name" TEXT,
	"delivery" bigint,
	"worker" TEXT DEFAULT NULL
) RETURNS bigint
LANGUAGE c
AS 'MODULE_PATHNAME', 'commit_offset_wrapper';

CREATE FUNCTION "extend_lease"(
	"name" TEXT,
	"group_name" TEXT,
	"delivery" bigint,
	"lease_seconds" INT DEFAULT 30,
	"worker" TEXT DEFAULT NULL
) RETURNS timestamp with time zone
LANGUAGE c
AS 'MODULE_PATHNAME', 'extend_lease_wrapper';

CREATE FUNCTION "replay_outbox"(
	"name" TEXT,
	"group_name" TEXT,
	"from_message" bigint
) RETURNS bigint
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'replay_outbox_wrapper';

CREATE FUNCTION "outbox_rows"(
	"name" TEXT,
	"message" bigint
) RETURNS TABLE (
	"op" TEXT,
	"row_data" jsonb
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'outbox_rows_wrapper';

CREATE FUNCTION "outbox_status"() RETURNS TABLE (
	"stream_table" TEXT,
	"group_name" TEXT,
	"head" bigint,
	"committed" bigint,
	"pending" bigint,
	"leased_deliveries" bigint,
	"first_retained" bigint,
	"retained_messages" bigint,
	"claim_checked_messages" bigint
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'outbox_status_wrapper';

REVOKE ALL ON pgtrickle.pgt_outboxes, pgtrickle.pgt_outbox_messages, pgtrickle.pgt_outbox_rows,
    pgtrickle.pgt_outbox_staging, pgtrickle.pgt_consumer_groups, pgtrickle.pgt_outbox_leases FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgtrickle._outbox_stage() FROM PUBLIC;


-- The inbox's API (see docs/INBOX.md).
CREATE FUNCTION "create_inbox"(
	"name" TEXT,
	"max_attempts" INT DEFAULT 5,
	"ordered" bool DEFAULT false,
	"schedule" TEXT DEFAULT '1s',
	"adopt" bool DEFAULT false
) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_inbox_wrapper';

CREATE FUNCTION "drop_inbox"(
	"name" TEXT,
	"keep_table" bool DEFAULT false
) RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_inbox_wrapper';

CREATE FUNCTION "inbox_ingest_json"(
	"inbox" TEXT,
	"event_id" TEXT,
	"payload" TEXT,
	"event_type" TEXT,
	"aggregate_key" TEXT
) RETURNS bool
LANGUAGE c
AS 'MODULE_PATHNAME', 'inbox_ingest_json_wrapper';

CREATE FUNCTION "inbox_claim"(
	"inbox" TEXT,
	"batch_size" INT DEFAULT 10
) RETURNS TABLE (
	"event_id" TEXT,
	"event_type" TEXT,
	"aggregate_key" TEXT,
	"payload" jsonb,
	"attempts" INT
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'inbox_claim_wrapper';

CREATE FUNCTION "inbox_done"(
	"inbox" TEXT,
	"event_id" TEXT
) RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'inbox_done_wrapper';

CREATE FUNCTION "inbox_fail"(
	"inbox" TEXT,
	"event_id" TEXT,
	"error" TEXT DEFAULT NULL
) RETURNS TEXT
LANGUAGE c
AS 'MODULE_PATHNAME', 'inbox_fail_wrapper';

CREATE FUNCTION "inbox_retry"(
	"inbox" TEXT,
	"event_id" TEXT
) RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'inbox_retry_wrapper';

CREATE FUNCTION "inbox_status"() RETURNS TABLE (
	"inbox" TEXT,
	"max_attempts" INT,
	"ordered" bool,
	"duplicates" bigint
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'inbox_status_wrapper';

CREATE FUNCTION pgtrickle.inbox_ingest(
    inbox text, event_id text, payload jsonb DEFAULT NULL,
    event_type text DEFAULT '', aggregate_key text DEFAULT NULL
) RETURNS boolean LANGUAGE sql
AS $$ SELECT pgtrickle.inbox_ingest_json(inbox, event_id, payload::pg_catalog.text, event_type, aggregate_key) $$;
COMMENT ON FUNCTION pgtrickle.inbox_ingest(text, text, jsonb, text, text) IS
    'Ingest one event into an inbox: true when new, false for a duplicate event id (ignored and counted)';

REVOKE ALL ON pgtrickle.pgt_inboxes FROM PUBLIC;

-- OpenTelemetry: the export's status (the settings and the queue need no
-- SQL objects; change buffers gain their traceparent column in
-- _regenerate below).
CREATE FUNCTION "telemetry_status"() RETURNS TABLE (
	"enabled" bool,
	"preloaded" bool,
	"worker_running" bool,
	"endpoint" TEXT,
	"protocol" TEXT,
	"queue_capacity" bigint,
	"queued" bigint,
	"spans_queued" bigint,
	"spans_dropped" bigint,
	"spans_exported" bigint,
	"spans_failed" bigint,
	"failed_requests" bigint,
	"last_error" TEXT,
	"last_error_at" timestamp with time zone,
	"last_export_at" timestamp with time zone
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'telemetry_status_wrapper';

-- Algebraic maintenance of count, sum and avg: the largest scale among a
-- group's numeric values and how many have it (see
-- engine/ext/src/aggregates.rs). Stream tables created before 0.40.0 gain
-- their support columns when reinitialised or re-planned.
CREATE FUNCTION pgtrickle._scale_top_step(bigint, integer) RETURNS bigint
    IMMUTABLE STRICT PARALLEL SAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'pgtrickle_scale_top_step';
CREATE AGGREGATE pgtrickle.numeric_scale_top(integer) (
    SFUNC = pgtrickle._scale_top_step,
    STYPE = bigint,
    INITCOND = '-1',
    PARALLEL = SAFE
);
-- Refresh statements run as stream table owners call the aggregate (every
-- role may: it reads nothing); its transition function is checked against
-- the aggregate's owner only.
REVOKE EXECUTE ON FUNCTION pgtrickle._scale_top_step(bigint, integer) FROM PUBLIC;

-- The write path without per-row PL/pgSQL (see engine/ext/src/capture_row.rs
-- and write_guard.rs): one C row trigger function for every source, whose
-- triggers _regenerate below sets in place of the per-source functions
-- (dropped there), and a statement guard that looks nothing up while
-- backpressure and the held-backlog cap are off.
CREATE FUNCTION pgtrickle._capture_row() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'pgtrickle_capture_row';
CREATE OR REPLACE FUNCTION pgtrickle.guard_writes() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'pgtrickle_guard_writes';
CREATE FUNCTION pgtrickle._guard_writes_check(relid oid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
BEGIN
    SELECT c.backpressure, c.backpressure_reason, c.write_block INTO b
      FROM pgtrickle.pgt_change_buffers c WHERE c.source_relid OPERATOR(pg_catalog.=) relid;
    IF b.write_block IS NOT NULL THEN
        RAISE EXCEPTION 'pg_trickle: writes to % are refused: %', relid::pg_catalog.regclass, b.write_block
            USING ERRCODE = '53400',
                  HINT = 'Resume and refresh the held stream table, or discard its changes.';
    END IF;
    IF b.backpressure OPERATOR(pg_catalog.=) 'engaged' THEN
        IF COALESCE(pg_catalog.current_setting('pg_trickle.backpressure_action', true), 'reject') OPERATOR(pg_catalog.=) 'warn' THEN
            RAISE WARNING 'pg_trickle: backpressure on %: %', relid::pg_catalog.regclass, b.backpressure_reason;
        ELSE
            RAISE EXCEPTION 'pg_trickle: backpressure on %: %', relid::pg_catalog.regclass, b.backpressure_reason
                USING ERRCODE = '53400',
                      HINT = 'Refresh the stream tables reading it (resume them if held) to drain the backlog; pg_trickle.backpressure_action = warn only warns.';
        END IF;
    END IF;
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION pgtrickle._capture_row(), pgtrickle._guard_writes_check(oid),
    pgtrickle.guard_writes() FROM PUBLIC;

-- Everything generated for existing stream tables, made again by this
-- version: capture triggers on every partition and inheritance child (the
-- readers of such sources are recomputed at their next refresh, with a
-- WARNING: earlier versions could miss those members' changes), stored
-- statements (columns without a hash function enter row identity by their
-- send form or text; a stream table this version does not maintain
-- DIFFERENTIALLY is re-planned FULL, with a WARNING and its reason in
-- stream_table_status()), the read-only trigger of every stream table and
-- its dependencies on its sources, and the traceparent column of every
-- change buffer.
SELECT pgtrickle._regenerate();
