//! The control channel between a host and its workers, and the one frame
//! codec of every message between them.
//!
//! A frame is a 4-byte magic, a little-endian `u32` length, and that many
//! bytes of MessagePack (serde, written by [`crate::codec`]: payloads inside,
//! such as pool tasks' items, travel as raw bytes) for the control messages
//! here, another layer's encoding for the shared-object requests and answers
//! a worker exchanges with its root (see `broker.rs`). The host writes a [`Start`] on the worker's stdin,
//! then (a pool worker) one [`Task`] at a time; the worker writes on its
//! report pipe a [`Report::Done`] per finished task, then one
//! [`Report::Ended`] as it ends. The magic carries the protocol version, so a worker
//! of another build is refused rather than misread. The decoder never trusts
//! a peer: a wrong magic, an oversized length, a truncated body or a body of
//! the wrong shape is an [`Err`] with a message, never a panic or a hang.

use crate::codec::{Batch, BatchResults};
use crate::journal::ProcessRecord;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::{Read, Write};
use std::path::PathBuf;

/// `MPH` and the protocol version.
const MAGIC: [u8; 4] = *b"MPH3";
/// The largest frame of a control message either side accepts.
pub(crate) const MAX_FRAME: usize = 16 << 20;
/// The largest frame of opaque bytes (a shared-object request or answer,
/// whose own encoding bounds its head to 16 MiB and its payload to 4 MiB).
pub(crate) const MAX_BYTES_FRAME: usize = 21 << 20;

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

/// What a worker tells its host on the report pipe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum Report {
    /// A task's results (MessagePack, or an entry's error), one per input.
    Done { id: u64, results: BatchResults },
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

/// A message as one frame; an error if it is larger than the peer accepts.
pub(crate) fn encode_frame<T: Serialize>(message: &T) -> std::io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(256);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[0; 4]);
    crate::codec::encode_into(&mut frame, message).map_err(std::io::Error::other)?;
    let length = frame.len() - 8;
    if length > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a message of {length} bytes exceeds the protocol's limit of {MAX_FRAME}"),
        ));
    }
    frame[4..8].copy_from_slice(&(length as u32).to_le_bytes());
    Ok(frame)
}

/// Opaque bytes (another layer's encoding) as one frame of this protocol.
pub(crate) fn encode_bytes_frame(body: &[u8]) -> std::io::Result<Vec<u8>> {
    if body.len() > MAX_BYTES_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a message of {} bytes exceeds the protocol's limit of {MAX_BYTES_FRAME}", body.len()),
        ));
    }
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    Ok(frame)
}

/// Reads one frame of opaque bytes; `Ok(None)` if the peer closed before
/// sending any byte.
pub(crate) async fn read_bytes_frame_async(
    input: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Option<Vec<u8>>, String> {
    read_body_async(input, MAX_BYTES_FRAME).await
}

pub(crate) fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> std::io::Result<()> {
    out.write_all(&encode_frame(message)?)?;
    out.flush()
}

/// [`write_frame`], without holding a thread while the pipe is full.
pub(crate) async fn write_frame_async<T: Serialize>(
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    message: &T,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    out.write_all(&encode_frame(message)?).await
}

/// Reads one frame; `Ok(None)` if the peer closed before sending any byte.
pub(crate) fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> Result<Option<T>, String> {
    let mut header = [0u8; 8];
    let got = read_full(&mut header, |buf| input.read(buf))?;
    let Some(length) = frame_length(&header, got, MAX_FRAME)? else { return Ok(None) };
    let mut body = vec![0u8; length];
    input.read_exact(&mut body).map_err(|_| "truncated frame body".to_string())?;
    decode(&body).map(Some)
}

/// [`read_frame`], without holding a thread while the peer is silent.
pub(crate) async fn read_frame_async<T: DeserializeOwned>(
    input: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Option<T>, String> {
    match read_body_async(input, MAX_FRAME).await? {
        Some(body) => decode(&body).map(Some),
        None => Ok(None),
    }
}

/// Reads one frame's body of at most `limit` bytes.
async fn read_body_async(
    input: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: usize,
) -> Result<Option<Vec<u8>>, String> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 8];
    let mut got = 0;
    while got < header.len() {
        match input.read(&mut header[got..]).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("cannot read frame: {e}")),
        }
    }
    let Some(length) = frame_length(&header, got, limit)? else { return Ok(None) };
    let mut body = vec![0u8; length];
    input
        .read_exact(&mut body)
        .await
        .map_err(|_| "truncated frame body".to_string())?;
    Ok(Some(body))
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

/// The body length a header of `got` bytes announces; `None` for no frame.
fn frame_length(header: &[u8; 8], got: usize, limit: usize) -> Result<Option<usize>, String> {
    match got {
        0 => Ok(None),
        8 => body_length(header, limit).map(Some),
        _ => Err("truncated frame header".into()),
    }
}

/// Decodes a whole frame held in memory.
pub(crate) fn decode_frame<T: DeserializeOwned>(frame: &[u8]) -> Result<T, String> {
    let header: [u8; 8] = frame
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or("truncated frame header")?;
    let length = body_length(&header, MAX_FRAME)?;
    let body = frame.get(8..8 + length).ok_or("truncated frame body")?;
    if frame.len() > 8 + length {
        return Err("trailing bytes after the frame".into());
    }
    decode(body)
}

fn body_length(header: &[u8; 8], limit: usize) -> Result<usize, String> {
    if header[..4] != MAGIC {
        return Err("not a frame of this protocol version (bad magic)".into());
    }
    let length = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    if length > limit {
        return Err(format!("frame of {length} bytes exceeds the limit of {limit}"));
    }
    Ok(length)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    crate::codec::decode(body).map_err(|e| format!("malformed message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(items: &[&[u8]]) -> Batch {
        let mut batch = Batch::default();
        items.iter().for_each(|item| batch.push(item));
        batch
    }

    fn results() -> BatchResults {
        BatchResults { results: batch(&[b"\x09", b""]), failed: vec![(1, "bad".into())] }
    }

    fn frame<T: Serialize>(message: &T) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, message).unwrap();
        out
    }

    #[test]
    fn round_trip() {
        let message = Ended::new(3, Some("why".into()));
        let bytes = frame(&message);
        assert_eq!(read_frame::<Ended>(&mut &bytes[..]), Ok(Some(message.clone())));
        assert_eq!(decode_frame::<Ended>(&bytes), Ok(message));
        assert_eq!(read_frame::<Ended>(&mut &[][..]), Ok(None));
        let task = Task { id: 7, entry: "square".into(), inputs: batch(&[b"\x03", b"\x04"]), many: true };
        assert_eq!(decode_frame::<Task>(&frame(&task)), Ok(task));
        let done = Report::Done { id: 7, results: results() };
        assert_eq!(read_frame::<Report>(&mut &frame(&done)[..]), Ok(Some(done)));
    }

    #[test]
    fn oversized_messages_are_refused() {
        let task = Task { id: 1, entry: "e".into(), inputs: Batch::one(vec![b'x'; MAX_FRAME]), many: false };
        assert!(encode_frame(&task).unwrap_err().to_string().contains("exceeds"));
    }

    #[test]
    fn hostile_frames_are_errors() {
        let good = frame(&Ended::new(0, None));
        for cut in 1..good.len() {
            assert!(read_frame::<Ended>(&mut &good[..cut]).is_err(), "cut at {cut}");
            assert!(decode_frame::<Ended>(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_frame::<Ended>(&mut &huge[..]).unwrap_err().contains("exceeds"));
        let mut wrong = good.clone();
        wrong[0] = b'X';
        assert!(read_frame::<Ended>(&mut &wrong[..]).is_err());
        let mut other = MAGIC.to_vec();
        other.extend_from_slice(&4u32.to_le_bytes());
        other.extend_from_slice(b"[1] ");
        assert!(read_frame::<Ended>(&mut &other[..]).unwrap_err().contains("malformed"));
    }

    /// A cheap deterministic fuzz of the decoder: random bytes and random
    /// mutations of a valid frame never panic.
    #[test]
    fn decoder_survives_random_input() {
        let frames = [
            frame(&Ended::new(-15, Some("terminated".into()))),
            frame(&Report::Done { id: 3, results: results() }),
            frame(&Task { id: 3, entry: "f".into(), inputs: batch(&[b"\x92\x01\x02"]), many: true }),
        ];
        for bytes in crate::fuzz::mutants(&frames, 0x9e37_79b9_7f4a_7c15u64) {
            let _ = decode_frame::<Ended>(&bytes);
            let _ = read_frame::<Start>(&mut &bytes[..]);
            let _ = decode_frame::<Report>(&bytes);
            let _ = read_frame::<Task>(&mut &bytes[..]);
        }
    }

    /// Frames of opaque bytes (a shared-object request or answer) go through
    /// the same codec: they round-trip, a cut or oversized one is an error,
    /// and mutants never panic the reader.
    #[test]
    fn bytes_frames_round_trip_and_survive_random_input() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let read = |bytes: &[u8]| runtime.block_on(read_bytes_frame_async(&mut &bytes[..]));
        let body = b"\x05\0\0\0{\"a\":1}payload".to_vec();
        let frame = encode_bytes_frame(&body).unwrap();
        assert_eq!(read(&frame), Ok(Some(body.clone())));
        assert_eq!(read(&[]), Ok(None));
        for cut in 1..frame.len() {
            assert!(read(&frame[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read(&huge).unwrap_err().contains("exceeds"));
        assert!(encode_bytes_frame(&vec![0; MAX_BYTES_FRAME + 1]).is_err());
        // Larger than a control frame may be, within the bytes frames' bound.
        let big = vec![7u8; MAX_FRAME + 1];
        assert_eq!(read(&encode_bytes_frame(&big).unwrap()), Ok(Some(big)));
        let frames = [frame, encode_bytes_frame(b"").unwrap()];
        for bytes in crate::fuzz::mutants(&frames, 0x51_7cc1_b727_220au64) {
            let _ = read(&bytes);
        }
    }
}
