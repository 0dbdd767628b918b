-- pg_trickle catalog: stream tables, the relations they read, change
-- buffers and refresh history. Created by CREATE EXTENSION in schema pgtrickle.

CREATE SCHEMA IF NOT EXISTS pgtrickle_changes;
COMMENT ON SCHEMA pgtrickle_changes IS 'pg_trickle change buffers and capture trigger functions';

CREATE TABLE pgtrickle.pgt_stream_tables (
    id                  bigserial PRIMARY KEY,
    relid               oid NOT NULL UNIQUE,
    name                text NOT NULL,
    query               text NOT NULL,
    search_path         text NOT NULL,
    requested_mode      text NOT NULL CHECK (requested_mode IN ('DIFFERENTIAL', 'FULL', 'AUTO')),
    effective_mode      text NOT NULL CHECK (effective_mode IN ('DIFFERENTIAL', 'FULL')),
    fallback_reason     text,
    schedule            text,
    schedule_seconds    bigint,
    grouped             boolean NOT NULL,
    populate_sql        text NOT NULL,
    full_sql            text NOT NULL,
    diff_sql            text,
    frontier            pg_snapshot,
    frontier_xid        xid8,
    needs_reinit        boolean NOT NULL DEFAULT false,
    reinit_reason       text,
    last_refresh_at     timestamptz,
    last_refresh_mode   text,
    last_error_sqlstate text,
    last_error_message  text,
    last_error_at       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    held                boolean NOT NULL DEFAULT false,
    held_since          timestamptz,
    held_reason         text,
    plan_fingerprint    text,
    reinit_generation   bigint NOT NULL DEFAULT 0,
    full_ms_estimate    double precision,
    diff_fixed_ms_estimate double precision,
    diff_ms_per_change_estimate double precision,
    all_changed_sql     text
);
COMMENT ON TABLE pgtrickle.pgt_stream_tables IS 'One row per stream table';

CREATE TABLE pgtrickle.pgt_sources (
    st_id          bigint NOT NULL REFERENCES pgtrickle.pgt_stream_tables (id) ON DELETE CASCADE,
    source_relid   oid NOT NULL,
    source_name    text NOT NULL,
    param_position int,
    captured       boolean NOT NULL,
    own_change_id  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (st_id, source_relid)
);
CREATE INDEX pgt_sources_source_idx ON pgtrickle.pgt_sources (source_relid);
COMMENT ON TABLE pgtrickle.pgt_sources IS 'Relations each stream table reads; captured ones feed its differential refresh';

CREATE TABLE pgtrickle.pgt_change_buffers (
    source_relid oid PRIMARY KEY,
    buffer_name  text NOT NULL,
    columns      text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    capture_state text NOT NULL DEFAULT 'capturing' CHECK (capture_state IN ('capturing', 'discarding')),
    capture_reason text,
    capture_changed_at timestamptz,
    backpressure text NOT NULL DEFAULT 'released' CHECK (backpressure IN ('released', 'engaged')),
    backpressure_reason text,
    backpressure_since timestamptz,
    backpressure_transitions bigint NOT NULL DEFAULT 0,
    write_block text,
    members oid[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE pgtrickle.pgt_change_buffers IS 'One change buffer per captured source, shared by every stream table reading it';

CREATE TABLE pgtrickle.pgt_refresh_history (
    id             bigserial PRIMARY KEY,
    st_id          bigint NOT NULL REFERENCES pgtrickle.pgt_stream_tables (id) ON DELETE CASCADE,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    mode           text NOT NULL,
    initiated_by   text NOT NULL,
    rows_deleted   bigint,
    rows_inserted  bigint,
    reason         text,
    error_sqlstate text,
    error_message  text
);
CREATE INDEX pgt_refresh_history_st_idx ON pgtrickle.pgt_refresh_history (st_id, id);
COMMENT ON TABLE pgtrickle.pgt_refresh_history IS 'Every refresh: when, which mode actually ran, rows changed, error';

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

-- Snapshots (0.40.0): archival copies of stream tables and the frontier
-- each was taken at (see engine/ext/src/snapshot.rs).
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

-- Before every statement that writes to a captured source: refuse it (or
-- warn) while backpressure is engaged, and refuse it while a held reader's
-- backlog is at pg_trickle.max_held_backlog_rows. A C function that
-- returns at once while neither setting is on (see
-- engine/ext/src/write_guard.rs); otherwise it calls the check below,
-- one catalog lookup per statement, through the function manager (which
-- checks no EXECUTE right). The state is set by
-- pgtrickle.evaluate_backpressure().
CREATE FUNCTION pgtrickle.guard_writes() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'pgtrickle_guard_writes';
-- Like every SECURITY DEFINER function of pg_trickle, it pins search_path
-- and schema-qualifies what it uses: it runs in writers' sessions.
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


-- The AFTER row trigger of every captured source, its partitions and its
-- inheritance children: one buffer row per changed row, written into the
-- buffer's heap (see engine/ext/src/capture_row.rs). Its one argument is
-- the source's oid.
CREATE FUNCTION pgtrickle._capture_row() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'pgtrickle_capture_row';

-- A TRUNCATE of a source, or of one of its partitions or inheritance
-- children (its members), breaks the change stream: mark every dependent
-- stream table for reinitialisation (its next refresh is FULL).
CREATE FUNCTION pgtrickle.on_source_truncate() RETURNS trigger
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

-- Dropping a relation a stream table reads is refused; dropping a stream
-- table's storage directly forgets the stream table.
CREATE FUNCTION pgtrickle.on_sql_drop() RETURNS event_trigger
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

CREATE EVENT TRIGGER pgt_sql_drop ON sql_drop EXECUTE FUNCTION pgtrickle.on_sql_drop();

-- A column change to a captured source rebuilds its capture and marks every
-- dependent stream table for reinitialisation (re-planned, then FULL).
-- Renaming a source is refused: defining queries name it. A table created,
-- attached, detached, inheriting or no longer inheriting changes the
-- members of the sources above it (see pgtrickle._structure_changed).
CREATE FUNCTION pgtrickle.on_ddl_end() RETURNS event_trigger
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

CREATE EVENT TRIGGER pgt_ddl_end ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
    EXECUTE FUNCTION pgtrickle.on_ddl_end();

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


-- Inboxes (0.40.0): tables made or adopted as inboxes, their settings and
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
