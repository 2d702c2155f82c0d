//! Queues, pipes, locks and the other objects processes share: Python's
//! `Queue`, `JoinableQueue`, `Pipe`, `Lock`, `RLock`, `Semaphore`,
//! `BoundedSemaphore`, `Event`, `Condition`, `Barrier`, `Value` and `Array`.
//!
//! Every object lives in the root host, in one `Registry`; processes never
//! share memory, they only send requests (`Request`) naming an object. On
//! the thread backend a guest's request is a call into the registry; on the
//! native backend a worker sends it over a unix socket to the root host (the
//! broker, see `broker.rs`), which runs it and answers. Either way the same
//! code runs every object's semantics, and every wait is asynchronous (a
//! tokio `Notify`), so a process blocked in `get`, `recv`, `acquire`, `wait`
//! or `join` holds no thread and is terminated at once.
//!
//! # Capabilities
//!
//! A process reaches an object only through a handle it created, or one its
//! parent gave it at spawn: the SDK serializes a handle into the child's
//! arguments as a *token* (`mp-sync:<kind>:<id>:<secret>`, the secret 64
//! random bits), and the child's host opens a token only if it appears in
//! that child's own spawn arguments, which the host holds and the guest
//! cannot change. The registry then checks the secret and that the caller
//! holds the object before every operation. A forged, guessed or
//! second-hand token is refused with a clear error ([`Error::NotGiven`],
//! [`Error::UnknownObject`]); nothing a guest sends can crash the host.
//!
//! # Lifetime, and a lock whose holder ends
//!
//! An object lives while some process holds it (created or opened it, and
//! has not dropped or closed its handle), or while a token of it is on its
//! way to a child (a parent's handle serialized for a spawn reserves a hold
//! for the child). The reservation is the parent's until it starts the
//! child, then the child's until the child opens the token or ends: a parent
//! may put items on a queue, start a consumer and return at once, and the
//! consumer still finds every item. When a
//! process ends, however it ends (return, exit, trap, terminate, kill), its
//! holds are released: the end of a pipe it alone held is closed (its peer
//! reads end-of-file), and **a `Lock` or `RLock` it held is released**, so
//! that the others go on. Python leaves such a lock held, and every other
//! process that wants it deadlocks; a host that knows who holds what can do
//! better, and does. Semaphores have no owner and are left as they are, as in
//! Python.
//!
//! # Messages, and what a process may park
//!
//! Queue items and pipe messages are bytes (the SDK serializes typed values
//! with serde), at most [`MAX_MESSAGE`] bytes each: a larger one is refused
//! with [`Error::TooLarge`]. A consumer terminated while it waits in `get`
//! loses nothing: an item is removed from its queue only as it is handed
//! over.
//!
//! What a process parks in the host (items nobody has taken, messages in
//! flight, arrays, the objects themselves) is charged to it and bounded
//! (see [`budget`]): past its budget a `put` or `send` fails with
//! [`Error::Quota`]. A pipe also pushes back: a `send` waits while
//! [`PIPE_WINDOW`] bytes are already in flight towards its reader.

mod api;
mod array;
mod barrier;
mod broker;
pub mod budget;
mod condition;
pub(crate) mod container;
mod event;
mod holds;
mod lease;
mod lock;
mod manager;
mod pipe;
mod queue;
mod registry;
mod request;
mod token;
pub(crate) mod wait;
mod wire;

pub use api::{Array, Barrier, Condition, Connection, Event, JoinableQueue, Lock, Queue, RLock, Semaphore, Value};
pub(crate) use broker::Broker;
pub use manager::{Dict, List, Manager, Namespace};
pub(crate) use queue::Queue as QueueObject;
pub(crate) use registry::Registry;
pub(crate) use request::{Answer, Kind, Payload, Reply, Request, Spec};
pub use request::{Number, Numbers};
pub(crate) use token::{Token, handed_ids, random_u64};

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The largest queue item or pipe message, in bytes (4 MiB).
pub const MAX_MESSAGE: usize = 4 << 20;

/// How many bytes may be in flight towards one end of a pipe (each message
/// counted with [`budget::ITEM_OVERHEAD`]): a `send` past it waits until the
/// reader takes some. A message always goes when nothing is in flight, so
/// one of up to [`MAX_MESSAGE`] bytes still passes.
pub const PIPE_WINDOW: u64 = 1 << 20;

/// Why an operation on a shared object failed: the exception Python raises
/// for the same case, or a refusal of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error {
    /// `get` on an empty queue, without blocking or after its timeout
    /// (Python's `queue.Empty`).
    Empty,
    /// `put` on a full queue, without blocking or after its timeout
    /// (Python's `queue.Full`).
    Full,
    /// An operation on a handle after its `close`.
    Closed,
    /// `recv` on a connection whose other end is closed (by `close`, or by
    /// the end of every process holding it) and nothing is left to read
    /// (Python's `EOFError`).
    Eof,
    /// `send` on a connection whose other end is closed (`BrokenPipeError`).
    BrokenPipe,
    /// A token or id that names no live object of its kind.
    UnknownObject(String),
    /// A token the calling process was never given (objects pass to a child
    /// only in its spawn arguments), or an object it does not hold.
    NotGiven(String),
    /// A message over [`MAX_MESSAGE`].
    TooLarge {
        /// The message's size, in bytes.
        size: u64,
        /// The most a message may have.
        limit: u64,
    },
    /// A misuse Python answers with `ValueError`, `RuntimeError` or
    /// `AssertionError`: releasing a lock one does not hold, `task_done` too
    /// many times, an index out of range, ...
    Invalid(String),
    /// A `Barrier` broken by `abort`, a timeout or the end of a waiting party
    /// (`BrokenBarrierError`).
    BrokenBarrier,
    /// The native backend's broker could not be reached.
    Broker(String),
    /// A `put`, `send` or new object past what the process (or the whole
    /// run) may park in the host; `used` is what it would have come to.
    Quota {
        /// Which budget: the process's or the run's, bytes or objects.
        kind: QuotaKind,
        /// What the request would have brought the total to.
        used: u64,
        /// The budget.
        limit: u64,
    },
}

/// Which budget an [`Error::Quota`] ran into (see [`budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaKind {
    /// Bytes this process has parked (`--max-shared`).
    Bytes,
    /// Objects this process has created and not freed.
    Objects,
    /// Bytes the whole run has parked ([`budget::RUN_FACTOR`] times `--max-shared`).
    RunBytes,
    /// Objects the whole run holds.
    RunObjects,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Empty => f.write_str("the queue is empty"),
            Error::Full => f.write_str("the queue is full"),
            Error::Closed => f.write_str("the handle is closed"),
            Error::Eof => f.write_str("end of file: the other end of the connection is closed"),
            Error::BrokenPipe => f.write_str("broken pipe: the other end of the connection is closed"),
            Error::UnknownObject(what) => write!(f, "no such shared object: {what}"),
            Error::NotGiven(what) => write!(
                f,
                "{what} was never given to this process (objects pass to a child only in its spawn arguments)"
            ),
            Error::TooLarge { size, limit } => {
                write!(f, "a message of {size} bytes exceeds the limit of {limit}")
            }
            Error::Invalid(why) => f.write_str(why),
            Error::BrokenBarrier => f.write_str("the barrier is broken"),
            Error::Broker(why) => write!(f, "the sync broker is unreachable: {why}"),
            Error::Quota { kind, used, limit } => match kind {
                QuotaKind::Bytes => write!(
                    f,
                    "quota exceeded: this process would park {used} bytes in shared objects, over its limit of {limit} (--max-shared)"
                ),
                QuotaKind::Objects => write!(
                    f,
                    "quota exceeded: this process would hold {used} shared objects, over its limit of {limit}"
                ),
                QuotaKind::RunBytes => write!(
                    f,
                    "quota exceeded: the run would park {used} bytes in shared objects, over its limit of {limit} ({} x --max-shared)",
                    budget::RUN_FACTOR
                ),
                QuotaKind::RunObjects => {
                    write!(f, "quota exceeded: the run would hold {used} shared objects, over its limit of {limit}")
                }
            },
        }
    }
}

impl std::error::Error for Error {}

/// Nanoseconds as a duration, saturating.
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until `ready` gives a value, re-checking each time `notify` fires,
/// for at most `timeout` nanoseconds (`None`: for ever). Cancel-safe: a
/// waiter dropped midway has taken nothing.
pub(crate) async fn wait_for<T>(
    notify: &Notify,
    timeout: Option<u64>,
    mut ready: impl FnMut() -> Option<T>,
) -> Option<T> {
    // Ready at once: no need to register as a waiter.
    if let Some(value) = ready() {
        return Some(value);
    }
    let deadline = timeout.map(|t| Instant::now().checked_add(Duration::from_nanos(t)));
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(value) = ready() {
            return Some(value);
        }
        match deadline {
            None | Some(None) => notified.await,
            Some(Some(deadline)) => {
                if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                    return ready();
                }
            }
        }
    }
}
