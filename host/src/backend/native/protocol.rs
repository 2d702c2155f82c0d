//! The one frame codec of everything a host and its workers say to each
//! other, and the messages of a worker's channel (see `channel.rs`).
//!
//! A message is one or more frames: each a 4-byte magic, a little-endian
//! `u32` whose low 31 bits are the frame's length (at most [`CHUNK`]) and
//! whose top bit says more frames of the message follow, and that many
//! bytes. So a message of any size up to what its reader accepts travels
//! (a 17 MiB pool result, say), and a reader's memory grows only with the
//! bytes that actually came. On a worker's channel every message's bytes,
//! joined, end with a head: a request id (or a child's pid; little-endian
//! `u64`) and a [`kind`] byte, last, so that what comes before it (a large
//! queue item, say) is taken as it came, without a copy. What comes
//! before is MessagePack (serde, written by [`crate::codec`]; payloads
//! inside, such as pool tasks' items, travel as raw bytes) for the control
//! messages here ([`Start`], [`Order`], [`Report`]), and the shared
//! objects' own encoding for object requests (see `broker.rs`). The zygote's
//! requests and answers are frames of the same codec, without a head.
//! The magic carries the protocol version, so a worker of another build is
//! refused rather than misread. The decoder never trusts a peer: a wrong
//! magic, an oversized frame or message, an empty frame that says more
//! follow, a truncated frame or a body of the wrong shape is an [`Err`]
//! with a message, never a panic or a hang.

use crate::codec::{Batch, BatchResults};
use crate::journal::ProcessRecord;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::Read;
use std::path::PathBuf;

/// `MPH` and the protocol version.
const MAGIC: [u8; 4] = *b"MPH5";
/// The most bytes one frame carries: a larger message is cut into frames,
/// each but the last marked [`MORE`] in its length's top bit, which the
/// reader joins. So a reader's memory grows only with the bytes that came,
/// never with a length a peer announced.
pub(crate) const CHUNK: usize = 1 << 20;
/// A frame's length has this bit set when more frames of its message follow.
const MORE: u32 = 1 << 31;
/// What a reader reserves beyond a frame that says more follow.
const TAIL_ROOM: usize = 4 << 10;
/// The largest control message (a pool task or its results, a start, an
/// end) either side accepts.
pub(crate) const MAX_MESSAGE: usize = 1 << 30;

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

/// A message as frames; an error if it is larger than [`MAX_MESSAGE`].
pub(crate) fn encode_frame<T: Serialize>(message: &T) -> std::io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(256);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[0; 4]);
    crate::codec::encode_into(&mut frame, message).map_err(std::io::Error::other)?;
    framed(frame)
}

/// `frame`, a message's bytes after 8 bytes kept for its first head, as
/// frames: in place when it fits one.
fn framed(mut frame: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let length = frame.len() - 8;
    if length > MAX_MESSAGE {
        return Err(too_large(length, MAX_MESSAGE));
    }
    if length <= CHUNK {
        // The common case: one frame, written in place.
        frame[4..8].copy_from_slice(&(length as u32).to_le_bytes());
        return Ok(frame);
    }
    let body = [&frame[8..]];
    Ok(chunked(&body, &Framing::new(&body)?))
}

/// The bytes of `parts`, back to back, as one message of this protocol's
/// frames (without joining them first).
pub(crate) fn encode_parts(parts: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    Ok(chunked(parts, &Framing::new(parts)?))
}

fn too_large(length: usize, limit: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("a message of {length} bytes exceeds the protocol's limit of {limit}"),
    )
}

/// The frames of one message: their heads, which [`Framing::slices`] puts
/// between its parts, so that a large message is written as it lies, not
/// copied into one buffer first.
pub(crate) struct Framing {
    heads: Vec<[u8; 8]>,
}

impl Framing {
    /// The frames of `parts`, back to back, cut at most [`CHUNK`] bytes
    /// apart, each but the last marked [`MORE`]; an error past [`MAX_MESSAGE`].
    pub(crate) fn new(parts: &[&[u8]]) -> std::io::Result<Framing> {
        let length: usize = parts.iter().map(|part| part.len()).sum();
        if length > MAX_MESSAGE {
            return Err(too_large(length, MAX_MESSAGE));
        }
        let mut heads = Vec::with_capacity(length.div_ceil(CHUNK).max(1));
        let mut left = length;
        loop {
            let this = left.min(CHUNK);
            let more = if left > CHUNK { MORE } else { 0 };
            let mut head = [0u8; 8];
            head[..4].copy_from_slice(&MAGIC);
            head[4..].copy_from_slice(&(this as u32 | more).to_le_bytes());
            heads.push(head);
            left -= this;
            if left == 0 {
                return Ok(Framing { heads });
            }
        }
    }

    /// The message as slices to write in order: the heads, and between
    /// them the `parts` (those `new` was given), nothing copied.
    pub(crate) fn slices<'a>(&'a self, parts: &[&'a [u8]]) -> Vec<std::io::IoSlice<'a>> {
        let mut slices = Vec::with_capacity(parts.len() + 2 * self.heads.len());
        let mut heads = self.heads.iter();
        let mut room = 0;
        for part in parts {
            let mut part = *part;
            loop {
                if room == 0
                    && let Some(head) = heads.next()
                {
                    room = (u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) & !MORE) as usize;
                    slices.push(std::io::IoSlice::new(head));
                }
                let take = part.len().min(room);
                if take > 0 {
                    slices.push(std::io::IoSlice::new(&part[..take]));
                }
                part = &part[take..];
                room -= take;
                if part.is_empty() {
                    break;
                }
            }
        }
        slices
    }
}

/// `parts`, framed by `framing`, in one buffer.
fn chunked(parts: &[&[u8]], framing: &Framing) -> Vec<u8> {
    let slices = framing.slices(parts);
    let mut out = Vec::with_capacity(slices.iter().map(|slice| slice.len()).sum());
    for slice in &slices {
        out.extend_from_slice(slice);
    }
    out
}

/// Reads one message of opaque bytes of at most `limit` bytes; `Ok(None)`
/// if the peer closed before sending any byte.
pub(crate) async fn read_bytes_frame_async(
    input: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: usize,
) -> Result<Option<Vec<u8>>, String> {
    read_body_async(input, limit).await
}

/// Reads one message of opaque bytes of at most `limit` bytes, exactly (no
/// byte past it is read); `Ok(None)` if the peer closed before sending any.
pub(crate) fn read_bytes_frame(input: &mut impl Read, limit: usize) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; 8];
        let got = read_full(&mut header, |buf| input.read(buf))?;
        let Some((length, more)) = chunk_length(&header, got, body.len(), limit, body.is_empty())? else {
            return Ok(None);
        };
        let at = body.len();
        body.resize(at + length, 0);
        input.read_exact(&mut body[at..]).map_err(|_| "truncated frame body".to_string())?;
        if !more {
            return Ok(Some(body));
        }
    }
}

/// Reads one message's body of at most `limit` bytes, frame by frame: what
/// it holds grows only with the bytes that came.
async fn read_body_async(
    input: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: usize,
) -> Result<Option<Vec<u8>>, String> {
    use tokio::io::AsyncReadExt;
    let mut body = Vec::new();
    let mut first = true;
    loop {
        let mut header = [0u8; 8];
        let mut got = 0;
        while got < header.len() {
            match input.read(&mut header[got..]).await {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(format!("cannot read frame: {e}")),
            }
        }
        let Some((length, more)) = chunk_length(&header, got, body.len(), limit, first)? else {
            return Ok(None);
        };
        first = false;
        // Read into the spare room as it is, not zeroed first. A frame
        // that says more follow reserves a little more: a message just
        // over a frame (a 1 MiB item and its head) then needs no second
        // allocation and copy for its short last frame.
        let end = body.len() + length;
        body.reserve(if more { length + TAIL_ROOM } else { length });
        while body.len() < end {
            let left = (end - body.len()) as u64;
            match (&mut *input).take(left).read_buf(&mut body).await {
                Ok(0) | Err(_) => return Err("truncated frame body".into()),
                Ok(_) => {}
            }
        }
        if !more {
            return Ok(Some(body));
        }
    }
}

/// Fills `buffer` until end-of-file; how many bytes it got.
fn read_full(buffer: &mut [u8], mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>) -> Result<usize, String> {
    let mut got = 0;
    while got < buffer.len() {
        match read(&mut buffer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read frame: {e}")),
        }
    }
    Ok(got)
}

/// The length of the frame whose header of `got` bytes was read, and
/// whether more frames of the message follow, with `so_far` bytes of the
/// message read; `None` for no message (end-of-file before a `first` frame).
fn chunk_length(
    header: &[u8; 8],
    got: usize,
    so_far: usize,
    limit: usize,
    first: bool,
) -> Result<Option<(usize, bool)>, String> {
    match got {
        0 if first => Ok(None),
        8 => {
            let (length, more) = frame_header(header)?;
            if so_far + length > limit {
                return Err(format!(
                    "a message of more than {} bytes exceeds the limit of {limit}",
                    so_far + length - 1
                ));
            }
            Ok(Some((length, more)))
        }
        _ => Err("truncated frame header".into()),
    }
}

/// Decodes a whole message held in memory.
pub(crate) fn decode_frame<T: DeserializeOwned>(frame: &[u8]) -> Result<T, String> {
    let mut rest = frame;
    let mut body = Vec::new();
    loop {
        let header: [u8; 8] = rest.get(..8).and_then(|h| h.try_into().ok()).ok_or("truncated frame header")?;
        let (length, more) = frame_header(&header)?;
        if body.len() + length > MAX_MESSAGE {
            return Err(format!("a message exceeds the limit of {MAX_MESSAGE}"));
        }
        body.extend_from_slice(rest.get(8..8 + length).ok_or("truncated frame body")?);
        rest = &rest[8 + length..];
        if !more {
            break;
        }
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the frame".into());
    }
    decode(&body)
}

/// A frame header's length and whether more frames follow.
fn frame_header(header: &[u8; 8]) -> Result<(usize, bool), String> {
    if header[..4] != MAGIC {
        return Err("not a frame of this protocol version (bad magic)".into());
    }
    let word = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let (length, more) = ((word & !MORE) as usize, word & MORE != 0);
    if length > CHUNK {
        return Err(format!("a frame of {length} bytes exceeds the limit of {CHUNK}"));
    }
    if more && length == 0 {
        return Err("an empty frame in the middle of a message".into());
    }
    Ok((length, more))
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    crate::codec::decode(body).map_err(|e| format!("malformed message: {e}"))
}

#[cfg(test)]
mod tests;
