//! Waiting on many: Python's `multiprocessing.connection.wait` over
//! process sentinels ([`Process::sentinel`]) and pipe [`Connection`]s.
//!
//! ```no_run
//! fn nap(secs: u64) { std::thread::sleep(std::time::Duration::from_secs(secs)); }
//! mp::entries!(nap);
//! # fn main() {
//! let slow = mp::Process::new(mp::target!(nap), 3);
//! let fast = mp::Process::new(mp::target!(nap), 1);
//! slow.start().unwrap();
//! fast.start().unwrap();
//! let ready = mp::wait(&[&slow.sentinel(), &fast.sentinel()], None).unwrap();
//! assert_eq!(ready, [1]);
//! # }
//! ```

use std::time::Duration;

use crate::Process;
use crate::bindings::mp::host::process as wit_process;
use crate::bindings::mp::host::sync as wit;
use crate::sync::{Connection, Error, timeout};

/// Something [`wait`] can wait on: a process's [`Sentinel`] (ready once the
/// process has ended), a [`Process`] itself, or a [`Connection`] (ready
/// when it has a message or end-of-file to read).
pub trait Waitable {
    /// What the host waits on.
    #[doc(hidden)]
    fn wait_target(&self) -> WaitTarget<'_>;
}

/// What the host waits on for a [`Waitable`].
#[doc(hidden)]
pub enum WaitTarget<'a> {
    Process(&'a wit_process::Process),
    Connection(&'a wit::Connection),
}

/// A process's sentinel (Python's `Process.sentinel`): ready in [`wait`]
/// once the process has ended.
pub struct Sentinel<'a> {
    process: &'a wit_process::Process,
}

impl Process {
    /// The process's sentinel, for [`wait`] (Python's `p.sentinel`). Waiting
    /// on a process not started is an error.
    pub fn sentinel(&self) -> Sentinel<'_> {
        Sentinel { process: &self.inner }
    }
}

impl Waitable for Sentinel<'_> {
    fn wait_target(&self) -> WaitTarget<'_> {
        WaitTarget::Process(self.process)
    }
}

impl Waitable for Process {
    fn wait_target(&self) -> WaitTarget<'_> {
        WaitTarget::Process(&self.inner)
    }
}

impl Waitable for Connection {
    fn wait_target(&self) -> WaitTarget<'_> {
        WaitTarget::Connection(&self.inner)
    }
}

/// Python's `multiprocessing.connection.wait(objects, timeout)`: waits
/// until at least one of `objects` is ready, for at most `timeout` (`None`:
/// for ever); the indices (in `objects`, ascending) of those ready then,
/// empty at the timeout. A process blocked here is terminated at once.
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>, Error> {
    let mut processes = Vec::new();
    let mut connections = Vec::new();
    // Where each host index comes from in `objects`.
    let (mut from_processes, mut from_connections) = (Vec::new(), Vec::new());
    for (i, object) in objects.iter().enumerate() {
        match object.wait_target() {
            WaitTarget::Process(p) => {
                processes.push(p);
                from_processes.push(i);
            }
            WaitTarget::Connection(c) => {
                connections.push(c);
                from_connections.push(i);
            }
        }
    }
    let ready = wit::wait(&processes, &connections, self::timeout(timeout))?;
    from_processes.extend(from_connections);
    let mut ready: Vec<usize> = ready.into_iter().filter_map(|i| from_processes.get(i as usize).copied()).collect();
    ready.sort_unstable();
    Ok(ready)
}
