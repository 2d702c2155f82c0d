//! The control channel between a host and its workers, and the one frame
//! codec of every message between them.
//!
//! A message is one or more frames: each a 4-byte magic, a little-endian
//! `u32` whose low 31 bits are the frame's length (at most [`CHUNK`]) and
//! whose top bit says more frames of the message follow, and that many
//! bytes. The message's bytes, joined, are MessagePack (serde, written by
//! [`crate::codec`]: payloads inside, such as pool tasks' items, travel as
//! raw bytes) for the control messages here, the broker's own messages
//! around the shared objects' encoding for what a worker exchanges with its
//! root (see `broker.rs`). So a message of any size up to what its reader
//! accepts travels (a 17 MiB pool result, say), and a reader's memory grows
//! only with the bytes that actually came. The host writes a [`Start`] on
//! the worker's stdin, then (a pool worker) [`Order`]s: tasks, several sent
//! ahead, and now and then a revoke of those not started; the worker writes
//! on its report pipe a [`Report::Done`] per finished task (before it takes
//! the next), a [`Report::Returned`] per revoke, then one [`Report::Ended`]
//! as it ends. The magic carries the protocol
//! version, so a worker of another build is refused rather than misread.
//! The decoder never trusts a peer: a wrong magic, an oversized frame or
//! message, an empty frame that says more follow, a truncated frame or a
//! body of the wrong shape is an [`Err`] with a message, never a panic or
//! a hang.

use crate::codec::{Batch, BatchResults};
use crate::journal::ProcessRecord;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::{Read, Write};
use std::path::PathBuf;

/// `MPH` and the protocol version.
const MAGIC: [u8; 4] = *b"MPH4";
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
}

/// What a worker tells its host on the report pipe.
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

pub(crate) fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> std::io::Result<()> {
    out.write_all(&encode_frame(message)?)?;
    out.flush()
}

/// Reads one message; `Ok(None)` if the peer closed before sending any byte.
pub(crate) fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> Result<Option<T>, String> {
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; 8];
        let got = read_full(&mut header, |buf| input.read(buf))?;
        let Some((length, more)) = chunk_length(&header, got, body.len(), MAX_MESSAGE, body.is_empty())? else {
            return Ok(None);
        };
        let at = body.len();
        body.resize(at + length, 0);
        input.read_exact(&mut body[at..]).map_err(|_| "truncated frame body".to_string())?;
        if !more {
            return decode(&body).map(Some);
        }
    }
}

/// [`read_frame`], without holding a thread while the peer is silent.
pub(crate) async fn read_frame_async<T: DeserializeOwned>(
    input: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Option<T>, String> {
    match read_body_async(input, MAX_MESSAGE).await? {
        Some(body) => decode(&body).map(Some),
        None => Ok(None),
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
