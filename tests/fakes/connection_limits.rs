//! Connections cannot be held without speaking: the doltgate binary closes a
//! connection that has not sent its first bytes (the HTTP/2 preface, or an
//! HTTP/1.1 request) within `limits.protocol_deadline`, whether it is silent,
//! sends one byte or stops inside the preface, and refuses connections past
//! `limits.max_connections`; both are counted on `/metrics` by reason. A client
//! that speaks is served as before.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(1);

/// How long until the server closes `stream` (reads 0 bytes or fails), up to `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            Err(_) => return Some(started.elapsed()),
        }
    }
}

fn start(dir: &std::path::Path, max_connections: usize) -> (Doltgate, u16) {
    let admin = free_port();
    let config = dir.join("doltgate.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\naddress = \"127.0.0.1:{}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n[limits]\nprotocol_deadline = \"1s\"\nmax_connections = {max_connections}\n",
            free_port()
        ),
    )
    .unwrap();
    (Doltgate::start_with_config(dir, &config), admin)
}

/// Waits until the gateway counts exactly `count` open client connections:
/// the probe that saw it listen, or a connection the test dropped, holds a slot
/// until the gateway's task notices the close.
fn await_open_connections(admin: u16, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = total(&scrape(admin), "doltgate_open_connections", &[]);
        if open == count as f64 {
            return;
        }
        assert!(Instant::now() < deadline, "doltgate_open_connections stayed {open}, expected {count}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_that_do_not_speak_are_closed_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, admin) = start(dir.path(), 100);
    let before = total(&scrape(admin), "doltgate_connections_refused_total", &[("reason", "protocol_deadline")]);
    let openers: [&[u8]; 3] = [b"", b"P", b"PRI * HTTP/2.0\r\n"];
    let mut held: Vec<TcpStream> = openers
        .iter()
        .map(|first| {
            let mut stream = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
            stream.write_all(first).unwrap();
            stream
        })
        .collect();
    for (stream, first) in held.iter_mut().zip(openers) {
        let closed = closed_within(stream, DEADLINE * 5);
        assert!(closed.is_some(), "a connection that sent {first:?} was still open after 5 s");
    }
    // The count follows the close by a moment (the connection's task ends after its socket does).
    let counted = || total(&scrape(admin), "doltgate_connections_refused_total", &[("reason", "protocol_deadline")]);
    let mut after = counted();
    for _ in 0..40 {
        if after - before >= 3.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        after = counted();
    }
    assert!(after - before >= 3.0, "counted by reason: {before} -> {after}");
    // Log lines are written by a thread of their own: give it a moment.
    let logged = (0..40).any(|_| {
        let found = gateway.process.log_so_far().contains("no protocol within limits.protocol_deadline");
        if !found {
            std::thread::sleep(Duration::from_millis(50));
        }
        found
    });
    assert!(logged, "and logged");

    // One that speaks is served, and not cut off once its preface is in.
    let mut speaking = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    speaking.write_all(b"GET /_doltgate/files/x HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap();
    std::thread::sleep(DEADLINE * 2);
    let mut answer = [0u8; 12];
    speaking.read_exact(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 4"), "{:?}", String::from_utf8_lossy(&answer));
}

#[test]
fn connections_past_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, admin) = start(dir.path(), 3);
    await_open_connections(admin, 0);
    // Three connections that speak HTTP/1.1 keep-alive and then idle hold every slot.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
            stream.write_all(b"GET /_doltgate/files/x HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap();
            let mut answer = [0u8; 12];
            stream.read_exact(&mut answer).unwrap();
            stream
        })
        .collect();
    let mut extra = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    let closed = closed_within(&mut extra, Duration::from_millis(500));
    assert!(closed.is_some(), "a fourth connection was kept past limits.max_connections = 3");
    let refused = total(&scrape(admin), "doltgate_connections_refused_total", &[("reason", "max_connections")]);
    assert!(refused >= 1.0, "counted: {refused}");
    // A slot frees when a connection closes.
    held.pop();
    await_open_connections(admin, 2);
    let mut again = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    again.write_all(b"GET /_doltgate/files/x HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap();
    let mut answer = [0u8; 12];
    again.read_exact(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 4"), "{:?}", String::from_utf8_lossy(&answer));
}
