//! The encoding of a shared-object request and of its answer, for a
//! backend that carries them to another host (the native backend's workers
//! reach their root's objects this way).
//!
//! An encoded message is the payload (a queue item or pipe message, raw),
//! the head (the message as JSON, without its bytes) and the head's length
//! (a little-endian `u32`), last: so the decoder finds the head from the
//! end and keeps the payload where it is, without a copy. The backend
//! frames it; the decoder never trusts its peer: a length over the limits,
//! a truncated message or a head of the wrong shape is an `Err` with a
//! message, never a panic, and never a large allocation.

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

/// The encoding of `message`: its payload, taken, grows the head behind it.
pub(crate) fn encode<T: Framed>(mut message: T) -> Result<Vec<u8>, String> {
    let mut encoded = message.payload().map(std::mem::take).unwrap_or_default();
    if encoded.len() > MAX_MESSAGE {
        return Err(format!("a message of {} bytes exceeds the limit of {MAX_MESSAGE}", encoded.len()));
    }
    let at = encoded.len();
    serde_json::to_writer(&mut encoded, &message).map_err(|e| format!("cannot encode: {e}"))?;
    let head_len = encoded.len() - at;
    if head_len > MAX_HEAD {
        return Err(format!("a head of {head_len} bytes exceeds the limit of {MAX_HEAD}"));
    }
    encoded.extend_from_slice(&(head_len as u32).to_le_bytes());
    Ok(encoded)
}

/// Decodes one message; its payload keeps `encoded`'s bytes.
pub(crate) fn decode<T: Framed>(mut encoded: Vec<u8>) -> Result<T, String> {
    let at = encoded.len().checked_sub(HEADER).ok_or("truncated message header")?;
    let head_len = u32::from_le_bytes(encoded[at..].try_into().expect("4 bytes")) as usize;
    if head_len > MAX_HEAD {
        return Err(format!("a head of {head_len} bytes exceeds the limit of {MAX_HEAD}"));
    }
    let payload_len = at.checked_sub(head_len).ok_or("truncated message head")?;
    if payload_len > MAX_MESSAGE {
        return Err(format!("a payload of {payload_len} bytes exceeds the limit of {MAX_MESSAGE}"));
    }
    let mut message: T =
        serde_json::from_slice(&encoded[payload_len..at]).map_err(|e| format!("malformed message: {e}"))?;
    match message.payload() {
        Some(slot) => {
            encoded.truncate(payload_len);
            *slot = encoded;
        }
        None if payload_len == 0 => {}
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
        assert_eq!(decode::<Request>(frame), Ok(put()));
        let answer: Answer = Ok(Reply::Bytes(Payload(vec![1, 2, 3])));
        assert_eq!(decode::<Answer>(encode(answer.clone()).unwrap()), Ok(answer));
        let failure: Answer = Err(Error::Empty);
        assert_eq!(decode::<Answer>(encode(failure.clone()).unwrap()), Ok(failure));
    }

    #[test]
    fn hostile_frames_are_errors() {
        let good = encode(put()).unwrap();
        // Cut anywhere: never a message.
        for cut in 0..good.len() {
            assert!(decode::<Request>(good[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        let huge = u32::MAX.to_le_bytes();
        assert!(decode::<Request>(huge.to_vec()).unwrap_err().contains("exceeds"));
        // A payload on a message that carries none.
        let mut frame = encode(Request::Recv { id: 1 }).unwrap();
        frame.insert(0, 0);
        assert!(decode::<Request>(frame).is_err());
        let too_big = Request::Send { id: 1, message: Payload(vec![0; MAX_MESSAGE + 1]) };
        assert!(encode(too_big).is_err());
    }

    /// A cheap deterministic fuzz: random bytes and random mutations of
    /// valid frames never panic, in either direction.
    #[test]
    fn decoder_survives_random_input() {
        let frames = [encode(put()).unwrap(), encode::<Answer>(Ok(Reply::Count(3))).unwrap()];
        for bytes in crate::fuzz::mutants(&frames, 0x2545_f491_4f6c_dd1du64) {
            let _ = decode::<Request>(bytes.clone());
            let _ = decode::<Answer>(bytes);
        }
    }
}
