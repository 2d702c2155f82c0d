//! The native backend's broker: the root host serves the run's shared
//! objects to each worker on the worker's channel (`channel.rs`).
//!
//! Object requests are messages of the channel ([`protocol`]) around the
//! objects' own encoding, which this module never looks into
//! ([`Objects`]); each names its request by an id, and a reader task on the
//! worker's side hands what comes to whom it is for. The root carries a
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
//!   before its guest sees it in memory the root reads ([`tally`], which
//!   the worker sends before its first request), and returns the rest when
//!   the root recalls them ([`kind::RECALL`], [`kind::RETURNED`]). What it
//!   did not take goes back to its queue when the channel ends.
//!
//! Control messages on the channel are passed to [`Peer`] as they come,
//! even while a request waits. When the channel closes (the worker ended:
//! terminate, kill, crash) or carries anything that breaks the protocol,
//! the request under way is dropped, so it takes nothing, the worker's
//! holds and locks are released, and then its supervisor is told.

use super::channel::{Incoming, Peer, Writer};
use super::protocol::{self, head, kind, message};
use crate::backend::Objects;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};

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

/// A channel's incoming messages, as the root reads them.
type Source = BufReader<Incoming>;

/// One message of a channel: its kind, its request's id, the rest.
type Message = (u8, u64, Vec<u8>);

/// What reading a channel gives: a message, `None` at its end, or why it
/// broke the protocol.
type Read = Result<Option<Message>, String>;

/// The root's reading of one channel: here, between requests; in a task
/// of its own while a request waits (so that a withdrawal or the end of the
/// channel is seen at once, and a read cut short loses no bytes).
enum Reading {
    Here(Source),
    Away(tokio::task::JoinHandle<(Source, Read)>),
    Over,
}

/// Reads one message.
async fn read_one(mut source: Source) -> (Source, Read) {
    let message = match protocol::read_bytes_frame_async(&mut source, protocol::MAX_MESSAGE).await {
        Ok(Some(message)) => protocol::parse(message).map(Some),
        Ok(None) => Ok(None),
        Err(why) => Err(why),
    };
    (source, message)
}

impl Reading {
    /// The next message. Dropped midway, it loses nothing: a read away
    /// goes on.
    async fn next(&mut self) -> Read {
        let (source, message) = match self {
            Reading::Away(task) => {
                let read = task.await;
                *self = Reading::Over;
                read.map_err(|e| e.to_string())?
            }
            Reading::Here(_) => {
                let Reading::Here(source) = std::mem::replace(self, Reading::Over) else { unreachable!() };
                read_one(source).await
            }
            Reading::Over => return Ok(None),
        };
        if let Ok(Some(_)) = &message {
            *self = Reading::Here(source);
        }
        message
    }

    /// Reads on in a task of its own, if not already.
    fn away(&mut self) {
        if let Reading::Here(_) = self {
            let Reading::Here(source) = std::mem::replace(self, Reading::Over) else { unreachable!() };
            *self = Reading::Away(tokio::spawn(read_one(source)));
        }
    }

    /// The reading half, between reads.
    fn incoming(&mut self) -> Option<&mut Incoming> {
        match self {
            Reading::Here(source) => Some(source.get_mut()),
            _ => None,
        }
    }
}

/// A control message (any but an object request) passed to `peer`.
async fn control(peer: &mut Peer, reading: &mut Reading, (kind, id, body): Message) -> Result<(), String> {
    let incoming = reading.incoming().ok_or("the channel is not being read")?;
    peer.control(kind, id, body, incoming).await
}

/// Serves one worker's channel until it ends, then releases its holds and
/// tells its supervisor (`channel.rs`). Object requests are carried out one
/// at a time, in the order they came; while one waits the next are read,
/// so a withdrawal or the end of the channel is seen at once: the request
/// under way is then dropped (a blocking one takes nothing).
pub(super) async fn serve(incoming: Incoming, objects: Arc<dyn Objects>, mut peer: Peer) {
    let pid = peer.pid;
    let writer = peer.writer();
    let max_request = objects.max_request();
    let mut tally = None;
    let mut reading = Reading::Here(BufReader::with_capacity(64 << 10, incoming));
    let mut queue: std::collections::VecDeque<Message> = Default::default();
    // A request sent without waiting failed, and the worker was not told.
    let mut failed = false;
    let why = 'serve: loop {
        let (kind, id, body) = match queue.pop_front() {
            Some(next) => next,
            None => match reading.next().await {
                Ok(Some(next)) => next,
                Ok(None) => break None,
                Err(why) => break Some(why),
            },
        };
        if matches!(kind, kind::CALL | kind::SEND) && body.len() > max_request {
            break Some(format!("an object request of {} bytes exceeds the limit of {max_request}", body.len()));
        }
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
            kind::TALLY => match adopt_tally(&mut reading, &mut tally) {
                Ok(()) => continue,
                Err(why) => break Some(why),
            },
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
                        reading.away();
                        // The channel first: a worker gone (or a
                        // withdrawal) wins over an answer that came at the
                        // same moment.
                        tokio::select! {
                            biased;
                            next = reading.next() => match next {
                                Ok(Some((kind::CANCEL, withdrawn, _))) if withdrawn == id => continue 'serve,
                                Ok(Some((kind::CANCEL, withdrawn, _))) => {
                                    queue.retain(|(_, queued, _)| *queued != withdrawn)
                                }
                                Ok(Some((kind::RETURNED, serial, _))) => objects.lease_returned(pid, serial),
                                Ok(Some((kind::TALLY, ..))) => {
                                    if let Err(why) = adopt_tally(&mut reading, &mut tally) {
                                        break 'serve Some(why);
                                    }
                                }
                                // Control messages are not object requests: passed on at once.
                                Ok(Some(next)) if !is_object(next.0) => {
                                    if let Err(why) = control(&mut peer, &mut reading, next).await {
                                        break 'serve Some(why);
                                    }
                                }
                                Ok(Some(_)) if queue.len() >= READ_AHEAD => {
                                    break 'serve Some("too many requests while one waits".into())
                                }
                                Ok(Some(next)) => queue.push_back(next),
                                // The worker is gone: the request is dropped.
                                Ok(None) => break 'serve None,
                                Err(why) => break 'serve Some(why),
                            },
                            answered = &mut call => break answered,
                        }
                    },
                };
                // A request that breaks the protocol ends the channel.
                let mut answered = match answered {
                    Ok(answered) => answered,
                    Err(why) => break Some(why),
                };
                if kind == kind::SEND {
                    if !answered.failed {
                        continue;
                    }
                    failed = true;
                    message(kind::FAILED, id, &[&answered.answer])
                } else {
                    // A lease goes just before the answer, in one write;
                    // without a tally or a free counter, it goes back at once.
                    let mut leased = Ok(Vec::new());
                    if let Some(lease) = answered.lease.take() {
                        match tally.as_ref().and_then(tally::Tally::give) {
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
                        break None;
                    }
                    continue;
                }
            }
            _ => match control(&mut peer, &mut reading, (kind, id, body)).await {
                Ok(()) => continue,
                Err(why) => break Some(why),
            },
        };
        match frame {
            Ok(frame) if writer.lock().await.write_all(&frame).await.is_ok() => {}
            _ => break None,
        }
    };
    if let Reading::Away(task) = reading {
        // Its copy of the socket must go for the worker to see the end.
        task.abort();
    }
    objects.release(pid);
    peer.end(why).await;
}

/// Whether `kind` is about objects (a request, a withdrawal, a lease),
/// not a control message.
fn is_object(kind: u8) -> bool {
    matches!(kind, kind::CALL | kind::SEND | kind::SYNC | kind::ACK | kind::CANCEL | kind::RETURNED | kind::TALLY)
}

/// Maps the lease tally the worker sent with a [`kind::TALLY`] message.
fn adopt_tally(reading: &mut Reading, tally: &mut Option<Arc<tally::Tally>>) -> Result<(), String> {
    let fd = reading.incoming().and_then(Incoming::take_fd).ok_or("a lease tally without its descriptor")?;
    if tally.is_some() {
        return Err("a second lease tally".into());
    }
    *tally = Some(tally::Tally::adopt(&fd).map_err(|e| format!("a lease tally refused: {e}"))?);
    Ok(())
}

mod client;
mod tally;
#[cfg(test)]
mod tests;

pub(crate) use client::Client;
