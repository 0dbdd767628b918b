//! Every `pg_trickle.*` setting, declared once.
//!
//! The extension registers its GUCs from [`SETTINGS`]; documentation is
//! generated from the same table.

/// The type and bounds of a setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SettingKind {
    /// A boolean with its default.
    Bool {
        /// Default value.
        default: bool,
    },
    /// An integer with its default and bounds.
    Int {
        /// Default value.
        default: i32,
        /// Smallest allowed value.
        min: i32,
        /// Largest allowed value.
        max: i32,
    },
    /// A floating-point number with its default and bounds.
    Real {
        /// Default value.
        default: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// A string with its default.
    Text {
        /// Default value.
        default: &'static str,
    },
}

/// When a change to a setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingContext {
    /// Needs a server restart (postmaster).
    Restart,
    /// Takes effect on reload (sighup).
    Reload,
    /// Any session may change it (userset).
    Session,
}

/// One setting's metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// Name without the `pg_trickle.` prefix.
    pub name: &'static str,
    /// Type, default, bounds.
    pub kind: SettingKind,
    /// Unit shown by `SHOW` (PostgreSQL unit string) or empty.
    pub unit: &'static str,
    /// When a change takes effect.
    pub context: SettingContext,
    /// Documentation category.
    pub category: &'static str,
    /// One-paragraph description: exactly what the setting does.
    pub description: &'static str,
    /// Experimental settings are shown as such everywhere.
    pub experimental: bool,
}

/// All settings.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "enabled",
        kind: SettingKind::Bool { default: true },
        unit: "",
        context: SettingContext::Reload,
        category: "Scheduler",
        description: "When off, the scheduler background worker refreshes nothing; manual refreshes still work.",
        experimental: false,
    },
    Setting {
        name: "scheduler_interval_ms",
        kind: SettingKind::Int { default: 1000, min: 50, max: 600_000 },
        unit: "ms",
        context: SettingContext::Reload,
        category: "Scheduler",
        description: "How often the scheduler wakes to look for stream tables whose schedule is due. With pg_trickle.event_driven_wake on it also wakes when a change to a captured source commits; this interval is then the longest it sleeps.",
        experimental: false,
    },
    Setting {
        name: "event_driven_wake",
        kind: SettingKind::Bool { default: true },
        unit: "",
        context: SettingContext::Reload,
        category: "Scheduler",
        description: "When on, a committed transaction that changed a captured source wakes the scheduler at once (through shared memory: a commit callback sets the scheduler's latch), so a due stream table need not wait for the poll interval. Rolled-back transactions do not wake it. When off, the scheduler only polls every pg_trickle.scheduler_interval_ms. Needs pg_trickle in shared_preload_libraries.",
        experimental: false,
    },
    Setting {
        name: "wake_min_interval_ms",
        kind: SettingKind::Int { default: 50, min: 0, max: 60_000 },
        unit: "ms",
        context: SettingContext::Reload,
        category: "Scheduler",
        description: "The shortest time between two scheduler runs: commit wakes that come sooner after the last run start the next one this long after it, so a stream of small committed writes costs the scheduler at most one run per interval instead of one per commit. 0 runs at every wake.",
        experimental: false,
    },
    Setting {
        name: "database",
        kind: SettingKind::Text { default: "postgres" },
        unit: "",
        context: SettingContext::Restart,
        category: "Scheduler",
        description: "The database the scheduler background worker connects to. Stream tables in other databases refresh only manually.",
        experimental: false,
    },
    Setting {
        name: "enforce_backpressure",
        kind: SettingKind::Bool { default: false },
        unit: "",
        context: SettingContext::Reload,
        category: "Backpressure",
        description: "When on, a source whose unconsumed change backlog reaches a high watermark (rows, kilobytes or age) is put under backpressure until the backlog falls below the matching low watermark; pg_trickle.backpressure_action says what happens to writes meanwhile. The state is re-evaluated on every scheduler tick, after every refresh and by pgtrickle.evaluate_backpressure().",
        experimental: false,
    },
    Setting {
        name: "backpressure_action",
        kind: SettingKind::Text { default: "reject" },
        unit: "",
        context: SettingContext::Reload,
        category: "Backpressure",
        description: "What engaged backpressure does to a statement that writes to the lagging source: 'reject' fails the statement with SQLSTATE 53400 (nothing already captured is lost), 'warn' lets it through with a WARNING.",
        experimental: false,
    },
    Setting {
        name: "backpressure_high_rows",
        kind: SettingKind::Int { default: 1_000_000, min: 0, max: i32::MAX },
        unit: "",
        context: SettingContext::Reload,
        category: "Backpressure",
        description: "Backpressure engages when a source has at least this many change rows its slowest reader has not consumed (0 disables this signal).",
        experimental: false,
    },
    Setting {
        name: "backpressure_low_rows",
        kind: SettingKind::Int { default: 500_000, min: 0, max: i32::MAX },
        unit: "",
        context: SettingContext::Reload,
        category: "Backpressure",
        description: "Engaged backpressure releases only when the unconsumed rows are below this (and every other enabled signal is below its low watermark).",
        experimental: false,
    },
    Setting {
        name: "backpressure_high_kb",
        kind: SettingKind::Int { default: 0, min: 0, max: i32::MAX },
        unit: "kB",
        context: SettingContext::Reload,
        category: "Backpressure",
        description: "Backpressure engages when a source's unconsumed change rows take at least this many kilobytes (0 disables this signal).",
        experimental: false,
    },
    Setting {
        name: "backpressure_low_kb",
        kind: SettingKind::Int { default: 0, min: 0, max: i32::MAX },
        unit: "kB",
        context: SettingContext::Reload,
        category: "Backpressure",
        description: "Release watermark for pg_trickle.backpressure_high_kb.",
        experimental: false,
    },
    Setting {
        name: "backpressure_high_age_s",
        kind: SettingKind::Int { default: 0, min: 0, max: i32::MAX },
        unit: "s",
        context: SettingContext::Reload,
        category: "Backpressure",
        description: "Backpressure engages when a source's oldest unconsumed change is at least this old (0 disables this signal).",
        experimental: false,
    },
    Setting {
        name: "backpressure_low_age_s",
        kind: SettingKind::Int { default: 0, min: 0, max: i32::MAX },
        unit: "s",
        context: SettingContext::Reload,
        category: "Backpressure",
        description: "Release watermark for pg_trickle.backpressure_high_age_s.",
        experimental: false,
    },
    Setting {
        name: "max_held_backlog_rows",
        kind: SettingKind::Int { default: 0, min: 0, max: i32::MAX },
        unit: "",
        context: SettingContext::Reload,
        category: "Hold and discard",
        description: "Cap on the change rows a held stream table may leave unconsumed on one source (0: no cap). At the cap, statements writing to that source fail with SQLSTATE 53400 until the stream table is resumed and refreshed or its changes are discarded; nothing captured is lost. Checked when backpressure is evaluated.",
        experimental: false,
    },
    Setting {
        name: "adaptive_auto",
        kind: SettingKind::Bool { default: true },
        unit: "",
        context: SettingContext::Session,
        category: "Refresh",
        description: "When on, each refresh of an AUTO stream table whose query runs DIFFERENTIAL first weighs its pending changes: with at least pg_trickle.adaptive_min_changes of them it recomputes (FULL) when that is estimated to be cheaper, from what earlier refreshes of the stream table took (or, until it has measured both kinds, when they exceed pg_trickle.adaptive_full_fraction of its sources' rows); with fewer, when its differential refreshes of fewer changes have taken longer than its FULL refreshes, and those at least 10 ms. A FULL so chosen, and a choice made from estimates, give their reason in the refresh history. When off, AUTO always applies the changes. DIFFERENTIAL and FULL stream tables are never affected. Scheduled refreshes use the scheduler's value (the server's or the database's), a SET only the session's manual refreshes.",
        experimental: false,
    },
    Setting {
        name: "adaptive_min_changes",
        kind: SettingKind::Int { default: 1000, min: 1, max: i32::MAX },
        unit: "",
        context: SettingContext::Session,
        category: "Refresh",
        description: "Pending changes below which an AUTO stream table refreshes DIFFERENTIAL without weighing its time per change (a smaller backlog is counted only up to this many), unless its differential refreshes of fewer changes have taken longer than its FULL refreshes, and those at least 10 ms. Differential refreshes of fewer changes measure the fixed part of a differential refresh's time, larger ones its time per change.",
        experimental: false,
    },
    Setting {
        name: "adaptive_full_fraction",
        kind: SettingKind::Real { default: 0.02, min: 0.0, max: 1.0 },
        unit: "",
        context: SettingContext::Session,
        category: "Refresh",
        description: "Until an AUTO stream table has measured both a FULL refresh and a DIFFERENTIAL refresh of at least pg_trickle.adaptive_min_changes changes, it recomputes when its pending changes exceed this fraction of its sources' rows (as the planner estimates them, pg_class.reltuples, summed over partitions and children; with no estimate it applies the changes).",
        experimental: false,
    },
    Setting {
        name: "remote_lease_seconds",
        kind: SettingKind::Int { default: 30, min: 1, max: 86_400 },
        unit: "s",
        context: SettingContext::Reload,
        category: "Capture on other nodes",
        description: "How long the lease on a node's capture slot lasts; every drain on a schedule renews it in the transaction that writes its changes. Another holder (a second scheduler, or pgtrickle.drain_remote_capture() in a session) takes it over only once it has lapsed.",
        experimental: false,
    },
    Setting {
        name: "remote_failed_ticks_warning",
        kind: SettingKind::Int { default: 5, min: 1, max: 100_000 },
        unit: "",
        context: SettingContext::Reload,
        category: "Capture on other nodes",
        description: "After this many drains of a node's capture slot fail in a row, each further failure is logged as a WARNING (before, only the status shows it). A failing node is retried with backoff (2, 4, ... up to 60 seconds) while the other nodes keep flowing.",
        experimental: false,
    },
    Setting {
        name: "traceparent",
        kind: SettingKind::Text { default: "" },
        unit: "",
        context: SettingContext::Session,
        category: "OpenTelemetry",
        description: "The W3C trace context (00-<32 hex trace id>-<16 hex span id>-<2 hex flags>) of what the session is doing. Trigger capture stores it with every change the session writes, and the refresh that consumes the change continues that trace. A malformed value is refused by SET, naming what is wrong. Empty: no trace context.",
        experimental: false,
    },
    Setting {
        name: "otel_enabled",
        kind: SettingKind::Bool { default: false },
        unit: "",
        context: SettingContext::Reload,
        category: "OpenTelemetry",
        description: "When on, every refresh records a span (with child spans for its phases) into a bounded shared-memory queue, and the telemetry background worker exports the queue over OTLP to pg_trickle.otel_endpoint. A refresh never waits on the network. When off, refreshes record nothing. Needs shared_preload_libraries = 'pg_trickle'.",
        experimental: false,
    },
    Setting {
        name: "otel_endpoint",
        kind: SettingKind::Text { default: "http://127.0.0.1:4318/v1/traces" },
        unit: "",
        context: SettingContext::Reload,
        category: "OpenTelemetry",
        description: "The OTLP traces URL spans are posted to (for OTLP over HTTP, the collector's port 4318 and path /v1/traces). Plain http only. Shown to superusers and members of pg_read_all_settings only, since a URL may carry credentials.",
        experimental: false,
    },
    Setting {
        name: "otel_protocol",
        kind: SettingKind::Text { default: "http/protobuf" },
        unit: "",
        context: SettingContext::Reload,
        category: "OpenTelemetry",
        description: "How spans are encoded: http/protobuf (OTLP over HTTP with protobuf bodies, what every collector accepts) or http/json. Any other value is refused by SET and in the configuration file.",
        experimental: false,
    },
    Setting {
        name: "otel_timeout_ms",
        kind: SettingKind::Int { default: 2000, min: 100, max: 60_000 },
        unit: "ms",
        context: SettingContext::Reload,
        category: "OpenTelemetry",
        description: "How long one export request may take before it counts as failed. While a request is outstanding, new spans wait in the queue; when the queue is full they are dropped and counted.",
        experimental: false,
    },
    Setting {
        name: "otel_queue_size",
        kind: SettingKind::Int { default: 1024, min: 16, max: 65_536 },
        unit: "",
        context: SettingContext::Restart,
        category: "OpenTelemetry",
        description: "Spans the shared-memory queue between refreshes and the exporter holds (1 kB of shared memory each). A span that finds the queue full is dropped and counted in pgtrickle.telemetry_status().",
        experimental: false,
    },
    Setting {
        name: "otel_sampling_ratio",
        kind: SettingKind::Real { default: 1.0, min: 0.0, max: 1.0 },
        unit: "",
        context: SettingContext::Reload,
        category: "OpenTelemetry",
        description: "Fraction of refreshes that start their own trace which are exported, decided by trace id. A refresh that continues a writer's trace follows the writer's sampled flag instead.",
        experimental: false,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_defaults_in_bounds() {
        let mut names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
        for s in SETTINGS {
            if let SettingKind::Int { default, min, max } = s.kind {
                assert!(min <= default && default <= max, "{}", s.name);
            }
            if let SettingKind::Real { default, min, max } = s.kind {
                assert!(min <= default && default <= max, "{}", s.name);
            }
            assert!(["", "ms", "s", "kB"].contains(&s.unit), "{}", s.name);
            assert!(!s.description.is_empty());
        }
    }
}
