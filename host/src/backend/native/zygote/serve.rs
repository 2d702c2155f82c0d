//! The zygote's own side: it builds the engine once, then, for each
//! request of the root host, maps the program (once per program), forks
//! the worker asked for and the spares asked for ([`Spares`](super::Spares)),
//! and tells the root each pid. Forks run [`worker::run`] with the
//! descriptors the request passed; a spare first waits for its request.

use super::{
    Ask, COPY_CODE_ARG, MAX_REQUEST, SPARE_NAME, Said, ZYGOTE_NAME, dup_onto, fork_sibling, receive, receive_into, send,
};
use crate::backend::native::code::Sealed;
use crate::backend::native::protocol::{self, EngineSettings, Start};
use crate::backend::native::{Inherited, worker};
use crate::output::Stdin;
use crate::program::Code;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// The zygote's side: build once, then fork a worker per request until the
/// root host goes away.
pub(crate) fn serve() -> Result<i32, String> {
    let [socket, lifeline, slots] =
        worker::inherit().ok_or("zygote mode is for the host's own use: its descriptors are missing")?;
    // It dies with the host (a worker, say) that started it, however that
    // ends, and goes by a name that tells it apart even as a zombie (which
    // the root, a worker's orphan's adopter, then reaps: `orphans.rs`).
    // SAFETY: prctl with these options reads and writes nothing of ours.
    let original = unsafe {
        let mut name = [0u8; 16];
        libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, ZYGOTE_NAME.as_ptr());
        name
    };
    let (settings, _) = receive(&socket).map_err(|e| format!("no engine settings: {e}"))?;
    let settings: EngineSettings = protocol::decode_frame(&settings)?;
    let engines =
        worker::builder(settings).make_engines().map_err(|e| format!("cannot build the zygote's engine: {e:#}"))?;
    // Each fork takes this copy for its own (never cloned: a clone of the
    // linkers costs more than the rest of a worker's start).
    let mut engines = Some(engines);
    // Looked up once here, not by every worker.
    crate::backend::native::current_exe().map_err(|e| format!("cannot find the host binary: {e}"))?;
    // The engine's per-thread state (its signal stack) made here, once.
    wasmtime::Engine::tls_eager_initialize();
    // WASI's random generators probe the CPU's features on first use (each
    // probe a `cpuid`, which a virtual machine traps): probed here, once.
    drop(wasmtime_wasi::WasiCtxBuilder::new());
    let mut programs: HashMap<(u64, u64), (Code, Arc<Sealed>)> = HashMap::new();
    let copy_code = std::env::args_os().nth(3).is_some_and(|arg| arg == COPY_CODE_ARG);
    let mut requests = 0u32;
    // One buffer for every request: after a fork each page the zygote
    // writes is copied first, and a fresh one would be zeroed whole.
    let mut buffer = vec![0u8; MAX_REQUEST + 64];
    loop {
        let (length, fds) = match receive_into(&socket, &mut buffer) {
            Ok((0, _)) => return Ok(0),
            Ok(message) => message,
            Err(e) => return Err(format!("lost the root host: {e}")),
        };
        requests += 1;
        if copy_code && requests == 2 {
            // Before the second fork, not the first: a run of one process
            // (`host run x.wasm`) neither waits for the copy nor shares its
            // two cores with it. Without it, forks are slower, not wrong.
            let _ = crate::backend::native::text::anonymize();
        }
        let Ok(ask) = protocol::decode_frame::<Ask<Start>>(&buffer[..length]) else {
            let refused = Said::Forked(Err("not a request".into()));
            tell(&socket, &refused, None)?;
            continue;
        };
        let mut zygote =
            Forker { socket: &socket, inherited: [&lifeline, &slots], engines: &mut engines, name: &original };
        let mut spares = ask.spares;
        if ask.fork {
            let mut passed = Vec::new();
            let answer = zygote.fork_worker(ask.start.clone(), fds, &mut passed, settings, &mut programs);
            let forked = answer.is_ok();
            tell(&socket, &Said::Forked(answer), None)?;
            // Our copies of the new worker's descriptors, closed once it is told.
            drop(passed);
            spares = if forked { spares } else { 0 };
        } else if let Err(why) = program(fds.into_iter().next(), &ask.start, settings, &*zygote.engines, &mut programs)
        {
            // Forked all the same: a spare can load the program itself.
            eprintln!("error: the zygote cannot map a program ahead: {why}");
        }
        for _ in 0..spares {
            let spare = zygote.fork_spare(&mut buffer, settings, &mut programs);
            let said = Said::Spare(spare.as_ref().map(|(pid, _)| *pid).map_err(Clone::clone));
            tell(&socket, &said, spare.ok().map(|(_, socket)| socket))?;
        }
    }
}

/// Tells the root host `said`, with the descriptor `fd` if there is one.
fn tell(socket: &OwnedFd, said: &Said, fd: Option<OwnedFd>) -> Result<(), String> {
    let fds: Vec<RawFd> = fd.iter().map(|fd| fd.as_raw_fd()).collect();
    send(socket, &protocol::encode_frame(said).map_err(|e| e.to_string())?, &fds)
        .map_err(|e| format!("lost the root host: {e}"))
}

/// The compiled code of the program `start` runs, from the sealed `code`:
/// mapped once per program, before forking, so every worker shares the pages.
fn program<'a>(
    code: Option<OwnedFd>,
    start: &Start,
    settings: EngineSettings,
    engines: &Option<crate::runtime::Engines>,
    programs: &'a mut HashMap<(u64, u64), (Code, Arc<Sealed>)>,
) -> Result<&'a (Code, Arc<Sealed>), String> {
    if start.engine != settings {
        return Err("a worker for another engine than the zygote's".into());
    }
    let code = code.ok_or("no compiled code")?;
    let key =
        crate::backend::native::code::identity(&code).map_err(|e| format!("cannot look at the compiled code: {e}"))?;
    // Cloned by the fork alone: a count the zygote wrote would be a page
    // it copies (its forks share every page it has).
    Ok(match programs.entry(key) {
        Entry::Occupied(known) => known.into_mut(),
        Entry::Vacant(new) => {
            let loaded =
                crate::backend::native::code::load(engines.as_ref().ok_or("the zygote has no engine")?, code, start)
                    .map_err(|e| e.to_string())?;
            new.insert(loaded)
        }
    })
}

/// The descriptors a worker is started with, as a request passed them
/// (with the program's code, which [`program`] takes).
struct Passed {
    stdout: OwnedFd,
    stderr: OwnedFd,
    channel: OwnedFd,
    stdin: Option<OwnedFd>,
}

impl Passed {
    fn of(fds: Vec<OwnedFd>) -> Result<(Passed, OwnedFd), String> {
        let mut fds = fds.into_iter();
        let (Some(stdout), Some(stderr), Some(channel), Some(code)) = (fds.next(), fds.next(), fds.next(), fds.next())
        else {
            return Err("expected four or five descriptors".into());
        };
        let stdin = fds.next();
        if fds.next().is_some() {
            return Err("expected four or five descriptors".into());
        }
        Ok((Passed { stdout, stderr, channel, stdin }, code))
    }
}

/// What the zygote forks with.
struct Forker<'a> {
    /// Its socket to the root host, which no fork keeps.
    socket: &'a OwnedFd,
    /// The lifeline and the process table.
    inherited: [&'a OwnedFd; 2],
    /// Each fork takes this copy for its own (never cloned: a clone of the
    /// linkers costs more than the rest of a worker's start).
    engines: &'a mut Option<crate::runtime::Engines>,
    /// The name its workers go by.
    name: &'a [u8; 16],
}

impl Forker<'_> {
    /// Forks the worker `start` asks for; the new pid, or why not. The pipes
    /// and stdin the request passed, which the fork has its own copies of,
    /// are left in `passed`.
    fn fork_worker(
        &mut self,
        start: Start,
        fds: Vec<OwnedFd>,
        passed: &mut Vec<OwnedFd>,
        settings: EngineSettings,
        programs: &mut HashMap<(u64, u64), (Code, Arc<Sealed>)>,
    ) -> Result<u32, String> {
        let (worker, code) = Passed::of(fds)?;
        let (code, sealed) = program(Some(code), &start, settings, self.engines, programs)?;
        match fork_sibling().map_err(|e| format!("cannot fork a worker: {e}"))? {
            0 => {
                self.leave_root();
                self.become_worker(start, worker, code.clone(), sealed.clone())
            }
            pid => {
                passed.extend([worker.stdout, worker.stderr, worker.channel]);
                passed.extend(worker.stdin);
                Ok(pid)
            }
        }
    }

    /// Forks a spare, born with its name (see [`Spares`]); its pid and the
    /// root's end of its socket.
    fn fork_spare(
        &mut self,
        buffer: &mut [u8],
        settings: EngineSettings,
        programs: &mut HashMap<(u64, u64), (Code, Arc<Sealed>)>,
    ) -> Result<(u32, OwnedFd), String> {
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| format!("cannot make a spare's socket: {e}"))?;
        // SAFETY: both names are NUL-terminated.
        unsafe { libc::prctl(libc::PR_SET_NAME, SPARE_NAME.as_ptr()) };
        let forked = fork_sibling();
        if !matches!(forked, Ok(0)) {
            unsafe { libc::prctl(libc::PR_SET_NAME, ZYGOTE_NAME.as_ptr()) };
        }
        match forked.map_err(|e| format!("cannot fork a spare: {e}"))? {
            0 => {
                drop(ours);
                self.leave_root();
                let status = self.wait_for_start(&theirs, buffer, settings, programs);
                // Its socket ended (or broke) before a start came: nothing ran.
                let status = status.unwrap_or_else(|message| {
                    eprintln!("error: {message}");
                    crate::ExitCode::FAILURE.code()
                });
                // SAFETY: ends this process, which ran nothing of its own.
                unsafe { libc::_exit(status) }
            }
            pid => Ok((pid, ours)),
        }
    }

    /// In a spare: waits for its start on `socket`, and runs it (never
    /// returning); `Ok(0)` if the socket ends first.
    fn wait_for_start(
        &mut self,
        socket: &OwnedFd,
        buffer: &mut [u8],
        settings: EngineSettings,
        programs: &mut HashMap<(u64, u64), (Code, Arc<Sealed>)>,
    ) -> Result<i32, String> {
        let (length, fds) = match receive_into(socket, buffer) {
            Ok((0, _)) | Err(_) => return Ok(0),
            Ok(message) => message,
        };
        let start: Start = protocol::decode_frame(&buffer[..length])?;
        let (worker, code) = Passed::of(fds)?;
        let (code, sealed) = program(Some(code), &start, settings, self.engines, programs)?;
        let (code, sealed) = (code.clone(), sealed.clone());
        self.become_worker(start, worker, code, sealed)
    }

    /// In a fork: closes its copy of the zygote's socket to the root host
    /// (once, before anything else is opened: the number may be reused), so
    /// that the root sees the zygote's end when it ends.
    fn leave_root(&self) {
        let _ = nix::unistd::close(self.socket.as_raw_fd());
    }

    /// In a fork: becomes the worker `start` asks for, with its own name and
    /// its stdio; runs it and exits.
    fn become_worker(&mut self, start: Start, passed: Passed, code: Code, sealed: Arc<Sealed>) -> ! {
        // SAFETY: `name` is NUL-terminated (PR_GET_NAME wrote it).
        unsafe { libc::prctl(libc::PR_SET_NAME, self.name.as_ptr()) };
        let status = (|| {
            let Passed { stdout, stderr, channel, stdin } = passed;
            dup_onto(&stdout, 1)?;
            dup_onto(&stderr, 2)?;
            drop((stdout, stderr));
            let input = match stdin {
                Some(stdin) => {
                    dup_onto(&stdin, 0)?;
                    Stdin::inherit()
                }
                None => Stdin::null(),
            };
            let [lifeline, slots] = self.inherited.map(|fd| fd.try_clone());
            let inherited = Inherited {
                lifeline: lifeline.map_err(|e| e.to_string())?,
                slots: slots.map_err(|e| e.to_string())?,
                channel: Arc::new(crate::backend::native::broker::Client::new(channel)),
            };
            // This process's copy of the zygote's engine: its own now.
            let engines = self.engines.take().ok_or("the zygote has no engine")?;
            worker::run(start, inherited, engines, code, sealed, input)
        })();
        let status = status.unwrap_or_else(|message| {
            eprintln!("error: {message}");
            crate::ExitCode::FAILURE.code()
        });
        std::process::exit(status)
    }
}
