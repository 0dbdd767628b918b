//! A refresh span as OpenTelemetry spans: the refresh itself, a child per
//! phase, and links to the traces of the changes it consumed. Attribute
//! names are what docs/OPENTELEMETRY.md lists.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use pg_trickle_core::telemetry::span::{PhaseKind, SpanRecord};

/// The refresh span's name.
pub const REFRESH_SPAN: &str = "pg_trickle.refresh";

/// The attribute keys of the refresh span (the phase children carry
/// [`attr::STREAM_TABLE`] alone).
pub mod attr {
    /// The stream table, schema-qualified.
    pub const STREAM_TABLE: &str = "pg_trickle.stream_table";
    /// `manual`, `scheduler` or `create`.
    pub const INITIATOR: &str = "pg_trickle.initiator";
    /// Change rows consumed.
    pub const CHANGES_IN: &str = "pg_trickle.changes_in";
    /// Rows the refresh inserted.
    pub const ROWS_INSERTED: &str = "pg_trickle.rows_inserted";
    /// Rows the refresh deleted.
    pub const ROWS_DELETED: &str = "pg_trickle.rows_deleted";
    /// The mode that ran.
    pub const MODE: &str = "pg_trickle.mode";
    /// Links left out beyond the first eight.
    pub const LINKS_DROPPED: &str = "pg_trickle.links_dropped";
}

/// Every `pg_trickle.*` name a span carries (span names and attribute
/// keys), so that documentation naming them can be checked.
pub const EXPORTED_NAMES: &[&str] = &[
    REFRESH_SPAN,
    PhaseKind::Plan.span_name(),
    PhaseKind::DeltaApply.span_name(),
    PhaseKind::FullRecompute.span_name(),
    PhaseKind::Record.span_name(),
    attr::STREAM_TABLE,
    attr::INITIATOR,
    attr::CHANGES_IN,
    attr::ROWS_INSERTED,
    attr::ROWS_DELETED,
    attr::MODE,
    attr::LINKS_DROPPED,
];

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("pg_trickle")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn context(trace_id: [u8; 16], span_id: [u8; 8], flags: u8, remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::new(flags),
        remote,
        TraceState::default(),
    )
}

/// A span with `parent` (its id, and whether it is remote: another
/// process's span), all zeros for a root span.
fn span(
    ctx: SpanContext,
    parent: ([u8; 8], bool),
    name: &'static str,
    times: (u64, u64),
    attributes: Vec<KeyValue>,
    links: SpanLinks,
    status: Status,
) -> SpanData {
    SpanData {
        span_context: ctx,
        parent_span_id: SpanId::from_bytes(parent.0),
        parent_span_is_remote: parent.1,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed(name),
        start_time: at(times.0),
        end_time: at(times.1.max(times.0)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links,
        status,
        instrumentation_scope: scope(),
    }
}

/// The spans of one refresh: the refresh span first, then one child per phase.
pub fn to_span_data(rec: &SpanRecord) -> Vec<SpanData> {
    let mut attributes = vec![
        KeyValue::new("db.system.name", "postgresql"),
        KeyValue::new(attr::STREAM_TABLE, rec.stream_table.clone()),
        KeyValue::new(attr::INITIATOR, rec.initiator.clone()),
        KeyValue::new(attr::CHANGES_IN, rec.changes_in),
        KeyValue::new(attr::ROWS_INSERTED, rec.rows_inserted),
        KeyValue::new(attr::ROWS_DELETED, rec.rows_deleted),
    ];
    if !rec.mode.is_empty() {
        attributes.push(KeyValue::new(attr::MODE, rec.mode.clone()));
    }
    if rec.links_dropped > 0 {
        attributes.push(KeyValue::new(
            attr::LINKS_DROPPED,
            i64::from(rec.links_dropped),
        ));
    }
    let status = match rec.sqlstate {
        Some(state) => {
            let state = String::from_utf8_lossy(&state).into_owned();
            attributes.push(KeyValue::new("db.response.status_code", state.clone()));
            Status::error(format!("{state}: {}", rec.message))
        }
        None => Status::Unset,
    };
    let mut links = SpanLinks::default();
    links.links = rec
        .links
        .iter()
        .map(|l| Link::with_context(context(l.trace_id, l.span_id, l.flags, true)))
        .collect();
    let has_parent = rec.parent_span_id != [0; 8];
    let mut out = vec![span(
        context(rec.trace_id, rec.span_id, rec.flags, false),
        (rec.parent_span_id, has_parent),
        REFRESH_SPAN,
        (rec.start_ns, rec.end_ns),
        attributes,
        links,
        status,
    )];
    for p in &rec.phases {
        out.push(span(
            context(rec.trace_id, p.span_id, rec.flags, false),
            (rec.span_id, false),
            p.kind.span_name(),
            (p.start_ns, p.end_ns),
            vec![KeyValue::new(attr::STREAM_TABLE, rec.stream_table.clone())],
            SpanLinks::default(),
            Status::Unset,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pg_trickle_core::telemetry::span::{Link as RecLink, Phase, PhaseKind};

    pub(crate) fn sample() -> SpanRecord {
        SpanRecord {
            trace_id: [7; 16],
            span_id: [1; 8],
            parent_span_id: [2; 8],
            flags: 1,
            start_ns: 1_000,
            end_ns: 5_000,
            stream_table: "public.totals".into(),
            mode: "DIFFERENTIAL".into(),
            initiator: "manual".into(),
            changes_in: 3,
            rows_inserted: 2,
            rows_deleted: 1,
            sqlstate: None,
            message: String::new(),
            phases: vec![
                Phase {
                    kind: PhaseKind::Plan,
                    span_id: [3; 8],
                    start_ns: 1_000,
                    end_ns: 2_000,
                },
                Phase {
                    kind: PhaseKind::DeltaApply,
                    span_id: [4; 8],
                    start_ns: 2_000,
                    end_ns: 4_000,
                },
            ],
            links: vec![RecLink {
                trace_id: [9; 16],
                span_id: [8; 8],
                flags: 1,
            }],
            links_dropped: 0,
        }
    }

    #[test]
    fn a_refresh_becomes_its_span_and_one_child_per_phase() {
        let spans = to_span_data(&sample());
        assert_eq!(spans.len(), 3);
        let root = &spans[0];
        assert_eq!(root.name, REFRESH_SPAN);
        assert_eq!(root.span_context.trace_id(), TraceId::from_bytes([7; 16]));
        assert_eq!(root.parent_span_id, SpanId::from_bytes([2; 8]));
        assert!(root.parent_span_is_remote);
        assert_eq!(root.links.links.len(), 1);
        assert_eq!(root.status, Status::Unset);
        assert!(root
            .attributes
            .contains(&KeyValue::new("pg_trickle.mode", "DIFFERENTIAL")));
        for s in &spans {
            assert!(EXPORTED_NAMES.contains(&s.name.as_ref()), "{}", s.name);
            for kv in &s.attributes {
                let key = kv.key.as_str();
                assert!(
                    !key.starts_with("pg_trickle.") || EXPORTED_NAMES.contains(&key),
                    "{key} is exported but not listed"
                );
            }
        }
        assert_eq!(spans[1].name, "pg_trickle.refresh.plan");
        assert_eq!(spans[2].name, "pg_trickle.refresh.delta_apply");
        for child in &spans[1..] {
            assert_eq!(child.parent_span_id, SpanId::from_bytes([1; 8]));
            assert_eq!(child.span_context.trace_id(), root.span_context.trace_id());
        }
    }

    #[test]
    fn a_failed_refresh_carries_its_sqlstate_and_a_root_span_no_parent() {
        let mut rec = sample();
        rec.sqlstate = Some(*b"57014");
        rec.message = "canceling statement due to user request".into();
        rec.parent_span_id = [0; 8];
        let root = &to_span_data(&rec)[0];
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert!(!root.parent_span_is_remote);
        assert!(root
            .attributes
            .contains(&KeyValue::new("db.response.status_code", "57014")));
        assert_eq!(
            root.status,
            Status::error("57014: canceling statement due to user request")
        );
    }
}
