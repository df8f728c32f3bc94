//! A TCP relay on 127.0.0.1 between doltgate and a real Dolt, for fault
//! injection: it slows the upstream's answers, or corrupts one byte of the
//! first whole table file it carries.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the relay does to the upstream's bytes.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Upstream bytes pass at most this fast, per connection.
    Throttle { bytes_per_second: u64 },
    /// One data byte of the first whole-file GET answer (not the journal's)
    /// is changed, past this many bytes of the answer.
    CorruptOnce { after: u64 },
}

pub struct Relay {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Set once the corruption happened.
    pub corrupted: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(upstream: &str, fault: Fault) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let corrupted = Arc::new(AtomicBool::new(false));
        let (upstream, stop_flag, done) = (upstream.to_owned(), stop.clone(), corrupted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let eligible = Arc::new(Mutex::new(None::<bool>));
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), eligible.clone());
                answer(server, client, fault, eligible, done.clone());
            }
        });
        Relay { port, stop, corrupted }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Client to upstream, unchanged; notes whether the connection's first
/// request is a whole-file GET of something other than the journal.
fn pipe(mut from: TcpStream, mut to: TcpStream, eligible: Arc<Mutex<Option<bool>>>) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut first = eligible.lock().unwrap();
            if first.is_none() {
                let head = String::from_utf8_lossy(&buffer[..n]).to_lowercase();
                *first =
                    Some(head.starts_with("get /") && !head.contains("\r\nrange:") && !head.contains(&"v".repeat(32)));
            }
            drop(first);
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Upstream to client, with the fault applied.
fn answer(
    mut from: TcpStream,
    mut to: TcpStream,
    fault: Fault,
    eligible: Arc<Mutex<Option<bool>>>,
    done: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut carried = 0u64;
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            match fault {
                Fault::Throttle { bytes_per_second } => {
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_second as f64));
                }
                Fault::CorruptOnce { after } => {
                    if carried + n as u64 > after && *eligible.lock().unwrap() == Some(true) {
                        let start = after.saturating_sub(carried) as usize;
                        // A byte of 0x80 or above is never part of a chunk-size
                        // line, so the change lands in the file's data.
                        if let Some(at) = (start..n).find(|&i| buffer[i] >= 0x80) {
                            if !done.swap(true, Ordering::SeqCst) {
                                buffer[at] ^= 0x01;
                            }
                        }
                    }
                }
            }
            carried += n as u64;
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
