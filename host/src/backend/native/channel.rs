//! A worker's one channel: a socket pair, one end in the worker, the other
//! in the root host, which carries every message between them, both ways,
//! in one order, in the frames of [`protocol`].
//!
//! What it carries: the worker's [`Start`](protocol::Start) (unless its
//! zygote hands it over), a pool worker's orders and its reports (results,
//! tasks given back, its end), its shared-object requests and their answers
//! (`broker.rs`), the children it leaves running as it ends (adopted by the
//! root), and what its own children's channels say to it.
//!
//! Every worker's channel goes to the root, whoever started it, because the
//! run's shared objects live there and an orphan keeps them when its parent
//! ends; the process tree itself does not change (a worker's children are
//! its OS children, which it waits for, signals and joins by pidfd).
//! The pair is made where the process is made: by the root for its own
//! children; by a worker for its children (and forks), which then hands
//! the root its end, with the child's pid, on its own channel
//! ([`kind::ADOPT`], the descriptor as `SCM_RIGHTS`), once the child has
//! its start. The root checks that the child is that worker's child. What
//! the child reports is then relayed to its parent on the parent's channel
//! ([`kind::CHILD_REPORT`], [`kind::CHILD_END`]), and the parent's orders
//! for it go through the root the same way ([`kind::CHILD_ORDER`]).
//!
//! The root serves each channel in one task (`broker::serve`): it carries
//! out object requests in order and passes control messages on as they
//! come. When the channel ends (the worker exited, was killed, or broke the
//! protocol) the task drops the request under way, releases what the
//! worker held, and only then tells whoever supervises the worker that the
//! channel is over: a worker's end is recorded after every request it sent
//! is carried out or dropped, never before (a dead worker's blocked put
//! cannot land in a queue after its end).
//!
//! Besides its channel a worker holds the lifeline (the root's death), its
//! program's sealed code and the run's process table, and its stdin,
//! stdout and stderr.

use super::broker::{self, Client};
use super::protocol::{self, Report, kind};
use crate::backend::Objects;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncWriteExt, ReadBuf};

/// The root's writing half of a channel.
pub(super) type Writer = Arc<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>;

/// A worker's reports as its supervisor reads them: each report, or why the
/// channel broke the protocol; closed once the channel is over.
pub(super) type Reports = tokio::sync::mpsc::UnboundedReceiver<Result<Report, String>>;

pub(super) type ReportSender = tokio::sync::mpsc::UnboundedSender<Result<Report, String>>;

/// A new socket pair for a worker's channel: ours, and the worker's.
pub(super) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    Ok(socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?)
}

/// What the supervisor of a worker has of its channel.
pub(super) struct Supervised {
    pub(super) reports: Reports,
    pub(super) orders: Orders,
}

/// Where a pool worker's orders go.
pub(super) enum Orders {
    /// On its channel: the root's own child.
    Direct(Writer),
    /// On its parent's channel, which the root relays: a worker's child.
    Relayed(Arc<Client>, u32),
}

impl Orders {
    /// One order, framed for where it goes.
    pub(super) fn frame(&self, order: &protocol::Order) -> io::Result<Vec<u8>> {
        match self {
            Orders::Direct(_) => protocol::control(kind::ORDER, 0, order),
            Orders::Relayed(_, pid) => protocol::control(kind::CHILD_ORDER, u64::from(*pid), order),
        }
    }

    /// Writes framed orders, in one write.
    pub(super) async fn write(&self, frames: &[u8]) -> io::Result<()> {
        match self {
            Orders::Direct(writer) => writer.lock().await.write_all(frames).await,
            Orders::Relayed(client, _) => client.write_framed(frames).map_err(io::Error::other),
        }
    }
}

/// Serves the channel `ours` of the root's own child `pid`.
pub(super) fn serve_child(objects: Arc<dyn Objects>, ours: OwnedFd, pid: u32) -> io::Result<Supervised> {
    let (sender, reports) = tokio::sync::mpsc::unbounded_channel();
    let writer = open(objects, ours, pid, Route::Supervisor(sender))?;
    Ok(Supervised { reports, orders: Orders::Direct(writer) })
}

/// Starts serving the channel `ours` of the worker `pid`; its writing half.
fn open(objects: Arc<dyn Objects>, ours: OwnedFd, pid: u32, route: Route) -> io::Result<Writer> {
    let stream = std::os::unix::net::UnixStream::from(ours);
    stream.set_nonblocking(true)?;
    let (reader, writer) = tokio::net::UnixStream::from_std(stream)?.into_split();
    let writer: Writer = Arc::new(tokio::sync::Mutex::new(writer));
    let peer = Peer { pid, route, writer: writer.clone(), children: Default::default(), objects: objects.clone() };
    tokio::spawn(broker::serve(Incoming { half: reader, fds: VecDeque::new() }, objects, peer));
    Ok(writer)
}

/// Who hears what a worker reports.
enum Route {
    /// The root supervises it (its own child).
    Supervisor(ReportSender),
    /// Its parent, a worker, on that worker's channel.
    Parent(Writer),
}

/// The root's side of one worker's channel, but for its object requests.
pub(super) struct Peer {
    pub(super) pid: u32,
    route: Route,
    /// This channel's writing half, to which its children's reports go.
    writer: Writer,
    /// The writing halves of its children's channels, for their orders.
    children: std::collections::HashMap<u32, std::sync::Weak<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>>,
    objects: Arc<dyn Objects>,
}

/// How many descriptors a worker may have sent ahead of the messages they
/// come with.
const MAX_FDS: usize = 8;

impl Peer {
    /// The channel's writing half.
    pub(super) fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Carries out a control message (any but an object request); an error
    /// breaks the protocol.
    pub(super) async fn control(&mut self, kind: u8, id: u64, body: Vec<u8>, fds: &mut Incoming) -> Result<(), String> {
        match kind {
            kind::REPORT => match &self.route {
                Route::Supervisor(sender) => {
                    let _ = sender.send(protocol::decode_control(&body));
                }
                // Decoded by the parent, which trusts it no more than we do.
                Route::Parent(writer) => {
                    let frame = protocol::message(kind::CHILD_REPORT, u64::from(self.pid), &[&body]);
                    let _ = write(writer, frame).await;
                }
            },
            kind::ORPHANS => {
                if !body.len().is_multiple_of(4) {
                    return Err("orphans' pids cut short".into());
                }
                body.chunks_exact(4).for_each(|pid| {
                    super::orphans::adopt_announced(u32::from_le_bytes(pid.try_into().expect("4 bytes")))
                });
            }
            kind::ADOPT => {
                let fd = fds.take_fd().ok_or("a child's channel without its descriptor")?;
                let child = u32::try_from(id).map_err(|_| "a child's pid out of range")?;
                // A worker speaks for its own children alone: one that is
                // another's is refused (as its end). One already reaped by
                // its parent (which reaps as soon as it exits), or being
                // reaped, has no parent left to compare: its channel is
                // served to its end all the same.
                if super::orphans::parent_of(child).is_some_and(|parent| parent != self.pid) {
                    let frame = protocol::message(kind::CHILD_END, id, &[b"not a child of its parent"]);
                    let _ = write(&self.writer, frame).await;
                    return Ok(());
                }
                let route = Route::Parent(self.writer.clone());
                let writer = open(self.objects.clone(), fd, child, route).map_err(|e| e.to_string())?;
                if self.children.len() >= 64 {
                    self.children.retain(|_, writer| writer.strong_count() > 0);
                }
                self.children.insert(child, Arc::downgrade(&writer));
            }
            kind::CHILD_ORDER => {
                let child = u32::try_from(id).ok().and_then(|pid| self.children.get(&pid)?.upgrade());
                // A child gone: the parent learns it from its end.
                if let Some(child) = child {
                    let _ = write(&child, protocol::message(kind::ORDER, 0, &[&body])).await;
                }
            }
            _ => return Err(format!("a message of unknown kind {kind}")),
        }
        Ok(())
    }

    /// The channel is over (every request carried out or dropped, what the
    /// worker held released): its supervisor is told, with why it broke
    /// the protocol, if it did.
    pub(super) async fn end(self, why: Option<String>) {
        match self.route {
            Route::Supervisor(sender) => {
                if let Some(why) = why {
                    let _ = sender.send(Err(why));
                }
            }
            Route::Parent(writer) => {
                let why = why.unwrap_or_default();
                let frame = protocol::message(kind::CHILD_END, u64::from(self.pid), &[why.as_bytes()]);
                let _ = write(&writer, frame).await;
            }
        }
    }
}

async fn write(writer: &Writer, frame: io::Result<Vec<u8>>) -> io::Result<()> {
    writer.lock().await.write_all(&frame?).await
}

/// The reading half of a channel at the root: its bytes, and the
/// descriptors that came with them (`SCM_RIGHTS`), in the order they came,
/// for the messages that carry one to take.
pub(super) struct Incoming {
    half: tokio::net::unix::OwnedReadHalf,
    fds: VecDeque<OwnedFd>,
}

impl Incoming {
    /// The oldest descriptor that came and no message took.
    pub(super) fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }
}

impl tokio::io::AsyncRead for Incoming {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            std::task::ready!(this.half.as_ref().poll_read_ready(cx))?;
            // SAFETY: the kernel only writes the bytes it reports, which
            // are then marked filled; nothing reads the rest.
            let unfilled = unsafe { buf.unfilled_mut() };
            let (ptr, len) = (unfilled.as_mut_ptr().cast::<u8>(), unfilled.len());
            let fds = &mut this.fds;
            let socket = this.half.as_ref();
            match socket.try_io(tokio::io::Interest::READABLE, || receive(socket.as_raw_fd(), ptr, len, fds)) {
                Ok(n) => {
                    // SAFETY: `receive` wrote `n` bytes there.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if fds.len() > MAX_FDS {
                        return Poll::Ready(Err(io::Error::other("descriptors no message took")));
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The worker closed with bytes of ours unread: its end.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// One `recvmsg` into `len` bytes at `ptr`; the descriptors that came are
/// pushed to `fds`.
///
/// Raw libc, not nix's `recvmsg`: nix wants the bytes as an initialized
/// `&mut [u8]` (these are the unfilled, maybe uninitialized, part of
/// tokio's buffer), and on `MSG_CTRUNC` its `cmsgs()` refuses to walk the
/// control messages at all, so the descriptors that did come could not be
/// owned and closed here: they would stay open in the root for good.
fn receive(socket: i32, ptr: *mut u8, len: usize, fds: &mut VecDeque<OwnedFd>) -> io::Result<usize> {
    // Room for the descriptors of a few messages read at once.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec { iov_base: ptr.cast(), iov_len: len };
    // SAFETY: zeroed is a valid msghdr (no name, no buffers).
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every buffer the header names is valid for its length.
    let n = unsafe { libc::recvmsg(socket, &mut header, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the control buffer as the header says; the
    // macros walk it within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<i32>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<i32>();
                for i in 0..count {
                    fds.push_back(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    if header.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("more descriptors than a message may carry"));
    }
    Ok(n as usize)
}
