//! `Pipe`: two connected ends; a message sent on one is received on the
//! other. A one-way pipe (`duplex` false) receives on end 0 and sends on
//! end 1, as Python's `Pipe(False)` returns `(reader, writer)`.
//!
//! An end is closed when the registry frees it (every process holding it
//! closed or dropped it, or ended): its peer then reads what is left and
//! after that end-of-file, and a send to it is a broken pipe.
//!
//! A reader that lags pushes back on its writer: a `send` waits (without a
//! thread, so it can still be terminated) while [`PIPE_WINDOW`] bytes are in
//! flight towards the reader. Each message carries its charge on the
//! sender's budget until it is received (or its end closed).
//!
//! [`poll_many`] waits on many ends at once (`connection.wait`).

use super::budget::Message;
use super::{Error, PIPE_WINDOW, wait_for};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub(crate) struct Pipe {
    duplex: bool,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// What each end has to read.
    inbox: [VecDeque<Message>; 2],
    /// The bytes charged for each inbox (messages and overhead).
    in_flight: [u64; 2],
    closed: [bool; 2],
}

impl Pipe {
    pub(crate) fn new(duplex: bool) -> Pipe {
        Pipe {
            duplex,
            state: Mutex::new(State {
                inbox: [VecDeque::new(), VecDeque::new()],
                in_flight: [0; 2],
                closed: [false; 2],
            }),
            changed: Notify::new(),
        }
    }

    /// Sends `message` to the other end, waiting while its inbox is full
    /// (more than [`PIPE_WINDOW`] bytes with this one, unless it is empty).
    pub(crate) async fn send(&self, end: usize, message: Message) -> Result<(), Error> {
        if !self.duplex && end == 0 {
            return Err(Error::Invalid("connection is read-only".into()));
        }
        let to = 1 - end;
        let mut message = Some(message);
        let sent = wait_for(&self.changed, None, || {
            let mut state = self.state.lock().unwrap();
            if state.closed[to] {
                return Some(Err(Error::BrokenPipe));
            }
            let size = message.as_ref().map_or(0, Message::charged);
            if !state.inbox[to].is_empty() && state.in_flight[to] + size > PIPE_WINDOW {
                return None;
            }
            state.in_flight[to] += size;
            state.inbox[to].push_back(message.take().expect("a message is sent once"));
            Some(Ok(()))
        })
        .await
        .expect("an unbounded wait ends with a value");
        self.changed.notify_waiters();
        sent
    }

    /// Takes the next message of `end`'s inbox (the caller holds the state).
    fn take(state: &mut State, end: usize) -> Option<Message> {
        let message = state.inbox[end].pop_front()?;
        state.in_flight[end] -= message.charged();
        Some(message)
    }

    /// The next message for `end`; [`Error::Eof`] once the peer is closed
    /// and nothing is left.
    pub(crate) async fn recv(&self, end: usize) -> Result<Vec<u8>, Error> {
        if !self.duplex && end == 1 {
            return Err(Error::Invalid("connection is write-only".into()));
        }
        let message = wait_for(&self.changed, None, || {
            let mut state = self.state.lock().unwrap();
            match Pipe::take(&mut state, end) {
                Some(message) => Some(Ok(message)),
                None if state.closed[1 - end] => Some(Err(Error::Eof)),
                None => None,
            }
        })
        .await
        .expect("an unbounded wait ends with a value")?;
        // A sender may be waiting for room.
        self.changed.notify_waiters();
        Ok(message.into_bytes())
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

    /// Whether `end` has a message or end-of-file to read now.
    pub(crate) fn readable(&self, end: usize) -> bool {
        let state = self.state.lock().unwrap();
        !state.inbox[end].is_empty() || state.closed[1 - end]
    }

    /// Puts a message taken by `recv` back in front (it was not handed over).
    pub(crate) fn give_back(&self, end: usize, message: Message) {
        let mut state = self.state.lock().unwrap();
        state.in_flight[end] += message.charged();
        state.inbox[end].push_front(message);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Closes `end`: its peer sees end-of-file.
    pub(crate) fn close(&self, end: usize) {
        let mut state = self.state.lock().unwrap();
        state.closed[end] = true;
        state.inbox[end].clear();
        state.in_flight[end] = 0;
        drop(state);
        self.changed.notify_waiters();
    }
}

/// Waits until one of `ends` has something to read (for at most `timeout`
/// nanoseconds); the indices of all that have. Cancel-safe: it takes nothing.
pub(super) async fn poll_many(ends: Vec<(Arc<Pipe>, usize)>, timeout: Option<u64>) -> Vec<u32> {
    let ready = |ends: &[(Arc<Pipe>, usize)]| {
        ends.iter()
            .enumerate()
            .filter(|(_, (pipe, end))| pipe.readable(*end))
            .map(|(i, _)| i as u32)
            .collect::<Vec<_>>()
    };
    if ends.is_empty() {
        // Nothing to wait for: Python sleeps out the timeout.
        if let Some(timeout) = timeout {
            tokio::time::sleep(std::time::Duration::from_nanos(timeout)).await;
        }
        return Vec::new();
    }
    let now = ready(&ends);
    if !now.is_empty() {
        return now;
    }
    let mut waits = tokio::task::JoinSet::new();
    for (pipe, end) in ends.iter().cloned() {
        waits.spawn(async move { pipe.poll(end, timeout).await });
    }
    // The first to end (ready, or timed out: then all have) decides.
    let _ = waits.join_next().await;
    ready(&ends)
}
