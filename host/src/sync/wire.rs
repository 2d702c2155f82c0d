//! The broker protocol's frames (native backend): requests from workers,
//! answers from the root host.
//!
//! A frame is a 4-byte magic carrying the version (`MPS1`), the head's
//! length and the payload's length (little-endian `u32`s), the head (the
//! message as JSON, without its bytes) and the payload (a queue item or pipe
//! message, raw). The decoder never trusts its peer: a wrong magic, a length
//! over the limits, a truncated frame or a head of the wrong shape is an
//! `Err` with a message, never a panic, and never a large allocation.

use super::{Answer, MAX_MESSAGE, Reply, Request};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

const MAGIC: [u8; 4] = *b"MPS1";
const HEADER: usize = 12;
/// The largest head (an `Array`'s initial values travel in it).
const MAX_HEAD: usize = 16 << 20;

/// A message with bytes that travel beside its JSON.
pub(crate) trait Framed: Serialize + DeserializeOwned {
    fn payload(&mut self) -> Option<&mut Vec<u8>>;
}

impl Framed for Request {
    fn payload(&mut self) -> Option<&mut Vec<u8>> {
        self.payload_mut()
    }
}

impl Framed for Answer {
    fn payload(&mut self) -> Option<&mut Vec<u8>> {
        self.as_mut().ok().and_then(Reply::payload_mut)
    }
}

/// The frame of `message` (whose payload it takes).
pub(crate) fn encode<T: Framed>(mut message: T) -> Result<Vec<u8>, String> {
    let payload = message.payload().map(std::mem::take).unwrap_or_default();
    let head = serde_json::to_vec(&message).map_err(|e| format!("cannot encode: {e}"))?;
    if head.len() > MAX_HEAD || payload.len() > MAX_MESSAGE {
        return Err(format!(
            "a message of {} bytes exceeds the limit of {MAX_MESSAGE}",
            payload.len()
        ));
    }
    let mut frame = Vec::with_capacity(HEADER + head.len() + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&(head.len() as u32).to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&head);
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// The head and payload lengths a header announces.
fn lengths(header: &[u8; HEADER]) -> Result<(usize, usize), String> {
    if header[..4] != MAGIC {
        return Err("not a frame of this broker protocol version (bad magic)".into());
    }
    let head = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let payload = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    if head > MAX_HEAD {
        return Err(format!(
            "a head of {head} bytes exceeds the limit of {MAX_HEAD}"
        ));
    }
    if payload > MAX_MESSAGE {
        return Err(format!(
            "a payload of {payload} bytes exceeds the limit of {MAX_MESSAGE}"
        ));
    }
    Ok((head, payload))
}

fn assemble<T: Framed>(head: &[u8], payload: Vec<u8>) -> Result<T, String> {
    let mut message: T =
        serde_json::from_slice(head).map_err(|e| format!("malformed message: {e}"))?;
    match message.payload() {
        Some(slot) => *slot = payload,
        None if payload.is_empty() => {}
        None => return Err("a payload on a message that carries none".into()),
    }
    Ok(message)
}

/// Reads one frame; `Ok(None)` if the peer closed before sending a byte.
pub(crate) async fn read<T: Framed>(
    input: &mut (impl AsyncRead + Unpin),
) -> Result<Option<T>, String> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match input.read(&mut header[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("truncated frame header".into()),
            Ok(n) => got += n,
            Err(e) => return Err(format!("cannot read a frame: {e}")),
        }
    }
    let (head_len, payload_len) = lengths(&header)?;
    let mut head = vec![0u8; head_len];
    input
        .read_exact(&mut head)
        .await
        .map_err(|_| "truncated frame head".to_string())?;
    let mut payload = vec![0u8; payload_len];
    input
        .read_exact(&mut payload)
        .await
        .map_err(|_| "truncated frame payload".to_string())?;
    assemble(&head, payload).map(Some)
}

/// Decodes a whole frame held in memory.
#[cfg(test)]
pub(crate) fn decode<T: Framed>(frame: &[u8]) -> Result<T, String> {
    let header: &[u8; HEADER] = frame
        .get(..HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or("truncated frame header")?;
    let (head_len, payload_len) = lengths(header)?;
    let head = frame
        .get(HEADER..HEADER + head_len)
        .ok_or("truncated frame head")?;
    let rest = &frame[HEADER + head_len..];
    if rest.len() != payload_len {
        return Err("the payload does not match its length".into());
    }
    assemble(head, rest.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Error, Payload};

    fn put() -> Request {
        Request::Put {
            id: 7,
            item: Payload(b"hello".to_vec()),
            timeout: Some(5),
        }
    }

    #[test]
    fn round_trip() {
        let frame = encode(put()).unwrap();
        assert_eq!(decode::<Request>(&frame), Ok(put()));
        let answer: Answer = Ok(Reply::Bytes(Payload(vec![1, 2, 3])));
        assert_eq!(
            decode::<Answer>(&encode(answer.clone()).unwrap()),
            Ok(answer)
        );
        let failure: Answer = Err(Error::Empty);
        assert_eq!(
            decode::<Answer>(&encode(failure.clone()).unwrap()),
            Ok(failure)
        );
        let mut input = &frame[..];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            runtime.block_on(read::<Request>(&mut input)),
            Ok(Some(put()))
        );
        assert_eq!(runtime.block_on(read::<Request>(&mut input)), Ok(None));
    }

    #[test]
    fn hostile_frames_are_errors() {
        let good = encode(put()).unwrap();
        for cut in 1..good.len() {
            assert!(decode::<Request>(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&2u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode::<Request>(&huge).unwrap_err().contains("exceeds"));
        let mut wrong = good.clone();
        wrong[3] = b'9';
        assert!(decode::<Request>(&wrong).unwrap_err().contains("magic"));
        // A payload on a message that carries none.
        let mut frame = encode(Request::Recv { id: 1 }).unwrap();
        frame[8] = 1;
        frame.push(0);
        assert!(decode::<Request>(&frame).is_err());
        let too_big = Request::Send {
            id: 1,
            message: Payload(vec![0; MAX_MESSAGE + 1]),
        };
        assert!(encode(too_big).is_err());
    }

    /// A cheap deterministic fuzz: random bytes and random mutations of
    /// valid frames never panic, in either direction.
    #[test]
    fn decoder_survives_random_input() {
        let frames = [
            encode(put()).unwrap(),
            encode::<Answer>(Ok(Reply::Count(3))).unwrap(),
        ];
        for bytes in crate::fuzz::mutants(&frames, 0x2545_f491_4f6c_dd1du64) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Answer>(&bytes);
        }
    }
}
