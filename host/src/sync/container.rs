//! A `Manager`'s containers: Python's `Manager().dict()`, `.list()` and
//! `.Namespace()`, living in the host.
//!
//! Keys and values are bytes (the SDK encodes typed values); a dict keeps
//! its keys in insertion order, as Python's does, and a namespace is a dict
//! keyed by attribute names. Every operation is atomic, and an *update*
//! (read a value, compute, write it back) is too: [`Op::Begin`] takes the
//! container's exclusive hold for the caller and answers the current value,
//! [`Op::Commit`] writes the new one and gives the hold back. While one
//! process holds it, every other process's operation on the container
//! waits; the holder's own operations go on (the hold is re-entrant), and a
//! holder that ends gives it back, like a lock (see [`Container::lock`]).
//!
//! What a container stores is charged to the process that stored it (key
//! and value, with [`ITEM_OVERHEAD`](super::budget::ITEM_OVERHEAD)) and
//! given back when it is replaced, removed, or the container freed.

use super::budget::{Budgets, Charge, Message};
use super::lock::Lock;
use super::{Error, Kind, Payload, Reply};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// One operation on a container. Its bytes travel in the request's
/// payload: a key, a value, or both [packed](pack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    /// The value under the key: [`Reply::Bytes`], or [`Reply::Unit`] if none.
    Get,
    /// Stores the value (payload: key and value packed).
    Set,
    /// Removes the key; its value as for `Get`.
    Remove,
    /// Whether the key is there.
    Contains,
    /// How many entries (or list items).
    Len,
    /// Every key and value, packed in turn (dict order).
    Items,
    /// Begins an update of the key: takes the exclusive hold, answers the
    /// value as `Get` does.
    Begin,
    /// Ends an update: stores the value (packed with its key), gives the hold back.
    Commit,
    /// Ends an update without storing anything.
    Abort,
    /// Appends the value to a list.
    Push,
    /// The list item at this index.
    GetAt(u64),
    /// Replaces the list item at this index.
    SetAt(u64),
    /// Every list item, packed in order.
    Values,
}

/// Packs byte strings into one: each as its length (`u32`, little-endian)
/// and its bytes.
pub(crate) fn pack<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut packed = Vec::new();
    for part in parts {
        packed.extend_from_slice(&(part.len() as u32).to_le_bytes());
        packed.extend_from_slice(part);
    }
    packed
}

/// The byte strings of [`pack`]; an error for a malformed packing.
pub(crate) fn unpack(mut packed: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let bad = || Error::Invalid("malformed container data".into());
    let mut parts = Vec::new();
    while !packed.is_empty() {
        let len: [u8; 4] = packed.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        let len = u32::from_le_bytes(len) as usize;
        let part = packed.get(4..4 + len).ok_or_else(bad)?;
        parts.push(part.to_vec());
        packed = &packed[4 + len..];
    }
    Ok(parts)
}

/// A key and a value from a packed payload.
fn key_value(data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut parts = unpack(data)?;
    match (parts.pop(), parts.pop(), parts.is_empty()) {
        (Some(value), Some(key), true) => Ok((key, value)),
        _ => Err(Error::Invalid("expected a key and a value".into())),
    }
}

#[derive(Default)]
struct Map {
    /// Each key's value and its place in the insertion order.
    entries: HashMap<Vec<u8>, (u64, Message)>,
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

enum Data {
    Map(Map),
    List(Vec<Message>),
}

/// A dict, list or namespace.
pub(crate) struct Container {
    kind: Kind,
    data: Mutex<Data>,
    /// The exclusive hold of an update: every operation takes it for its
    /// own length, an update from `Begin` to `Commit`. The registry releases
    /// it when its holder ends.
    pub(crate) lock: Lock,
}

impl Container {
    /// A new, empty container; `kind` is one of dict, list, namespace.
    pub(crate) fn new(kind: Kind) -> Result<Container, Error> {
        let data = match kind {
            Kind::Dict | Kind::Namespace => Data::Map(Map::default()),
            Kind::List => Data::List(Vec::new()),
            other => {
                return Err(Error::Invalid(format!("a {} is not a manager's container", other.name())));
            }
        };
        Ok(Container { kind, data: Mutex::new(data), lock: Lock::new(true) })
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Carries out `op` for the process `pid`; what it stores is charged to `pid`.
    pub(crate) async fn call(&self, budgets: &Arc<Budgets>, pid: u32, op: Op, data: Vec<u8>) -> Result<Reply, Error> {
        let payer = Payer { budgets, pid };
        if let Op::Commit | Op::Abort = op {
            return self.end_update(payer, op, data);
        }
        // Waits while another process updates; no await between taking the
        // hold and giving it back, so a caller dropped midway holds nothing.
        // An update that begins keeps the hold, unless it fails.
        self.lock.acquire(pid, 1, None).await;
        let begins = op == Op::Begin;
        let answer = self.apply(payer, if begins { Op::Get } else { op }, data);
        if !begins || answer.is_err() {
            let _ = self.lock.release(pid);
        }
        answer
    }

    /// Ends the update `pid` holds: stores the value (`Commit`) or not
    /// (`Abort`), and gives the hold back.
    fn end_update(&self, payer: Payer<'_>, op: Op, data: Vec<u8>) -> Result<Reply, Error> {
        if !self.lock.is_owned_by(payer.pid) {
            return Err(Error::Invalid("no update of this container is in progress".into()));
        }
        let answer = match op {
            Op::Commit => self.apply(payer, Op::Set, data),
            _ => Ok(Reply::Unit),
        };
        let _ = self.lock.release(payer.pid);
        answer
    }

    fn apply(&self, payer: Payer<'_>, op: Op, data: Vec<u8>) -> Result<Reply, Error> {
        let mut guard = self.data.lock().unwrap();
        let bytes = |message: &Message| Reply::Bytes(Payload(message.bytes().to_vec()));
        match (&mut *guard, op) {
            (Data::Map(map), Op::Get) => Ok(map.entries.get(&data).map_or(Reply::Unit, |(_, v)| bytes(v))),
            (Data::Map(map), Op::Contains) => Ok(Reply::Bool(map.entries.contains_key(&data))),
            (Data::Map(map), Op::Len) => Ok(Reply::Count(map.entries.len() as u64)),
            (Data::Map(map), Op::Remove) => Ok(match map.entries.remove(&data) {
                Some((at, value)) => {
                    map.order.remove(&at);
                    Reply::Bytes(Payload(value.into_bytes()))
                }
                None => Reply::Unit,
            }),
            (Data::Map(map), Op::Set) => {
                let (key, value) = key_value(&data)?;
                let cost = Message::cost(key.len() + value.len());
                match map.entries.get_mut(&key) {
                    Some((_, old)) => replace(payer, old, value, cost)?,
                    None => {
                        let value = Message::new(value, payer.charge(cost)?);
                        map.next += 1;
                        map.order.insert(map.next, key.clone());
                        map.entries.insert(key, (map.next, value));
                    }
                }
                Ok(Reply::Unit)
            }
            (Data::Map(map), Op::Items) => {
                let mut parts: Vec<&[u8]> = Vec::with_capacity(map.entries.len() * 2);
                for key in map.order.values() {
                    parts.push(key);
                    parts.push(map.entries[key].1.bytes());
                }
                Ok(Reply::Bytes(Payload(pack(parts))))
            }
            (Data::List(list), Op::Len) => Ok(Reply::Count(list.len() as u64)),
            (Data::List(list), Op::Push) => {
                let charge = payer.charge(Message::cost(data.len()))?;
                list.push(Message::new(data, charge));
                Ok(Reply::Unit)
            }
            (Data::List(list), Op::GetAt(index)) => {
                let item = usize::try_from(index).ok().and_then(|i| list.get(i));
                item.map(bytes).ok_or_else(|| out_of_range(index))
            }
            (Data::List(list), Op::SetAt(index)) => {
                let slot = usize::try_from(index).ok().filter(|&i| i < list.len());
                let slot = slot.ok_or_else(|| out_of_range(index))?;
                let cost = Message::cost(data.len());
                replace(payer, &mut list[slot], data, cost)?;
                Ok(Reply::Unit)
            }
            (Data::List(list), Op::Values) => Ok(Reply::Bytes(Payload(pack(list.iter().map(Message::bytes))))),
            (_, op) => Err(Error::Invalid(format!("{op:?} is not an operation of a {}", self.kind.name()))),
        }
    }
}

/// The process an operation charges for what it stores.
#[derive(Clone, Copy)]
struct Payer<'a> {
    budgets: &'a Arc<Budgets>,
    pid: u32,
}

impl Payer<'_> {
    /// Charges `cost` bytes to the process, or refuses past its budget.
    fn charge(self, cost: u64) -> Result<Charge, Error> {
        self.budgets.charge(self.pid, cost, 0)
    }
}

/// Replaces `old` with `new`, charging `cost` to `payer`: the old value's
/// charge is given back first, so a value may be replaced by one as large
/// under a full budget. Refused, the old value stays (its charge then
/// counted in the run's total only).
fn replace(payer: Payer<'_>, old: &mut Message, new: Vec<u8>, cost: u64) -> Result<(), Error> {
    let budgets = payer.budgets;
    let placeholder = Message::new(Vec::new(), budgets.charge_anyway(0));
    let previous = std::mem::replace(old, placeholder).into_bytes();
    match payer.charge(cost) {
        Ok(charge) => {
            *old = Message::new(new, charge);
            Ok(())
        }
        Err(error) => {
            let charge = budgets.charge_anyway(Message::cost(previous.len()));
            *old = Message::new(previous, charge);
            Err(error)
        }
    }
}

fn out_of_range(index: u64) -> Error {
    Error::Invalid(format!("list index {index} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::budget::Quotas;

    #[test]
    fn packing_round_trips_and_refuses_garbage() {
        let parts: [&[u8]; 3] = [b"key", b"", b"value"];
        assert_eq!(unpack(&pack(parts)).unwrap(), vec![b"key".to_vec(), vec![], b"value".to_vec()]);
        assert!(unpack(&[1, 0, 0, 0]).is_err());
        assert!(unpack(&[9]).is_err());
        assert!(key_value(&pack([b"only".as_slice()])).is_err());
    }

    /// A dict keeps insertion order; replacing a value gives its charge
    /// back; an update holds every other process off until it commits.
    #[test]
    fn a_dict_in_order_with_an_exclusive_update() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let budgets = Budgets::new(Quotas { bytes: 1000, objects: 10 });
        let dict = Arc::new(Container::new(Kind::Dict).unwrap());
        let call = |pid, op, data: Vec<u8>| runtime.block_on(dict.call(&budgets, pid, op, data));
        for key in [b"b", b"a", b"c"] {
            call(1, Op::Set, pack([key.as_slice(), b"1"])).unwrap();
        }
        call(1, Op::Set, pack([b"a".as_slice(), b"2"])).unwrap();
        let Ok(Reply::Bytes(items)) = call(1, Op::Items, vec![]) else { panic!() };
        let items = unpack(&items.0).unwrap();
        assert_eq!(items, [b"b", b"1", b"a", b"2", b"c", b"1"].map(|p| p.to_vec()));
        assert_eq!(call(1, Op::Remove, b"b".to_vec()), Ok(Reply::Bytes(Payload(b"1".to_vec()))));
        assert_eq!(call(1, Op::Get, b"b".to_vec()), Ok(Reply::Unit));
        assert_eq!(call(1, Op::Len, vec![]), Ok(Reply::Count(2)));
        // Past the budget: refused, nothing stored; a value as large as
        // the budget allows may replace another.
        assert!(matches!(call(1, Op::Set, pack([b"big".as_slice(), &[0; 2000]])), Err(Error::Quota { .. })));
        call(1, Op::Set, pack([b"x".as_slice(), &[0; 700]])).unwrap();
        call(1, Op::Set, pack([b"x".as_slice(), &[1; 700]])).unwrap();
        assert_eq!(call(1, Op::Remove, b"x".to_vec()), Ok(Reply::Bytes(Payload(vec![1; 700]))));

        assert_eq!(call(1, Op::Begin, b"a".to_vec()), Ok(Reply::Bytes(Payload(b"2".to_vec()))));
        // The updater's own reads go on; another process's wait.
        assert_eq!(call(1, Op::Contains, b"a".to_vec()), Ok(Reply::Bool(true)));
        let other = runtime.spawn({
            let (dict, budgets) = (dict.clone(), budgets.clone());
            async move { dict.call(&budgets, 2, Op::Get, b"a".to_vec()).await }
        });
        runtime.block_on(tokio::task::yield_now());
        assert!(!other.is_finished());
        call(1, Op::Commit, pack([b"a".as_slice(), b"3"])).unwrap();
        assert_eq!(runtime.block_on(other).unwrap(), Ok(Reply::Bytes(Payload(b"3".to_vec()))));
        assert!(call(2, Op::Commit, pack([b"a".as_slice(), b"4"])).is_err());
        assert_eq!(call(1, Op::Push, vec![]).unwrap_err(), Error::Invalid("Push is not an operation of a dict".into()));
    }

    #[test]
    fn a_list_pushes_gets_and_sets_in_range() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let budgets = Budgets::new(Quotas::default());
        let list = Container::new(Kind::List).unwrap();
        let call = |op, data: Vec<u8>| runtime.block_on(list.call(&budgets, 1, op, data));
        call(Op::Push, b"x".to_vec()).unwrap();
        call(Op::Push, b"y".to_vec()).unwrap();
        call(Op::SetAt(0), b"z".to_vec()).unwrap();
        assert!(call(Op::SetAt(2), b"w".to_vec()).is_err());
        assert!(call(Op::GetAt(5), vec![]).is_err());
        assert_eq!(call(Op::GetAt(1), vec![]), Ok(Reply::Bytes(Payload(b"y".to_vec()))));
        let Ok(Reply::Bytes(values)) = call(Op::Values, vec![]) else { panic!() };
        assert_eq!(unpack(&values.0).unwrap(), vec![b"z".to_vec(), b"y".to_vec()]);
        assert!(Container::new(Kind::Queue).is_err());
    }
}
