//! `Pipe`: two connected ends; a message sent on one is received on the
//! other. A one-way pipe (`duplex` false) receives on end 0 and sends on
//! end 1, as Python's `Pipe(False)` returns `(reader, writer)`.
//!
//! An end is closed when the registry frees it (every process holding it
//! closed or dropped it, or ended): its peer then reads what is left and
//! after that end-of-file, and a send to it is a broken pipe.

use super::{Error, wait_for};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

pub(crate) struct Pipe {
    duplex: bool,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// What each end has to read.
    inbox: [VecDeque<Vec<u8>>; 2],
    closed: [bool; 2],
}

impl Pipe {
    pub(crate) fn new(duplex: bool) -> Pipe {
        Pipe {
            duplex,
            state: Mutex::new(State {
                inbox: [VecDeque::new(), VecDeque::new()],
                closed: [false; 2],
            }),
            changed: Notify::new(),
        }
    }

    pub(crate) fn send(&self, end: usize, message: Vec<u8>) -> Result<(), Error> {
        if !self.duplex && end == 0 {
            return Err(Error::Invalid("connection is read-only".into()));
        }
        let mut state = self.state.lock().unwrap();
        if state.closed[1 - end] {
            return Err(Error::BrokenPipe);
        }
        state.inbox[1 - end].push_back(message);
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    /// The next message for `end`; [`Error::Eof`] once the peer is closed
    /// and nothing is left.
    pub(crate) async fn recv(&self, end: usize) -> Result<Vec<u8>, Error> {
        if !self.duplex && end == 1 {
            return Err(Error::Invalid("connection is write-only".into()));
        }
        wait_for(&self.changed, None, || {
            let mut state = self.state.lock().unwrap();
            match state.inbox[end].pop_front() {
                Some(message) => Some(Ok(message)),
                None if state.closed[1 - end] => Some(Err(Error::Eof)),
                None => None,
            }
        })
        .await
        .expect("an unbounded wait ends with a value")
    }

    /// Whether a `recv` on `end` would not block (a message, or end-of-file),
    /// waiting up to `timeout` for it.
    pub(crate) async fn poll(&self, end: usize, timeout: Option<u64>) -> bool {
        wait_for(&self.changed, timeout, || {
            let state = self.state.lock().unwrap();
            (!state.inbox[end].is_empty() || state.closed[1 - end]).then_some(())
        })
        .await
        .is_some()
    }

    /// Puts a message taken by `recv` back in front (it was not handed over).
    #[cfg_attr(not(all(feature = "native", target_os = "linux")), allow(dead_code))]
    pub(crate) fn give_back(&self, end: usize, message: Vec<u8>) {
        self.state.lock().unwrap().inbox[end].push_front(message);
        self.changed.notify_waiters();
    }

    /// Closes `end`: its peer sees end-of-file.
    pub(crate) fn close(&self, end: usize) {
        let mut state = self.state.lock().unwrap();
        state.closed[end] = true;
        state.inbox[end].clear();
        drop(state);
        self.changed.notify_waiters();
    }
}
