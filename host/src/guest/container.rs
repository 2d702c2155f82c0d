//! A `Manager`'s containers as guests use them: the `container` resource
//! of the `mp:host/sync` interface (Python's `Manager().dict()`, `.list()`
//! and `.Namespace()`), each operation one request to the broker, keys and
//! values as bytes (see [`crate::sync::container`]).

use super::mp::host::sync::{self as wit, HostContainer};
use super::sync::{Answer, GuestContainer, unexpected};
use crate::instance::Ctx;
use crate::sync::container::{Op, pack, unpack};
use crate::sync::{Kind, Payload, Reply, Request, Spec};
use wasmtime::component::Resource;

impl Ctx {
    /// A container operation with bytes: `Some` value, or `None` for none.
    async fn container(&mut self, handle: &Resource<GuestContainer>, op: Op, data: Vec<u8>) -> Answer<Option<Vec<u8>>> {
        Ok(self.request(handle, |id| Request::Container { id, op, data: Payload(data) }).await?.and_then(|reply| {
            match reply {
                Reply::Bytes(bytes) => Ok(Some(bytes.0)),
                Reply::Unit => Ok(None),
                other => Err(unexpected(other)),
            }
        }))
    }

    /// A container operation whose answer is packed byte strings.
    async fn container_parts(&mut self, handle: &Resource<GuestContainer>, op: Op) -> Answer<Vec<Vec<u8>>> {
        Ok(match self.container(handle, op, Vec::new()).await? {
            Ok(Some(packed)) => unpack(&packed).map_err(Into::into),
            Ok(None) => Ok(Vec::new()),
            Err(error) => Err(error),
        })
    }
}

fn container_kind(kind: wit::ContainerKind) -> Kind {
    match kind {
        wit::ContainerKind::Dict => Kind::Dict,
        wit::ContainerKind::List => Kind::List,
        wit::ContainerKind::Namespace => Kind::Namespace,
    }
}

impl HostContainer for Ctx {
    async fn new(&mut self, kind: wit::ContainerKind) -> wasmtime::Result<Resource<GuestContainer>> {
        self.create(Spec::Container(container_kind(kind))).await
    }
    async fn create(&mut self, kind: wit::ContainerKind) -> Answer<Resource<GuestContainer>> {
        self.try_create(Spec::Container(container_kind(kind))).await
    }
    async fn open(&mut self, token: String, kind: wit::ContainerKind) -> Answer<Resource<GuestContainer>> {
        Ctx::open(self, token, container_kind(kind)).await
    }
    async fn token(&mut self, handle: Resource<GuestContainer>) -> wasmtime::Result<String> {
        self.token_of(&handle)
    }
    async fn get(&mut self, handle: Resource<GuestContainer>, key: Vec<u8>) -> Answer<Option<Vec<u8>>> {
        self.container(&handle, Op::Get, key).await
    }
    async fn set(&mut self, handle: Resource<GuestContainer>, key: Vec<u8>, value: Vec<u8>) -> Answer<()> {
        let data = pack([key.as_slice(), value.as_slice()]);
        Ok(self.container(&handle, Op::Set, data).await?.map(|_| ()))
    }
    async fn remove(&mut self, handle: Resource<GuestContainer>, key: Vec<u8>) -> Answer<Option<Vec<u8>>> {
        self.container(&handle, Op::Remove, key).await
    }
    async fn contains_key(&mut self, handle: Resource<GuestContainer>, key: Vec<u8>) -> Answer<bool> {
        self.flag(&handle, |id| Request::Container { id, op: Op::Contains, data: Payload(key) }).await
    }
    async fn len(&mut self, handle: Resource<GuestContainer>) -> Answer<u64> {
        self.count(&handle, |id| Request::Container { id, op: Op::Len, data: Payload::default() }).await
    }
    async fn items(&mut self, handle: Resource<GuestContainer>) -> Answer<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.container_parts(&handle, Op::Items).await?.map(|parts| {
            let mut parts = parts.into_iter();
            let mut items = Vec::with_capacity(parts.len() / 2);
            while let (Some(key), Some(value)) = (parts.next(), parts.next()) {
                items.push((key, value));
            }
            items
        }))
    }
    async fn begin_update(&mut self, handle: Resource<GuestContainer>, key: Vec<u8>) -> Answer<Option<Vec<u8>>> {
        self.container(&handle, Op::Begin, key).await
    }
    async fn commit_update(&mut self, handle: Resource<GuestContainer>, key: Vec<u8>, value: Vec<u8>) -> Answer<()> {
        let data = pack([key.as_slice(), value.as_slice()]);
        Ok(self.container(&handle, Op::Commit, data).await?.map(|_| ()))
    }
    async fn abort_update(&mut self, handle: Resource<GuestContainer>) -> Answer<()> {
        Ok(self.container(&handle, Op::Abort, Vec::new()).await?.map(|_| ()))
    }
    async fn push(&mut self, handle: Resource<GuestContainer>, value: Vec<u8>) -> Answer<()> {
        Ok(self.container(&handle, Op::Push, value).await?.map(|_| ()))
    }
    async fn get_at(&mut self, handle: Resource<GuestContainer>, index: u64) -> Answer<Vec<u8>> {
        self.bytes(&handle, |id| Request::Container { id, op: Op::GetAt(index), data: Payload::default() }).await
    }
    async fn set_at(&mut self, handle: Resource<GuestContainer>, index: u64, value: Vec<u8>) -> Answer<()> {
        Ok(self.container(&handle, Op::SetAt(index), value).await?.map(|_| ()))
    }
    async fn values(&mut self, handle: Resource<GuestContainer>) -> Answer<Vec<Vec<u8>>> {
        self.container_parts(&handle, Op::Values).await
    }
    async fn drop(&mut self, handle: Resource<GuestContainer>) -> wasmtime::Result<()> {
        self.drop_handle(handle).await
    }
}
