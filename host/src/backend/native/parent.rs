//! A worker's parent, for Python's `parent_process()`.
//!
//! A worker runs one process of the run; the process that created it is
//! another OS process (a worker, or the forking worker for a forked child),
//! not in this worker's tree. The worker knows its pid and name from its
//! start message (or its fork); the first `parent_process()` makes a
//! [`Node`] standing for it, and watches its end through a pidfd (readable
//! once the process has exited: `waitid` is not allowed on a process that
//! is not our child). A top-level worker, whose parent is the root host,
//! has no parent process.

use super::open_pidfd;
use crate::backend::Control;
use crate::exit::Signal;
use crate::process::{Ended, Node};
use crate::runtime::HostInner;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// What a worker knows of its parent.
pub(super) struct ParentLink {
    /// Its pid and name; `None`: the root host (the worker is top-level).
    parent: Option<(u32, String)>,
    /// The parent's node, made and watched on first use.
    node: Option<Arc<Node>>,
}

impl ParentLink {
    pub(super) fn new(parent: Option<(u32, String)>) -> ParentLink {
        ParentLink { parent, node: None }
    }

    /// The parent, while it runs; `None` for a top-level worker or once the
    /// parent has ended.
    pub(super) fn node(&mut self, host: &Arc<HostInner>) -> Option<Arc<Node>> {
        let (pid, name) = self.parent.as_ref()?;
        let node = self.node.get_or_insert_with(|| watch(host, *pid, name.clone())).clone();
        node.is_alive().then_some(node)
    }

    /// In a forked child: the parent is now the process that forked it
    /// (what the copy knew of its own parent is not ours).
    pub(super) fn forked(&mut self, pid: u32, name: String) {
        *self = ParentLink::new(Some((pid, name)));
    }
}

/// A node for the parent `pid`, marked ended when it exits.
fn watch(host: &Arc<HostInner>, pid: u32, name: String) -> Arc<Node> {
    let node = Node::outside(pid, name, Arc::new(NotOurs));
    match open_pidfd(pid) {
        // Our parent is still `pid` after the pidfd was opened: then the
        // pidfd is our parent's (had it ended, we would have been adopted
        // and the pid could be another process's).
        Ok(pidfd) if nix::unistd::getppid().as_raw() as u32 == pid => {
            let watched = node.clone();
            host.runtime.spawn(async move {
                exited(pidfd).await;
                watched.observe_end(gone());
            });
        }
        _ => node.observe_end(gone()),
    }
    node
}

/// How this worker records its parent's end: only that it ended (its exit
/// code is its own parent's to know).
fn gone() -> Ended {
    Ended::code(0)
}

/// Waits until the process behind `pidfd` has exited; returns at once if
/// the pidfd cannot be watched.
async fn exited(pidfd: OwnedFd) {
    // SAFETY: the pidfd is owned by the AsyncFd, and closed only with it.
    let Ok(fd) = (unsafe { tokio::io::unix::AsyncFd::register(pidfd) }) else {
        return;
    };
    // A pidfd becomes readable when its process exits, and stays so.
    let _ = fd.readable().await;
}

/// The parent is not this process's to signal (the guest bindings refuse
/// before anything reaches here).
struct NotOurs;

impl Control for NotOurs {
    fn signal(&self, _signal: Signal) {}
}
