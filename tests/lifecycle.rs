//! The library API against Python's semantics (the README's library section): start, join(timeout),
//! is_alive, exitcode, terminate, kill, pid, name, daemon, close, orphans,
//! cpu_count, and loading programs.

mod common;

use common::*;
use host::{Capture, Error, ExitCode, ProgramKind, Signal, Stdio};
use std::collections::HashSet;
use std::time::Duration;

#[test]
fn start_once_then_join() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let p = program.command().arg("0").stdout(Stdio::null()).create();
    assert_eq!(p.pid(), None, "no pid before start");
    assert_eq!(p.exitcode(), None, "no exitcode before start");
    assert!(!p.is_alive(), "not alive before start");
    p.start().unwrap();
    assert!(p.pid().is_some(), "a pid once started");
    assert_eq!(p.start(), Err(Error::AlreadyStarted), "a second start is an error");
    let code = join(&p);
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(code.success());
    assert_eq!(p.exitcode(), Some(ExitCode::SUCCESS));
    assert!(!p.is_alive(), "not alive after its end");
    assert!(p.pid().is_some(), "the pid stays known after the end");
    assert_eq!(p.start(), Err(Error::AlreadyStarted), "no restart after the end");
    assert_eq!(join(&p), ExitCode::SUCCESS, "joining again returns the same code");
}

#[test]
fn many_starts_of_one_program_each_run_once_with_their_own_arguments() {
    // Started together, so that each start is handed over while the
    // processes started before it still run: every process runs its own
    // start (its arguments), once (one greeting on its own stdout).
    let host = host();
    let program = host.load(guest("hello")).unwrap();
    let started: Vec<(Capture, host::Process)> = (0..24)
        .map(|i| {
            let out = Capture::new();
            let process =
                program.command().args([format!("start-{i}"), "x".repeat(i)]).stdout(Stdio::capture(&out)).spawn();
            (out, process.unwrap())
        })
        .collect();
    let mut pids = HashSet::new();
    for (i, (out, process)) in started.iter().enumerate() {
        assert!(join(process).success(), "{}", out.text());
        let text = out.text();
        assert_eq!(text.matches("hello from pid=").count(), 1, "start {i} ran other than once: {text}");
        assert!(text.contains(&format!("args: start-{i} {}\n", "x".repeat(i))), "start {i} ran another's: {text}");
        assert!(pids.insert(process.pid().unwrap()), "two starts share pid {:?}", process.pid());
    }
}

#[test]
fn operations_before_start_are_errors() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let p = program.command().create();
    assert_eq!(p.join().unwrap_err(), Error::NotStarted);
    assert_eq!(p.join_timeout(Duration::from_millis(1)).unwrap_err(), Error::NotStarted);
    assert_eq!(p.terminate(), Err(Error::NotStarted));
    assert_eq!(p.kill(), Err(Error::NotStarted));
    assert_eq!(p.pid(), None);
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
}

#[test]
fn join_with_a_timeout_returns_while_the_process_runs() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let p = sleeper(&program);
    assert_eq!(p.join_timeout(Duration::from_millis(50)).unwrap(), None);
    assert!(p.is_alive(), "still alive after a join that timed out");
    assert_eq!(p.exitcode(), None, "no exitcode while running");
    p.terminate().unwrap();
    assert_eq!(join(&p).code(), -15);
    // A join with a timeout on an ended process returns its code.
    assert_eq!(p.join_timeout(Duration::from_secs(60)).unwrap(), Some(ExitCode::from(-15)));
}

#[test]
fn exitcodes_follow_python() {
    let host = host();
    let exit = host.load(guest("exit-code")).unwrap();
    for n in [0, 1, 3, 42, 255] {
        let p = exit.command().arg(n.to_string()).stdout(Stdio::null()).spawn().unwrap();
        assert_eq!(join(&p).code(), n, "exit({n})");
        assert_eq!(p.exitcode().map(ExitCode::code), Some(n));
    }
    let trap = host.load(guest("trap")).unwrap();
    let err = Capture::new();
    let p = trap.command().stdout(Stdio::null()).stderr(Stdio::capture(&err)).spawn().unwrap();
    assert_eq!(join(&p), ExitCode::FAILURE, "a trap gives 1");
    assert!(p.failure().is_some(), "a trap has a reason");
    assert!(err.text().contains("deliberate panic"), "{}", err.text());
    let hello = host.load(guest("plain-command")).unwrap();
    let p = hello.command().stdout(Stdio::null()).spawn().unwrap();
    assert_eq!(join(&p), ExitCode::SUCCESS);
    assert_eq!(p.failure(), None);
}

#[test]
fn exit_code_helpers() {
    let term = ExitCode::from_signal(Signal::Term);
    assert_eq!(term.code(), -15);
    assert_eq!(term.signal(), Some(15));
    assert_eq!(term.shell_status(), 143);
    let kill = ExitCode::from_signal(Signal::Kill);
    assert_eq!(kill.code(), -9);
    assert_eq!(kill.shell_status(), 137);
    assert_eq!(ExitCode::from(3).shell_status(), 3);
    assert_eq!(ExitCode::from(3).signal(), None);
}

fn terminated(program: &str, args: &[&str], signal: Signal, ready: &str) {
    let host = host();
    let program = host.load(guest(program)).unwrap();
    let out = Capture::new();
    let p = program
        .command()
        .args(args.iter().copied())
        .stdout(Stdio::capture(&out))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_output(&out, ready);
    assert!(p.is_alive());
    match signal {
        Signal::Term => p.terminate().unwrap(),
        Signal::Kill => p.kill().unwrap(),
    }
    let code = join(&p);
    assert_eq!(code, ExitCode::from_signal(signal));
    assert_eq!(code.code(), -signal.number());
    assert!(!p.is_alive());
    assert!(out.text().contains(ready), "output before the signal is kept");
    // Signalling an ended process is not an error and changes nothing.
    p.terminate().unwrap();
    p.kill().unwrap();
    assert_eq!(p.exitcode(), Some(code));
}

#[test]
fn terminate_a_sleeper() {
    terminated("sleep", &["3600"], Signal::Term, "sleeping");
}

#[test]
fn kill_a_sleeper() {
    terminated("sleep", &["3600"], Signal::Kill, "sleeping");
}

#[test]
fn terminate_a_busy_loop() {
    terminated("spin", &[], Signal::Term, "spinning");
}

#[test]
fn kill_a_busy_loop() {
    terminated("spin", &[], Signal::Kill, "spinning");
}

/// A process writing output as fast as it can is terminated too.
#[test]
fn terminate_a_writer() {
    let host = host();
    let lines = host.load(guest("lines")).unwrap();
    let err = Capture::new();
    let p = lines.command().arg("1000000000").stdout(Stdio::null()).stderr(Stdio::capture(&err)).spawn().unwrap();
    wait_for_output(&err, "stderr line 1\n");
    p.terminate().unwrap();
    assert_eq!(join(&p).code(), -15);
}

#[test]
fn terminate_right_after_start() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let p = sleeper(&program);
    p.terminate().unwrap();
    assert_eq!(join(&p).code(), -15);
}

/// A process terminated while it waits (in `join` on its daemon child, or
/// asleep with a non-daemon child running) ends at once with its output up
/// to then, and its children are dealt with as at any end: the daemon is
/// terminated with it, the other adopted by the host, which waits for it.
#[test]
fn terminate_a_process_waiting_with_children() {
    let host = host();
    let program = host.load(guest("children")).unwrap();
    let (joins, sleeps) = (Capture::new(), Capture::new());
    let joiner = program.command().entry("join_grandchild").stdout(Stdio::capture(&joins)).spawn().unwrap();
    let sleeper = program.command().entry("orphan_a_sleeper").stdout(Stdio::capture(&sleeps)).spawn().unwrap();
    wait_for_output(&joins, "child-grandchild-start: ok");
    wait_for_output(&sleeps, "child-grandchild-start: ok");
    // Both are now blocked: one in its join, the other in its sleep.
    std::thread::sleep(Duration::from_millis(50));
    joiner.terminate().unwrap();
    sleeper.terminate().unwrap();
    assert_eq!(join(&joiner).code(), -15);
    assert_eq!(join(&sleeper).code(), -15);
    host.wait();
    assert!(!joins.text().contains("unreachable"), "{}", joins.text());
    assert!(sleeps.text().contains("child-grandchild-start: ok"), "{}", sleeps.text());
}

#[test]
fn pids_are_unique_among_live_processes() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let ps: Vec<_> = (0..8).map(|_| sleeper(&program)).collect();
    let pids: HashSet<u32> = ps.iter().map(|p| p.pid().unwrap()).collect();
    assert_eq!(pids.len(), ps.len(), "unique pids");
    assert!(!pids.contains(&host.pid()), "no process has the host's pid");
    for p in &ps {
        p.kill().unwrap();
    }
    for p in &ps {
        assert_eq!(join(p).code(), -9);
    }
}

#[test]
fn the_host_pid() {
    let host = host();
    if is_thread_backend() {
        assert_eq!(host.pid(), 1, "the thread backend's root is virtual pid 1");
    } else {
        assert_eq!(host.pid(), std::process::id(), "the native backend's root is this process");
    }
    assert_eq!(host.backend(), backend());
}

#[test]
fn default_names_count_from_one_and_custom_names_stick() {
    let host = host();
    let program = host.load(guest("plain-command")).unwrap();
    let a = program.command().create();
    let b = program.command().create();
    let c = program.command().name("worker").stdout(Stdio::null()).create();
    let d = program.command().create();
    assert_eq!(a.name(), "Process-1");
    assert_eq!(b.name(), "Process-2");
    assert_eq!(c.name(), "worker");
    assert_eq!(d.name(), "Process-4", "N counts every process created, named or not");
    a.set_name("renamed");
    assert_eq!(a.name(), "renamed");
    c.start().unwrap();
    assert_eq!(c.name(), "worker");
    join(&c);
}

#[test]
fn daemon_is_settable_only_before_start() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let p = program.command().arg("3600").stdout(Stdio::null()).create();
    assert!(!p.daemon(), "not a daemon by default");
    p.set_daemon(true).unwrap();
    assert!(p.daemon());
    p.set_daemon(false).unwrap();
    assert!(!p.daemon());
    let q = program.command().arg("0").daemon(true).stdout(Stdio::null()).create();
    assert!(q.daemon(), "Command::daemon");
    p.start().unwrap();
    assert!(p.set_daemon(true).is_err(), "set_daemon after start is an error");
    assert!(!p.daemon(), "and changes nothing");
    p.terminate().unwrap();
    join(&p);
}

#[test]
fn close_is_an_error_while_running_and_works_after() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let p = sleeper(&program);
    assert_eq!(p.close(), Err(Error::StillRunning));
    assert!(p.is_alive(), "a refused close changes nothing");
    p.terminate().unwrap();
    join(&p);
    p.close().unwrap();
    assert_eq!(p.start(), Err(Error::Closed));
    assert_eq!(p.join().unwrap_err(), Error::Closed);
    assert_eq!(p.terminate(), Err(Error::Closed));
    // A never-started process can be closed too.
    let q = program.command().create();
    q.close().unwrap();
    assert_eq!(q.start(), Err(Error::Closed));
}

#[test]
fn cpu_count_is_the_hosts() {
    let expected = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(host::cpu_count(), expected);
}

#[test]
fn unknown_entry_is_refused_at_start() {
    let host = host();
    let program = host.load(guest("children")).unwrap();
    let p = program.command().entry("no_such_entry").create();
    assert_eq!(p.start(), Err(Error::UnknownEntry("no_such_entry".into())));
    assert!(!p.is_alive());
    assert_eq!(p.pid(), None);
}

#[test]
fn entries_take_serialized_arguments() {
    let host = host();
    let program = host.load(guest("children")).unwrap();
    let p = program.command().entry("exit_with").input(&5).spawn().unwrap();
    assert_eq!(join(&p).code(), 5);
    let p = program.command().entry("takes_u32").input(&7u32).spawn().unwrap();
    assert_eq!(join(&p).code(), 0);
    let err = Capture::new();
    let p = program.command().entry("takes_u32").input(&"seven").stderr(Stdio::capture(&err)).spawn().unwrap();
    assert_eq!(join(&p).code(), 1, "an entry's error gives 1");
    assert!(p.failure().unwrap().contains("takes_u32"));
    assert!(err.text().contains("takes_u32"));
    let out = Capture::new();
    let p = host
        .load(guest("seed-join-many"))
        .unwrap()
        .command()
        .entry("task1")
        .input_json("3")
        .stdout(Stdio::capture(&out))
        .spawn()
        .unwrap();
    assert_eq!(join(&p).code(), 0);
    assert_eq!(out.text(), "3 run\n".repeat(10));
}

#[test]
fn programs_are_loaded_once_and_run_many_times() {
    let host = host();
    let program = host.load(guest("hello")).unwrap();
    let outs: Vec<Capture> = (0..5).map(|_| Capture::new()).collect();
    let ps: Vec<_> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| program.command().arg(i.to_string()).stdout(Stdio::capture(out)).spawn().unwrap())
        .collect();
    for (i, (p, out)) in ps.iter().zip(&outs).enumerate() {
        assert_eq!(join(p).code(), 0);
        assert_eq!(out.text(), format!("hello from pid={}\nargs: {i}\n", p.pid().unwrap()));
    }
}

#[test]
fn program_kinds_and_entries() {
    let host = host();
    let seed = host.load(guest("seed-hello")).unwrap();
    assert_eq!(seed.kind(), ProgramKind::Program);
    assert!(seed.has_main());
    assert_eq!(seed.entries(), ["task"]);
    assert_eq!(seed.path(), Some(guest("seed-hello").as_path()));
    let plain = host.load(guest("plain-command")).unwrap();
    assert_eq!(plain.kind(), ProgramKind::Command);
    assert!(plain.has_main());
    assert!(plain.entries().is_empty());
    let core = host.load_bytes(WAT_HELLO.as_bytes()).unwrap();
    assert_eq!(core.kind(), ProgramKind::CoreModule);
    assert!(core.has_main());
    assert_eq!(core.entries(), ["partial_spin"]);
}

#[test]
fn core_module_runs_from_the_library() {
    let host = host();
    let core = host.load_bytes(WAT_HELLO.as_bytes()).unwrap();
    let out = Capture::new();
    let p = core.command().stdout(Stdio::capture(&out)).spawn().unwrap();
    assert_eq!(join(&p).code(), 0);
    assert_eq!(out.text(), "hello from wat\n");
    // An entry of a core module, terminated in its busy loop; the partial
    // line it wrote is kept.
    let out = Capture::new();
    let err = Capture::new();
    let p =
        core.command().entry("partial_spin").stdout(Stdio::capture(&out)).stderr(Stdio::capture(&err)).spawn().unwrap();
    // `ready` (stderr) is written after `partial` (stdout); unlabelled, the
    // output is passed on byte for byte: no newline is added at the end.
    wait_for_output(&err, "ready\n");
    p.terminate().unwrap();
    assert_eq!(join(&p).code(), -15);
    // What it wrote before the signal is passed on before its end is
    // recorded (on native: drained from the worker's pipe once reaped).
    assert_eq!(out.text(), "partial");
}

/// A process's output is whole when `join` returns, every time (on native
/// the root passes on what is left in an ended worker's pipe before it
/// records the end).
#[test]
fn output_is_complete_when_join_returns() {
    let host = host();
    let core = host.load_bytes(WAT_HELLO.as_bytes()).unwrap();
    for round in 0..25 {
        let out = Capture::new();
        let p = core.command().stdout(Stdio::capture(&out)).spawn().unwrap();
        assert_eq!(join(&p).code(), 0);
        assert_eq!(out.text(), "hello from wat\n", "round {round}");
    }
}

#[test]
fn bad_programs_do_not_load() {
    let host = host();
    let dir = tempfile::tempdir().unwrap();
    let missing = host.load(dir.path().join("missing.wasm")).err().expect("a missing file");
    assert!(!missing.to_string().is_empty());
    let text = write_file(dir.path(), "text.wasm", "not wasm");
    assert!(host.load(&text).is_err());
    assert!(host.load_bytes(b"").is_err());
    let wrong = host.load_bytes(WAT_WRONG_WORLD.as_bytes()).err().expect("a wrong world");
    assert!(wrong.to_string().contains("env"), "{wrong}");
    // The message is one line.
    assert_eq!(wrong.to_string().lines().count(), 1, "{wrong}");
}

/// A non-daemon child left running by its parent is adopted by the root, and
/// `Host::wait` waits for it: seed-orphan's child prints its `orphan` line
/// (with the host's pid as its new ppid) before `wait` returns.
#[test]
fn orphans_are_adopted_and_waited_for() {
    let host = host();
    let program = host.load(guest("seed-orphan")).unwrap();
    let out = Capture::new();
    let p = program.command().stdout(Stdio::capture(&out)).spawn().unwrap();
    assert_eq!(join(&p).code(), 0);
    host.wait();
    let text = out.text();
    let orphan = text
        .lines()
        .find(|l| l.starts_with("orphan "))
        .unwrap_or_else(|| panic!("Host::wait returned before the orphan ended: {text}"));
    let ppid: u32 = orphan.split("ppid=").nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(ppid, host.pid(), "the orphan's new parent is the root: {text}");
    assert_ne!(Some(ppid), p.pid());
    let pid: u32 = orphan.split("pid=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert_ne!(Some(pid), p.pid());
}

/// `Host::wait` waits for non-daemon processes only: a daemon still running
/// and an open pool (whose workers are daemons) do not hold it.
#[test]
fn wait_returns_while_daemons_and_pools_run() {
    let host = host();
    let sleep = host.load(guest("sleep")).unwrap();
    let daemon = sleep.command().arg("3600").daemon(true).stdout(Stdio::null()).spawn().unwrap();
    let tasks = host.load(guest("pool-tasks")).unwrap();
    let pool = host::Pool::new(&tasks, 2).unwrap();
    assert_eq!(pool.apply::<_, i64>("square", &3).unwrap(), 9);
    let (done, waited) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            host.wait();
            let _ = done.send(());
        });
        let returned = waited.recv_timeout(HANG).is_ok();
        if !returned {
            // Unblock the waiter before failing.
            host.shutdown();
        }
        assert!(returned, "Host::wait waited for a daemon or a pool's workers");
    });
    assert!(daemon.is_alive());
    pool.terminate();
}

/// A daemon child is terminated when its parent ends: seed-daemon's child
/// never gets to print "is gone", even after the host has shut down.
#[test]
fn daemon_children_end_with_their_parent() {
    let out = Capture::new();
    {
        let host = host();
        let program = host.load(guest("seed-daemon")).unwrap();
        let p = program.command().stdout(Stdio::capture(&out)).spawn().unwrap();
        assert_eq!(join(&p).code(), 0);
        host.wait();
    }
    let text = out.text();
    assert!(text.contains("===main"), "{text}");
    assert!(!text.contains("is gone"), "the daemon outlived its parent: {text}");
}

/// Children of a guest inherit its output, labelled with their names when
/// asked.
#[test]
fn labelled_output_names_parent_and_child() {
    let host = host();
    let program = host.load(guest("seed-hello")).unwrap();
    let out = Capture::new();
    let p = program.command().label_output(true).stdout(Stdio::capture(&out)).spawn().unwrap();
    assert_eq!(join(&p).code(), 0);
    let text = out.text();
    assert!(text.contains("Process-1: over\n"), "{text}");
    assert!(text.contains("Process-1/Process-1: this is sub process\n"), "{text}");
}

/// Dropping the host ends every process still running.
#[test]
fn dropping_the_host_ends_its_processes() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let p = sleeper(&program);
    let daemon = program.command().arg("3600").daemon(true).stdout(Stdio::null()).spawn().unwrap();
    host.shutdown();
    assert_eq!(join(&p).code(), -15);
    assert_eq!(join(&daemon).code(), -15);
    assert!(program.command().spawn().is_err(), "no start after shutdown");
    drop(host);
}

#[test]
fn timeouts_too_long_for_the_clock_are_no_deadline_not_a_panic() {
    let host = host();
    let program = host.load(guest("hello")).expect("load");
    let process = program
        .command()
        .timeout(Duration::MAX)
        .stdout(host::Stdio::null())
        .spawn()
        .expect("a process with an endless timeout starts");
    assert_eq!(process.join_timeout(Duration::MAX).expect("join").map(|c| c.code()), Some(0));
}

#[test]
fn a_program_whose_entry_listing_never_ends_is_refused_and_the_host_carries_on() {
    let host = host();
    for name in ["probe-loop", "probe-alloc"] {
        let error = host.load(guest(name)).err().expect("refused");
        assert!(error.to_string().contains("cannot list its entries"), "{error}");
    }
    let program = host.load(guest("hello")).expect("the host still loads and runs programs");
    let process = program.command().stdout(host::Stdio::null()).spawn().expect("spawn");
    assert_eq!(join(&process).code(), 0);
}

/// Everything a process wrote reaches its capture, also a large output
/// written right before it ends.
#[test]
fn a_large_output_arrives_whole() {
    let host = host();
    let program = host.load(guest("flood")).unwrap();
    for _ in 0..3 {
        let out = Capture::new();
        let p = program.command().arg("4").stdout(Stdio::capture(&out)).spawn().unwrap();
        assert_eq!(join(&p).code(), 0);
        let start = std::time::Instant::now();
        while out.bytes().len() < 4 << 20 && start.elapsed() < HANG {
            std::thread::sleep(Duration::from_millis(5));
        }
        let bytes = out.bytes();
        assert_eq!(bytes.len(), 4 << 20);
        assert!(bytes.iter().all(|&b| b == b'x'));
    }
}
