//! The `map-results` resource of `mp:host/pool`: a guest's `imap`,
//! `imap_unordered`, `map_async` and `starmap_async`, results handed over
//! one by one as their chunks arrive.

use super::mp::host::pool::{self as wit, HostMapResults};
use super::{GuestMapResults, GuestPool};
use crate::codec::Batch;
use crate::instance::Ctx;
use crate::limits::Held;
use crate::pool::Chunk;
use crate::work::Outcome;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Resource;

/// What a guest's `map-results` has received and not yet handed over.
pub(crate) struct MapState {
    /// Each chunk's outcome, with the chunk's index and its count on what
    /// this process has the host hold, as it arrives.
    receiver: tokio::sync::mpsc::UnboundedReceiver<(usize, Outcome, Option<Held>)>,
    /// Each chunk's size and its first item's index.
    chunks: Vec<(usize, usize)>,
    /// Chunks received so far.
    received: usize,
    /// Results received and not yet given, and their count.
    ready: VecDeque<wit::ItemResult>,
    ready_held: Option<Held>,
    /// A refusal, for the first `next`.
    refused: Option<wit::TaskError>,
    items: u32,
}

impl MapState {
    /// The next result: `Ok(None)` once all were given.
    async fn next(&mut self, timeout: Option<Duration>) -> Result<Option<wit::ItemResult>, wit::TaskError> {
        if let Some(error) = self.refused.take() {
            return Err(error);
        }
        if let Some(item) = self.give() {
            return Ok(Some(item));
        }
        if self.received == self.chunks.len() {
            return Ok(None);
        }
        let arrived = match timeout {
            Some(timeout) => {
                tokio::time::timeout(timeout, self.receiver.recv()).await.map_err(|_| wit::TaskError::Timeout)?
            }
            None => self.receiver.recv().await,
        };
        // Every submitted chunk is answered exactly once.
        let Some((chunk, outcome, held)) = arrived else {
            return Ok(None);
        };
        self.received += 1;
        let (size, first) = self.chunks[chunk];
        let chunk = Chunk::new(outcome, size);
        self.ready_held = held;
        for i in 0..size {
            self.ready.push_back(wit::ItemResult {
                index: (first + i) as u32,
                outcome: chunk.item(i).map(<[u8]>::to_vec).map_err(|why| wit::TaskError::Failed(why.to_string())),
            });
        }
        Ok(self.give())
    }

    /// The next result received, if any; the count of its chunk's results
    /// ends with the last of them.
    fn give(&mut self) -> Option<wit::ItemResult> {
        let item = self.ready.pop_front();
        if self.ready.is_empty() {
            self.ready_held = None;
        }
        item
    }
}

impl HostMapResults for Ctx {
    async fn new(
        &mut self,
        pool: Resource<GuestPool>,
        entry: String,
        args: Vec<Vec<u8>>,
        chunksize: Option<u32>,
    ) -> wasmtime::Result<Resource<GuestMapResults>> {
        let core = self.table.get(&pool)?.core.clone();
        let items = args.len() as u32;
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let budget = core.results_budget();
        let deliver = move |index, outcome| {
            let (outcome, held) = budget.hold(outcome);
            let _ = sender.send((index, outcome, held));
        };
        let chunksize = chunksize.map_or(1, |n| n.max(1) as usize);
        let mut batch = Batch::with_capacity(args.len(), args.iter().map(Vec::len).sum());
        for arg in &args {
            batch.push(arg);
        }
        let (chunks, refused) = match core.submit_chunks(&entry, batch, chunksize, deliver) {
            Ok(sizes) => {
                let mut first = 0;
                let chunks = sizes
                    .into_iter()
                    .map(|size| {
                        first += size;
                        (size, first - size)
                    })
                    .collect();
                (chunks, None)
            }
            Err(error) => (Vec::new(), Some(error.into())),
        };
        let state =
            MapState { receiver, chunks, received: 0, ready: VecDeque::new(), ready_held: None, refused, items };
        Ok(self.table.push(GuestMapResults { state: Arc::new(tokio::sync::Mutex::new(state)) })?)
    }

    async fn next(
        &mut self,
        handle: Resource<GuestMapResults>,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<Option<wit::ItemResult>, wit::TaskError>> {
        let state = self.table.get(&handle)?.state.clone();
        let mut state = state.lock().await;
        Ok(state.next(timeout.map(Duration::from_nanos)).await)
    }

    async fn len(&mut self, handle: Resource<GuestMapResults>) -> wasmtime::Result<u32> {
        let state = self.table.get(&handle)?.state.clone();
        Ok(state.lock().await.items)
    }

    async fn drop(&mut self, handle: Resource<GuestMapResults>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}
