//! Decoding a capture slot: the changes of a source between two WAL
//! positions as change-buffer records, for a drain and for a refresh
//! (`_wal_pending`, behind `pgtrickle_changes.wal_changes_<oid>`).

use super::*;

/// The next full transaction id to be assigned, to widen decoded 32-bit
/// ids with: every transaction whose commit is in the WAL has an id below
/// it (a snapshot's xmax can be lower: it counts only transactions already
/// marked completed).
pub(super) fn next_full_xid() -> u64 {
    // SAFETY: reads shared transaction state under its own lock.
    unsafe { pg_sys::ReadNextFullTransactionId() }.value
}

/// The changes to `relid` of transactions committing in `[from, upto)`
/// that `keep` accepts, decoded from its slot (peeked, not consumed), as
/// records of the buffer's row type. A change's id is its WAL position:
/// a transaction's changes before and after a refresh in it are told
/// apart by the WAL position that refresh recorded.
pub(super) fn decode_slot(
    relid: u32,
    slot: &str,
    from: u64,
    upto: u64,
    keep: impl Fn(u64) -> bool,
) -> Vec<String> {
    let columns: Vec<String> = crate::capture::buffer_columns(relid);
    let next = next_full_xid();
    let messages: Vec<(i64, Vec<u8>)> = Spi::connect(|client| {
        let args: Vec<pgrx::datum::DatumWithOid> = vec![slot.into(), lsn_text(upto).into()];
        client
            .select(
                "SELECT (lsn OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.int8, data \
                 FROM pg_catalog.pg_logical_slot_peek_binary_changes($1::text::name, $2::text::pg_lsn, NULL, \
                 'proto_version', '1', 'publication_names', 'pgtrickle_capture')",
                None,
                &args,
            )
            .unwrap_or_else(|e| raise("55000", format!("reading capture slot {slot} failed: {e}"), None))
            .map(|row| {
                (
                    row.get::<i64>(1).ok().flatten().unwrap_or_default(),
                    row.get::<Vec<u8>>(2).ok().flatten().unwrap_or_default(),
                )
            })
            .collect()
    });
    let source = || crate::spi::relation_name(relid).unwrap_or_else(|| relid.to_string());
    let mut assembler = Assembler::new();
    let mut out = Vec::new();
    for (lsn, bytes) in &messages {
        let message = decode(bytes).unwrap_or_else(|e| {
            raise(
                "XX001",
                format!(
                    "capture slot {slot} of {} sent a message this version cannot decode: {e}",
                    source()
                ),
                None,
            )
        });
        let changes: Vec<Change> = assembler
            .push(&message)
            .unwrap_or_else(|e| raise("55000", format!("capture slot {slot}: {e}"), None));
        for change in changes {
            if change.relation != relid
                || change.commit_lsn < from
                || change.commit_lsn >= upto
                || change.kind == ChangeKind::Truncate
            {
                continue;
            }
            let xid = widen_xid(change.xid, next).unwrap_or_else(|| {
                raise(
                    "XX000",
                    format!(
                        "capture slot {slot}: decoded transaction {} is not before the next transaction id {next}",
                        change.xid
                    ),
                    None,
                )
            });
            if !keep(xid) {
                continue;
            }
            let relation = assembler
                .relation(relid)
                .unwrap_or_else(|| raise("XX000", "a change to an undescribed relation", None));
            let record = column_map(&columns, relation)
                .and_then(|map| buffer_record(Some(*lsn), xid, &change, &map))
                .unwrap_or_else(|e| raise("55000", format!("capture slot {slot}: {e}"), None));
            out.push(record);
        }
    }
    out
}

/// The end of the WAL inserted so far, flushed: every commit record a
/// snapshot taken before this call sees is readable by decoding (a commit
/// with `synchronous_commit = off` is visible before it is flushed).
pub(super) fn flushed_insert_lsn() -> u64 {
    // SAFETY: plain calls into the WAL module of a normal backend.
    unsafe {
        let mut lsn = pg_sys::GetXLogInsertRecPtr();
        // At the start of a page the insert position is past the page's
        // header, which is not written until a record follows: what is
        // inserted ends at the page boundary.
        const SHORT_HEADER: u64 = 24;
        const LONG_HEADER: u64 = 40;
        let segment = pg_sys::wal_segment_size as u64;
        if segment > 0 && lsn % segment == LONG_HEADER {
            lsn -= LONG_HEADER;
        } else if lsn % u64::from(pg_sys::XLOG_BLCKSZ) == SHORT_HEADER {
            lsn -= SHORT_HEADER;
        }
        pg_sys::XLogFlush(lsn);
        lsn
    }
}

/// The committed changes to `source` that snapshot `snapshot` sees and
/// that are not in its buffer yet (committed at or after `drained`, and
/// before `stop` while switching back), as buffer records. Only the
/// refresh holding `token` may ask; see the module comment.
#[pg_extern(volatile, parallel_unsafe)]
fn _wal_pending(
    token: &str,
    source: pg_sys::Oid,
    snapshot: &str,
    drained: Option<&str>,
    stop: Option<&str>,
) -> Vec<String> {
    let valid = TOKEN.with(|t| t.borrow().as_deref() == Some(token)) && !token.is_empty();
    if !valid {
        raise(
            "42501",
            "the changes of a source captured from the WAL are read only by the refresh statements of pg_trickle",
            None,
        );
    }
    let relid = source.to_u32();
    let Some(from) = drained.and_then(parse_lsn) else {
        return Vec::new();
    };
    let snapshot = Snapshot::parse(snapshot)
        .unwrap_or_else(|| raise("22023", format!("not a pg_snapshot: {snapshot}"), None));
    let mut upto = flushed_insert_lsn();
    if let Some(stop) = stop.and_then(parse_lsn) {
        upto = upto.min(stop);
    }
    if upto <= from {
        return Vec::new();
    }
    let Some(capture) = wal_capture::of(relid) else {
        return Vec::new();
    };
    // The slot serves one reader at a time, but this transaction may go on
    // long after the refresh: the lock is held only while peeking.
    let slot = capture.slot.clone();
    crate::spi::in_rolled_back_subtransaction(move || {
        lock_slot(relid);
        decode_slot(relid, &slot, from, upto, |xid| snapshot.sees(xid))
    })
    .unwrap_or_else(|f| raise(&f.sqlstate, f.message, None))
}

/// Create `relid`'s function a refresh reads undrained changes through.
pub(super) fn install_read_function(relid: u32) {
    let func = format!("pgtrickle_changes.wal_changes_{relid}");
    run(
        &format!(
            "CREATE OR REPLACE FUNCTION {func}(token pg_catalog.text, snap pg_catalog.pg_snapshot) \
             RETURNS SETOF pgtrickle_changes.changes_{relid} LANGUAGE sql STABLE SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp AS $pgt$\n\
             SELECT c.* FROM pg_catalog.unnest(pgtrickle._wal_pending($1, {relid}::pg_catalog.oid, $2::pg_catalog.text, \
               (SELECT pg_catalog.max(p.drained_upto) FROM pgtrickle.pgt_wal_progress p \
                WHERE p.source_relid OPERATOR(pg_catalog.=) {relid}::pg_catalog.oid)::pg_catalog.text, \
               (SELECT w.stop_lsn FROM pgtrickle.pgt_wal_capture w \
                WHERE w.source_relid OPERATOR(pg_catalog.=) {relid}::pg_catalog.oid)::pg_catalog.text\
             )::pgtrickle_changes.changes_{relid}[]) c\n$pgt$"
        ),
        &[],
    );
    run(
        &format!(
            "GRANT EXECUTE ON FUNCTION {func}(pg_catalog.text, pg_catalog.pg_snapshot) TO PUBLIC"
        ),
        &[],
    );
}
