//! How an object comes to be held: [`Registry::create`] makes one (a pipe
//! two ends; a condition or an array its lock too), charged to and held by
//! its creator; [`Registry::open`] takes a token a process was handed,
//! over the reservation made for it.

use super::{Registry, not_a};
use crate::sync::array::Array;
use crate::sync::barrier::Barrier;
use crate::sync::budget::Message;
use crate::sync::condition::Condition;
use crate::sync::container::Container;
use crate::sync::holds::{Holder, Object};
use crate::sync::lock::{Lock, Semaphore};
use crate::sync::pipe::Pipe;
use crate::sync::queue::Queue;
use crate::sync::{Answer, Error, Numbers, Reply, Spec, Token};
use std::sync::Arc;

impl Registry {
    /// Makes the object `spec` describes, held by `pid`: its handles.
    pub(super) fn create(&self, pid: u32, spec: Spec) -> Result<Vec<Token>, Error> {
        let me = Holder::Process(pid);
        // An array's numbers are parked in the host too.
        let bytes = match &spec {
            Spec::Array(Numbers::Ints(v)) => Message::cost(v.len() * 8),
            Spec::Array(Numbers::Floats(v)) => Message::cost(v.len() * 8),
            _ => 0,
        };
        let charge = self.budgets.charge(pid, bytes, 1)?;
        let mut objects = self.objects.lock().unwrap();
        let object = match spec {
            Spec::Queue { maxsize, joinable } => Object::Queue(Arc::new(Queue::new(maxsize, joinable))),
            Spec::Pipe { duplex } => {
                // One object per end.
                let second_charge = self.budgets.charge(pid, 0, 1)?;
                let pipe = Arc::new(Pipe::new(duplex));
                let first = objects.insert(Object::Connection(pipe.clone(), 0), me);
                let second = objects.insert(Object::Connection(pipe, 1), me);
                let (first, second) = (objects.paid(first, charge), objects.paid(second, second_charge));
                return Ok(vec![first, second]);
            }
            Spec::Lock { recursive } => Object::Lock(Arc::new(Lock::new(recursive))),
            Spec::Semaphore { value, bounded } => Object::Semaphore(Arc::new(Semaphore::new(value, bounded))),
            Spec::Event => Object::Event(Arc::default()),
            Spec::Barrier { parties } => Object::Barrier(Arc::new(Barrier::new(parties)?)),
            Spec::Container(kind) => Object::Container(Arc::new(Container::new(kind)?)),
            Spec::Condition { lock } => {
                let id = objects.next_id();
                let (lock, lock_id) = match lock {
                    Some(lock_id) => match &objects.held(pid, lock_id)?.object {
                        Object::Lock(lock) => {
                            let lock = lock.clone();
                            objects.add(lock_id, Holder::Object(id));
                            (lock, lock_id)
                        }
                        other => return Err(not_a(other, lock_id, "lock")),
                    },
                    None => {
                        let lock = Arc::new(Lock::new(true));
                        (lock.clone(), objects.insert(Object::Lock(lock), Holder::Object(id)).id)
                    }
                };
                let token = objects.insert_at(id, Object::Condition(Arc::new(Condition::new(lock, lock_id))), me);
                return Ok(vec![objects.paid(token, charge)]);
            }
            Spec::Array(values) => {
                let id = objects.next_id();
                let lock = Object::Lock(Arc::new(Lock::new(true)));
                let lock_id = objects.insert(lock, Holder::Object(id)).id;
                let token = objects.insert_at(id, Object::Array(Arc::new(Array::new(values, lock_id))), me);
                return Ok(vec![objects.paid(token, charge)]);
            }
        };
        let token = objects.insert(object, me);
        Ok(vec![objects.paid(token, charge)])
    }

    /// Opens a token for `pid`, taking over the reservation made for it: the
    /// one it claimed at its start, else (a child of the embedder, whose
    /// reservations are never handed) any.
    pub(super) fn open(&self, pid: u32, token: Token) -> Answer {
        let mut objects = self.objects.lock().unwrap();
        let unknown = || Error::UnknownObject(format!("{} {} (freed, or a forged token)", token.kind.name(), token.id));
        let entry = objects.map.get_mut(&token.id).ok_or_else(unknown)?;
        if entry.secret != token.secret || entry.object.kind() != token.kind {
            return Err(unknown());
        }
        let given = Holder::Given(pid);
        let reserved = if entry.holders.contains_key(&given) {
            Some(given)
        } else {
            entry.holders.keys().copied().find(|h| matches!(h, Holder::Reserved(_)))
        };
        *entry.holders.entry(Holder::Process(pid)).or_default() += 1;
        if let Some(reservation) = reserved {
            objects.remove(token.id, reservation, Some(1));
        }
        Ok(Reply::Unit)
    }
}
