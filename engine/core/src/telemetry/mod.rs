//! Tracing a change from the transaction that wrote it to the refresh that
//! applied it (OpenTelemetry), as pure code: the W3C `traceparent` a
//! session sets and capture stores ([`traceparent`]), the sampling
//! decision a refresh makes for its span ([`sampling`]), and the bounded
//! queue to the exporter with its rate-limited error log ([`ring`]), with
//! the span a refresh leaves in that queue ([`span`]). The
//! exporting side lives in the extension; these rules are what it and the
//! tests agree on.

pub mod ring;
pub mod sampling;
pub mod span;
pub mod traceparent;
