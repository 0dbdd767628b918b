-- pg_trickle 0.39.0 -> 0.39.1: the security release.
-- Run by ALTER EXTENSION pg_trickle UPDATE (search_path is the extension's schema).
-- Every object here is created exactly as the 0.39.1 install script creates it;
-- the upgrade tests compare an upgraded catalog with a fresh install.
--
-- Fixes privilege escalation through change capture: 0.39.0's generated
-- capture functions (pgtrickle_changes.capture_<oid>) were SECURITY DEFINER
-- without a pinned search_path, so any role allowed to write a captured
-- table could run its own operators with the function owner's rights.
-- Every existing capture function is regenerated below.

-- The trigger and event-trigger functions, schema-qualified throughout.
CREATE OR REPLACE FUNCTION pgtrickle.guard_writes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
BEGIN
    SELECT c.backpressure, c.backpressure_reason, c.write_block INTO b
      FROM pgtrickle.pgt_change_buffers c WHERE c.source_relid OPERATOR(pg_catalog.=) TG_RELID;
    IF b.write_block IS NOT NULL THEN
        RAISE EXCEPTION 'pg_trickle: writes to % are refused: %', TG_RELID::pg_catalog.regclass, b.write_block
            USING ERRCODE = '53400',
                  HINT = 'Resume and refresh the held stream table, or discard its changes.';
    END IF;
    IF b.backpressure OPERATOR(pg_catalog.=) 'engaged' THEN
        IF COALESCE(pg_catalog.current_setting('pg_trickle.backpressure_action', true), 'reject') OPERATOR(pg_catalog.=) 'warn' THEN
            RAISE WARNING 'pg_trickle: backpressure on %: %', TG_RELID::pg_catalog.regclass, b.backpressure_reason;
        ELSE
            RAISE EXCEPTION 'pg_trickle: backpressure on %: %', TG_RELID::pg_catalog.regclass, b.backpressure_reason
                USING ERRCODE = '53400',
                      HINT = 'Refresh the stream tables reading it (resume them if held) to drain the backlog; pg_trickle.backpressure_action = warn only warns.';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgtrickle.on_source_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE pgtrickle.pgt_stream_tables st
       SET needs_reinit = true,
           reinit_reason = pg_catalog.format('TRUNCATE of source %s', TG_RELID::pg_catalog.regclass)
     WHERE st.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT s.st_id FROM pgtrickle.pgt_sources s
                                                    WHERE s.source_relid OPERATOR(pg_catalog.=) TG_RELID));
    RETURN NULL;
END
$$;

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
END
$$;

CREATE OR REPLACE FUNCTION pgtrickle.on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT c.objid
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pgtrickle.pgt_sources s ON s.source_relid OPERATOR(pg_catalog.=) c.objid
         WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
    LOOP
        PERFORM pgtrickle._source_altered(r.objid);
    END LOOP;
END
$$;

-- _regenerate(): used by this script; not executable by PUBLIC.
CREATE FUNCTION "_regenerate"() RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', '_regenerate_wrapper';

-- refresh_history(name): a stream table's refreshes, for its owner.
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
	"error_message" TEXT
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'refresh_history_wrapper';

-- What ordinary roles may use (see docs/SECURITY.md). The API in schema
-- pgtrickle is for every role: each function checks ownership itself and
-- runs the defining query as the stream table's owner. The catalog, the
-- change buffers and the internal functions belong to the extension owner
-- alone; trigger functions run only as triggers.
GRANT USAGE ON SCHEMA pgtrickle TO PUBLIC;
-- A refresh statement runs as the stream table's owner and names its
-- change buffers, so every role may look names up in pgtrickle_changes;
-- the buffers and capture functions in it grant nothing to anyone.
GRANT USAGE ON SCHEMA pgtrickle_changes TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgtrickle FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgtrickle FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    pgtrickle._forget_stream_table(bigint),
    pgtrickle._source_altered(oid),
    pgtrickle._regenerate(),
    pgtrickle.guard_writes(),
    pgtrickle.on_source_truncate(),
    pgtrickle.on_sql_drop(),
    pgtrickle.on_ddl_end(),
    pgtrickle.wake_on_commit()
FROM PUBLIC;

-- Everything 0.39.0 generated for existing stream tables, made again by
-- this version: capture functions (pinned search_path, qualified
-- operator; buffer and function owned by the extension owner, nothing for
-- anyone else) and the stored refresh statements (functions they call
-- schema-qualified).
SELECT pgtrickle._regenerate();
