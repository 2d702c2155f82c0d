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
//!   to be carried out ([`kind::SYNC`]).
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

mod client;
#[cfg(test)]
mod tests;

pub(crate) use client::Client;
