//! The encoding of a shared-object request and of its answer, for a
//! backend that carries them to another host (the native backend's workers
//! reach their root's objects this way).
//!
//! An encoded message is the head's length (a little-endian `u32`), the
//! head (the message as JSON, without its bytes) and the payload (a queue
//! item or pipe message, raw: the rest). The backend frames it; the
//! decoder never trusts its peer: a length over the limits, a truncated
//! message or a head of the wrong shape is an `Err` with a message, never a
//! panic, and never a large allocation.

use super::{Answer, MAX_MESSAGE, Reply, Request};
use serde::Serialize;
use serde::de::DeserializeOwned;

const HEADER: usize = 4;
/// The largest head (an `Array`'s initial values travel in it).
const MAX_HEAD: usize = 16 << 20;
/// The largest encoded message.
pub(crate) const MAX_ENCODED: usize = HEADER + MAX_HEAD + MAX_MESSAGE;

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

/// The encoding of `message` (whose payload it takes).
pub(crate) fn encode<T: Framed>(mut message: T) -> Result<Vec<u8>, String> {
    let payload = message.payload().map(std::mem::take).unwrap_or_default();
    let head = serde_json::to_vec(&message).map_err(|e| format!("cannot encode: {e}"))?;
    if head.len() > MAX_HEAD || payload.len() > MAX_MESSAGE {
        return Err(format!("a message of {} bytes exceeds the limit of {MAX_MESSAGE}", payload.len()));
    }
    let mut encoded = Vec::with_capacity(HEADER + head.len() + payload.len());
    encoded.extend_from_slice(&(head.len() as u32).to_le_bytes());
    encoded.extend_from_slice(&head);
    encoded.extend_from_slice(&payload);
    Ok(encoded)
}

/// Decodes one message.
pub(crate) fn decode<T: Framed>(encoded: &[u8]) -> Result<T, String> {
    let header: [u8; HEADER] =
        encoded.get(..HEADER).and_then(|h| h.try_into().ok()).ok_or("truncated message header")?;
    let head_len = u32::from_le_bytes(header) as usize;
    if head_len > MAX_HEAD {
        return Err(format!("a head of {head_len} bytes exceeds the limit of {MAX_HEAD}"));
    }
    let head = encoded.get(HEADER..HEADER + head_len).ok_or("truncated message head")?;
    let payload = &encoded[HEADER + head_len..];
    if payload.len() > MAX_MESSAGE {
        return Err(format!("a payload of {} bytes exceeds the limit of {MAX_MESSAGE}", payload.len()));
    }
    let mut message: T = serde_json::from_slice(head).map_err(|e| format!("malformed message: {e}"))?;
    match message.payload() {
        Some(slot) => *slot = payload.to_vec(),
        None if payload.is_empty() => {}
        None => return Err("a payload on a message that carries none".into()),
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Error, Payload};

    fn put() -> Request {
        Request::Put { id: 7, item: Payload(b"hello".to_vec()), timeout: Some(5) }
    }

    #[test]
    fn round_trip() {
        let frame = encode(put()).unwrap();
        assert_eq!(decode::<Request>(&frame), Ok(put()));
        let answer: Answer = Ok(Reply::Bytes(Payload(vec![1, 2, 3])));
        assert_eq!(decode::<Answer>(&encode(answer.clone()).unwrap()), Ok(answer));
        let failure: Answer = Err(Error::Empty);
        assert_eq!(decode::<Answer>(&encode(failure.clone()).unwrap()), Ok(failure));
    }

    #[test]
    fn hostile_frames_are_errors() {
        let good = encode(put()).unwrap();
        // Cut anywhere in its head: never a message.
        let head = u32::from_le_bytes(good[..4].try_into().unwrap()) as usize;
        for cut in 1..HEADER + head {
            assert!(decode::<Request>(&good[..cut]).is_err(), "cut at {cut}");
        }
        let huge = u32::MAX.to_le_bytes();
        assert!(decode::<Request>(&huge).unwrap_err().contains("exceeds"));
        // A payload on a message that carries none.
        let mut frame = encode(Request::Recv { id: 1 }).unwrap();
        frame.push(0);
        assert!(decode::<Request>(&frame).is_err());
        let too_big = Request::Send { id: 1, message: Payload(vec![0; MAX_MESSAGE + 1]) };
        assert!(encode(too_big).is_err());
    }

    /// A cheap deterministic fuzz: random bytes and random mutations of
    /// valid frames never panic, in either direction.
    #[test]
    fn decoder_survives_random_input() {
        let frames = [encode(put()).unwrap(), encode::<Answer>(Ok(Reply::Count(3))).unwrap()];
        for bytes in crate::fuzz::mutants(&frames, 0x2545_f491_4f6c_dd1du64) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Answer>(&bytes);
        }
    }
}
