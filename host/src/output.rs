//! Where a process's output goes, whole lines at a time.
//!
//! Many processes share the host's stdout and stderr. Each process stream is
//! a [`LineSink`]: it keeps the unfinished tail of the last line and hands on
//! only complete lines, each in one locked write, so lines from different
//! processes never interleave mid-line. What is left when the process ends
//! (however it ends) is flushed as a last line, so nothing written is lost.
//! The sink is also the guest's WASI stdout/stderr stream.

use bytes::Bytes;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

/// A shared buffer that collects whole lines of output.
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

/// Which of the host's streams an inherited sink writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// One output stream of one process: whole lines on, the tail kept.
pub(crate) struct LineSink {
    target: Target,
    stream: Stream,
    prefix: Option<String>,
    /// Pass bytes on at once, lines or not: a native worker does, so that
    /// whatever it wrote reaches the root host, which makes the lines, even
    /// when a signal ends the worker mid-line.
    passthrough: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The unfinished last line (line mode).
    tail: Vec<u8>,
    /// The last byte passed on was not a newline (passthrough mode).
    mid_line: bool,
}

impl LineSink {
    pub(crate) fn new(stdio: &Stdio, stream: Stream, prefix: Option<String>) -> Arc<LineSink> {
        Arc::new(LineSink {
            target: stdio.0.clone(),
            stream,
            prefix,
            passthrough: false,
            state: Mutex::default(),
        })
    }

    /// A sink that labels lines but passes bytes on as they come.
    #[cfg_attr(not(all(feature = "native", target_os = "linux")), allow(dead_code))]
    pub(crate) fn passthrough(stdio: &Stdio, stream: Stream, prefix: Option<String>) -> Arc<LineSink> {
        Arc::new(LineSink { passthrough: true, ..Arc::into_inner(LineSink::new(stdio, stream, prefix)).unwrap() })
    }

    /// Takes bytes a process wrote; passes on every line they complete.
    pub(crate) fn write(&self, bytes: &[u8]) {
        if matches!(self.target, Target::Null) {
            return;
        }
        let mut state = self.state.lock().unwrap();
        if self.passthrough {
            let labelled = self.label(bytes, &mut state.mid_line);
            self.deliver(&labelled);
            return;
        }
        state.tail.extend_from_slice(bytes);
        if let Some(end) = state.tail.iter().rposition(|&b| b == b'\n') {
            let rest = state.tail.split_off(end + 1);
            let lines = std::mem::replace(&mut state.tail, rest);
            self.deliver(&self.label(&lines, &mut false));
        }
    }

    /// Passes on an unfinished last line, ending it with a newline.
    pub(crate) fn finish(&self) {
        let mut state = self.state.lock().unwrap();
        if state.mid_line {
            state.mid_line = false;
            self.deliver(b"\n");
        }
        if !state.tail.is_empty() {
            state.tail.push(b'\n');
            let lines = std::mem::take(&mut state.tail);
            self.deliver(&self.label(&lines, &mut false));
        }
    }

    /// `bytes` with the prefix at the start of every line; `mid_line` says
    /// whether they continue a line already begun, and is updated.
    fn label(&self, bytes: &[u8], mid_line: &mut bool) -> Vec<u8> {
        let Some(prefix) = &self.prefix else { return bytes.to_vec() };
        let mut out = Vec::with_capacity(bytes.len() + 16);
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            if !*mid_line {
                out.extend_from_slice(prefix.as_bytes());
                out.extend_from_slice(b": ");
            }
            out.extend_from_slice(piece);
            *mid_line = !piece.ends_with(b"\n");
        }
        out
    }

    /// Hands bytes to the destination in one locked write.
    fn deliver(&self, bytes: &[u8]) {
        match (&self.target, self.stream) {
            (Target::Null, _) => {}
            (Target::Capture(capture), _) => capture.0.lock().unwrap().extend_from_slice(bytes),
            // A closed host stream must not take the process down with it.
            (Target::Inherit, Stream::Stdout) => on_terminal(&mut || {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes).and_then(|_| out.flush());
            }),
            (Target::Inherit, Stream::Stderr) | (Target::HostStderr, _) => on_terminal(&mut || {
                let _ = std::io::stderr().lock().write_all(bytes);
            }),
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

/// A [`LineSink`] as a guest sees it: a WASI output stream.
#[derive(Clone)]
pub(crate) struct GuestOutput(pub(crate) Arc<LineSink>);

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

/// The most a guest may hand over in one write; lines are split at will.
const WRITE_BUDGET: usize = 1 << 20;

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.write(buf);
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

    #[test]
    fn whole_lines_with_prefix_and_tail() {
        let capture = Capture::new();
        let sink = LineSink::new(&Stdio::capture(&capture), Stream::Stdout, Some("P-1".into()));
        sink.write(b"hel");
        assert_eq!(capture.text(), "");
        sink.write(b"lo\nwor");
        assert_eq!(capture.text(), "P-1: hello\n");
        sink.write(b"ld\nlast");
        sink.finish();
        assert_eq!(capture.text(), "P-1: hello\nP-1: world\nP-1: last\n");
    }

    #[test]
    fn passthrough_labels_line_starts_only() {
        let capture = Capture::new();
        let sink = LineSink::passthrough(&Stdio::capture(&capture), Stream::Stdout, Some("P".into()));
        sink.write(b"ab");
        assert_eq!(capture.text(), "P: ab");
        sink.write(b"c\nd\ne");
        assert_eq!(capture.text(), "P: abc\nP: d\nP: e");
        sink.finish();
        assert_eq!(capture.text(), "P: abc\nP: d\nP: e\n");
    }
}
