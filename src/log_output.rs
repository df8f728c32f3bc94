//! Where log lines go: the request path appends each formatted line to a
//! shared buffer, and a thread of its own writes the buffer to stderr in
//! batches.
//!
//! Why not a channel to a writer thread (tracing-appender): its thread is
//! woken for every line that finds it idle, which at a steady one call per
//! millisecond is every line, and it spins (`sched_yield`) before sleeping
//! again: three to four system calls and two context switches per access-log
//! line, on the core the proxy shares with Dolt. Here only the first line
//! after a quiet spell wakes the writer, which then waits `COALESCE` to
//! gather the lines that follow and writes them with one `write(2)`.
//!
//! No line is dropped: when stderr stalls and the buffer reaches
//! `MAX_BUFFERED`, writers wait for room. [`LogOutput`]'s guard writes what
//! is left when the process exits.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer gathers lines after the first one wakes it.
const COALESCE: Duration = Duration::from_millis(10);
/// Buffered bytes past which the writer does not wait and writers block.
const MAX_BUFFERED: usize = 1 << 20;

struct Shared {
    state: Mutex<State>,
    /// The writer thread waits here for a first line (or the close).
    lines: Condvar,
    /// Writers wait here for room when the buffer is full.
    room: Condvar,
}

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind; keep logging.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `MakeWriter` handed to tracing's formatter.
#[derive(Clone)]
pub struct LogOutput {
    shared: Arc<Shared>,
}

/// Writes out what is buffered, and stops the writer thread, when dropped.
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogOutput {
    /// A buffer written to `sink` by a thread named `doltgate-log`.
    pub fn start(sink: impl Write + Send + 'static) -> (LogOutput, FlushOnDrop) {
        let shared = Arc::new(Shared { state: Mutex::default(), lines: Condvar::new(), room: Condvar::new() });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("doltgate-log".into())
            .spawn(move || write_batches(&writer, sink))
            .expect("spawn the log writer thread");
        (LogOutput { shared: shared.clone() }, FlushOnDrop { shared, thread: Some(thread) })
    }
}

fn write_batches(shared: &Shared, mut sink: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.buffer.is_empty() && !state.closed {
            state = shared.lines.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.buffer.is_empty() {
            return; // closed, and nothing left
        }
        if !state.closed && state.buffer.len() < MAX_BUFFERED / 2 {
            drop(state);
            std::thread::sleep(COALESCE);
            state = shared.lock();
        }
        std::mem::swap(&mut state.buffer, &mut batch);
        drop(state);
        shared.room.notify_all();
        // Nowhere to report a failing stderr; the lines are dropped rather than retried forever.
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        batch.clear();
    }
}

impl Write for LogOutput {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while state.buffer.len() >= MAX_BUFFERED && !state.closed {
            state = self.shared.room.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let first = state.buffer.is_empty();
        state.buffer.extend_from_slice(bytes);
        drop(state);
        if first {
            self.shared.lines.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogOutput {
    type Writer = LogOutput;

    fn make_writer(&'a self) -> LogOutput {
        self.clone()
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read while the writer thread owns it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut sink = self.0.lock().unwrap();
            sink.0.extend_from_slice(bytes);
            sink.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_all_arrive_whole_and_in_few_writes() {
        let sink = Sink::default();
        let (output, guard) = LogOutput::start(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut output = output.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        output.write_all(format!("thread {t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2000);
        lines.sort();
        lines.dedup();
        assert_eq!(lines.len(), 2000, "every line once");
        assert!(writes < 100, "{writes} writes for 2000 lines: not batched");
    }

    #[test]
    fn a_full_buffer_makes_writers_wait_instead_of_dropping() {
        /// A sink that takes a while per write, as a stalled stderr would.
        struct Slow(Sink);
        impl Write for Slow {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                self.0.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let (mut output, guard) = LogOutput::start(Slow(sink.clone()));
        let line = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            output.write_all(&line).unwrap();
            assert!(output.shared.lock().buffer.len() <= MAX_BUFFERED + line.len());
        }
        drop(guard);
        assert_eq!(sink.0.lock().unwrap().0.len(), 64 * line.len());
    }
}
