//! The embedder's `Manager`: a dict, a list and a namespace in the host,
//! shared with the processes it gives them to (in their arguments, as any
//! shared object) and used alongside them. The same containers as the guest
//! SDK's `mp::Manager`, with the same atomic operations (see
//! [`Dict::update`]); keys and values are encoded as the SDK encodes them.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let host = host::Host::new()?;
//! let manager = host::sync::Manager::new(&host)?;
//! let counts = manager.dict::<String, u64>()?;
//! counts.update("hits".to_string(), |n| n.unwrap_or(0) + 1)?;
//! assert_eq!(counts.get(&"hits".to_string())?, Some(1));
//! # Ok(()) }
//! ```

use super::api::{Handle, decode, encode, unexpected};
use super::container::{Op, pack, unpack};
use super::{Error, Kind, Payload, Reply, Request, Spec};
use crate::runtime::Host;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// Python's `multiprocessing.Manager()`, for the embedder: makes containers
/// that live in the host (which plays the manager's server process).
#[derive(Clone, Copy)]
pub struct Manager<'h> {
    host: &'h Host,
}

impl<'h> Manager<'h> {
    /// A manager for `host`'s processes.
    pub fn new(host: &'h Host) -> Result<Manager<'h>, Error> {
        Ok(Manager { host })
    }

    /// `manager.dict()`: a new, empty shared dict.
    pub fn dict<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(&self) -> Result<Dict<K, V>, Error> {
        Ok(Dict { handle: Handle::create_one(self.host, Spec::Container(Kind::Dict))?, types: PhantomData })
    }

    /// `manager.list()`: a new, empty shared list.
    pub fn list<T: Serialize + DeserializeOwned>(&self) -> Result<List<T>, Error> {
        Ok(List { handle: Handle::create_one(self.host, Spec::Container(Kind::List))?, item: PhantomData })
    }

    /// `manager.Namespace()`: a new namespace with no attributes.
    pub fn namespace(&self) -> Result<Namespace, Error> {
        Ok(Namespace { handle: Handle::create_one(self.host, Spec::Container(Kind::Namespace))? })
    }
}

/// One operation on the container of `handle`: its bytes, if it gave some.
fn op(handle: &Handle, op: Op, data: Vec<u8>) -> Result<Option<Vec<u8>>, Error> {
    match handle.call(Request::Container { id: handle.id(), op, data: Payload(data) })? {
        Reply::Bytes(bytes) => Ok(Some(bytes.0)),
        Reply::Unit => Ok(None),
        other => Err(unexpected(other)),
    }
}

fn count(handle: &Handle) -> Result<usize, Error> {
    match handle.call(Request::Container { id: handle.id(), op: Op::Len, data: Payload::default() })? {
        Reply::Count(n) => Ok(n as usize),
        other => Err(unexpected(other)),
    }
}

fn contains(handle: &Handle, key: Vec<u8>) -> Result<bool, Error> {
    match handle.call(Request::Container { id: handle.id(), op: Op::Contains, data: Payload(key) })? {
        Reply::Bool(found) => Ok(found),
        other => Err(unexpected(other)),
    }
}

/// The packed byte strings an operation answers.
fn parts(handle: &Handle, what: Op) -> Result<Vec<Vec<u8>>, Error> {
    op(handle, what, Vec::new())?.map_or(Ok(Vec::new()), |packed| unpack(&packed))
}

/// Key and value pairs from packed parts.
fn pairs(parts: Vec<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut parts = parts.into_iter();
    let mut pairs = Vec::new();
    while let (Some(key), Some(value)) = (parts.next(), parts.next()) {
        pairs.push((key, value));
    }
    pairs
}

/// The key and value types a [`Dict`] encodes and decodes.
type Types<K, V> = PhantomData<fn(K, V) -> (K, V)>;

/// A shared dict (Python's `DictProxy`); keys in insertion order.
pub struct Dict<K, V> {
    handle: Handle,
    types: Types<K, V>,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Dict<K, V> {
    /// The value under `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>, Error> {
        op(&self.handle, Op::Get, encode(key)?.0)?.map(|v| decode(&v)).transpose()
    }

    /// `d[key] = value`.
    pub fn set(&self, key: K, value: &V) -> Result<(), Error> {
        let data = pack([encode(&key)?.0.as_slice(), encode(value)?.0.as_slice()]);
        op(&self.handle, Op::Set, data).map(|_| ())
    }

    /// Removes `key`; its value, if it had one.
    pub fn remove(&self, key: &K) -> Result<Option<V>, Error> {
        op(&self.handle, Op::Remove, encode(key)?.0)?.map(|v| decode(&v)).transpose()
    }

    /// `key in d`.
    pub fn contains_key(&self, key: &K) -> Result<bool, Error> {
        contains(&self.handle, encode(key)?.0)
    }

    /// `len(d)`.
    pub fn len(&self) -> Result<usize, Error> {
        count(&self.handle)
    }

    /// Whether the dict has no entry.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>, Error> {
        self.items().map(|items| items.into_iter().map(|(k, _)| k).collect())
    }

    /// The keys and values, in insertion order.
    pub fn items(&self) -> Result<Vec<(K, V)>, Error> {
        pairs(parts(&self.handle, Op::Items)?).into_iter().map(|(k, v)| Ok((decode(&k)?, decode(&v)?))).collect()
    }

    /// Sets `key` to `f(its value now)` as one atomic step: no operation
    /// on this dict from any process comes between the read and the write.
    /// The new value. A panic in `f` leaves the dict as it was.
    pub fn update(&self, key: K, f: impl FnOnce(Option<V>) -> V) -> Result<V, Error> {
        let key = encode(&key)?.0;
        let now = op(&self.handle, Op::Begin, key.clone())?;
        // Ends the update unless it was committed, however this returns.
        struct Abort<'a>(Option<&'a Handle>);
        impl Drop for Abort<'_> {
            fn drop(&mut self) {
                if let Some(handle) = self.0 {
                    let _ = op(handle, Op::Abort, Vec::new());
                }
            }
        }
        let mut abort = Abort(Some(&self.handle));
        let old = now.map(|v| decode(&v)).transpose()?;
        let new = f(old);
        let data = pack([key.as_slice(), encode(&new)?.0.as_slice()]);
        abort.0 = None;
        op(&self.handle, Op::Commit, data)?;
        Ok(new)
    }
}

/// A shared list (Python's `ListProxy`).
pub struct List<T> {
    handle: Handle,
    item: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> List<T> {
    /// `l.append(item)`.
    pub fn push(&self, item: &T) -> Result<(), Error> {
        op(&self.handle, Op::Push, encode(item)?.0).map(|_| ())
    }

    /// `l[index]`; [`Error::Invalid`] out of range.
    pub fn get(&self, index: usize) -> Result<T, Error> {
        match op(&self.handle, Op::GetAt(index as u64), Vec::new())? {
            Some(bytes) => decode(&bytes),
            None => Err(Error::Invalid(format!("list index {index} out of range"))),
        }
    }

    /// `l[index] = item`; [`Error::Invalid`] out of range.
    pub fn set(&self, index: usize, item: &T) -> Result<(), Error> {
        op(&self.handle, Op::SetAt(index as u64), encode(item)?.0).map(|_| ())
    }

    /// `len(l)`.
    pub fn len(&self) -> Result<usize, Error> {
        count(&self.handle)
    }

    /// Whether the list has no item.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// A copy of every item, in order.
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        parts(&self.handle, Op::Values)?.iter().map(|v| decode(v)).collect()
    }
}

/// A shared namespace (`manager.Namespace()`): attributes by name.
pub struct Namespace {
    handle: Handle,
}

impl Namespace {
    /// The attribute `name`, `None` if it has none.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        op(&self.handle, Op::Get, name.as_bytes().to_vec())?.map(|v| decode(&v)).transpose()
    }

    /// Sets the attribute `name`.
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        let data = pack([name.as_bytes(), encode(value)?.0.as_slice()]);
        op(&self.handle, Op::Set, data).map(|_| ())
    }

    /// Whether it has the attribute `name`.
    pub fn contains(&self, name: &str) -> Result<bool, Error> {
        contains(&self.handle, name.as_bytes().to_vec())
    }

    /// Deletes the attribute `name`: whether it had it.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        Ok(op(&self.handle, Op::Remove, name.as_bytes().to_vec())?.is_some())
    }

    /// The attributes' names, in the order they were first set.
    pub fn names(&self) -> Result<Vec<String>, Error> {
        Ok(pairs(parts(&self.handle, Op::Items)?)
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }
}

/// The token, after a hold reserved for the process it is given to.
impl<K, V> Serialize for Dict<K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.handle.serialize(serializer)
    }
}

/// The token, after a hold reserved for the process it is given to.
impl<T> Serialize for List<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.handle.serialize(serializer)
    }
}

/// The token, after a hold reserved for the process it is given to.
impl Serialize for Namespace {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.handle.serialize(serializer)
    }
}
