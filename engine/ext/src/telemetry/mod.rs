//! OpenTelemetry: a span per refresh, continuing the trace a writer set
//! with `pg_trickle.traceparent`, exported over OTLP without a refresh
//! ever waiting on the network.
//!
//! - [`recorder`]: the executor's side, building one refresh's span.
//! - [`queue`]: the bounded shared-memory queue spans wait in.
//! - [`worker`]: the background worker that drains the queue into the
//!   export thread of `pg_trickle_otlp`.
//!
//! docs/OPENTELEMETRY.md is the operator's guide; the pure rules (trace
//! context, sampling, queue indexes, the span's encoding) are in
//! `pg_trickle_core::telemetry`.

pub mod queue;
pub mod recorder;
pub mod worker;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::gucs;
use crate::security;

/// The SQLSTATE and message of a failed refresh, for its span.
pub fn failure(caught: &pgrx::pg_sys::panic::CaughtError) -> ([u8; 5], String) {
    let (state, message) = crate::spi::failure_of(caught);
    let mut code = *b"XX000";
    if state.len() == 5 {
        code.copy_from_slice(state.as_bytes());
    }
    (code, message)
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

fn timestamp(unix_us: Option<i64>) -> Option<TimestampWithTimeZone> {
    unix_us.and_then(|us| TimestampWithTimeZone::try_from(us - PG_EPOCH_OFFSET_US).ok())
}

/// Export of refresh spans: whether it is on, the queue, and what the
/// exporter did. The endpoint and the last error are shown to superusers
/// and members of pg_monitor only.
#[pg_extern]
#[allow(clippy::type_complexity)]
fn telemetry_status() -> TableIterator<
    'static,
    (
        name!(enabled, bool),
        name!(preloaded, bool),
        name!(worker_running, bool),
        name!(endpoint, Option<String>),
        name!(protocol, String),
        name!(queue_capacity, i64),
        name!(queued, i64),
        name!(spans_queued, i64),
        name!(spans_dropped, i64),
        name!(spans_exported, i64),
        name!(spans_failed, i64),
        name!(failed_requests, i64),
        name!(last_error, Option<String>),
        name!(last_error_at, Option<TimestampWithTimeZone>),
        name!(last_export_at, Option<TimestampWithTimeZone>),
    ),
> {
    let me = security::caller();
    let privileged = security::is_superuser(me) || security::is_monitor(me);
    let q = queue::status();
    let s = q.clone().unwrap_or_default();
    TableIterator::once((
        gucs::OTEL_ENABLED.get(),
        q.is_some(),
        s.worker_pid != 0,
        privileged.then(|| gucs::text(&gucs::OTEL_ENDPOINT)),
        gucs::text(&gucs::OTEL_PROTOCOL),
        i64::from(s.capacity),
        i64::from(s.queued),
        s.accepted as i64,
        s.dropped as i64,
        s.export.exported_spans as i64,
        s.export.failed_spans as i64,
        s.export.failed_requests as i64,
        s.export.last_error.filter(|_| privileged),
        timestamp(s.export.last_error_at_us),
        timestamp(s.export.last_ok_at_us),
    ))
}
