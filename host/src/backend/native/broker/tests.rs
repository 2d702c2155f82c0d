//! The broker's own tests: both sides of a connection over a socket pair,
//! with objects that answer, fail, block or breach the protocol.

use super::client::write_all;
use super::*;
use crate::backend::{Answered, BoxFuture, RemoteObjects, TakenCount};

/// Objects that answer `ok`, fail `fail`, never answer `block`, answer
/// `lease` with a lease of three items of object 5 (serial 9), and refuse
/// anything else as a breach of the protocol.
#[derive(Default)]
struct Fake {
    released: std::sync::Mutex<Vec<u32>>,
    /// The counter of the last lease granted.
    counter: std::sync::Mutex<Option<Box<dyn TakenCount>>>,
    /// The leases the worker returned.
    returned: std::sync::Mutex<Vec<u64>>,
    /// Fires the recall of the last lease granted.
    recall: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Objects for Fake {
    fn call(&self, _pid: u32, request: Vec<u8>) -> BoxFuture<'_, Result<Answered, String>> {
        Box::pin(async move {
            let answered = |answer: &[u8], failed| Answered {
                answer: answer.to_vec(),
                undo: None,
                failed,
                allowance: 7,
                lease: None,
            };
            match &request[..] {
                b"ok" => Ok(answered(b"ok", false)),
                b"lease" => {
                    let (recall, recalled) = tokio::sync::oneshot::channel();
                    *self.recall.lock().unwrap() = Some(recall);
                    let items = Arc::new(vec![b"a".to_vec(), Vec::new(), b"c".to_vec()]);
                    let lease = crate::backend::Lease { object: 5, serial: 9, items, recalled };
                    Ok(Answered { lease: Some(lease), ..answered(b"ok", false) })
                }
                b"fail" => Ok(answered(b"no", true)),
                b"block" => std::future::pending().await,
                _ => Err("breach".into()),
            }
        })
    }

    fn release(&self, pid: u32) {
        self.released.lock().unwrap().push(pid);
    }

    fn lease_counted(&self, _pid: u32, _serial: u64, counter: Box<dyn TakenCount>) {
        *self.counter.lock().unwrap() = Some(counter);
    }

    fn lease_returned(&self, _pid: u32, serial: u64) {
        self.returned.lock().unwrap().push(serial);
    }

    fn max_request(&self) -> usize {
        1 << 10
    }
}

/// A client linked to a channel the root serves, over a socket pair, in
/// `runtime`; a copy of the client's socket.
fn linked(runtime: &tokio::runtime::Runtime, objects: Arc<Fake>) -> (Client, std::os::unix::net::UnixStream) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let raw = ours.try_clone().unwrap();
    let _entered = runtime.enter();
    drop(crate::backend::native::channel::serve_child(objects, theirs.into(), 42).unwrap());
    (Client::new(ours.into()), raw)
}

/// A withdrawn request is dropped at once, and the next is answered; a
/// request sent without waiting that fails refuses the next call,
/// which answers that failure, once.
#[test]
fn withdrawals_and_failures_of_requests_sent_ahead() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let objects = Arc::new(Fake::default());
    let (client, _raw) = linked(&runtime, objects.clone());
    // A guard against a hang, not a measure of time.
    let guard = std::time::Duration::from_secs(120);
    runtime.block_on(async {
        tokio::time::timeout(guard, async {
            tokio::select! {
                biased;
                _ = client.call_bytes(b"block".to_vec()) => panic!("a blocking request answered"),
                _ = std::future::ready(()) => {}
            }
            let called = client.call_bytes(b"ok".to_vec()).await.unwrap();
            assert_eq!((called.answer, called.allowance), (b"ok".to_vec(), 7));
            client.send(b"fail".to_vec()).unwrap();
            client.send(b"ok".to_vec()).unwrap();
            let refused = client.call_bytes(b"ok".to_vec()).await.unwrap();
            assert_eq!((refused.answer, refused.allowance), (b"no".to_vec(), 0));
            assert_eq!(client.call_bytes(b"ok".to_vec()).await.unwrap().answer, b"ok");
            client.send(b"fail".to_vec()).unwrap();
            assert_eq!(client.flush().await.unwrap(), Some(b"no".to_vec()));
            assert_eq!(client.flush().await.unwrap(), None);
            assert_eq!(client.call_bytes(b"ok".to_vec()).await.unwrap().answer, b"ok");
        })
        .await
        .expect("the channel hung");
    });
    assert!(objects.released.lock().unwrap().is_empty());
}

/// Garbage on the connection ends it (the worker's holds released);
/// the worker's requests then fail with the reason.
#[test]
fn garbage_ends_the_connection() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for garbage in [&b"garbage!"[..], b"MPH5\x01\x00\x00\x00\x01", b"MPH5\xff\xff\xff\xff"] {
        let objects = Arc::new(Fake::default());
        let (client, raw) = linked(&runtime, objects.clone());
        write_all(&raw, &mut [std::io::IoSlice::new(garbage)]).unwrap();
        let error = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(120), client.call_bytes(b"ok".to_vec()))
                .await
                .expect("the channel hung")
        });
        assert!(error.is_err(), "{garbage:?}");
        runtime.block_on(async {
            while objects.released.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(*objects.released.lock().unwrap(), vec![42]);
    }
}

/// The messages of a connection survive random input.
#[test]
fn parse_survives_random_input() {
    let frames = [vec![b'x', 1, 0, 0, 0, 0, 0, 0, 0, kind::CALL], vec![kind::ANSWER; protocol::HEAD + 8]];
    for bytes in crate::fuzz::mutants(&frames, 0x2545_f491_4f6c_dd1d) {
        let _ = protocol::parse(bytes);
    }
}

/// Waits until `done` holds (a guard against a hang, not a measure of time).
async fn until(done: impl Fn() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the channel hung");
}

/// Items leased with an answer are taken in order without a round trip,
/// each counted where the root reads it; a recall returns the rest, which
/// are then not taken; the end of the connection releases the worker.
#[test]
fn leased_items_are_counted_taken_and_returned_when_recalled() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let objects = Arc::new(Fake::default());
    let (client, raw) = linked(&runtime, objects.clone());
    let taken = || objects.counter.lock().unwrap().as_ref().map(|counter| counter.taken());
    runtime.block_on(async {
        assert_eq!(client.take_leased(5), None);
        assert_eq!(client.call_bytes(b"lease".to_vec()).await.unwrap().answer, b"ok");
        assert_eq!(taken(), Some(0));
        assert_eq!(client.take_leased(6), None);
        assert_eq!(client.take_leased(5), Some(b"a".to_vec()));
        assert_eq!(client.take_leased(5), Some(Vec::new()));
        assert_eq!(taken(), Some(2));
        objects.recall.lock().unwrap().take().unwrap().send(()).unwrap();
        until(|| objects.returned.lock().unwrap().len() == 1).await;
        assert_eq!(*objects.returned.lock().unwrap(), vec![9]);
        assert_eq!(client.take_leased(5), None);
        // Taken to the last: nothing to return, on a recall or a drop; the
        // next lease's counter starts from zero.
        client.call_bytes(b"lease".to_vec()).await.unwrap();
        assert_eq!(taken(), Some(0));
        for _ in 0..3 {
            assert!(client.take_leased(5).is_some());
        }
        assert_eq!(taken(), Some(3));
        client.return_lease(5);
        let _ = objects.recall.lock().unwrap().take().unwrap().send(());
        assert_eq!(client.call_bytes(b"ok".to_vec()).await.unwrap().answer, b"ok");
        assert_eq!(objects.returned.lock().unwrap().len(), 1);
        // Returned when its object is let go of.
        client.call_bytes(b"lease".to_vec()).await.unwrap();
        client.return_lease(5);
        assert_eq!(client.call_bytes(b"ok".to_vec()).await.unwrap().answer, b"ok");
        assert_eq!(*objects.returned.lock().unwrap(), vec![9, 9]);
    });
    // The worker's end: the root sees the connection close.
    raw.shutdown(std::net::Shutdown::Both).unwrap();
    runtime.block_on(until(|| *objects.released.lock().unwrap() == vec![42]));
    drop(client);
}

/// A lease message cut anywhere is refused, never a panic.
#[test]
fn lease_messages_are_checked() {
    let (_recall, recalled) = tokio::sync::oneshot::channel();
    let items = Arc::new(vec![b"xy".to_vec(), b"z".to_vec()]);
    let lease = crate::backend::Lease { object: 3, serial: 1, items, recalled };
    let bytes = lease_message(&lease, 4).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let body = runtime.block_on(protocol::read_bytes_frame_async(&mut &bytes[..], 1 << 20)).unwrap().unwrap();
    let (kind, serial, body) = protocol::parse(body).unwrap();
    assert_eq!((kind, serial), (kind::LEASE, 1));
    let (object, counter, items) = parse_lease(&body).unwrap();
    assert_eq!((object, counter, Vec::from(items)), (3, 4, vec![b"xy".to_vec(), b"z".to_vec()]));
    for cut in 0..body.len() {
        let parsed = parse_lease(&body[..cut]);
        assert!(cut == 12 || cut == 18 || parsed.is_err(), "cut at {cut}: {parsed:?}");
    }
}
