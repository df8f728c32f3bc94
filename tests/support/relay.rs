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
    /// is changed, past this many bytes of that answer.
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
                let exchange = Arc::new(Mutex::new(Exchange::default()));
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), exchange.clone());
                answer(server, client, fault, exchange, done.clone());
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

/// The request being answered on one connection. doltgate's HTTP/1.1 client
/// reuses connections but never pipelines, so the answer read after a request
/// went out belongs to the newest request: a connection first used for a
/// ranged read can carry a whole-file GET next.
#[derive(Default)]
struct Exchange {
    http2: bool,
    /// Requests seen so far; the answering side starts counting afresh at each.
    requests: u64,
    whole_file_get: bool,
}

impl Exchange {
    /// Notes what the client sent: an HTTP/2 preface marks the connection as
    /// one that never carries a file; an HTTP/1.1 request line starts a new
    /// exchange.
    fn saw(&mut self, bytes: &[u8]) {
        if self.requests == 0 && bytes.starts_with(b"PRI * HTTP/2.0") {
            self.http2 = true;
        }
        if self.http2 {
            return;
        }
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).to_lowercase();
        if ["get ", "head ", "put ", "post "].iter().any(|method| head.starts_with(method)) {
            self.requests += 1;
            self.whole_file_get =
                head.starts_with("get /") && !head.contains("\r\nrange:") && !head.contains(&"v".repeat(32));
        }
    }
}

/// Client to upstream, unchanged; notes each request for the answering side.
fn pipe(mut from: TcpStream, mut to: TcpStream, exchange: Arc<Mutex<Exchange>>) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Noted before it goes on, so its answer cannot arrive first.
            exchange.lock().unwrap().saw(&buffer[..n]);
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Upstream to client, with the fault applied.
fn answer(mut from: TcpStream, mut to: TcpStream, fault: Fault, exchange: Arc<Mutex<Exchange>>, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 16 * 1024];
        // Bytes of the current request's answer so far.
        let (mut answering, mut carried) = (0u64, 0u64);
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let whole_file_get = {
                let exchange = exchange.lock().unwrap();
                if exchange.requests != answering {
                    (answering, carried) = (exchange.requests, 0);
                }
                exchange.whole_file_get
            };
            match fault {
                Fault::Throttle { bytes_per_second } => {
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_second as f64));
                }
                Fault::CorruptOnce { after } => {
                    if carried + n as u64 > after && whole_file_get {
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
