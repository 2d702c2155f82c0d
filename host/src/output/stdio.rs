//! The public ends of a process's standard streams: where its output goes
//! ([`Stdio`], or a [`Capture`] buffer the embedder reads) and where its
//! stdin comes from ([`Stdin`]), and which of the host's own streams
//! ([`Stream`]) an inherited output writes to.

use bytes::Bytes;
use std::sync::{Arc, Mutex};

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
pub struct Stdio(pub(super) Target);

#[derive(Clone, Debug, Default)]
pub(super) enum Target {
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
pub struct Capture(pub(super) Arc<Mutex<Vec<u8>>>);

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
