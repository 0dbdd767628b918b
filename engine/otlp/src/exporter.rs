//! The export thread: takes one batch of spans at a time from the
//! telemetry worker and posts it, so that a slow or dead collector holds
//! up this thread alone. The hand-over never blocks the caller: while a
//! batch is on its way, [`ExportThread::try_submit`] gives the next one
//! back, and the spans wait in the caller's queue. What happened is
//! counted in [`Stats`], which the caller copies into its status.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SpanExporter as _;
use opentelemetry_sdk::Resource;
use pg_trickle_core::telemetry::span::SpanRecord;
use thiserror::Error;

use crate::convert::to_span_data;

/// How spans are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over HTTP, protobuf bodies.
    HttpProtobuf,
    /// OTLP over HTTP, JSON bodies.
    HttpJson,
}

/// A protocol name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown OTLP protocol {0:?}: use http/protobuf or http/json (gRPC is not built in)")]
pub struct UnknownProtocol(pub String);

impl Protocol {
    /// Read `http/protobuf` or `http/json` (the names OpenTelemetry's
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` uses).
    pub fn parse(name: &str) -> Result<Protocol, UnknownProtocol> {
        match name {
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            other => Err(UnknownProtocol(other.to_string())),
        }
    }
}

/// Where and how to export; a change rebuilds the exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The OTLP traces URL, `/v1/traces` included.
    pub endpoint: String,
    /// Encoding.
    pub protocol: Protocol,
    /// Longest one request may take.
    pub timeout: Duration,
}

/// What the export thread has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Spans the collector accepted (children included).
    pub exported_spans: u64,
    /// Spans lost to failed requests (children included).
    pub failed_spans: u64,
    /// Requests that failed.
    pub failed_requests: u64,
    /// The last failure, as the exporter told it.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<SystemTime>,
    /// When a request last succeeded.
    pub last_ok_at: Option<SystemTime>,
}

struct Shared {
    busy: AtomicBool,
    stats: Mutex<Stats>,
}

/// The handle to the export thread.
pub struct ExportThread {
    to_thread: SyncSender<(Config, Vec<SpanRecord>)>,
    shared: Arc<Shared>,
}

impl ExportThread {
    /// Start the thread. Call it where signals are blocked if the caller's
    /// process handles signals itself: the thread inherits the mask.
    pub fn spawn() -> std::io::Result<ExportThread> {
        let (to_thread, from_caller) = sync_channel::<(Config, Vec<SpanRecord>)>(1);
        let shared = Arc::new(Shared {
            busy: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
        });
        let mine = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("pg_trickle otlp".into())
            .spawn(move || {
                let mut current: Option<(Config, opentelemetry_otlp::SpanExporter)> = None;
                while let Ok((config, batch)) = from_caller.recv() {
                    let n = batch.iter().map(SpanRecord::span_count).sum::<u64>();
                    // A panic in the exporter costs this batch, never the
                    // thread: the caller would otherwise wait on it forever.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let spans: Vec<_> = batch.iter().flat_map(to_span_data).collect();
                        let started = Instant::now();
                        exporter_for(&mut current, &config)
                            .and_then(|e| export(e, spans, config.timeout, started))
                    }))
                    .unwrap_or_else(|panic| {
                        current = None;
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(format!("the exporter panicked: {what}"))
                    });
                    let mut stats = mine.stats.lock().unwrap_or_else(|p| p.into_inner());
                    match result {
                        Ok(()) => {
                            stats.exported_spans += n;
                            stats.last_ok_at = Some(SystemTime::now());
                        }
                        Err(e) => {
                            stats.failed_spans += n;
                            stats.failed_requests += 1;
                            stats.last_error = Some(format!("{}: {e}", config.endpoint));
                            stats.last_error_at = Some(SystemTime::now());
                        }
                    }
                    drop(stats);
                    mine.busy.store(false, Ordering::Release);
                }
            })?;
        Ok(ExportThread { to_thread, shared })
    }

    /// Hand a batch over, or give it back while the previous one is still
    /// on its way (the caller keeps it queued). Never blocks.
    pub fn try_submit(
        &self,
        config: Config,
        batch: Vec<SpanRecord>,
    ) -> Result<(), Vec<SpanRecord>> {
        if self.busy() {
            return Err(batch);
        }
        self.shared.busy.store(true, Ordering::Release);
        self.to_thread.try_send((config, batch)).map_err(|e| {
            self.shared.busy.store(false, Ordering::Release);
            match e {
                std::sync::mpsc::TrySendError::Full((_, b))
                | std::sync::mpsc::TrySendError::Disconnected((_, b)) => b,
            }
        })
    }

    /// Whether a batch is on its way.
    pub fn busy(&self) -> bool {
        self.shared.busy.load(Ordering::Acquire)
    }

    /// What has been done so far.
    pub fn stats(&self) -> Stats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn exporter_for<'a>(
    current: &'a mut Option<(Config, opentelemetry_otlp::SpanExporter)>,
    config: &Config,
) -> Result<&'a opentelemetry_otlp::SpanExporter, String> {
    if current.as_ref().map(|(c, _)| c) != Some(config) {
        *current = None;
        // No proxy: a collector on loopback must be reached directly, whatever
        // the server's environment says. No retries: a failed batch is
        // counted and the next one tried, so one request is one timeout.
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(config.timeout)
            .build()
            .map_err(|e| format!("building the HTTP client failed: {e}"))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .with_protocol(match config.protocol {
                Protocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
                Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
            })
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
            .map_err(|e| format!("building the OTLP exporter failed: {e}"))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name("pg_trickle")
                .build(),
        );
        *current = Some((config.clone(), exporter));
    }
    Ok(&current.as_ref().expect("just set").1)
}

fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    spans: Vec<opentelemetry_sdk::trace::SpanData>,
    timeout: Duration,
    started: Instant,
) -> Result<(), String> {
    futures_executor::block_on(exporter.export(spans)).map_err(|e| {
        // The exporter reports every connection failure as "network
        // error"; say whether it was the collector not answering in time.
        let waited = started.elapsed();
        if waited + Duration::from_millis(50) >= timeout {
            format!("{e} (no answer within {} ms)", timeout.as_millis())
        } else {
            e.to_string()
        }
    })
}
