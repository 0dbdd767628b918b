//! A network link between two nodes that the harness can cut and slow:
//! a TCP relay on a loopback port in front of a node's port. The
//! coordinator reaches a worker through it (the worker's foreign server,
//! or its Citus node entry, names the relay's port), so chaos can cut the
//! link (every open connection reset, new ones refused until it is
//! restored) or delay it (every chunk each way held for a while) without
//! touching either server, and without privileges: nothing outside the
//! runner's own loopback ports is affected.
//!
//! Kernel network emulation (`tc netem` inside network namespaces) would
//! do the same for a root runner on a kernel that has it; the relay
//! works for every runner and kernel.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often blocked relay threads look at the link's state.
const POLL: Duration = Duration::from_millis(25);

#[derive(Default)]
struct State {
    /// New connections are refused and open ones reset while set.
    cut: AtomicBool,
    /// Bumped by every cut: a connection opened under an older value ends.
    generation: AtomicU64,
    /// Each chunk is held this long (milliseconds) before it is passed on.
    delay_ms: AtomicU64,
    /// The relay stops.
    stop: AtomicBool,
}

/// A relay from a loopback port to `127.0.0.1:target`.
pub struct Link {
    port: u16,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl Link {
    /// Start relaying a free loopback port to `127.0.0.1:target`.
    pub fn start(target: u16) -> std::io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let state = Arc::new(State::default());
        let s = state.clone();
        let acceptor = std::thread::spawn(move || accept_loop(&listener, target, &s));
        Ok(Link {
            port,
            state,
            acceptor: Some(acceptor),
        })
    }

    /// The port that reaches the target through the link.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cut the link: open connections are reset, new ones refused.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Restore a cut link.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Hold every chunk, each way, for `delay` (zero: no delay).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: u16, state: &Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if state.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let generation = state.generation.load(Ordering::SeqCst);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let s = state.clone();
                    std::thread::spawn(move || pump(from, to, generation, &s));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Copy `from` to `to` until either side closes or the link is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, generation: u64, state: &State) {
    let _ = from.set_nonblocking(false);
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    let alive = || {
        !state.stop.load(Ordering::SeqCst) && state.generation.load(Ordering::SeqCst) == generation
    };
    while alive() {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let delay = state.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                if !alive() || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a loopback port.
    fn echo() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = c.read(&mut b) {
                        if n == 0 || c.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn roundtrip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        c.write_all(b"ping")?;
        let mut b = [0u8; 4];
        c.read_exact(&mut b)?;
        Ok(b.to_vec())
    }

    #[test]
    fn a_link_relays_until_cut_and_again_once_restored() {
        let link = Link::start(echo()).unwrap();
        assert_eq!(roundtrip(link.port()).unwrap(), b"ping");
        let mut open = TcpStream::connect(("127.0.0.1", link.port())).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        open.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).unwrap();
        link.cut();
        assert!(roundtrip(link.port()).is_err(), "a cut link refuses");
        std::thread::sleep(POLL * 4);
        let _ = open.write_all(b"y");
        assert!(
            matches!(open.read(&mut one), Ok(0) | Err(_)),
            "an open connection is reset by a cut"
        );
        link.restore();
        assert_eq!(roundtrip(link.port()).unwrap(), b"ping");
    }

    #[test]
    fn a_delayed_link_holds_each_chunk() {
        let link = Link::start(echo()).unwrap();
        link.set_delay(Duration::from_millis(150));
        let started = std::time::Instant::now();
        assert_eq!(roundtrip(link.port()).unwrap(), b"ping");
        // Held once each way.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
