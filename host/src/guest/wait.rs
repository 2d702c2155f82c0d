//! `wait` of the `mp:host/sync` interface: a guest waits on many processes
//! and connections at once (Python's `multiprocessing.connection.wait`),
//! until one of them is ready or the timeout passes; the waiting itself is
//! [`crate::sync::wait::wait_many`].

use super::mp::host::sync as wit;
use super::sync::{Answer, GuestConnection};
use crate::instance::Ctx;
use wasmtime::component::Resource;

impl Ctx {
    /// `wait` of the interface: the indices of those of `processes` that
    /// have ended and of `connections` that are readable (processes first,
    /// connections after them), as soon as one is, or none when `timeout`
    /// (nanoseconds) passes. A process cannot wait for itself.
    pub(super) async fn wait_many(
        &mut self,
        processes: Vec<Resource<super::GuestProcess>>,
        connections: Vec<Resource<GuestConnection>>,
        timeout: Option<u64>,
    ) -> Answer<Vec<u32>> {
        let mut nodes = Vec::with_capacity(processes.len());
        for handle in &processes {
            let process = self.table.get(handle)?;
            if process.is_self {
                return Ok(Err(wit::Error::Invalid("a process cannot wait for itself".into())));
            }
            nodes.push(process.node.clone());
        }
        let mut ids = Vec::with_capacity(connections.len());
        for handle in &connections {
            match self.id(handle)? {
                Ok(id) => ids.push(id),
                Err(error) => return Ok(Err(error)),
            }
        }
        let (host, node) = (self.host.clone(), self.node.clone());
        Ok(crate::sync::wait::wait_many(host, node, nodes, ids, timeout).await.map_err(Into::into))
    }
}
