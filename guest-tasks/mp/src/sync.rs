//! Objects shared between processes, through the host: Python's `Queue`,
//! `JoinableQueue`, `Pipe`, `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//! `Event`, `Condition`, `Barrier`, `Value` and `Array`.
//!
//! Each object lives in the host; a value of these types is a handle to it.
//! Pass a handle to a child in its arguments (as Python passes them at
//! `Process(args=..)`): it is serialized as a token the child opens, and
//! holds the object for the child until it does. A handle serialized in any
//! other way fails ("should only be shared between processes through
//! inheritance", as in Python), and a token a process was not given is
//! refused by the host. Messages are serialized in MessagePack (see the
//! crate's data format notes); `send_bytes`/`recv_bytes` carry raw bytes.
//!
//! ```no_run
//! use mp::{Process, Queue, target};
//!
//! fn worker(q: Queue<String>) {
//!     q.put(&format!("hello from {}", mp::getpid())).unwrap();
//! }
//! mp::entries!(worker);
//!
//! fn main() {
//!     let q = Queue::new();
//!     let p = Process::new(target!(worker), &q);
//!     p.start().unwrap();
//!     println!("{}", q.get().unwrap());
//!     p.join().unwrap();
//! }
//! ```

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bindings::mp::host::sync as wit;

mod extras;
pub use extras::{SemaphoreGuard, SimpleQueue};

/// Which budget a [`Error::Quota`] ran into: this process's bytes
/// (`--max-shared`) or objects, or the whole run's.
pub use wit::QuotaKind;

/// Why an operation on a shared object failed: the exception Python raises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `get` found no item in time (`queue.Empty`).
    Empty,
    /// `put` found no room in time (`queue.Full`).
    Full,
    /// The handle was closed.
    Closed,
    /// `recv` after the other end closed (`EOFError`).
    Eof,
    /// `send` to a closed end (`BrokenPipeError`).
    BrokenPipe,
    /// The token names no live object.
    UnknownObject(String),
    /// The object was never given to this process.
    NotGiven(String),
    /// A message over the host's size limit.
    TooLarge { size: u64, limit: u64 },
    /// A misuse (`ValueError`, `RuntimeError`): releasing a lock not held, ...
    Invalid(String),
    /// The barrier is broken (`BrokenBarrierError`).
    BrokenBarrier,
    /// The host's broker is unreachable.
    Broker(String),
    /// Past what this process (or the whole run) may park in the host:
    /// `used` is what the put, send or new object would have come to.
    Quota { kind: QuotaKind, used: u64, limit: u64 },
    /// A message did not serialize or deserialize.
    Serde(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => f.write_str("the queue is empty"),
            Error::Full => f.write_str("the queue is full"),
            Error::Closed => f.write_str("the handle is closed"),
            Error::Eof => f.write_str("end of file: the other end is closed"),
            Error::BrokenPipe => f.write_str("broken pipe: the other end is closed"),
            Error::UnknownObject(what) => write!(f, "no such shared object: {what}"),
            Error::NotGiven(what) => write!(f, "{what} was never given to this process"),
            Error::TooLarge { size, limit } => {
                write!(f, "a message of {size} bytes exceeds the limit of {limit}")
            }
            Error::Invalid(why) => f.write_str(why),
            Error::BrokenBarrier => f.write_str("the barrier is broken"),
            Error::Broker(why) => write!(f, "the host's broker is unreachable: {why}"),
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
                    "quota exceeded: the run would park {used} bytes in shared objects, over its limit of {limit} (a multiple of --max-shared)"
                ),
                QuotaKind::RunObjects => {
                    write!(f, "quota exceeded: the run would hold {used} shared objects, over its limit of {limit}")
                }
            },
            Error::Serde(why) => write!(f, "bad message: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Error {
        match e {
            wit::Error::Empty => Error::Empty,
            wit::Error::Full => Error::Full,
            wit::Error::Closed => Error::Closed,
            wit::Error::Eof => Error::Eof,
            wit::Error::BrokenPipe => Error::BrokenPipe,
            wit::Error::UnknownObject(what) => Error::UnknownObject(what),
            wit::Error::NotGiven(what) => Error::NotGiven(what),
            wit::Error::TooLarge((size, limit)) => Error::TooLarge { size, limit },
            wit::Error::Invalid(why) => Error::Invalid(why),
            wit::Error::BrokenBarrier => Error::BrokenBarrier,
            wit::Error::Broker(why) => Error::Broker(why),
            wit::Error::Quota(q) => Error::Quota { kind: q.kind, used: q.used, limit: q.limit },
        }
    }
}

/// What a constructor makes of the host's answer: the object, or, where
/// Python raises, a panic naming why the host refused it (past the
/// process's or the run's object budget: [`Error::Quota`]).
pub(crate) fn created<T>(what: &str, made: Result<T, wit::Error>) -> T {
    made.unwrap_or_else(|error| panic!("cannot create a {what}: {}", Error::from(error)))
}

thread_local! {
    /// Set while the arguments of a new process are serialized.
    static SPAWNING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (the serialization of a child's arguments) with handles allowed
/// to serialize.
pub(crate) fn spawning<R>(f: impl FnOnce() -> R) -> R {
    SPAWNING.with(|s| s.set(true));
    let result = f();
    SPAWNING.with(|s| s.set(false));
    result
}

/// A handle's token for a child's arguments, the object held for the child.
pub(crate) fn share<S: Serializer>(token: String, what: &str, serializer: S) -> Result<S::Ok, S::Error> {
    if !SPAWNING.with(|s| s.get()) {
        return Err(serde::ser::Error::custom(format!(
            "{what} objects should only be shared between processes through inheritance"
        )));
    }
    wit::share(&token).map_err(|e| serde::ser::Error::custom(Error::from(e)))?;
    serializer.serialize_str(&token)
}

pub(crate) fn open<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    open: fn(&str) -> Result<T, wit::Error>,
) -> Result<T, D::Error> {
    let token = String::deserialize(deserializer)?;
    open(&token).map_err(|e| serde::de::Error::custom(Error::from(e)))
}

pub(crate) fn timeout(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A message's bytes (see [`crate::codec`]: MessagePack).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    crate::codec::encode(value).map_err(Error::Serde)
}

/// The value a message's bytes encode.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    crate::codec::decode(bytes).map_err(Error::Serde)
}

/// Serialize as a token (only into a child's arguments), deserialize by
/// opening it.
macro_rules! handle_serde {
    ($name:literal, $t:ident $(<$g:ident>)?, $wit:ty, |$h:ident| $inner:expr, |$w:ident| $make:expr) => {
        impl$(<$g>)? serde::Serialize for $t$(<$g>)? {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let $h = self;
                $crate::sync::share($inner.token(), $name, serializer)
            }
        }

        impl<'de $(, $g)?> serde::Deserialize<'de> for $t$(<$g>)? {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let $w: $wit = $crate::sync::open(deserializer, <$wit>::open)?;
                Ok($make)
            }
        }
    };
}

/// Python's `multiprocessing.Queue`: items of type `T` in FIFO order.
///
/// ```no_run
/// let q: mp::Queue<u32> = mp::Queue::with_maxsize(2);
/// q.put(&1).unwrap();
/// assert_eq!(q.get().unwrap(), 1);
/// assert_eq!(q.get_nowait(), Err(mp::SyncError::Empty));
/// ```
pub struct Queue<T> {
    inner: wit::Queue,
    item: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An unbounded queue.
    pub fn new() -> Queue<T> {
        Queue::with_maxsize(0)
    }

    /// A queue of at most `maxsize` items (0: unbounded).
    pub fn with_maxsize(maxsize: u32) -> Queue<T> {
        Queue { inner: created("Queue", wit::Queue::create(maxsize, false)), item: PhantomData }
    }

    /// Puts `item`, waiting for room while the queue is full.
    pub fn put(&self, item: &T) -> Result<(), Error> {
        Ok(self.inner.put(&encode(item)?, None)?)
    }

    /// Puts `item` if there is room now; [`Error::Full`] otherwise.
    pub fn put_nowait(&self, item: &T) -> Result<(), Error> {
        Ok(self.inner.put(&encode(item)?, Some(0))?)
    }

    /// Puts `item`, waiting at most `timeout` for room; [`Error::Full`] after.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), Error> {
        Ok(self.inner.put(&encode(item)?, self::timeout(Some(timeout)))?)
    }

    /// Takes the first item, waiting for one.
    pub fn get(&self) -> Result<T, Error> {
        decode(&self.inner.get(None)?)
    }

    /// Takes the first item if there is one; [`Error::Empty`] otherwise.
    pub fn get_nowait(&self) -> Result<T, Error> {
        decode(&self.inner.get(Some(0))?)
    }

    /// Takes the first item, waiting at most `timeout`; [`Error::Empty`] after.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        decode(&self.inner.get(self::timeout(Some(timeout)))?)
    }

    /// How many items the queue holds now.
    pub fn qsize(&self) -> Result<u64, Error> {
        Ok(self.inner.qsize()?)
    }

    pub fn empty(&self) -> Result<bool, Error> {
        Ok(self.qsize()? == 0)
    }

    /// This process is done with the queue: later calls on this handle fail
    /// with [`Error::Closed`].
    pub fn close(&self) {
        self.inner.close()
    }
}

impl<T: Serialize + DeserializeOwned> Default for Queue<T> {
    fn default() -> Self {
        Queue::new()
    }
}

handle_serde!("Queue", Queue<T>, wit::Queue, |h| h.inner, |w| Queue { inner: w, item: PhantomData });

/// Python's `multiprocessing.JoinableQueue`: a [`Queue`] whose consumers
/// call [`task_done`](JoinableQueue::task_done) per item, and whose
/// [`join`](JoinableQueue::join) waits until every item is done.
///
/// ```no_run
/// let q: mp::JoinableQueue<u32> = mp::JoinableQueue::new();
/// q.put(&1).unwrap();
/// q.get().unwrap();
/// q.task_done().unwrap();
/// q.join().unwrap();
/// ```
pub struct JoinableQueue<T>(Queue<T>);

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    pub fn new() -> JoinableQueue<T> {
        JoinableQueue::with_maxsize(0)
    }

    pub fn with_maxsize(maxsize: u32) -> JoinableQueue<T> {
        JoinableQueue(Queue { inner: created("JoinableQueue", wit::Queue::create(maxsize, true)), item: PhantomData })
    }

    /// One item taken from the queue is processed.
    pub fn task_done(&self) -> Result<(), Error> {
        Ok(self.0.inner.task_done()?)
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), Error> {
        Ok(self.0.inner.join()?)
    }
}

impl<T: Serialize + DeserializeOwned> Default for JoinableQueue<T> {
    fn default() -> Self {
        JoinableQueue::new()
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.0
    }
}

handle_serde!("JoinableQueue", JoinableQueue<T>, wit::Queue, |h| h.0.inner, |w| JoinableQueue(Queue {
    inner: w,
    item: PhantomData
}));

/// One end of a pipe: Python's `Connection`.
///
/// ```no_run
/// let (a, b) = mp::Pipe(true);
/// a.send(&"ping").unwrap();
/// let got: String = b.recv().unwrap();
/// ```
pub struct Connection {
    pub(crate) inner: wit::Connection,
}

/// Python's `Pipe(duplex)`: two connected ends. One-way unless `duplex`:
/// the first receives, the second sends.
#[allow(non_snake_case)]
pub fn Pipe(duplex: bool) -> (Connection, Connection) {
    let (a, b) = created("Pipe", wit::create_pipe(duplex));
    (Connection { inner: a }, Connection { inner: b })
}

impl Connection {
    /// Sends a value (MessagePack).
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        self.send_bytes(&encode(value)?)
    }

    /// Receives a value, waiting for one; [`Error::Eof`] once the other end
    /// is closed and everything was read.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode(&self.recv_bytes()?)
    }

    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        Ok(self.inner.send(bytes)?)
    }

    pub fn recv_bytes(&self) -> Result<Vec<u8>, Error> {
        Ok(self.inner.recv()?)
    }

    /// Whether `recv` would not block, waiting at most `timeout` (`None`:
    /// for ever) for it to be so.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        Ok(self.inner.poll(self::timeout(timeout))?)
    }

    /// Closes this end for this process (its peer reads end-of-file once
    /// nobody holds it).
    pub fn close(&self) {
        self.inner.close()
    }
}

handle_serde!("Connection", Connection, wit::Connection, |h| h.inner, |w| Connection { inner: w });

mod locks;
pub use locks::{Barrier, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock, Semaphore};

mod array;
pub use array::{Array, Number, Value};
