//! The broker's own tests: both sides of a connection over a socket pair,
//! with objects that answer, fail, block or breach the protocol.

use super::client::write_all;
use super::*;
use crate::backend::{Answered, BoxFuture, RemoteObjects};

/// Objects that answer `ok`, fail `fail`, never answer `block`, and
/// refuse anything else as a breach of the protocol.
#[derive(Default)]
struct Fake {
    released: std::sync::Mutex<Vec<u32>>,
}

impl Objects for Fake {
    fn call(&self, _pid: u32, request: Vec<u8>) -> BoxFuture<'_, Result<Answered, String>> {
        Box::pin(async move {
            let answered =
                |answer: &[u8], failed| Answered { answer: answer.to_vec(), undo: None, failed, allowance: 7 };
            match &request[..] {
                b"ok" => Ok(answered(b"ok", false)),
                b"fail" => Ok(answered(b"no", true)),
                b"block" => std::future::pending().await,
                _ => Err("breach".into()),
            }
        })
    }

    fn release(&self, pid: u32) {
        self.released.lock().unwrap().push(pid);
    }

    fn max_request(&self) -> usize {
        1 << 10
    }
}

/// A client linked to `serve` over a socket pair, in `runtime`.
fn linked(runtime: &tokio::runtime::Runtime, objects: Arc<Fake>) -> (Client, std::os::unix::net::UnixStream) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let raw = ours.try_clone().unwrap();
    let _entered = runtime.enter();
    theirs.set_nonblocking(true).unwrap();
    let theirs = UnixStream::from_std(theirs).unwrap();
    runtime.spawn(serve(theirs, objects, 42));
    (Client::over(ours), raw)
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
    for garbage in [&b"garbage!"[..], b"MPH4\x01\x00\x00\x00\x01", b"MPH4\xff\xff\xff\xff"] {
        let objects = Arc::new(Fake::default());
        let (client, raw) = linked(&runtime, objects.clone());
        write_all(&raw, garbage).unwrap();
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
    let frames = [vec![kind::CALL, 1, 0, 0, 0, 0, 0, 0, 0, b'x'], vec![kind::ANSWER; HEAD + 8]];
    for bytes in crate::fuzz::mutants(&frames, 0x2545_f491_4f6c_dd1d) {
        let _ = parse(bytes);
    }
}
