//! Worker mode: the host binary running one process for its parent host.
//!
//! A worker reads its start message (`protocol::Start`) from its channel
//! (`channel.rs`), maps the sealed compiled code the root host handed it,
//! and runs the process as its own root: children a guest spawns become the
//! worker's OS children. When the guest ends, the worker announces its
//! still-running non-daemon children to the root for adoption and reports
//! why it ended, both on its channel, and exits
//! with the process's exit code; a signal ends it for real (so -15 and -9
//! are what `waitpid` sees). Embedders whose own binary is re-executed as
//! the worker call [`main`] when their first argument is [`WORKER_ARG`](super::WORKER_ARG).

use super::broker::Client;
use super::code::Sealed;
use super::lending::Lending;
use super::protocol::{self, EngineSettings, Start};
use super::zygote;
use super::{FDS_VAR, INHERITED, Inherited};
use crate::backend::BackendKind;
use crate::codec::{Batch, BatchResults};
use crate::command::Launch;
use crate::exit::Signal;
use crate::instance::{self, Outputs};
use crate::limits::Limits;
use crate::output::{Format, Stdin, Stdio};
use crate::program::Code;
use crate::runtime::{Engines, HostBuilder};
use crate::work::{Job, Outcome, Reply, ServeChannel, TaskQueue, Work};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs this process as a worker (or, as `__worker zygote`, as the zygote
/// that forks workers); returns its exit status.
pub fn main() -> i32 {
    let zygote = std::env::args_os().nth(2).is_some_and(|arg| arg == zygote::ZYGOTE_ARG);
    let served = if zygote { zygote::serve() } else { serve() };
    match served {
        Ok(status) => status,
        Err(message) => {
            eprintln!("error: {message}");
            crate::ExitCode::FAILURE.code()
        }
    }
}

/// A worker started by exec: its start message first on its channel, its
/// descriptors named in the environment.
fn serve() -> Result<i32, String> {
    let [channel, lifeline, code, slots] =
        inherit().ok_or("worker mode is for the host's own use: its descriptors are missing")?;
    let channel = std::os::unix::net::UnixStream::from(channel);
    // Read exactly: what follows it (a pool worker's orders) stays for the
    // channel's reader.
    let start =
        match protocol::read_bytes_frame(&mut &channel, protocol::MAX_MESSAGE).map(|m| m.map(protocol::parse)) {
            Ok(Some(Ok((protocol::kind::START, _, body)))) => protocol::decode_control::<Start>(&body),
            Ok(None) => return Err("worker mode is for the host's own use: no start message on its channel".into()),
            Ok(Some(Ok(_))) => Err("not a start message".into()),
            Ok(Some(Err(why))) | Err(why) => Err(why),
        }
        .map_err(|why| format!("bad start message: {why}"))?;
    let stdin = if start.stdin { Stdin::inherit() } else { Stdin::null() };
    let builder = builder(start.engine);
    let engines = builder.make_engines().map_err(|e| format!("cannot start the worker's engine: {e:#}"))?;
    let (code, sealed) = super::code::load(&engines, code, &start).map_err(|e| e.to_string())?;
    let channel = Arc::new(Client::new(OwnedFd::from(channel)));
    let watch = std::sync::Mutex::new(None);
    let slots =
        Arc::new(super::slots::Slots::inherit(&slots).map_err(|e| format!("cannot map the process table: {e}"))?);
    run(start, Inherited { lifeline, watch, slots, channel }, engines, code, sealed, stdin)
}

/// The host configuration of a worker: one process, the root's engine settings.
pub(crate) fn builder(settings: EngineSettings) -> HostBuilder {
    HostBuilder::default()
        .backend(BackendKind::Native)
        .fuel(settings.fuel)
        .max_memory_per_process(settings.max_memory)
        // A worker runs one instance: its children are processes of their
        // own, counted against the run's cap in the table it inherited.
        .max_processes(1)
        // Its code comes compiled from its parent; it compiles nothing.
        .compile_cache(crate::cache::CompileCache::Off)
}

/// Runs the process of `start` as this worker, to its end; exits.
pub(crate) fn run(
    start: Start,
    inherited: Inherited,
    engines: Engines,
    code: Code,
    sealed: Arc<Sealed>,
    stdin: Stdin,
) -> Result<i32, String> {
    if start.daemon {
        die_with_parent(start.parent);
    }
    // The lifeline is watched from the host's build on (`ticker.rs`).
    let channel = inherited.channel.clone();
    let _ = INHERITED.set(inherited);

    let parent = start.parent_name.clone().map(|name| (start.parent, name));
    super::become_process(super::ThisProcess { name: start.name.clone(), daemon: start.daemon, engines, parent });
    let host = builder(start.engine)
        .journal(start.journal)
        .build()
        .map_err(|e| format!("cannot start the worker's host: {e:#}"))?;
    let inner = host.inner().clone();
    let program = super::code::program(&inner, &start, code, sealed);
    let launch = Launch {
        work: match (start.serve, start.entry) {
            (Some(serve), _) => Work::Serve(ServeChannel {
                tasks: {
                    let _entered = inner.runtime.enter();
                    take_tasks(&channel)
                },
                initializer: serve.initializer,
                max_tasks: serve.max_tasks,
                task_timeout: serve.task_timeout.map(Duration::from_nanos),
            }),
            (None, Some(name)) => Work::Entry { name, input: start.input },
            (None, None) => Work::Main,
        },
        ticket: start.ticket,
        args: start.args,
        env: start.env,
        dirs: start.dirs,
        limits: Limits { max_memory: start.max_memory, fuel: start.fuel, timeout: None },
        // Too far to represent: no deadline.
        deadline: start.time_left.and_then(|left| Instant::now().checked_add(Duration::from_nanos(left))),
        stdin,
        stdout: Stdio::inherit(),
        stderr: Stdio::inherit(),
        labelled: start.labelled,
        label: start.label,
        parent_label: None,
        ..program.command().launch().clone()
    };
    // Every write passed on at once, so that what the guest wrote reaches
    // the root host (which makes the lines) even when a signal ends it
    // mid-line.
    let format = Format { whole_lines: false, ..launch.output_format() };
    let outputs = Outputs::with_format(&launch, format);
    let node = inner.root.clone();
    let ended = host.block_on(instance::run_until_deadline(inner.clone(), node.clone(), launch, &outputs));
    // The puts the guest did not wait for are in their queues before its
    // end is told.
    let flushed = host.block_on(async { tokio::time::timeout(OUTPUT_PATIENCE, inner.sync.flush()).await });
    if let Ok(Some(error)) = flushed {
        eprintln!("error: a shared-object request this process sent without waiting failed: {error}");
    }
    outputs.finish();
    let timed_out = ended.code == crate::ExitCode::from_signal(Signal::Term);
    // What is still queued reaches the root before we report; after a
    // timeout (a terminate) only briefly, as a signal would not wait at all.
    crate::output::flush_output(if timed_out { TIMEOUT_PATIENCE } else { OUTPUT_PATIENCE });

    let mut message = protocol::Ended {
        code: ended.code.code(),
        reason: ended.reason.clone(),
        peak_memory: node.usage.peak_memory(),
        fuel_used: node.usage.fuel_used(),
        descendants: host.journal().into_iter().map(protocol::Record::from).collect(),
    };
    announce_orphans(&channel, &node.live_children());
    let end = protocol::control(protocol::kind::REPORT, 0, &protocol::Report::Ended(message.clone()));
    let end = match end {
        Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
            // Too many descendants for one message: the end itself matters more.
            message.descendants.clear();
            protocol::control(protocol::kind::REPORT, 0, &protocol::Report::Ended(message))
        }
        end => end,
    };
    if let Ok(end) = end {
        let _ = channel.write_framed(&end);
    }
    super::spawner::stop_zygote();
    if timed_out {
        // A timeout: end the way a terminate does, so the parent sees -15.
        unsafe { libc::raise(libc::SIGTERM) };
    }
    // Exit at once: no destructor may terminate the children we leave, and
    // nothing but our own stdout's buffer needs the exit handlers.
    let _ = std::io::stdout().flush();
    // SAFETY: ends this process; everything it reported is written.
    unsafe { libc::_exit(ended.code.code()) }
}

/// How long a worker that ends waits for a root that takes none of its
/// output (its own stdout blocked) before it exits anyway.
const OUTPUT_PATIENCE: Duration = Duration::from_secs(5);

/// The same after a timeout, which ends the process at once.
const TIMEOUT_PATIENCE: Duration = Duration::from_millis(200);

/// A pool worker's tasks: they come on its channel, several sent ahead;
/// each finished task's results go back on it before the next task is
/// taken, so the host knows that those it has no answer for, but the
/// first, were not started. A revoke gives back the tasks not started. The
/// channel's end or a bad order ends the queue, and so the worker.
fn take_tasks(channel: &Arc<Client>) -> Arc<TaskQueue> {
    let tasks = TaskQueue::new();
    let queue = tasks.clone();
    let replies = channel.clone();
    let sink = move |order: Option<Result<protocol::Order, String>>| {
        let task = match order {
            Some(Ok(protocol::Order::Task(task))) if task.many || task.inputs.len() == 1 => task,
            Some(Ok(protocol::Order::Revoke)) => {
                let unstarted = queue.take_now(usize::MAX);
                let count = unstarted.len() as u64;
                unstarted.into_iter().for_each(|job| job.reply.cancel());
                let _ = report(&replies, &protocol::Report::Returned { count });
                return;
            }
            Some(Ok(protocol::Order::Close)) | None => return queue.close(),
            Some(Ok(_)) => {
                eprintln!("error: bad task message: one input expected");
                return queue.close();
            }
            Some(Err(why)) => {
                eprintln!("error: bad task message: {why}");
                return queue.close();
            }
        };
        let reply = answer(task.id, replies.clone());
        if queue.push(Job { entry: task.entry, inputs: task.inputs, many: task.many, reply }).is_err() {
            queue.close();
        }
    };
    if let Err(error) = channel.take_orders(Box::new(sink)) {
        eprintln!("error: cannot read tasks: {error}");
        tasks.close();
    }
    tasks
}

/// Writes `message` on the channel; an error if it is too large.
fn report(channel: &Client, message: &protocol::Report) -> std::io::Result<()> {
    let frame = protocol::control(protocol::kind::REPORT, 0, message)?;
    // The channel gone: the root is, and the lifeline ends us.
    let _ = channel.write_framed(&frame);
    Ok(())
}

/// Where task `id`'s results go: the channel. A failed task ends the
/// worker: its `Ended` report says why.
fn answer(id: u64, channel: Arc<Client>) -> Reply {
    Reply::new(move |outcome| {
        let Outcome::Done(results) = outcome else { return };
        let count = results.len();
        // Results too large for one message fail their task, rather than
        // leave the host waiting for an answer that never comes.
        if let Err(error) = report(&channel, &protocol::Report::Done { id, results }) {
            let why = format!("the task's results cannot be sent to the host: {error}");
            let failed = (0..count as u32).map(|i| (i, why.clone())).collect();
            let empty = Batch { data: Vec::new(), ends: vec![0; count] };
            let results = BatchResults { results: empty, failed };
            let _ = report(&channel, &protocol::Report::Done { id, results });
        }
    })
}

/// Takes ownership of the `N` descriptors the parent passed, if they are there.
pub(crate) fn inherit<const N: usize>() -> Option<[OwnedFd; N]> {
    let fds: Vec<i32> = std::env::var(FDS_VAR).ok()?.split(',').map(|fd| fd.parse().ok()).collect::<Option<_>>()?;
    let fds: [i32; N] = fds.try_into().ok()?;
    for fd in fds {
        // Valid, and not passed on to our own children (they get copies).
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return None;
        }
    }
    // SAFETY: the parent passed these descriptors to us alone.
    Some(fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A daemon dies with its parent, even when the parent crashes.
fn die_with_parent(parent: u32) {
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        // The parent may have died before the line above took effect.
        if libc::getppid() as u32 != parent {
            libc::raise(libc::SIGTERM);
        }
    }
}

/// Tells the root which of our children it is about to adopt.
fn announce_orphans(channel: &Client, children: &[std::sync::Arc<crate::process::Node>]) {
    let pids: Vec<u8> =
        children.iter().filter(|c| !c.is_daemon()).filter_map(|c| c.pid()).flat_map(u32::to_le_bytes).collect();
    if !pids.is_empty()
        && let Ok(frame) = protocol::message(protocol::kind::ORPHANS, 0, &[&pids])
    {
        let _ = channel.write_framed(&frame);
    }
}
