//! The `mp:host/sync` interface's synchronization primitives, as the host
//! implements them for guests: locks, semaphores, events, conditions,
//! barriers and shared arrays. Each method is one request through the
//! helpers of [`super::sync`], which also holds the handles, the queues and
//! the connections.

use super::mp::host::sync::{
    self as wit, HostBarrier, HostCondition, HostEvent, HostLock, HostSemaphore, HostSharedArray,
};
use super::sync::{
    Answer, GuestArray, GuestBarrier, GuestCondition, GuestEvent, GuestLock, GuestSemaphore, refusal_traps, unexpected,
};
use crate::instance::Ctx;
use crate::sync::{Kind, Numbers, Reply, Request, Spec};
use wasmtime::component::Resource;

impl HostLock for Ctx {
    async fn new(&mut self, recursive: bool) -> wasmtime::Result<Resource<GuestLock>> {
        self.create(Spec::Lock { recursive }).await
    }
    async fn create(&mut self, recursive: bool) -> Answer<Resource<GuestLock>> {
        self.try_create(Spec::Lock { recursive }).await
    }
    async fn open(&mut self, token: String) -> Answer<Resource<GuestLock>> {
        Ctx::open(self, token, Kind::Lock).await
    }
    async fn token(&mut self, handle: Resource<GuestLock>) -> wasmtime::Result<String> {
        self.token_of(&handle)
    }
    async fn acquire(&mut self, handle: Resource<GuestLock>, timeout: Option<u64>) -> Answer<bool> {
        self.flag(&handle, |id| Request::Acquire { id, timeout }).await
    }
    async fn release(&mut self, handle: Resource<GuestLock>) -> Answer<()> {
        self.unit(&handle, |id| Request::Release { id }).await
    }
    async fn drop(&mut self, handle: Resource<GuestLock>) -> wasmtime::Result<()> {
        self.drop_handle(handle).await
    }
}

impl HostSemaphore for Ctx {
    async fn new(&mut self, value: u32, bounded: bool) -> wasmtime::Result<Resource<GuestSemaphore>> {
        self.create(Spec::Semaphore { value, bounded }).await
    }
    async fn create(&mut self, value: u32, bounded: bool) -> Answer<Resource<GuestSemaphore>> {
        self.try_create(Spec::Semaphore { value, bounded }).await
    }
    async fn open(&mut self, token: String) -> Answer<Resource<GuestSemaphore>> {
        Ctx::open(self, token, Kind::Semaphore).await
    }
    async fn token(&mut self, handle: Resource<GuestSemaphore>) -> wasmtime::Result<String> {
        self.token_of(&handle)
    }
    async fn acquire(&mut self, handle: Resource<GuestSemaphore>, timeout: Option<u64>) -> Answer<bool> {
        self.flag(&handle, |id| Request::Acquire { id, timeout }).await
    }
    async fn release(&mut self, handle: Resource<GuestSemaphore>) -> Answer<()> {
        self.unit(&handle, |id| Request::Release { id }).await
    }
    async fn get_value(&mut self, handle: Resource<GuestSemaphore>) -> Answer<u32> {
        Ok(self.count(&handle, |id| Request::SemaphoreValue { id }).await?.map(|n| n as u32))
    }
    async fn drop(&mut self, handle: Resource<GuestSemaphore>) -> wasmtime::Result<()> {
        self.drop_handle(handle).await
    }
}

impl HostEvent for Ctx {
    async fn new(&mut self) -> wasmtime::Result<Resource<GuestEvent>> {
        self.create(Spec::Event).await
    }
    async fn create(&mut self) -> Answer<Resource<GuestEvent>> {
        self.try_create(Spec::Event).await
    }
    async fn open(&mut self, token: String) -> Answer<Resource<GuestEvent>> {
        Ctx::open(self, token, Kind::Event).await
    }
    async fn token(&mut self, handle: Resource<GuestEvent>) -> wasmtime::Result<String> {
        self.token_of(&handle)
    }
    async fn is_set(&mut self, handle: Resource<GuestEvent>) -> Answer<bool> {
        self.flag(&handle, |id| Request::EventIsSet { id }).await
    }
    async fn set(&mut self, handle: Resource<GuestEvent>) -> Answer<()> {
        self.unit(&handle, |id| Request::EventSet { id }).await
    }
    async fn clear(&mut self, handle: Resource<GuestEvent>) -> Answer<()> {
        self.unit(&handle, |id| Request::EventClear { id }).await
    }
    async fn wait(&mut self, handle: Resource<GuestEvent>, timeout: Option<u64>) -> Answer<bool> {
        self.flag(&handle, |id| Request::EventWait { id, timeout }).await
    }
    async fn drop(&mut self, handle: Resource<GuestEvent>) -> wasmtime::Result<()> {
        self.drop_handle(handle).await
    }
}

impl HostCondition for Ctx {
    async fn new(&mut self, lock: Option<Resource<GuestLock>>) -> wasmtime::Result<Resource<GuestCondition>> {
        refusal_traps(HostCondition::create(self, lock).await)
    }
    async fn create(&mut self, lock: Option<Resource<GuestLock>>) -> Answer<Resource<GuestCondition>> {
        let lock = match &lock {
            Some(lock) => match self.id(lock)? {
                Ok(id) => Some(id),
                Err(error) => return Ok(Err(error)),
            },
            None => None,
        };
        self.try_create(Spec::Condition { lock }).await
    }
    async fn open(&mut self, token: String) -> Answer<Resource<GuestCondition>> {
        Ctx::open(self, token, Kind::Condition).await
    }
    async fn token(&mut self, handle: Resource<GuestCondition>) -> wasmtime::Result<String> {
        self.token_of(&handle)
    }
    async fn get_lock(&mut self, handle: Resource<GuestCondition>) -> Answer<Resource<GuestLock>> {
        self.lock_of(&handle).await
    }
    async fn wait(&mut self, handle: Resource<GuestCondition>, timeout: Option<u64>) -> Answer<bool> {
        self.flag(&handle, |id| Request::ConditionWait { id, timeout }).await
    }
    async fn notify(&mut self, handle: Resource<GuestCondition>, n: u32) -> Answer<()> {
        self.unit(&handle, |id| Request::ConditionNotify { id, n: Some(n) }).await
    }
    async fn notify_all(&mut self, handle: Resource<GuestCondition>) -> Answer<()> {
        self.unit(&handle, |id| Request::ConditionNotify { id, n: None }).await
    }
    async fn drop(&mut self, handle: Resource<GuestCondition>) -> wasmtime::Result<()> {
        self.drop_handle(handle).await
    }
}

impl Ctx {
    async fn barrier_state(&mut self, handle: &Resource<GuestBarrier>) -> Answer<(u32, u32, bool)> {
        Ok(self.request(handle, |id| Request::BarrierState { id }).await?.and_then(|reply| match reply {
            Reply::Barrier { parties, waiting, broken } => Ok((parties, waiting, broken)),
            other => Err(unexpected(other)),
        }))
    }
}

impl HostBarrier for Ctx {
    async fn new(&mut self, parties: u32) -> wasmtime::Result<Resource<GuestBarrier>> {
        self.create(Spec::Barrier { parties }).await
    }
    async fn create(&mut self, parties: u32) -> Answer<Resource<GuestBarrier>> {
        self.try_create(Spec::Barrier { parties }).await
    }
    async fn open(&mut self, token: String) -> Answer<Resource<GuestBarrier>> {
        Ctx::open(self, token, Kind::Barrier).await
    }
    async fn token(&mut self, handle: Resource<GuestBarrier>) -> wasmtime::Result<String> {
        self.token_of(&handle)
    }
    async fn wait(&mut self, handle: Resource<GuestBarrier>, timeout: Option<u64>) -> Answer<u32> {
        Ok(self.count(&handle, |id| Request::BarrierWait { id, timeout }).await?.map(|n| n as u32))
    }
    async fn abort(&mut self, handle: Resource<GuestBarrier>) -> Answer<()> {
        self.unit(&handle, |id| Request::BarrierAbort { id }).await
    }
    async fn reset(&mut self, handle: Resource<GuestBarrier>) -> Answer<()> {
        self.unit(&handle, |id| Request::BarrierReset { id }).await
    }
    async fn parties(&mut self, handle: Resource<GuestBarrier>) -> Answer<u32> {
        Ok(self.barrier_state(&handle).await?.map(|s| s.0))
    }
    async fn n_waiting(&mut self, handle: Resource<GuestBarrier>) -> Answer<u32> {
        Ok(self.barrier_state(&handle).await?.map(|s| s.1))
    }
    async fn broken(&mut self, handle: Resource<GuestBarrier>) -> Answer<bool> {
        Ok(self.barrier_state(&handle).await?.map(|s| s.2))
    }
    async fn drop(&mut self, handle: Resource<GuestBarrier>) -> wasmtime::Result<()> {
        self.drop_handle(handle).await
    }
}

impl HostSharedArray for Ctx {
    async fn new(&mut self, values: wit::Numbers) -> wasmtime::Result<Resource<GuestArray>> {
        refusal_traps(HostSharedArray::create(self, values).await)
    }
    async fn create(&mut self, values: wit::Numbers) -> Answer<Resource<GuestArray>> {
        let values = match values {
            wit::Numbers::Ints(v) => Numbers::Ints(v),
            wit::Numbers::Floats(v) => Numbers::Floats(v),
        };
        self.try_create(Spec::Array(values)).await
    }
    async fn open(&mut self, token: String) -> Answer<Resource<GuestArray>> {
        Ctx::open(self, token, Kind::Array).await
    }
    async fn token(&mut self, handle: Resource<GuestArray>) -> wasmtime::Result<String> {
        self.token_of(&handle)
    }
    async fn len(&mut self, handle: Resource<GuestArray>) -> Answer<u32> {
        Ok(self.count(&handle, |id| Request::ArrayLen { id }).await?.map(|n| n as u32))
    }
    async fn get(&mut self, handle: Resource<GuestArray>, index: u32) -> Answer<wit::Number> {
        Ok(self.request(&handle, |id| Request::ArrayGet { id, index }).await?.and_then(|reply| match reply {
            Reply::Number(n) => Ok(n.into()),
            other => Err(unexpected(other)),
        }))
    }
    async fn set(&mut self, handle: Resource<GuestArray>, index: u32, value: wit::Number) -> Answer<()> {
        self.unit(&handle, |id| Request::ArraySet { id, index, value: value.into() }).await
    }
    async fn get_all(&mut self, handle: Resource<GuestArray>) -> Answer<wit::Numbers> {
        Ok(self.request(&handle, |id| Request::ArrayGetAll { id }).await?.and_then(|reply| match reply {
            Reply::Numbers(Numbers::Ints(v)) => Ok(wit::Numbers::Ints(v)),
            Reply::Numbers(Numbers::Floats(v)) => Ok(wit::Numbers::Floats(v)),
            other => Err(unexpected(other)),
        }))
    }
    async fn get_lock(&mut self, handle: Resource<GuestArray>) -> Answer<Resource<GuestLock>> {
        self.lock_of(&handle).await
    }
    async fn drop(&mut self, handle: Resource<GuestArray>) -> wasmtime::Result<()> {
        self.drop_handle(handle).await
    }
}
