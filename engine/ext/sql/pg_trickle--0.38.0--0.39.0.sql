-- pg_trickle 0.38.0 -> 0.39.0
-- Run by ALTER EXTENSION pg_trickle UPDATE (search_path is the extension's schema).
-- Every object here is created exactly as the 0.39.0 install script creates it;
-- the upgrade tests compare an upgraded catalog with a fresh install.

-- explain_stream_table(name, format): the operator tree as json, text or dot.
CREATE FUNCTION "explain_stream_table"(
	"name" TEXT,
	"format" TEXT
) RETURNS TEXT
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'explain_stream_table_as_wrapper';

-- stream_table_sql(name): every generated SQL fragment, one row per phase,
-- with the parameter values the next refresh would bind.
CREATE FUNCTION "stream_table_sql"(
	"name" TEXT
) RETURNS TABLE (
	"phase" TEXT,
	"sql" TEXT,
	"hash" TEXT,
	"parameterized" bool,
	"writes" bool,
	"parameters" TEXT[]
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'stream_table_sql_wrapper';

-- Hold: per stream table, refreshes pause while capture goes on.
ALTER TABLE pgtrickle.pgt_stream_tables
    ADD COLUMN held        boolean NOT NULL DEFAULT false,
    ADD COLUMN held_since  timestamptz,
    ADD COLUMN held_reason text;

-- Per source: capture state (discard), backpressure and the held-backlog block.
ALTER TABLE pgtrickle.pgt_change_buffers
    ADD COLUMN capture_state text NOT NULL DEFAULT 'capturing' CHECK (capture_state IN ('capturing', 'discarding')),
    ADD COLUMN capture_reason text,
    ADD COLUMN capture_changed_at timestamptz,
    ADD COLUMN backpressure text NOT NULL DEFAULT 'released' CHECK (backpressure IN ('released', 'engaged')),
    ADD COLUMN backpressure_reason text,
    ADD COLUMN backpressure_since timestamptz,
    ADD COLUMN backpressure_transitions bigint NOT NULL DEFAULT 0,
    ADD COLUMN write_block text;

-- Before every statement that writes to a captured source: refuse it (or
-- warn) while backpressure is engaged, and refuse it while a held reader's
-- backlog is at pg_trickle.max_held_backlog_rows. One catalog lookup per
-- statement; the state is set by pgtrickle.evaluate_backpressure().
CREATE FUNCTION pgtrickle.guard_writes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
BEGIN
    SELECT backpressure, backpressure_reason, write_block INTO b
      FROM pgtrickle.pgt_change_buffers WHERE source_relid = TG_RELID;
    IF b.write_block IS NOT NULL THEN
        RAISE EXCEPTION 'pg_trickle: writes to % are refused: %', TG_RELID::regclass, b.write_block
            USING ERRCODE = '53400',
                  HINT = 'Resume and refresh the held stream table, or discard its changes.';
    END IF;
    IF b.backpressure = 'engaged' THEN
        IF coalesce(current_setting('pg_trickle.backpressure_action', true), 'reject') = 'warn' THEN
            RAISE WARNING 'pg_trickle: backpressure on %: %', TG_RELID::regclass, b.backpressure_reason;
        ELSE
            RAISE EXCEPTION 'pg_trickle: backpressure on %: %', TG_RELID::regclass, b.backpressure_reason
                USING ERRCODE = '53400',
                      HINT = 'Refresh the stream tables reading it (resume them if held) to drain the backlog; pg_trickle.backpressure_action = warn only warns.';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- Event-driven wake: a committed change to a source sets the scheduler's latch.
CREATE FUNCTION "wake_on_commit"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'wake_on_commit_wrapper';

-- Existing change buffers: the capture time (for backlog age), the write
-- guard and the commit wake.
DO $upgrade$
DECLARE
    b record;
BEGIN
    FOR b IN SELECT source_relid, buffer_name FROM pgtrickle.pgt_change_buffers LOOP
        EXECUTE format('ALTER TABLE %s ADD COLUMN captured_at timestamptz NOT NULL DEFAULT now()', b.buffer_name);
        EXECUTE format('CREATE TRIGGER pgt_guard BEFORE INSERT OR UPDATE OR DELETE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.guard_writes()', b.source_relid::regclass);
        EXECUTE format('CREATE TRIGGER pgt_wake AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.wake_on_commit()', b.source_relid::regclass);
    END LOOP;
END
$upgrade$;

-- stream_table_status() gains CDC state, backlog bytes and age, and backpressure.
DROP FUNCTION "stream_table_status"();
CREATE FUNCTION "stream_table_status"() RETURNS TABLE (
	"name" TEXT,
	"requested_mode" TEXT,
	"effective_mode" TEXT,
	"schedule" TEXT,
	"last_refresh_at" TEXT,
	"last_refresh_mode" TEXT,
	"pending_changes" bigint,
	"needs_reinit" bool,
	"reinit_reason" TEXT,
	"fallback_reason" TEXT,
	"last_error_sqlstate" TEXT,
	"last_error_message" TEXT,
	"frontier" TEXT,
	"cdc_state" TEXT,
	"cdc_reason" TEXT,
	"pending_bytes" bigint,
	"oldest_pending_age_s" double precision,
	"backpressure" TEXT,
	"backpressure_reason" TEXT
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'stream_table_status_v2_wrapper';

-- Hold and resume.
CREATE FUNCTION "hold_stream_table"(
	"name" TEXT,
	"reason" TEXT DEFAULT NULL
) RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'hold_stream_table_wrapper';

CREATE FUNCTION "resume_stream_table"(
	"name" TEXT
) RETURNS void
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'resume_stream_table_wrapper';

CREATE FUNCTION "hold_all_stream_tables"(
	"reason" TEXT DEFAULT NULL
) RETURNS bigint
LANGUAGE c
AS 'MODULE_PATHNAME', 'hold_all_stream_tables_wrapper';

CREATE FUNCTION "resume_all_stream_tables"() RETURNS bigint
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'resume_all_stream_tables_wrapper';

-- Discard and resume capture.
CREATE FUNCTION "discard_changes"(
	"name" TEXT,
	"reason" TEXT DEFAULT NULL
) RETURNS bigint
LANGUAGE c
AS 'MODULE_PATHNAME', 'discard_changes_wrapper';

CREATE FUNCTION "discard_all_changes"(
	"reason" TEXT DEFAULT NULL
) RETURNS bigint
LANGUAGE c
AS 'MODULE_PATHNAME', 'discard_all_changes_wrapper';

CREATE FUNCTION "resume_capture"(
	"name" TEXT
) RETURNS bigint
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'resume_capture_wrapper';

CREATE FUNCTION "resume_all_capture"() RETURNS bigint
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'resume_all_capture_wrapper';

-- Backpressure and per-source status.
CREATE FUNCTION "evaluate_backpressure"() RETURNS TABLE (
	"source" TEXT,
	"backpressure" TEXT,
	"reason" TEXT
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'evaluate_backpressure_wrapper';

CREATE FUNCTION "change_buffer_status"() RETURNS TABLE (
	"source" TEXT,
	"buffer" TEXT,
	"capture_state" TEXT,
	"capture_reason" TEXT,
	"readers" bigint,
	"pending_rows" bigint,
	"pending_bytes" bigint,
	"oldest_pending_age_s" double precision,
	"backpressure" TEXT,
	"backpressure_reason" TEXT,
	"backpressure_since" TEXT,
	"backpressure_transitions" bigint,
	"write_block" TEXT
)
STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'change_buffer_status_wrapper';
