//! Python's `multiprocessing.Manager()`: a dict, a list and a namespace that
//! many processes share, living in the host.
//!
//! Python runs a server process and hands out proxies; here the host is the
//! server and a [`Dict`], [`List`] or [`Namespace`] is a handle to a
//! container in it, passed to children (and pool workers, in the
//! initializer's arguments) like any shared object. Every operation is one
//! atomic step in the host, and [`Dict::update`] is atomic as a whole: while
//! one process updates, every other operation on the dict waits, so
//! concurrent increments lose nothing (in Python `d[k] += 1` on a proxy is
//! two steps and does lose updates). Keys and values are encoded as queue
//! items are.
//!
//! ```no_run
//! let manager = mp::Manager::new().unwrap();
//! let counts = manager.dict::<String, u64>().unwrap();
//! counts.update("hits".to_string(), |n| n.unwrap_or(0) + 1).unwrap();
//! assert_eq!(counts.get(&"hits".to_string()).unwrap(), Some(1));
//! ```

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bindings::mp::host::sync as wit;
use crate::sync::{Error, decode, encode, open, share};

/// Python's `Manager()`: makes containers that live in the host.
///
/// Unlike Python's, it starts no server process (the host is the server)
/// and has nothing to shut down: each container lives while some process
/// holds a handle to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Manager {
    _private: (),
}

impl Manager {
    /// A manager.
    pub fn new() -> Result<Manager, Error> {
        Ok(Manager { _private: () })
    }

    /// Python's `manager.dict()`: a new, empty shared dict. Fails (the
    /// process goes on) when the process or the run has as many shared
    /// objects as it may: a [`SyncError::Quota`](crate::SyncError::Quota) naming the limit.
    pub fn dict<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(&self) -> Result<Dict<K, V>, Error> {
        Ok(Dict { inner: wit::Container::create(wit::ContainerKind::Dict)?, types: PhantomData })
    }

    /// Python's `manager.list()`: a new, empty shared list.
    pub fn list<T: Serialize + DeserializeOwned>(&self) -> Result<List<T>, Error> {
        Ok(List { inner: wit::Container::create(wit::ContainerKind::List)?, item: PhantomData })
    }

    /// Python's `manager.Namespace()`: a new namespace with no attributes.
    pub fn namespace(&self) -> Result<Namespace, Error> {
        Ok(Namespace { inner: wit::Container::create(wit::ContainerKind::Namespace)? })
    }
}

/// A shared dict (Python's `DictProxy`), from [`Manager::dict`]; keys in
/// insertion order.
pub struct Dict<K, V> {
    inner: wit::Container,
    types: Types<K, V>,
}

/// The key and value types a [`Dict`] encodes and decodes.
type Types<K, V> = PhantomData<fn(K, V) -> (K, V)>;

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Dict<K, V> {
    /// The value under `key` (Python's `d.get(key)`).
    pub fn get(&self, key: &K) -> Result<Option<V>, Error> {
        self.inner.get(&encode(key)?)?.map(|v| decode(&v)).transpose()
    }

    /// `d[key] = value`.
    pub fn set(&self, key: K, value: &V) -> Result<(), Error> {
        Ok(self.inner.set(&encode(&key)?, &encode(value)?)?)
    }

    /// Removes `key`; its value, if it had one (Python's `d.pop(key, None)`).
    pub fn remove(&self, key: &K) -> Result<Option<V>, Error> {
        self.inner.remove(&encode(key)?)?.map(|v| decode(&v)).transpose()
    }

    /// `key in d`.
    pub fn contains_key(&self, key: &K) -> Result<bool, Error> {
        Ok(self.inner.contains_key(&encode(key)?)?)
    }

    /// `len(d)`.
    pub fn len(&self) -> Result<usize, Error> {
        Ok(self.inner.len()? as usize)
    }

    /// Whether the dict has no entry.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// `list(d.keys())`, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>, Error> {
        self.inner.items()?.iter().map(|(k, _)| decode(k)).collect()
    }

    /// `list(d.values())`, in insertion order.
    pub fn values(&self) -> Result<Vec<V>, Error> {
        self.inner.items()?.iter().map(|(_, v)| decode(v)).collect()
    }

    /// `list(d.items())`, in insertion order.
    pub fn items(&self) -> Result<Vec<(K, V)>, Error> {
        self.inner.items()?.iter().map(|(k, v)| Ok((decode(k)?, decode(v)?))).collect()
    }

    /// Sets `key` to `f(its value now)` as one atomic step: no other
    /// operation on this dict, from any process, comes between the read and
    /// the write (they wait). Returns the new value. If this process ends
    /// midway (`f` panics, it is terminated), the dict is left as it was and
    /// the others go on.
    pub fn update(&self, key: K, f: impl FnOnce(Option<V>) -> V) -> Result<V, Error> {
        let key = encode(&key)?;
        let now = self.inner.begin_update(&key)?;
        let old = match now.map(|v| decode(&v)).transpose() {
            Ok(old) => old,
            Err(error) => {
                let _ = self.inner.abort_update();
                return Err(error);
            }
        };
        let new = f(old);
        match encode(&new) {
            Ok(bytes) => self.inner.commit_update(&key, &bytes)?,
            Err(error) => {
                let _ = self.inner.abort_update();
                return Err(error);
            }
        }
        Ok(new)
    }
}

impl<K, V> fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dict").field("token", &self.inner.token()).finish()
    }
}

impl<K, V> Serialize for Dict<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        share(self.inner.token(), "Dict", serializer)
    }
}

impl<'de, K, V> Deserialize<'de> for Dict<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let inner = open(deserializer, |t| wit::Container::open(t, wit::ContainerKind::Dict))?;
        Ok(Dict { inner, types: PhantomData })
    }
}

/// A shared list (Python's `ListProxy`), from [`Manager::list`].
pub struct List<T> {
    inner: wit::Container,
    item: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> List<T> {
    /// `l.append(item)`.
    pub fn push(&self, item: &T) -> Result<(), Error> {
        Ok(self.inner.push(&encode(item)?)?)
    }

    /// `l[index]`; [`Error::Invalid`] out of range (Python's `IndexError`).
    pub fn get(&self, index: usize) -> Result<T, Error> {
        decode(&self.inner.get_at(index as u64)?)
    }

    /// `l[index] = item`; [`Error::Invalid`] out of range.
    pub fn set(&self, index: usize, item: &T) -> Result<(), Error> {
        Ok(self.inner.set_at(index as u64, &encode(item)?)?)
    }

    /// `len(l)`.
    pub fn len(&self) -> Result<usize, Error> {
        Ok(self.inner.len()? as usize)
    }

    /// Whether the list has no item.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// `list(l)`: a copy of every item, in order.
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        self.inner.values()?.iter().map(|v| decode(v)).collect()
    }
}

impl<T> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("List").field("token", &self.inner.token()).finish()
    }
}

impl<T> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        share(self.inner.token(), "List", serializer)
    }
}

impl<'de, T> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let inner = open(deserializer, |t| wit::Container::open(t, wit::ContainerKind::List))?;
        Ok(List { inner, item: PhantomData })
    }
}

/// A shared namespace (Python's `manager.Namespace()`): attributes by
/// name, each of its own type.
///
/// ```no_run
/// let ns = mp::Manager::new().unwrap().namespace().unwrap();
/// ns.set("x", &1u32).unwrap();
/// assert_eq!(ns.get::<u32>("x").unwrap(), Some(1));
/// ```
pub struct Namespace {
    inner: wit::Container,
}

impl Namespace {
    /// `ns.name`: the attribute's value, `None` if it has none (where
    /// Python raises `AttributeError`).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        self.inner.get(name.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    /// `ns.name = value`.
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        Ok(self.inner.set(name.as_bytes(), &encode(value)?)?)
    }

    /// `hasattr(ns, name)`.
    pub fn contains(&self, name: &str) -> Result<bool, Error> {
        Ok(self.inner.contains_key(name.as_bytes())?)
    }

    /// `del ns.name`: whether it had the attribute.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        Ok(self.inner.remove(name.as_bytes())?.is_some())
    }

    /// The attributes' names, in the order they were first set.
    pub fn names(&self) -> Result<Vec<String>, Error> {
        Ok(self.inner.items()?.into_iter().map(|(k, _)| String::from_utf8_lossy(&k).into_owned()).collect())
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace").field("token", &self.inner.token()).finish()
    }
}

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        share(self.inner.token(), "Namespace", serializer)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let inner = open(deserializer, |t| wit::Container::open(t, wit::ContainerKind::Namespace))?;
        Ok(Namespace { inner })
    }
}
