//! A worker's side of its channel (`channel.rs`): its object requests go
//! out as they are made, tagged with an id, and a reader task hands each
//! answer to the request waiting for it (a request dropped midway is
//! withdrawn); the same task takes its orders, if it is a pool worker, and
//! what the root relays of its children's channels. Anything the worker
//! says (a report, its orphans, a child's channel) goes out in order with
//! its requests.

use super::tally::Tally;
use super::{parse_lease, split_u64};
use crate::backend::native::channel::{ReportSender, Reports};
use crate::backend::native::protocol::{self, Order, head, kind, message};
use crate::backend::{BoxFuture, Called, RemoteObjects};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use tokio::net::UnixStream;

mod reader;
use reader::read_answers;

/// Where a pool worker's orders go as they come; `None` once no more come.
pub(crate) type OrderSink = Box<dyn FnMut(Option<Result<Order, String>>) + Send>;

/// What the worker's reader hands to a request waiting for its answer.
enum Response {
    Answer { allowance: u64, answer: Vec<u8> },
    Refused,
    Synced,
}

/// A worker's channel to its root, once its reader runs.
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
    /// The items the root leased ahead, by object (see [`crate::backend::Lease`]).
    leases: std::sync::Mutex<std::collections::HashMap<u64, Leased>>,
    /// Where this worker counts the leased items it takes: made, and sent
    /// to the root, before its first object request.
    tally: OnceLock<Tally>,
    /// Where its orders go (a pool worker).
    orders: std::sync::Mutex<Option<OrderSink>>,
    /// Its children's reports, relayed by the root, by pid.
    children: std::sync::Mutex<std::collections::HashMap<u32, ReportSender>>,
    /// Requests sent without waiting, not written yet: they go together,
    /// in one write, ahead of the next message, once [`PENDING_LIMIT`]
    /// bytes are pending, or when this host next idles.
    pending: std::sync::Mutex<Vec<u8>>,
    /// Wakes the task that writes what is pending when this host idles.
    idle: Arc<tokio::sync::Notify>,
}

/// How many bytes of requests sent without waiting may wait to be written.
const PENDING_LIMIT: usize = 64 << 10;

impl Drop for Link {
    fn drop(&mut self) {
        // Its writer task ends.
        self.idle.notify_one();
    }
}

/// One lease as the worker holds it: its serial, its counter in the
/// tally and the items not taken.
struct Leased {
    serial: u64,
    counter: u32,
    items: std::collections::VecDeque<Vec<u8>>,
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
    /// The link over the channel, its reader started.
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
            leases: Default::default(),
            tally: OnceLock::new(),
            orders: Default::default(),
            children: Default::default(),
            pending: Default::default(),
            idle: Default::default(),
        });
        tokio::spawn(read_answers(reader, Arc::downgrade(&link)));
        tokio::spawn(write_when_idle(link.idle.clone(), Arc::downgrade(&link)));
        Ok(link)
    }

    /// The tally, made and sent to the root the first time.
    fn tally(&self) -> Result<&Tally, String> {
        if let Some(tally) = self.tally.get() {
            return Ok(tally);
        }
        let (tally, fd) = Tally::new().map_err(|e| format!("cannot make the lease tally: {e}"))?;
        let frame = message(kind::TALLY, 0, &[]).map_err(|e| e.to_string())?;
        self.write_with_fd(&frame, &fd)?;
        Ok(self.tally.get_or_init(|| tally))
    }

    /// Why nothing more can be written, if so; else whether the root is
    /// owed an acknowledgement (which goes before what is written next).
    fn writable(&self) -> Result<bool, String> {
        let mut state = self.state.lock().unwrap();
        if let Some(why) = &state.closed {
            return Err(why.clone());
        }
        Ok(std::mem::take(&mut state.acknowledge))
    }

    /// Writes a message of `kind` (after what is pending and an
    /// acknowledgement the root is owed), `body` as it lies (a large item
    /// is not copied); waits only while the socket is full.
    fn write(&self, kind: u8, id: u64, body: &[u8]) -> Result<(), String> {
        let head = head(kind, id);
        let parts = [body, &head];
        let framing = protocol::Framing::new(&parts).map_err(|e| e.to_string())?;
        self.write_after_pending(&framing.slices(&parts))
    }

    /// Writes whole messages, after what is pending.
    fn write_framed(&self, frames: &[u8]) -> Result<(), String> {
        self.write_after_pending(&[std::io::IoSlice::new(frames)])
    }

    fn write_after_pending(&self, slices: &[std::io::IoSlice<'_>]) -> Result<(), String> {
        let acknowledge = self.writable()?;
        let writer = self.writer.lock().unwrap();
        let mut pending = std::mem::take(&mut *self.pending.lock().unwrap());
        if acknowledge {
            pending.extend_from_slice(&message(kind::ACK, 0, &[]).map_err(|e| e.to_string())?);
        }
        let mut all = vec![std::io::IoSlice::new(&pending)];
        all.extend_from_slice(slices);
        write_all(&writer, &mut all)
    }

    /// Writes the message `frame` with the descriptor `fd` (`SCM_RIGHTS`),
    /// after what is pending.
    fn write_with_fd(&self, frame: &[u8], fd: &OwnedFd) -> Result<(), String> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let acknowledge = self.writable()?;
        let writer = self.writer.lock().unwrap();
        let mut pending = std::mem::take(&mut *self.pending.lock().unwrap());
        if acknowledge {
            pending.extend_from_slice(&message(kind::ACK, 0, &[]).map_err(|e| e.to_string())?);
        }
        write_all(&writer, &mut [std::io::IoSlice::new(&pending)])?;
        let fds = [fd.as_raw_fd()];
        loop {
            let rights = [ControlMessage::ScmRights(&fds)];
            let iov = [std::io::IoSlice::new(frame)];
            match sendmsg::<()>(writer.as_raw_fd(), &iov, &rights, MsgFlags::MSG_NOSIGNAL, None) {
                // The descriptor went with the first byte: the rest as any.
                Ok(sent) => return write_all(&writer, &mut [std::io::IoSlice::new(&frame[sent..])]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    let mut fds =
                        [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&*writer), nix::poll::PollFlags::POLLOUT)];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
                }
                Err(e) => return Err(format!("cannot write to the root host: {e}")),
            }
        }
    }

    /// Queues a request sent without waiting (after an acknowledgement the
    /// root is owed): written with the next message, at once past
    /// [`PENDING_LIMIT`] bytes (a large one at once, not copied), or when
    /// this host idles.
    fn send_ahead(&self, id: u64, body: &[u8]) -> Result<(), String> {
        if body.len() >= PENDING_LIMIT {
            return self.write(kind::SEND, id, body);
        }
        let frame = message(kind::SEND, id, &[body]).map_err(|e| e.to_string())?;
        let acknowledge = self.writable()?;
        let (first, full) = {
            let mut pending = self.pending.lock().unwrap();
            let first = pending.is_empty();
            if acknowledge {
                pending.extend_from_slice(&message(kind::ACK, 0, &[]).map_err(|e| e.to_string())?);
            }
            pending.extend_from_slice(&frame);
            (first, pending.len() >= PENDING_LIMIT)
        };
        if full {
            self.write_pending()
        } else {
            if first {
                self.idle.notify_one();
            }
            Ok(())
        }
    }

    /// Writes what is pending, if anything.
    fn write_pending(&self) -> Result<(), String> {
        let writer = self.writer.lock().unwrap();
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        if pending.is_empty() { Ok(()) } else { write_all(&writer, &mut [std::io::IoSlice::new(&pending)]) }
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
            state.closed.clone().unwrap_or_else(|| "the root host closed the channel".into())
        })
    }
}

impl Link {
    /// The oldest item leased from `object`, counted as taken first where
    /// the root reads it (so that, should this process end now, it is not
    /// given to another): the leases' lock is held meanwhile, so a recall
    /// cannot return it too.
    fn take_leased(&self, object: u64) -> Option<Vec<u8>> {
        let mut leases = self.leases.lock().unwrap();
        let leased = leases.get_mut(&object)?;
        let item = leased.items.pop_front()?;
        let counter = self.tally.get()?.counter(leased.counter).expect("checked as the lease came");
        counter.fetch_add(1, std::sync::atomic::Ordering::Release);
        if leased.items.is_empty() {
            leases.remove(&object);
        }
        Some(item)
    }

    /// Returns the leases `which` picks (at most one per object) to the root.
    fn give_back(&self, which: impl Fn(u64, &Leased) -> bool) {
        let mut leases = self.leases.lock().unwrap();
        let objects: Vec<u64> =
            leases.iter().filter(|&(&object, leased)| which(object, leased)).map(|(&object, _)| object).collect();
        for object in objects {
            if let Some(leased) = leases.remove(&object) {
                // The connection is over if this fails: the root takes
                // the lease back all the same.
                let _ = self.write(kind::RETURNED, leased.serial, &[]);
            }
        }
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

/// Writes all of `slices`, in order, on the non-blocking socket, waiting
/// while it is full.
pub(super) fn write_all(
    mut socket: &std::os::unix::net::UnixStream,
    mut slices: &mut [std::io::IoSlice<'_>],
) -> Result<(), String> {
    use std::io::Write;
    use std::os::fd::AsFd;
    loop {
        // Empty slices first are skipped: writing none is no end of the channel.
        std::io::IoSlice::advance_slices(&mut slices, 0);
        if slices.is_empty() {
            return Ok(());
        }
        match socket.write_vectored(slices) {
            Ok(0) => return Err("the root host closed the channel".into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [nix::poll::PollFd::new(socket.as_fd(), nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
            }
            Err(e) => return Err(format!("cannot write to the root host: {e}")),
        }
    }
}

/// Writes what is pending each time this host idles after a request was
/// sent without waiting (a guest that computes on after a put yields at
/// its next time slice), until the link is dropped.
async fn write_when_idle(idle: Arc<tokio::sync::Notify>, link: std::sync::Weak<Link>) {
    loop {
        idle.notified().await;
        let Some(link) = link.upgrade() else { return };
        if link.write_pending().is_err() {
            return;
        }
    }
}

/// A worker's side of its channel: the descriptor it inherited, until its
/// reader is started (the first time it is needed: most workers never use
/// a shared object, serve no pool and start no child).
pub(crate) struct Client {
    fd: std::sync::Mutex<Option<OwnedFd>>,
    link: std::sync::Mutex<Option<Arc<Link>>>,
}

impl Client {
    /// The channel `fd`, which the worker inherited.
    pub(crate) fn new(fd: OwnedFd) -> Client {
        Client { fd: std::sync::Mutex::new(Some(fd)), link: std::sync::Mutex::new(None) }
    }

    fn link(&self) -> Result<Arc<Link>, String> {
        let mut link = self.link.lock().unwrap();
        if let Some(link) = &*link {
            return Ok(link.clone());
        }
        let fd = self.fd.lock().unwrap().take().ok_or("this process has no channel to the root host")?;
        let started = Link::over(std::os::unix::net::UnixStream::from(fd))?;
        *link = Some(started.clone());
        Ok(started)
    }

    /// The link, ready for object requests.
    fn objects(&self) -> Result<Arc<Link>, String> {
        let link = self.link()?;
        link.tally()?;
        Ok(link)
    }

    /// Writes whole messages, in order with everything else (blocking only
    /// while the channel is full).
    pub(crate) fn write_framed(&self, frames: &[u8]) -> Result<(), String> {
        if let Some(link) = self.link.lock().unwrap().clone() {
            return link.write_framed(frames);
        }
        // Not started: the descriptor is still blocking, and ours alone.
        let fd = self.fd.lock().unwrap();
        let fd = fd.as_ref().ok_or("this process has no channel to the root host")?;
        // SAFETY: borrowed for this write only, never closed through it.
        let file = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd.as_raw_fd())
        });
        std::io::Write::write_all(&mut &*file, frames).map_err(|e| format!("cannot write to the root host: {e}"))
    }

    /// Hands the root the channel `ours` of our new child `pid`; what it
    /// reports comes back, relayed.
    pub(crate) fn adopt(&self, pid: u32, ours: OwnedFd) -> Result<Reports, String> {
        let link = self.link()?;
        let (sender, reports) = tokio::sync::mpsc::unbounded_channel();
        link.children.lock().unwrap().insert(pid, sender);
        let frame = message(kind::ADOPT, u64::from(pid), &[]).map_err(|e| e.to_string())?;
        if let Err(why) = link.write_with_fd(&frame, &ours) {
            link.children.lock().unwrap().remove(&pid);
            return Err(why);
        }
        Ok(reports)
    }

    /// Hands every order that comes to `sink` (a pool worker).
    pub(crate) fn take_orders(&self, sink: OrderSink) -> Result<(), String> {
        *self.link()?.orders.lock().unwrap() = Some(sink);
        Ok(())
    }

    /// In a forked child: the channel is its parent's (the root knows it by
    /// its parent's pid), so it is left to the parent, untouched, and the
    /// child takes `fd`, its own.
    pub(crate) fn rebind(&self, fd: OwnedFd) {
        self.leave();
        if let Some(old) = self.fd.lock().unwrap().replace(fd) {
            // Closed here, not in the parent: our copy of its channel.
            drop(old);
        }
    }

    /// Leaves the parent's link, if one was started, untouched: see
    /// [`RemoteObjects::leave_connection`].
    fn leave(&self) {
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

    pub(super) async fn call_bytes(&self, request: Vec<u8>) -> Result<Called, String> {
        let link = self.objects()?;
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
        let link = self.objects()?;
        let id = link.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        link.sent_ahead.fetch_add(1, Ordering::SeqCst);
        link.send_ahead(id, &request)
    }

    fn flush(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        Box::pin(self.flush_link())
    }

    fn settled(&self) -> bool {
        let Some(link) = self.link.lock().unwrap().clone() else { return true };
        link.carried_out.load(Ordering::SeqCst) >= link.sent_ahead.load(Ordering::SeqCst)
            && link.state.lock().unwrap().failure.is_none()
    }

    fn connected(&self) -> bool {
        self.link.try_lock().map_or(true, |link| link.as_ref().is_some_and(|link| link.tally.get().is_some()))
    }

    fn take_leased(&self, object: u64) -> Option<Vec<u8>> {
        self.link.lock().unwrap().clone().and_then(|link| link.take_leased(object))
    }

    fn return_lease(&self, object: u64) {
        if let Some(link) = self.link.lock().unwrap().clone() {
            link.give_back(|leased_from, _| leased_from == object);
        }
    }

    fn leave_connection(&self) {
        self.leave();
    }
}
