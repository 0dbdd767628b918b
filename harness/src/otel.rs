//! OTLP collectors for the telemetry tests and benchmark: a real receiver
//! (`oteltap`, from PyPI, which `ci/setup.sh` installs into
//! `target/otel-venv`) whose received spans are read back from its
//! output, and collectors that misbehave on purpose: one that accepts a
//! connection and never answers, one that answers every request with an
//! error status, and a port nothing listens on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `oteltap` executable: `$PGT_OTELTAP`, else the one `ci/setup.sh`
/// installs.
pub fn oteltap() -> PathBuf {
    std::env::var_os("PGT_OTELTAP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/otel-venv/bin/oteltap")
        })
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// The OTLP traces URL on loopback `port`.
pub fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}/v1/traces")
}

/// A running `oteltap` and the spans it received, as OTLP JSON objects
/// (hex ids, `parentSpanId` empty for a root span).
pub struct Receiver {
    /// The port it listens on.
    pub port: u16,
    child: Child,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Start a receiver on `port` (0: a free one) and wait until it listens.
    pub fn start(port: u16) -> Result<Receiver, String> {
        let exe = oteltap();
        if !exe.exists() {
            return Err(format!(
                "the OTLP receiver {} is not installed: run ci/setup.sh",
                exe.display()
            ));
        }
        let port = if port == 0 { free_port() } else { port };
        let mut child = Command::new(&exe)
            .arg("--port")
            .arg(port.to_string())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
        let listening = Arc::new(AtomicBool::new(false));
        {
            let spans = spans.clone();
            let listening = listening.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if line.starts_with("Listening for OTLP") {
                        listening.store(true, Ordering::SeqCst);
                    } else if line.starts_with('{') {
                        if let Ok(v) = serde_json::from_str::<Value>(&line) {
                            spans.lock().unwrap().push(v);
                        }
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listening.load(Ordering::SeqCst) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("oteltap on port {port} exited at start: {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("oteltap on port {port} did not listen within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Receiver { port, child, spans })
    }

    /// The OTLP traces URL.
    pub fn endpoint(&self) -> String {
        endpoint(self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }

    /// Wait (up to `timeout`) for a received span that `pred` accepts.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| pred(s)) {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the receiver (its port is free again).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Set `settings` with `ALTER SYSTEM` (one statement each: it may not run
/// in a transaction block), reload, wait until this session sees the first
/// of them, then a little more than the telemetry worker's longest nap
/// (one second), so that it exports with them too.
pub fn reload_settings(
    db: &mut postgres::Client,
    settings: &[(&str, String)],
) -> Result<(), String> {
    let fail = |e: postgres::Error| crate::cluster::describe(&e);
    for (name, value) in settings {
        db.batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
            .map_err(fail)?;
    }
    db.batch_execute("SELECT pg_reload_conf()").map_err(fail)?;
    let Some((name, value)) = settings.first() else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown: String = db
            .query_one(&format!("SHOW {name}"), &[])
            .map_err(fail)?
            .get(0);
        if &shown == value {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} is {shown}, not {value}, 10 s after the reload"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1200));
    Ok(())
}

/// A span attribute's value as text (OTLP JSON gives 64-bit integers as strings).
pub fn attribute(span: &Value, key: &str) -> Option<String> {
    span["attributes"].as_array()?.iter().find_map(|a| {
        (a["key"] == key).then(|| {
            let v = &a["value"];
            v["stringValue"]
                .as_str()
                .map(str::to_string)
                .or_else(|| v["intValue"].as_str().map(str::to_string))
                .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
                .unwrap_or_default()
        })
    })
}

/// How a misbehaving collector answers.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// Accept, read the request, never answer (holds the connection).
    Silent,
    /// Answer every request with this HTTP status.
    Status(u16),
}

/// A collector that misbehaves; it stops with the test process.
pub struct BadCollector {
    /// Its port.
    pub port: u16,
    /// Requests it received.
    pub requests: Arc<Mutex<u64>>,
}

impl BadCollector {
    /// Start one on a free loopback port.
    pub fn start(how: Misbehaviour) -> BadCollector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let requests: Arc<Mutex<u64>> = Arc::default();
        let counted = requests.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                read_request(&stream);
                *counted.lock().unwrap() += 1;
                match how {
                    Misbehaviour::Silent => held.push(stream),
                    Misbehaviour::Status(code) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {code} Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                    }
                }
            }
        });
        BadCollector { port, requests }
    }

    /// The OTLP traces URL.
    pub fn endpoint(&self) -> String {
        endpoint(self.port)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }
}

fn read_request(stream: &TcpStream) {
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
    let mut body = vec![0; length.min(64 << 20)];
    let _ = reader.read_exact(&mut body);
}
