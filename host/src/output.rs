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
    tail: Mutex<Vec<u8>>,
}

impl LineSink {
    pub(crate) fn new(stdio: &Stdio, stream: Stream, prefix: Option<String>) -> Arc<LineSink> {
        Arc::new(LineSink {
            target: stdio.0.clone(),
            stream,
            prefix,
            tail: Mutex::new(Vec::new()),
        })
    }

    /// Takes bytes a process wrote; passes on every line they complete.
    pub(crate) fn write(&self, bytes: &[u8]) {
        if matches!(self.target, Target::Null) {
            return;
        }
        let mut tail = self.tail.lock().unwrap();
        tail.extend_from_slice(bytes);
        if let Some(end) = tail.iter().rposition(|&b| b == b'\n') {
            let rest = tail.split_off(end + 1);
            let lines = std::mem::replace(&mut *tail, rest);
            self.emit(&lines);
        }
    }

    /// Passes on an unfinished last line, ending it with a newline.
    pub(crate) fn finish(&self) {
        let mut tail = self.tail.lock().unwrap();
        if !tail.is_empty() {
            tail.push(b'\n');
            let lines = std::mem::take(&mut *tail);
            self.emit(&lines);
        }
    }

    /// Writes whole lines (ending in `\n`), prefixed, in one locked write.
    fn emit(&self, lines: &[u8]) {
        let text = match &self.prefix {
            None => lines.to_vec(),
            Some(prefix) => {
                let mut out = Vec::with_capacity(lines.len() + 16);
                for line in lines.split_inclusive(|&b| b == b'\n') {
                    out.extend_from_slice(prefix.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(line);
                }
                out
            }
        };
        match (&self.target, self.stream) {
            (Target::Null, _) => {}
            (Target::Capture(capture), _) => capture.0.lock().unwrap().extend_from_slice(&text),
            // A closed host stream must not take the process down with it.
            (Target::Inherit, Stream::Stdout) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&text).and_then(|_| out.flush());
            }
            (Target::Inherit, Stream::Stderr) | (Target::HostStderr, _) => {
                let _ = std::io::stderr().lock().write_all(&text);
            }
        }
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
}
