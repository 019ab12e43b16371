//! Plain HTTP from the tests to the servers the agent runs: one GET per connection, and a
//! client hammering a port while it is restarted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One `GET` on a connection of its own: (status, body).
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    // Generous: during a restart a connection waits in the backlog for the new worker.
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    Ok((status, body.trim().to_string()))
}

/// A client doing back-to-back GETs, each on a connection of its own, until stopped.
pub struct Hammer {
    stop: Arc<AtomicBool>,
    latest: Arc<Mutex<String>>,
    thread: std::thread::JoinHandle<(u32, Vec<String>, Vec<String>)>,
}

impl Hammer {
    /// Starts the client on `port`.
    pub fn start(port: u16) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let latest = Arc::new(Mutex::new(String::new()));
        let (s, l) = (stop.clone(), latest.clone());
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failures, mut seen) = (0u32, Vec::new(), Vec::<String>::new());
            // Bounded: the test stops it long before.
            for _ in 0..500_000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                match get(port, "/") {
                    Ok((200, body)) => {
                        ok += 1;
                        if seen.last() != Some(&body) {
                            seen.push(body.clone());
                        }
                        *l.lock().unwrap() = body;
                    }
                    other => failures.push(format!("{other:?}")),
                }
            }
            (ok, failures, seen)
        });
        Hammer {
            stop,
            latest,
            thread,
        }
    }

    /// Whether the client's latest good answer was `version`.
    pub fn got(&self, version: &str) -> bool {
        *self.latest.lock().unwrap() == version
    }

    /// (good answers, failures, versions in the order seen)
    pub fn finish(self) -> (u32, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}
