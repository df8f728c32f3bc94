//! The threads that serve client connections: one single-threaded tokio
//! runtime per worker (thread per core), each connection on one worker for
//! its whole life, with its socket registered on that worker's reactor.
//!
//! Why not tokio's work-stealing scheduler: a proxy's calls arrive in batches
//! (one read brings many HTTP/2 frames). There, a request task that queues its
//! call on an upstream connection wakes that connection's task, which runs next
//! (the scheduler's LIFO slot) and writes that one call: about one write per
//! call in each direction, and as many reads for Dolt. On a runtime of its
//! own, a worker runs the whole batch of request tasks first and the
//! connection tasks after them, so a batch leaves in one write
//! (docs/profiling.md has the before and after). The upstream connections a
//! worker's calls use are its own for the same reason (see
//! `upstream::grpc_connections`).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::watch;

thread_local! {
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The worker this thread is, if it is one.
pub fn current() -> Option<usize> {
    WORKER.with(|w| w.get())
}

/// How many workers `configured` asks for: 0 means one per core this process may run on.
pub fn count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    threads: Vec<JoinHandle<()>>,
    /// Dropping the sender stops every worker; connections still open close.
    stop: Option<watch::Sender<()>>,
}

impl Workers {
    /// No threads of its own: connections become tasks on the runtime this
    /// is called on (for a program that embeds doltgate in its runtime, and
    /// for the per-call benchmark, which measures the path on one thread).
    pub fn on_caller_runtime() -> Workers {
        let handles = vec![tokio::runtime::Handle::current()];
        Workers { handles, next: AtomicUsize::new(0), threads: Vec::new(), stop: None }
    }

    pub fn start(count: usize) -> std::io::Result<Workers> {
        let (stop, stopped) = watch::channel(());
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new().name(format!("doltgate-worker-{index}")).spawn(move || {
                WORKER.with(|w| w.set(Some(index)));
                runtime.block_on(async move {
                    // Err only when the sender is gone: that is the stop.
                    while stopped.changed().await.is_ok() {}
                });
            })?;
            threads.push(thread);
        }
        Ok(Workers { handles, next: AtomicUsize::new(0), threads, stop: Some(stop) })
    }

    /// Serves an accepted connection on the next worker in turn. The socket
    /// moves to that worker's reactor before `serve` sees it.
    pub fn spawn_connection<F, Fut>(&self, stream: tokio::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => return tracing::warn!(error = %err, "cannot hand an accepted connection to a worker"),
        };
        let worker = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[worker].spawn(async move {
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(err) => tracing::warn!(error = %err, "worker cannot register a connection"),
            }
        });
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.stop.take());
        for thread in self.threads.drain(..) {
            // A worker only ends on the stop; a panic in one was already reported.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_spread_over_the_workers_and_served_on_them() {
        let workers = Workers::start(2).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let seen = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut clients = Vec::new();
            for _ in 0..4 {
                clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
                let (stream, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                workers.spawn_connection(stream, move |stream| async move {
                    tx.send((current(), stream.peer_addr().is_ok())).unwrap();
                });
            }
            let mut seen = Vec::new();
            for _ in 0..4 {
                seen.push(rx.recv().await.unwrap());
            }
            seen
        });
        let mut on: Vec<_> = seen.iter().map(|(worker, registered)| (worker.unwrap(), *registered)).collect();
        on.sort();
        assert_eq!(on, vec![(0, true), (0, true), (1, true), (1, true)]);
        assert_eq!(current(), None, "the test's own thread is no worker");
    }

    #[test]
    fn zero_means_one_per_core() {
        assert!(count(0) >= 1);
        assert_eq!(count(3), 3);
    }
}
