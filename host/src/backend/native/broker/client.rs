//! A worker's side of the broker: the connection to its root host, made
//! the first time its guest uses a shared object. Requests go out as they
//! are made, tagged with an id; a reader task hands each answer to the
//! request waiting for it, and a request dropped midway is withdrawn.

use super::{BROKER_VAR, kind, message, parse};
use crate::backend::native::protocol;
use crate::backend::{BoxFuture, Called, RemoteObjects};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::BufReader;
use tokio::net::UnixStream;

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
    /// Connects to the broker of the abstract name `name` and starts
    /// reading its answers.
    fn connect(name: &std::path::Path) -> Result<Arc<Link>, String> {
        let stream = super::address(name)
            .and_then(|address| std::os::unix::net::UnixStream::connect_addr(&address))
            .map_err(|e| e.to_string())?;
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
pub(super) fn write_all(mut socket: &std::os::unix::net::UnixStream, mut bytes: &[u8]) -> Result<(), String> {
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
    /// The broker's name in the abstract namespace.
    pub(crate) name: PathBuf,
    link: std::sync::Mutex<Option<Arc<Link>>>,
}

impl Client {
    /// The broker this worker was given by its parent, if any.
    pub(crate) fn from_env() -> Option<Client> {
        let name = std::env::var_os(BROKER_VAR)?;
        Some(Client { name: name.into(), link: std::sync::Mutex::new(None) })
    }

    fn link(&self) -> Result<Arc<Link>, String> {
        let mut link = self.link.lock().unwrap();
        if let Some(link) = &*link {
            return Ok(link.clone());
        }
        let connected = Link::connect(&self.name)?;
        *link = Some(connected.clone());
        Ok(connected)
    }

    pub(super) async fn call_bytes(&self, request: Vec<u8>) -> Result<Called, String> {
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

#[cfg(test)]
impl Client {
    /// A client over a socket already connected to a broker.
    pub(super) fn over(stream: std::os::unix::net::UnixStream) -> Client {
        let link = Link::over(stream).unwrap();
        Client { name: PathBuf::new(), link: std::sync::Mutex::new(Some(link)) }
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
