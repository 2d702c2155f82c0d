//! Where a process's output goes: byte for byte, or a whole line at a time.
//!
//! Each output stream of a process is a [`LineSink`] ([`sink`]): exact (every
//! write passed on as it comes) or a whole line at a time (for a process
//! that shares its stream or whose lines are labelled). Its destination is
//! a [`Capture`] buffer, nothing, or one of the host's own stdout and stderr
//! ([`host_stream`]): each written by one writer thread fed by a bounded
//! queue, so a guest writing to a full queue is a pending future, never a
//! blocked thread. The sink is also the guest's WASI stdout/stderr stream
//! ([`guest`]). What a process reads as stdin is said by a [`Stdin`]
//! ([`stdio`], with the other public ends: [`Stdio`], [`Capture`]).

mod guest;
mod host_stream;
mod sink;
mod stdio;

pub(crate) use guest::GuestOutput;
#[cfg(outside_processes)]
pub(crate) use host_stream::after_fork;
pub use host_stream::{flush_output, set_terminal_hook};
pub(crate) use sink::{Format, LineSink};
pub use stdio::{Capture, Stdin, Stdio};
pub(crate) use stdio::{Input, Stream};
