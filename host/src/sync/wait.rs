//! Waiting on many: Python's `multiprocessing.connection.wait` over process
//! sentinels and pipe connections.
//!
//! The wait ends as soon as one of them is ready (a process that has ended,
//! a connection with a message or end-of-file to read) and answers all that
//! are ready then, or none at the timeout. Processes are waited for in the
//! caller's host (their nodes are there), connections in the registry with
//! one [`Request::PollMany`]. Both waits run side by side and the first to
//! end decides: the other is dropped, which withdraws a poll on its way to
//! the registry (a native worker's channel to its root carries the
//! withdrawal), so a waiter wakes at once, whichever is ready first.

use super::{Error, Reply, Request};
use crate::process::Node;
use crate::runtime::HostInner;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits, as the process `caller`, until one of `processes` has ended or
/// one of the connections `ids` is readable, for at most `timeout`
/// nanoseconds (`None`: for ever); the indices of the ready ones,
/// processes first, connections after them.
pub(crate) async fn wait_many(
    host: Arc<HostInner>,
    caller: Arc<Node>,
    processes: Vec<Arc<Node>>,
    ids: Vec<u64>,
    timeout: Option<u64>,
) -> Result<Vec<u32>, Error> {
    if processes.iter().any(|p| p.pid().is_none()) {
        return Err(Error::Invalid("cannot wait for a process not started".into()));
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(Duration::from_nanos(t)));
    let ended = |processes: &[Arc<Node>]| -> Vec<u32> {
        processes.iter().enumerate().filter(|(_, p)| p.exitcode().is_some()).map(|(i, _)| i as u32).collect()
    };
    let offset = processes.len() as u32;
    let poll = |timeout: Option<u64>| {
        let (host, caller, ids) = (host.clone(), caller.clone(), ids.clone());
        async move {
            match host.sync.call(&caller, Request::PollMany { ids, timeout }).await? {
                Reply::Indices(ready) => Ok(ready),
                other => Err(Error::Invalid(format!("unexpected reply from the registry: {other:?}"))),
            }
        }
    };
    let all_ready = |connections: Vec<u32>| {
        let mut ready = ended(&processes);
        ready.extend(connections.into_iter().map(|i| i + offset));
        ready
    };
    let now = if ids.is_empty() { Vec::new() } else { poll(Some(0)).await? };
    if !now.is_empty() || !ended(&processes).is_empty() {
        return Ok(all_ready(now));
    }
    if processes.is_empty() {
        return Ok(all_ready(poll(timeout).await?));
    }
    let mut joins = tokio::task::JoinSet::new();
    for process in &processes {
        let process = process.clone();
        joins.spawn(async move { process.join_async(None).await });
    }
    let until_deadline = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            None => std::future::pending().await,
        }
    };
    if ids.is_empty() {
        tokio::select! {
            _ = joins.join_next() => {}
            _ = until_deadline => {}
        }
        return Ok(all_ready(Vec::new()));
    }
    // A poll dropped midway takes nothing.
    let connections = tokio::select! {
        _ = joins.join_next() => Vec::new(),
        ready = poll(timeout) => ready?,
    };
    let connections = if connections.is_empty() { poll(Some(0)).await? } else { connections };
    Ok(all_ready(connections))
}
