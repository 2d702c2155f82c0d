//! The reader task of a worker's channel ([`Link`]): it hands each answer
//! the root sends to the request waiting for it, takes leases and recalls,
//! passes a pool worker's orders to its sink and its children's relayed
//! reports to their supervisors, until the channel ends; then every
//! waiting request learns why.

use super::{Leased, Link, Response, parse_lease, split_u64};
use crate::backend::native::protocol::{self, kind, parse};
use tokio::io::BufReader;
use tokio::net::UnixStream;

/// Hands each answer the root sends to the request waiting for it, until
/// the connection ends (then every waiting request learns why).
pub(super) async fn read_answers(stream: UnixStream, link: std::sync::Weak<Link>) {
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let why = loop {
        let message = match protocol::read_bytes_frame_async(&mut reader, protocol::MAX_MESSAGE).await {
            Ok(Some(message)) => parse(message),
            Ok(None) => Err("the root host closed the channel".into()),
            Err(why) => Err(why),
        };
        let Some(link) = link.upgrade() else { return };
        let (kind, id, mut body) = match message {
            Ok(message) => message,
            Err(why) => break (link, why),
        };
        match kind {
            kind::LEASE => match parse_lease(&body) {
                Ok((_, counter, _)) if link.tally.get().and_then(|tally| tally.counter(counter)).is_none() => {
                    break (link, format!("a lease counted past the tally ({counter})"));
                }
                Ok((object, counter, items)) => {
                    let leased = Leased { serial: id, counter, items };
                    let replaced = link.leases.lock().unwrap().insert(object, leased);
                    // Not the root's way (a lease comes when the last is
                    // all taken), but then the last goes back whole.
                    if let Some(replaced) = replaced {
                        let _ = link.write(kind::RETURNED, replaced.serial, &[]);
                    }
                    continue;
                }
                Err(why) => break (link, why),
            },
            kind::RECALL => {
                link.give_back(|_, leased| leased.serial == id);
                continue;
            }
            kind::ORDER => {
                let order = protocol::decode_control(&body);
                let taken = link.orders.lock().unwrap().as_mut().map(|sink| sink(Some(order))).is_some();
                if !taken {
                    break (link, "an order for a worker that takes none".into());
                }
                continue;
            }
            kind::CHILD_REPORT | kind::CHILD_END => {
                let child = u32::try_from(id).unwrap_or(0);
                let mut children = link.children.lock().unwrap();
                if kind == kind::CHILD_REPORT {
                    if let Some(reports) = children.get(&child) {
                        let _ = reports.send(protocol::decode_control(&body));
                    }
                } else if let Some(reports) = children.remove(&child)
                    && !body.is_empty()
                {
                    let _ = reports.send(Err(String::from_utf8_lossy(&body).into_owned()));
                }
                continue;
            }
            _ => {}
        }
        let mut state = link.state.lock().unwrap();
        let response = match kind {
            kind::ANSWER if body.len() >= 8 => {
                let allowance = split_u64(&mut body).expect("8 bytes");
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
    if let Some(mut sink) = link.orders.lock().unwrap().take() {
        sink(None);
    }
    link.children.lock().unwrap().clear();
    let mut state = link.state.lock().unwrap();
    state.closed = Some(why);
    state.waiting.clear();
}
