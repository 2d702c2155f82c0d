//! The native backend's broker: the root host serves the run's shared
//! objects to its workers over a unix socket.
//!
//! The root host listens on a socket of a random name in Linux's abstract
//! namespace, never a file: no directory a guest may be granted (`/tmp`,
//! `$TMPDIR`) reaches it, to remove or replace. It passes the name to every
//! worker (and workers to theirs) in `HOST_SYNC_BROKER`. A worker connects the first time its guest uses a
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
//!   the root gave ([`crate::backend::Called::allowance`]), so that it cannot fail; should
//!   one fail all the same, the root refuses the worker's next call with
//!   that failure, once, and the worker's end waits for every such request
//!   to be carried out ([`kind::SYNC`]);
//! - items can be handed ahead ([`kind::LEASE`], see [`crate::backend::Lease`]):
//!   the worker serves its next gets from them, counting each item it takes
//!   before its guest sees it in memory the root reads ([`tally`], sent as
//!   the connection's first byte), and returns the rest when the root
//!   recalls them ([`kind::RECALL`], [`kind::RETURNED`]). What it did not
//!   take goes back to its queue when the connection ends.
//!
//! The root learns the peer's pid from the kernel (`SO_PEERCRED`), so a
//! worker acts only as the process it is, and refuses peers of another
//! user. When the connection closes (the worker ended: terminate, kill,
//! crash) or carries anything that breaks the protocol, the request under
//! way is dropped, so it takes nothing, and the worker's holds and locks
//! are released.

use super::protocol;
use crate::backend::Objects;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The environment variable naming the broker's socket.
pub(crate) const BROKER_VAR: &str = "HOST_SYNC_BROKER";

/// The socket address of the abstract `name`.
fn address(name: &std::path::Path) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_os_str().as_bytes())
}

/// A socket name no other process can guess, and so take first.
fn unguessable_name() -> std::io::Result<PathBuf> {
    let mut bytes = [0u8; 16];
    // SAFETY: the buffer is valid for writes of its length.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PathBuf::from(format!("mp-broker-{:032x}", u128::from_le_bytes(bytes))))
}

/// Listens for workers on a new socket and serves `objects` to them, for
/// as long as the runtime lives; the socket's abstract name.
pub(crate) fn listen(runtime: &tokio::runtime::Handle, objects: Arc<dyn Objects>) -> anyhow::Result<PathBuf> {
    let name = unguessable_name()?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&address(&name)?)?;
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
    Ok(name)
}

/// What a worker sends on its connection; every message is the rest, a
/// request id (little-endian `u64`) and a kind byte, last (so that the rest
/// is taken as it came, without a copy), in one message of the backend's
/// codec ([`protocol`]).
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
    /// The worker returned the lease its id names (out of turn).
    pub(super) const RETURNED: u8 = 7;
    /// The root's answer to a [`CALL`]: the answer, then an allowance (`u64`).
    pub(super) const ANSWER: u8 = 1;
    /// A [`SEND`] failed: its answer.
    pub(super) const FAILED: u8 = 2;
    /// A [`CALL`] not carried out because a [`SEND`] before it failed
    /// (and the worker has not acknowledged it yet).
    pub(super) const REFUSED: u8 = 3;
    /// The answer to a [`SYNC`].
    pub(super) const SYNCED: u8 = 4;
    /// Items handed ahead, just before the answer to the [`CALL`] that
    /// took the first: its id the lease's serial, its body the object's
    /// id (`u64`), the lease's counter in the tally (`u32`) and each item,
    /// its length (`u32`) first.
    pub(super) const LEASE: u8 = 5;
    /// The root wants the lease its id names back: answered with
    /// [`RETURNED`] unless all of it was taken.
    pub(super) const RECALL: u8 = 6;
}

/// The head of every message on a connection.
const HEAD: usize = 9;

/// One message on a connection, checked.
fn parse(mut message: Vec<u8>) -> Result<(u8, u64, Vec<u8>), String> {
    let at = message.len().checked_sub(HEAD).ok_or("a message shorter than its head")?;
    let id = u64::from_le_bytes(message[at..at + 8].try_into().expect("8 bytes"));
    let kind = message[at + 8];
    message.truncate(at);
    Ok((kind, id, message))
}

/// The head a message of `kind` about request `id` ends with.
fn head(kind: u8, id: u64) -> [u8; HEAD] {
    let mut head = [kind; HEAD];
    head[..8].copy_from_slice(&id.to_le_bytes());
    head
}

/// A message of `kind` about request `id`, framed.
fn message(kind: u8, id: u64, parts: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let head = head(kind, id);
    let mut all = parts.to_vec();
    all.push(&head);
    protocol::encode_parts(&all)
}

/// The last `u64` of `body`, taken off it.
fn split_u64(body: &mut Vec<u8>) -> Option<u64> {
    let at = body.len().checked_sub(8)?;
    let value = u64::from_le_bytes(body[at..].try_into().expect("8 bytes"));
    body.truncate(at);
    Some(value)
}

/// The message handing `lease` to the worker, counted by `counter`.
fn lease_message(lease: &crate::backend::Lease, counter: u32) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(12 + lease.items.iter().map(|item| 4 + item.len()).sum::<usize>());
    body.extend_from_slice(&lease.object.to_le_bytes());
    body.extend_from_slice(&counter.to_le_bytes());
    for item in lease.items.iter() {
        body.extend_from_slice(&(item.len() as u32).to_le_bytes());
        body.extend_from_slice(item);
    }
    message(kind::LEASE, lease.serial, &[&body])
}

/// A [`kind::LEASE`] message's object, counter and items, checked.
fn parse_lease(body: &[u8]) -> Result<(u64, u32, std::collections::VecDeque<Vec<u8>>), String> {
    let object = body.get(..8).ok_or("a lease without its object")?;
    let object = u64::from_le_bytes(object.try_into().expect("8 bytes"));
    let counter = body.get(8..12).ok_or("a lease without its counter")?;
    let counter = u32::from_le_bytes(counter.try_into().expect("4 bytes"));
    let (mut rest, mut items) = (&body[12..], std::collections::VecDeque::new());
    while !rest.is_empty() {
        let length = rest.get(..4).ok_or("a lease's item cut in its length")?;
        let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
        let item = rest.get(4..4 + length).ok_or("a lease's item cut short")?;
        items.push_back(item.to_vec());
        rest = &rest[4 + length..];
    }
    Ok((object, counter, items))
}

/// The root's writing half of a connection: answers, and lease recalls
/// from tasks of their own.
type Writer = Arc<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>;

/// Asks the worker to return the lease `serial` once its objects recall it.
fn recall_when(writer: &Writer, serial: u64, recalled: tokio::sync::oneshot::Receiver<()>) {
    let writer = writer.clone();
    tokio::spawn(async move {
        if recalled.await.is_ok()
            && let Ok(frame) = message(kind::RECALL, serial, &[])
        {
            let _ = writer.lock().await.write_all(&frame).await;
        }
    });
}

/// Writes all of `slices`, in order.
async fn write_all_vectored(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    mut slices: &mut [std::io::IoSlice<'_>],
) -> std::io::Result<()> {
    while !slices.is_empty() {
        match writer.write_vectored(slices).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            written => std::io::IoSlice::advance_slices(&mut slices, written),
        }
    }
    Ok(())
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
    let tally = match tally::Tally::new() {
        Ok((tally, fd)) if tally::send(&stream, &fd).await.is_ok() => tally,
        _ => return objects.release(pid),
    };
    let (reader, writer) = stream.into_split();
    let writer: Writer = Arc::new(tokio::sync::Mutex::new(writer));
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
            kind::RETURNED => {
                objects.lease_returned(pid, id);
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
                        // The connection first: a worker gone (or a
                        // withdrawal) wins over an answer that came at the
                        // same moment, so a dead worker's put never lands.
                        tokio::select! {
                            biased;
                            next = reading.next(limit) => match next {
                                Some((kind::CANCEL, withdrawn, _)) if withdrawn == id => continue 'serve,
                                Some((kind::CANCEL, withdrawn, _)) => queue.retain(|(_, queued, _)| *queued != withdrawn),
                                Some((kind::RETURNED, serial, _)) => objects.lease_returned(pid, serial),
                                Some(_) if queue.len() >= READ_AHEAD => break 'serve,
                                Some(next) => queue.push_back(next),
                                // The worker is gone: the request is dropped.
                                None => break 'serve,
                            },
                            answered = &mut call => break answered,
                        }
                    },
                };
                // A request that breaks the protocol ends the connection.
                let Ok(mut answered) = answered else { break };
                if kind == kind::SEND {
                    if !answered.failed {
                        continue;
                    }
                    failed = true;
                    message(kind::FAILED, id, &[&answered.answer])
                } else {
                    // A lease goes just before the answer, in one write;
                    // without a free counter, it goes back at once.
                    let mut leased = Ok(Vec::new());
                    if let Some(lease) = answered.lease.take() {
                        match tally.give() {
                            Some(counter) => {
                                leased = lease_message(&lease, counter.index());
                                objects.lease_counted(pid, lease.serial, Box::new(counter));
                                recall_when(&writer, lease.serial, lease.recalled);
                            }
                            None => objects.lease_returned(pid, lease.serial),
                        }
                    }
                    // The answer (a large item) is written as it lies.
                    let (allowance, head) = (answered.allowance.to_le_bytes(), head(kind::ANSWER, id));
                    let parts = [&answered.answer[..], &allowance, &head];
                    let sent = match (leased, protocol::Framing::new(&parts)) {
                        (Ok(leased), Ok(framing)) => {
                            let mut slices = vec![std::io::IoSlice::new(&leased)];
                            slices.extend(framing.slices(&parts));
                            write_all_vectored(&mut *writer.lock().await, &mut slices).await.is_ok()
                        }
                        _ => false,
                    };
                    if !sent {
                        // Not handed over: what it took goes back.
                        if let Some(undo) = answered.undo {
                            undo(answered.answer);
                        }
                        break;
                    }
                    continue;
                }
            }
            _ => break,
        };
        match frame {
            Ok(frame) if writer.lock().await.write_all(&frame).await.is_ok() => {}
            _ => break,
        }
    }
    if let Reading::Away(task) = reading {
        // Its copy of the socket must go for the worker to see the end.
        task.abort();
    }
    objects.release(pid);
}

mod client;
mod tally;
#[cfg(test)]
mod tests;

pub(crate) use client::Client;
