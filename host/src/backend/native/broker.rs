//! The native backend's broker: the root host serves the run's shared
//! objects to its workers over a unix socket.
//!
//! The root host listens on `broker.sock` in a private (0700) temporary
//! directory and passes its path to every worker (and workers to theirs) in
//! `HOST_SYNC_BROKER`. A worker connects the first time its guest uses a
//! shared object and keeps the connection for its life. The connection is
//! multiplexed: every message (a frame of the backend's one codec,
//! [`protocol`], around the objects' own encoding, which this module never
//! looks into: [`Objects`]) names its request by an id, and a reader task
//! on each side hands what comes to whom it is for. The root carries a
//! worker's requests out one at a time, in the order they came, reading
//! ahead meanwhile, so that:
//! - a request can be withdrawn ([`kind::CANCEL`]): the one under way is
//!   dropped at once (a blocking one takes nothing), so a worker waiting on
//!   processes and connections together wakes as soon as either is ready;
//! - a request can be sent without waiting for its answer
//!   ([`kind::SEND`]): a put to an unbounded queue, within the allowance
//!   the root gave ([`Called::allowance`]), so that it cannot fail; should
//!   one fail all the same, the root refuses the worker's next call with
//!   that failure, once, and the worker's end waits for every such request
//!   to be carried out ([`kind::SYNC`]).
//!
//! The root learns the peer's pid from the kernel (`SO_PEERCRED`), so a
//! worker acts only as the process it is, and refuses peers of another
//! user. When the connection closes (the worker ended: terminate, kill,
//! crash) or carries anything that breaks the protocol, the request under
//! way is dropped, so it takes nothing, and the worker's holds and locks
//! are released.

use super::protocol;
use crate::backend::{BoxFuture, Called, Objects, RemoteObjects};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The environment variable naming the broker's socket.
pub(crate) const BROKER_VAR: &str = "HOST_SYNC_BROKER";

/// The root host's listening socket.
pub(crate) struct Endpoint {
    pub(crate) path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Listens for workers on a new socket and serves `objects` to them.
pub(crate) fn listen(runtime: &tokio::runtime::Handle, objects: Arc<dyn Objects>) -> anyhow::Result<Endpoint> {
    let dir = tempfile::Builder::new().prefix("mp-broker-").tempdir()?;
    let path = dir.path().join("broker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    let _entered = runtime.enter();
    let listener = tokio::net::UnixListener::from_std(listener)?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    runtime.spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of descriptors in a spawn storm, a peer gone before it
                // was accepted: the broker serves on, after a breath, for as
                // long as the host lives.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(peer) = stream.peer_cred() else {
                continue;
            };
            match peer.pid() {
                Some(pid) if peer.uid() == uid && pid > 0 => {
                    tokio::spawn(serve(stream, objects.clone(), pid as u32));
                }
                _ => {}
            }
        }
    });
    Ok(Endpoint { path, _dir: dir })
}

/// What a worker sends on its connection; every message is a kind byte,
/// a request id (little-endian `u64`) and the rest, in one message of the
/// backend's codec ([`protocol`]).
mod kind {
    /// A request the worker waits for: answered with [`ANSWER`] or
    /// [`REFUSED`].
    pub(super) const CALL: u8 = 1;
    /// A request the worker does not wait for: answered only if it fails
    /// ([`FAILED`]).
    pub(super) const SEND: u8 = 2;
    /// Withdraws a [`CALL`] (out of turn): it is dropped, unanswered.
    pub(super) const CANCEL: u8 = 3;
    /// Answered with [`SYNCED`] once everything sent before is carried out.
    pub(super) const SYNC: u8 = 4;
    /// The worker was told of the failures so far (see [`REFUSED`]).
    pub(super) const ACK: u8 = 5;
    /// The root's answer to a [`CALL`]: an allowance (`u64`), the answer.
    pub(super) const ANSWER: u8 = 1;
    /// A [`SEND`] failed: its answer.
    pub(super) const FAILED: u8 = 2;
    /// A [`CALL`] not carried out because a [`SEND`] before it failed
    /// (and the worker has not acknowledged it yet).
    pub(super) const REFUSED: u8 = 3;
    /// The answer to a [`SYNC`].
    pub(super) const SYNCED: u8 = 4;
}

/// The head of every message on a connection.
const HEAD: usize = 9;

/// One message on a connection, checked.
fn parse(mut message: Vec<u8>) -> Result<(u8, u64, Vec<u8>), String> {
    if message.len() < HEAD {
        return Err("a message shorter than its head".into());
    }
    let kind = message[0];
    let id = u64::from_le_bytes(message[1..HEAD].try_into().expect("8 bytes"));
    message.drain(..HEAD);
    Ok((kind, id, message))
}

/// A message of `kind` about request `id`, framed.
fn message(kind: u8, id: u64, parts: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; HEAD];
    head[0] = kind;
    head[1..].copy_from_slice(&id.to_le_bytes());
    let mut all = vec![&head[..]];
    all.extend_from_slice(parts);
    protocol::encode_parts(&all)
}

/// How many requests a worker may send while one of its requests waits:
/// more breaks the protocol (a worker waits for its requests, except puts
/// sent ahead, which never wait).
const READ_AHEAD: usize = 1024;

/// A connection's incoming messages, as the root reads them.
type Source = BufReader<tokio::net::unix::OwnedReadHalf>;

/// One message of a connection: its kind, its request's id, the rest.
type Message = (u8, u64, Vec<u8>);

/// The root's reading of one connection: here, between requests; in a task
/// of its own while a request waits (so that a withdrawal or the end of the
/// connection is seen at once, and a read cut short loses no bytes).
enum Reading {
    Here(Source),
    Away(tokio::task::JoinHandle<(Source, Option<Message>)>),
    Over,
}

/// Reads one message; `None` at the end of the connection or on anything
/// that breaks the protocol.
async fn read_one(mut source: Source, limit: usize) -> (Source, Option<Message>) {
    let message = match protocol::read_bytes_frame_async(&mut source, limit).await {
        Ok(Some(message)) => parse(message).ok(),
        _ => None,
    };
    (source, message)
}

impl Reading {
    /// The next message; `None` once the connection is over. Dropped
    /// midway, it loses nothing: a read away goes on.
    async fn next(&mut self, limit: usize) -> Option<Message> {
        let (source, message) = match self {
            Reading::Away(task) => {
                let read = task.await;
                *self = Reading::Over;
                read.ok()?
            }
            Reading::Here(_) => {
                let Reading::Here(source) = std::mem::replace(self, Reading::Over) else { unreachable!() };
                read_one(source, limit).await
            }
            Reading::Over => return None,
        };
        if message.is_some() {
            *self = Reading::Here(source);
        }
        message
    }

    /// Reads on in a task of its own, if not already.
    fn away(&mut self, limit: usize) {
        if let Reading::Here(_) = self {
            let Reading::Here(source) = std::mem::replace(self, Reading::Over) else { unreachable!() };
            *self = Reading::Away(tokio::spawn(read_one(source, limit)));
        }
    }
}

/// Answers one worker's requests until it goes away, then releases its
/// holds. Requests are carried out one at a time, in the order they came;
/// while one waits the next are read, so a withdrawal or the end of the
/// connection is seen at once: the request under way is then dropped (a
/// blocking one takes nothing).
async fn serve(stream: UnixStream, objects: Arc<dyn Objects>, pid: u32) {
    let (reader, mut writer) = stream.into_split();
    let limit = objects.max_request() + HEAD;
    let mut reading = Reading::Here(BufReader::with_capacity(64 << 10, reader));
    let mut queue: std::collections::VecDeque<Message> = Default::default();
    // A request sent without waiting failed, and the worker was not told.
    let mut failed = false;
    'serve: loop {
        let (kind, id, body) = match queue.pop_front() {
            Some(next) => next,
            None => match reading.next(limit).await {
                Some(next) => next,
                None => break,
            },
        };
        let frame = match kind {
            kind::CANCEL => continue,
            kind::ACK => {
                failed = false;
                continue;
            }
            kind::SYNC => message(kind::SYNCED, id, &[]),
            kind::CALL if failed => message(kind::REFUSED, id, &[]),
            kind::CALL | kind::SEND => {
                let mut call = objects.call(pid, body);
                // Most requests are carried out at once: nothing to read
                // meanwhile.
                let at_once = tokio::select! {
                    biased;
                    answered = &mut call => Some(answered),
                    _ = std::future::ready(()) => None,
                };
                let answered = match at_once {
                    Some(answered) => answered,
                    None => loop {
                        reading.away(limit);
                        tokio::select! {
                            answered = &mut call => break answered,
                            next = reading.next(limit) => match next {
                                Some((kind::CANCEL, withdrawn, _)) if withdrawn == id => continue 'serve,
                                Some((kind::CANCEL, withdrawn, _)) => queue.retain(|(_, queued, _)| *queued != withdrawn),
                                Some(_) if queue.len() >= READ_AHEAD => break 'serve,
                                Some(next) => queue.push_back(next),
                                // The worker is gone: the request is dropped.
                                None => break 'serve,
                            },
                        }
                    },
                };
                // A request that breaks the protocol ends the connection.
                let Ok(answered) = answered else { break };
                if kind == kind::SEND {
                    if !answered.failed {
                        continue;
                    }
                    failed = true;
                    message(kind::FAILED, id, &[&answered.answer])
                } else {
                    let frame = message(kind::ANSWER, id, &[&answered.allowance.to_le_bytes(), &answered.answer]);
                    let sent = match &frame {
                        Ok(frame) => writer.write_all(frame).await.is_ok(),
                        Err(_) => false,
                    };
                    if !sent {
                        // Not handed over: what it took goes back.
                        if let Some(undo) = answered.undo {
                            undo();
                        }
                        break;
                    }
                    continue;
                }
            }
            _ => break,
        };
        match frame {
            Ok(frame) if writer.write_all(&frame).await.is_ok() => {}
            _ => break,
        }
    }
    if let Reading::Away(task) = reading {
        // Its copy of the socket must go for the worker to see the end.
        task.abort();
    }
    objects.release(pid);
}

/// What the worker's reader hands to a request waiting for its answer.
enum Response {
    Answer { allowance: u64, answer: Vec<u8> },
    Refused,
    Synced,
}

/// A worker's connection to its root's broker.
struct Link {
    /// The socket, written from any thread, even where nothing may wait
    /// (a withdrawal, as a request is dropped). Its reads are the reader
    /// task's.
    writer: std::sync::Mutex<std::os::unix::net::UnixStream>,
    /// The reader task's descriptor (a copy of the writer's).
    reader_fd: std::os::fd::RawFd,
    next: std::sync::atomic::AtomicU64,
    state: std::sync::Mutex<LinkState>,
    /// How many requests were sent without waiting, and how many of them
    /// are known to be carried out (an answer tells that all sent before
    /// its request were).
    sent_ahead: std::sync::atomic::AtomicU64,
    carried_out: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct LinkState {
    /// The requests waiting for their answers.
    waiting: std::collections::HashMap<u64, tokio::sync::oneshot::Sender<Response>>,
    /// The answer of a request sent without waiting that failed, not told yet.
    failure: Option<Vec<u8>>,
    /// A refusal was told: the root learns it before the next message.
    acknowledge: bool,
    /// Why the connection is over, once it is.
    closed: Option<String>,
}

impl Link {
    /// Connects to the broker at `path` and starts reading its answers.
    fn connect(path: &std::path::Path) -> Result<Arc<Link>, String> {
        let stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| e.to_string())?;
        Link::over(stream)
    }

    /// The link over a connected socket.
    fn over(stream: std::os::unix::net::UnixStream) -> Result<Arc<Link>, String> {
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let reader = UnixStream::from_std(stream).map_err(|e| e.to_string())?;
        let link = Arc::new(Link {
            reader_fd: std::os::fd::AsRawFd::as_raw_fd(&reader),
            writer: std::sync::Mutex::new(writer),
            next: std::sync::atomic::AtomicU64::new(1),
            state: Default::default(),
            sent_ahead: Default::default(),
            carried_out: Default::default(),
        });
        tokio::spawn(read_answers(reader, Arc::downgrade(&link)));
        Ok(link)
    }

    /// Writes a message of `kind` (after an acknowledgement the root is
    /// owed); waits only while the socket is full.
    fn write(&self, kind: u8, id: u64, body: &[u8]) -> Result<(), String> {
        let frame = message(kind, id, &[body]).map_err(|e| e.to_string())?;
        let acknowledge = {
            let mut state = self.state.lock().unwrap();
            if let Some(why) = &state.closed {
                return Err(why.clone());
            }
            std::mem::take(&mut state.acknowledge)
        };
        let writer = self.writer.lock().unwrap();
        if acknowledge {
            write_all(&writer, &message(kind::ACK, 0, &[]).map_err(|e| e.to_string())?)?;
        }
        write_all(&writer, &frame)
    }

    /// Sends a message of `kind` and waits for its answer; dropped midway,
    /// it withdraws it.
    async fn ask(&self, kind: u8, body: &[u8]) -> Result<Response, String> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.state.lock().unwrap().waiting.insert(id, answer);
        let mut withdraw = Withdraw { link: self, id: Some(id) };
        self.write(kind, id, body)?;
        let response = answered.await;
        withdraw.id = None;
        response.map_err(|_| {
            let state = self.state.lock().unwrap();
            state.closed.clone().unwrap_or_else(|| "the root host closed the connection".into())
        })
    }
}

/// Withdraws a request whose answer is no longer awaited.
struct Withdraw<'a> {
    link: &'a Link,
    id: Option<u64>,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.link.state.lock().unwrap().waiting.remove(&id);
            let _ = self.link.write(kind::CANCEL, id, &[]);
        }
    }
}

/// Writes all of `bytes` on the non-blocking socket, waiting while it is full.
fn write_all(mut socket: &std::os::unix::net::UnixStream, mut bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::fd::AsFd;
    while !bytes.is_empty() {
        match socket.write(bytes) {
            Ok(0) => return Err("the root host closed the connection".into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [nix::poll::PollFd::new(socket.as_fd(), nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
            }
            Err(e) => return Err(format!("cannot write to the root host: {e}")),
        }
    }
    Ok(())
}

/// Hands each answer the root sends to the request waiting for it, until
/// the connection ends (then every waiting request learns why).
async fn read_answers(stream: UnixStream, link: std::sync::Weak<Link>) {
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let why = loop {
        let message = match protocol::read_bytes_frame_async(&mut reader, protocol::MAX_MESSAGE).await {
            Ok(Some(message)) => parse(message),
            Ok(None) => Err("the root host closed the connection".into()),
            Err(why) => Err(why),
        };
        let Some(link) = link.upgrade() else { return };
        let (kind, id, mut body) = match message {
            Ok(message) => message,
            Err(why) => break (link, why),
        };
        let mut state = link.state.lock().unwrap();
        let response = match kind {
            kind::ANSWER if body.len() >= 8 => {
                let allowance = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                body.drain(..8);
                Response::Answer { allowance, answer: body }
            }
            kind::REFUSED => Response::Refused,
            kind::SYNCED => Response::Synced,
            kind::FAILED => {
                state.failure.get_or_insert(body);
                continue;
            }
            _ => {
                drop(state);
                break (link, format!("a message of unknown kind {kind} from the root host"));
            }
        };
        // Nobody waits for a withdrawn request's answer.
        if let Some(waiting) = state.waiting.remove(&id) {
            let _ = waiting.send(response);
        }
    };
    let (link, why) = why;
    let mut state = link.state.lock().unwrap();
    state.closed = Some(why);
    state.waiting.clear();
}

/// A worker's side: the connection to the root host's broker, made the
/// first time its guest uses a shared object. Requests go out as they are
/// made, tagged with an id; a reader task hands each answer to its request.
pub(crate) struct Client {
    pub(crate) path: PathBuf,
    link: std::sync::Mutex<Option<Arc<Link>>>,
}

impl Client {
    /// The broker this worker was given by its parent, if any.
    pub(crate) fn from_env() -> Option<Client> {
        let path = std::env::var_os(BROKER_VAR)?;
        Some(Client { path: path.into(), link: std::sync::Mutex::new(None) })
    }

    fn link(&self) -> Result<Arc<Link>, String> {
        let mut link = self.link.lock().unwrap();
        if let Some(link) = &*link {
            return Ok(link.clone());
        }
        let connected = Link::connect(&self.path)?;
        *link = Some(connected.clone());
        Ok(connected)
    }

    async fn call_bytes(&self, request: Vec<u8>) -> Result<Called, String> {
        let link = self.link()?;
        let sent_ahead = link.sent_ahead.load(Ordering::SeqCst);
        loop {
            match link.ask(kind::CALL, &request).await? {
                Response::Answer { allowance, answer } => {
                    link.carried_out.fetch_max(sent_ahead, Ordering::SeqCst);
                    return Ok(Called { answer, allowance });
                }
                Response::Refused => {
                    let mut state = link.state.lock().unwrap();
                    state.acknowledge = true;
                    // Another request was told this failure: this one,
                    // not carried out, goes again.
                    if let Some(failure) = state.failure.take() {
                        return Ok(Called { answer: failure, allowance: 0 });
                    }
                }
                Response::Synced => return Err("a sync answer to a request".into()),
            }
        }
    }

    async fn flush_link(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(link) = self.link.lock().unwrap().clone() else { return Ok(None) };
        let sent_ahead = link.sent_ahead.load(Ordering::SeqCst);
        if link.carried_out.load(Ordering::SeqCst) < sent_ahead {
            link.ask(kind::SYNC, &[]).await?;
            link.carried_out.fetch_max(sent_ahead, Ordering::SeqCst);
        }
        let mut state = link.state.lock().unwrap();
        let failure = state.failure.take();
        state.acknowledge |= failure.is_some();
        Ok(failure)
    }
}

impl RemoteObjects for Client {
    fn call(&self, request: Vec<u8>) -> BoxFuture<'_, Result<Called, String>> {
        Box::pin(self.call_bytes(request))
    }

    fn send(&self, request: Vec<u8>) -> Result<(), String> {
        let link = self.link()?;
        let id = link.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        link.sent_ahead.fetch_add(1, Ordering::SeqCst);
        link.write(kind::SEND, id, &request)
    }

    fn flush(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        Box::pin(self.flush_link())
    }

    fn connected(&self) -> bool {
        self.link.try_lock().map_or(true, |link| link.is_some())
    }

    fn leave_connection(&self) {
        // Not dropped: the parent's reader task, copied by the fork, holds
        // the link too. Its descriptors become `/dev/null` here instead, so
        // that the copy, if it is still polled, reads end-of-file rather
        // than the parent's answers (the socket stays the parent's alone).
        if let Ok(mut link) = self.link.try_lock()
            && let Some(link) = link.take()
        {
            if let (Ok(null), Ok(writer)) = (std::fs::File::open("/dev/null"), link.writer.try_lock()) {
                for fd in [link.reader_fd, std::os::fd::AsRawFd::as_raw_fd(&*writer)] {
                    // SAFETY: both descriptors are the link's, open, and
                    // replaced in one step; only a forked child, single-
                    // threaded, calls this.
                    let _ = unsafe { libc::dup3(std::os::fd::AsRawFd::as_raw_fd(&null), fd, libc::O_CLOEXEC) };
                }
            }
            std::mem::forget(link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Answered;

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
        let link = Link::over(ours).unwrap();
        (Client { path: PathBuf::new(), link: std::sync::Mutex::new(Some(link)) }, raw)
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
}
