//! Where a host's processes send their shared-object requests: the
//! [`Broker`] is the run's registry itself in the root host, or the
//! backend's link to it elsewhere (with the puts sent ahead, see
//! [`Pipeline`]); [`Served`] is the root's side, the registry behind the
//! backend's transport.

use super::{Answer, Error, MAX_MESSAGE, Payload, Registry, Reply, Request, budget, handed_ids, random_u64, wire};
use crate::backend::{Answered, BoxFuture, Objects, RemoteObjects, TakenCount};
use std::sync::Arc;

/// Where a host's processes send their requests.
pub(crate) enum Broker {
    /// This host is the root: the objects are here (and its backend serves
    /// them to processes that run elsewhere).
    Local(Arc<Registry>),
    /// The objects are in another host (a native worker's root), reached
    /// through the backend.
    Remote(Arc<dyn RemoteObjects>, Pipeline),
}

/// What a process whose objects are in another host may send without
/// waiting for the answer: puts to the queues the objects said never wait
/// (unbounded ones), within the bytes they said its budget has room for.
/// So a put neither waits for a round trip nor fails where it would have
/// failed had it waited (Python's feeder thread does the same for its puts,
/// without the guarantee).
#[derive(Default)]
pub(crate) struct Pipeline(std::sync::Mutex<PipelineState>);

#[derive(Default)]
struct PipelineState {
    unbounded: std::collections::HashSet<u64>,
    /// Bytes (as budgets count them) of puts that may still go unanswered.
    allowance: u64,
}

impl Broker {
    /// The broker of a new host: remote if its backend reaches the objects
    /// elsewhere, else a new registry, which the backend serves.
    pub(crate) fn new(
        runtime: &tokio::runtime::Handle,
        backend: &dyn crate::backend::Backend,
        quotas: budget::Quotas,
    ) -> anyhow::Result<Broker> {
        if let Some(remote) = backend.remote_objects()? {
            return Ok(Broker::Remote(remote, Pipeline::default()));
        }
        let registry = Arc::new(Registry::new(runtime.clone(), quotas));
        backend.serve_objects(runtime, Arc::new(Served(registry.clone())))?;
        Ok(Broker::Local(registry))
    }

    /// In a forked child: its copy of the way to the objects is its
    /// parent's, left to the parent (see [`RemoteObjects::leave_connection`]).
    // Only a backend that forks calls it.
    #[cfg(outside_processes)]
    pub(crate) fn after_fork(&self) {
        if let Broker::Remote(remote, pipeline) = self {
            remote.leave_connection();
            *pipeline.0.lock().unwrap() = PipelineState::default();
        }
    }

    /// Waits until every request this host's processes sent has been
    /// carried out (a process's end waits for its puts to be in their
    /// queues); an error of one no process was told of yet.
    pub(crate) async fn flush(&self) -> Option<Error> {
        let Broker::Remote(remote, _) = self else { return None };
        if remote.settled() {
            return None;
        }
        match remote.flush().await {
            Ok(None) => None,
            Ok(Some(failure)) => match wire::decode::<Answer>(failure) {
                Ok(Err(error)) => Some(error),
                Ok(Ok(_)) => None,
                Err(why) => Some(Error::Broker(why)),
            },
            Err(why) => Some(Error::Broker(why)),
        }
    }

    /// Whether processes of this host may hold shared objects: one whose
    /// objects are elsewhere and never reached them holds none.
    pub(crate) fn may_hold(&self) -> bool {
        match self {
            Broker::Local(..) => true,
            Broker::Remote(remote, _) => remote.connected(),
        }
    }

    /// The registry, in a root host.
    pub(crate) fn local(&self) -> Option<&Arc<Registry>> {
        match self {
            Broker::Local(registry) => Some(registry),
            Broker::Remote(..) => None,
        }
    }

    /// Runs `request` for the process `node`.
    pub(crate) async fn call(&self, node: &Arc<crate::process::Node>, request: Request) -> Answer {
        let pid = node.pid().unwrap_or_default();
        match self {
            Broker::Local(registry) => {
                if request.adds_holds() {
                    registry.watch(pid, node);
                }
                registry.call(pid, request).await
            }
            Broker::Remote(remote, pipeline) => call_remote(remote.as_ref(), pipeline, request).await,
        }
    }

    /// Starts `child`, a child of `parent`, and hands it the objects whose
    /// tokens are in its arguments: the holds `parent` reserved for them
    /// pass to a ticket in the child's launch, which the child claims as it
    /// starts ([`Broker::claim`]). So they stay alive for the child however
    /// soon `parent` ends, until the child opens them or ends itself.
    pub(crate) async fn start_child(
        &self,
        host: &Arc<crate::runtime::HostInner>,
        parent: &Arc<crate::process::Node>,
        child: &Arc<crate::process::Node>,
    ) -> Result<(), crate::Error> {
        let handed = child
            .update_launch(|launch| {
                let ids = handed_ids(launch.work.input());
                (!ids.is_empty()).then(|| {
                    let ticket = random_u64();
                    launch.ticket = Some(ticket);
                    (ticket, ids)
                })
            })
            .flatten();
        let Some((ticket, ids)) = handed else {
            return host.start(child);
        };
        // Unreachable broker: the reservations stay the parent's, as before.
        let _ = self.call(parent, Request::Hand { ticket, ids }).await;
        let started = host.start(child);
        if started.is_err() {
            let _ = self.call(parent, Request::Unticket { ticket }).await;
            return started;
        }
        // A child that ends before it could claim (terminated at once, or
        // its program failed to instantiate) leaves nothing behind.
        let (weak, parent, child) = (Arc::downgrade(host), parent.clone(), child.clone());
        host.runtime.spawn(async move {
            let _ = child.join_async(None).await;
            if let Some(host) = weak.upgrade() {
                let _ = host.sync.call(&parent, Request::Unticket { ticket }).await;
            }
        });
        started
    }

    /// Takes what the process `node` was handed at its start (see
    /// [`Broker::start_child`]); first thing, before its guest runs.
    pub(crate) async fn claim(&self, node: &Arc<crate::process::Node>, ticket: Option<u64>) {
        if let Some(ticket) = ticket {
            // Unreachable broker: the guest's own `open` will say so.
            let _ = self.call(node, Request::Claim { ticket }).await;
        }
    }
}

/// Sends `request` to objects in another host and decodes the answer; a
/// put the objects allow is sent without waiting (see [`Pipeline`]).
async fn call_remote(remote: &dyn RemoteObjects, pipeline: &Pipeline, mut request: Request) -> Answer {
    if let Some(size) = request.payload_mut().map(|p| p.len()).filter(|&size| size > MAX_MESSAGE) {
        return Err(Error::TooLarge { size: size as u64, limit: MAX_MESSAGE as u64 });
    }
    let put = match &request {
        Request::Put { id, item, .. } => Some((*id, budget::Message::cost(item.0.len()))),
        // An item leased ahead is taken without a round trip.
        Request::Get { id, .. } => match remote.take_leased(*id) {
            Some(item) => return Ok(Reply::Bytes(Payload(item))),
            None => None,
        },
        // What is leased of a queue this process lets go of goes back.
        Request::Drop { id } => {
            remote.return_lease(*id);
            None
        }
        _ => None,
    };
    let encoded = wire::encode(request).map_err(Error::Broker)?;
    if let Some((id, cost)) = put {
        let mut state = pipeline.0.lock().unwrap();
        if state.unbounded.contains(&id) && cost <= state.allowance {
            state.allowance -= cost;
            drop(state);
            remote.send(encoded).map_err(Error::Broker)?;
            return Ok(Reply::Unit);
        }
    }
    let called = remote.call(encoded).await.map_err(Error::Broker)?;
    {
        let mut state = pipeline.0.lock().unwrap();
        state.allowance = called.allowance;
        if let Some((id, _)) = put
            && called.allowance > 0
        {
            state.unbounded.insert(id);
        }
    }
    wire::decode::<Answer>(called.answer).map_err(Error::Broker)?
}

/// A root host's registry as its backend serves it to processes elsewhere.
struct Served(Arc<Registry>);

impl Objects for Served {
    fn call(&self, pid: u32, request: Vec<u8>) -> BoxFuture<'_, Result<Answered, String>> {
        Box::pin(async move {
            let request = wire::decode::<Request>(request)?;
            // What a message is taken from, and whether by a queue's get
            // (which may lease the next items ahead).
            let (taken_from, got_from) = match request {
                Request::Get { id, .. } => (Some(id), Some(id)),
                Request::Recv { id } => (Some(id), None),
                _ => (None, None),
            };
            let put_to = match request {
                Request::Put { id, .. } => Some(id),
                _ => None,
            };
            let answer = self.0.call(pid, request).await;
            // Puts to a queue that never waits may go unanswered, within
            // half the room left in the budgets (others may take the rest).
            let allowance = match (put_to, &answer) {
                (Some(id), Ok(_)) => {
                    self.0.queue(pid, id).map_or(0, |queue| if queue.bounded() { 0 } else { self.0.headroom(pid) / 2 })
                }
                _ => 0,
            };
            // A message taken for a process that cannot receive it goes
            // back where it was (found in the encoded answer: no copy).
            let undo = match (taken_from, &answer) {
                (Some(id), Ok(Reply::Bytes(_))) => {
                    let registry = self.0.clone();
                    let undo = move |answer: Vec<u8>| {
                        if let Ok(Ok(Reply::Bytes(message))) = wire::decode::<Answer>(answer) {
                            registry.give_back(id, message.0);
                        }
                    };
                    Some(Box::new(undo) as Box<dyn FnOnce(Vec<u8>) + Send>)
                }
                _ => None,
            };
            // A consumer that got an item may take the next ones ahead.
            let lease = match (got_from, &answer) {
                (Some(id), Ok(_)) => self.0.lease(pid, id),
                _ => None,
            };
            let failed = answer.is_err();
            Ok(Answered { answer: wire::encode(answer)?, undo, failed, allowance, lease })
        })
    }

    fn release(&self, pid: u32) {
        self.0.release(pid);
    }

    fn lease_counted(&self, pid: u32, serial: u64, counter: Box<dyn TakenCount>) {
        self.0.lease_counted(pid, serial, counter);
    }

    fn lease_returned(&self, pid: u32, serial: u64) {
        self.0.lease_returned(pid, serial);
    }

    fn max_request(&self) -> usize {
        wire::MAX_ENCODED
    }
}
