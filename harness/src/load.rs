//! Load the harness makes itself, to prove that its gate holds on a busy
//! machine: a CPU hog of one spinning thread per core, started and
//! stopped around a measurement. It lives here rather than in an outside
//! tool so that a load test needs nothing but the runner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Threads that keep cores busy until the hog is dropped.
pub struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl CpuHog {
    /// Start `threads` busy threads (0: one per logical CPU).
    pub fn start(threads: usize) -> CpuHog {
        let n = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    // Integer work the optimiser cannot remove: the count
                    // is returned and checked by `stop`.
                    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                    let mut rounds = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                        }
                        rounds += 1;
                    }
                    std::hint::black_box(x);
                    rounds
                })
            })
            .collect();
        CpuHog { stop, threads }
    }

    /// Number of busy threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Stop every thread; returns the rounds of work each did (all
    /// non-zero when the hog really ran).
    pub fn stop(mut self) -> Vec<u64> {
        self.stop_threads()
    }

    fn stop_threads(&mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| t.join().unwrap_or(0))
            .collect()
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hog_runs_every_thread_and_stops() {
        let hog = CpuHog::start(2);
        assert_eq!(hog.threads(), 2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let rounds = hog.stop();
        assert_eq!(rounds.len(), 2);
        assert!(rounds.iter().all(|r| *r > 0), "{rounds:?}");
    }
}
