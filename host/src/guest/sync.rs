//! The `mp:host/sync` interface, as the host implements it for guests.
//!
//! A guest's handle is a [`SyncHandle`] in its store's resource table: the
//! object's token and whether the guest closed it. Every operation becomes
//! one [`Request`] to the host's broker (the registry itself on the thread
//! backend, the root host over a socket on the native backend), made as the
//! calling process. `open` accepts only a token found in the caller's own
//! spawn arguments, which the guest cannot change: the host side of the
//! capability rule (see [`crate::sync`]).
//!
//! The handles and the helpers every resource's methods share are here,
//! with the queues and connections; the synchronization primitives are in
//! [`super::primitives`], a `Manager`'s containers in [`super::container`],
//! and waiting on many in [`super::wait`].

use super::mp::host::sync::{self as wit, Host, HostConnection, HostQueue};
use crate::instance::Ctx;
use crate::sync::budget::Account;
use crate::sync::{Error, Kind, Number, Payload, QueueObject, QuotaKind, Registry, Reply, Request, Spec, Token};
use std::marker::PhantomData;
use std::sync::Arc;
use wasmtime::component::Resource;

/// A guest's handle on a shared object; `K` tells the resource types apart.
pub struct SyncHandle<K> {
    token: Token,
    closed: bool,
    /// A queue's object in this (root) host's registry, once looked up:
    /// `put` and `get` go to it directly (see [`Ctx::local_queue`]).
    queue: Option<LocalQueue>,
    kind: PhantomData<K>,
}

/// What a handle keeps of a queue in this host's own registry, so that a
/// `put` or `get` touches nothing shared but the queue and the budget's
/// counters (no lookup, no reference count).
struct LocalQueue {
    registry: Arc<Registry>,
    object: Arc<QueueObject>,
    /// The budget account of the process holding the handle.
    account: Arc<Account>,
}

/// Marker types, one per WIT resource.
pub mod kinds {
    pub struct Queue;
    pub struct Connection;
    pub struct Lock;
    pub struct Semaphore;
    pub struct Event;
    pub struct Condition;
    pub struct Barrier;
    pub struct Array;
    pub struct Container;
}

pub type GuestQueue = SyncHandle<kinds::Queue>;
pub type GuestConnection = SyncHandle<kinds::Connection>;
pub type GuestLock = SyncHandle<kinds::Lock>;
pub type GuestSemaphore = SyncHandle<kinds::Semaphore>;
pub type GuestEvent = SyncHandle<kinds::Event>;
pub type GuestCondition = SyncHandle<kinds::Condition>;
pub type GuestBarrier = SyncHandle<kinds::Barrier>;
pub type GuestArray = SyncHandle<kinds::Array>;
pub type GuestContainer = SyncHandle<kinds::Container>;

impl From<Error> for wit::Error {
    fn from(error: Error) -> wit::Error {
        match error {
            Error::Empty => wit::Error::Empty,
            Error::Full => wit::Error::Full,
            Error::Closed => wit::Error::Closed,
            Error::Eof => wit::Error::Eof,
            Error::BrokenPipe => wit::Error::BrokenPipe,
            Error::UnknownObject(what) => wit::Error::UnknownObject(what),
            Error::NotGiven(what) => wit::Error::NotGiven(what),
            Error::TooLarge { size, limit } => wit::Error::TooLarge((size, limit)),
            Error::Invalid(why) => wit::Error::Invalid(why),
            Error::BrokenBarrier => wit::Error::BrokenBarrier,
            Error::Broker(why) => wit::Error::Broker(why),
            Error::Quota { kind, used, limit } => wit::Error::Quota(wit::QuotaExceeded {
                kind: match kind {
                    QuotaKind::Bytes => wit::QuotaKind::Bytes,
                    QuotaKind::Objects => wit::QuotaKind::Objects,
                    QuotaKind::RunBytes => wit::QuotaKind::RunBytes,
                    QuotaKind::RunObjects => wit::QuotaKind::RunObjects,
                },
                used,
                limit,
            }),
        }
    }
}

impl From<wit::Number> for Number {
    fn from(n: wit::Number) -> Number {
        match n {
            wit::Number::Int(n) => Number::Int(n),
            wit::Number::Float(n) => Number::Float(n),
        }
    }
}

impl From<Number> for wit::Number {
    fn from(n: Number) -> wit::Number {
        match n {
            Number::Int(n) => wit::Number::Int(n),
            Number::Float(n) => wit::Number::Float(n),
        }
    }
}

pub(super) type Answer<T> = wasmtime::Result<Result<T, wit::Error>>;

pub(super) fn unexpected(reply: Reply) -> wit::Error {
    wit::Error::Invalid(format!("unexpected reply from the broker: {reply:?}"))
}

/// What a WIT constructor (which has no error to return) makes of a
/// refused creation (the object budget, a broken broker): a trap naming
/// the reason. The `create` functions return it instead.
pub(super) fn refusal_traps<T>(created: Answer<T>) -> wasmtime::Result<T> {
    created?.map_err(|error| wasmtime::format_err!("cannot create a shared object: {}", Error::from_wit(error)))
}

impl Ctx {
    /// Sends `request` as this process; the future holds no borrow of the
    /// store's data (which is not `Sync`).
    pub(super) fn sync(&self, request: Request) -> impl Future<Output = Result<Reply, wit::Error>> + Send + 'static {
        let (host, node) = (self.host.clone(), self.node.clone());
        async move { host.sync.call(&node, request).await.map_err(Into::into) }
    }

    /// The object behind an open handle.
    pub(super) fn id<K: 'static + Send>(
        &self,
        handle: &Resource<SyncHandle<K>>,
    ) -> wasmtime::Result<Result<u64, wit::Error>> {
        let handle = self.table.get(handle)?;
        Ok(if handle.closed { Err(wit::Error::Closed) } else { Ok(handle.token.id) })
    }

    pub(super) async fn request<K: 'static + Send>(
        &mut self,
        handle: &Resource<SyncHandle<K>>,
        request: impl FnOnce(u64) -> Request,
    ) -> Answer<Reply> {
        let id = match self.id(handle)? {
            Ok(id) => id,
            Err(error) => return Ok(Err(error)),
        };
        Ok(self.sync(request(id)).await)
    }

    pub(super) async fn unit<K: 'static + Send>(
        &mut self,
        handle: &Resource<SyncHandle<K>>,
        request: impl FnOnce(u64) -> Request,
    ) -> Answer<()> {
        Ok(self.request(handle, request).await?.map(|_| ()))
    }

    pub(super) async fn flag<K: 'static + Send>(
        &mut self,
        handle: &Resource<SyncHandle<K>>,
        request: impl FnOnce(u64) -> Request,
    ) -> Answer<bool> {
        Ok(self.request(handle, request).await?.and_then(|reply| match reply {
            Reply::Bool(flag) => Ok(flag),
            other => Err(unexpected(other)),
        }))
    }

    pub(super) async fn count<K: 'static + Send>(
        &mut self,
        handle: &Resource<SyncHandle<K>>,
        request: impl FnOnce(u64) -> Request,
    ) -> Answer<u64> {
        Ok(self.request(handle, request).await?.and_then(|reply| match reply {
            Reply::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }))
    }

    pub(super) async fn bytes<K: 'static + Send>(
        &mut self,
        handle: &Resource<SyncHandle<K>>,
        request: impl FnOnce(u64) -> Request,
    ) -> Answer<Vec<u8>> {
        Ok(self.request(handle, request).await?.and_then(|reply| match reply {
            Reply::Bytes(bytes) => Ok(bytes.0),
            other => Err(unexpected(other)),
        }))
    }

    pub(super) fn push<K: 'static + Send>(&mut self, token: Token) -> wasmtime::Result<Resource<SyncHandle<K>>> {
        Ok(self.table.push(SyncHandle { token, closed: false, queue: None, kind: PhantomData })?)
    }

    /// Creates one object for a WIT constructor, which has no error to
    /// return: a refusal traps (see [`refusal_traps`]).
    pub(super) async fn create<K: 'static + Send>(&mut self, spec: Spec) -> wasmtime::Result<Resource<SyncHandle<K>>> {
        refusal_traps(self.try_create(spec).await)
    }

    /// Creates one object, or says why the host refused it (`quota`).
    pub(super) async fn try_create<K: 'static + Send>(&mut self, spec: Spec) -> Answer<Resource<SyncHandle<K>>> {
        match self.sync(Request::Create(spec)).await {
            Ok(Reply::Handles(tokens)) if tokens.len() == 1 => Ok(Ok(self.push(tokens[0])?)),
            Ok(other) => Ok(Err(unexpected(other))),
            Err(error) => Ok(Err(error)),
        }
    }

    /// Opens a token of `kind` given to this process in its spawn arguments.
    pub(super) async fn open<K: 'static + Send>(
        &mut self,
        token: String,
        kind: Kind,
    ) -> Answer<Resource<SyncHandle<K>>> {
        let parsed = match Token::parse(&token) {
            Ok(parsed) if parsed.kind == kind => parsed,
            Ok(_) => {
                return Ok(Err(wit::Error::UnknownObject(format!("`{token}` is not a token of a {kind:?}"))));
            }
            Err(error) => return Ok(Err(error.into())),
        };
        let input = self.launch.work.input();
        if !input.windows(token.len()).any(|w| w == token.as_bytes()) {
            return Ok(Err(wit::Error::NotGiven(format!("{kind:?} {}", parsed.id).to_lowercase())));
        }
        if let Err(error) = self.sync(Request::Open(parsed)).await {
            return Ok(Err(error));
        }
        Ok(Ok(self.push(parsed)?))
    }

    pub(super) fn token_of<K: 'static + Send>(&self, handle: &Resource<SyncHandle<K>>) -> wasmtime::Result<String> {
        Ok(self.table.get(handle)?.token.encode())
    }

    /// The queue behind an open handle, when this host holds the registry
    /// (a root host): `put` and `get` then skip the request and the
    /// registry's lookup, which checked once that this process holds the
    /// queue (it does while the handle is open). `None` on a native worker,
    /// whose requests go to the root. The caller hands it back with
    /// [`Ctx::keep_local_queue`] when done (a call cut short, the process
    /// ending, only loses the cache).
    fn local_queue(
        &mut self,
        handle: &Resource<GuestQueue>,
    ) -> wasmtime::Result<Option<Result<LocalQueue, wit::Error>>> {
        let Some(registry) = self.host.sync.local() else { return Ok(None) };
        let entry = self.table.get_mut(handle)?;
        if entry.closed {
            return Ok(Some(Err(wit::Error::Closed)));
        }
        if let Some(local) = entry.queue.take() {
            return Ok(Some(Ok(local)));
        }
        let pid = self.node.pid().unwrap_or_default();
        Ok(Some(match registry.queue(pid, entry.token.id) {
            Ok(object) => Ok(LocalQueue { registry: registry.clone(), object, account: registry.account(pid) }),
            Err(error) => Err(error.into()),
        }))
    }

    /// Keeps what [`Ctx::local_queue`] gave for the handle's next call,
    /// unless the handle was closed meanwhile.
    fn keep_local_queue(&mut self, handle: &Resource<GuestQueue>, local: LocalQueue) -> wasmtime::Result<()> {
        let entry = self.table.get_mut(handle)?;
        if !entry.closed {
            entry.queue = Some(local);
        }
        Ok(())
    }

    /// Gives up the hold of a handle (once).
    pub(super) async fn close_handle<K: 'static + Send>(
        &mut self,
        handle: &Resource<SyncHandle<K>>,
    ) -> wasmtime::Result<()> {
        let entry = self.table.get_mut(handle)?;
        if std::mem::replace(&mut entry.closed, true) {
            return Ok(());
        }
        entry.queue = None;
        let id = entry.token.id;
        // An error here means the object is gone already: nothing to give up.
        let _ = self.sync(Request::Drop { id }).await;
        Ok(())
    }

    pub(super) async fn drop_handle<K: 'static + Send>(
        &mut self,
        handle: Resource<SyncHandle<K>>,
    ) -> wasmtime::Result<()> {
        self.close_handle(&handle).await?;
        self.table.delete(handle)?;
        Ok(())
    }

    pub(super) async fn lock_of<K: 'static + Send>(
        &mut self,
        handle: &Resource<SyncHandle<K>>,
    ) -> Answer<Resource<GuestLock>> {
        match self.request(handle, |id| Request::GetLock { id }).await? {
            Ok(Reply::Handles(tokens)) if tokens.len() == 1 => Ok(Ok(self.push(tokens[0])?)),
            Ok(other) => Ok(Err(unexpected(other))),
            Err(error) => Ok(Err(error)),
        }
    }
}

impl Error {
    pub(super) fn from_wit(error: wit::Error) -> Error {
        match error {
            wit::Error::Empty => Error::Empty,
            wit::Error::Full => Error::Full,
            wit::Error::Closed => Error::Closed,
            wit::Error::Eof => Error::Eof,
            wit::Error::BrokenPipe => Error::BrokenPipe,
            wit::Error::UnknownObject(what) => Error::UnknownObject(what),
            wit::Error::NotGiven(what) => Error::NotGiven(what),
            wit::Error::TooLarge((size, limit)) => Error::TooLarge { size, limit },
            wit::Error::Invalid(why) => Error::Invalid(why),
            wit::Error::BrokenBarrier => Error::BrokenBarrier,
            wit::Error::Broker(why) => Error::Broker(why),
            wit::Error::Quota(quota) => Error::Quota {
                kind: match quota.kind {
                    wit::QuotaKind::Bytes => QuotaKind::Bytes,
                    wit::QuotaKind::Objects => QuotaKind::Objects,
                    wit::QuotaKind::RunBytes => QuotaKind::RunBytes,
                    wit::QuotaKind::RunObjects => QuotaKind::RunObjects,
                },
                used: quota.used,
                limit: quota.limit,
            },
        }
    }
}

impl Host for Ctx {
    async fn share(&mut self, token: String) -> Answer<()> {
        let token = match Token::parse(&token) {
            Ok(token) => token,
            Err(error) => return Ok(Err(error.into())),
        };
        Ok(self.sync(Request::Reserve { id: token.id }).await.map(|_| ()))
    }

    async fn queue_full(&mut self, queue: Resource<GuestQueue>) -> Answer<bool> {
        self.flag(&queue, |id| Request::QueueFull { id }).await
    }

    async fn wait(
        &mut self,
        processes: Vec<Resource<super::GuestProcess>>,
        connections: Vec<Resource<GuestConnection>>,
        timeout: Option<u64>,
    ) -> Answer<Vec<u32>> {
        self.wait_many(processes, connections, timeout).await
    }

    async fn pipe(&mut self, duplex: bool) -> wasmtime::Result<(Resource<GuestConnection>, Resource<GuestConnection>)> {
        refusal_traps(self.create_pipe(duplex).await)
    }

    async fn create_pipe(&mut self, duplex: bool) -> Answer<(Resource<GuestConnection>, Resource<GuestConnection>)> {
        match self.sync(Request::Create(Spec::Pipe { duplex })).await {
            Ok(Reply::Handles(tokens)) if tokens.len() == 2 => Ok(Ok((self.push(tokens[0])?, self.push(tokens[1])?))),
            Ok(other) => Ok(Err(unexpected(other))),
            Err(error) => Ok(Err(error)),
        }
    }
}

impl HostQueue for Ctx {
    async fn new(&mut self, maxsize: u32, joinable: bool) -> wasmtime::Result<Resource<GuestQueue>> {
        self.create(Spec::Queue { maxsize, joinable }).await
    }
    async fn create(&mut self, maxsize: u32, joinable: bool) -> Answer<Resource<GuestQueue>> {
        self.try_create(Spec::Queue { maxsize, joinable }).await
    }
    async fn open(&mut self, token: String) -> Answer<Resource<GuestQueue>> {
        Ctx::open(self, token, Kind::Queue).await
    }
    async fn token(&mut self, handle: Resource<GuestQueue>) -> wasmtime::Result<String> {
        self.token_of(&handle)
    }
    async fn put(&mut self, handle: Resource<GuestQueue>, item: Vec<u8>, timeout: Option<u64>) -> Answer<()> {
        match self.local_queue(&handle)? {
            Some(Ok(local)) => {
                let put = local.registry.put_to(&local.account, &local.object, item, timeout).await;
                self.keep_local_queue(&handle, local)?;
                return Ok(put.map_err(Into::into));
            }
            Some(Err(error)) => return Ok(Err(error)),
            None => {}
        }
        // Boxed: the local path above, the common one, stays small.
        Box::pin(self.unit(&handle, |id| Request::Put { id, item: Payload(item), timeout })).await
    }
    async fn get(&mut self, handle: Resource<GuestQueue>, timeout: Option<u64>) -> Answer<Vec<u8>> {
        match self.local_queue(&handle)? {
            Some(Ok(local)) => {
                let got = local.object.get_watching(timeout).await;
                self.keep_local_queue(&handle, local)?;
                return Ok(got.map_err(Into::into));
            }
            Some(Err(error)) => return Ok(Err(error)),
            None => {}
        }
        Box::pin(self.bytes(&handle, |id| Request::Get { id, timeout })).await
    }
    async fn qsize(&mut self, handle: Resource<GuestQueue>) -> Answer<u64> {
        self.count(&handle, |id| Request::QueueSize { id }).await
    }
    async fn task_done(&mut self, handle: Resource<GuestQueue>) -> Answer<()> {
        self.unit(&handle, |id| Request::TaskDone { id }).await
    }
    async fn join(&mut self, handle: Resource<GuestQueue>) -> Answer<()> {
        self.unit(&handle, |id| Request::JoinQueue { id }).await
    }
    async fn close(&mut self, handle: Resource<GuestQueue>) -> wasmtime::Result<()> {
        self.close_handle(&handle).await
    }
    async fn drop(&mut self, handle: Resource<GuestQueue>) -> wasmtime::Result<()> {
        self.drop_handle(handle).await
    }
}

impl HostConnection for Ctx {
    async fn open(&mut self, token: String) -> Answer<Resource<GuestConnection>> {
        Ctx::open(self, token, Kind::Connection).await
    }
    async fn token(&mut self, handle: Resource<GuestConnection>) -> wasmtime::Result<String> {
        self.token_of(&handle)
    }
    async fn send(&mut self, handle: Resource<GuestConnection>, message: Vec<u8>) -> Answer<()> {
        self.unit(&handle, |id| Request::Send { id, message: Payload(message) }).await
    }
    async fn recv(&mut self, handle: Resource<GuestConnection>) -> Answer<Vec<u8>> {
        self.bytes(&handle, |id| Request::Recv { id }).await
    }
    async fn poll(&mut self, handle: Resource<GuestConnection>, timeout: Option<u64>) -> Answer<bool> {
        self.flag(&handle, |id| Request::Poll { id, timeout }).await
    }
    async fn close(&mut self, handle: Resource<GuestConnection>) -> wasmtime::Result<()> {
        self.close_handle(&handle).await
    }
    async fn drop(&mut self, handle: Resource<GuestConnection>) -> wasmtime::Result<()> {
        self.drop_handle(handle).await
    }
}
