//! The export thread against collectors of this test's own making on
//! loopback: one that accepts, one that answers 503, one that never
//! answers, and a closed port. Each says what the thread counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use pg_trickle_core::telemetry::span::{Phase, PhaseKind, SpanRecord};
use pg_trickle_otlp::{Config, ExportThread, Protocol, Stats};
use prost::Message;

#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Never,
}

/// A collector on a free loopback port; bodies received come out of the channel.
fn collector(answer: Answer) -> (u16, Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            let body = read_request(&stream);
            let _ = tx.send(body);
            match answer {
                Answer::Status(code) => {
                    let mut s = stream;
                    let _ = write!(
                        s,
                        "HTTP/1.1 {code} X\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
                    );
                }
                Answer::Never => held.push(stream),
            }
        }
    });
    (port, rx)
}

fn read_request(stream: &TcpStream) -> Vec<u8> {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    body
}

fn record(n: u8) -> SpanRecord {
    SpanRecord {
        trace_id: [n; 16],
        span_id: [n; 8],
        parent_span_id: [0xaa; 8],
        flags: 1,
        start_ns: 1_700_000_000_000_000_000,
        end_ns: 1_700_000_000_001_000_000,
        stream_table: "public.totals".into(),
        mode: "FULL".into(),
        initiator: "manual".into(),
        changes_in: 0,
        rows_inserted: 4,
        rows_deleted: 4,
        sqlstate: None,
        message: String::new(),
        phases: vec![Phase {
            kind: PhaseKind::FullRecompute,
            span_id: [n.wrapping_add(1); 8],
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_001_000_000,
        }],
        links: vec![],
        links_dropped: 0,
    }
}

fn config(port: u16, timeout_ms: u64) -> Config {
    Config {
        endpoint: format!("http://127.0.0.1:{port}/v1/traces"),
        protocol: Protocol::HttpProtobuf,
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// Submit one batch and wait (bounded) for the thread to finish it.
fn submit_and_wait(thread: &ExportThread, config: Config, batch: Vec<SpanRecord>) -> Stats {
    thread
        .try_submit(config, batch)
        .expect("the thread was idle");
    let deadline = Instant::now() + Duration::from_secs(30);
    while thread.busy() {
        assert!(Instant::now() < deadline, "the export never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    thread.stats()
}

#[test]
fn an_accepting_collector_gets_each_refresh_and_its_phases_with_their_ids() {
    let (port, bodies) = collector(Answer::Status(200));
    let thread = ExportThread::spawn().unwrap();
    let stats = submit_and_wait(&thread, config(port, 5_000), vec![record(1), record(2)]);
    assert_eq!(
        (stats.exported_spans, stats.failed_spans),
        (4, 0),
        "{stats:?}"
    );
    assert!(stats.last_ok_at.is_some() && stats.last_error.is_none());
    let body = bodies.recv_timeout(Duration::from_secs(5)).unwrap();
    let request =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
            &body[..],
        )
        .unwrap();
    let spans: Vec<_> = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    assert_eq!(spans.len(), 4);
    let refresh = spans
        .iter()
        .find(|s| s.name == "pg_trickle.refresh" && s.trace_id == vec![1; 16])
        .unwrap();
    assert_eq!(refresh.span_id, vec![1; 8]);
    assert_eq!(refresh.parent_span_id, vec![0xaa; 8]);
    let child = spans
        .iter()
        .find(|s| s.name == "pg_trickle.refresh.full_recompute" && s.trace_id == vec![1; 16])
        .unwrap();
    assert_eq!(child.parent_span_id, vec![1; 8]);
}

#[test]
fn an_error_answer_is_counted_with_its_status_and_the_next_batch_still_goes() {
    let (port, _bodies) = collector(Answer::Status(503));
    let thread = ExportThread::spawn().unwrap();
    let stats = submit_and_wait(&thread, config(port, 5_000), vec![record(1)]);
    assert_eq!(
        (stats.failed_spans, stats.failed_requests),
        (2, 1),
        "{stats:?}"
    );
    let error = stats.last_error.unwrap();
    assert!(
        error.contains("503") && error.contains(&port.to_string()),
        "{error}"
    );
    let stats = submit_and_wait(&thread, config(port, 5_000), vec![record(2)]);
    assert_eq!(
        stats.failed_requests, 2,
        "one request per batch, no retries"
    );
}

#[test]
fn a_closed_port_fails_at_once_and_a_silent_collector_after_the_timeout_while_submit_never_blocks()
{
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let thread = ExportThread::spawn().unwrap();
    let stats = submit_and_wait(&thread, config(closed, 5_000), vec![record(1)]);
    assert_eq!(stats.failed_requests, 1, "{stats:?}");
    assert!(stats.last_error.unwrap().contains("network error"));

    let (silent, _bodies) = collector(Answer::Never);
    thread
        .try_submit(config(silent, 1_500), vec![record(2)])
        .unwrap();
    // While that request hangs, the next batch is handed back at once.
    let given_back = thread.try_submit(config(silent, 1_500), vec![record(3)]);
    assert_eq!(given_back.map_err(|b| b.len()), Err(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    while thread.busy() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = thread.stats();
    assert_eq!(stats.failed_requests, 2, "{stats:?}");
    assert!(
        stats
            .last_error
            .as_deref()
            .unwrap()
            .contains("no answer within 1500 ms"),
        "{stats:?}"
    );
}

#[test]
fn protocol_names_are_the_opentelemetry_ones_and_nothing_else() {
    assert_eq!(Protocol::parse("http/protobuf"), Ok(Protocol::HttpProtobuf));
    assert_eq!(Protocol::parse("http/json"), Ok(Protocol::HttpJson));
    let e = Protocol::parse("grpc").unwrap_err();
    assert!(e.to_string().contains("grpc"));
}
