//! The host's own stdout and stderr, each written by one writer thread
//! ([`HostStream`]) fed by a queue of at most [`QUEUE_BOUND`] bytes. A guest
//! writing to a full queue, or waiting for its flushed bytes to be written,
//! is a pending future (its WASI stream's `ready`), never a blocked thread:
//! terminate, kill and `--timeout` end it at once even when nobody reads the
//! host's stdout. Bytes still queued when the host exits are written before
//! it exits ([`flush_output`]) unless the stream has taken nothing for the
//! patience given (nobody reads it): then they are discarded, as is
//! everything written to a stream once it is closed (`EPIPE`).
//!
//! Also here: the terminal hook every such write goes through
//! ([`set_terminal_hook`]), and what a forked child does to its copies of
//! the streams (`after_fork`, which only a backend that forks calls).

use super::stdio::Stream;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most one host stream's queue holds before writers wait.
pub(crate) const QUEUE_BOUND: usize = 1 << 20;

/// The most a guest may hand over in one write.
pub(super) const WRITE_BUDGET: usize = 64 << 10;

/// The least time between two writes of a stream that keeps being written
/// to in small pieces: a writer woken sooner after a small write waits out
/// the rest, and writes what arrived meanwhile at once. A stream flooded
/// with small lines (a hundred thousand processes saying one each) then
/// costs a wake-up and a `write` per interval, not per line; a line after a
/// quiet spell is written at once, and a stream that fills half a write's
/// budget per interval is never held back.
const WRITE_INTERVAL: Duration = Duration::from_millis(1);

/// One of the host's own streams: a writer thread fed by a bounded queue.
pub(crate) struct HostStream {
    stream: Stream,
    queue: Mutex<Queue>,
    /// Wakes the writer thread and [`flush_output`].
    changed: Condvar,
    /// Wakes writers waiting for room or for their bytes to be written.
    progress: tokio::sync::Notify,
}

pub(super) struct Queue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes queued or being written.
    bytes: usize,
    /// The number of the last chunk queued, and of the last written (or
    /// discarded).
    pushed: u64,
    pub(super) written: u64,
    /// Writes fail (`EPIPE`), or [`flush_output`] gave up: bytes are discarded.
    closed: bool,
    writer_started: bool,
    /// The writer thread waits for chunks: a push must wake it. (While it
    /// writes it takes what was pushed meanwhile without being woken, so a
    /// burst of lines costs a wake-up, not one each.)
    writer_idle: bool,
    /// When the stream last took bytes (or got bytes to take when idle).
    progress: Instant,
    /// Forwarders that will still pass bytes on.
    producers: usize,
}

impl Queue {
    pub(super) fn room(&self) -> usize {
        if self.closed { WRITE_BUDGET } else { QUEUE_BOUND.saturating_sub(self.bytes) }
    }

    fn discard(&mut self) {
        self.closed = true;
        self.chunks.clear();
        self.bytes = 0;
        self.written = self.pushed;
    }
}

pub(super) static STDOUT: LazyLock<HostStream> = LazyLock::new(|| HostStream::new(Stream::Stdout));
pub(super) static STDERR: LazyLock<HostStream> = LazyLock::new(|| HostStream::new(Stream::Stderr));

impl HostStream {
    fn new(stream: Stream) -> HostStream {
        let queue = Queue {
            chunks: VecDeque::new(),
            bytes: 0,
            pushed: 0,
            written: 0,
            closed: false,
            writer_started: false,
            writer_idle: false,
            progress: Instant::now(),
            producers: 0,
        };
        HostStream { stream, queue: Mutex::new(queue), changed: Condvar::new(), progress: tokio::sync::Notify::new() }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap()
    }

    /// Queues `bytes` (never waits: the bound is kept by writers waiting for
    /// room first); returns their number.
    pub(super) fn push(&'static self, bytes: Vec<u8>) -> u64 {
        let mut queue = self.lock();
        if queue.closed {
            return queue.pushed;
        }
        if !queue.writer_started {
            let name = format!("host-{:?}", self.stream).to_lowercase();
            match std::thread::Builder::new().name(name).spawn(move || self.run()) {
                Ok(_) => queue.writer_started = true,
                // No thread, no writing: discard rather than grow.
                Err(_) => {
                    queue.discard();
                    return queue.pushed;
                }
            }
        }
        if queue.bytes == 0 {
            queue.progress = Instant::now();
        }
        queue.bytes += bytes.len();
        queue.pushed += 1;
        queue.chunks.push_back(bytes);
        // Only the writer waits for a chunk (a flush waits for the queue to
        // empty, which a push does not bring closer).
        if queue.writer_idle {
            queue.writer_idle = false;
            self.changed.notify_all();
        }
        queue.pushed
    }

    /// The writer thread: writes chunks in order, several at once when
    /// they are small, until the process exits.
    fn run(&self) {
        let mut queue = self.lock();
        // When the last small write was made.
        let mut last_write: Option<Instant> = None;
        loop {
            while queue.chunks.is_empty() {
                queue.writer_idle = true;
                queue = self.changed.wait(queue).unwrap();
            }
            queue.writer_idle = false;
            if let Some(wait) = last_write.and_then(|at| WRITE_INTERVAL.checked_sub(at.elapsed())) {
                // Pushes meanwhile see a writer that is not idle: no wake-up.
                drop(queue);
                std::thread::sleep(wait);
                queue = self.lock();
                if queue.chunks.is_empty() {
                    continue;
                }
            }
            let mut batch = queue.chunks.pop_front().unwrap_or_default();
            let mut last = queue.written + 1;
            while let Some(next) = queue.chunks.front()
                && batch.len() + next.len() <= WRITE_BUDGET
            {
                batch.extend_from_slice(next);
                queue.chunks.pop_front();
                last += 1;
            }
            drop(queue);
            let mut written = Ok(());
            on_terminal(&mut || {
                written = match self.stream {
                    Stream::Stdout => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&batch).and_then(|_| out.flush())
                    }
                    Stream::Stderr => std::io::stderr().lock().write_all(&batch),
                };
            });
            last_write = (batch.len() < WRITE_BUDGET / 2).then(Instant::now);
            queue = self.lock();
            if !queue.closed {
                queue.bytes -= batch.len();
                queue.written = last;
                queue.progress = Instant::now();
                // A closed host stream must not take the processes down with it.
                if written.is_err() {
                    queue.discard();
                }
            }
            self.changed.notify_all();
            self.progress.notify_waiters();
        }
    }

    pub(super) fn room(&self) -> usize {
        self.lock().room()
    }

    /// Waits until `ready` holds of the queue.
    pub(super) async fn wait(&self, ready: impl Fn(&Queue) -> bool) {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready(&self.lock()) {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn producer(&'static self) -> Producer {
        self.lock().producers += 1;
        Producer(self)
    }

    /// See [`flush_output`].
    fn flush(&self, patience: Duration) -> bool {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return queue.bytes == 0 && queue.producers == 0;
            }
            if queue.bytes == 0 && queue.producers == 0 {
                return true;
            }
            let stalled = queue.progress.elapsed();
            if queue.bytes > 0 && stalled >= patience {
                queue.discard();
                self.progress.notify_waiters();
                return false;
            }
            let wait = if queue.bytes > 0 { patience - stalled } else { patience };
            queue = self.changed.wait_timeout(queue, wait).unwrap().0;
        }
    }
}

/// What wraps every write of process output to the host's own streams.
type TerminalHook = Box<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

static TERMINAL_HOOK: std::sync::OnceLock<TerminalHook> = std::sync::OnceLock::new();

/// Runs every write of process output to the host's own stdout and stderr
/// through `hook` (which must call the function it is given), so that
/// something the embedder draws on the terminal can step aside for it: the
/// CLI's live status line is hidden while a line is written, then redrawn.
/// Once per program; a second hook is refused (`false`).
pub fn set_terminal_hook(hook: impl Fn(&mut dyn FnMut()) + Send + Sync + 'static) -> bool {
    TERMINAL_HOOK.set(Box::new(hook)).is_ok()
}

fn on_terminal(write: &mut dyn FnMut()) {
    match TERMINAL_HOOK.get() {
        Some(hook) => hook(write),
        None => write(),
    }
}

/// A forwarder still to finish (see [`LineSink::producer`]).
pub(crate) struct Producer(&'static HostStream);

impl Drop for Producer {
    fn drop(&mut self) {
        self.0.lock().producers -= 1;
        self.0.changed.notify_all();
    }
}

/// Waits until everything processes wrote to the host's stdout and stderr
/// has been written out; call it before the host exits (the `host` binary
/// does). A stream that takes nothing for `patience` (nobody reads it) is
/// given up on: what it still holds, and anything written to it later, is
/// discarded. Returns whether every byte was written.
pub fn flush_output(patience: Duration) -> bool {
    let mut complete = true;
    for stream in [&*STDOUT, &*STDERR] {
        if stream.lock().writer_started || stream.lock().producers > 0 {
            complete &= stream.flush(patience);
        }
    }
    complete
}

/// In a forked child: its writer threads were not copied by the fork
/// (their queues were empty), so the next output starts new ones.
// Only a backend that forks calls it.
#[cfg(outside_processes)]
pub(crate) fn after_fork() {
    for stream in [&*STDOUT, &*STDERR] {
        stream.lock().writer_started = false;
    }
}
