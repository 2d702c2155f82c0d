//! The registry's table: every shared object of a root host by id, with
//! its secret, its holds and what it cost its creator. A hold is one of the
//! [`Holder`]s; an object none holds any more is freed here, closing a
//! pipe's end or dropping the holds it had on other objects (a condition's
//! or an array's lock).

use super::array::Array;
use super::barrier::Barrier;
use super::budget::Charge;
use super::condition::Condition;
use super::container::Container;
use super::event::Event;
use super::lock::{Lock, Semaphore};
use super::pipe::Pipe;
use super::queue::Queue;
use super::{Error, Kind, Token, random_u64};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Holder {
    Process(u32),
    /// Held by this process for a child it has yet to start.
    Reserved(u32),
    /// Handed to a child that has started and not yet claimed it (by the
    /// ticket in the child's launch).
    Ticket(u64),
    /// Held for this process, a child that claimed it, until it opens it.
    Given(u32),
    /// Held by another object (by id).
    Object(u64),
}

#[derive(Clone)]
pub(super) enum Object {
    Queue(Arc<Queue>),
    Connection(Arc<Pipe>, usize),
    Lock(Arc<Lock>),
    Semaphore(Arc<Semaphore>),
    Event(Arc<Event>),
    Condition(Arc<Condition>),
    Barrier(Arc<Barrier>),
    Array(Arc<Array>),
    Container(Arc<Container>),
}

impl Object {
    pub(super) fn kind(&self) -> Kind {
        match self {
            Object::Queue(_) => Kind::Queue,
            Object::Connection(..) => Kind::Connection,
            Object::Lock(_) => Kind::Lock,
            Object::Semaphore(_) => Kind::Semaphore,
            Object::Event(_) => Kind::Event,
            Object::Condition(_) => Kind::Condition,
            Object::Barrier(_) => Kind::Barrier,
            Object::Array(_) => Kind::Array,
            Object::Container(container) => container.kind(),
        }
    }
}

pub(super) struct Entry {
    pub(super) secret: u64,
    pub(super) holders: HashMap<Holder, u32>,
    pub(super) object: Object,
    /// What the object costs its creator, given back when it is freed.
    _charge: Option<Charge>,
}

#[derive(Default)]
pub(super) struct Objects {
    next: u64,
    pub(super) map: HashMap<u64, Entry>,
    /// The objects handed to each ticket (an id once per hold).
    pub(super) tickets: HashMap<u64, Vec<u64>>,
}

impl Objects {
    pub(super) fn insert(&mut self, object: Object, holder: Holder) -> Token {
        let id = self.next_id();
        self.insert_at(id, object, holder)
    }

    /// A fresh id, for an object inserted later (one that holds another
    /// object made first: a condition's or an array's lock).
    pub(super) fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Makes the object of `token` carry `charge`, its creator's, until it is freed.
    pub(super) fn paid(&mut self, token: Token, charge: Charge) -> Token {
        if let Some(entry) = self.map.get_mut(&token.id) {
            entry._charge = Some(charge);
        }
        token
    }

    pub(super) fn insert_at(&mut self, id: u64, object: Object, holder: Holder) -> Token {
        let token = Token { kind: object.kind(), id, secret: random_u64() };
        self.map
            .insert(id, Entry { secret: token.secret, holders: HashMap::from([(holder, 1)]), object, _charge: None });
        token
    }

    pub(super) fn token(&self, id: u64) -> Option<Token> {
        self.map.get(&id).map(|e| Token { kind: e.object.kind(), id, secret: e.secret })
    }

    /// The entry `id`, if `pid` holds it.
    pub(super) fn held(&mut self, pid: u32, id: u64) -> Result<&mut Entry, Error> {
        let entry = self.map.get_mut(&id).ok_or_else(|| Error::UnknownObject(format!("object {id}")))?;
        if !entry.holders.contains_key(&Holder::Process(pid)) {
            return Err(Error::NotGiven(format!("{} {id}", entry.object.kind().name())));
        }
        Ok(entry)
    }

    pub(super) fn add(&mut self, id: u64, holder: Holder) {
        if let Some(entry) = self.map.get_mut(&id) {
            *entry.holders.entry(holder).or_default() += 1;
        }
    }

    /// Moves one of `from`'s holds on `id` to `to`; whether there was one.
    pub(super) fn pass(&mut self, id: u64, from: Holder, to: Holder) -> bool {
        let Some(entry) = self.map.get_mut(&id) else {
            return false;
        };
        let Some(held) = entry.holders.get_mut(&from) else {
            return false;
        };
        *held -= 1;
        if *held == 0 {
            entry.holders.remove(&from);
        }
        *entry.holders.entry(to).or_default() += 1;
        true
    }

    /// Drops `count` of `holder`'s holds on `id` (all of them for `None`),
    /// freeing the object when none is left.
    pub(super) fn remove(&mut self, id: u64, holder: Holder, count: Option<u32>) {
        let Some(entry) = self.map.get_mut(&id) else {
            return;
        };
        if let Some(held) = entry.holders.get_mut(&holder) {
            *held = count.map_or(0, |c| held.saturating_sub(c));
            if *held == 0 {
                entry.holders.remove(&holder);
            }
        }
        if !entry.holders.is_empty() {
            return;
        }
        let entry = self.map.remove(&id).expect("present");
        match entry.object {
            Object::Connection(pipe, end) => pipe.close(end),
            Object::Condition(condition) => self.remove(condition.lock_id, Holder::Object(id), None),
            Object::Array(array) => self.remove(array.lock_id, Holder::Object(id), None),
            _ => {}
        }
    }
}
