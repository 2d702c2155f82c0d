//! Where a process's output goes: byte for byte, or a whole line at a time.
//!
//! Each output stream of a process is a [`LineSink`], in one of two modes
//! ([`Format`]):
//! - **exact**: a process alone on its stream and unlabelled (`host run`
//!   with one process, the default): every write is passed on when it
//!   happens, and nothing is added, dropped or reordered, so binary output
//!   and `\r` progress lines come out as written;
//! - **lines**: a process that shares its stream (a child, a pool worker) or
//!   whose lines are labelled (`--count N`): the sink holds back the
//!   unfinished last line and hands on only complete lines, each in one
//!   write, so lines of different processes never interleave mid-line. A
//!   line longer than [`MAX_LINE`] is passed on in pieces (unlabelled,
//!   nothing is inserted; labelled, each piece is a line of its own). Only
//!   labelled output may get a byte added: an unfinished last line is ended
//!   with a newline when the process ends. What is left when the process
//!   ends (however it ends) is passed on, so nothing written is lost.
//!
//! The host's own stdout and stderr are each written by one writer thread
//! ([`HostStream`]) fed by a queue of at most [`QUEUE_BOUND`] bytes. A guest
//! writing to a full queue, or waiting for its flushed bytes to be written,
//! is a pending future (its WASI stream's `ready`), never a blocked thread:
//! terminate, kill and `--timeout` end it at once even when nobody reads the
//! host's stdout. Bytes still queued when the host exits are written before
//! it exits ([`flush_output`]) unless the stream has taken nothing for the
//! patience given (nobody reads it): then they are discarded, as is
//! everything written to a stream once it is closed (`EPIPE`).
//!
//! The sink is also the guest's WASI stdout/stderr stream.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Where one output stream of a process goes.
///
/// ```
/// use host::{Capture, Stdio};
/// let captured = Capture::new();
/// let _to_buffer = Stdio::capture(&captured);
/// let _to_host = Stdio::inherit();
/// let _nowhere = Stdio::null();
/// assert!(captured.text().is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Stdio(Target);

#[derive(Clone, Debug, Default)]
enum Target {
    /// The host's own stdout or stderr.
    #[default]
    Inherit,
    Null,
    Capture(Capture),
    /// The host's own stderr, whichever stream this is.
    HostStderr,
}

impl Stdio {
    /// The host's own stream (the default).
    pub fn inherit() -> Stdio {
        Stdio(Target::Inherit)
    }

    /// Discarded.
    pub fn null() -> Stdio {
        Stdio(Target::Null)
    }

    /// The host's own stderr, also for a process's stdout (so that the
    /// host's stdout carries only what the host itself writes).
    pub fn host_stderr() -> Stdio {
        Stdio(Target::HostStderr)
    }

    /// Appended to `capture`, a buffer the embedder reads.
    pub fn capture(capture: &Capture) -> Stdio {
        Stdio(Target::Capture(capture.clone()))
    }
}

/// A shared buffer that collects a process's output (byte for byte when the
/// process is unlabelled and alone on it, as for the host's own streams).
#[derive(Clone, Debug, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// An empty buffer.
    pub fn new() -> Capture {
        Capture::default()
    }

    /// Everything collected so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    /// Everything collected so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

/// Where a process's stdin comes from (the default: nothing, as Python gives
/// its child processes).
///
/// ```
/// use host::Stdin;
/// let _empty = Stdin::null();
/// let _hosts = Stdin::inherit();
/// let _given = Stdin::bytes(b"one\ntwo\n".to_vec());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Stdin(pub(crate) Input);

#[derive(Clone, Debug, Default)]
pub(crate) enum Input {
    /// End-of-file at once.
    #[default]
    Null,
    /// The host's own stdin.
    Inherit,
    /// These bytes, then end-of-file.
    Bytes(Bytes),
}

impl Stdin {
    /// End-of-file at once (the default).
    pub fn null() -> Stdin {
        Stdin(Input::Null)
    }

    /// The host's own stdin, as `wasmtime run` gives it. Give it to one
    /// process at a time: processes reading it together split its bytes.
    pub fn inherit() -> Stdin {
        Stdin(Input::Inherit)
    }

    /// These bytes, then end-of-file.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Stdin {
        Stdin(Input::Bytes(Bytes::from(bytes.into())))
    }
}

/// Which of the host's streams an inherited sink writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// The longest piece of one line a sink in line mode holds back: a longer
/// line is passed on in pieces of this size.
pub(crate) const MAX_LINE: usize = 64 << 10;

/// The most one host stream's queue holds before writers wait.
pub(crate) const QUEUE_BOUND: usize = 1 << 20;

/// The most a guest may hand over in one write.
const WRITE_BUDGET: usize = 64 << 10;

/// How a sink passes bytes on (see the module's documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Format {
    /// Put, with `": "`, at the start of every line (and of every piece of
    /// a line longer than [`MAX_LINE`]).
    pub(crate) prefix: Option<String>,
    /// Hold an unfinished line back until its newline (or [`MAX_LINE`]).
    pub(crate) whole_lines: bool,
    /// End an unfinished last line with a newline when the process ends:
    /// only where labelled lines are the unit.
    pub(crate) end_line: bool,
}

impl Format {
    /// Every write as it comes, nothing added.
    pub(crate) fn exact() -> Format {
        Format::default()
    }

    /// The format of a process's output: labelled or shared output goes a
    /// whole line at a time, other output byte for byte.
    pub(crate) fn new(prefix: Option<String>, shared: bool) -> Format {
        Format { whole_lines: shared || prefix.is_some(), end_line: prefix.is_some(), prefix }
    }
}

/// One output stream of one process (see the module's documentation).
pub(crate) struct LineSink {
    target: Target,
    stream: Stream,
    format: Format,
    state: Mutex<State>,
}

struct State {
    /// The unfinished last line (line mode), shorter than [`MAX_LINE`].
    tail: Vec<u8>,
    /// How many bytes of the current line were labelled and passed on (0:
    /// at the start of a line).
    column: usize,
    /// The last byte passed on was a newline (or nothing was).
    at_line_start: bool,
    /// The host stream's number of the last bytes this sink queued.
    queued: u64,
}

impl LineSink {
    pub(crate) fn new(stdio: &Stdio, stream: Stream, format: Format) -> Arc<LineSink> {
        let state = State { tail: Vec::new(), column: 0, at_line_start: true, queued: 0 };
        Arc::new(LineSink { target: stdio.0.clone(), stream, format, state: Mutex::new(state) })
    }

    /// Takes bytes a process wrote and passes on what its format allows:
    /// all of them, or every line they complete. Never waits: a writer that
    /// must respect the queue's bound waits for [`LineSink::writable`] first.
    pub(crate) fn write(&self, bytes: &[u8]) {
        if matches!(self.target, Target::Null) || bytes.is_empty() {
            return;
        }
        let mut state = self.state.lock().unwrap();
        if !self.format.whole_lines {
            let labelled = self.label(bytes, &mut state.column);
            self.deliver(&mut state, labelled);
            return;
        }
        // Only the new bytes are scanned: the tail holds no newline.
        let mut out = Vec::new();
        let mut rest = bytes;
        if let Some(end) = rest.iter().rposition(|&b| b == b'\n') {
            let mut lines = std::mem::take(&mut state.tail);
            lines.extend_from_slice(&rest[..=end]);
            out = self.label(&lines, &mut state.column);
            rest = &rest[end + 1..];
        }
        // An unfinished line that reaches the limit passes on as a piece: a
        // labelled line of its own, or (unlabelled) as it is.
        let piece_len = self.piece_len();
        while state.tail.len() + rest.len() >= piece_len {
            let (head, more) = rest.split_at(piece_len - state.tail.len());
            let mut piece = std::mem::take(&mut state.tail);
            piece.extend_from_slice(head);
            rest = more;
            out.extend_from_slice(&self.label(&piece, &mut state.column));
            if self.format.prefix.is_some() {
                out.push(b'\n');
                state.column = 0;
            }
        }
        state.tail.extend_from_slice(rest);
        self.deliver(&mut state, out);
    }

    /// Passes on an unfinished last line (ending it with a newline only when
    /// lines are labelled).
    pub(crate) fn finish(&self) {
        let mut state = self.state.lock().unwrap();
        let rest = self.finish_locked(&mut state);
        self.deliver(&mut state, rest);
    }

    /// What ends the unfinished last line, to be delivered as one piece
    /// (with whatever follows it): another process's output sharing the
    /// host stream may come between two deliveries.
    fn finish_locked(&self, state: &mut State) -> Vec<u8> {
        let tail = std::mem::take(&mut state.tail);
        let mut out = self.label(&tail, &mut state.column);
        let at_line_start = out.last().map_or(state.at_line_start, |&last| last == b'\n');
        if self.format.end_line && !at_line_start {
            out.push(b'\n');
        }
        state.column = 0;
        out
    }

    /// A line of the host's own about this process (why it ended): after
    /// what the process wrote, on a line of its own.
    pub(crate) fn note(&self, message: &str) {
        if matches!(self.target, Target::Null) {
            return;
        }
        let mut state = self.state.lock().unwrap();
        let mut line = self.finish_locked(&mut state);
        let at_line_start = line.last().map_or(state.at_line_start, |&last| last == b'\n');
        if !at_line_start {
            line.push(b'\n');
        }
        line.extend_from_slice(&self.label(format!("{message}\n").as_bytes(), &mut 0));
        self.deliver(&mut state, line);
    }

    /// The longest line labelled with `prefix`, its newline included.
    fn line_limit(prefix: &str) -> usize {
        // Room for the newline, and for at least one byte after the prefix.
        (MAX_LINE - 1).max(prefix.len() + 3)
    }

    /// How many bytes of an unfinished line make a piece: one labelled line,
    /// or [`MAX_LINE`] unlabelled.
    fn piece_len(&self) -> usize {
        match &self.format.prefix {
            Some(prefix) => LineSink::line_limit(prefix) - prefix.len() - 2,
            None => MAX_LINE,
        }
    }

    /// `bytes` with the prefix at the start of every line, and a line longer
    /// than [`MAX_LINE`] (prefix and newline included) broken into labelled
    /// lines of at most that size, which a root host passes on whole;
    /// `column` says how much of the current line is already out (0: none),
    /// and is updated.
    fn label(&self, bytes: &[u8], column: &mut usize) -> Vec<u8> {
        let Some(prefix) = &self.format.prefix else { return bytes.to_vec() };
        let limit = LineSink::line_limit(prefix);
        let mut out = Vec::with_capacity(bytes.len() + 16);
        let mut rest = bytes;
        while let Some(&first) = rest.first() {
            if *column == limit && first != b'\n' {
                out.push(b'\n');
                *column = 0;
            }
            if *column == 0 {
                out.extend_from_slice(prefix.as_bytes());
                out.extend_from_slice(b": ");
                *column = prefix.len() + 2;
            }
            let room = limit - *column;
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) if end <= room => {
                    out.extend_from_slice(&rest[..=end]);
                    rest = &rest[end + 1..];
                    *column = 0;
                }
                _ => {
                    let n = room.min(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    *column += n;
                }
            }
        }
        out
    }

    /// Hands bytes to the destination, in order: the caller holds the lock.
    fn deliver(&self, state: &mut State, bytes: Vec<u8>) {
        let Some(&last) = bytes.last() else { return };
        state.at_line_start = last == b'\n';
        match &self.target {
            Target::Null => {}
            Target::Capture(capture) => capture.0.lock().unwrap().extend_from_slice(&bytes),
            _ => state.queued = self.host_stream().expect("an inherited target").push(bytes),
        }
    }

    /// The host stream this sink writes to, if it writes to one.
    fn host_stream(&self) -> Option<&'static HostStream> {
        match (&self.target, self.stream) {
            (Target::Inherit, Stream::Stdout) => Some(&*STDOUT),
            (Target::Inherit, Stream::Stderr) | (Target::HostStderr, _) => Some(&*STDERR),
            _ => None,
        }
    }

    /// How many bytes a writer may hand over now without passing the bound.
    fn room(&self) -> usize {
        self.host_stream().map_or(WRITE_BUDGET, HostStream::room)
    }

    /// The number of this sink's last queued bytes, for [`LineSink::writable`].
    fn last_queued(&self) -> u64 {
        self.state.lock().unwrap().queued
    }

    /// Waits until the destination has room and the bytes numbered
    /// `flushed` (see [`LineSink::last_queued`]) have been written out.
    pub(crate) async fn writable(&self, flushed: u64) {
        if let Some(stream) = self.host_stream() {
            stream.wait(|queue| queue.room() > 0 && queue.written >= flushed).await;
        }
    }

    fn is_flushed(&self, flushed: u64) -> bool {
        self.host_stream().is_none_or(|stream| stream.lock().written >= flushed)
    }

    /// While the returned guard lives, [`flush_output`] waits for it: a
    /// forwarder that will still pass bytes on to a host stream, from a
    /// process that runs outside the host (a build whose backends all run
    /// processes inside it never asks). `None` for other targets.
    #[allow(dead_code)]
    pub(crate) fn producer(&self) -> Option<Producer> {
        self.host_stream().map(HostStream::producer)
    }
}

/// One of the host's own streams: a writer thread fed by a bounded queue.
pub(crate) struct HostStream {
    stream: Stream,
    queue: Mutex<Queue>,
    /// Wakes the writer thread and [`flush_output`].
    changed: Condvar,
    /// Wakes writers waiting for room or for their bytes to be written.
    progress: tokio::sync::Notify,
}

struct Queue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes queued or being written.
    bytes: usize,
    /// The number of the last chunk queued, and of the last written (or
    /// discarded).
    pushed: u64,
    written: u64,
    /// Writes fail (`EPIPE`), or [`flush_output`] gave up: bytes are discarded.
    closed: bool,
    writer_started: bool,
    /// When the stream last took bytes (or got bytes to take when idle).
    progress: Instant,
    /// Forwarders that will still pass bytes on.
    producers: usize,
}

impl Queue {
    fn room(&self) -> usize {
        if self.closed { WRITE_BUDGET } else { QUEUE_BOUND.saturating_sub(self.bytes) }
    }

    fn discard(&mut self) {
        self.closed = true;
        self.chunks.clear();
        self.bytes = 0;
        self.written = self.pushed;
    }
}

static STDOUT: LazyLock<HostStream> = LazyLock::new(|| HostStream::new(Stream::Stdout));
static STDERR: LazyLock<HostStream> = LazyLock::new(|| HostStream::new(Stream::Stderr));

impl HostStream {
    fn new(stream: Stream) -> HostStream {
        let queue = Queue {
            chunks: VecDeque::new(),
            bytes: 0,
            pushed: 0,
            written: 0,
            closed: false,
            writer_started: false,
            progress: Instant::now(),
            producers: 0,
        };
        HostStream { stream, queue: Mutex::new(queue), changed: Condvar::new(), progress: tokio::sync::Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap()
    }

    /// Queues `bytes` (never waits: the bound is kept by writers waiting for
    /// room first); returns their number.
    fn push(&'static self, bytes: Vec<u8>) -> u64 {
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
        self.changed.notify_all();
        queue.pushed
    }

    /// The writer thread: writes chunks in order, several at once when
    /// they are small, until the process exits.
    fn run(&self) {
        let mut queue = self.lock();
        loop {
            while queue.chunks.is_empty() {
                queue = self.changed.wait(queue).unwrap();
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

    fn room(&self) -> usize {
        self.lock().room()
    }

    /// Waits until `ready` holds of the queue.
    async fn wait(&self, ready: impl Fn(&Queue) -> bool) {
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

    fn producer(&'static self) -> Producer {
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
#[allow(dead_code)]
pub(crate) fn after_fork() {
    for stream in [&*STDOUT, &*STDERR] {
        stream.lock().writer_started = false;
    }
}

/// A [`LineSink`] as a guest sees it: a WASI output stream whose `ready`
/// waits for room in the host stream's queue and, after a `flush`, for the
/// flushed bytes to be written out (so that a guest's writes reach the host
/// stream in order, stdout and stderr alike, before its next write returns).
pub(crate) struct GuestOutput {
    sink: Arc<LineSink>,
    /// The number of the bytes a `flush` waits for.
    flushing: u64,
}

impl GuestOutput {
    pub(crate) fn new(sink: Arc<LineSink>) -> GuestOutput {
        GuestOutput { sink, flushing: 0 }
    }
}

impl Clone for GuestOutput {
    fn clone(&self) -> GuestOutput {
        GuestOutput::new(self.sink.clone())
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink.write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.flushing = self.sink.last_queued();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if !self.sink.is_flushed(self.flushing) {
            return Ok(0);
        }
        Ok(self.sink.room().min(WRITE_BUDGET))
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {
        self.sink.writable(self.flushing).await;
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.sink.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture_sink(format: Format) -> (Capture, Arc<LineSink>) {
        let capture = Capture::new();
        let sink = LineSink::new(&Stdio::capture(&capture), Stream::Stdout, format);
        (capture, sink)
    }

    #[test]
    fn whole_lines_with_prefix_and_tail() {
        let (capture, sink) = capture_sink(Format::new(Some("P-1".into()), false));
        sink.write(b"hel");
        assert_eq!(capture.text(), "");
        sink.write(b"lo\nwor");
        assert_eq!(capture.text(), "P-1: hello\n");
        sink.write(b"ld\nlast");
        sink.finish();
        assert_eq!(capture.text(), "P-1: hello\nP-1: world\nP-1: last\n");
    }

    #[test]
    fn exact_adds_nothing_and_holds_nothing() {
        let (capture, sink) = capture_sink(Format::exact());
        let all: Vec<u8> = (0..=255u8).collect();
        sink.write(&all[..100]);
        assert_eq!(capture.bytes(), &all[..100]);
        sink.write(&all[100..]);
        sink.finish();
        assert_eq!(capture.bytes(), all);
    }

    #[test]
    fn shared_unlabelled_lines_get_no_newline_added() {
        let (capture, sink) = capture_sink(Format::new(None, true));
        sink.write(b"a\nb");
        assert_eq!(capture.text(), "a\n");
        sink.finish();
        assert_eq!(capture.text(), "a\nb");
    }

    #[test]
    fn long_lines_pass_on_in_pieces() {
        let (capture, sink) = capture_sink(Format::new(None, true));
        let line = vec![b'x'; 3 * MAX_LINE + 10];
        for chunk in line.chunks(1000) {
            sink.write(chunk);
        }
        assert_eq!(capture.bytes().len(), 3 * MAX_LINE, "whole pieces pass on before the newline");
        sink.write(b"\n");
        let mut expected = line.clone();
        expected.push(b'\n');
        assert_eq!(capture.bytes(), expected, "nothing dropped, nothing inserted");

        let (capture, sink) = capture_sink(Format::new(Some("P".into()), true));
        sink.write(&vec![b'y'; MAX_LINE + 1]);
        sink.finish();
        let text = capture.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "a labelled piece is a line of its own");
        assert_eq!(lines[0].len() + 1, MAX_LINE, "at most MAX_LINE bytes with its newline");
        assert_eq!(lines[1], format!("P: {}", "y".repeat(MAX_LINE + 1 - (MAX_LINE - 4))));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn passed_through_labels_line_starts_only() {
        let (capture, sink) = capture_sink(Format { whole_lines: false, ..Format::new(Some("P".into()), false) });
        sink.write(b"ab");
        assert_eq!(capture.text(), "P: ab");
        sink.write(b"c\nd\ne");
        assert_eq!(capture.text(), "P: abc\nP: d\nP: e");
        sink.finish();
        assert_eq!(capture.text(), "P: abc\nP: d\nP: e\n");
    }

    #[test]
    fn a_note_starts_on_a_line_of_its_own() {
        let (capture, sink) = capture_sink(Format::exact());
        sink.write(b"half");
        sink.note("error: why");
        assert_eq!(capture.text(), "half\nerror: why\n");
    }
}
