//! Export of pg_trickle's refresh spans over OTLP.
//!
//! A PostgreSQL backend is single-threaded and no other thread may call
//! into it, so the extension's telemetry worker hands spans, as plain
//! [`SpanRecord`](pg_trickle_core::telemetry::span::SpanRecord) values, to
//! a thread started here ([`exporter`]) that converts them to
//! OpenTelemetry spans ([`convert`]) and posts them with the
//! `opentelemetry-otlp` exporter. Nothing here touches PostgreSQL, so it
//! is tested with `cargo test` against sockets of its own.

pub mod convert;
pub mod exporter;

pub use exporter::{Config, ExportThread, Protocol, Stats};
