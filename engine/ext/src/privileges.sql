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
    pgtrickle._structure_changed(oid[], text),
    pgtrickle.refuse_direct_write(),
    pgtrickle.guard_writes(),
    pgtrickle._guard_writes_check(oid),
    pgtrickle._capture_row(),
    pgtrickle.on_source_truncate(),
    pgtrickle.on_sql_drop(),
    pgtrickle.on_ddl_end(),
    pgtrickle.wake_on_commit(),
    pgtrickle._wal_pending(text, oid, text, text, text),
    pgtrickle.drain_wal_capture(),
    pgtrickle.drop_orphaned_capture_slots(),
    pgtrickle.drain_remote_capture(),
    pgtrickle.drop_orphaned_remote_slots(),
    pgtrickle._outbox_stage(),
    pgtrickle._scale_top_step(bigint, integer)
FROM PUBLIC;
