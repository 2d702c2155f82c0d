//! The rest of Python's `Pool`: `imap`, `imap_unordered`, `map_async`,
//! `starmap_async`, and `apply_async`'s `callback` and `error_callback`.
//!
//! # Where callbacks run
//!
//! Python runs a pool's callbacks on a thread of its own as each result
//! arrives. A guest has one thread, so here a callback runs on the guest's
//! own thread, **on its next call into the pool** after the result arrived
//! (`apply_async`, `map`, `imap`, `close`, `join`, ...), or, at the latest,
//! when that result's [`AsyncResult::get`] returns, or at `join` (which
//! runs every callback left) or `terminate`. A callback may itself use the
//! pool.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AsyncResult, Pool, TaskError, from_bytes, nanos, to_bytes, wit};
use crate::Target;

type Callback = Box<dyn FnOnce(Result<Vec<u8>, TaskError>)>;

/// One item's result with its index among the items.
type Arrived = (u32, Result<Vec<u8>, TaskError>);

/// An `apply_async` result whose callbacks have not run yet.
#[derive(Clone)]
pub(crate) struct Pending {
    result: Rc<wit::AsyncResult>,
    callback: Rc<RefCell<Option<Callback>>>,
}

impl Pending {
    /// Runs the callback (once) with the result, which must be ready.
    pub(crate) fn fire(&self) {
        let callback = self.callback.borrow_mut().take();
        if let Some(callback) = callback {
            callback(self.result.get(Some(0)).map_err(TaskError::from));
        }
    }

    fn done(&self) -> bool {
        self.callback.borrow().is_none()
    }
}

impl Pool {
    /// Runs the callbacks whose results have arrived (`all`: every one,
    /// waiting for its result, which `join` and `terminate` have settled).
    pub(crate) fn run_callbacks(&self, all: bool) {
        let pending = std::mem::take(&mut *self.callbacks.borrow_mut());
        let mut left = Vec::new();
        for entry in pending {
            if entry.done() {
                continue;
            }
            if all {
                entry.result.wait(None);
            }
            if entry.result.ready() {
                entry.fire();
            } else {
                left.push(entry);
            }
        }
        // Callbacks may have added new ones meanwhile.
        self.callbacks.borrow_mut().extend(left);
    }

    /// Python's `apply_async(func, args, callback=.., error_callback=..)`:
    /// `callback` gets the result, or `error_callback` the task's error.
    /// They run on this process's thread: see [the module](self) for when.
    ///
    /// ```no_run
    /// fn square(x: i64) -> i64 { x * x }
    /// mp::entries!(square);
    /// # fn main() {
    /// let pool = mp::Pool::new(2);
    /// pool.apply_async_with_callbacks(
    ///     mp::target!(square),
    ///     7,
    ///     |r| println!("got {r}"),
    ///     |e| eprintln!("failed: {e}"),
    /// );
    /// pool.close();
    /// pool.join().unwrap(); // prints "got 49" at the latest here
    /// # }
    /// ```
    pub fn apply_async_with_callbacks<A: Serialize, R: DeserializeOwned + 'static>(
        &self,
        target: Target<A, R>,
        args: A,
        callback: impl FnOnce(R) + 'static,
        error_callback: impl FnOnce(TaskError) + 'static,
    ) -> AsyncResult<R> {
        let mut result = self.apply_async(target, args);
        let Ok(inner) = &result.inner else {
            // Refused before it was submitted: the error goes to the callback now.
            if let Err(error) = &result.inner {
                error_callback(error.clone());
            }
            return result;
        };
        let call: Callback = Box::new(move |value| match value.and_then(|bytes| from_bytes::<R>(&bytes)) {
            Ok(value) => callback(value),
            Err(error) => error_callback(error),
        });
        let pending = Pending { result: inner.clone(), callback: Rc::new(RefCell::new(Some(call))) };
        self.callbacks.borrow_mut().push(pending.clone());
        result.pending = Some(pending);
        result
    }

    /// Python's `imap`: runs `target` on every item, one task per item;
    /// an iterator of the results in the items' order, each given as soon
    /// as it and those before it are done.
    pub fn imap<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        target: Target<A, R>,
        items: I,
    ) -> Imap<R> {
        self.imap_chunked(target, items, 1, true)
    }

    /// Python's `imap_unordered`: as [`imap`](Self::imap), but each result
    /// is given as soon as it arrives.
    pub fn imap_unordered<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        target: Target<A, R>,
        items: I,
    ) -> Imap<R> {
        self.imap_chunked(target, items, 1, false)
    }

    /// [`imap`](Self::imap) (`ordered`) or
    /// [`imap_unordered`](Self::imap_unordered) with `chunksize` items per task.
    pub fn imap_chunked<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        target: Target<A, R>,
        items: I,
        chunksize: u32,
        ordered: bool,
    ) -> Imap<R> {
        self.run_callbacks(false);
        let args = items.into_iter().map(|item| to_bytes(&item)).collect::<Result<Vec<_>, _>>();
        let source = args.map(|args| wit::MapResults::new(&self.inner, target.name, &args, Some(chunksize)));
        Imap { source: source.map_err(Some), ordered, next_index: 0, arrived: BTreeMap::new(), _result: PhantomData }
    }

    /// Python's `map_async`: submits `target` on every item and returns at
    /// once; [`MapResult::get`] gives the results in order, or the first error.
    pub fn map_async<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        target: Target<A, R>,
        items: I,
    ) -> MapResult<R> {
        MapResult {
            results: RefCell::new(self.imap_chunked(target, items, 1, false)),
            collected: RefCell::default(),
            complete: RefCell::new(false),
        }
    }

    /// Python's `starmap_async`: [`map_async`](Self::map_async) for entries
    /// of several arguments, each item a tuple of them.
    pub fn starmap_async<A: Serialize, R: DeserializeOwned, I: IntoIterator<Item = A>>(
        &self,
        target: Target<A, R>,
        items: I,
    ) -> MapResult<R> {
        self.map_async(target, items)
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: one
/// `Result` per item.
pub struct Imap<R> {
    /// The host's results; `Err`: refused, the error not yet given.
    source: Result<wit::MapResults, Option<TaskError>>,
    ordered: bool,
    next_index: u32,
    /// Results that came before their turn (ordered).
    arrived: BTreeMap<u32, Result<Vec<u8>, TaskError>>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Imap<R> {
    /// The next result to arrive with its item's index, waiting up to
    /// `timeout`: `Ok(None)` when all were given, [`TaskError::Timeout`].
    fn arrive(&mut self, timeout: Option<Duration>) -> Result<Option<Arrived>, TaskError> {
        let source = match &mut self.source {
            Ok(source) => source,
            Err(error) => return error.take().map_or(Ok(None), Err),
        };
        match source.next(timeout.map(nanos)) {
            Ok(Some(item)) => Ok(Some((item.index, item.outcome.map_err(TaskError::from)))),
            Ok(None) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// The next result, waiting at most `timeout` ([`TaskError::Timeout`]
    /// if it did not come in time: Python's `next(timeout)`).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, TaskError>> {
        self.next_within(Some(timeout))
    }

    fn next_within(&mut self, timeout: Option<Duration>) -> Option<Result<R, TaskError>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if self.ordered
                && let Some(result) = self.arrived.remove(&self.next_index)
            {
                self.next_index += 1;
                return Some(result.and_then(|bytes| from_bytes(&bytes)));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.arrive(left) {
                Ok(Some((_, result))) if !self.ordered => {
                    return Some(result.and_then(|bytes| from_bytes(&bytes)));
                }
                Ok(Some((index, result))) => {
                    self.arrived.insert(index, result);
                }
                Ok(None) => return None,
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

impl<R: DeserializeOwned> Iterator for Imap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Result<R, TaskError>> {
        self.next_within(None)
    }
}

/// The result of [`Pool::map_async`] and [`Pool::starmap_async`]:
/// Python's `MapResult`.
pub struct MapResult<R> {
    results: RefCell<Imap<R>>,
    /// Each item's result by index, as they arrived.
    collected: RefCell<BTreeMap<u32, Result<Vec<u8>, TaskError>>>,
    complete: RefCell<bool>,
}

impl<R: DeserializeOwned> MapResult<R> {
    /// Takes what has arrived, waiting up to `timeout` for the rest;
    /// whether all has.
    fn collect(&self, timeout: Option<Duration>) -> Result<bool, TaskError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut results = self.results.borrow_mut();
        while !*self.complete.borrow() {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match results.arrive(left) {
                Ok(Some((index, result))) => {
                    self.collected.borrow_mut().insert(index, result);
                }
                Ok(None) => *self.complete.borrow_mut() = true,
                Err(TaskError::Timeout) => return Ok(false),
                Err(error) => {
                    *self.complete.borrow_mut() = true;
                    self.collected.borrow_mut().insert(0, Err(error));
                }
            }
        }
        Ok(true)
    }

    /// Waits for every result: all of them in order, or the first error.
    pub fn get(&self) -> Result<Vec<R>, TaskError> {
        self.collect(None)?;
        self.results()
    }

    /// [`get`](Self::get), waiting at most `timeout`
    /// ([`TaskError::Timeout`] after).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, TaskError> {
        if !self.collect(Some(timeout))? {
            return Err(TaskError::Timeout);
        }
        self.results()
    }

    fn results(&self) -> Result<Vec<R>, TaskError> {
        let collected = self.collected.borrow();
        if let Some(Err(error)) = collected.values().find(|r| r.is_err()) {
            return Err(error.clone());
        }
        collected.values().map(|r| r.as_ref().map_err(Clone::clone).and_then(|bytes| from_bytes(bytes))).collect()
    }

    /// Waits until every result has arrived.
    pub fn wait(&self) {
        let _ = self.collect(None);
    }

    /// Waits until every result has arrived or `timeout` passes.
    pub fn wait_timeout(&self, timeout: Duration) {
        let _ = self.collect(Some(timeout));
    }

    /// Whether every result has arrived.
    pub fn ready(&self) -> bool {
        self.collect(Some(Duration::ZERO)).unwrap_or(true)
    }

    /// Whether every task succeeded; [`TaskError::StillRunning`] before all
    /// results arrived.
    pub fn successful(&self) -> Result<bool, TaskError> {
        if !self.ready() {
            return Err(TaskError::StillRunning);
        }
        Ok(self.collected.borrow().values().all(Result::is_ok))
    }
}
