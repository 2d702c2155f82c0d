//! The `mp:host/pool` interface, as the host implements it for guests.
//!
//! A guest's pool is the same [`PoolCore`] the embedding API uses; its
//! workers are children of the guest's process (so a daemon cannot make
//! one, as Python's "daemonic processes are not allowed to have children")
//! and inherit its grants, limits and output. Every wait is asynchronous, so
//! a guest blocked in `get`, `map` or `join` can itself be terminated at once.

use super::mp::host::pool::{self as wit, Host, HostAsyncResult, HostPool};
use super::{GuestAsyncResult, GuestPool};
use crate::codec::Batch;
use crate::instance::Ctx;
use crate::pool::{Chunk, Job, PoolCore, ResultSlot, Settings, TaskError};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Resource;

impl From<TaskError> for wit::TaskError {
    fn from(error: TaskError) -> wit::TaskError {
        match error {
            TaskError::Failed(why) => wit::TaskError::Failed(why),
            TaskError::Timeout => wit::TaskError::Timeout,
            TaskError::NotRunning => wit::TaskError::NotRunning,
            TaskError::StillRunning => wit::TaskError::StillRunning,
            TaskError::UnknownEntry(name) => wit::TaskError::UnknownEntry(name),
            TaskError::Spawn(why) => wit::TaskError::SpawnFailed(why),
            TaskError::Serde(why) => wit::TaskError::Failed(why),
            full @ TaskError::QueueFull(_) => wit::TaskError::Failed(full.to_string()),
        }
    }
}

type Answer<T> = wasmtime::Result<Result<T, wit::TaskError>>;

impl Ctx {
    fn pool(&self, handle: &Resource<GuestPool>) -> wasmtime::Result<Arc<PoolCore>> {
        Ok(self.table.get(handle)?.core.clone())
    }

    fn result_slot(&self, handle: &Resource<GuestAsyncResult>) -> wasmtime::Result<Arc<ResultSlot>> {
        Ok(self.table.get(handle)?.slot.clone())
    }
}

impl HostPool for Ctx {
    async fn create(
        &mut self,
        processes: Option<u32>,
        maxtasksperchild: Option<u32>,
        initializer: Option<(String, Vec<u8>)>,
    ) -> Answer<Resource<GuestPool>> {
        let settings = Settings {
            processes: processes.map_or_else(crate::runtime::cpu_count, |n| n as usize),
            max_tasks: maxtasksperchild,
            initializer,
            task_timeout: None,
            max_held: self.launch.limits.max_memory.unwrap_or(self.host.max_memory),
        };
        if let Err(error) = self.may_spawn() {
            return Ok(Err(crate::pool::TaskError::from(error).into()));
        }
        let launch = self.launch.child(String::new(), Vec::new());
        match PoolCore::start(&self.host, &self.node, launch, settings).await {
            Ok(core) => Ok(Ok(self.table.push(GuestPool { core })?)),
            Err(error) => Ok(Err(error.into())),
        }
    }

    async fn apply_async(
        &mut self,
        handle: Resource<GuestPool>,
        entry: String,
        args: Vec<u8>,
    ) -> wasmtime::Result<Resource<GuestAsyncResult>> {
        let core = self.pool(&handle)?;
        let slot = Arc::new(ResultSlot::default());
        let job = Job { entry, inputs: Batch::one(args), many: false, reply: slot.reply() };
        match core.submit(job) {
            Ok(()) => {}
            // `apply_async` has no error to return: the guest traps, as
            // for a child it may not create.
            Err(full @ TaskError::QueueFull(_)) => wasmtime::bail!("{full}"),
            Err(error) => slot.set(Err(error)),
        }
        Ok(self.table.push(GuestAsyncResult { slot })?)
    }

    async fn map(
        &mut self,
        handle: Resource<GuestPool>,
        entry: String,
        args: Vec<Vec<u8>>,
        chunksize: Option<u32>,
    ) -> Answer<Vec<Vec<u8>>> {
        let core = self.pool(&handle)?;
        let chunksize = chunksize.map_or_else(|| core.default_chunksize(args.len()), |n| n as usize);
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let deliver = move |index, outcome| {
            let _ = sender.send((index, outcome));
        };
        let mut batch = Batch::with_capacity(args.len(), args.iter().map(Vec::len).sum());
        for item in &args {
            batch.push(item);
        }
        drop(args);
        let sizes = match core.submit_chunks(&entry, batch, chunksize, deliver) {
            Ok(sizes) => sizes,
            Err(error) => return Ok(Err(error.into())),
        };
        let mut chunks: Vec<Option<Chunk>> = (0..sizes.len()).map(|_| None).collect();
        for _ in 0..sizes.len() {
            // Every submitted chunk is answered exactly once.
            let Some((index, outcome)) = receiver.recv().await else { break };
            chunks[index] = Some(Chunk::new(outcome, sizes[index]));
        }
        let mut results = Vec::with_capacity(sizes.iter().sum());
        for (chunk, size) in chunks.iter().zip(&sizes) {
            let Some(chunk) = chunk else {
                return Ok(Err(wit::TaskError::Failed("a chunk of the map was never answered".into())));
            };
            for index in 0..*size {
                match chunk.item(index) {
                    Ok(bytes) => results.push(bytes.to_vec()),
                    Err(why) => return Ok(Err(wit::TaskError::Failed(why.to_string()))),
                }
            }
        }
        Ok(Ok(results))
    }

    async fn close(&mut self, handle: Resource<GuestPool>) -> wasmtime::Result<()> {
        self.pool(&handle)?.close();
        Ok(())
    }

    async fn join(&mut self, handle: Resource<GuestPool>) -> Answer<()> {
        let core = self.pool(&handle)?;
        if let Err(error) = core.check_joinable() {
            return Ok(Err(error.into()));
        }
        core.wait_workers().await;
        Ok(Ok(()))
    }

    async fn terminate(&mut self, handle: Resource<GuestPool>) -> wasmtime::Result<()> {
        let core = self.pool(&handle)?;
        core.terminate_now();
        core.wait_workers().await;
        Ok(())
    }

    async fn drop(&mut self, handle: Resource<GuestPool>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl HostAsyncResult for Ctx {
    async fn get(&mut self, handle: Resource<GuestAsyncResult>, timeout: Option<u64>) -> Answer<Vec<u8>> {
        let slot = self.result_slot(&handle)?;
        if !slot.wait_async(timeout.map(Duration::from_nanos)).await {
            return Ok(Err(wit::TaskError::Timeout));
        }
        Ok(slot.get().expect("a ready result").map_err(Into::into))
    }

    async fn wait(&mut self, handle: Resource<GuestAsyncResult>, timeout: Option<u64>) -> wasmtime::Result<()> {
        self.result_slot(&handle)?.wait_async(timeout.map(Duration::from_nanos)).await;
        Ok(())
    }

    async fn ready(&mut self, handle: Resource<GuestAsyncResult>) -> wasmtime::Result<bool> {
        Ok(self.result_slot(&handle)?.get().is_some())
    }

    async fn successful(&mut self, handle: Resource<GuestAsyncResult>) -> Answer<bool> {
        Ok(match self.result_slot(&handle)?.get() {
            Some(value) => Ok(value.is_ok()),
            None => Err(wit::TaskError::StillRunning),
        })
    }

    async fn drop(&mut self, handle: Resource<GuestAsyncResult>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl Host for Ctx {}
