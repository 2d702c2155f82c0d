//! The one frame codec of everything a host and its workers say to each
//! other.
//!
//! A message is one or more frames: each a 4-byte magic, a little-endian
//! `u32` whose low 31 bits are the frame's length (at most [`CHUNK`]) and
//! whose top bit says more frames of the message follow, and that many
//! bytes. So a message of any size up to what its reader accepts travels
//! (a 17 MiB pool result, say), and a reader's memory grows only with the
//! bytes that actually came. The magic carries the protocol version, so a
//! worker of another build is refused rather than misread. The decoder
//! never trusts a peer: a wrong magic, an oversized frame or message, an
//! empty frame that says more follow, a truncated frame or a body of the
//! wrong shape is an [`Err`] with a message, never a panic or a hang.

use serde::{Serialize, de::DeserializeOwned};
use std::io::Read;

/// `MPH` and the protocol version.
pub(super) const MAGIC: [u8; 4] = *b"MPH5";
/// The most bytes one frame carries: a larger message is cut into frames,
/// each but the last marked [`MORE`] in its length's top bit, which the
/// reader joins. So a reader's memory grows only with the bytes that came,
/// never with a length a peer announced.
pub(crate) const CHUNK: usize = 1 << 20;
/// A frame's length has this bit set when more frames of its message follow.
pub(super) const MORE: u32 = 1 << 31;
/// What a reader reserves beyond a frame that says more follow.
const TAIL_ROOM: usize = 4 << 10;
/// The largest control message (a pool task or its results, a start, an
/// end) either side accepts.
pub(crate) const MAX_MESSAGE: usize = 1 << 30;

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
pub(super) fn framed(mut frame: Vec<u8>) -> std::io::Result<Vec<u8>> {
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

pub(super) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    crate::codec::decode(body).map_err(|e| format!("malformed message: {e}"))
}
