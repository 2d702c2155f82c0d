//! The registry: every shared object of a root host, who holds each, and
//! the one place where requests are carried out.
//!
//! Callers are processes, named by pid (virtual pids are unique per host,
//! real ones among live processes). A hold is one of: a process's handle
//! (counted: a process may hold an object through several handles), a
//! reservation a parent made for a child it spawns with the object's token
//! (the parent's until it starts the child, then, handed to the child's
//! ticket and claimed by the child, the child's until it opens the token),
//! or another object that needs it (a condition's or an array's lock). An
//! object with no hold left is freed; the end of a pipe freed this way is
//! closed. When a process ends, [`Registry::release`] drops all its holds and
//! releases every lock it held.
//!
//! The registry also keeps every process's [`Budgets`] account: each object
//! is charged to its creator and each queue item or pipe message to its
//! sender, and a request past a budget is refused.

use super::budget::{Account, Budgets, Message, Quotas};
use super::holds::{Holder, Object, Objects};
use super::lease::{GivenBack, LEASE_BYTES, LEASE_ITEMS, Leases};
use super::pipe::{self, Pipe};
use super::queue::Queue;
use super::{Answer, Error, Kind, MAX_MESSAGE, Reply, Request};
use crate::backend::{Lease, TakenCount};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub(crate) struct Registry {
    objects: Mutex<Objects>,
    budgets: Arc<Budgets>,
    /// Queue items handed ahead to consumers in other hosts.
    leases: Leases,
    /// Processes whose end is being watched (thread backend).
    watched: Mutex<HashSet<u32>>,
    runtime: tokio::runtime::Handle,
}

macro_rules! object {
    ($self:ident, $pid:ident, $id:ident, $variant:ident) => {
        match $self.object($pid, $id)? {
            Object::$variant(object) => object,
            other => {
                return Err(Error::UnknownObject(format!(
                    "{} {} is not a {}",
                    other.kind().name(),
                    $id,
                    Kind::$variant.name()
                )))
            }
        }
    };
}

mod handles;

impl Registry {
    pub(crate) fn new(runtime: tokio::runtime::Handle, quotas: Quotas) -> Registry {
        Registry {
            objects: Mutex::default(),
            budgets: Budgets::new(quotas),
            leases: Leases::default(),
            watched: Mutex::default(),
            runtime,
        }
    }

    /// Releases `pid`'s holds when the process `node` ends (once per pid).
    pub(crate) fn watch(self: &Arc<Self>, pid: u32, node: &Arc<crate::process::Node>) {
        if !self.watched.lock().unwrap().insert(pid) {
            return;
        }
        let (registry, node) = (Arc::downgrade(self), node.clone());
        self.runtime.spawn(async move {
            let _ = node.join_async(None).await;
            if let Some(registry) = registry.upgrade() {
                registry.release(pid);
                registry.watched.lock().unwrap().remove(&pid);
            }
        });
    }

    /// How many more bytes the process `pid` may park now (transport glue:
    /// what its puts may send ahead, see `sync::Pipeline`).
    pub(crate) fn headroom(&self, pid: u32) -> u64 {
        self.budgets.headroom(pid)
    }

    /// The process `pid` has ended: every lock it held is released, its
    /// holds (and reservations) dropped, its budget closed.
    pub(crate) fn release(&self, pid: u32) {
        self.give_back_leased(self.leases.release(pid));
        let mut objects = self.objects.lock().unwrap();
        let mut ids = Vec::new();
        for (&id, entry) in &objects.map {
            match &entry.object {
                Object::Lock(lock) => {
                    lock.release_all(pid);
                }
                // An update its holder never finished.
                Object::Container(container) => {
                    container.lock.release_all(pid);
                }
                _ => {}
            }
            if entry
                .holders
                .keys()
                .any(|h| matches!(h, Holder::Process(p) | Holder::Reserved(p) | Holder::Given(p) if *p == pid))
            {
                ids.push(id);
            }
        }
        for id in ids {
            objects.remove(id, Holder::Process(pid), None);
            objects.remove(id, Holder::Reserved(pid), None);
            objects.remove(id, Holder::Given(pid), None);
        }
        drop(objects);
        self.budgets.end(pid);
    }

    /// Drops one of `pid`'s holds on `id`.
    pub(crate) fn drop_hold(&self, pid: u32, id: u64) -> Result<(), Error> {
        let mut objects = self.objects.lock().unwrap();
        objects.held(pid, id)?;
        objects.remove(id, Holder::Process(pid), Some(1));
        Ok(())
    }

    /// Puts back a message taken for a process that could not receive it
    /// (native backend: its worker ended as the answer was sent).
    pub(crate) fn give_back(&self, id: u64, message: Vec<u8>) {
        let message = self.charged_again(message);
        match self.object_by_id(id) {
            Some(Object::Queue(queue)) => queue.give_back(message),
            Some(Object::Connection(pipe, end)) => pipe.give_back(end, message),
            _ => {}
        }
    }

    /// Puts what leases did not hand over back in front of their queues,
    /// each lease's items at once and in order.
    fn give_back_leased(&self, given: GivenBack) {
        for (queue, items) in given {
            if let Some(Object::Queue(queue)) = self.object_by_id(queue) {
                queue.give_back_all(items.into_iter().map(|item| self.charged_again(item)).collect());
            }
        }
    }

    /// A message taken and going back: counted in the run's total again
    /// (its sender's charge was given back as it was taken).
    fn charged_again(&self, message: Vec<u8>) -> Message {
        let charge = self.budgets.charge_anyway(Message::cost(message.len()));
        Message::new(message, charge)
    }

    /// The object `id`, whoever holds it.
    fn object_by_id(&self, id: u64) -> Option<Object> {
        self.objects.lock().unwrap().map.get(&id).map(|e| e.object.clone())
    }

    /// After `pid`'s get on `queue` was answered: more of its items, handed
    /// ahead as a lease (see [`super::lease`]), if the queue is unbounded,
    /// holds more, and nobody waits on it.
    pub(crate) fn lease(&self, pid: u32, queue: u64) -> Option<Lease> {
        let object = self.queue(pid, queue).ok().filter(|q| !q.bounded())?;
        self.leases.grant(pid, queue, || object.take_front(LEASE_ITEMS, LEASE_BYTES))
    }

    /// How many items of its lease `serial` the holder `pid` took is `counter`.
    pub(crate) fn lease_counted(&self, pid: u32, serial: u64, counter: Box<dyn TakenCount>) {
        self.leases.counted(pid, serial, counter);
    }

    /// The holder `pid` of the lease `serial` returned it: what it did not
    /// take goes back in front of the queue.
    pub(crate) fn lease_returned(&self, pid: u32, serial: u64) {
        self.give_back_leased(self.leases.returned(pid, serial));
    }

    /// Takes the first item of `queue` for `pid`, waiting up to `timeout`;
    /// a wait first recalls the leases others hold on it.
    async fn get(&self, pid: u32, id: u64, queue: &Queue, timeout: Option<u64>) -> Result<Vec<u8>, Error> {
        if let Ok(item) = queue.get(Some(0)).await {
            return Ok(item);
        }
        let _waiting = self.leases.wait(pid, id);
        queue.get(timeout).await
    }

    /// The queue `id`, which `pid` holds: what a guest's handle keeps, to
    /// put and get without looking it up each time (it holds the queue as
    /// long as the handle is open).
    pub(crate) fn queue(&self, pid: u32, id: u64) -> Result<Arc<Queue>, Error> {
        Ok(object!(self, pid, id, Queue))
    }

    /// Puts `item` on `queue` for `pid`, charged to its budget.
    pub(crate) async fn put(&self, pid: u32, queue: &Queue, item: Vec<u8>, timeout: Option<u64>) -> Result<(), Error> {
        self.put_to(&self.budgets.account(pid), queue, item, timeout).await
    }

    /// Puts `item` on `queue`, charged to `account` (a process's, kept by
    /// its handle: see [`Registry::account`]).
    pub(crate) async fn put_to(
        &self,
        account: &Arc<Account>,
        queue: &Queue,
        item: Vec<u8>,
        timeout: Option<u64>,
    ) -> Result<(), Error> {
        check_size(&item)?;
        let charge = self.budgets.charge_to(account, Message::cost(item.len()), 0)?;
        queue.put(Message::new(item, charge), timeout).await
    }

    /// The budget account of the process `pid`.
    pub(crate) fn account(&self, pid: u32) -> Arc<Account> {
        self.budgets.account(pid)
    }

    fn object(&self, pid: u32, id: u64) -> Result<Object, Error> {
        Ok(self.objects.lock().unwrap().held(pid, id)?.object.clone())
    }

    /// Carries out `request` for the process `pid`.
    pub(crate) async fn call(&self, pid: u32, request: Request) -> Answer {
        match request {
            Request::Create(spec) => self.create(pid, spec).map(Reply::Handles),
            Request::Open(token) => self.open(pid, token),
            Request::Reserve { id } => {
                let mut objects = self.objects.lock().unwrap();
                objects.held(pid, id)?;
                objects.add(id, Holder::Reserved(pid));
                Ok(Reply::Unit)
            }
            Request::Hand { ticket, ids } => {
                let mut objects = self.objects.lock().unwrap();
                let handed: Vec<u64> = ids
                    .into_iter()
                    .filter(|&id| objects.pass(id, Holder::Reserved(pid), Holder::Ticket(ticket)))
                    .collect();
                if !handed.is_empty() {
                    objects.tickets.entry(ticket).or_default().extend(handed);
                }
                Ok(Reply::Unit)
            }
            Request::Claim { ticket } => {
                let mut objects = self.objects.lock().unwrap();
                for id in objects.tickets.remove(&ticket).unwrap_or_default() {
                    objects.pass(id, Holder::Ticket(ticket), Holder::Given(pid));
                }
                Ok(Reply::Unit)
            }
            Request::HandForked { ticket } => {
                let mut objects = self.objects.lock().unwrap();
                let holder = Holder::Process(pid);
                let held: Vec<(u64, u32)> =
                    objects.map.iter().filter_map(|(&id, entry)| Some((id, *entry.holders.get(&holder)?))).collect();
                let mut handed = Vec::new();
                for (id, count) in held {
                    for _ in 0..count {
                        objects.add(id, Holder::Ticket(ticket));
                        handed.push(id);
                    }
                }
                if !handed.is_empty() {
                    objects.tickets.entry(ticket).or_default().extend(handed);
                }
                Ok(Reply::Unit)
            }
            Request::ClaimForked { ticket } => {
                let mut objects = self.objects.lock().unwrap();
                for id in objects.tickets.remove(&ticket).unwrap_or_default() {
                    objects.pass(id, Holder::Ticket(ticket), Holder::Process(pid));
                }
                Ok(Reply::Unit)
            }
            Request::Unticket { ticket } => {
                let mut objects = self.objects.lock().unwrap();
                for id in objects.tickets.remove(&ticket).unwrap_or_default() {
                    objects.remove(id, Holder::Ticket(ticket), Some(1));
                }
                Ok(Reply::Unit)
            }
            Request::Drop { id } => self.drop_hold(pid, id).map(|()| Reply::Unit),
            Request::Put { id, item, timeout } => {
                let queue = object!(self, pid, id, Queue);
                self.put(pid, &queue, item.0, timeout).await.map(|()| Reply::Unit)
            }
            Request::Get { id, timeout } => {
                let queue = object!(self, pid, id, Queue);
                self.get(pid, id, &queue, timeout).await.map(|item| Reply::Bytes(super::Payload(item)))
            }
            Request::QueueSize { id } => {
                let queue = object!(self, pid, id, Queue);
                Ok(Reply::Count(self.leases.size(id, || queue.len())))
            }
            Request::TaskDone { id } => object!(self, pid, id, Queue).task_done().map(|()| Reply::Unit),
            Request::JoinQueue { id } => object!(self, pid, id, Queue).join().await.map(|()| Reply::Unit),
            Request::Send { id, message } => {
                check_size(&message.0)?;
                let (pipe, end) = self.connection(pid, id)?;
                let charge = self.budgets.charge(pid, Message::cost(message.0.len()), 0)?;
                pipe.send(end, Message::new(message.0, charge)).await.map(|()| Reply::Unit)
            }
            Request::Recv { id } => {
                let (pipe, end) = self.connection(pid, id)?;
                pipe.recv(end).await.map(|m| Reply::Bytes(super::Payload(m)))
            }
            Request::Poll { id, timeout } => {
                let (pipe, end) = self.connection(pid, id)?;
                Ok(Reply::Bool(pipe.poll(end, timeout).await))
            }
            Request::Acquire { id, timeout } => match self.object(pid, id)? {
                Object::Lock(lock) => Ok(Reply::Bool(lock.acquire(pid, 1, timeout).await)),
                Object::Semaphore(semaphore) => Ok(Reply::Bool(semaphore.acquire(timeout).await)),
                Object::Condition(condition) => Ok(Reply::Bool(condition.lock.acquire(pid, 1, timeout).await)),
                other => Err(not_a(&other, id, "lock")),
            },
            Request::Release { id } => match self.object(pid, id)? {
                Object::Lock(lock) => lock.release(pid).map(|()| Reply::Unit),
                Object::Semaphore(semaphore) => semaphore.release().map(|()| Reply::Unit),
                Object::Condition(condition) => condition.lock.release(pid).map(|()| Reply::Unit),
                other => Err(not_a(&other, id, "lock")),
            },
            Request::SemaphoreValue { id } => Ok(Reply::Count(object!(self, pid, id, Semaphore).value().into())),
            Request::EventSet { id } => {
                object!(self, pid, id, Event).set(true);
                Ok(Reply::Unit)
            }
            Request::EventClear { id } => {
                object!(self, pid, id, Event).set(false);
                Ok(Reply::Unit)
            }
            Request::EventIsSet { id } => Ok(Reply::Bool(object!(self, pid, id, Event).is_set())),
            Request::EventWait { id, timeout } => Ok(Reply::Bool(object!(self, pid, id, Event).wait(timeout).await)),
            Request::GetLock { id } => {
                let lock_id = match self.object(pid, id)? {
                    Object::Condition(condition) => condition.lock_id,
                    Object::Array(array) => array.lock_id,
                    other => return Err(not_a(&other, id, "condition or array")),
                };
                let mut objects = self.objects.lock().unwrap();
                objects.add(lock_id, Holder::Process(pid));
                let token = objects.token(lock_id).ok_or_else(|| Error::UnknownObject(format!("lock {lock_id}")))?;
                Ok(Reply::Handles(vec![token]))
            }
            Request::ConditionWait { id, timeout } => {
                object!(self, pid, id, Condition).wait(pid, timeout).await.map(Reply::Bool)
            }
            Request::ConditionNotify { id, n } => {
                object!(self, pid, id, Condition).notify(pid, n).map(|()| Reply::Unit)
            }
            Request::BarrierWait { id, timeout } => {
                object!(self, pid, id, Barrier).wait(timeout).await.map(|i| Reply::Count(i.into()))
            }
            Request::BarrierAbort { id } => {
                object!(self, pid, id, Barrier).abort();
                Ok(Reply::Unit)
            }
            Request::BarrierReset { id } => {
                object!(self, pid, id, Barrier).reset();
                Ok(Reply::Unit)
            }
            Request::BarrierState { id } => {
                let (parties, waiting, broken) = object!(self, pid, id, Barrier).state();
                Ok(Reply::Barrier { parties, waiting, broken })
            }
            Request::ArrayLen { id } => Ok(Reply::Count(object!(self, pid, id, Array).len())),
            Request::ArrayGet { id, index } => object!(self, pid, id, Array).get(index).map(Reply::Number),
            Request::ArraySet { id, index, value } => {
                object!(self, pid, id, Array).set(index, value).map(|()| Reply::Unit)
            }
            Request::ArrayGetAll { id } => Ok(Reply::Numbers(object!(self, pid, id, Array).get_all())),
            Request::Container { id, op, data } => match self.object(pid, id)? {
                Object::Container(container) => container.call(&self.budgets, pid, op, data.0).await,
                other => Err(not_a(&other, id, "dict, list or namespace")),
            },
            Request::QueueFull { id } => Ok(Reply::Bool(object!(self, pid, id, Queue).is_full())),
            Request::PollMany { ids, timeout } => {
                let ends = ids.iter().map(|&id| self.connection(pid, id)).collect::<Result<Vec<_>, _>>()?;
                Ok(Reply::Indices(pipe::poll_many(ends, timeout).await))
            }
        }
    }

    fn connection(&self, pid: u32, id: u64) -> Result<(Arc<Pipe>, usize), Error> {
        match self.object(pid, id)? {
            Object::Connection(pipe, end) => Ok((pipe, end)),
            other => Err(not_a(&other, id, "connection")),
        }
    }
}

fn check_size(message: &[u8]) -> Result<(), Error> {
    if message.len() > MAX_MESSAGE {
        return Err(Error::TooLarge { size: message.len() as u64, limit: MAX_MESSAGE as u64 });
    }
    Ok(())
}

fn not_a(object: &Object, id: u64, what: &str) -> Error {
    Error::UnknownObject(format!("{} {id} is not a {what}", object.kind().name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Payload, Spec};

    fn call(registry: &Registry, runtime: &tokio::runtime::Runtime, pid: u32, request: Request) -> Answer {
        runtime.block_on(registry.call(pid, request))
    }

    /// A reservation handed to a child's ticket outlives the parent; the
    /// child that claims it opens the object and finds the items; a ticket
    /// never claimed is dropped when the child ends, freeing the object.
    #[test]
    fn a_handed_reservation_outlives_the_parent_until_the_child() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let registry = Registry::new(runtime.handle().clone(), Quotas::default());
        let (parent, child) = (10, 11);
        let create = Request::Create(Spec::Queue { maxsize: 0, joinable: false });
        let Ok(Reply::Handles(tokens)) = call(&registry, &runtime, parent, create) else { panic!() };
        let token = tokens[0];
        let put = Request::Put { id: token.id, item: Payload(b"7".to_vec()), timeout: None };
        call(&registry, &runtime, parent, put).unwrap();
        call(&registry, &runtime, parent, Request::Reserve { id: token.id }).unwrap();
        call(&registry, &runtime, parent, Request::Hand { ticket: 99, ids: vec![token.id] }).unwrap();
        registry.release(parent);
        call(&registry, &runtime, child, Request::Claim { ticket: 99 }).unwrap();
        call(&registry, &runtime, child, Request::Open(token)).unwrap();
        let get = Request::Get { id: token.id, timeout: Some(0) };
        assert_eq!(call(&registry, &runtime, child, get), Ok(Reply::Bytes(Payload(b"7".to_vec()))));
        registry.release(child);
        assert!(registry.objects.lock().unwrap().map.is_empty());

        // Handed, never claimed: the child's end (Unticket) frees it.
        let create = Request::Create(Spec::Event);
        let Ok(Reply::Handles(tokens)) = call(&registry, &runtime, parent, create) else { panic!() };
        call(&registry, &runtime, parent, Request::Reserve { id: tokens[0].id }).unwrap();
        call(&registry, &runtime, parent, Request::Hand { ticket: 7, ids: vec![tokens[0].id] }).unwrap();
        registry.release(parent);
        assert_eq!(registry.objects.lock().unwrap().map.len(), 1);
        call(&registry, &runtime, parent, Request::Unticket { ticket: 7 }).unwrap();
        assert!(registry.objects.lock().unwrap().map.is_empty());
        assert!(registry.objects.lock().unwrap().tickets.is_empty());
    }
}
