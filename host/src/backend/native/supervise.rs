//! The watch over one started worker by whoever started it: its output
//! passed on, a pool worker's tasks handed over and results delivered
//! (`bridge.rs`), its reports read, its end waited for and recorded on its
//! node once its channel is over (`channel.rs`).

use super::channel::{Reports, Supervised};
use super::pidfd::{SharedPidfd, Status, send_signal, wait_pidfd};
use super::spawner::Worker;
use super::{bridge, orphans, protocol, slots};
use crate::command::Launch;
use crate::output::{Format, LineSink, Stream};
use crate::process::{Ended, Node};
use crate::runtime::HostInner;
use crate::work::Work;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use tokio::net::unix::pipe::Receiver;

/// Passes on a worker's output, waits for its end (reaping it) and for the
/// end of its channel, gives back its process slot and records that end on
/// its node.
pub(super) async fn supervise(
    host: Arc<HostInner>,
    node: Arc<Node>,
    launch: Launch,
    worker: (Worker, Supervised),
    pidfd: SharedPidfd,
    slot: slots::Slot,
) {
    let (worker, channel) = worker;
    let pid = worker.pid;
    let killer = pidfd.clone();
    // The worker labels its own lines (and its descendants'): pass them on
    // in the process's format, until every process sharing the pipes has
    // ended. A forwarder to a host stream is waited for by the host's final
    // `flush_output` (which gives up on a stream nobody reads); any other
    // by `Host::wait`, unless the process is a daemon (a pool worker, say),
    // which `Host::wait` does not wait for.
    let sinks = [(worker.stdout, &launch.stdout, Stream::Stdout), (worker.stderr, &launch.stderr, Stream::Stderr)];
    // Each pipe's reader, shared with its forwarder, and the forwarder's
    // turn: once the worker is reaped, what it wrote is passed on before
    // its end is recorded (see `drain`).
    let mut drains = Vec::new();
    for (fd, stdio, stream) in sinks {
        if let Some(reader) = pipe_reader(fd) {
            let reader = Arc::new(reader);
            let turn = Arc::new(tokio::sync::Mutex::new(()));
            drains.push((reader.clone(), turn.clone()));
            // The worker labelled its lines itself: no prefix here.
            let sink = LineSink::new(stdio, stream, Format { prefix: None, ..launch.output_format() });
            let producer = sink.producer();
            let counted = producer.is_none() && !node.is_daemon();
            if counted {
                host.live.add();
            }
            let host = host.clone();
            host.runtime.clone().spawn(async move {
                forward(reader, &sink, &turn).await;
                sink.finish();
                drop(producer);
                if counted {
                    host.live.remove();
                }
            });
        }
    }
    let read_report = async {
        let Supervised { mut reports, orders } = channel;
        let report = match &launch.work {
            Work::Serve(serve) => bridge::bridge(pid, serve, orders, reports).await,
            _ => last_report(&mut reports, None, false).await,
        };
        if report.is_err() {
            // A worker that breaks the protocol is not trusted to go on.
            send_signal(&killer, libc::SIGKILL);
        }
        report
    };
    let (mut report, status) = tokio::join!(read_report, wait_pidfd(pidfd));
    // Reaped: the slot is free before a joiner wakes, and its last output
    // is passed on.
    drop(slot);
    for (reader, turn) in &drains {
        drain(reader, turn).await;
    }
    let signalled = matches!(status, Status::Signalled(_));
    tracing::info!(parent: node.span(), "reap");
    if let Ok(Some(report)) = &mut report {
        // What the worker measured, and the descendants that ended in it
        // (which end before it, and so come first in the journal).
        // Its memory is the worker's to count: the root's node only ever
        // sees it grow once, to its peak.
        node.usage.memory_grew(0, report.peak_memory);
        if let Some(fuel) = report.fuel_used {
            node.usage.set_fuel_used(fuel);
        }
        if let Some(journal) = &host.journal {
            std::mem::take(&mut report.descendants).into_iter().for_each(|record| journal.push(record.into()));
        }
    }
    let ended = match (report, status) {
        (Err(why), _) => {
            let reason = format!("worker {pid} broke the control protocol and was killed: {why}");
            let stderr = LineSink::new(&launch.stderr, Stream::Stderr, launch.output_format());
            stderr.note(&format!("error: {reason}"));
            Ended::failure(reason)
        }
        (_, Status::Signalled(signal)) => Ended { code: crate::ExitCode::from(-signal), reason: None },
        (Ok(Some(report)), Status::Exited(code)) if report.code == code => {
            Ended { code: crate::ExitCode::from(code), reason: report.reason }
        }
        (Ok(_), Status::Exited(code)) => Ended::code(code),
        (_, Status::Lost(why)) => Ended::failure(format!("lost track of worker {pid}: {why}")),
    };
    orphans::KNOWN.lock().unwrap().remove(&pid);
    node.finish(&host, ended);
    if signalled && orphans::adopts() {
        // It announced nothing: its children are ours now, unannounced.
        // Looked for off the joiner's path (`Host::wait` looks once more).
        tokio::task::spawn_blocking(orphans::adopt_strays);
    }
}

/// The worker's final report (`None` if it ended without one: a signal),
/// once its channel is over; `ended` if it came already. With
/// `revoke_pending`, the answer to a revoke sent before the end may still
/// come (a pool worker that ended as it was asked).
pub(super) async fn last_report(
    reports: &mut Reports,
    mut ended: Option<protocol::Ended>,
    mut revoke_pending: bool,
) -> Result<Option<protocol::Ended>, String> {
    while let Some(report) = reports.recv().await {
        match report? {
            protocol::Report::Ended(last) if ended.is_none() => ended = Some(last),
            protocol::Report::Ended(_) => return Err("a second end".into()),
            protocol::Report::Returned { .. } if revoke_pending => revoke_pending = false,
            protocol::Report::Done { .. } | protocol::Report::Returned { .. } => {
                return Err("a task result from a worker given no task".into());
            }
        }
    }
    Ok(ended)
}

pub(super) fn pipe_reader(fd: Option<OwnedFd>) -> Option<Receiver> {
    Receiver::from_owned_fd(fd?).ok()
}

/// Passes everything a worker writes on to `sink`, until end-of-file. It
/// reads only when the sink's destination has room: a full queue (a host
/// stream nobody reads) leaves the bytes in the pipe, and the worker waits.
/// Each read and the write that follows are one turn of `turn`, so that
/// [`drain`] can tell bytes in the pipe from bytes on their way.
pub(super) async fn forward(reader: Arc<Receiver>, sink: &LineSink, turn: &tokio::sync::Mutex<()>) {
    // Never zeroed, and taken only once there is something to read: most
    // workers write little or nothing, and a thousand live workers would
    // otherwise hold 128 MiB of zeroed buffers in the root host.
    let mut buffer = Vec::new();
    loop {
        sink.writable(0).await;
        if reader.readable().await.is_err() {
            return;
        }
        let _turn = turn.lock().await;
        buffer.clear();
        buffer.reserve(READ_SIZE);
        match reader.try_read_buf(&mut buffer) {
            Ok(0) => return,
            Ok(n) => sink.write(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The most of a worker's output read at once.
const READ_SIZE: usize = 64 << 10;

/// How long an ended worker's output may take to be passed on before its
/// end is recorded anyway (a host stream nobody reads, descendants that
/// share the pipe and keep writing).
pub(super) const DRAIN_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);

/// Waits, briefly, until the pipe `reader` (a forwarder's, shared) holds
/// nothing its forwarder has not passed on: what an ended worker
/// wrote has then reached its sink. Bounded by [`DRAIN_PATIENCE`]; it
/// polls rather than waits on a wake-up, so it cannot hang.
pub(super) async fn drain(reader: &Receiver, turn: &tokio::sync::Mutex<()>) {
    let deadline = std::time::Instant::now() + DRAIN_PATIENCE;
    loop {
        {
            let _turn = turn.lock().await;
            if pending_bytes(reader) == 0 {
                return;
            }
        }
        if std::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// How many bytes wait in the pipe `fd`; 0 if it cannot be asked.
pub(super) fn pending_bytes(fd: &impl AsRawFd) -> usize {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut pending) };
    if result < 0 { 0 } else { pending.max(0) as usize }
}
