//! One output stream of one process: byte for byte, or a whole line at a
//! time.
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
//! What a sink passes on goes to a [`Capture`](super::Capture) buffer or to one of the
//! host's own streams ([`HostStream`]).

use super::host_stream::{HostStream, Producer, STDERR, STDOUT, WRITE_BUDGET};
use super::stdio::{Stdio, Stream, Target};
use std::sync::{Arc, Mutex};

/// The longest piece of one line a sink in line mode holds back: a longer
/// line is passed on in pieces of this size.
pub(crate) const MAX_LINE: usize = 64 << 10;

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
    /// Its format but for the prefix, which is kept once, in the state (a
    /// forked child takes its own).
    format: Format,
    state: Mutex<State>,
}

struct State {
    /// The format's prefix.
    prefix: Option<String>,
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
        let mut format = format;
        let prefix = format.prefix.take();
        let state = State { prefix, tail: Vec::new(), column: 0, at_line_start: true, queued: 0 };
        Arc::new(LineSink { target: stdio.0.clone(), stream, format, state: Mutex::new(state) })
    }

    /// In a forked child: its lines from now on carry `prefix` (its own
    /// name) where they carried its parent's. The parent's unfinished line
    /// is its parent's to pass on, not the child's.
    pub(crate) fn relabel(&self, prefix: Option<String>) {
        let mut state = self.state.lock().unwrap();
        if state.prefix.is_some() {
            state.prefix = prefix;
        }
        state.tail.clear();
        state.column = 0;
    }

    /// Takes bytes a process wrote and passes on what its format allows:
    /// all of them, or every line they complete. Never waits: a writer that
    /// must respect the queue's bound waits for [`LineSink::writable`] first.
    pub(crate) fn write(&self, bytes: &[u8]) {
        if matches!(self.target, Target::Null) || bytes.is_empty() {
            return;
        }
        let mut guard = self.state.lock().unwrap();
        let state = &mut *guard;
        if !self.format.whole_lines {
            let labelled = label(state.prefix.as_deref(), bytes, &mut state.column);
            self.deliver(state, labelled);
            return;
        }
        // Only the new bytes are scanned: the tail holds no newline.
        let mut out = Vec::new();
        let mut rest = bytes;
        if let Some(end) = rest.iter().rposition(|&b| b == b'\n') {
            let mut lines = std::mem::take(&mut state.tail);
            lines.extend_from_slice(&rest[..=end]);
            out = label(state.prefix.as_deref(), &lines, &mut state.column);
            rest = &rest[end + 1..];
        }
        // An unfinished line that reaches the limit passes on as a piece: a
        // labelled line of its own, or (unlabelled) as it is.
        let piece_len = piece_len(state.prefix.as_deref());
        while state.tail.len() + rest.len() >= piece_len {
            let (head, more) = rest.split_at(piece_len - state.tail.len());
            let mut piece = std::mem::take(&mut state.tail);
            piece.extend_from_slice(head);
            rest = more;
            out.extend_from_slice(&label(state.prefix.as_deref(), &piece, &mut state.column));
            if state.prefix.is_some() {
                out.push(b'\n');
                state.column = 0;
            }
        }
        state.tail.extend_from_slice(rest);
        self.deliver(state, out);
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
        let mut out = label(state.prefix.as_deref(), &tail, &mut state.column);
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
        line.extend_from_slice(&label(state.prefix.as_deref(), format!("{message}\n").as_bytes(), &mut 0));
        self.deliver(&mut state, line);
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
    pub(super) fn room(&self) -> usize {
        self.host_stream().map_or(WRITE_BUDGET, HostStream::room)
    }

    /// The number of this sink's last queued bytes, for [`LineSink::writable`].
    pub(super) fn last_queued(&self) -> u64 {
        self.state.lock().unwrap().queued
    }

    /// Waits until the destination has room and the bytes numbered
    /// `flushed` (see [`LineSink::last_queued`]) have been written out.
    pub(crate) async fn writable(&self, flushed: u64) {
        if let Some(stream) = self.host_stream() {
            stream.wait(|queue| queue.room() > 0 && queue.written >= flushed).await;
        }
    }

    pub(super) fn is_flushed(&self, flushed: u64) -> bool {
        self.host_stream().is_none_or(|stream| stream.lock().written >= flushed)
    }

    /// While the returned guard lives, [`flush_output`](super::flush_output) waits for it: a
    /// forwarder that will still pass bytes on to a host stream, from a
    /// process that runs outside the host (a build whose backends all run
    /// processes inside it never asks). `None` for other targets.
    #[cfg_attr(not(outside_processes), allow(dead_code))]
    pub(crate) fn producer(&self) -> Option<Producer> {
        self.host_stream().map(HostStream::producer)
    }
}

/// The longest line labelled with `prefix`, its newline included.
fn line_limit(prefix: &str) -> usize {
    // Room for the newline, and for at least one byte after the prefix.
    (MAX_LINE - 1).max(prefix.len() + 3)
}

/// How many bytes of an unfinished line make a piece: one line labelled
/// with `prefix`, or [`MAX_LINE`] unlabelled.
fn piece_len(prefix: Option<&str>) -> usize {
    match prefix {
        Some(prefix) => line_limit(prefix) - prefix.len() - 2,
        None => MAX_LINE,
    }
}

/// `bytes` with `prefix` at the start of every line, and a line longer
/// than [`MAX_LINE`] (prefix and newline included) broken into labelled
/// lines of at most that size, which a root host passes on whole;
/// `column` says how much of the current line is already out (0: none),
/// and is updated.
fn label(prefix: Option<&str>, bytes: &[u8], column: &mut usize) -> Vec<u8> {
    let Some(prefix) = prefix else { return bytes.to_vec() };
    let limit = line_limit(prefix);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Capture;

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
