//! What a process asks of the shared objects and what it is answered:
//! [`Request`] names an object and an operation, [`Reply`] carries the
//! result, the same on the thread backend (a call into the registry) and
//! on the wire to a root host. The bytes of a message ride beside them as
//! a [`Payload`], outside the encoded request.

use super::{Error, Token, container};
use serde::{Deserialize, Serialize};

/// The kinds of shared object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Kind {
    Queue,
    Connection,
    Lock,
    Semaphore,
    Event,
    Condition,
    Barrier,
    Array,
    /// A manager's dict.
    Dict,
    /// A manager's list.
    List,
    /// A manager's namespace.
    Namespace,
}

impl Kind {
    pub(super) const ALL: [Kind; 11] = [
        Kind::Queue,
        Kind::Connection,
        Kind::Lock,
        Kind::Semaphore,
        Kind::Event,
        Kind::Condition,
        Kind::Barrier,
        Kind::Array,
        Kind::Dict,
        Kind::List,
        Kind::Namespace,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Queue => "queue",
            Kind::Connection => "connection",
            Kind::Lock => "lock",
            Kind::Semaphore => "semaphore",
            Kind::Event => "event",
            Kind::Condition => "condition",
            Kind::Barrier => "barrier",
            Kind::Array => "array",
            Kind::Dict => "dict",
            Kind::List => "list",
            Kind::Namespace => "namespace",
        }
    }
}

/// A number of a `Value` or `Array`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Number {
    /// An integer (Python's `'i'`, `'q'`).
    Int(i64),
    /// A float (Python's `'d'`).
    Float(f64),
}

/// The contents of an `Array`: integers or floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Numbers {
    /// Integers.
    Ints(Vec<i64>),
    /// Floats.
    Floats(Vec<f64>),
}

/// What a new object is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Spec {
    /// `maxsize` 0: unbounded.
    Queue {
        maxsize: u32,
        joinable: bool,
    },
    Pipe {
        duplex: bool,
    },
    Lock {
        recursive: bool,
    },
    Semaphore {
        value: u32,
        bounded: bool,
    },
    Event,
    /// The condition's lock: an existing lock (by id) or a new `RLock`.
    Condition {
        lock: Option<u64>,
    },
    Barrier {
        parties: u32,
    },
    Array(Numbers),
    /// A manager's container: dict, list or namespace.
    Container(Kind),
}

/// One operation on the registry. Blocking operations carry their timeout
/// (`None`: wait for ever; `Some(0)`: do not block) in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Request {
    Create(Spec),
    /// Opens a token found in the caller's spawn arguments.
    Open(Token),
    /// Holds `id` for a child the caller is about to spawn with its token.
    Reserve {
        id: u64,
    },
    /// The caller starts a child with these objects' tokens in its
    /// arguments (an id once per token): one of its reservations of each
    /// passes to the child's `ticket`, so that it no longer ends with the
    /// caller.
    Hand {
        ticket: u64,
        ids: Vec<u64>,
    },
    /// The caller, a child that has just started, takes what was handed to
    /// its `ticket`: reservations that are now its own, until it opens
    /// them or ends.
    Claim {
        ticket: u64,
    },
    /// The caller is about to fork: every hold it has on an open object is
    /// copied to `ticket`, for the forked child.
    HandForked {
        ticket: u64,
    },
    /// The caller, a child just forked, takes what its parent handed to
    /// `ticket`: the objects its copy of its parent's handles name, open.
    ClaimForked {
        ticket: u64,
    },
    /// The child of `ticket` has ended: what it never claimed is dropped.
    Unticket {
        ticket: u64,
    },
    /// Drops one of the caller's holds on `id`.
    Drop {
        id: u64,
    },
    Put {
        id: u64,
        item: Payload,
        timeout: Option<u64>,
    },
    Get {
        id: u64,
        timeout: Option<u64>,
    },
    QueueSize {
        id: u64,
    },
    TaskDone {
        id: u64,
    },
    JoinQueue {
        id: u64,
    },
    Send {
        id: u64,
        message: Payload,
    },
    Recv {
        id: u64,
    },
    Poll {
        id: u64,
        timeout: Option<u64>,
    },
    Acquire {
        id: u64,
        timeout: Option<u64>,
    },
    Release {
        id: u64,
    },
    SemaphoreValue {
        id: u64,
    },
    EventSet {
        id: u64,
    },
    EventClear {
        id: u64,
    },
    EventIsSet {
        id: u64,
    },
    EventWait {
        id: u64,
        timeout: Option<u64>,
    },
    /// The lock of a condition or an array, which the caller then holds.
    GetLock {
        id: u64,
    },
    ConditionWait {
        id: u64,
        timeout: Option<u64>,
    },
    /// `None`: notify all.
    ConditionNotify {
        id: u64,
        n: Option<u32>,
    },
    BarrierWait {
        id: u64,
        timeout: Option<u64>,
    },
    BarrierAbort {
        id: u64,
    },
    BarrierReset {
        id: u64,
    },
    BarrierState {
        id: u64,
    },
    ArrayLen {
        id: u64,
    },
    ArrayGet {
        id: u64,
        index: u32,
    },
    ArraySet {
        id: u64,
        index: u32,
        value: Number,
    },
    ArrayGetAll {
        id: u64,
    },
    /// An operation on a manager's container; its key and value travel
    /// as the payload (see [`container::pack`]).
    Container {
        id: u64,
        op: container::Op,
        data: Payload,
    },
    /// Whether the queue is full.
    QueueFull {
        id: u64,
    },
    /// Waits until one of these connections has a message or end-of-file
    /// to read; the indices of those that do (none at the timeout).
    PollMany {
        ids: Vec<u64>,
        timeout: Option<u64>,
    },
}

/// The bytes of a message: carried beside the request on the wire, not
/// inside its JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Payload(#[serde(skip)] pub(crate) Vec<u8>);

impl Request {
    /// The message this request carries, if any.
    pub(crate) fn payload_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            Request::Put { item, .. } => Some(&mut item.0),
            Request::Send { message, .. } => Some(&mut message.0),
            Request::Container { data, .. } => Some(&mut data.0),
            _ => None,
        }
    }

    /// Whether the request gives the caller a new hold (so that the thread
    /// backend watches for the caller's end).
    pub(super) fn adds_holds(&self) -> bool {
        matches!(
            self,
            Request::Create(_)
                | Request::Open(_)
                | Request::Reserve { .. }
                | Request::Claim { .. }
                | Request::ClaimForked { .. }
                | Request::GetLock { .. }
        )
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Reply {
    Unit,
    Bool(bool),
    Count(u64),
    Bytes(Payload),
    /// New handles: one, or two for a pipe.
    Handles(Vec<Token>),
    Number(Number),
    Numbers(Numbers),
    Barrier {
        parties: u32,
        waiting: u32,
        broken: bool,
    },
    /// Indices (of a `PollMany`'s connections).
    Indices(Vec<u32>),
}

impl Reply {
    pub(crate) fn payload_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            Reply::Bytes(bytes) => Some(&mut bytes.0),
            _ => None,
        }
    }
}

pub(crate) type Answer = Result<Reply, Error>;
