//! The messages a host and its workers say to each other (see
//! `channel.rs`), framed by the one codec of them all (`frame.rs`).
//!
//! On a worker's channel every message's bytes, joined, end with a head: a
//! request id (or a child's pid; little-endian `u64`) and a [`kind`] byte,
//! last, so that what comes before it (a large queue item, say) is taken as
//! it came, without a copy. What comes before is MessagePack (serde,
//! written by [`crate::codec`]; payloads inside, such as pool tasks' items,
//! travel as raw bytes) for the control messages here ([`Start`],
//! [`Order`], [`Report`]), and the shared objects' own encoding for object
//! requests (see `broker.rs`). The zygote's requests and answers are frames
//! of the same codec, without a head.

use crate::codec::{Batch, BatchResults};
use crate::journal::ProcessRecord;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::PathBuf;

mod frame;
pub(crate) use frame::{
    Framing, MAX_MESSAGE, decode_frame, encode_frame, encode_parts, read_bytes_frame, read_bytes_frame_async,
};
use frame::{MAGIC, decode, framed};

/// What a message on a worker's channel is, by the byte it ends with. The
/// numbers of each direction are their own.
pub(crate) mod kind {
    // From a worker to the root.
    /// An object request the worker waits for: answered with [`ANSWER`]
    /// or [`REFUSED`].
    pub(crate) const CALL: u8 = 1;
    /// An object request the worker does not wait for: answered only if
    /// it fails ([`FAILED`]).
    pub(crate) const SEND: u8 = 2;
    /// Withdraws a [`CALL`] (out of turn): it is dropped, unanswered.
    pub(crate) const CANCEL: u8 = 3;
    /// Answered with [`SYNCED`] once everything sent before is carried out.
    pub(crate) const SYNC: u8 = 4;
    /// The worker was told of the failures so far (see [`REFUSED`]).
    pub(crate) const ACK: u8 = 5;
    /// The worker returned the lease its id names (out of turn).
    pub(crate) const RETURNED: u8 = 7;
    /// The worker's table of lease counters: a sealed memfd, passed with
    /// this message (`SCM_RIGHTS`), before its first object request.
    pub(crate) const TALLY: u8 = 8;
    /// A [`super::Report`] of the worker's own.
    pub(crate) const REPORT: u8 = 16;
    /// The pids (`u32` each) of children the worker leaves running as it
    /// ends: the root adopts them.
    pub(crate) const ORPHANS: u8 = 17;
    /// The channel of the worker's new child, whose pid is the id: passed
    /// with this message (`SCM_RIGHTS`), for the root to serve.
    pub(crate) const ADOPT: u8 = 18;
    /// An [`super::Order`] for the worker's child whose pid is the id.
    pub(crate) const CHILD_ORDER: u8 = 19;

    // From the root to a worker.
    /// The answer to a [`CALL`]: the answer, then an allowance (`u64`).
    pub(crate) const ANSWER: u8 = 1;
    /// A [`SEND`] failed: its answer.
    pub(crate) const FAILED: u8 = 2;
    /// A [`CALL`] not carried out because a [`SEND`] before it failed
    /// (and the worker has not acknowledged it yet).
    pub(crate) const REFUSED: u8 = 3;
    /// The answer to a [`SYNC`].
    pub(crate) const SYNCED: u8 = 4;
    /// Items handed ahead, just before the answer to the [`CALL`] that
    /// took the first: its id the lease's serial, its body the object's
    /// id (`u64`), the lease's counter in the tally (`u32`) and each item,
    /// its length (`u32`) first.
    pub(crate) const LEASE: u8 = 5;
    /// The root wants the lease its id names back: answered with
    /// [`RETURNED`] unless all of it was taken.
    pub(crate) const RECALL: u8 = 6;
    /// The worker's [`super::Start`]: the first message it reads.
    pub(crate) const START: u8 = 15;
    /// An [`super::Order`] for the worker.
    pub(crate) const ORDER: u8 = 16;
    /// A [`super::Report`] of the worker's child whose pid is the id.
    pub(crate) const CHILD_REPORT: u8 = 17;
    /// The channel of the worker's child whose pid is the id is over, its
    /// requests all carried out or dropped: empty, or why it broke the
    /// protocol.
    pub(crate) const CHILD_END: u8 = 18;
}

/// The head every message on a worker's channel ends with.
pub(crate) const HEAD: usize = 9;

/// A channel message's kind, id and the rest, checked.
pub(crate) fn parse(mut message: Vec<u8>) -> Result<(u8, u64, Vec<u8>), String> {
    let at = message.len().checked_sub(HEAD).ok_or("a message shorter than its head")?;
    let id = u64::from_le_bytes(message[at..at + 8].try_into().expect("8 bytes"));
    let kind = message[at + 8];
    message.truncate(at);
    Ok((kind, id, message))
}

/// The head a message of `kind` about `id` ends with.
pub(crate) fn head(kind: u8, id: u64) -> [u8; HEAD] {
    let mut head = [kind; HEAD];
    head[..8].copy_from_slice(&id.to_le_bytes());
    head
}

/// A channel message of `kind` about `id`, `parts` before its head, framed.
pub(crate) fn message(kind: u8, id: u64, parts: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let head = head(kind, id);
    let mut all = parts.to_vec();
    all.push(&head);
    encode_parts(&all)
}

/// A control message (`value`, MessagePack) of `kind` about `id`, framed.
pub(crate) fn control<T: Serialize>(kind: u8, id: u64, value: &T) -> std::io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(256);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[0; 4]);
    crate::codec::encode_into(&mut frame, value).map_err(std::io::Error::other)?;
    frame.extend_from_slice(&head(kind, id));
    framed(frame)
}

/// The body of a control message, decoded.
pub(crate) fn decode_control<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    decode(body)
}

/// What a host tells a new worker to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Start {
    /// The program's compiled code, which comes as a sealed descriptor
    /// beside this message: what it must be.
    pub(crate) code: CodeId,
    pub(crate) source: Option<PathBuf>,
    pub(crate) core: bool,
    pub(crate) entries: Vec<String>,
    pub(crate) has_main: bool,
    pub(crate) entry: Option<String>,
    pub(crate) input: Vec<u8>,
    /// The launch's ticket for the shared objects handed to it.
    pub(crate) ticket: Option<u64>,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dirs: Vec<(PathBuf, String)>,
    pub(crate) max_memory: Option<u64>,
    pub(crate) fuel: Option<u64>,
    /// Time left before the deadline, in nanoseconds.
    pub(crate) time_left: Option<u64>,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// The parent's pid, which a daemon checks it still has.
    pub(crate) parent: u32,
    /// The parent's name when it is a process of the run (a worker);
    /// `None` when it is the root host (the process is top-level).
    #[serde(default)]
    pub(crate) parent_name: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) labelled: bool,
    /// The engine settings the code was compiled with.
    pub(crate) engine: EngineSettings,
    /// A pool worker: it serves [`Task`]s instead of running `entry`.
    pub(crate) serve: Option<Serve>,
    /// Keep a journal of the worker's descendants and send it up in [`Ended`].
    #[serde(default)]
    pub(crate) journal: bool,
    /// The worker's stdin is the guest's (else the guest has none).
    #[serde(default)]
    pub(crate) stdin: bool,
}

/// What makes a worker a pool worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Serve {
    /// An entry and its argument (MessagePack), run once before the first task.
    pub(crate) initializer: Option<(String, Vec<u8>)>,
    pub(crate) max_tasks: Option<u32>,
    /// Each task's time limit, in nanoseconds.
    pub(crate) task_timeout: Option<u64>,
}

/// One task for a pool worker: an entry and its inputs (MessagePack, back
/// to back), one input unless `many`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) entry: String,
    pub(crate) inputs: Batch,
    pub(crate) many: bool,
}

/// What a host tells a pool worker after its start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum Order {
    /// Run this task after those sent before it.
    Task(Task),
    /// Give back the tasks sent before this order that are not started.
    Revoke,
    /// No more tasks come: end once those sent are done.
    Close,
}

/// What a worker tells its host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum Report {
    /// A task's results (MessagePack, or an entry's error), one per input.
    Done { id: u64, results: BatchResults },
    /// The answer to a [`Order::Revoke`]: the last `count` tasks sent before
    /// it were not started, and never will be.
    Returned { count: u64 },
    /// The worker's end: the last frame.
    Ended(Ended),
}

/// What a worker checks the compiled code it is handed against.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CodeId {
    pub(crate) len: u64,
    pub(crate) digest: u64,
}

/// Settings that must match for a worker to load the host's compiled code.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub(crate) struct EngineSettings {
    pub(crate) fuel: bool,
    pub(crate) max_memory: u64,
}

/// What a worker tells its host as it ends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Ended {
    pub(crate) code: i32,
    pub(crate) reason: Option<String>,
    /// What the worker's process used (see [`crate::journal::Usage`]).
    #[serde(default)]
    pub(crate) peak_memory: u64,
    #[serde(default)]
    pub(crate) fuel_used: Option<u64>,
    /// The records of its descendants that ended in it (if asked to keep a journal).
    #[serde(default)]
    pub(crate) descendants: Vec<Record>,
}

impl Ended {
    /// An end with nothing measured (what a worker that ends early reports).
    #[cfg(test)]
    pub(crate) fn new(code: i32, reason: Option<String>) -> Ended {
        Ended { code, reason, peak_memory: 0, fuel_used: None, descendants: Vec::new() }
    }
}

/// A [`ProcessRecord`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    pub(crate) daemon: bool,
    pub(crate) exitcode: i32,
    pub(crate) failure: Option<String>,
    pub(crate) wall_ns: u64,
    pub(crate) fuel_used: Option<u64>,
    pub(crate) peak_memory: u64,
}

impl From<ProcessRecord> for Record {
    fn from(r: ProcessRecord) -> Record {
        Record {
            name: r.name,
            pid: r.pid,
            ppid: r.ppid,
            daemon: r.daemon,
            exitcode: r.exitcode.code(),
            failure: r.failure,
            wall_ns: r.wall.as_nanos().min(u128::from(u64::MAX)) as u64,
            fuel_used: r.fuel_used,
            peak_memory: r.peak_memory,
        }
    }
}

impl From<Record> for ProcessRecord {
    fn from(r: Record) -> ProcessRecord {
        ProcessRecord {
            name: r.name,
            pid: r.pid,
            ppid: r.ppid,
            daemon: r.daemon,
            exitcode: crate::ExitCode::from(r.exitcode),
            failure: r.failure,
            wall: std::time::Duration::from_nanos(r.wall_ns),
            fuel_used: r.fuel_used,
            peak_memory: r.peak_memory,
        }
    }
}

#[cfg(test)]
mod tests;
