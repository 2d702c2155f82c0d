//! The `mp:host/process` interface, as the host implements it for guests.
//!
//! A guest sees processes as WIT resources: each is an [`Arc<Node>`] in its
//! store's resource table, so it can only reach the children it created (and
//! itself, through `current-process`). Every operation maps onto the same
//! [`Node`] methods the embedding API uses; waiting is asynchronous, so a
//! guest blocked in `join` can itself be terminated at once.

use super::GuestProcess;
use super::mp::host::process::{self as wit, Host, HostProcess};
use crate::backend::Forked;
use crate::error::Error;
use crate::exit::Signal;
use crate::instance::Ctx;
use crate::sync::Request;
use std::time::Duration;
use wasmtime::component::Resource;

impl From<Error> for wit::Error {
    fn from(error: Error) -> wit::Error {
        match error {
            Error::AlreadyStarted => wit::Error::AlreadyStarted,
            Error::NotStarted => wit::Error::NotStarted,
            Error::JoinSelf => wit::Error::JoinSelf,
            Error::StillRunning => wit::Error::StillRunning,
            Error::Closed => wit::Error::Closed,
            Error::DaemonChildren => wit::Error::DaemonChildren,
            Error::UnknownEntry(name) => wit::Error::UnknownEntry(name),
            Error::ProcessLimit { limit } => wit::Error::ProcessLimit(limit),
            Error::Spawn(why) => wit::Error::SpawnFailed(why),
            Error::Unsupported(why) => wit::Error::Unsupported(why),
        }
    }
}

type Answer<T> = wasmtime::Result<Result<T, wit::Error>>;

/// The longest name a guest may give a process: names are held by the host
/// for as long as the process is, and start every labelled output line.
const MAX_NAME: usize = 4096;

/// `name` with its control characters escaped (`\n`): a name starts the
/// host's lines about its process (the summary, every labelled line), and
/// one a guest gives must not end them early and forge others.
fn printable(name: String) -> String {
    if !name.chars().any(char::is_control) {
        return name;
    }
    name.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

impl Ctx {
    fn process(&self, handle: &Resource<GuestProcess>) -> wasmtime::Result<&GuestProcess> {
        Ok(self.table.get(handle)?)
    }

    /// The process, if the caller may control it (not its parent).
    fn controlled(&self, handle: &Resource<GuestProcess>) -> wasmtime::Result<Result<&GuestProcess, wit::Error>> {
        let process = self.process(handle)?;
        Ok(if process.is_parent { Err(wit::Error::NotChild) } else { Ok(process) })
    }

    /// Signals a process; signalling itself never returns, so that the
    /// signal ends it before it runs on.
    async fn signal(&mut self, handle: Resource<GuestProcess>, signal: Signal) -> Answer<()> {
        let process = match self.controlled(&handle)? {
            Ok(process) => process,
            Err(error) => return Ok(Err(error)),
        };
        let is_self = process.is_self;
        if is_self {
            let _ = self.node.signal(signal);
            std::future::pending::<()>().await;
        }
        Ok(process.node.signal(signal).map_err(Into::into))
    }
}

impl HostProcess for Ctx {
    async fn new(&mut self, entry: String, args: Vec<u8>) -> wasmtime::Result<Resource<GuestProcess>> {
        // An entry is named as a process is (its name, unchecked until
        // start, is held as long as the child).
        if entry.len() > MAX_NAME {
            wasmtime::bail!(
                "cannot create a process: an entry name of {} bytes is past the {MAX_NAME} allowed",
                entry.len()
            );
        }
        // The arguments of children not yet started are the process's to
        // hold, as its memory is: no more than its memory cap in all.
        let limit = self.launch.limits.max_memory.unwrap_or(self.host.max_memory);
        let launch = self.launch.child(entry, args);
        let node = match self.node.create_child_within(launch, limit) {
            Ok(node) => node,
            Err(why) => wasmtime::bail!("cannot create a process: {why}"),
        };
        Ok(self.table.push(GuestProcess { node, is_self: false, is_parent: false })?)
    }

    async fn name(&mut self, handle: Resource<GuestProcess>) -> wasmtime::Result<String> {
        Ok(self.process(&handle)?.node.name())
    }

    async fn set_name(&mut self, handle: Resource<GuestProcess>, name: String) -> Answer<()> {
        let name = printable(name);
        if name.len() > MAX_NAME {
            wasmtime::bail!("cannot name a process: a name of {} bytes is past the {MAX_NAME} allowed", name.len());
        }
        match self.controlled(&handle)? {
            Ok(process) => process.node.set_name(name),
            Err(error) => return Ok(Err(error)),
        }
        Ok(Ok(()))
    }

    async fn daemon(&mut self, handle: Resource<GuestProcess>) -> wasmtime::Result<bool> {
        Ok(self.process(&handle)?.node.is_daemon())
    }

    async fn set_daemon(&mut self, handle: Resource<GuestProcess>, daemon: bool) -> Answer<()> {
        let process = match self.controlled(&handle)? {
            Ok(process) => process,
            Err(error) => return Ok(Err(error)),
        };
        if process.is_self {
            return Ok(Err(wit::Error::AlreadyStarted));
        }
        Ok(process.node.set_daemon(daemon).map_err(Into::into))
    }

    async fn start(&mut self, handle: Resource<GuestProcess>) -> Answer<()> {
        let process = match self.controlled(&handle)? {
            Ok(process) => process,
            Err(error) => return Ok(Err(error)),
        };
        if process.is_self {
            return Ok(Err(wit::Error::AlreadyStarted));
        }
        if self.node.is_daemon() {
            return Ok(Err(wit::Error::DaemonChildren));
        }
        if let Err(error) = self.may_spawn() {
            return Ok(Err(error.into()));
        }
        let child = process.node.clone();
        Ok(self.host.sync.start_child(&self.host, &self.node, &child).await.map_err(Into::into))
    }

    async fn join(&mut self, handle: Resource<GuestProcess>, timeout: Option<u64>) -> Answer<()> {
        let process = self.process(&handle)?;
        if process.is_self {
            return Ok(Err(wit::Error::JoinSelf));
        }
        let node = process.node.clone();
        if process.is_parent && node.exitcode().is_some() {
            // Its end is all a child may see of its parent.
            return Ok(Ok(()));
        }
        let timeout = timeout.map(Duration::from_nanos);
        Ok(node.join_async(timeout).await.map(|_| ()).map_err(Into::into))
    }

    async fn is_alive(&mut self, handle: Resource<GuestProcess>) -> wasmtime::Result<bool> {
        let process = self.process(&handle)?;
        Ok(process.is_self || process.node.is_alive())
    }

    async fn exitcode(&mut self, handle: Resource<GuestProcess>) -> wasmtime::Result<Option<i32>> {
        let process = self.process(&handle)?;
        if process.is_parent {
            // The parent's exit code is its own parent's to know.
            return Ok(None);
        }
        Ok(process.node.exitcode().map(|c| c.code()))
    }

    async fn pid(&mut self, handle: Resource<GuestProcess>) -> wasmtime::Result<Option<u32>> {
        Ok(self.process(&handle)?.node.pid())
    }

    async fn terminate(&mut self, handle: Resource<GuestProcess>) -> Answer<()> {
        self.signal(handle, Signal::Term).await
    }

    async fn kill(&mut self, handle: Resource<GuestProcess>) -> Answer<()> {
        self.signal(handle, Signal::Kill).await
    }

    async fn close(&mut self, handle: Resource<GuestProcess>) -> Answer<()> {
        let process = match self.controlled(&handle)? {
            Ok(process) => process,
            Err(error) => return Ok(Err(error)),
        };
        if process.is_self {
            return Ok(Err(wit::Error::StillRunning));
        }
        Ok(process.node.close().map_err(Into::into))
    }

    async fn drop(&mut self, handle: Resource<GuestProcess>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl Host for Ctx {
    async fn current_process(&mut self) -> wasmtime::Result<Resource<GuestProcess>> {
        let node = self.node.clone();
        Ok(self.table.push(GuestProcess { node, is_self: true, is_parent: false })?)
    }

    async fn getpid(&mut self) -> wasmtime::Result<u32> {
        Ok(self.node.pid().unwrap_or_default())
    }

    async fn getppid(&mut self) -> wasmtime::Result<u32> {
        Ok(self.host.backend.ppid(&self.node))
    }

    async fn cpu_count(&mut self) -> wasmtime::Result<u32> {
        Ok(crate::runtime::cpu_count() as u32)
    }

    async fn fork(&mut self) -> Answer<wit::Forked> {
        // The daemon rule first, on every backend: a daemon has no children.
        if self.node.is_daemon() {
            return Ok(Err(wit::Error::DaemonChildren));
        }
        if let Err(error) = self.may_spawn() {
            return Ok(Err(error.into()));
        }
        // The child's copies of its parent's handles name open objects: it
        // holds them as its parent does (handed as at a spawn, by ticket).
        let ticket = self.host.sync.may_hold().then(crate::sync::random_u64);
        if let Some(ticket) = ticket {
            let _ = self.host.sync.call(&self.node, Request::HandForked { ticket }).await;
        }
        self.end_output_lines();
        let forked = self.host.backend.fork(&self.host, &self.node, &self.launch);
        match (forked, ticket) {
            (Ok(Forked::Child(launch)), ticket) => {
                self.become_forked(*launch);
                if let Some(ticket) = ticket {
                    let _ = self.host.sync.call(&self.node, Request::ClaimForked { ticket }).await;
                }
                Ok(Ok(wit::Forked::Child))
            }
            (Ok(Forked::Parent(node)), ticket) => {
                if let Some(ticket) = ticket {
                    // What a child that ended at once never claimed is dropped.
                    let (host, child) = (self.host.clone(), node.clone());
                    let parent = self.node.clone();
                    self.host.runtime.spawn(async move {
                        let _ = child.join_async(None).await;
                        let _ = host.sync.call(&parent, Request::Unticket { ticket }).await;
                    });
                }
                Ok(Ok(wit::Forked::Parent(self.table.push(GuestProcess { node, is_self: false, is_parent: false })?)))
            }
            (Err(error), ticket) => {
                if let Some(ticket) = ticket {
                    let _ = self.host.sync.call(&self.node, Request::Unticket { ticket }).await;
                }
                Ok(Err(error.into()))
            }
        }
    }

    async fn active_children(&mut self) -> wasmtime::Result<Vec<Resource<GuestProcess>>> {
        let children = self.node.live_children();
        children
            .into_iter()
            .map(|node| Ok(self.table.push(GuestProcess { node, is_self: false, is_parent: false })?))
            .collect()
    }

    async fn parent_process(&mut self) -> wasmtime::Result<Option<Resource<GuestProcess>>> {
        let Some(node) = self.host.backend.parent(&self.host, &self.node) else {
            return Ok(None);
        };
        Ok(Some(self.table.push(GuestProcess { node, is_self: false, is_parent: true })?))
    }
}
