//! Processes the tests start: finding peer binaries, free ports, waiting for a
//! listener, a guard that kills on drop, and what `/proc` says about them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A peer binary from `$ENV`, else from `PATH`; a failure that says how to install it.
pub fn find_peer(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "${env} points at {}, which does not exist", path.display());
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()));
    on_path.flatten().unwrap_or_else(|| {
        panic!(
            "real peer `{name}` not found: set ${env} or run scripts/install-peers (the README's test command does). \
             Tests with real peers are never skipped."
        )
    })
}

/// A port free at the time of asking on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    if let Err(why) = await_port(port, child, what, log) {
        panic!("{why}");
    }
}

/// Waits until `child` listens on `port`; `Err` says why not, its log included.
pub fn await_port(port: u16, child: &mut Child, what: &str, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status} before listening; log:\n{}", read_log(log)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{what} did not listen on 127.0.0.1:{port} within 60s; log:\n{}", read_log(log)))
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}

/// Kills the process (and waits for it) when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub log: PathBuf,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's output so far. Waits a moment first: doltgate writes its
    /// log lines in batches, up to 10 ms after they happen (`log_output`).
    pub fn log(&self) -> String {
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.log_so_far()
    }

    /// The output written so far, without waiting for a batch: for loops
    /// that poll for a line and would otherwise sleep on every try.
    pub fn log_so_far(&self) -> String {
        read_log(&self.log)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn spawn_logged(mut command: Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    command.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()))
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Resident memory of a process now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the process's fd table").count()
}
