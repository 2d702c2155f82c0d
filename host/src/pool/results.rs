//! What a pool's tasks give back: a chunk's results item by item
//! ([`Chunk`]), what a map's results that came and are not yet taken may
//! hold ([`ResultsBudget`]), the slot one task's result is filled into
//! ([`ResultSlot`]), and the typed handles an embedder reads them through
//! ([`AsyncResult`], [`Imap`]).

#[cfg(doc)]
use super::Pool;
use super::{TaskError, decode};
use crate::limits::{Held, Holds, format_size};
use crate::set_once::SetOnce;
use crate::work::{Outcome, Reply};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// A chunk's outcome, item by item, and its count on the bytes its
/// reader has the host hold, given back as it is dropped.
pub(crate) struct Chunk {
    outcome: Outcome,
    _held: Option<Held>,
}

impl Chunk {
    /// The outcome of a chunk of `size` items; a worker that returned
    /// another number of results failed them all.
    pub(crate) fn new(outcome: Outcome, size: usize) -> Chunk {
        Chunk::held(outcome, size, None)
    }

    /// [`new`](Self::new), keeping `held` until it is taken or dropped.
    pub(crate) fn held(outcome: Outcome, size: usize, held: Option<Held>) -> Chunk {
        let outcome = match outcome {
            Outcome::Done(results) if results.len() != size => {
                Outcome::Failed(format!("the worker returned {} results for {size} items", results.len()))
            }
            other => other,
        };
        Chunk { outcome, _held: held }
    }

    /// Its reader takes it (reads its results one by one): its bytes no
    /// longer wait in the host.
    fn taken(mut self) -> Chunk {
        self._held = None;
        self
    }

    /// Item `index`'s result: its bytes, or why it failed.
    pub(crate) fn item(&self, index: usize) -> Result<&[u8], &str> {
        match &self.outcome {
            Outcome::Done(results) => results.get(index),
            Outcome::Failed(why) => Err(why),
        }
    }
}

/// Where the results of one map that came and are not yet taken count
/// (a map in input order keeps those that came while an earlier one still
/// runs): a guest's on its [`Holds`], with its tasks' arguments, against
/// its memory cap, until each result is given to it; the embedder's
/// (`host map`), whose memory is its own, on the map's own count, against
/// its workers' memory cap (what one of them could hold), until the chunk
/// is being read (an [`Imap`] counts what it has not read and what waits
/// for an earlier chunk).
#[derive(Clone)]
pub(crate) struct ResultsBudget {
    holds: Holds,
    limit: u64,
    guest: bool,
}

impl ResultsBudget {
    /// The budget of a guest's maps, on its `holds` up to `limit`.
    pub(super) fn guest(holds: &Holds, limit: u64) -> ResultsBudget {
        ResultsBudget { holds: holds.clone(), limit, guest: true }
    }

    /// The budget of one map of the embedder, up to `limit`.
    pub(super) fn embedder(limit: u64) -> ResultsBudget {
        ResultsBudget { holds: Holds::default(), limit, guest: false }
    }

    /// A chunk's outcome as it comes, counted until the [`Held`] is dropped
    /// (once its results are taken); past the bound, a failure of the chunk
    /// that names the bound, and nothing held.
    pub(crate) fn hold(&self, outcome: Outcome) -> (Outcome, Option<Held>) {
        let Outcome::Done(results) = &outcome else { return (outcome, None) };
        let bytes = results.results.data.len()
            + results.results.ends.len() * 4
            + results.failed.iter().map(|(_, why)| why.len() + 8).sum::<usize>();
        match self.holds.hold_or(bytes as u64, self.limit, |total| self.refusal(total)) {
            Ok(held) => (outcome, Some(held)),
            Err(why) => (Outcome::Failed(why), None),
        }
    }

    fn refusal(&self, total: u64) -> String {
        let limit = format_size(self.limit);
        if self.guest {
            format!(
                "its results would take what this process has the host hold (results that came and are not yet taken, arguments of tasks not yet answered and of children not yet started) to {total} bytes, past its limit of {limit} (--max-memory): take results as they complete (imap_unordered) or in smaller chunks"
            )
        } else {
            format!(
                "its results would take what this map has the host hold (results that came and wait for an earlier one, in input order) to {total} bytes, past the limit of {limit} for one map (its workers' --max-memory): take results as they complete (--unordered) or in smaller chunks (--chunksize)"
            )
        }
    }
}

/// The result of a one-input task's outcome.
pub(super) fn one_result(outcome: Outcome) -> Result<Vec<u8>, TaskError> {
    Chunk::new(outcome, 1).item(0).map(<[u8]>::to_vec).map_err(|why| TaskError::Failed(why.to_string()))
}

/// The result of one task, filled in once.
#[derive(Default)]
pub(crate) struct ResultSlot {
    value: SetOnce<Result<Vec<u8>, TaskError>>,
}

impl ResultSlot {
    pub(crate) fn set(&self, value: Result<Vec<u8>, TaskError>) {
        self.value.set(value);
    }

    /// A slot filled by the outcome of a one-input task.
    pub(crate) fn reply(self: &Arc<ResultSlot>) -> Reply {
        let slot = self.clone();
        Reply::new(move |outcome| slot.set(one_result(outcome)))
    }

    pub(crate) fn get(&self) -> Option<Result<Vec<u8>, TaskError>> {
        self.value.get()
    }

    /// Blocks until filled or `timeout` passes; whether it is filled.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> bool {
        self.value.wait(timeout)
    }

    /// [`wait`](Self::wait), without blocking a thread.
    pub(crate) async fn wait_async(&self, timeout: Option<Duration>) -> bool {
        self.value.wait_async(timeout).await
    }
}

/// The result of [`Pool::apply_async`]: Python's `AsyncResult`.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// # let host = host::Host::new()?;
/// # let program = host.load("target/guests/pool-square.wasm")?;
/// # let pool = host::Pool::new(&program, 2)?;
/// use std::time::Duration;
/// let result = pool.apply_async::<_, i64>("square", &3);
/// result.wait(Some(Duration::from_secs(1)));
/// if result.ready() && result.successful() == Some(true) {
///     println!("{}", result.get(None)?);
/// }
/// # Ok(()) }
/// ```
pub struct AsyncResult<R> {
    pub(super) slot: Arc<ResultSlot>,
    pub(super) _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Waits for the result (up to `timeout`, if given); [`TaskError::Timeout`]
    /// if it is not ready by then.
    pub fn get(&self, timeout: Option<Duration>) -> Result<R, TaskError> {
        if !self.slot.wait(timeout) {
            return Err(TaskError::Timeout);
        }
        decode(&self.slot.get().expect("a ready result")?)
    }

    /// Waits until the result is ready or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) {
        self.slot.wait(timeout);
    }

    /// Whether the task has finished (successfully or not).
    pub fn ready(&self) -> bool {
        self.slot.get().is_some()
    }

    /// Whether the task succeeded; `None` while it is not ready (where
    /// Python raises `ValueError`).
    pub fn successful(&self) -> Option<bool> {
        self.slot.get().map(|value| value.is_ok())
    }
}

/// The results of [`Pool::imap`] and [`Pool::imap_unordered`], one per item.
pub struct Imap<R> {
    pub(super) receiver: mpsc::Receiver<(usize, Outcome, Option<Held>)>,
    pub(super) sizes: Vec<usize>,
    pub(super) ordered: bool,
    pub(super) next_chunk: usize,
    pub(super) received: usize,
    pub(super) arrived: BTreeMap<usize, Chunk>,
    /// The chunks being read, and the next item of the first.
    pub(super) current: VecDeque<(Chunk, usize, usize)>,
    pub(super) decode: fn(&[u8]) -> Result<R, TaskError>,
}

impl<R> Iterator for Imap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Result<R, TaskError>> {
        loop {
            if let Some((chunk, next, size)) = self.current.front_mut() {
                if *next < *size {
                    let item = chunk.item(*next);
                    *next += 1;
                    return Some(match item {
                        Ok(bytes) => (self.decode)(bytes),
                        Err(why) => Err(TaskError::Failed(why.to_string())),
                    });
                }
                self.current.pop_front();
                continue;
            }
            if self.ordered {
                if let Some(chunk) = self.arrived.remove(&self.next_chunk) {
                    self.current.push_back((chunk.taken(), 0, self.sizes[self.next_chunk]));
                    self.next_chunk += 1;
                    continue;
                }
                if self.next_chunk == self.sizes.len() {
                    return None;
                }
            } else if self.received == self.sizes.len() {
                return None;
            }
            // Every submitted chunk is answered exactly once (see `Reply`).
            let (index, outcome, held) = self.receiver.recv().ok()?;
            self.received += 1;
            let chunk = Chunk::held(outcome, self.sizes[index], held);
            if self.ordered {
                self.arrived.insert(index, chunk);
            } else {
                self.current.push_back((chunk.taken(), 0, self.sizes[index]));
            }
        }
    }
}
