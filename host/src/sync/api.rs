//! The embedder's side: shared objects created by the program that embeds
//! the host, to pass to its processes as arguments and use alongside them.
//!
//! The embedder acts as the root process (the host's own pid). A handle
//! serializes (with serde, e.g. in [`Command::input`](crate::Command::input))
//! as its token, which the process it is given to opens; messages are
//! MessagePack, as the guest SDK writes them (see [`crate::codec`]).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let host = host::Host::new()?;
//! let queue = host::sync::Queue::new(&host, 0)?;
//! let program = host.load("target/guests/ipc-queue-throughput.wasm")?;
//! let producer = program.command().entry("produce").input(&(&queue, 10u64)).spawn()?;
//! let first: u64 = queue.get()?;
//! producer.join()?;
//! # Ok(()) }
//! ```

use super::{Answer, Error, Number, Numbers, Payload, Reply, Request, Spec, Token, nanos};
use crate::runtime::{Host, HostInner};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// One hold of the embedder on a shared object.
pub(super) struct Handle {
    host: Arc<HostInner>,
    token: Token,
}

impl Handle {
    fn create(host: &Host, spec: Spec) -> Result<Vec<Handle>, Error> {
        let inner = host.inner().clone();
        match call(&inner, Request::Create(spec))? {
            Reply::Handles(tokens) => {
                Ok(tokens.into_iter().map(|token| Handle { host: inner.clone(), token }).collect())
            }
            other => Err(unexpected(other)),
        }
    }

    pub(super) fn create_one(host: &Host, spec: Spec) -> Result<Handle, Error> {
        Handle::create(host, spec)?.pop().ok_or_else(|| Error::Invalid("no handle created".into()))
    }

    pub(super) fn call(&self, request: Request) -> Answer {
        call(&self.host, request)
    }

    fn unit(&self, request: Request) -> Result<(), Error> {
        self.call(request).map(|_| ())
    }

    fn flag(&self, request: Request) -> Result<bool, Error> {
        match self.call(request)? {
            Reply::Bool(flag) => Ok(flag),
            other => Err(unexpected(other)),
        }
    }

    fn count(&self, request: Request) -> Result<u64, Error> {
        match self.call(request)? {
            Reply::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    fn bytes(&self, request: Request) -> Result<Vec<u8>, Error> {
        match self.call(request)? {
            Reply::Bytes(bytes) => Ok(bytes.0),
            other => Err(unexpected(other)),
        }
    }

    fn lock(&self) -> Result<RLock, Error> {
        match self.call(Request::GetLock { id: self.token.id })? {
            Reply::Handles(tokens) if tokens.len() == 1 => {
                Ok(RLock(Lock(Handle { host: self.host.clone(), token: tokens[0] })))
            }
            other => Err(unexpected(other)),
        }
    }

    pub(super) fn id(&self) -> u64 {
        self.token.id
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(registry) = self.host.sync.local() {
            let _ = registry.drop_hold(self.host.root.pid().unwrap_or_default(), self.token.id);
        }
    }
}

/// The token, after a hold reserved for the process it is given to.
impl Serialize for Handle {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.unit(Request::Reserve { id: self.token.id }).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&self.token.encode())
    }
}

fn call(host: &Arc<HostInner>, request: Request) -> Answer {
    match host.sync.local() {
        Some(registry) => host.block_on(registry.call(host.root.pid().unwrap_or_default(), request)),
        None => Err(Error::Broker("shared objects are created by the root host".into())),
    }
}

pub(super) fn unexpected(reply: Reply) -> Error {
    Error::Invalid(format!("unexpected reply from the registry: {reply:?}"))
}

fn timeout(block: bool, timeout: Option<Duration>) -> Option<u64> {
    if block { timeout.map(nanos) } else { Some(0) }
}

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload, Error> {
    crate::codec::encode(value).map(Payload).map_err(|e| Error::Invalid(format!("cannot serialize the message: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    crate::codec::decode(bytes).map_err(|e| Error::Invalid(format!("cannot deserialize the message: {e}")))
}

macro_rules! serialize_as_token {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.handle().serialize(serializer)
            }
        }
    )*};
}

/// Python's `multiprocessing.Queue`: messages (serde values) in FIFO order.
pub struct Queue(Handle);

impl Queue {
    /// A queue holding at most `maxsize` items (0: unbounded).
    pub fn new(host: &Host, maxsize: u32) -> Result<Queue, Error> {
        Handle::create_one(host, Spec::Queue { maxsize, joinable: false }).map(Queue)
    }

    fn handle(&self) -> &Handle {
        &self.0
    }

    /// Puts `item`, waiting for room if the queue is full.
    pub fn put<T: Serialize>(&self, item: &T) -> Result<(), Error> {
        self.put_timeout(item, true, None)
    }

    /// Python's `put(item, block, timeout)`: [`Error::Full`] if there is no
    /// room in time.
    pub fn put_timeout<T: Serialize>(&self, item: &T, block: bool, wait: Option<Duration>) -> Result<(), Error> {
        self.0.unit(Request::Put { id: self.0.id(), item: encode(item)?, timeout: timeout(block, wait) })
    }

    /// Takes the first item, waiting for one.
    pub fn get<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.get_timeout(true, None)
    }

    /// Python's `get(block, timeout)`: [`Error::Empty`] if no item comes in time.
    pub fn get_timeout<T: DeserializeOwned>(&self, block: bool, wait: Option<Duration>) -> Result<T, Error> {
        decode(&self.0.bytes(Request::Get { id: self.0.id(), timeout: timeout(block, wait) })?)
    }

    /// How many items are in the queue now.
    pub fn qsize(&self) -> Result<u64, Error> {
        self.0.count(Request::QueueSize { id: self.0.id() })
    }

    /// Python's `Queue.empty()`: whether no message is waiting.
    pub fn empty(&self) -> Result<bool, Error> {
        Ok(self.qsize()? == 0)
    }
}

/// Python's `multiprocessing.JoinableQueue`: a [`Queue`] whose consumers
/// mark each item done, and whose `join` waits until all are.
pub struct JoinableQueue(Queue);

impl JoinableQueue {
    /// A joinable queue holding at most `maxsize` messages (0: no bound).
    pub fn new(host: &Host, maxsize: u32) -> Result<JoinableQueue, Error> {
        Handle::create_one(host, Spec::Queue { maxsize, joinable: true }).map(|h| JoinableQueue(Queue(h)))
    }

    fn handle(&self) -> &Handle {
        &self.0.0
    }

    /// Python's `task_done()`: one message taken earlier has been dealt with.
    pub fn task_done(&self) -> Result<(), Error> {
        self.0.0.unit(Request::TaskDone { id: self.0.0.id() })
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), Error> {
        self.0.0.unit(Request::JoinQueue { id: self.0.0.id() })
    }
}

impl std::ops::Deref for JoinableQueue {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        &self.0
    }
}

/// One end of a pipe (Python's `Connection`), from [`Connection::pipe`].
pub struct Connection(Handle);

impl Connection {
    /// Python's `Pipe(duplex)`: two connected ends; one-way (receive on the
    /// first, send on the second) unless `duplex`.
    pub fn pipe(host: &Host, duplex: bool) -> Result<(Connection, Connection), Error> {
        let mut ends = Handle::create(host, Spec::Pipe { duplex })?;
        let second = ends.pop().ok_or_else(|| Error::Invalid("a pipe has two ends".into()))?;
        let first = ends.pop().ok_or_else(|| Error::Invalid("a pipe has two ends".into()))?;
        Ok((Connection(first), Connection(second)))
    }

    fn handle(&self) -> &Handle {
        &self.0
    }

    /// Sends one message (JSON) to the other end.
    pub fn send<T: Serialize>(&self, message: &T) -> Result<(), Error> {
        self.0.unit(Request::Send { id: self.0.id(), message: encode(message)? })
    }

    /// The next message; [`Error::Eof`] once the other end is closed and
    /// nothing is left.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode(&self.0.bytes(Request::Recv { id: self.0.id() })?)
    }

    /// Whether a message (or end-of-file) is there to read, waiting up to
    /// `timeout` (`None`: for ever).
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        self.0.flag(Request::Poll { id: self.0.id(), timeout: timeout.map(nanos) })
    }
}

/// Python's `multiprocessing.Lock`, held by the embedder when it acquires it.
pub struct Lock(Handle);

impl Lock {
    /// A new lock, released.
    pub fn new(host: &Host) -> Result<Lock, Error> {
        Handle::create_one(host, Spec::Lock { recursive: false }).map(Lock)
    }

    fn handle(&self) -> &Handle {
        &self.0
    }

    /// Python's `acquire(block, timeout)`: whether the lock was taken.
    pub fn acquire(&self, block: bool, wait: Option<Duration>) -> Result<bool, Error> {
        self.0.flag(Request::Acquire { id: self.0.id(), timeout: timeout(block, wait) })
    }

    /// Releases the lock; an error if this process does not hold it.
    pub fn release(&self) -> Result<(), Error> {
        self.0.unit(Request::Release { id: self.0.id() })
    }
}

/// Python's `multiprocessing.RLock`: a [`Lock`] its owner may take again.
pub struct RLock(Lock);

impl RLock {
    /// A new re-entrant lock, released.
    pub fn new(host: &Host) -> Result<RLock, Error> {
        Handle::create_one(host, Spec::Lock { recursive: true }).map(|h| RLock(Lock(h)))
    }

    fn handle(&self) -> &Handle {
        &self.0.0
    }
}

impl std::ops::Deref for RLock {
    type Target = Lock;
    fn deref(&self) -> &Lock {
        &self.0
    }
}

/// Python's `multiprocessing.Semaphore` (or `BoundedSemaphore`).
pub struct Semaphore(Handle);

impl Semaphore {
    /// A semaphore starting at `value`; a bounded one may not be released past it.
    pub fn new(host: &Host, value: u32, bounded: bool) -> Result<Semaphore, Error> {
        Handle::create_one(host, Spec::Semaphore { value, bounded }).map(Semaphore)
    }

    fn handle(&self) -> &Handle {
        &self.0
    }

    /// Takes one unit: waits (up to `wait`, if given) when `block`; whether it got it.
    pub fn acquire(&self, block: bool, wait: Option<Duration>) -> Result<bool, Error> {
        self.0.flag(Request::Acquire { id: self.0.id(), timeout: timeout(block, wait) })
    }

    /// Gives one unit back (an error past a bounded semaphore's start value).
    pub fn release(&self) -> Result<(), Error> {
        self.0.unit(Request::Release { id: self.0.id() })
    }

    /// The units available now.
    pub fn get_value(&self) -> Result<u64, Error> {
        self.0.count(Request::SemaphoreValue { id: self.0.id() })
    }
}

/// Python's `multiprocessing.Event`.
pub struct Event(Handle);

impl Event {
    /// A new event, not set.
    pub fn new(host: &Host) -> Result<Event, Error> {
        Handle::create_one(host, Spec::Event).map(Event)
    }

    fn handle(&self) -> &Handle {
        &self.0
    }

    /// Sets the event: every waiter wakes.
    pub fn set(&self) -> Result<(), Error> {
        self.0.unit(Request::EventSet { id: self.0.id() })
    }

    /// Clears the event.
    pub fn clear(&self) -> Result<(), Error> {
        self.0.unit(Request::EventClear { id: self.0.id() })
    }

    /// Whether the event is set.
    pub fn is_set(&self) -> Result<bool, Error> {
        self.0.flag(Request::EventIsSet { id: self.0.id() })
    }

    /// Waits until the flag is set (or `timeout` passes); the flag.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        self.0.flag(Request::EventWait { id: self.0.id(), timeout: timeout.map(nanos) })
    }
}

/// Python's `multiprocessing.Condition`, over a new `RLock`.
pub struct Condition(Handle);

impl Condition {
    /// A new condition with its own re-entrant lock.
    pub fn new(host: &Host) -> Result<Condition, Error> {
        Handle::create_one(host, Spec::Condition { lock: None }).map(Condition)
    }

    fn handle(&self) -> &Handle {
        &self.0
    }

    /// The condition's lock, to acquire before `wait` and `notify`.
    pub fn get_lock(&self) -> Result<RLock, Error> {
        self.0.lock()
    }

    /// Releases the lock, waits for a notification (or `timeout`), takes
    /// the lock back; false on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        self.0.flag(Request::ConditionWait { id: self.0.id(), timeout: timeout.map(nanos) })
    }

    /// Wakes up to `n` waiters.
    pub fn notify(&self, n: u32) -> Result<(), Error> {
        self.0.unit(Request::ConditionNotify { id: self.0.id(), n: Some(n) })
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) -> Result<(), Error> {
        self.0.unit(Request::ConditionNotify { id: self.0.id(), n: None })
    }
}

/// Python's `multiprocessing.Barrier`.
pub struct Barrier(Handle);

impl Barrier {
    /// A barrier for `parties` processes.
    pub fn new(host: &Host, parties: u32) -> Result<Barrier, Error> {
        Handle::create_one(host, Spec::Barrier { parties }).map(Barrier)
    }

    fn handle(&self) -> &Handle {
        &self.0
    }

    /// Waits for all parties; this party's arrival index.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<u64, Error> {
        self.0.count(Request::BarrierWait { id: self.0.id(), timeout: timeout.map(nanos) })
    }

    /// Breaks the barrier: every waiter, now and later, gets an error.
    pub fn abort(&self) -> Result<(), Error> {
        self.0.unit(Request::BarrierAbort { id: self.0.id() })
    }
}

/// Python's `multiprocessing.Array` of integers or floats, with its lock.
pub struct Array(Handle);

impl Array {
    /// A new array of these values.
    pub fn new(host: &Host, values: Numbers) -> Result<Array, Error> {
        Handle::create_one(host, Spec::Array(values)).map(Array)
    }

    fn handle(&self) -> &Handle {
        &self.0
    }

    /// The value at `index`.
    pub fn get(&self, index: u32) -> Result<Number, Error> {
        match self.0.call(Request::ArrayGet { id: self.0.id(), index })? {
            Reply::Number(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Sets the value at `index`.
    pub fn set(&self, index: u32, value: Number) -> Result<(), Error> {
        self.0.unit(Request::ArraySet { id: self.0.id(), index, value })
    }

    /// The lock that guards the array.
    pub fn get_lock(&self) -> Result<RLock, Error> {
        self.0.lock()
    }
}

/// Python's `multiprocessing.Value`: an [`Array`] of one number.
pub struct Value(Array);

impl Value {
    /// A new value.
    pub fn new(host: &Host, value: Number) -> Result<Value, Error> {
        let values = match value {
            Number::Int(n) => Numbers::Ints(vec![n]),
            Number::Float(n) => Numbers::Floats(vec![n]),
        };
        Array::new(host, values).map(Value)
    }

    fn handle(&self) -> &Handle {
        &self.0.0
    }

    /// The value now.
    pub fn get(&self) -> Result<Number, Error> {
        self.0.get(0)
    }

    /// Sets the value.
    pub fn set(&self, value: Number) -> Result<(), Error> {
        self.0.set(0, value)
    }

    /// The lock that guards the value.
    pub fn get_lock(&self) -> Result<RLock, Error> {
        self.0.get_lock()
    }
}

serialize_as_token!(Queue, JoinableQueue, Connection, Lock, RLock, Semaphore, Event, Condition, Barrier, Array, Value);
