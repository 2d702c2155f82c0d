//! The codec's and the control messages' own tests: round trips, and hostile input
//! that must be refused with an error, never a panic or a hang.

use super::frame::{CHUNK, MORE};
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
    encode_frame(message).unwrap()
}

/// Reads one message of `T`; `Ok(None)` if there was none.
fn read_frame<T: DeserializeOwned>(input: &mut &[u8]) -> Result<Option<T>, String> {
    read_bytes_frame(input, MAX_MESSAGE)?.map(|body| decode(&body)).transpose()
}

/// A channel message round-trips with its kind and id; one cut short of
/// its head, or of the wrong shape, is an error.
#[test]
fn channel_messages_round_trip() {
    let done = Report::Done { id: 4, results: results() };
    let bytes = control(kind::REPORT, 9, &done).unwrap();
    let body = read_bytes_frame(&mut &bytes[..], MAX_MESSAGE).unwrap().unwrap();
    let (kind, id, rest) = parse(body).unwrap();
    assert_eq!((kind, id), (kind::REPORT, 9));
    assert_eq!(decode_control::<Report>(&rest), Ok(done));
    let raw = message(kind::ADOPT, 77, &[b"ab", b"c"]).unwrap();
    let body = read_bytes_frame(&mut &raw[..], MAX_MESSAGE).unwrap().unwrap();
    assert_eq!(parse(body), Ok((kind::ADOPT, 77, b"abc".to_vec())));
    assert!(parse(vec![0; HEAD - 1]).unwrap_err().contains("shorter than its head"));
    assert!(decode_control::<Report>(b"[1,2]").unwrap_err().contains("malformed"));
    // Read exactly: what follows a message is left for the next read.
    let two = [bytes.clone(), raw.clone()].concat();
    let mut input = &two[..];
    read_bytes_frame(&mut input, MAX_MESSAGE).unwrap();
    assert_eq!(input, &raw[..]);
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
    let returned = Report::Returned { count: 3 };
    assert_eq!(read_frame::<Report>(&mut &frame(&returned)[..]), Ok(Some(returned)));
    let order = Order::Task(Task { id: 8, entry: "f".into(), inputs: batch(&[b"\x01"]), many: false });
    assert_eq!(read_frame::<Order>(&mut &frame(&order)[..]), Ok(Some(order)));
    assert_eq!(read_frame::<Order>(&mut &frame(&Order::Revoke)[..]), Ok(Some(Order::Revoke)));
}

/// A message larger than one frame is cut into frames and joined
/// again; one over the limit is refused by the writer.
#[test]
fn large_messages_are_chunked() {
    let results = BatchResults { results: Batch::one(vec![b'x'; 17 << 20]), failed: Vec::new() };
    let done = Report::Done { id: 1, results };
    let bytes = frame(&done);
    assert!(bytes.len() > (17 << 20) + 8 * 17, "{}", bytes.len());
    assert_eq!(read_frame::<Report>(&mut &bytes[..]), Ok(Some(done.clone())));
    assert_eq!(decode_frame::<Report>(&bytes), Ok(done));
    let task = Task { id: 1, entry: "e".into(), inputs: Batch::one(vec![b'x'; MAX_MESSAGE]), many: false };
    assert!(encode_frame(&task).unwrap_err().to_string().contains("exceeds"));
    // Parts are joined as if they were one body.
    let joined = encode_parts(&[&[1u8; CHUNK - 1], &[2u8; 3], &[]]).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let body = runtime.block_on(read_bytes_frame_async(&mut &joined[..], 2 * CHUNK)).unwrap().unwrap();
    assert_eq!(body.len(), CHUNK + 2);
    assert_eq!(&body[CHUNK - 2..], &[1, 2, 2, 2]);
    // Under the reader's limit only.
    assert!(runtime.block_on(read_bytes_frame_async(&mut &joined[..], CHUNK)).unwrap_err().contains("exceeds"));
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
    // A frame over the chunk size, an empty frame that says more follow,
    // a message cut after a frame that says more follow.
    let mut over = MAGIC.to_vec();
    over.extend_from_slice(&(CHUNK as u32 + 1).to_le_bytes());
    assert!(read_frame::<Ended>(&mut &over[..]).unwrap_err().contains("exceeds"));
    let mut empty = MAGIC.to_vec();
    empty.extend_from_slice(&MORE.to_le_bytes());
    assert!(read_frame::<Ended>(&mut &empty[..]).is_err());
    let mut cut = MAGIC.to_vec();
    cut.extend_from_slice(&(2 | MORE).to_le_bytes());
    cut.extend_from_slice(b"[1");
    assert!(read_frame::<Ended>(&mut &cut[..]).unwrap_err().contains("truncated"));
    assert!(decode_frame::<Ended>(&cut).is_err());
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
        frame(&Order::Task(Task { id: 3, entry: "f".into(), inputs: batch(&[b"\x92\x01\x02"]), many: true })),
        frame(&Report::Returned { count: 2 }),
    ];
    for bytes in crate::fuzz::mutants(&frames, 0x9e37_79b9_7f4a_7c15u64) {
        let _ = decode_frame::<Ended>(&bytes);
        let _ = read_frame::<Start>(&mut &bytes[..]);
        let _ = decode_frame::<Report>(&bytes);
        let _ = read_frame::<Order>(&mut &bytes[..]);
    }
}

/// Messages of opaque bytes (a shared-object request or answer) go
/// through the same codec: they round-trip, a cut or oversized one is
/// an error, and mutants (of one frame or of many) never panic the reader.
#[test]
fn bytes_frames_round_trip_and_survive_random_input() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let limit = 3 * CHUNK;
    let read = |bytes: &[u8]| runtime.block_on(read_bytes_frame_async(&mut &bytes[..], limit));
    let body = b"\x05\0\0\0{\"a\":1}payload".to_vec();
    let frame = encode_parts(&[&body]).unwrap();
    assert_eq!(read(&frame), Ok(Some(body.clone())));
    assert_eq!(read(&[]), Ok(None));
    for cut in 1..frame.len() {
        assert!(read(&frame[..cut]).is_err(), "cut at {cut}");
    }
    let mut huge = MAGIC.to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(read(&huge).unwrap_err().contains("exceeds"));
    assert!(encode_parts(&[&vec![0; MAX_MESSAGE + 1]]).is_err());
    let big = vec![7u8; 2 * CHUNK + 5];
    let chunked = encode_parts(&[&big]).unwrap();
    assert_eq!(read(&chunked), Ok(Some(big)));
    let small = [b'x'; 40];
    let frames = [frame, encode_parts(&[b""]).unwrap(), encode_parts(&[&small, &small]).unwrap()];
    for bytes in crate::fuzz::mutants(&frames, 0x51_7cc1_b727_220au64) {
        let _ = read(&bytes);
    }
}
